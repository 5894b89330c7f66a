//! The requests on a batch's UUID folder itself: made (with its subfolders, in one round trip)
//! or listed when resuming, and its DONE; a probe for `check`. Each goes out through the fence.

use super::channel::{status_error, Calls, Request};
use super::session::Connection;
use super::wire::{self, Reply};
use super::{fenced, ShipError};
use crate::batchfs::BatchFile;
use crate::config::SftpConfig;
use crate::delivery::Fence;
use crate::validate::DONE_FILE;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub fn remote_join(base: &str, rel: &str) -> String {
    match base.trim_end_matches('/') {
        "" | "." => rel.to_owned(),
        base => format!("{base}/{rel}"),
    }
}

/// Files already in the batch folder (relative path → size); creates the folder when absent,
/// which for a new batch is all it costs: one round trip.
pub(super) fn remote_files(conn: &Connection, folder: &str, fence: &dyn Fence) -> Result<BTreeMap<String, u64>, ShipError> {
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
pub(super) fn create_fresh(
    conn: &Connection,
    folder: &str,
    files: &[BatchFile],
    fence: &dyn Fence,
) -> Result<(BTreeMap<String, u64>, bool), ShipError> {
    fenced(fence)?;
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
pub(super) fn make_dirs(
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

/// Cuts the files of `folder` that an earlier attempt (or anything else) left longer than the
/// batch's own to nothing, before they are written again: writes never truncate.
pub(super) fn truncate_longer(
    conn: &Connection,
    folder: &str,
    files: &[BatchFile],
    present: &BTreeMap<String, u64>,
    fence: &dyn Fence,
) -> Result<(), ShipError> {
    for file in files.iter().filter(|f| present.get(&f.path).is_some_and(|&size| size > f.size)) {
        let path = format!("{folder}/{}", file.path);
        let shown = format!("{} in {folder}", file.label);
        let handle = match one(conn, "emptying", &shown, Request::Truncate(&path), fence)? {
            Reply::Handle { handle, .. } => handle,
            Reply::Status { code, message, .. } => return Err(status_error("emptying", &shown, code, &message)),
            _ => return Err(super::channel::protocol("OPEN answered with something else than a handle")),
        };
        one(conn, "closing", &shown, Request::Close(&handle), fence)?;
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
pub(super) fn write_done(conn: &Connection, folder: &str, fence: &dyn Fence) -> Result<bool, ShipError> {
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
