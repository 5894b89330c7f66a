//! Puts a batch's files into its UUID folder over several sessions, largest first, hashing
//! each file as it is read for the upload; then, and only then, writes DONE.

use super::pipeline;
use super::session::Connection;
use super::ShipError;
use crate::config::SftpConfig;
use crate::failpoint;
use crate::validate::BatchFile;
use ssh2::{OpenFlags, OpenType};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

pub const DONE_FILE: &str = "DONE";
/// A session more for every this many bytes of a batch, up to `connections`: one pipelined
/// session carries many small files; more sessions only help with the bytes.
const BYTES_PER_SESSION: u64 = 16 * 1024 * 1024;

/// Live counters a caller may read while a shipment runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_sent: AtomicU64,
}

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

/// Ships `files` (paths relative to `root`) into `remote_dir/uuid`, resuming whatever an
/// earlier attempt left there. `checked` holds the sha256 of each file as it was checked: a file
/// whose bytes differ now fails the shipment before DONE. `stop` makes it end at the next file
/// boundary, before DONE.
pub fn ship(
    cfg: &SftpConfig,
    root: &Path,
    files: &[BatchFile],
    checked: &BTreeMap<String, String>,
    uuid: &str,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<Shipment, ShipError> {
    let folder = remote_join(&cfg.remote_dir, uuid);
    let crew = Crew::new(root, &folder, checked, progress, stop);
    // Every session opens at once: a handshake is several round trips, which helpers opened
    // only once the folder exists would add to every batch.
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let helpers = cfg.connections.min(files.len()).min(bytes.div_ceil(BYTES_PER_SESSION) as usize).max(1) - 1;
    let lead = std::thread::scope(|scope| {
        let helping: Vec<_> = (0..helpers).map(|_| scope.spawn(|| crew.help(cfg))).collect();
        let lead = {
            let _release = Release(&crew);
            lead(cfg, files, &crew)
        };
        let helped: Vec<Result<(), ShipError>> = helping
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(ShipError::Ssh { what: "upload".into(), message: "worker panicked".into() })))
            .collect();
        // The first real error: the lead's, then the helpers'.
        let lead = lead?;
        helped.into_iter().collect::<Result<(), ShipError>>()?;
        Ok(lead)
    })?;
    let Lead::Uploaded { main, kept, uploaded } = lead else {
        return Ok(Shipment { remote_dir: folder, files_sha256: checked.clone(), uploaded: 0, already_submitted: true });
    };
    // Stopped: not even the files kept from an earlier attempt are hashed.
    if stop.load(Ordering::SeqCst) {
        return Err(ShipError::Interrupted);
    }
    let mut files_sha256 = crew.hashes.into_inner().unwrap_or_else(|p| p.into_inner());
    for file in kept {
        let sha =
            crate::fingerprint::hash_file(root, &file.path).map_err(|source| ShipError::LocalRead { file: file.label.clone(), source })?;
        files_sha256.insert(file.path.clone(), same_as_checked(file, sha, checked)?);
    }
    if stop.load(Ordering::SeqCst) {
        return Err(ShipError::Interrupted);
    }
    verify_sizes(&main, &folder, files)?;
    failpoint::hit("before_done");
    let wrote = write_done(&main, &folder)?;
    failpoint::hit("after_done");
    Ok(Shipment { remote_dir: folder, files_sha256, uploaded, already_submitted: !wrote })
}

/// What the lead session found and did before DONE.
enum Lead<'a> {
    /// DONE was on the server already.
    Submitted,
    Uploaded {
        main: Connection,
        kept: Vec<&'a BatchFile>,
        uploaded: usize,
    },
}

