//! Filesystem events on the inbox as a hint to scan early. The periodic rescan stays the
//! authority: network shares send no events, and events can overflow.

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

pub struct InboxWatch {
    path: PathBuf,
    /// (device, inode) of the inbox when the watch was set: a remount or re-creation changes it.
    identity: Option<(u64, u64)>,
    watcher: Option<RecommendedWatcher>,
    tx: mpsc::Sender<()>,
    enabled: bool,
}

impl InboxWatch {
    /// A watch on `path`; with `enabled` false it never watches (polling only).
    pub fn new(path: &Path, enabled: bool) -> (InboxWatch, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel(1);
        let mut watch = InboxWatch { path: path.to_path_buf(), identity: None, watcher: None, tx, enabled };
        watch.ensure();
        (watch, rx)
    }

    /// (Re)establishes the watch when the inbox appeared, vanished or was remounted.
    pub fn ensure(&mut self) {
        if !self.enabled {
            return;
        }
        let identity = std::fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        if identity == self.identity && (self.watcher.is_some() || identity.is_none()) {
            return;
        }
        self.identity = identity;
        self.watcher = identity.and_then(|_| self.watch().ok());
        if self.watcher.is_some() {
            tracing::info!(inbox = %self.path.display(), "watching the inbox for changes");
        }
    }

    fn watch(&self) -> notify::Result<RecommendedWatcher> {
        let tx = self.tx.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Any event, or an error such as an overflow, means "scan soon".
            let _ = event;
            let _ = tx.try_send(());
        })?;
        watcher.watch(&self.path, RecursiveMode::Recursive)?;
        Ok(watcher)
    }

    pub fn is_active(&self) -> bool {
        self.watcher.is_some()
    }
}
