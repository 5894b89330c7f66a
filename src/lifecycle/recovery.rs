//! Recovery: the rules by which a batch found after a restart (or left by another host) is
//! picked up again. A claim whose folder never reached work/ is forgotten; a batch waiting to
//! retry is due at its time, one another host holds when its lease ends (by the database's
//! clock); one recorded as finished but not filed is filed as it ended; one whose task panicked
//! fails for good.

use super::{Guard, Lifecycle, LifecycleError, Outcome};
use crate::batch::{RejectReason, State};
use crate::config::PathsConfig;
use crate::folders::{folder_name, parse_claimed};
use crate::store::BatchRecord;
use crate::telemetry::blocking;
use std::path::{Path, PathBuf};
use std::time::Duration;

impl Lifecycle {
    /// Forgets the claims whose folder never reached `work` (a crash between the record and the
    /// rename): the folder is still in the inbox and will be claimed again under a new record.
    pub async fn forget_unclaimed(&self, work: &Path) -> Result<(), LifecycleError> {
        for record in self.store.in_state(State::Discovered).await? {
            let folder = std::path::PathBuf::from(&record.source_path);
            let within = folder.starts_with(work);
            let gone = blocking(move || !folder.exists()).await;
            if within && gone && self.store.forget_unclaimed(record.id).await? {
                tracing::info!(batch = %record.name, id = record.id, "forgot a claim whose folder never reached work/");
            }
        }
        Ok(())
    }

    /// The record a folder found in work/ belongs to: by the id in its name, else adopted (a
    /// folder of an earlier version, or one put there by hand). `None`: none to work here.
    pub async fn identify(&self, dir: &Path, work: &Path) -> Result<Option<(BatchRecord, PathBuf, Option<Guard>)>, LifecycleError> {
        let name = folder_name(dir);
        if let Some((id, dropped)) = parse_claimed(&name) {
            if let Some(record) = self.store.get(id).await?.filter(|r| r.name == dropped) {
                return Ok(Some((record, dir.to_path_buf(), None)));
            }
            if let Some(fleet) = self.store.fleet() {
                // Another host's claim whose record is not committed yet: left alone. A folder no
                // record names for longer than two leases (its database was replaced, or
                // started anew with --new-database) is an orphan: adopted like one put there by hand.
                let orphaned = fleet.lease * 2;
                let folder = dir.to_path_buf();
                let age = blocking(move || {
                    use std::os::unix::fs::MetadataExt;
                    let changed = std::fs::symlink_metadata(&folder).ok()?.ctime();
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
                    Some(Duration::from_secs(now.saturating_sub(changed).max(0) as u64))
                })
                .await;
                if age.is_none_or(|age| age < orphaned) {
                    return Ok(None);
                }
            }
        }
        let found = self.adopt(dir, work).await?;
        Ok(found.inspect(|(record, _, _)| {
            tracing::info!(batch = %record.name, id = record.id, "a folder in work/ without a record: adopted");
        }))
    }

    /// How long until this process may work `record` (found in work/): zero when it may now;
    /// else until another host's lease on it ends, or until its retry is due. `claimed`: this
    /// process holds it already (claimed it just now).
    pub fn due_in(&self, record: &BatchRecord, claimed: bool) -> Duration {
        let now = self.store.now();
        if !claimed {
            if let (Some(_), Some(until)) = (record.held_by(now), record.lease_expires_at) {
                // Looked at again when the lease would end, never sooner than a second.
                return (until - now).to_std().unwrap_or_default().max(Duration::from_secs(1));
            }
        }
        match record.state {
            State::RetryWait => super::wait_for(record, now),
            _ => Duration::ZERO,
        }
    }

    /// The outcome of a batch whose state was recorded but whose folder was not filed yet.
    pub(super) async fn recover(&self, record: BatchRecord, dir: &Path) -> Result<Outcome, LifecycleError> {
        Ok(match (record.state, record.reject_reason) {
            (State::Submitted, _) => {
                let receipt = self.stored_receipt(&record).await?;
                Outcome::AlreadySubmitted { record, receipt }
            }
            (State::Rejected, reason) => {
                let mut report = self.validate(dir).await?.report;
                report.batch = record.name.clone();
                let of = match (reason, record.duplicate_of) {
                    (Some(RejectReason::Duplicate), Some(of)) => self.store.get(of).await?,
                    _ => None,
                };
                match of {
                    Some(of) => Outcome::Duplicate { record, of, report },
                    None => Outcome::Rejected { record, report },
                }
            }
            _ => Outcome::Failed { record },
        })
    }

    /// After a panic in its task: the batch fails with the reason (never retried forever) and
    /// its folder is filed in failed/. Returns where it went.
    pub async fn fail_abandoned(&self, id: i64, dir: &Path, drops: &PathsConfig, why: &str) -> Result<Outcome, LifecycleError> {
        let _guard = match self.hold(id).await? {
            Ok(guard) => guard,
            Err(holder) => return Ok(Outcome::Busy { record: self.record(id).await?, holder }),
        };
        let record = self.record(id).await?;
        let outcome = match record.state {
            State::Failed => Outcome::Failed { record },
            state if state.is_finished() => self.recover(record, dir).await?,
            _ => self.fail(record, &format!("internal error: {why}; please report it (the batch was not submitted)")).await?,
        };
        let folder = dir.to_path_buf();
        if blocking(move || folder.is_dir()).await {
            self.file(&outcome, dir, drops).await?;
        }
        Ok(outcome)
    }
}
