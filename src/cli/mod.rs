//! The command line: clap definitions and one file per subcommand's output.

mod check;
mod progress;
mod resubmit;
mod retry;
mod run;
mod send;
mod status;
mod validate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

pub use crate::config::DEFAULT_CONFIG;

/// Exit codes shared by every command.
pub const EXIT_OK: u8 = 0;
pub const EXIT_INVALID: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "jumio-batchd",
    version,
    about = "Validates identity-verification batches and ships them to Jumio over SFTP, exactly once."
)]
pub struct Cli {
    /// Configuration file (TOML). Commands that need no setting from it work without it.
    #[arg(long, global = true, value_name = "FILE", env = "JUMIO_BATCHD_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a batch folder against Jumio's batch rules and list every problem.
    #[command(
        after_help = "Examples:\n  jumio-batchd validate /srv/jumio/inbox/batch-2026-11-23\n  jumio-batchd validate --json ./batch > report.json\n\nExit status: 0 valid, 1 invalid, 2 folder unreadable or usage error."
    )]
    Validate {
        /// The batch folder (holding input.csv and the images it names).
        dir: PathBuf,
        /// Print one JSON object instead of the text report.
        #[arg(long)]
        json: bool,
    },
    /// Validate a batch folder and ship it to Jumio: a fresh UUID folder, every file, DONE last.
    #[command(
        after_help = "Examples:\n  jumio-batchd --config /etc/jumio-batchd/config.toml send ./batch-17\n  jumio-batchd send --json ./batch-17 > receipt.json\n\nPrints the remote folder on stdout. Run again on a batch already at Jumio, it says so, sends nothing\nand exits 0. Exit status: 0 shipped (or already submitted), 1 invalid, duplicate or being shipped by\nanother process (nothing sent), 2 shipping failed (DONE not written)."
    )]
    Send {
        /// The batch folder.
        dir: PathBuf,
        /// Print the receipt (or the validation report) as JSON.
        #[arg(long)]
        json: bool,
        /// Ship even if a batch with the same content was already submitted, this folder included (each submission costs money).
        #[arg(long)]
        allow_duplicate: bool,
        /// Print only the result (the remote folder, or the JSON): no progress bar, no summary.
        #[arg(long, short, conflicts_with = "verbose")]
        quiet: bool,
        /// Show the log lines (INFO and above) on a terminal too, where only warnings are shown.
        #[arg(long, short)]
        verbose: bool,
        /// The route (tenant) to send to, when the config names routes ([routes.NAME]).
        #[arg(long, value_name = "NAME")]
        route: Option<String>,
    },
    /// Send again the rows of a shipped batch from row N down (Jumio stopped at row N), as a new batch.
    #[command(
        after_help = "Examples:\n  jumio-batchd resubmit batch-2026-11-23 --from-row 118\n  jumio-batchd resubmit 42 --from-row 118 --csv ./fixed-input.csv --json\n\nRow N is the 1-based data row, as `validate` and Jumio's Portal count it (row 1 is the first row\nafter the header). The new batch holds the header and rows N.. of the batch's input.csv (or of the\ncorrected CSV, which must keep the original header), with exactly the images those rows name, taken\nfrom the copy kept in done/ (or failed/). It goes to the same tenant under a new UUID, DONE last,\nand is filed into done/ as NAME.from-row-N. Run again, it resumes or says it was already submitted.\nExit status: 0 shipped (or already submitted), 1 invalid or refused, 2 failure."
    )]
    Resubmit {
        /// The batch, by folder name or id (see `status`).
        batch: String,
        /// The first data row to send again (1-based, as `validate` reports rows).
        #[arg(long, value_name = "N")]
        from_row: u64,
        /// A corrected copy of the batch's input.csv (same header) to take the rows from.
        #[arg(long, value_name = "FIXED.csv")]
        csv: Option<PathBuf>,
        /// Print the receipt (or the validation report) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the service: watch the inbox, ship ready batches, file the outcomes. Stops on SIGTERM.
    #[command(
        after_help = "Examples:\n  jumio-batchd --config /etc/jumio-batchd/config.toml run\n  jumio-batchd --config ./config.toml run --once    # for cron and tests\n\nDrop a batch folder into [paths] inbox and write the marker file (DONE) last. Shipped batches\nmove to done/ with RECEIPT.json, invalid ones to rejected/ with REJECTED.txt, given-up ones to\nfailed/ with FAILED.txt."
    )]
    Run {
        /// Handle every batch ready now (waiting for those in flight), then exit.
        #[arg(long)]
        once: bool,
        /// Start with a new, empty state database although the drop folders show earlier batches
        /// (the duplicate guard then knows none of them). Restore the database instead if you can.
        #[arg(long)]
        new_database: bool,
    },
    /// Show what the daemon has done: counts, uploads in flight, recent outcomes. Read-only.
    #[command(
        after_help = "Examples:\n  jumio-batchd status\n  jumio-batchd status batch-2026-11-23     # one batch and its history\n  jumio-batchd status --json | jq '.[] | select(.state == \"failed\")'"
    )]
    Status {
        /// Print a JSON array of batches.
        #[arg(long)]
        json: bool,
        /// One batch, by folder name or id.
        batch: Option<String>,
    },
    /// Check the configuration, the folders, the key, the server's host key and write access.
    #[command(
        after_help = "Examples:\n  jumio-batchd --config /etc/jumio-batchd/config.toml check\n\nPrints one line per check: OK, or FAIL with the fix. Exit status 0 when all pass."
    )]
    Check,
    /// Put a failed batch back into the queue (it resumes into the same remote folder).
    #[command(after_help = "Examples:\n  jumio-batchd retry batch-2026-11-23\n  jumio-batchd retry 42")]
    Retry {
        /// The batch, by folder name or id (see `status`).
        batch: String,
    },
}

/// An error and its causes on one line, each cause once: most messages already quote their
/// cause, and repeating it would only make the line harder to read.
pub fn explain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Blocking work still running when a command is done (libssh2 waiting on a stalled server)
/// gets this long before the process exits anyway.
pub(super) const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(2);

fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(future);
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Validate { dir, json } => validate::run(cli.config.as_deref(), &dir, json),
        Command::Status { json, batch } => block_on(status::run(cli.config.as_deref(), json, batch.as_deref())),
        Command::Check => block_on(check::run(cli.config.as_deref())),
        Command::Retry { batch } => block_on(retry::run(cli.config.as_deref(), &batch)),
        Command::Run { once, new_database } => block_on(run::run(cli.config.as_deref(), once, new_database)),
        Command::Send { dir, json, allow_duplicate, quiet, verbose, route } => {
            let shown = send::Shown { json, quiet, verbose };
            block_on(send::run(cli.config.as_deref(), &dir, shown, allow_duplicate, route.as_deref()))
        }
        Command::Resubmit { batch, from_row, csv, json } => {
            block_on(resubmit::run(cli.config.as_deref(), &batch, from_row as usize, csv.as_deref(), json))
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("jumio-batchd: {}", explain(&e));
            ExitCode::from(EXIT_USAGE)
        }
    }
}
