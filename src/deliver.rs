//! The lifecycle driven end to end: admit a checked batch folder into the store, then make
//! upload attempts, each ending submitted, waiting to retry, failed, or refused as a duplicate.
//! `send` loops over attempts; the daemon schedules them.

use crate::batch::State;
use crate::config::{RetryConfig, SftpConfig};
use crate::fingerprint;
use crate::receipt::Receipt;
use crate::ship::{self, Progress, ShipError};
use crate::store::{BatchRecord, Change, NewBatch, Store, StoreError};
use crate::validate::{BatchFile, Validated};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How one attempt ended.
#[derive(Debug)]
pub enum Outcome {
    Submitted {
        record: BatchRecord,
        receipt: Receipt,
    },
    /// A transient failure; `record.next_attempt_at` says when to try again.
    RetryWait {
        record: BatchRecord,
    },
    Failed {
        record: BatchRecord,
    },
    /// Refused: the same content is already submitted or on its way.
    Duplicate {
        record: BatchRecord,
        of: BatchRecord,
    },
    /// Stopped on request before DONE; the batch stays `uploading` and resumes next time.
    Interrupted {
        record: BatchRecord,
    },
}

/// What an attempt needs besides the batch.
pub struct Shipper<'a> {
    pub store: &'a Store,
    pub sftp: &'a SftpConfig,
    pub retry: &'a RetryConfig,
    pub stop: Arc<AtomicBool>,
}

/// The batch in `dir` as a record: the unfinished one a crashed or failed run left for this
/// folder and content, else a new one, moved to validated or rejected.
pub async fn admit(store: &Store, dir: &Path, checked: &Validated) -> Result<BatchRecord, StoreError> {
    let source = source_path(dir);
    let key = fingerprint::content_key(dir, &checked.files).unwrap_or_default();
    if let Some(record) = store.find_unfinished(&source, &key).await? {
        match record.state {
            State::Discovered | State::Failed if checked.report.valid => {
                if let Some(moved) = store.transition(record.id, record.state, State::Validated, Change::default()).await? {
                    return Ok(moved);
                }
            }
            // Invalid now: recorded anew below, as rejected.
            State::Discovered | State::Failed => {}
            _ => return Ok(record),
        }
    }
    let report = &checked.report;
    let new = NewBatch {
        name: &report.batch,
        source_path: &source,
        content_key: &key,
        rows: report.rows,
        files: report.files,
        bytes: report.bytes,
        file_list: &checked.files,
    };
    let record = store.insert(&new).await?;
    let (to, change) = if report.valid {
        (State::Validated, Change::default())
    } else {
        let codes: Vec<&str> = report.errors.iter().map(|e| e.code).collect();
        (
            State::Rejected,
            Change { last_error: Some(format!("{} validation error(s): {}", codes.len(), summarize(&codes))), ..Change::default() },
        )
    };
    Ok(store.transition(record.id, State::Discovered, to, change).await?.unwrap_or(record))
}

fn summarize(codes: &[&str]) -> String {
    let mut unique: Vec<&str> = codes.to_vec();
    unique.sort();
    unique.dedup();
    unique.join(", ")
}

pub fn source_path(dir: &Path) -> String {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()).display().to_string()
}

