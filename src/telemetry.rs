//! Logs: tracing to journald with its structured fields when systemd connected our output to
//! the journal, else to stdout (the daemon) or stderr (commands whose stdout is data), as text
//! or JSON; level from RUST_LOG or the config.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
}

/// Installs the global subscriber once; later calls are ignored.
pub fn init(sink: Sink, json: bool, default_level: &str) {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // systemd sets JOURNAL_STREAM when stdout/stderr go to the journal.
    if sink == Sink::Stdout && std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry().with(filter()).with(journald.with_syslog_identifier("jumio-batchd".into())).try_init();
            return;
        }
    }
    use std::io::IsTerminal;
    let ansi = match sink {
        Sink::Stdout => std::io::stdout().is_terminal(),
        Sink::Stderr => std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter()).with_target(false).with_ansi(ansi);
    let _ = match (sink, json) {
        (Sink::Stdout, false) => builder.with_writer(std::io::stdout).try_init(),
        (Sink::Stderr, false) => builder.with_writer(std::io::stderr).try_init(),
        (Sink::Stdout, true) => builder.json().flatten_event(true).with_writer(std::io::stdout).try_init(),
        (Sink::Stderr, true) => builder.json().flatten_event(true).with_writer(std::io::stderr).try_init(),
    };
}

/// Runs blocking work (file I/O on a share, hashing, libssh2) on a blocking thread, inside the
/// caller's span; a panic there resumes in the caller, so it ends the batch's task like any other.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(work)).await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(e) => panic!("blocking work was cancelled: {e}"),
        },
    }
}

/// When a warning that may repeat many times a second is due again: the first time, then at
/// most once per `every` (a flood of failures is one line a minute, not thousands a second).
#[derive(Debug)]
pub struct Every {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
}

impl Every {
    pub fn new(every: std::time::Duration) -> Every {
        Every { every, last: None }
    }

    pub fn due(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < self.every) {
            return false;
        }
        self.last = Some(now);
        true
    }
}
