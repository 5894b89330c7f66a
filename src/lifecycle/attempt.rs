//! One delivery attempt of a claimed batch: the duplicate guard, the UUID committed before
//! anything remote, the delivery by the route's channel, then submitted / retry_wait / failed;
//! and `run_to_end`, the attempts `send` and `resubmit` make until the batch is not waiting.

use super::{Claim, Lifecycle, LifecycleError, Outcome};
use crate::batch::{Kind, RejectReason, State};
use crate::config::PathsConfig;
use crate::delivery::{Delivered, DeliveryError, Job, Progress};
use crate::fingerprint;
use crate::receipt::Receipt;
use crate::store::{BatchRecord, Change, Store};
use chrono::{DateTime, Utc};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl Lifecycle {
    /// One upload attempt of a validated, waiting or interrupted batch. `claim.record` follows
    /// the batch's state.
    pub async fn attempt(&self, claim: &mut Claim, allow_duplicate: bool) -> Result<Outcome, LifecycleError> {
        let outcome = match self.start(claim, allow_duplicate).await? {
            // Each part is an attempt of its own, inside this one.
            Ok(record) if self.in_parts(claim) => Box::pin(self.ship_parts(record, claim)).await?,
            Ok(record) => {
                let started = Instant::now();
                let result = self.deliver(&record, claim).await?;
                self.finish(record, claim, result, started).await?
            }
            Err(outcome) => outcome,
        };
        claim.record = super::outcome_record(&outcome).clone();
        Ok(outcome)
    }

    /// `send` and `resubmit`: attempts until the batch is no longer waiting to retry, the waits
    /// between them announced by `waiting` and cut short by a stop; its folder filed into
    /// `drops` when it finished (`resubmit`; `send` files nothing). Ends `Interrupted` on a stop.
    pub async fn run_to_end(
        &self,
        mut claim: Claim,
        allow_duplicate: bool,
        drops: Option<&PathsConfig>,
        waiting: impl Fn(&BatchRecord, Duration),
    ) -> Result<Outcome, LifecycleError> {
        loop {
            let outcome = self.attempt(&mut claim, allow_duplicate).await?;
            let Outcome::RetryWait { record } = &outcome else {
                if let Some(drops) = drops {
                    self.file(&outcome, &claim.dir, drops).await?;
                }
                return Ok(outcome);
            };
            let wait = wait_for(record, self.store.now());
            waiting(record, wait);
            if !crate::tasks::sleep_unless_stopped(&self.tasks, wait).await {
                return Ok(Outcome::Interrupted { record: record.clone() });
            }
        }
    }

    /// Moves the batch to uploading (committing its UUID first), or refuses a duplicate.
    async fn start(&self, claim: &Claim, allow_duplicate: bool) -> Result<Result<BatchRecord, Outcome>, LifecycleError> {
        let record = claim.record.clone();
        let from = record.state;
        if !matches!(from, State::Uploading | State::Validated | State::RetryWait) {
            panic!("bug: attempt on a batch in state {from}");
        }
        // Where its route points now must be the tenant (and folder) it was recorded for.
        if let Some(reason) = super::tenancy::refusal(&record, self.way(&record)?).await {
            tracing::error!(batch = %record.name, id = record.id, "{reason}");
            return self.fail(record, &reason).await.map(Err);
        }
        if from == State::Uploading {
            return Ok(Ok(record));
        }
        if from == State::Validated && !allow_duplicate {
            if let Some(of) = self.duplicate_of(claim).await? {
                return self.refuse_duplicate(claim, of).await.map(Err);
            }
        }
        // A failed batch sent again keeps its folder (it may even hold DONE). A batch shipped as
        // parts has none: each part gets its own.
        let channel = &self.way(&record)?.channel;
        let uuid = record.remote_uuid.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let folder = (!self.in_parts(claim)).then(|| (channel.remote_dir(&uuid), uuid));
        let change = Change {
            remote_dir: folder.as_ref().map(|(dir, _)| dir.clone()),
            remote_uuid: folder.map(|(_, uuid)| uuid),
            count_attempt: true,
            only_if_content_idle: from == State::Validated && !allow_duplicate,
            ..Change::default()
        };
        if let Some(moved) = self.store.transition(record.id, from, State::Uploading, change).await? {
            crate::failpoint::hit("after_uuid_commit");
            return Ok(Ok(moved));
        }
        // Lost a race: another batch with this content started first, or another actor moved it.
        let others = self.store.same_content(&record.content_key, record.id, record.origin.tenant.as_deref()).await?;
        match others.into_iter().find(|o| o.state.is_in_flight()) {
            Some(of) => self.refuse_duplicate(claim, of).await.map(Err),
            None => {
                let now = self.store.get(record.id).await?.unwrap_or(record);
                Ok(Err(Outcome::Interrupted { record: now }))
            }
        }
    }

    /// A batch for the same tenant submitted or in flight with the same content (the same
    /// digest of every file), the one in flight first. A resubmission is not a duplicate of the
    /// batch it was made from: the operator named that one.
    async fn duplicate_of(&self, claim: &Claim) -> Result<Option<BatchRecord>, LifecycleError> {
        let record = &claim.record;
        let mut others = self.store.same_content(&record.content_key, record.id, record.origin.tenant.as_deref()).await?;
        others.retain(|o| Some(o.id) != record.origin.parent_id);
        Ok(others.iter().find(|o| o.state.is_in_flight()).or(others.first()).cloned())
    }

    async fn refuse_duplicate(&self, claim: &Claim, of: BatchRecord) -> Result<Outcome, LifecycleError> {
        let record = claim.record.clone();
        let change = Change {
            last_error: Some(duplicate_message(&record, &of)),
            reject_reason: Some(RejectReason::Duplicate),
            duplicate_of: Some(of.id),
            ..Change::default()
        };
        let moved = self.store.transition(record.id, record.state, State::Rejected, change).await?.unwrap_or(record);
        Ok(Outcome::Duplicate { record: moved, of, report: claim.checked.report.clone() })
    }

    /// The batch delivered by its route's channel, its progress reported meanwhile.
    async fn deliver(&self, record: &BatchRecord, claim: &Claim) -> Result<Result<Delivered, DeliveryError>, LifecycleError> {
        let channel = self.way(record)?.channel.clone();
        let progress = Arc::new(Progress::default());
        if let Some(watch) = &self.watch_upload {
            watch(&progress);
        }
        let delivered = self.tasks.token().child_token();
        let _reported = delivered.clone().drop_guard();
        self.tasks.spawn(report_progress(self.store.clone(), record.id, progress.clone(), delivered));
        let job = Job {
            record: record.clone(),
            dir: claim.dir.clone(),
            files: claim.checked.files.clone(),
            digests: claim.digests.clone(),
            // The UUID was chosen by this attempt's start: nothing can be in its folder yet.
            fresh: claim.record.remote_uuid.is_none(),
            progress,
            stop: self.tasks.token().clone(),
            fence: claim.guard.fence(),
        };
        Ok(channel.deliver(job).await)
    }

    async fn finish(
        &self,
        record: BatchRecord,
        claim: &Claim,
        result: Result<Delivered, DeliveryError>,
        started: Instant,
    ) -> Result<Outcome, LifecycleError> {
        let (reason, permanent) = match result {
            Ok(delivered) => return self.submitted(record, claim, delivered, started).await,
            Err(DeliveryError::Interrupted) => return Ok(Outcome::Interrupted { record }),
            // Another host may be finishing the batch: this one changes nothing more.
            Err(e @ DeliveryError::LeaseLost) => {
                tracing::warn!(batch = %record.name, id = record.id, "{e}");
                return Ok(Outcome::Interrupted { record });
            }
            Err(DeliveryError::Failed { reason, permanent }) => (reason, permanent),
            Err(short @ DeliveryError::HostShort(_)) => return self.wait_to_retry(record, short.to_string(), 1, true).await,
        };
        let attempts = u32::try_from(record.attempts).unwrap_or(u32::MAX);
        if permanent || attempts >= self.retry.max_attempts {
            let reason = if permanent { reason } else { format!("gave up after {attempts} attempt(s); last error: {reason}") };
            let change = Change { last_error: Some(reason), ..Change::default() };
            return match self.store.transition(record.id, State::Uploading, State::Failed, change).await? {
                Some(moved) => Ok(Outcome::Failed { record: moved }),
                None => self.moved_elsewhere(record).await,
            };
        }
        self.wait_to_retry(record, reason, attempts, false).await
    }

    /// Into retry_wait, the next attempt after the backoff of the `attempts`-th; `uncounted`:
    /// this one does not count against `max_attempts`.
    async fn wait_to_retry(&self, record: BatchRecord, reason: String, attempts: u32, uncounted: bool) -> Result<Outcome, LifecycleError> {
        let delay = self.retry.delay(attempts, &mut rand::thread_rng());
        let next = self.store.now() + chrono::Duration::from_std(delay).unwrap_or_default();
        let change = Change { last_error: Some(reason), next_attempt_at: Some(next), uncount_attempt: uncounted, ..Change::default() };
        let Some(moved) = self.store.transition(record.id, State::Uploading, State::RetryWait, change).await? else {
            return self.moved_elsewhere(record).await;
        };
        crate::metrics::retried();
        Ok(Outcome::RetryWait { record: moved })
    }

    /// The record changed under this attempt (fleet mode: the lease ran out and another host
    /// took the batch over): nothing more is done or filed here.
    pub(super) async fn moved_elsewhere(&self, record: BatchRecord) -> Result<Outcome, LifecycleError> {
        tracing::warn!(batch = %record.name, id = record.id, "the batch's record changed under this attempt (another host holds it now); leaving it");
        let now = self.store.get(record.id).await?.unwrap_or(record);
        Ok(Outcome::Interrupted { record: now })
    }

    async fn submitted(
        &self,
        record: BatchRecord,
        claim: &Claim,
        shipment: Delivered,
        started: Instant,
    ) -> Result<Outcome, LifecycleError> {
        if !claim.guard.holds() {
            return self.moved_elsewhere(record).await;
        }
        if !self.store.record_shipped(record.id, &shipment.files_sha256).await? {
            return self.moved_elsewhere(record).await;
        }
        let change = Change {
            remote_dir: Some(shipment.remote_dir.clone()),
            fingerprint: Some(fingerprint::fingerprint(&claim.checked.files, &shipment.files_sha256)),
            ..Change::default()
        };
        let Some(moved) = self.store.transition(record.id, State::Uploading, State::Submitted, change).await? else {
            return self.moved_elsewhere(record).await;
        };
        let receipt = Receipt::of(&moved, shipment.files_sha256, started.elapsed().as_secs_f64(), shipment.already_submitted);
        let receipt = self.linked(&moved, receipt).await?;
        if !shipment.already_submitted {
            crate::metrics::submitted(started.elapsed());
        }
        Ok(match shipment.already_submitted {
            true => Outcome::AlreadySubmitted { record: moved, receipt },
            false => Outcome::Submitted { record: moved, receipt },
        })
    }
}

