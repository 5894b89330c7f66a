//! One batch's life, in one place: claim (daemon) or admit (`send`), validate, the duplicate
//! guard, ship, file the outcome, recover after a restart. Every entry point returns a typed
//! `Outcome`; the daemon only schedules, `send` and `retry` call the same code.
//! **Invariants:** a batch is known by its record's id from the moment it is claimed (its
//! folder in work/ carries the id: `<id>.<name>`); one process works a batch at a time (a kernel
//! lock per batch); a record's state changes only through `Store::transition`.

mod attempt;
mod filing;
mod lease;
pub(crate) mod lock;
mod parts;
mod requeue;
mod resubmit;
pub mod tenancy;

pub use attempt::{duplicate_message, wait_for};
pub use filing::{file_link, file_loose, file_unrouted, ERRORS_FILE, FAILED_FILE, RECEIPT_FILE, REJECTED_FILE};
pub use lease::Lease;
pub use lock::{Held, Holder, LockError, Locks};
pub use requeue::Requeued;
pub use resubmit::{Prepared, ResubmitError};

use crate::batch::{Kind, RejectReason, State};
use crate::config::{Config, PathsConfig, RetryConfig, Route};
use crate::fingerprint;
use crate::folders::{self, claimed_name, folder_name};
use crate::metrics::Filed;
use crate::receipt::{Part, Receipt};
use crate::ship::{Fence, Pool, Unfenced};
use crate::store::{BatchRecord, Change, Contents, Origin, Store, StoreError};
use crate::telemetry::blocking;
use crate::validate::{self, Report, Validated};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// How working a batch ended (for now: `RetryWait` and `Interrupted` come back later).
// One value per batch step: its size does not matter, boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// Shipped by this run, DONE written.
    Submitted { record: BatchRecord, receipt: Receipt },
    /// Already at Jumio before this run (sent earlier, or DONE found on the server): nothing sent.
    AlreadySubmitted { record: BatchRecord, receipt: Receipt },
    /// Breaks Jumio's rules; the report lists every problem.
    Rejected { record: BatchRecord, report: Report },
    /// The same content is already submitted or on its way.
    Duplicate { record: BatchRecord, of: BatchRecord, report: Report },
    /// Given up: a permanent error, `max_attempts`, unreadable content or an internal error.
    Failed { record: BatchRecord },
    /// A transient failure; `record.next_attempt_at` says when to try again.
    RetryWait { record: BatchRecord },
    /// Stopped on request before DONE; resumes into the same folder next time.
    Interrupted { record: BatchRecord },
    /// Another process is working on this batch right now; nothing was done.
    Busy { record: BatchRecord, holder: Holder },
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Unreadable(#[from] validate::Unreadable),
    #[error("cannot {what} {from} into {to}: {source}; check that the folder exists and this user may write to it")]
    Move { what: &'static str, from: String, to: String, source: std::io::Error },
    #[error("batch {id} has no record in the state database; was the database replaced?")]
    NoRecord { id: i64 },
    #[error("batch {name} belongs to route {route:?}, which the config no longer has; add [routes.{route}] back (its batches go only to its own server)")]
    UnknownRoute { name: String, route: String },
    #[error("cannot build {what} of batch {name} ({source}); check the free space and permissions of {}", folder.display())]
    Build { what: String, name: String, folder: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Derive(#[from] crate::derive::DeriveError),
}

/// A batch this process holds the lock of, with its checked folder.
#[derive(Debug)]
pub struct Claim {
    pub record: BatchRecord,
    pub dir: PathBuf,
    pub checked: Validated,
    /// sha256 of each file as it was checked: what the upload must send.
    pub digests: BTreeMap<String, String>,
    /// Shared with the task that files the outcome: held until the folder is filed.
    guard: Arc<Guard>,
}

/// This process's hold on one batch: a kernel lock (one host, SQLite) or a lease in the shared
/// database (fleet mode). Whoever holds it is the only one working the batch.
#[derive(Debug)]
pub enum Guard {
    Lock(Held),
    Lease(Lease),
}

impl Guard {
    /// What the upload checks before it writes: a lease must still be ours; a lock always is.
    pub fn fence(&self) -> Arc<dyn Fence> {
        match self {
            Guard::Lock(_) => Arc::new(Unfenced),
            Guard::Lease(lease) => lease.fence(),
        }
    }

    /// Still ours by this process's clock (a lease: more than a quarter of it left).
    pub fn holds(&self) -> bool {
        self.fence().holds()
    }

    /// Still ours, asked of the database now (a lease is renewed): before a folder is filed.
    pub async fn confirm(&self) -> bool {
        match self {
            Guard::Lock(_) => true,
            Guard::Lease(lease) => lease.confirm().await,
        }
    }
}

/// What `admit` found: a batch to ship, or an answer already.
#[derive(Debug)]
pub enum Admitted {
    Ready(Box<Claim>),
    Finished(Box<Outcome>),
}

/// Everything a batch's life needs; shared by the daemon's tasks, `send` and `retry`.
pub struct Lifecycle {
    pub store: Store,
    /// Where batches go: every route of the config (`send`: the one it was given).
    pub routes: Vec<Route>,
    pub retry: RetryConfig,
    /// A batch over Jumio's row limit is shipped as parts (else it is rejected).
    pub split_over_limit: bool,
    /// Where the folders of parts are built (the daemon: `work/.parts`; `send`: beside the database).
    pub staging: PathBuf,
    /// The ready-marker file name (never shipped).
    pub marker: String,
    pub locks: Locks,
    /// Set on shutdown: uploads end at the next file boundary, before DONE.
    pub stop: Arc<AtomicBool>,
    /// SSH connections kept open between batches.
    pub pool: Arc<Pool>,
    /// Called as each upload starts with its live counters (`send`'s progress bar).
    pub watch_upload: Option<WatchUpload>,
}

/// Something that follows an upload's counters while it runs.
pub type WatchUpload = Box<dyn Fn(&Arc<crate::ship::Progress>) + Send + Sync>;

impl Lifecycle {
    /// The lifecycle of `routes`, each route's tenant spelled as the store knows its account
    /// (`tenancy::unify`).
    pub async fn new(store: Store, config: &Config, mut routes: Vec<Route>, stop: Arc<AtomicBool>) -> Result<Lifecycle, LifecycleError> {
        tenancy::unify(&store, &mut routes).await?;
        let connections: usize = routes.iter().map(|r| r.sftp.connections).sum();
        let idle = routes.iter().map(|r| r.sftp.pool_idle_secs).max().unwrap_or_default();
        let database = &config.state.local_base();
        Ok(Lifecycle {
            store,
            retry: config.retry.clone(),
            split_over_limit: config.batch.split_over_limit,
            staging: config.paths.as_ref().map_or_else(|| beside(database, "parts"), |p| p.work.join(PARTS_FOLDER)),
            marker: config.watch.marker.clone(),
            locks: Locks::beside(database),
            stop,
            pool: Arc::new(Pool::new(connections * config.watch.max_parallel_batches, Duration::from_secs(idle))),
            routes,
            watch_upload: None,
        })
    }

    /// The route a batch goes to: the one its record names.
    pub fn route(&self, record: &BatchRecord) -> Result<&Route, LifecycleError> {
        let found = self.routes.iter().find(|r| r.name == record.origin.route);
        // A batch recorded before routes were named goes where the only route goes.
        let found = found.or_else(|| self.routes.first().filter(|_| record.origin.route.is_none() && self.routes.len() == 1));
        found.ok_or_else(|| LifecycleError::UnknownRoute {
            name: record.name.clone(),
            route: record.origin.route.clone().unwrap_or_default(),
        })
    }

    /// A new batch's route and tenant: what `send` was given (its only route).
    fn origin(route: &Route) -> Origin {
        Origin { route: route.name.clone(), tenant: Some(route.tenant()), ..Origin::default() }
    }

    /// `send DIR`: the record of this folder and content (an unfinished one resumes), or the
    /// answer when there is nothing to ship: invalid, already submitted, or busy elsewhere.
    /// With `allow_duplicate` a submitted batch is submitted again (the operator asked for it).
    pub async fn admit(&self, dir: &Path, allow_duplicate: bool) -> Result<Admitted, LifecycleError> {
        let checked = self.validate(dir).await?;
        let source = source_path(dir);
        let name = checked.report.batch.clone();
        let (key, digests) = digest(&checked);
        let contents = contents_of(&key, &checked);
        let origin = Lifecycle::origin(&self.routes[0]);
        let tenant = origin.tenant.as_deref();
        let locks = self.locks.clone();
        let _admitting = blocking(move || locks.admission()).await?;
        if !checked.report.valid {
            let record = self.store.insert(&name, &source, &origin, &contents).await?;
            let record = self.reject_invalid(record, &checked.report).await?;
            return Ok(Admitted::Finished(Box::new(Outcome::Rejected { record, report: checked.report })));
        }
        if let Some(found) = self.store.find_unfinished(&source, &key, tenant).await? {
            let guard = match self.hold(found.id).await? {
                Ok(guard) => guard,
                Err(holder) => return Ok(Admitted::Finished(Box::new(Outcome::Busy { record: found, holder }))),
            };
            // Read again under the lock: whoever held it last may have finished the batch.
            let record = self.store.get(found.id).await?.ok_or(LifecycleError::NoRecord { id: found.id })?;
            if !record.state.is_finished() || record.state == State::Failed {
                let record = self.reopen(record).await?;
                return Ok(Admitted::Ready(Box::new(Claim { record, dir: dir.to_path_buf(), checked, digests, guard: Arc::new(guard) })));
            }
        }
        if let Some(record) = self.store.submitted_from(&source, &key, tenant).await?.filter(|_| !allow_duplicate) {
            let receipt = self.stored_receipt(&record).await?;
            return Ok(Admitted::Finished(Box::new(Outcome::AlreadySubmitted { record, receipt })));
        }
        let record = self.store.insert(&name, &source, &origin, &contents).await?;
        let guard = self.hold(record.id).await?.unwrap_or_else(|holder| panic!("bug: a new batch is held by {holder}"));
        let record = self.store.transition(record.id, State::Discovered, State::Validated, Change::default()).await?.unwrap_or(record);
        Ok(Admitted::Ready(Box::new(Claim { record, dir: dir.to_path_buf(), checked, digests, guard: Arc::new(guard) })))
    }

    /// The daemon claims `src` from the inbox: a record first (held by this process from the
    /// start), then the folder moves to `work/<id>.<name>`. `None` when the folder was gone
    /// before it could move (another host of the fleet may have claimed it).
    pub async fn claim(
        &self,
        src: &Path,
        name: &str,
        work: &Path,
        route: &Route,
    ) -> Result<Option<(BatchRecord, PathBuf, Guard)>, LifecycleError> {
        let origin = Lifecycle::origin(route);
        let (record, guard) = self.record_claim(name, &origin, work).await?;
        let (from, to) = (src.to_path_buf(), PathBuf::from(&record.source_path));
        let moved = rename(&from, &to).await;
        match moved {
            Ok(()) => Ok(Some((record, to, guard))),
            Err(source) => {
                self.store.forget_unclaimed(record.id).await?;
                match source.kind() {
                    std::io::ErrorKind::NotFound => Ok(None),
                    _ => Err(moving("claim", &from, &to, source)),
                }
            }
        }
    }

    /// A new record for a folder that goes to `work/<id>.<name>`, held by this process from the
    /// start: the lease the claim took with it (fleet mode), else the batch's kernel lock.
    async fn record_claim(&self, name: &str, origin: &Origin, work: &Path) -> Result<(BatchRecord, Guard), LifecycleError> {
        let sent = std::time::Instant::now();
        let (record, token) = self.store.claim(name, origin, |id| work.join(claimed_name(id, name)).display().to_string()).await?;
        let guard = match token {
            Some(token) => Guard::Lease(Lease::held(&self.store, record.id, token, sent)),
            None => Guard::Lock(self.locks.batch(record.id)?.unwrap_or_else(|holder| panic!("bug: a new batch is locked by {holder}"))),
        };
        Ok((record, guard))
    }

    /// A folder in work/ without the id form: left by an earlier version (its unfinished
    /// record is adopted, so it resumes into its own UUID) or put there by hand (claimed anew).
    pub async fn adopt(&self, dir: &Path, work: &Path) -> Result<Option<(BatchRecord, PathBuf, Option<Guard>)>, LifecycleError> {
        let name = folder_name(dir);
        let Some(record) = self.store.unfinished_at(&source_path(dir)).await? else {
            // Put there by hand: its tenant is known only when there is one route.
            return match &self.routes[..] {
                [only] if only.name.is_none() => Ok(self.claim(dir, &name, work, only).await?.map(|(r, d, g)| (r, d, Some(g)))),
                _ => Err(LifecycleError::UnknownRoute {
                    name,
                    route: "(none: it was put into work/ by hand; move it into a route's inbox)".into(),
                }),
            };
        };
        let (from, to) = (dir.to_path_buf(), work.join(claimed_name(record.id, &record.name)));
        let moved = rename(&from, &to).await;
        moved.map_err(|source| moving("adopt", &from, &to, source))?;
        self.store.set_source_path(record.id, &to.display().to_string()).await?;
        Ok(Some((record, to, None)))
    }

    /// The daemon's task for batch `id` in `dir` (in work/): one step of its life, and its folder
    /// filed into `drops` when that step finished it.
    pub async fn work(&self, id: i64, dir: &Path, drops: &PathsConfig) -> Result<Outcome, LifecycleError> {
        let guard = match self.hold(id).await? {
            Ok(guard) => guard,
            Err(holder) => return Ok(Outcome::Busy { record: self.record(id).await?, holder }),
        };
        self.work_held(id, dir, drops, guard).await
    }

    /// This process's hold on batch `id`, or who holds it: the batch's kernel lock, or in
    /// fleet mode its lease.
    pub async fn hold(&self, id: i64) -> Result<Result<Guard, Holder>, LifecycleError> {
        if self.store.fleet().is_some() {
            return Ok(Lease::take(&self.store, id).await?.map(Guard::Lease));
        }
        Ok(self.locks.batch(id)?.map(Guard::Lock))
    }

    /// `work` with the batch already held (until its folder is filed).
    pub async fn work_held(&self, id: i64, dir: &Path, drops: &PathsConfig, guard: Guard) -> Result<Outcome, LifecycleError> {
        let guard = Arc::new(guard);
        let record = self.record(id).await?;
        crate::failpoint::panic_once("batch_task");
        let outcome = match record.state {
            state if state.is_finished() => self.recover(record, dir).await?,
            _ => self.advance(record, dir, guard.clone()).await?,
        };
        if outcome_summary(&outcome).is_some() && !guard.confirm().await {
            // Fleet mode: the lease ran out meanwhile; whoever holds it now files the folder.
            tracing::warn!(batch = %outcome_record(&outcome).name, id, "this host's lease ran out before the batch was filed; left to the host that holds it now");
            return Ok(Outcome::Interrupted { record: self.record(id).await? });
        }
        if let Some(to) = self.file(&outcome, dir, drops).await? {
            tracing::info!(batch = %outcome_record(&outcome).name, id, to = %to.display(), "filed");
        }
        Ok(outcome)
    }

    /// Validates (again) and makes one upload attempt of an unfinished batch.
    async fn advance(&self, record: BatchRecord, dir: &Path, guard: Arc<Guard>) -> Result<Outcome, LifecycleError> {
        let mut checked = self.validate(dir).await?;
        checked.report.batch = record.name.clone();
        let (key, digests) = digest(&checked);
        let record = if record.state == State::Discovered {
            if !self.store.record_contents(record.id, &contents_of(&key, &checked)).await? {
                return self.moved_elsewhere(record).await;
            }
            if !checked.report.valid {
                let record = self.reject_invalid(record, &checked.report).await?;
                return Ok(Outcome::Rejected { record, report: checked.report });
            }
            self.store.transition(record.id, State::Discovered, State::Validated, Change::default()).await?.unwrap_or(record)
        } else if key != record.content_key || !checked.report.valid {
            // What is shipped must be what was checked: never mix two versions in one folder.
            let reason = "the batch folder changed after it was validated (a file was added, removed, resized or edited); \
                          drop the corrected batch into the inbox as a new batch";
            return self.fail(record, reason).await;
        } else {
            record
        };
        let mut claim = Claim { record, dir: dir.to_path_buf(), checked, digests, guard };
        self.attempt(&mut claim, false).await
    }

    /// The outcome of a batch whose state was recorded but whose folder was not filed yet.
    async fn recover(&self, record: BatchRecord, dir: &Path) -> Result<Outcome, LifecycleError> {
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

    /// Files a finished batch's folder with its receipt or report; `None` for unfinished ones.
    async fn file(&self, outcome: &Outcome, dir: &Path, drops: &PathsConfig) -> Result<Option<PathBuf>, LifecycleError> {
        let (dir, drops, outcome_owned) = (dir.to_path_buf(), drops.clone(), outcome_summary(outcome));
        let Some(summary) = outcome_owned else { return Ok(None) };
        let record_id = outcome_record(outcome).id;
        let (from, target) = (dir.clone(), summary.destination(&drops).to_path_buf());
        let there = {
            let dir = dir.clone();
            blocking(move || dir.is_dir()).await
        };
        if !there {
            // Filed already: by another host of the fleet, between its scan and ours.
            let now = self.record(record_id).await?;
            if let Some(filed) = now.filed_path {
                let by = now.filed_by.unwrap_or_else(|| "another process".into());
                tracing::info!(id = record_id, to = %filed, "already filed by {by}; nothing to do");
                return Ok(None);
            }
        }
        let moved = blocking(move || summary.write(&dir, &drops)).await.map_err(|source| moving("file", &from, &target, source))?;
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

    async fn record(&self, id: i64) -> Result<BatchRecord, LifecycleError> {
        self.store.get(id).await?.ok_or(LifecycleError::NoRecord { id })
    }

    /// Moves an unfinished batch to failed with `reason`.
    async fn fail(&self, record: BatchRecord, reason: &str) -> Result<Outcome, LifecycleError> {
        let change = Change { last_error: Some(reason.to_owned()), ..Change::default() };
        let moved = self.store.transition(record.id, record.state, State::Failed, change).await?;
        Ok(Outcome::Failed { record: moved.unwrap_or(record) })
    }

    async fn reject_invalid(&self, record: BatchRecord, report: &Report) -> Result<BatchRecord, LifecycleError> {
        let codes: Vec<&str> = report.errors.iter().map(|e| e.code).collect();
        let change = Change {
            last_error: Some(format!("{} validation error(s): {}", codes.len(), summarize(&codes))),
            reject_reason: Some(RejectReason::Invalid),
            ..Change::default()
        };
        Ok(self.store.transition(record.id, record.state, State::Rejected, change).await?.unwrap_or(record))
    }

    /// A discovered or failed batch sent again becomes validated (a failed one keeps its UUID).
    async fn reopen(&self, record: BatchRecord) -> Result<BatchRecord, LifecycleError> {
        if matches!(record.state, State::Discovered | State::Failed) {
            if let Some(moved) = self.store.transition(record.id, record.state, State::Validated, Change::default()).await? {
                return Ok(moved);
            }
        }
        Ok(record)
    }

    async fn validate(&self, dir: &Path) -> Result<Validated, LifecycleError> {
        let (path, marker, split_over_limit) = (dir.to_path_buf(), self.marker.clone(), self.split_over_limit);
        Ok(blocking(move || validate::validate_with(&path, validate::Rules { marker: Some(&marker), split_over_limit, digest: true }))
            .await?)
    }

    /// The receipt of a submitted batch as stored: with the batch it was made from, or its parts.
    pub async fn stored_receipt(&self, record: &BatchRecord) -> Result<Receipt, LifecycleError> {
        let receipt = Receipt::stored(record, self.store.shipped_hashes(record.id).await?);
        self.linked(record, receipt).await
    }

    /// Adds to a receipt what the batch was made from (a resubmission) or made into (parts).
    async fn linked(&self, record: &BatchRecord, mut receipt: Receipt) -> Result<Receipt, LifecycleError> {
        if let (Some(Kind::Resubmission), Some(parent)) = (record.origin.kind, record.origin.parent_id) {
            if let Some(of) = self.store.get(parent).await? {
                receipt.resubmission_of = Some(crate::receipt::Link {
                    id: of.id,
                    batch: of.name,
                    remote_uuid: of.remote_uuid,
                    from_row: record.origin.first_row.unwrap_or(1),
                });
            }
        }
        let children = self.store.children(record.id).await?;
        receipt.parts =
            children.iter().filter(|c| c.origin.kind == Some(Kind::Part) && c.state == State::Submitted).map(Part::of).collect();
        Ok(receipt)
    }
}

/// The folder in work/ where parts are built: a dot-name, so no scan takes it for a batch.
pub const PARTS_FOLDER: &str = ".parts";

/// `<database>.<what>`: a folder of ours beside the state database.
fn beside(database: &Path, what: &str) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(format!(".{what}"));
    PathBuf::from(name)
}

/// Where a claimed folder sits, as recorded for `send`'s folders (canonical path).
pub fn source_path(dir: &Path) -> String {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()).display().to_string()
}

/// The record an outcome is about.
pub fn outcome_record(outcome: &Outcome) -> &BatchRecord {
    match outcome {
        Outcome::Submitted { record, .. }
        | Outcome::AlreadySubmitted { record, .. }
        | Outcome::Rejected { record, .. }
        | Outcome::Duplicate { record, .. }
        | Outcome::Failed { record }
        | Outcome::RetryWait { record }
        | Outcome::Interrupted { record }
        | Outcome::Busy { record, .. } => record,
    }
}

/// Renames `from` to `to` (never replacing) off the async runtime.
async fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    blocking(move || folders::rename_no_replace(&from, &to)).await
}

fn moving(what: &'static str, from: &Path, to: &Path, source: std::io::Error) -> LifecycleError {
    let shown = |p: &Path| folders::shown(&p.display().to_string());
    LifecycleError::Move { what, from: shown(from), to: shown(to), source }
}

fn contents_of<'a>(key: &'a str, checked: &'a Validated) -> Contents<'a> {
    let report = &checked.report;
    Contents {
        content_key: key,
        rows: report.rows,
        files: report.files,
        bytes: report.bytes,
        file_list: &checked.files,
        sha256: &checked.sha256,
    }
}

fn summarize(codes: &[&str]) -> String {
    let mut unique: Vec<&str> = codes.to_vec();
    unique.sort();
    unique.dedup();
    unique.join(", ")
}

/// What filing a finished outcome writes, as plain data for a blocking thread.
enum Filing {
    Done(BatchRecord, Receipt),
    Rejected(BatchRecord, Report),
    Duplicate(BatchRecord, Report, String),
    Failed(BatchRecord),
}

fn outcome_summary(outcome: &Outcome) -> Option<Filing> {
    Some(match outcome {
        Outcome::Submitted { record, receipt } | Outcome::AlreadySubmitted { record, receipt } => {
            Filing::Done(record.clone(), receipt.clone())
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
            Filing::Done(record, receipt) => filing::file_done(dir, to, record, receipt),
            Filing::Rejected(record, report) => filing::file_rejected(dir, to, record, report),
            Filing::Duplicate(record, report, reason) => filing::file_duplicate(dir, to, record, report, reason),
            Filing::Failed(record) => filing::file_failed(dir, to, record),
        }
    }
}

/// The digest of what was checked (each file's sha256, taken as validation read it) and its
/// fingerprint, the batch's content key; nothing for a batch that is not valid.
fn digest(checked: &Validated) -> (String, BTreeMap<String, String>) {
    if !checked.report.valid {
        return (String::new(), BTreeMap::new());
    }
    (fingerprint::fingerprint(&checked.files, &checked.sha256), checked.sha256.clone())
}
