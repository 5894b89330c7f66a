//! `jumio-batchd send DIR [--json] [--allow-duplicate]`: validate, record, ship into the
//! batch's UUID folder (resuming a crashed run), retry transient failures, print the receipt.
//! Run again on a batch already at Jumio, it says so and exits 0 without sending anything.

use super::progress::Bars;
use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::config::Config;
use crate::lifecycle::{Admitted, Lifecycle, Outcome};
use crate::receipt::Receipt;
use crate::store::BatchRecord;
use crate::telemetry::{self, Sink};
use crate::validate;
use std::io::IsTerminal;
use std::path::Path;

/// How `send` talks to the person or script running it.
#[derive(Debug, Clone, Copy)]
pub struct Shown {
    pub json: bool,
    /// Only the result.
    pub quiet: bool,
    /// Log lines on a terminal too.
    pub verbose: bool,
}

pub async fn run(config: Option<&Path>, dir: &Path, shown: Shown, allow_duplicate: bool, route: Option<&str>) -> anyhow::Result<u8> {
    let loaded = Config::load_or_default(config)?;
    // On a terminal the bar tells the story; the log lines are for scripts and -v.
    let terminal = std::io::stderr().is_terminal();
    let level = if shown.verbose || (!terminal && !shown.quiet) { "info" } else { "warn" };
    telemetry::init(Sink::Stderr, false, level);
    let route = loaded.route(route)?;
    // The memory of what was submitted: an empty or older database beside drop folders with
    // history is refused here as by `run` (`run --new-database` accepts it).
    let store = crate::lifecycle::memory::open_store(&loaded.config, false).await?;
    let tasks = super::run::stopped_by_signals()?;
    let mut life = Lifecycle::new(store, &loaded.config, vec![route], tasks.clone()).await?;
    let bars = Bars::default();
    if terminal && !shown.quiet {
        life.watch_uploads(bars.watcher());
    }
    // A link named on the command line is the operator's to follow (the daemon never follows one).
    let dir = &dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let outcome = match life.admit(dir, allow_duplicate).await? {
        Admitted::Finished(outcome) => *outcome,
        Admitted::Ready(claim) => {
            crate::failpoint::hit("after_admit");
            life.run_to_end(*claim, allow_duplicate, None, |record, wait| {
                bars.finish();
                announce_retry(record, wait);
            })
            .await?
        }
    };
    bars.finish();
    let code = report(outcome, shown);
    tasks.finish(super::RUNTIME_SHUTDOWN).await;
    code
}

/// Says that an attempt failed and when the next is.
pub(super) fn announce_retry(waiting: &BatchRecord, wait: std::time::Duration) {
    eprintln!(
        "{}: attempt {} failed: {}; retrying in {:.1} s",
        waiting.name,
        waiting.attempts,
        waiting.last_error.as_deref().unwrap_or(""),
        wait.as_secs_f64()
    );
}

/// What the person (or script) running `send` (or `resubmit`) sees, and the exit status.
pub(super) fn report(outcome: Outcome, shown: Shown) -> anyhow::Result<u8> {
    let json = shown.json;
    Ok(match outcome {
        Outcome::Submitted { receipt, .. } => {
            print_receipt(&receipt, json)?;
            if !json && !shown.quiet {
                let rate = receipt.bytes as f64 / receipt.seconds.max(1e-9) / 1e6;
                eprintln!(
                    "{}: shipped {} rows, {} images, {} bytes in {:.2} s ({rate:.1} MB/s) to {}; DONE written",
                    receipt.batch,
                    receipt.rows,
                    receipt.files,
                    receipt.bytes,
                    receipt.seconds,
                    receipt.remote_folders().join(", ")
                );
            }
            EXIT_OK
        }
        Outcome::AlreadySubmitted { record, receipt } => {
            print_receipt(&receipt, json)?;
            if shown.quiet {
                return Ok(EXIT_OK);
            }
            let at = record.submitted_at.map(|t| t.to_rfc3339()).unwrap_or_default();
            eprintln!("{}: already submitted as {} at {at}; nothing was sent", record.name, receipt.remote_folders().join(", "));
            EXIT_OK
        }
        Outcome::Rejected { report, .. } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                eprint!("{}", validate::render_text(&report));
                eprintln!("not sent: fix the errors above and send again");
            }
            EXIT_INVALID
        }
        Outcome::Duplicate { record, .. } => {
            eprintln!("{}: not sent: {}", record.name, record.last_error.unwrap_or_default());
            EXIT_INVALID
        }
        Outcome::Busy { record, holder } => {
            eprintln!("{}: being shipped by {holder} (batch id {}); nothing done here", record.name, record.id);
            EXIT_INVALID
        }
        Outcome::Failed { record } => {
            eprintln!("{}: failed: {}", record.name, record.last_error.unwrap_or_default());
            EXIT_USAGE
        }
        Outcome::Interrupted { record } | Outcome::RetryWait { record } => {
            eprintln!(
                "{}: interrupted before DONE; run the same command again to resume into {}",
                record.name,
                record.remote_uuid.unwrap_or_default()
            );
            EXIT_USAGE
        }
    })
}

fn print_receipt(receipt: &Receipt, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(receipt)?);
    } else {
        for folder in receipt.remote_folders() {
            println!("{folder}");
        }
    }
    Ok(())
}
