//! Named instants where tests stop the process to kill it there (crash tests). Off unless
//! `JUMIO_BATCHD_FAILPOINT` names the point (`before_done`, or `after_file:3` for the 3rd file);
//! then the process says so on stderr and waits to be killed. `after_file~200` instead slows
//! every file by 200 ms (`before_send~200`: every write to an SFTP socket, just before the
//! lease is checked for it), so a test's signal surely lands mid-batch; `panic:batch_task` panics
//! inside the first batch task the daemon runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub const ENV: &str = "JUMIO_BATCHD_FAILPOINT";

fn configured() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty())).as_deref()
}

/// Pauses forever if `name` is the configured point.
pub fn hit(name: &str) {
    if configured() == Some(name) {
        pause(name);
    }
}

/// Counts hits of `name`; pauses forever at the configured count (`name:N`).
pub fn hit_counted(name: &str) {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let delay = configured().and_then(|c| c.strip_prefix(name)).and_then(|r| r.strip_prefix('~')).and_then(|ms| ms.parse().ok());
    if let Some(ms) = delay {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        return;
    }
    let Some((point, n)) = configured().and_then(|c| c.split_once(':')) else { return };
    if point == name && n.parse::<usize>().ok() == Some(COUNT.fetch_add(1, Ordering::SeqCst) + 1) {
        pause(configured().unwrap_or(name));
    }
}

/// Panics the first time `name` is hit when the configured point is `panic:NAME` (a bug
/// injected into one batch's task; later hits go on normally).
pub fn panic_once(name: &str) {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if configured().and_then(|c| c.strip_prefix("panic:")) == Some(name) && !FIRED.swap(true, Ordering::SeqCst) {
        panic!("failpoint panic:{name} injected");
    }
}

fn pause(name: &str) -> ! {
    eprintln!("failpoint {name} reached: waiting to be killed");
    loop {
        std::thread::park();
    }
}
