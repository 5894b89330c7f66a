//! The one shutdown tree: every background task of the process (heartbeats, the watchdog, the
//! metrics listener, lease renewals and releases, progress reports) is spawned here, sees one
//! token that says "stop", and is waited for before the process closes its database.
//! **Invariant:** nothing is spawned with a bare `tokio::spawn` that shutdown does not await.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Tasks {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `task` in the background; shutdown waits for it.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// The token every task and delivery watches.
    pub fn token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Asks everything to stop at its next safe point.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves once a stop was asked for.
    pub async fn stopping(&self) {
        self.stop.cancelled().await
    }

    /// Stops everything and waits at most `grace` for the tasks to end; false when some did not.
    pub async fn finish(&self, grace: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

/// Sleeps `duration`, or less when `tasks` is stopping: true when the whole sleep was slept.
pub async fn sleep_unless_stopped(tasks: &Tasks, duration: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = tasks.stopping() => false,
    }
}
