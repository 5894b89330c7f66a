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
    if let Err(e) = daemon::run(&loaded, shutdown, once, new_database).await {
        let e = anyhow::Error::from(e);
        tracing::error!("cannot run: {}", super::explain(&e));
        return Err(e);
    }
    Ok(EXIT_OK)
}

/// A shutdown tree stopped by SIGTERM or SIGINT (`send`, `resubmit`): deliveries then end at
/// their next safe point, a wait to retry at once.
pub fn stopped_by_signals() -> std::io::Result<crate::tasks::Tasks> {
    let tasks = crate::tasks::Tasks::new();
    let (signal, stopper) = (shutdown_signal()?, tasks.clone());
    tasks.spawn(async move {
        tokio::select! {
            _ = signal => stopper.stop(),
            _ = stopper.stopping() => {}
        }
    });
    Ok(tasks)
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
