//! Puts a batch's files into its UUID folder over several sessions, largest first, hashing
//! each file as it is read for the upload; then, and only then, writes DONE.

use super::channel::{status_error, Calls, Request};
use super::pipeline;
use super::pool::Pool;
use super::session::Connection;
use super::wire::{self, Reply};
use super::ShipError;
use crate::config::SftpConfig;
use crate::failpoint;
use crate::validate::BatchFile;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

pub const DONE_FILE: &str = "DONE";
/// A session more for every this many bytes of a batch, up to `connections`: one pipelined
/// session carries many small files; more sessions only help with the bytes.
const BYTES_PER_SESSION: u64 = 16 * 1024 * 1024;
/// Sessions that open at once, the lead's included; the others open once the lead is in the
/// folder. A batch never has more handshakes than this under way: OpenSSH's `MaxStartups`
/// starts refusing connections at 10 unauthenticated ones, and two batches may start together.
const HANDSHAKES_AT_ONCE: usize = 4;

/// Live counters a caller may read while a shipment runs (a progress bar, the state database,
/// metrics). Files and bytes kept from an earlier attempt count as done.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_sent: AtomicU64,
    pub files_done: AtomicU64,
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
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

/// What lets a shipment go on writing: in fleet mode the batch's lease (`lifecycle::Lease`),
/// else nothing (`Unfenced`). Checked right before every write to the socket.
pub trait Fence: Send + Sync {
    /// This process may still write for the batch.
    fn holds(&self) -> bool;
    /// Renews the hold now: true when it lasts long enough for DONE to reach the server.
    fn confirm(&self) -> bool;
    /// `holds`, as the error that ends a shipment when it does not.
    fn check(&self) -> Result<(), ShipError> {
        if self.holds() {
            Ok(())
        } else {
            Err(ShipError::LeaseLost)
        }
    }
}

/// A shipment no other process can take over (one host: the batch's kernel lock).
pub struct Unfenced;

impl Fence for Unfenced {
    fn holds(&self) -> bool {
        true
    }
    fn confirm(&self) -> bool {
        true
    }
}