impl Shipper<'_> {
    /// One upload attempt of a validated, waiting or interrupted batch whose files are in `dir`.
    pub async fn attempt(
        &self,
        record: BatchRecord,
        dir: &Path,
        files: &[BatchFile],
        allow_duplicate: bool,
    ) -> Result<Outcome, StoreError> {
        let record = match self.start(record, dir, files, allow_duplicate).await? {
            Ok(record) => record,
            Err(outcome) => return Ok(outcome),
        };
        let started = Instant::now();
        let result = self.upload(&record, dir, files).await;
        self.finish(record, files, result, started).await
    }

    /// Moves the batch to uploading (committing its UUID first), or refuses a duplicate.
    async fn start(
        &self,
        record: BatchRecord,
        dir: &Path,
        files: &[BatchFile],
        allow_duplicate: bool,
    ) -> Result<Result<BatchRecord, Outcome>, StoreError> {
        let from = record.state;
        match from {
            State::Uploading => return Ok(Ok(record)),
            State::Validated | State::RetryWait => {}
            other => panic!("bug: attempt on a batch in state {other}"),
        }
        if from == State::Validated && !allow_duplicate {
            if let Some(of) = self.duplicate_of(&record, dir, files).await? {
                return self.refuse_duplicate(record, of).await.map(Err);
            }
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        let change = Change {
            remote_uuid: Some(uuid),
            count_attempt: true,
            only_if_content_idle: from == State::Validated && !allow_duplicate,
            ..Change::default()
        };
        if let Some(moved) = self.store.transition(record.id, from, State::Uploading, change).await? {
            crate::failpoint::hit("after_uuid_commit");
            return Ok(Ok(moved));
        }
        // Lost a race: another batch with this content started first, or another actor moved it.
        let others = self.store.same_content(&record.content_key, record.id).await?;
        match others.into_iter().find(|o| o.state.is_in_flight()) {
            Some(of) => self.refuse_duplicate(record, of).await.map(Err),
            None => {
                let now = self.store.get(record.id).await?.unwrap_or(record);
                Ok(Err(Outcome::Interrupted { record: now }))
            }
        }
    }

    /// A batch submitted or in flight with the same content. For submitted ones the full
    /// fingerprint is compared, which costs a local hashing pass, only when the cheap key matches.
    async fn duplicate_of(&self, record: &BatchRecord, dir: &Path, files: &[BatchFile]) -> Result<Option<BatchRecord>, StoreError> {
        let others = self.store.same_content(&record.content_key, record.id).await?;
        if others.is_empty() {
            return Ok(None);
        }
        if let Some(in_flight) = others.iter().find(|o| o.state.is_in_flight()) {
            return Ok(Some(in_flight.clone()));
        }
        let (root, list) = (dir.to_path_buf(), files.to_vec());
        let hashes = tokio::task::spawn_blocking(move || fingerprint::hash_files(&root, &list)).await.ok().and_then(Result::ok);
        let Some(hashes) = hashes else { return Ok(None) };
        let mine = fingerprint::fingerprint(files, &hashes);
        Ok(others.into_iter().find(|o| o.fingerprint.as_deref() == Some(mine.as_str())))
    }

    async fn refuse_duplicate(&self, record: BatchRecord, of: BatchRecord) -> Result<Outcome, StoreError> {
        let message = duplicate_message(&of);
        let change = Change { last_error: Some(message), ..Change::default() };
        let moved = self.store.transition(record.id, record.state, State::Rejected, change).await?.unwrap_or(record);
        Ok(Outcome::Duplicate { record: moved, of })
    }

    async fn upload(&self, record: &BatchRecord, dir: &Path, files: &[BatchFile]) -> Result<ship::Shipment, ShipError> {
        let progress = Arc::new(Progress::default());
        let reporter = tokio::spawn(report_progress(self.store.clone(), record.id, progress.clone()));
        let (cfg, root, list, stop) = (self.sftp.clone(), PathBuf::from(dir), files.to_vec(), self.stop.clone());
        let uuid = record.remote_uuid.clone().expect("an uploading batch has a UUID");
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || span.in_scope(|| ship::ship(&cfg, &root, &list, &uuid, &progress, &stop)))
            .await
            .unwrap_or_else(|e| Err(ShipError::Ssh { what: "upload".into(), message: format!("upload task ended abnormally: {e}") }));
        reporter.abort();
        result
    }

    async fn finish(
        &self,
        record: BatchRecord,
        files: &[BatchFile],
        result: Result<ship::Shipment, ShipError>,
        started: Instant,
    ) -> Result<Outcome, StoreError> {
        let error = match result {
            Ok(shipment) => return self.submitted(record, files, shipment, started).await,
            Err(ShipError::Interrupted) => return Ok(Outcome::Interrupted { record }),
            Err(e) => e,
        };
        let attempts = u32::try_from(record.attempts).unwrap_or(u32::MAX);
        if error.is_permanent() || attempts >= self.retry.max_attempts {
            let reason =
                if error.is_permanent() { error.to_string() } else { format!("gave up after {attempts} attempt(s); last error: {error}") };
            let change = Change { last_error: Some(reason), ..Change::default() };
            let moved = self.store.transition(record.id, State::Uploading, State::Failed, change).await?;
            return Ok(Outcome::Failed { record: moved.unwrap_or(record) });
        }
        let delay = self.retry.delay(attempts, &mut rand::thread_rng());
        let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        let change = Change { last_error: Some(error.to_string()), next_attempt_at: Some(next), ..Change::default() };
        let moved = self.store.transition(record.id, State::Uploading, State::RetryWait, change).await?;
        Ok(Outcome::RetryWait { record: moved.unwrap_or(record) })
    }

    async fn submitted(
        &self,
        record: BatchRecord,
        files: &[BatchFile],
        shipment: ship::Shipment,
        started: Instant,
    ) -> Result<Outcome, StoreError> {
        self.store.record_shipped(record.id, &shipment.files_sha256).await?;
        let change = Change {
            remote_dir: Some(shipment.remote_dir.clone()),
            fingerprint: Some(fingerprint::fingerprint(files, &shipment.files_sha256)),
            ..Change::default()
        };
        let moved = self.store.transition(record.id, State::Uploading, State::Submitted, change).await?.unwrap_or(record);
        let receipt = Receipt::of(&moved, shipment.remote_dir, shipment.files_sha256, started.elapsed().as_secs_f64());
        Ok(Outcome::Submitted { record: moved, receipt })
    }
}

pub fn duplicate_message(of: &BatchRecord) -> String {
    let uuid = of.remote_uuid.as_deref().unwrap_or("?");
    match of.submitted_at {
        Some(at) => {
            format!("duplicate of {}, submitted {} as {uuid}; send with --allow-duplicate to submit it again", of.name, at.to_rfc3339())
        }
        None => format!("duplicate of {}, being uploaded now as {uuid}; send with --allow-duplicate to submit it again", of.name),
    }
}

async fn report_progress(store: Store, id: i64, progress: Arc<Progress>) {
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let now = progress.bytes_sent.load(Ordering::Relaxed);
        if now != last && store.set_bytes_sent(id, now).await.is_ok() {
            last = now;
        }
    }
}

/// How long to wait before the attempt a record in retry_wait is due.
pub fn wait_for(record: &BatchRecord) -> Duration {
    let due: DateTime<Utc> = record.next_attempt_at.unwrap_or_else(Utc::now);
    (due - Utc::now()).to_std().unwrap_or_default()
}
