//! `jumio-batchd send DIR [--json] [--allow-duplicate]`: validate, record, ship into the
//! batch's UUID folder (resuming a crashed run), retry transient failures, print the receipt.

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::config::Config;
use crate::deliver::{self, Outcome, Shipper};
use crate::receipt::Receipt;
use crate::store::Store;
use crate::telemetry::{self, Sink};
use crate::validate;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub async fn run(config: Option<&Path>, dir: &Path, json: bool, allow_duplicate: bool) -> anyhow::Result<u8> {
    let loaded = Config::load_or_default(config)?;
    telemetry::init(Sink::Stderr, false, "info");
    let sftp = loaded.sftp()?;
    let checked = validate::validate(dir, loaded.marker())?;
    let store = Store::open(&loaded.config.state.database).await?;
    let record = deliver::admit(&store, dir, &checked).await?;
    crate::failpoint::hit("after_admit");
    let report = &checked.report;
    if !report.valid {
        if json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            eprint!("{}", validate::render_text(report));
            eprintln!("not sent: fix the errors above and send again");
        }
        return Ok(EXIT_INVALID);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(tokio::sync::Notify::new());
    let shutdown = super::run::shutdown_signal()?;
    let (on_signal, notify) = (stop.clone(), stopped.clone());
    tokio::spawn(async move {
        shutdown.await;
        on_signal.store(true, Ordering::SeqCst);
        notify.notify_one();
    });
    let shipper = Shipper { store: &store, sftp, retry: &loaded.config.retry, stop: stop.clone() };
    let mut record = record;
    loop {
        match shipper.attempt(record, dir, &checked.files, allow_duplicate).await? {
            Outcome::Submitted { receipt, .. } => {
                print_receipt(&receipt, json)?;
                return Ok(EXIT_OK);
            }
            Outcome::Duplicate { record, .. } => {
                eprintln!("{}: not sent: {}", record.name, record.last_error.unwrap_or_default());
                return Ok(EXIT_INVALID);
            }
            Outcome::Failed { record } => {
                eprintln!("{}: failed: {}", record.name, record.last_error.unwrap_or_default());
                return Ok(EXIT_USAGE);
            }
            Outcome::Interrupted { record } => {
                eprintln!(
                    "{}: interrupted before DONE; run the same command again to resume into {}",
                    record.name,
                    record.remote_uuid.unwrap_or_default()
                );
                return Ok(EXIT_USAGE);
            }
            Outcome::RetryWait { record: waiting } => {
                let wait = deliver::wait_for(&waiting);
                eprintln!(
                    "{}: attempt {} failed: {}; retrying in {:.1} s",
                    waiting.name,
                    waiting.attempts,
                    waiting.last_error.as_deref().unwrap_or(""),
                    wait.as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped.notified() => {
                        eprintln!("{}: stopped while waiting to retry; run the same command again to resume", waiting.name);
                        return Ok(EXIT_USAGE);
                    }
                }
                record = waiting;
            }
        }
    }
}

fn print_receipt(receipt: &Receipt, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(receipt)?);
    } else {
        println!("{}", receipt.remote_dir);
        let rate = receipt.bytes as f64 / receipt.seconds.max(1e-9) / 1e6;
        eprintln!(
            "{}: shipped {} rows, {} images, {} bytes in {:.2} s ({rate:.1} MB/s) to {}; DONE written",
            receipt.batch, receipt.rows, receipt.files, receipt.bytes, receipt.seconds, receipt.remote_dir
        );
    }
    Ok(())
}
