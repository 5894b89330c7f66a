//! Telling people in the drop folders what happened: a receipt in done/, a readable report in
//! rejected/, the reason and the way back in failed/. Reports are written into the batch folder
//! before it moves, so they arrive with it.

use super::{duplicate_message, moving, outcome_record, Lifecycle, LifecycleError, Outcome};
use crate::config::PathsConfig;
use crate::folders::{create_unique_dir, folder_name, move_unique};
use crate::metrics::Filed;
use crate::receipt::Receipt;
use crate::store::BatchRecord;
use crate::telemetry::blocking;
use crate::validate::{render_text, Report};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::{Path, PathBuf};

impl Lifecycle {
    /// Files a finished batch's folder with its receipt or report; `None` for unfinished ones.
    pub async fn file(&self, outcome: &Outcome, dir: &Path, drops: &PathsConfig) -> Result<Option<PathBuf>, LifecycleError> {
        let (dir, drops, outcome_owned) = (dir.to_path_buf(), drops.clone(), outcome_summary(outcome));
        let Some(mut summary) = outcome_owned else { return Ok(None) };
        if let Filing::Done(_, _, database) = &mut summary {
            database.clone_from(&self.database_id);
        }
        let record_id = outcome_record(outcome).id;
        let (from, target) = (dir.clone(), summary.destination(&drops).to_path_buf());
        let folder = dir.clone();
        let moved = match blocking(move || summary.write(&dir, &drops)).await {
            Ok(moved) => moved,
            // Gone from work/: filed already, by another host of the fleet (between its scan
            // and ours, or while this one was frozen past its lease).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !blocking(move || folder.exists()).await => {
                let now = self.record(record_id).await?;
                let Some(filed) = now.filed_path else { return Err(moving("file", &from, &target, e)) };
                let by = now.filed_by.unwrap_or_else(|| "another process".into());
                tracing::info!(id = record_id, to = %filed, "already filed by {by}; nothing to do");
                return Ok(None);
            }
            Err(e) => return Err(moving("file", &from, &target, e)),
        };
        if !self.store.set_filed_path(record_id, &moved.display().to_string()).await? {
            tracing::warn!(id = record_id, to = %moved.display(), "filed, but this host's lease ran out before it could record where");
        }
        crate::metrics::filed(match outcome {
            Outcome::Submitted { .. } | Outcome::AlreadySubmitted { .. } => Filed::Done,
            Outcome::Rejected { .. } | Outcome::Duplicate { .. } => Filed::Rejected,
            _ => Filed::Failed,
        });
        Ok(Some(moved))
    }
}

/// What filing a finished outcome writes, as plain data for a blocking thread.
pub(super) enum Filing {
    Done(BatchRecord, Receipt, Option<String>),
    Rejected(BatchRecord, Report),
    Duplicate(BatchRecord, Report, String),
    Failed(BatchRecord),
}

pub(super) fn outcome_summary(outcome: &Outcome) -> Option<Filing> {
    Some(match outcome {
        Outcome::Submitted { record, receipt } | Outcome::AlreadySubmitted { record, receipt } => {
            Filing::Done(record.clone(), receipt.clone(), None)
        }
        Outcome::Rejected { record, report } => Filing::Rejected(record.clone(), report.clone()),
        Outcome::Duplicate { record, of, report } => Filing::Duplicate(record.clone(), report.clone(), duplicate_message(record, of)),
        Outcome::Failed { record } => Filing::Failed(record.clone()),
        Outcome::RetryWait { .. } | Outcome::Interrupted { .. } | Outcome::Busy { .. } => return None,
    })
}

impl Filing {
    fn destination<'a>(&self, drops: &'a PathsConfig) -> &'a Path {
        match self {
            Filing::Done(..) => &drops.done,
            Filing::Rejected(..) | Filing::Duplicate(..) => &drops.rejected,
            Filing::Failed(..) => &drops.failed,
        }
    }

    fn write(&self, dir: &Path, drops: &PathsConfig) -> std::io::Result<PathBuf> {
        let to = self.destination(drops);
        match self {
            Filing::Done(record, receipt, database) => file_done(dir, to, record, receipt, database.as_deref()),
            Filing::Rejected(record, report) => file_rejected(dir, to, record, report),
            Filing::Duplicate(record, report, reason) => file_duplicate(dir, to, record, report, reason),
            Filing::Failed(record) => file_failed(dir, to, record),
        }
    }
}

