//! The exactly-once policy of one shipment: the folder made or listed by the lead session, the
//! files still missing handed to a crew of sessions (largest first), every file verified (whole
//! on the server, its sha256 the check's), the lease confirmed, and then, and only then, DONE.

use super::crew::{same_as_checked, Crew, Release};
use super::folder::{create_fresh, make_dirs, remote_files, remote_join, truncate_longer, write_done};
use super::pool::Pool;
use super::session::Connection;
use super::{fenced, ShipError};
use crate::batchfs::BatchFile;
use crate::config::SftpConfig;
use crate::delivery::{Fence, Progress};
use crate::failpoint;
use crate::validate::DONE_FILE;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;

/// A session more for every this many bytes of a batch, up to `connections`: one pipelined
/// session carries many small files; more sessions only help with the bytes.
const BYTES_PER_SESSION: u64 = 16 * 1024 * 1024;
/// Sessions that open at once, the lead's included; the others open once the lead is in the
/// folder. A batch never has more handshakes than this under way: OpenSSH's `MaxStartups`
/// starts refusing connections at 10 unauthenticated ones, and two batches may start together.
const HANDSHAKES_AT_ONCE: usize = 4;

/// What a shipment left on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    /// `remote_dir/uuid`, as the server resolves it from the tenant home.
    pub remote_dir: String,
    pub files_sha256: BTreeMap<String, String>,
    /// Files uploaded by this call; the rest were already on the server with the right size.
    pub uploaded: usize,
    /// DONE was already on the server: the batch was submitted before (by a run that crashed).
    pub already_submitted: bool,
}

/// One shipment: the batch's files (paths relative to `root`) and the sha256 of each as it was
/// checked, the UUID its folder is named by, and what may end it.
pub struct Shipping<'a> {
    pub root: &'a Path,
    pub files: &'a [BatchFile],
    /// A file whose bytes differ from these now fails the shipment before DONE.
    pub checked: &'a BTreeMap<String, String>,
    pub uuid: &'a str,
    /// The UUID was chosen for this attempt: no earlier one can have written into its folder,
    /// and the folder's subfolders are created with it, in one round trip.
    pub fresh: bool,
    pub progress: &'a Progress,
    /// Ends it at the next file boundary, before DONE.
    pub stop: &'a CancellationToken,
    /// Checked right before every write; when it no longer holds, the queue is dropped.
    pub fence: &'a dyn Fence,
}

/// Ships a batch into `remote_dir/uuid`, resuming whatever an earlier attempt left there, and
/// writes DONE only once every file is there, whole, with the checked sha256. Sessions come
/// from `pool` and go back to it when all went well.
pub fn ship(cfg: &SftpConfig, pool: &Pool, job: &Shipping) -> Result<Shipment, ShipError> {
    let Shipping { root, files, checked, uuid, fresh, progress, stop, fence } = *job;
    let folder = remote_join(&cfg.remote_dir, uuid);
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    progress.files_total.store(files.len() as u64, Ordering::Relaxed);
    progress.bytes_total.store(bytes, Ordering::Relaxed);
    let crew = Crew::new(root, &folder, checked, progress, stop, fence);
    // The first sessions open at once: a handshake is several round trips, which helpers opened
    // only once the folder exists would add to every batch.
    let helpers = sessions_for(files.len(), bytes, cfg.connections) - 1;
    let (lead, helpers) = std::thread::scope(|scope| {
        let crew = &crew;
        let helping: Vec<_> = (0..helpers).map(|n| scope.spawn(move || crew.help(cfg, pool, n + 1 < HANDSHAKES_AT_ONCE))).collect();
        let lead = {
            let _release = Release(crew);
            lead(cfg, pool, files, crew, fresh)
        };
        let helped: Vec<Result<Option<Connection>, ShipError>> = helping
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(ShipError::Ssh { what: "upload".into(), message: "worker panicked".into() })))
            .collect();
        // The first real error: the lead's, then the helpers'.
        let lead = lead?;
        let helpers = helped.into_iter().collect::<Result<Vec<_>, ShipError>>()?;
        Ok((lead, helpers))
    })?;
    // A lease that ran out meanwhile: not even "already submitted" is this process's to say.
    fenced(fence)?;
    let (main, kept, uploaded) = match lead {
        Lead::Submitted(main) => {
            give_back(cfg, pool, main, helpers);
            return Ok(Shipment { remote_dir: folder, files_sha256: checked.clone(), uploaded: 0, already_submitted: true });
        }
        Lead::Uploaded { main, kept, uploaded } => (main, kept, uploaded),
    };
    // Stopped: not even the files kept from an earlier attempt are hashed.
    if stop.is_cancelled() {
        return Err(ShipError::Interrupted);
    }
    fenced(fence)?;
    let mut files_sha256 = crew.hashes.into_inner().unwrap_or_else(|p| p.into_inner());
    for file in kept {
        let sha =
            crate::fingerprint::hash_file(root, &file.path).map_err(|source| ShipError::LocalRead { file: file.label.clone(), source })?;
        files_sha256.insert(file.path.clone(), same_as_checked(file, sha, checked)?);
    }
    if stop.is_cancelled() {
        return Err(ShipError::Interrupted);
    }
    all_verified(files, &files_sha256, &folder)?;
    failpoint::hit("before_done");
    if !fence.confirm() {
        return Err(ShipError::LeaseLost);
    }
    let wrote = write_done(&main, &folder, fence)?;
    failpoint::hit("after_done");
    give_back(cfg, pool, main, helpers);
    Ok(Shipment { remote_dir: folder, files_sha256, uploaded, already_submitted: !wrote })
}