/// The lead session: creates or lists the folder, hands out the files still missing (largest
/// first) and uploads its share.
fn lead<'a>(cfg: &SftpConfig, files: &'a [BatchFile], crew: &Crew<'a>) -> Result<Lead<'a>, ShipError> {
    let main = Connection::open(cfg)?;
    failpoint::hit("before_mkdir");
    let present = remote_files(&main, crew.folder)?;
    if present.contains_key(DONE_FILE) {
        return Ok(Lead::Submitted);
    }
    make_dirs(&main, crew.folder, files, &present)?;
    let (kept, mut todo): (Vec<&BatchFile>, Vec<&BatchFile>) = files.iter().partition(|f| present.get(&f.path) == Some(&f.size));
    todo.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let uploaded = todo.len();
    let _ = crew.todo.set(todo);
    crew.work(&main)?;
    Ok(Lead::Uploaded { main, kept, uploaded })
}

/// The sessions of one shipment and the files they share.
struct Crew<'a> {
    root: &'a Path,
    folder: &'a str,
    checked: &'a BTreeMap<String, String>,
    progress: &'a Progress,
    stop: &'a AtomicBool,
    /// The files to upload, set once by the lead; empty when it ended before handing any out.
    todo: OnceLock<Vec<&'a BatchFile>>,
    next: AtomicUsize,
    failed: AtomicBool,
    hashes: Mutex<BTreeMap<String, String>>,
}

/// Releases the helpers however the lead ends, so none waits forever for work.
struct Release<'c, 'a>(&'c Crew<'a>);

impl Drop for Release<'_, '_> {
    fn drop(&mut self) {
        let _ = self.0.todo.set(Vec::new());
    }
}

impl<'a> Crew<'a> {
    fn new(
        root: &'a Path,
        folder: &'a str,
        checked: &'a BTreeMap<String, String>,
        progress: &'a Progress,
        stop: &'a AtomicBool,
    ) -> Crew<'a> {
        Crew {
            root,
            folder,
            checked,
            progress,
            stop,
            todo: OnceLock::new(),
            next: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            hashes: Mutex::new(BTreeMap::new()),
        }
    }

    /// A helper session: opens while the lead prepares the folder, then takes files as they come.
    fn help(&self, cfg: &SftpConfig) -> Result<(), ShipError> {
        let opened = Connection::open(cfg);
        if self.todo.wait().is_empty() {
            return Ok(());
        }
        let conn = opened.inspect_err(|_| self.failed.store(true, Ordering::SeqCst))?;
        self.work(&conn)
    }

    /// This session's share: files taken from the common list, pipelined.
    fn work(&self, conn: &Connection) -> Result<(), ShipError> {
        pipeline::upload(conn, self.root, self.folder, self).inspect_err(|_| self.failed.store(true, Ordering::SeqCst))
    }
}

