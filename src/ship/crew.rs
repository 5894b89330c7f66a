//! The sessions of one shipment: a lead that prepares the folder and helpers that open while it
//! does (or once it is in the folder), all taking files from one shared list until it is empty,
//! something fails, the shipment is stopped or the fence no longer holds.

use super::pipeline;
use super::pool::Pool;
use super::session::Connection;
use super::{fenced, ShipError};
use crate::batchfs::BatchFile;
use crate::config::SftpConfig;
use crate::delivery::{Fence, Progress};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use tokio_util::sync::CancellationToken;

/// The sessions of one shipment and the files they share.
pub(super) struct Crew<'a> {
    pub(super) root: &'a Path,
    pub(super) folder: &'a str,
    pub(super) checked: &'a BTreeMap<String, String>,
    pub(super) progress: &'a Progress,
    pub(super) stop: &'a CancellationToken,
    pub(super) fence: &'a dyn Fence,
    /// The files to upload, set once by the lead; empty when it ended before handing any out.
    pub(super) todo: OnceLock<Vec<&'a BatchFile>>,
    pub(super) next: AtomicUsize,
    pub(super) failed: AtomicBool,
    pub(super) hashes: Mutex<BTreeMap<String, String>>,
}

/// Releases the helpers however the lead ends, so none waits forever for work.
pub(super) struct Release<'c, 'a>(pub(super) &'c Crew<'a>);

impl Drop for Release<'_, '_> {
    fn drop(&mut self) {
        let _ = self.0.todo.set(Vec::new());
    }
}

impl<'a> Crew<'a> {
    pub(super) fn new(
        root: &'a Path,
        folder: &'a str,
        checked: &'a BTreeMap<String, String>,
        progress: &'a Progress,
        stop: &'a CancellationToken,
        fence: &'a dyn Fence,
    ) -> Crew<'a> {
        Crew {
            root,
            folder,
            checked,
            progress,
            stop,
            fence,
            todo: OnceLock::new(),
            next: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            hashes: Mutex::new(BTreeMap::new()),
        }
    }

    /// A helper session: opens while the lead prepares the folder (`early`) or once it is in it,
    /// then takes files as they come.
    pub(super) fn help(&self, cfg: &SftpConfig, pool: &Pool, early: bool) -> Result<Option<Connection>, ShipError> {
        let opened = early.then(|| pool.take(cfg));
        let todo = self.todo.wait();
        // A late helper with nothing left to take would only delay DONE by its handshake.
        let idle = !early && (self.stopping() || self.next.load(Ordering::SeqCst) >= todo.len());
        if todo.is_empty() || idle {
            return Ok(opened.and_then(Result::ok));
        }
        let opened = opened.unwrap_or_else(|| pool.take(cfg));
        let conn = opened.inspect_err(|_| self.failed.store(true, Ordering::SeqCst))?;
        self.work(&conn)?;
        Ok(Some(conn))
    }

    /// No more files are handed out: a session failed, the shipment is stopping, or the fence
    /// no longer holds.
    fn stopping(&self) -> bool {
        self.failed.load(Ordering::SeqCst) || self.stop.is_cancelled() || !self.fence.holds()
    }

    /// This session's share: files taken from the common list, pipelined.
    pub(super) fn work(&self, conn: &Connection) -> Result<(), ShipError> {
        pipeline::upload(conn, self.root, self.folder, self).inspect_err(|_| self.failed.store(true, Ordering::SeqCst))
    }
}

impl pipeline::Files for Crew<'_> {
    fn take(&self) -> Option<&BatchFile> {
        if self.stopping() {
            return None;
        }
        let todo = self.todo.get().map(Vec::as_slice).unwrap_or_default();
        todo.get(self.next.fetch_add(1, Ordering::SeqCst)).copied()
    }

    fn shipped(&self, file: &BatchFile, sha256: String) -> Result<(), ShipError> {
        let sha = same_as_checked(file, sha256, self.checked)?;
        self.hashes.lock().unwrap_or_else(|p| p.into_inner()).insert(file.path.clone(), sha);
        self.progress.files_done.fetch_add(1, Ordering::Relaxed);
        crate::metrics::shipped_file();
        Ok(())
    }

    fn sent(&self, bytes: u64) {
        self.progress.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        crate::metrics::shipped_bytes(bytes);
    }

    fn abandoned(&self) -> bool {
        // A lease that ran out stops the writes already queued too, not only new files.
        self.failed.load(Ordering::SeqCst) || !self.fence.holds()
    }

    fn may_send(&self) -> Result<(), ShipError> {
        fenced(self.fence)
    }
}

/// What is shipped must be what was checked: the sha256 of the bytes read now against the check's.
pub(super) fn same_as_checked(file: &BatchFile, sha: String, checked: &BTreeMap<String, String>) -> Result<String, ShipError> {
    match checked.get(&file.path) {
        Some(expected) if *expected == sha => Ok(sha),
        _ => Err(ShipError::LocalChanged { file: file.label.clone(), reason: "its content differs from what was validated".into() }),
    }
}