pub const RECEIPT_FILE: &str = "RECEIPT.json";
pub const REJECTED_FILE: &str = "REJECTED.txt";
pub const ERRORS_FILE: &str = "errors.json";
pub const FAILED_FILE: &str = "FAILED.txt";

/// RECEIPT.json: the receipt of `send --json` with the batch's id and times, and the identity of
/// the database that recorded it (a database found older than its receipts is refused).
#[derive(Debug, Serialize)]
struct StoredReceipt<'a> {
    id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<&'a str>,
    #[serde(flatten)]
    receipt: &'a Receipt,
    first_seen_at: DateTime<Utc>,
    upload_started_at: Option<DateTime<Utc>>,
    submitted_at: Option<DateTime<Utc>>,
    attempts: i64,
}

pub fn file_done(dir: &Path, done: &Path, record: &BatchRecord, receipt: &Receipt, database: Option<&str>) -> std::io::Result<PathBuf> {
    let stored = StoredReceipt {
        id: record.id,
        database,
        receipt,
        first_seen_at: record.created_at,
        upload_started_at: record.upload_started_at,
        submitted_at: record.submitted_at,
        attempts: record.attempts,
    };
    write(dir, RECEIPT_FILE, &serde_json::to_string_pretty(&stored).map_err(std::io::Error::other)?)?;
    settle(dir, done, record)
}

/// Moves a batch folder to its destination under the name it was dropped with.
fn settle(dir: &Path, to: &Path, record: &BatchRecord) -> std::io::Result<PathBuf> {
    crate::failpoint::hit("while_filing");
    // A report another process of ours began and never finished (a host frozen while filing)
    // does not travel with the folder.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = [RECEIPT_FILE, REJECTED_FILE, ERRORS_FILE, FAILED_FILE].iter().any(|r| name.starts_with(&format!(".{r}.")));
        if ours && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    move_unique(dir, to, &record.name)
}

/// An invalid batch: REJECTED.txt for a person, errors.json for a program.
pub fn file_rejected(dir: &Path, rejected: &Path, record: &BatchRecord, report: &Report) -> std::io::Result<PathBuf> {
    let mut text = format!(
        "Batch \"{}\" was NOT sent to Jumio: it has {} problem(s) to fix. Nothing from it reached Jumio.\n\n",
        report.batch,
        report.errors.len()
    );
    text.push_str("Each line gives the row (row 1 is the first row after the header of input.csv), the column,\n");
    text.push_str("a code in brackets and what to do.\n\n");
    text.push_str(&render_text(report));
    text.push_str(AGAIN);
    write(dir, REJECTED_FILE, &text)?;
    write(dir, ERRORS_FILE, &serde_json::to_string_pretty(report).map_err(std::io::Error::other)?)?;
    settle(dir, rejected, record)
}

const AGAIN: &str = "\nTo send it: fix the problems above in a copy of this folder, then drop the corrected folder\n\
into the inbox again (with the ready marker written last). Warnings do not stop a batch.\n";

/// A valid batch refused because the same content was already submitted (or is on its way).
pub fn file_duplicate(dir: &Path, rejected: &Path, record: &BatchRecord, report: &Report, reason: &str) -> std::io::Result<PathBuf> {
    let again = match record.origin.kind {
        Some(crate::batch::Kind::Resubmission) => "",
        _ => " If you really mean to submit it again, run\n  jumio-batchd send --allow-duplicate <this folder>",
    };
    let text = format!(
        "Batch \"{}\" was NOT sent to Jumio: {reason}.\n\nThe same input.csv and images were already submitted or are on their way; sending them again\n\
         would create the same transactions twice, and each one is charged.{again}\n",
        report.batch
    );
    write(dir, REJECTED_FILE, &text)?;
    let mut report = report.clone();
    report.valid = false;
    report.errors.insert(0, crate::validate::Problem { row: None, column: None, code: "duplicate_batch", message: reason.to_owned() });
    write(dir, ERRORS_FILE, &serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?)?;
    settle(dir, rejected, record)
}

