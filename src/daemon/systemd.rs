//! Talking to systemd (Type=notify): READY=1 once everything is in place, a one-line STATUS=,
//! STOPPING=1, and watchdog pings that stop when the main loop stops making progress.
//! Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

use sd_notify::NotifyState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn ready() {
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
}

pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

pub fn status(line: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Status(line)]);
}

/// The main loop's heartbeat: it beats once per iteration; the watchdog pings only while beats
/// are recent (by the monotonic clock: a wall clock set back or forward changes nothing).
#[derive(Clone)]
pub struct Heartbeat {
    born: Instant,
    /// Milliseconds after `born` of the last beat.
    last: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { born: Instant::now(), last: Arc::default() }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last.store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        self.born.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// Pings the watchdog at half its interval while the heartbeat is younger than `stall`, until
/// the daemon stops. Returns at once when systemd set no watchdog.
pub async fn watchdog(heartbeat: Heartbeat, stall: Duration, tasks: crate::tasks::Tasks) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) {
        return;
    }
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(500));
    loop {
        if heartbeat.age() <= stall {
            let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
        } else {
            tracing::warn!(stalled_secs = heartbeat.age().as_secs(), "main loop stalled: not pinging the watchdog");
        }
        if !crate::tasks::sleep_unless_stopped(&tasks, every).await {
            return;
        }
    }
}

/// Raises this process's soft limit of open descriptors to its hard limit (systemd's default
/// soft limit is 1024, its hard one far higher; the unit sets `LimitNOFILE=` too). Returns the
/// limit now in force, and what it was.
pub fn raise_open_files_limit() -> (Option<u64>, Option<u64>) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let before = getrlimit(Resource::Nofile);
    if before.current == before.maximum {
        return (before.current, before.current);
    }
    let raised = rustix::process::Rlimit { current: before.maximum, maximum: before.maximum };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => (before.maximum, before.current),
        Err(_) => (before.current, before.current),
    }
}

/// SIGHUP (a reload request, or the controlling terminal gone) does not stop the daemon: it is
/// logged (the configuration is read only at start), until the daemon stops. The handler is
/// installed by this call, before READY=1, so no SIGHUP ends the process.
pub fn log_hangups(tasks: crate::tasks::Tasks) -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                Some(()) = hangup.recv() => tracing::warn!("SIGHUP received: the configuration is read only at start; restart the service (systemctl restart jumio-batchd) to apply changes. Going on."),
                _ = tasks.stopping() => return,
            }
        }
    })
}
