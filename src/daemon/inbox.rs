//! What is in the inbox and what of it is ready: a scan of plain data, and the readiness rules
//! (marker file, or settled: sizes and mtimes unchanged across scans `settle_secs` apart).

use crate::config::Readiness;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// One top-level entry of the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
}

/// What an inbox entry is: only a real folder can be a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Folder,
    /// A regular file, FIFO, socket or device.
    File,
    /// A symbolic link (to a folder or anything else): never followed.
    Link,
}

/// Every file below an entry with its size and mtime: equal snapshots mean nothing changed.
pub type Snapshot = Vec<(String, u64, Option<SystemTime>)>;

/// Hidden and temporary names that droppers and desktops leave behind.
pub fn is_ignored(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.starts_with("~$")
        || [".tmp", ".part", ".filepart", ".crdownload", ".partial"].iter().any(|s| lower.ends_with(s))
        || lower == "thumbs.db"
        || lower == "desktop.ini"
}

pub fn scan(inbox: &Path) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(inbox)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_ignored(&name) {
            continue;
        }
        let Ok(kind) = entry.file_type() else { continue };
        let kind = match kind {
            k if k.is_symlink() => EntryKind::Link,
            k if k.is_dir() => EntryKind::Folder,
            _ => EntryKind::File,
        };
        entries.push(Entry { name, kind });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

pub fn snapshot(path: &Path) -> Snapshot {
    let mut out = Vec::new();
    let mut stack = vec![(path.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else { continue };
        if !meta.is_dir() {
            out.push((prefix, meta.len(), meta.modified().ok()));
            continue;
        }
        out.push((format!("{prefix}/"), 0, meta.modified().ok()));
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            stack.push((entry.path(), format!("{prefix}/{name}")));
        }
    }
    out.sort();
    out
}

/// Remembers what each entry looked like, and since when, to tell when it has settled.
#[derive(Debug, Default)]
pub struct Settle {
    seen: HashMap<String, (Snapshot, Instant)>,
}

impl Settle {
    /// The entries ready to claim now, and when the next not-yet-settled one may become ready.
    pub fn ready(
        &mut self,
        inbox: &Path,
        entries: &[Entry],
        mode: Readiness,
        marker: &str,
        settle: Duration,
        now: Instant,
    ) -> (Vec<Entry>, Option<Instant>) {
        self.seen.retain(|name, _| entries.iter().any(|e| &e.name == name));
        let mut ready = Vec::new();
        let mut next = None::<Instant>;
        for entry in entries {
            let path = inbox.join(&entry.name);
            if entry.kind == EntryKind::Folder && mode == Readiness::Marker {
                if path.join(marker).is_file() {
                    ready.push(entry.clone());
                }
                continue;
            }
            // Settle mode, and loose files and links in either mode (a link is never followed).
            let snap = snapshot(&path);
            let since = match self.seen.get(&entry.name) {
                Some((old, since)) if *old == snap => *since,
                _ => {
                    self.seen.insert(entry.name.clone(), (snap, now));
                    now
                }
            };
            if now.duration_since(since) >= settle && since != now {
                ready.push(entry.clone());
            } else {
                let due = since + settle;
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        (ready, next)
    }

    pub fn forget(&mut self, name: &str) {
        self.seen.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_hidden_names_are_ignored() {
        for name in [".DS_Store", ".sync", "~$input.xlsx", "batch.tmp", "x.part", "y.filepart", "Thumbs.db"] {
            assert!(is_ignored(name), "{name}");
        }
        for name in ["batch-17", "2026-11-23_batch", "input.csv"] {
            assert!(!is_ignored(name), "{name}");
        }
    }

    #[test]
    fn a_folder_settles_only_after_two_equal_scans_settle_apart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/input.csv"), "x").unwrap();
        let entries = scan(dir.path()).unwrap();
        let mut settle = Settle::default();
        let t0 = Instant::now();
        let wait = Duration::from_secs(30);
        let (ready, next) = settle.ready(dir.path(), &entries, Readiness::Settle, "DONE", wait, t0);
        assert!(ready.is_empty());
        assert_eq!(next, Some(t0 + wait));
        let (ready, _) = settle.ready(dir.path(), &entries, Readiness::Settle, "DONE", wait, t0 + Duration::from_secs(10));
        assert!(ready.is_empty());
        std::fs::write(dir.path().join("b/more.png"), "y").unwrap();
        let (ready, next) = settle.ready(dir.path(), &entries, Readiness::Settle, "DONE", wait, t0 + Duration::from_secs(31));
        assert!(ready.is_empty(), "changed: starts over");
        assert_eq!(next, Some(t0 + Duration::from_secs(61)));
        let (ready, _) = settle.ready(dir.path(), &entries, Readiness::Settle, "DONE", wait, t0 + Duration::from_secs(61));
        assert_eq!(ready, entries);
    }

    #[test]
    fn in_marker_mode_a_folder_is_ready_once_the_marker_is_there() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        let entries = scan(dir.path()).unwrap();
        let mut settle = Settle::default();
        let now = Instant::now();
        assert!(settle.ready(dir.path(), &entries, Readiness::Marker, "DONE", Duration::ZERO, now).0.is_empty());
        std::fs::write(dir.path().join("b/DONE"), "").unwrap();
        assert_eq!(settle.ready(dir.path(), &entries, Readiness::Marker, "DONE", Duration::ZERO, now).0, entries);
    }
}
