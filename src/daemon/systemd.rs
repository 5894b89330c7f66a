//! Talking to systemd (Type=notify): READY=1 once everything is in place, a one-line STATUS=,
//! STOPPING=1, and watchdog pings that stop when the main loop stops making progress.
//! Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

use sd_notify::NotifyState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
/// are recent.
#[derive(Clone, Default)]
pub struct Heartbeat(Arc<AtomicU64>);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.store(now_secs(), Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        Duration::from_secs(now_secs().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Pings the watchdog at half its interval while the heartbeat is younger than `stall`.
/// Returns at once when systemd set no watchdog.
pub async fn watchdog(heartbeat: Heartbeat, stall: Duration) {
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
        tokio::time::sleep(every).await;
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