/// Why `record` was refused as a duplicate of `of`, and what to do: `send` may force it; a
/// resubmission (which has no such flag) is the same rows asked for twice.
pub fn duplicate_message(record: &BatchRecord, of: &BatchRecord) -> String {
    let uuid = of.remote_uuid.as_deref().unwrap_or("?");
    let what = match of.submitted_at {
        Some(at) => format!("duplicate of {}, submitted {} as {uuid}", of.name, at.to_rfc3339()),
        None => format!("duplicate of {}, being uploaded now as {uuid}", of.name),
    };
    let hint = match (record.origin.kind, of.submitted_at) {
        (Some(Kind::Resubmission), Some(_)) => "these rows were already resubmitted; nothing is sent twice".to_owned(),
        (Some(Kind::Resubmission), None) => {
            format!("the same rows are being resubmitted now by another command; see `jumio-batchd status {}`", of.id)
        }
        _ => "send with --allow-duplicate to submit it again".to_owned(),
    };
    format!("{what}; {hint}")
}

/// Records the upload's progress every second until `done` (the delivery ended, however).
async fn report_progress(store: Store, id: i64, progress: Arc<Progress>, done: tokio_util::sync::CancellationToken) {
    let mut last = u64::MAX;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROGRESS_EVERY) => {}
            _ = done.cancelled() => return,
        }
        let now = progress.bytes_sent.load(Ordering::Relaxed);
        if now != last && store.set_bytes_sent(id, now).await.is_ok() {
            last = now;
        }
    }
}

/// How long to wait, from `now` (`Store::now`), before the attempt a record in retry_wait is due.
pub fn wait_for(record: &BatchRecord, now: DateTime<Utc>) -> Duration {
    let due: DateTime<Utc> = record.next_attempt_at.unwrap_or(now);
    (due - now).to_std().unwrap_or_default()
}