/// Gave up: what failed, how often it was tried, and how to try again.
pub fn file_failed(dir: &Path, failed: &Path, record: &BatchRecord) -> std::io::Result<PathBuf> {
    let text = format!(
        "Batch \"{name}\" could NOT be delivered to Jumio (batch id {id}, {attempts} attempt(s)).\n\n\
         Reason: {reason}\n\n\
         Remote folder: {uuid} (without DONE, so Jumio has not started processing it).\n\n\
         To try again once the cause is fixed:\n  jumio-batchd retry {name}\n\
         This moves the batch back into the queue and resumes it into the same remote folder, so it is\n\
         never submitted twice (a copy dropped into the inbox would be a new batch, with a folder of its own).\n",
        name = record.name,
        id = record.id,
        attempts = record.attempts,
        reason = record.last_error.as_deref().unwrap_or("unknown"),
        uuid = record.remote_uuid.as_deref().unwrap_or("none created"),
    );
    write(dir, FAILED_FILE, &text)?;
    settle(dir, failed, record)
}

/// A loose file in the inbox root, dropped as `dropped`: batches are folders.
pub fn file_loose(file: &Path, dropped: &str, rejected: &Path) -> std::io::Result<PathBuf> {
    let name = crate::folders::shown(dropped);
    let holder = create_unique_dir(rejected, &name)?;
    std::fs::rename(file, holder.join(&name))?;
    let text = format!(
        "\"{name}\" was dropped into the inbox as a single file, but a batch must be a folder holding\n\
         input.csv and the images it names. Nothing was sent to Jumio.\n\n\
         To send it: make a folder, put input.csv and the images in it, and drop the folder into the inbox\n\
         (with the ready marker written last). If this is a zip archive, unpack it first.\n"
    );
    write(&holder, REJECTED_FILE, &text)?;
    Ok(holder)
}

/// A symbolic link dropped into an inbox as `dropped`: moved (the link itself, never what it
/// points to) into a folder of rejected/ with a report. Nothing is read through it.
pub fn file_link(link: &Path, dropped: &str, rejected: &Path) -> std::io::Result<PathBuf> {
    let name = crate::folders::shown(dropped);
    let holder = create_unique_dir(rejected, &name)?;
    std::fs::rename(link, holder.join(&name))?;
    let text = format!(
        "\"{name}\" was dropped into the inbox as a symbolic link, not as a folder. jumio-batchd never reads a\n\
         batch through a link (it could lead anywhere on this host). Nothing was read or sent to Jumio.\n\n\
         To send it: copy (or move) the batch folder itself into the inbox, with the ready marker written last.\n"
    );
    write(&holder, REJECTED_FILE, &text)?;
    Ok(holder)
}

/// Writes a report into the batch folder under `name`. A report of ours already there (from a
/// filing a crash interrupted, or a batch dropped again with its old report) is replaced; a file
/// of the dropper's with that name is kept, and ours becomes `stem-2.ext`.
fn write(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    let target = dir.join(name);
    let theirs = std::fs::symlink_metadata(&target).is_ok() && !std::fs::read(&target).is_ok_and(|old| written_by_us(name, &old));
    if theirs {
        return crate::folders::place_unique(&tmp, dir, name).map(drop);
    }
    std::fs::rename(tmp, target)
}

/// Recognises a report jumio-batchd wrote, by its shape.
fn written_by_us(name: &str, bytes: &[u8]) -> bool {
    let keys = |required: &[&str]| {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
            .is_ok_and(|o| required.iter().all(|k| o.contains_key(*k)))
    };
    match name {
        RECEIPT_FILE => keys(&["id", "batch", "files_sha256"]),
        ERRORS_FILE => keys(&["batch", "valid", "errors", "warnings"]),
        _ => bytes.starts_with(b"Batch \""),
    }
}

/// A batch folder dropped into `[paths] inbox` itself when the config names routes: it belongs
/// to no tenant, so it is not sent; the report says where to drop it.
pub fn file_unrouted(dir: &Path, rejected: &Path, route_inboxes: &[String]) -> std::io::Result<PathBuf> {
    let name = folder_name(dir);
    let mut text = format!(
        "Batch \"{}\" was NOT sent to Jumio: it was dropped into the top of the inbox, and this host sends\n\
         batches to several Jumio tenants, one inbox each. Nothing from it reached Jumio.\n\n\
         To send it: drop the folder again into the inbox of the tenant it is for:\n",
        crate::folders::shown(&name)
    );
    for inbox in route_inboxes {
        text.push_str(&format!("  {inbox}\n"));
    }
    write(dir, REJECTED_FILE, &text)?;
    move_unique(dir, rejected, &name)
}
