//! `jumio-batchd run [--once]`: the service.

use super::EXIT_OK;
use crate::config::{Config, LogFormat};
use crate::daemon;
use crate::telemetry::{self, Sink};
use std::path::Path;

pub async fn run(config: Option<&Path>, once: bool) -> anyhow::Result<u8> {
    let loaded = Config::load_or_default(config)?;
    telemetry::init(Sink::Stdout, loaded.config.log.format == LogFormat::Json, &loaded.config.log.level);
    if let Err(e) = daemon::run(&loaded, shutdown_signal(), once).await {
        tracing::error!("cannot run: {e:#}");
        return Err(e);
    }
    Ok(EXIT_OK)
}

/// Resolves on SIGTERM (systemctl stop) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
