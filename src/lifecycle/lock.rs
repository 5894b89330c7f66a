//! Kernel file locks beside the state database: one daemon per database, one worker per batch,
//! one admission at a time. The kernel releases a lock when its holder dies, so a crash never
//! leaves a lock behind; the holder's PID and start time are written into the file for messages.

use chrono::{DateTime, Utc};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot use the lock file {}: {source}; check that the folder of [state] database is writable by this user", path.display())]
pub struct LockError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Who holds a lock, as it wrote itself into the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub since: Option<String>,
    /// Fleet mode: the host holding the batch's lease, and until when.
    pub host: Option<String>,
    pub until: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.host, self.pid) {
            (Some(host), _) => write!(f, "host {host}")?,
            (None, Some(pid)) => write!(f, "PID {pid}")?,
            (None, None) => f.write_str("another process")?,
        }
        if let Some(since) = &self.since {
            write!(f, " since {since}")?;
        }
        if let Some(until) = &self.until {
            write!(f, " (its lease runs until {until})")?;
        }
        Ok(())
    }
}

/// A lock held until dropped. Batch locks remove their file while still holding it.
#[derive(Debug)]
pub struct Held {
    file: File,
    path: PathBuf,
    remove: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// The folder of lock files for one database: `<database>.locks/`.
#[derive(Debug, Clone)]
pub struct Locks {
    dir: PathBuf,
}

impl Locks {
    pub fn beside(database: &Path) -> Locks {
        let mut dir = database.as_os_str().to_owned();
        dir.push(".locks");
        Locks { dir: PathBuf::from(dir) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's lock, held for its whole life: a second `run` on this database is refused.
    pub fn daemon(&self) -> Result<Result<Held, Holder>, LockError> {
        self.take("daemon.lock", false, false)
    }

    /// The lock of one batch, held while a process works on it (validates, ships, files).
    pub fn batch(&self, id: i64) -> Result<Result<Held, Holder>, LockError> {
        self.take(&format!("batch-{id}.lock"), false, true)
    }

    /// Serialises "find or create the record of this folder" between processes; held briefly.
    pub fn admission(&self) -> Result<Held, LockError> {
        match self.take("admit.lock", true, false)? {
            Ok(held) => Ok(held),
            Err(_) => unreachable!("a waiting lock is always taken"),
        }
    }

    fn take(&self, name: &str, wait: bool, remove: bool) -> Result<Result<Held, Holder>, LockError> {
        let path = self.dir.join(name);
        let error = |source| LockError { path: path.clone(), source };
        std::fs::create_dir_all(&self.dir).map_err(error)?;
        loop {
            let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(error)?;
            let taken = if wait { file.lock().map_err(TryLockError::Error) } else { file.try_lock() };
            match taken {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(Err(read_holder(&mut file))),
                Err(TryLockError::Error(e)) => return Err(error(e)),
            }
            // A removable lock file may have been removed (and replaced) by its last holder
            // between our open and our lock: then ours is a lock on nothing; take the new file.
            let same =
                std::fs::metadata(&path).ok().zip(file.metadata().ok()).is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
            if !same {
                continue;
            }
            write_holder(&mut file).map_err(error)?;
            return Ok(Ok(Held { file, path, remove }));
        }
    }
}

/// True while a process with this PID runs on this host (a zombie, dead but not yet reaped,
/// does not).
pub fn alive(pid: u32) -> bool {
    let Some(raw) = rustix::process::Pid::from_raw(pid as i32) else { return false };
    if matches!(rustix::process::test_kill_process(raw), Err(rustix::io::Errno::SRCH)) {
        return false;
    }
    // The state follows the command name, which is in parentheses: `pid (name) S ...`.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
}

/// This machine, as the fleet's `hosts` rows tell machines apart: systemd's machine id, else
/// its name.
pub fn this_machine() -> String {
    std::fs::read_to_string("/etc/machine-id").map(|id| id.trim().to_owned()).ok().filter(|id| !id.is_empty()).unwrap_or_else(this_host)
}

/// This machine's name, as files of ours shared with other hosts tell machines apart.
pub fn this_host() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

fn write_holder(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}\n{}", std::process::id(), Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))?;
    file.flush()
}

fn read_holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    let mut lines = text.lines();
    let pid = lines.next().and_then(|l| l.trim().parse().ok());
    let since = lines.next().and_then(|l| DateTime::parse_from_rfc3339(l.trim()).ok()).map(|t| t.to_rfc3339());
    Holder { pid, since, host: None, until: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_names_its_holder_and_is_free_again_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let locks = Locks::beside(&dir.path().join("state.db"));
        let first = locks.batch(7).unwrap().unwrap();
        let holder = locks.batch(7).unwrap().unwrap_err();
        assert_eq!(holder.pid, Some(std::process::id()));
        assert!(holder.to_string().starts_with(&format!("PID {} since ", std::process::id())), "{holder}");
        assert!(locks.batch(8).unwrap().is_ok(), "other batches are free");
        drop(first);
        assert!(!locks.dir().join("batch-7.lock").exists(), "a batch lock removes its file");
        assert!(locks.batch(7).unwrap().is_ok());
    }

    #[test]
    fn the_daemon_lock_is_exclusive_and_kept_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let locks = Locks::beside(&dir.path().join("state.db"));
        let held = locks.daemon().unwrap().unwrap();
        assert!(locks.daemon().unwrap().is_err());
        drop(held);
        assert!(locks.dir().join("daemon.lock").exists());
        assert!(locks.daemon().unwrap().is_ok());
    }
}