/// How many sessions a batch of `files` and `bytes` gets: one per `BYTES_PER_SESSION`, up to
/// `connections`, and never more than it has files.
fn sessions_for(files: usize, bytes: u64, connections: usize) -> usize {
    connections.min(files).min(bytes.div_ceil(BYTES_PER_SESSION) as usize).max(1)
}

fn give_back(cfg: &SftpConfig, pool: &Pool, main: Connection, helpers: Vec<Option<Connection>>) {
    pool.give(cfg, std::iter::once(main).chain(helpers.into_iter().flatten()));
}

/// Every file of the batch is on the server, whole: kept (listed with its size) or uploaded
/// (every WRITE and its CLOSE acknowledged, its size checked by FSTAT), and its sha256 is the
/// check's. Nothing less may be followed by DONE.
fn all_verified(files: &[BatchFile], hashes: &BTreeMap<String, String>, folder: &str) -> Result<(), ShipError> {
    match files.iter().find(|f| !hashes.contains_key(&f.path)) {
        None => Ok(()),
        Some(missing) => Err(ShipError::Ssh {
            what: format!("uploading into {folder}"),
            message: format!("{} was not confirmed by the server; DONE was not written", missing.label),
        }),
    }
}

/// What the lead session found and did before DONE.
enum Lead<'a> {
    /// DONE was on the server already.
    Submitted(Connection),
    Uploaded {
        main: Connection,
        kept: Vec<&'a BatchFile>,
        uploaded: usize,
    },
}

/// The lead session: creates or lists the folder, hands out the files still missing (largest
/// first) and uploads its share.
fn lead<'a>(cfg: &SftpConfig, pool: &Pool, files: &'a [BatchFile], crew: &Crew<'a>, fresh: bool) -> Result<Lead<'a>, ShipError> {
    let main = pool.take(cfg)?;
    failpoint::hit("before_mkdir");
    let (present, dirs_made) = match fresh {
        true => create_fresh(&main, crew.folder, files, crew.fence)?,
        false => (remote_files(&main, crew.folder, crew.fence)?, false),
    };
    if present.contains_key(DONE_FILE) {
        return Ok(Lead::Submitted(main));
    }
    fenced(crew.fence)?;
    if !dirs_made {
        make_dirs(&main, crew.folder, files, &present, crew.fence)?;
    }
    truncate_longer(&main, crew.folder, files, &present, crew.fence)?;
    let (kept, mut todo): (Vec<&BatchFile>, Vec<&BatchFile>) = files.iter().partition(|f| present.get(&f.path) == Some(&f.size));
    todo.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let uploaded = todo.len();
    crew.progress.files_done.fetch_add(kept.len() as u64, Ordering::Relaxed);
    crew.progress.bytes_sent.fetch_add(kept.iter().map(|f| f.size).sum(), Ordering::Relaxed);
    let _ = crew.todo.set(todo);
    crew.work(&main)?;
    Ok(Lead::Uploaded { main, kept, uploaded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gets_a_session_per_16_mib_up_to_the_configured_number() {
        assert_eq!(sessions_for(3000, 3000 * 8_000, 8), 2, "1,000 rows of 8 KB images: 24 MB");
        assert_eq!(sessions_for(6, 6 * 8_000, 8), 1, "a two-row batch");
        assert_eq!(sessions_for(1500, 1500 * 400_000, 8), 8, "500 rows of 400 KB images: 600 MB");
        assert_eq!(sessions_for(40, 40 * 25_000_000, 4), 4);
        assert_eq!(sessions_for(2, 2 * 500_000_000, 8), 2, "never more sessions than files");
        assert_eq!(sessions_for(0, 0, 8), 1);
    }
}
