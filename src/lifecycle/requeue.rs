//! `retry`: a failed batch back into the queue, into the same remote folder. The state change is
//! recorded before the folder moves back into work/ (under its id-carrying name); asked again
//! after a crash in between, it finishes the move. A batch whose route now points to another
//! tenant is refused, naming both: it is only ever sent where it was dropped for.

use super::{Lifecycle, LifecycleError, FAILED_FILE};
use crate::batch::State;
use crate::config::PathsConfig;
use crate::folders::{claimed_name, rename_no_replace};
use crate::store::{BatchRecord, Change};
use crate::telemetry::blocking;
use std::path::PathBuf;

/// What `requeue` did, or why it did nothing.
#[derive(Debug)]
pub enum Requeued {
    /// Back in the queue; `folder` is where it waits in work/ (`None`: `send` resumes it).
    Queued { record: Box<BatchRecord>, folder: Option<PathBuf> },
    /// Not failed (or moved meanwhile), or bound to another tenant than its route's now.
    Refused(String),
}

impl Lifecycle {
    /// Puts failed batch `record` back into the queue: its state first, then its folder from
    /// failed/ back into work/ (when `drops` are known and the folder is there).
    pub async fn requeue(&self, record: BatchRecord, drops: Option<&PathsConfig>) -> Result<Requeued, LifecycleError> {
        let filed = match record.filed_path.clone().map(PathBuf::from) {
            Some(path) => blocking(move || path.is_dir().then_some(path)).await,
            None => None,
        };
        let back_to = drops.map(|paths| paths.work.join(claimed_name(record.id, &record.name)));
        let finishing_a_move = record.state == State::Validated && filed.is_some() && {
            let to = back_to.clone();
            blocking(move || to.is_some_and(|to| !to.exists())).await
        };
        if record.state != State::Failed && !finishing_a_move {
            return Ok(Requeued::Refused(format!(
                "batch {} (id {}) is {}, not failed; only failed batches can be retried",
                record.name, record.id, record.state
            )));
        }
        if let Some(reason) = super::tenancy::refusal(&record, self.way(&record)?).await {
            return Ok(Requeued::Refused(format!("batch {} (id {}) is not retried: {reason}", record.name, record.id)));
        }
        let moving = filed.zip(back_to);
        let record = if record.state == State::Failed {
            let source_path = moving.as_ref().map(|(_, to)| to.display().to_string());
            let change = Change { source_path, ..Change::default() };
            match self.store.transition(record.id, State::Failed, State::Validated, change).await? {
                Some(moved) => moved,
                None => return Ok(Requeued::Refused(format!("batch {} changed state meanwhile; nothing done", record.name))),
            }
        } else {
            record
        };
        let Some((folder, to)) = moving else { return Ok(Requeued::Queued { record: Box::new(record), folder: None }) };
        let (from, dest) = (folder.clone(), to.clone());
        blocking(move || {
            let _ = std::fs::remove_file(from.join(FAILED_FILE));
            rename_no_replace(&from, &dest)
        })
        .await
        .map_err(|source| super::moving("move back", &folder, &to, source))?;
        Ok(Requeued::Queued { record: Box::new(record), folder: Some(to) })
    }
}
