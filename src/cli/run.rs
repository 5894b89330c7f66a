//! `jumio-batchd run [--once]`: the service.

use super::EXIT_OK;
use crate::config::{Config, LogFormat};
use crate::daemon;
use crate::telemetry::{self, Sink};
use std::path::Path;

pub async fn run(config: Option<&Path>, once: bool, new_database: bool) -> anyhow::Result<u8> {
    let loaded = Config::load_or_default(config)?;
    telemetry::init(Sink::Stdout, loaded.config.log.format == LogFormat::Json, &loaded.config.log.level);
    let shutdown = shutdown_signal()?;
    log_hangups()?;
    if let Err(e) = daemon::run(&loaded, shutdown, once, new_database).await {
        let e = anyhow::Error::from(e);
        tracing::error!("cannot run: {}", super::explain(&e));
        return Err(e);
    }
    Ok(EXIT_OK)
}

/// SIGHUP (a reload request, or the controlling terminal gone) does not stop the daemon: it is
/// logged, and the configuration is read only at start.
fn log_hangups() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::warn!("SIGHUP received: the configuration is read only at start; restart the service (systemctl restart jumio-batchd) to apply changes. Going on.");
        }
    });
    Ok(())
}

/// Resolves on SIGTERM (systemctl stop) or SIGINT (Ctrl-C). The handlers are installed here,
/// before READY=1, so a stop request right after start is never lost.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
