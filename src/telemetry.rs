//! Logs: tracing to stdout (the daemon, for journald) or stderr (commands whose stdout is
//! data), as text or JSON, level from RUST_LOG or the config.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
}

/// Installs the global subscriber once; later calls are ignored (tests call it freely).
pub fn init(sink: Sink, json: bool, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = match (sink, json) {
        (Sink::Stdout, false) => builder.with_writer(std::io::stdout).try_init(),
        (Sink::Stderr, false) => builder.with_writer(std::io::stderr).try_init(),
        (Sink::Stdout, true) => builder.json().flatten_event(true).with_writer(std::io::stdout).try_init(),
        (Sink::Stderr, true) => builder.json().flatten_event(true).with_writer(std::io::stderr).try_init(),
    };
    let _ = result;
}