impl pipeline::Files for Crew<'_> {
    fn take(&self) -> Option<&BatchFile> {
        if self.failed.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) {
            return None;
        }
        let todo = self.todo.get().map(Vec::as_slice).unwrap_or_default();
        todo.get(self.next.fetch_add(1, Ordering::SeqCst)).copied()
    }

    fn shipped(&self, file: &BatchFile, sha256: String) -> Result<(), ShipError> {
        let sha = same_as_checked(file, sha256, self.checked)?;
        self.hashes.lock().unwrap_or_else(|p| p.into_inner()).insert(file.path.clone(), sha);
        Ok(())
    }

    fn sent(&self, bytes: u64) {
        self.progress.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    fn abandoned(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

/// What is shipped must be what was checked: the sha256 of the bytes read now against the check's.
fn same_as_checked(file: &BatchFile, sha: String, checked: &BTreeMap<String, String>) -> Result<String, ShipError> {
    match checked.get(&file.path) {
        Some(expected) if *expected == sha => Ok(sha),
        _ => Err(ShipError::LocalChanged { file: file.label.clone(), reason: "its content differs from what was validated".into() }),
    }
}

pub fn remote_join(base: &str, rel: &str) -> String {
    match base.trim_end_matches('/') {
        "" | "." => rel.to_owned(),
        base => format!("{base}/{rel}"),
    }
}

/// Files already in the batch folder (relative path → size); creates the folder when absent.
fn remote_files(conn: &Connection, folder: &str) -> Result<BTreeMap<String, u64>, ShipError> {
    let mut found = BTreeMap::new();
    match conn.sftp.stat(Path::new(folder)) {
        Ok(stat) if stat.is_dir() => {}
        Ok(_) => return Err(ShipError::Ssh { what: format!("creating {folder}"), message: "a file of that name exists".into() }),
        Err(_) => {
            conn.sftp.mkdir(Path::new(folder), 0o755).map_err(|e| conn.error(e, "creating folder", folder))?;
            return Ok(found);
        }
    }
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() { folder.to_owned() } else { format!("{folder}/{rel}") };
        for (path, stat) in conn.sftp.readdir(Path::new(&dir)).map_err(|e| conn.error(e, "listing", &dir))? {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if stat.is_dir() {
                stack.push(child);
            } else {
                found.insert(child, stat.size.unwrap_or(0));
            }
        }
    }
    Ok(found)
}

fn make_dirs(conn: &Connection, folder: &str, files: &[BatchFile], present: &BTreeMap<String, u64>) -> Result<(), ShipError> {
    let mut dirs = BTreeSet::new();
    for file in files {
        let mut parent = Path::new(&file.path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    // BTreeSet order puts every parent before its children.
    for dir in dirs {
        let remote = format!("{folder}/{dir}");
        let prefix = format!("{dir}/");
        if present.keys().any(|p| p.starts_with(&prefix)) {
            continue;
        }
        if let Err(e) = conn.sftp.mkdir(Path::new(&remote), 0o755) {
            match conn.sftp.stat(Path::new(&remote)) {
                Ok(stat) if stat.is_dir() => {}
                _ => return Err(conn.error(e, "creating folder", &remote)),
            }
        }
    }
    Ok(())
}

/// Lists the folder once and checks every file is there with its full size: one listing per
/// folder instead of a round trip per file.
fn verify_sizes(conn: &Connection, folder: &str, files: &[BatchFile]) -> Result<(), ShipError> {
    let present = remote_files(conn, folder)?;
    for file in files {
        let remote = present.get(&file.path).copied().unwrap_or(0);
        if remote != file.size {
            return Err(ShipError::SizeMismatch { file: format!("{} in {folder}", file.label), local: file.size, remote });
        }
    }
    Ok(())
}

/// The one place DONE is written: after `verify_sizes`. EXCLUSIVE, so a DONE that is somehow
/// already there is never written twice: then false ("DONE was already there"; the folder is this
/// batch's alone, so an earlier attempt of ours wrote it).
fn write_done(conn: &Connection, folder: &str) -> Result<bool, ShipError> {
    let path = format!("{folder}/{DONE_FILE}");
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUSIVE;
    let mut handle = match conn.sftp.open_mode(Path::new(&path), flags, 0o644, OpenType::File) {
        Ok(handle) => handle,
        Err(e) => {
            if conn.sftp.stat(Path::new(&path)).is_ok() {
                tracing::info!(remote_dir = %folder, "DONE was already there (written by an earlier attempt); not written again");
                return Ok(false);
            }
            return Err(conn.error(e, "writing", &path));
        }
    };
    handle.close().map_err(|e| conn.error(e, "closing", &path))?;
    conn.sftp.stat(Path::new(&path)).map_err(|e| conn.error(e, "checking", &path))?;
    Ok(true)
}

/// Creates and removes a probe folder in `remote_dir`: the server accepts us and lets us write.
pub fn probe(cfg: &SftpConfig) -> Result<String, ShipError> {
    let conn = Connection::open(cfg)?;
    let folder = remote_join(&cfg.remote_dir, &format!(".jumio-batchd-check-{}", uuid::Uuid::new_v4()));
    conn.sftp.mkdir(Path::new(&folder), 0o755).map_err(|e| conn.error(e, "creating probe folder", &folder))?;
    conn.sftp.rmdir(Path::new(&folder)).map_err(|e| conn.error(e, "removing probe folder", &folder))?;
    Ok(folder)
}