/// Ships `files` (paths relative to `root`) into `remote_dir/uuid`, resuming whatever an
/// earlier attempt left there. `fresh`: the UUID was chosen for this attempt, so no earlier one
/// can have written into its folder, and the folder's subfolders are created with it, in one
/// round trip. `checked` holds the sha256 of each file as it was checked: a file
/// whose bytes differ now fails the shipment before DONE. `stop` makes it end at the next file
/// boundary, before DONE; a `fence` that no longer holds ends it before the next write.
/// Sessions come from `pool` and go back to it when all went well.
#[allow(clippy::too_many_arguments)]
pub fn ship(
    cfg: &SftpConfig,
    pool: &Pool,
    root: &Path,
    files: &[BatchFile],
    checked: &BTreeMap<String, String>,
    uuid: &str,
    fresh: bool,
    progress: &Progress,
    stop: &AtomicBool,
    fence: &dyn Fence,
) -> Result<Shipment, ShipError> {
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
    if !fence.holds() {
        return Err(ShipError::LeaseLost);
    }
    let (main, kept, uploaded) = match lead {
        Lead::Submitted(main) => {
            give_back(cfg, pool, main, helpers);
            return Ok(Shipment { remote_dir: folder, files_sha256: checked.clone(), uploaded: 0, already_submitted: true });
        }
        Lead::Uploaded { main, kept, uploaded } => (main, kept, uploaded),
    };
    // Stopped: not even the files kept from an earlier attempt are hashed.
    if stop.load(Ordering::SeqCst) {
        return Err(ShipError::Interrupted);
    }
    if !fence.holds() {
        return Err(ShipError::LeaseLost);
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
    if !crew.fence.holds() {
        return Err(ShipError::LeaseLost);
    }
    if !dirs_made {
        make_dirs(&main, crew.folder, files, &present, crew.fence)?;
    }
    let (kept, mut todo): (Vec<&BatchFile>, Vec<&BatchFile>) = files.iter().partition(|f| present.get(&f.path) == Some(&f.size));
    todo.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let uploaded = todo.len();
    crew.progress.files_done.fetch_add(kept.len() as u64, Ordering::Relaxed);
    crew.progress.bytes_sent.fetch_add(kept.iter().map(|f| f.size).sum(), Ordering::Relaxed);
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
    fence: &'a dyn Fence,
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
    fn help(&self, cfg: &SftpConfig, pool: &Pool, early: bool) -> Result<Option<Connection>, ShipError> {
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
        self.failed.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) || !self.fence.holds()
    }

    /// This session's share: files taken from the common list, pipelined.
    fn work(&self, conn: &Connection) -> Result<(), ShipError> {
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
        self.fence.check()
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

/// Files already in the batch folder (relative path → size); creates the folder when absent,
/// which for a new batch is all it costs: one round trip.
fn remote_files(conn: &Connection, folder: &str, fence: &dyn Fence) -> Result<BTreeMap<String, u64>, ShipError> {
    let created = one(conn, "creating", folder, Request::Mkdir(folder), fence)?;
    let mut found = BTreeMap::new();
    match created {
        Reply::Status { code: wire::FX_OK, .. } => return Ok(found),
        Reply::Status { code, message, .. } => {
            let sftp = conn.sftp()?;
            match sftp.stat(Path::new(folder)) {
                Ok(stat) if stat.is_dir() => {}
                Ok(_) => return Err(ShipError::Ssh { what: format!("creating {folder}"), message: "a file of that name exists".into() }),
                Err(_) => return Err(status_error("creating", folder, code, &message)),
            }
        }
        _ => return Err(super::channel::protocol("MKDIR answered with something else than a status")),
    }
    // The folder was there: an earlier attempt of this batch. What did it leave?
    let sftp = conn.sftp()?;
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() { folder.to_owned() } else { format!("{folder}/{rel}") };
        for (path, stat) in sftp.readdir(Path::new(&dir)).map_err(|e| conn.error(e, "listing", &dir))? {
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

/// One request on the connection's SFTP channel, its reply.
fn one(conn: &Connection, step: &str, path: &str, request: Request, fence: &dyn Fence) -> Result<Reply, ShipError> {
    calls(conn, step, path, vec![request], fence)?.pop().ok_or_else(|| super::channel::protocol("no reply"))
}

/// A folder no attempt has written to: created with all its subfolders in one round trip, a
/// parent's MKDIR sent before its children's (a server handles one session's requests in order).
/// Should the server refuse the folder, it is looked at as an earlier attempt's would be (and its
/// subfolders are not made yet: false); should it refuse a subfolder (a server that reorders),
/// they are made again a level at a time.
fn create_fresh(
    conn: &Connection,
    folder: &str,
    files: &[BatchFile],
    fence: &dyn Fence,
) -> Result<(BTreeMap<String, u64>, bool), ShipError> {
    if !fence.holds() {
        return Err(ShipError::LeaseLost);
    }
    let none = BTreeMap::new();
    let mut remote = vec![folder.to_owned()];
    remote.extend(subfolders(files, &none).into_values().flatten().map(|dir| format!("{folder}/{dir}")));
    let replies = calls(conn, "creating", folder, remote.iter().map(|r| Request::Mkdir(r)).collect(), fence)?;
    let ok = |r: &Reply| matches!(r, Reply::Status { code: wire::FX_OK, .. });
    if !replies.first().is_some_and(ok) {
        return Ok((remote_files(conn, folder, fence)?, false));
    }
    if !replies.iter().all(ok) {
        make_dirs(conn, folder, files, &none, fence)?;
    }
    Ok((none, true))
}

/// The batch's subfolders missing on the server, by depth (a parent before its children).
fn subfolders(files: &[BatchFile], present: &BTreeMap<String, u64>) -> BTreeMap<usize, BTreeSet<String>> {
    let mut levels: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let mut parent = Path::new(&file.path).parent();
        while let Some(at) = parent.filter(|d| !d.as_os_str().is_empty()) {
            let dir = at.to_string_lossy().into_owned();
            let prefix = format!("{dir}/");
            if !present.keys().any(|p| p.starts_with(&prefix)) {
                levels.entry(dir.matches('/').count()).or_default().insert(dir);
            }
            parent = at.parent();
        }
    }
    levels
}

/// The batch's subfolders, a level at a time (a parent before its children), each level's
/// MKDIRs sent at once.
fn make_dirs(
    conn: &Connection,
    folder: &str,
    files: &[BatchFile],
    present: &BTreeMap<String, u64>,
    fence: &dyn Fence,
) -> Result<(), ShipError> {
    for dirs in subfolders(files, present).values() {
        let remote: Vec<String> = dirs.iter().map(|dir| format!("{folder}/{dir}")).collect();
        let replies = calls(conn, "creating folders in", folder, remote.iter().map(|r| Request::Mkdir(r)).collect(), fence)?;
        // A MKDIR refused because the folder is there (an earlier attempt) is fine.
        let refused: Vec<(&String, Reply)> =
            remote.iter().zip(replies).filter(|(_, r)| !matches!(r, Reply::Status { code: wire::FX_OK, .. })).collect();
        if refused.is_empty() {
            continue;
        }
        let stats = calls(conn, "checking folders in", folder, refused.iter().map(|(r, _)| Request::Stat(r)).collect(), fence)?;
        for ((path, refusal), stat) in refused.into_iter().zip(stats) {
            if !matches!(stat, Reply::Attrs { is_dir: Some(true), .. }) {
                let (code, message) = match refusal {
                    Reply::Status { code, message, .. } => (code, message),
                    _ => (wire::FX_FAILURE, String::new()),
                };
                return Err(status_error("creating folder", path, code, &message));
            }
        }
    }
    Ok(())
}

/// Requests sent at once on the connection's SFTP channel; their replies in the same order.
fn calls(conn: &Connection, step: &str, path: &str, requests: Vec<Request>, fence: &dyn Fence) -> Result<Vec<Reply>, ShipError> {
    let mut calls = Calls::new(format!("{step} {path}"), &requests, fence);
    conn.talk(|channel| channel.drive(conn, &mut calls))?;
    Ok(calls.replies())
}

/// The one place DONE is written: after every file was confirmed (`all_verified`). EXCLUSIVE,
/// so a DONE that is somehow already there is never written twice: then false ("DONE was already
/// there"; the folder is this batch's alone, so an earlier attempt of ours wrote it).
fn write_done(conn: &Connection, folder: &str, fence: &dyn Fence) -> Result<bool, ShipError> {
    let path = format!("{folder}/{DONE_FILE}");
    let handle = match one(conn, "writing", &path, Request::CreateNew(&path), fence)? {
        Reply::Handle { handle, .. } => handle,
        Reply::Status { code, message, .. } => {
            if let Reply::Attrs { .. } = one(conn, "checking", &path, Request::Stat(&path), fence)? {
                tracing::info!(remote_dir = %folder, "DONE was already there (written by an earlier attempt); not written again");
                return Ok(false);
            }
            return Err(status_error("writing", &path, code, &message));
        }
        _ => return Err(super::channel::protocol("OPEN answered with something else than a handle")),
    };
    match one(conn, "closing", &path, Request::Close(&handle), fence)? {
        Reply::Status { code: wire::FX_OK, .. } => Ok(true),
        Reply::Status { code, message, .. } => Err(status_error("closing", &path, code, &message)),
        _ => Err(super::channel::protocol("CLOSE answered with something else than a status")),
    }
}

/// Creates and removes a probe folder in `remote_dir`: the server accepts us and lets us write.
pub fn probe(cfg: &SftpConfig) -> Result<String, ShipError> {
    let conn = Connection::open(cfg)?;
    let folder = remote_join(&cfg.remote_dir, &format!(".jumio-batchd-check-{}", uuid::Uuid::new_v4()));
    let sftp = conn.sftp()?;
    sftp.mkdir(Path::new(&folder), 0o755).map_err(|e| conn.error(e, "creating probe folder", &folder))?;
    sftp.rmdir(Path::new(&folder)).map_err(|e| conn.error(e, "removing probe folder", &folder))?;
    Ok(folder)
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
