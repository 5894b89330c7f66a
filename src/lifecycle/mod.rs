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
pub mod memory;
mod parts;
mod recovery;
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
use crate::delivery::{Channel, Fence, Progress, Unfenced};
use crate::fingerprint;
use crate::folders::{self, claimed_name, folder_name};
use crate::receipt::{Part, Receipt};
use crate::ship::{Pool, Sftp};
use crate::store::{BatchRecord, Change, Contents, Origin, Store, StoreError};
use crate::tasks::Tasks;
use crate::telemetry::blocking;
use crate::validate::{self, Report, Validated};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
    #[error("batch {name} belongs to {}", route_gone(.route))]
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

/// Why a record's route is not in the config, and what to do.
fn route_gone(route: &str) -> String {
    match route {
        "" => "no named route: it was recorded before routes were named, and with several routes its tenant is unknown; finish it with a config of one route (its [sftp] as then), or drop it again into the inbox of the route it is for".into(),
        route => format!("route {route:?}, which the config no longer has; add [routes.{route}] back (its batches go only to its own server)"),
    }
}

/// What claiming a folder of the inbox came to.
// One value per claim: its size does not matter, boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Claimed {
    /// A batch, held by this process, its folder in work/.
    Ready { record: BatchRecord, dir: PathBuf, guard: Guard },
    /// Gone before it could move (another host of the fleet claimed it first).
    Gone,
    /// What moved was no folder (a link or a file put in its place since the scan): it is at
    /// `now_at`, not a batch, and was never read.
    NotAFolder { now_at: PathBuf, is_link: bool },
}

/// What `admit` found: a batch to ship, or an answer already.
#[derive(Debug)]
pub enum Admitted {
    Ready(Box<Claim>),
    Finished(Box<Outcome>),
}

/// Everything a batch's life needs; shared by the daemon's tasks, `send`, `resubmit` and `retry`.
pub struct Lifecycle {
    store: Store,
    /// Where batches go: every route of the config (`send`: the one it was given), each with
    /// the channel its batches go by.
    ways: Vec<Way>,
    retry: RetryConfig,
    /// A batch over Jumio's row limit is shipped as parts (else it is rejected).
    split_over_limit: bool,
    /// Where the folders of parts are built (the daemon: `work/.parts`; `send`: beside the database).
    staging: PathBuf,
    /// The ready-marker file name (never shipped).
    marker: String,
    locks: Locks,
    /// The process's shutdown tree: a stop makes deliveries end at their next safe point.
    tasks: Tasks,
    /// SSH connections kept open between batches.
    pool: Arc<Pool>,
    /// Called as each upload starts with its live counters (`send`'s progress bar).
    watch_upload: Option<WatchUpload>,
    /// The identity of the database, written into each receipt.
    database_id: Option<String>,
}

/// A route and the channel its batches go by.
pub struct Way {
    pub route: Route,
    pub channel: Arc<dyn Channel>,
}

/// Something that follows an upload's counters while it runs.
pub type WatchUpload = Box<dyn Fn(&Arc<Progress>) + Send + Sync>;

impl Lifecycle {
    /// The lifecycle of `routes`, each route's tenant spelled as the store knows its account
    /// (`tenancy::unify`); its background work belongs to `tasks`.
    pub async fn new(store: Store, config: &Config, mut routes: Vec<Route>, tasks: Tasks) -> Result<Lifecycle, LifecycleError> {
        tenancy::unify(&store, &mut routes).await?;
        let database_id = store.identity().await?;
        let connections: usize = routes.iter().map(|r| r.sftp.connections).sum();
        let idle = routes.iter().map(|r| r.sftp.pool_idle_secs).max().unwrap_or_default();
        let pool = Arc::new(Pool::new(connections * config.watch.max_parallel_batches, Duration::from_secs(idle)));
        let database = &config.state.local_base();
        let ways = routes
            .into_iter()
            .map(|route| {
                let channel: Arc<dyn Channel> = Arc::new(Sftp::new(route.sftp.clone(), pool.clone()));
                Way { route, channel }
            })
            .collect();
        Ok(Lifecycle {
            store,
            retry: config.retry.clone(),
            split_over_limit: config.batch.split_over_limit,
            staging: config.paths.as_ref().map_or_else(|| beside(database, "parts"), |p| p.work.join(PARTS_FOLDER)),
            marker: config.watch.marker.clone(),
            locks: Locks::beside(database),
            tasks,
            pool,
            ways,
            watch_upload: None,
            database_id,
        })
    }

    /// The store, for what the daemon and the commands only read from it (counts, identity).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The shutdown tree this lifecycle's work belongs to.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// The route at `index` (the daemon's inboxes know their route by it).
    pub fn route_at(&self, index: usize) -> &Route {
        &self.ways[index].route
    }

    /// Follows each upload's live counters from now on (`send`'s progress bar).
    pub fn watch_uploads(&mut self, watch: WatchUpload) {
        self.watch_upload = Some(watch);
    }

    /// Closes the kept connections idle past their time (off the async runtime).
    pub async fn sweep_connections(&self) {
        let pool = self.pool.clone();
        blocking(move || pool.sweep()).await
    }

    /// The route a batch goes to, and its channel: the one its record names.
    pub fn way(&self, record: &BatchRecord) -> Result<&Way, LifecycleError> {
        let found = self.ways.iter().find(|w| w.route.name == record.origin.route);
        // A batch recorded before routes were named goes where the only route goes.
        let found = found.or_else(|| self.ways.first().filter(|_| record.origin.route.is_none() && self.ways.len() == 1));
        found.ok_or_else(|| LifecycleError::UnknownRoute {
            name: record.name.clone(),
            route: record.origin.route.clone().unwrap_or_default(),
        })
    }

    /// The route a batch goes to: the one its record names.
    pub fn route(&self, record: &BatchRecord) -> Result<&Route, LifecycleError> {
        Ok(&self.way(record)?.route)
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
        let source = source_path(dir).await;
        let name = checked.report.batch.clone();
        let (key, digests) = digest(&checked);
        let contents = contents_of(&key, &checked);
        let origin = Lifecycle::origin(&self.ways[0].route);
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
    /// start), then the folder moves to `work/<id>.<name>`, and what moved is looked at again:
    /// only a real folder is a batch (a link swapped in between the scan and the rename is
    /// never followed: it is handed back as `NotAFolder`, its record forgotten).
    pub async fn claim(&self, src: &Path, name: &str, work: &Path, route: &Route) -> Result<Claimed, LifecycleError> {
        let origin = Lifecycle::origin(route);
        let (record, guard) = self.record_claim(name, &origin, work).await?;
        let (from, to) = (src.to_path_buf(), PathBuf::from(&record.source_path));
        tracing::debug!(batch = %record.name, id = record.id, "claiming");
        crate::failpoint::hit_counted("before_claim_rename");
        // (An orphan adopted under a new id that happens to spell its name is where it belongs.)
        let moved = if from == to { Ok(()) } else { rename(&from, &to).await };
        if let Err(source) = moved {
            self.store.forget_unclaimed(record.id).await?;
            return match source.kind() {
                std::io::ErrorKind::NotFound => Ok(Claimed::Gone),
                _ => Err(moving("claim", &from, &to, source)),
            };
        }
        let moved = to.clone();
        let kind = blocking(move || std::fs::symlink_metadata(&moved).map(|m| m.file_type())).await;
        match kind {
            Ok(kind) if kind.is_dir() => Ok(Claimed::Ready { record, dir: to, guard }),
            _ => {
                self.store.forget_unclaimed(record.id).await?;
                drop(guard);
                Ok(Claimed::NotAFolder { now_at: to, is_link: kind.is_ok_and(|k| k.is_symlink()) })
            }
        }
    }

    /// A new record for a folder that goes to `work/<id>.<name>`, held by this process from the
    /// start: the lease the claim took with it (fleet mode), else the batch's kernel lock.
    async fn record_claim(&self, name: &str, origin: &Origin, work: &Path) -> Result<(BatchRecord, Guard), LifecycleError> {
        let sent = std::time::Instant::now();
        let (record, token) = self.store.claim(name, origin, |id| work.join(claimed_name(id, name)).display().to_string()).await?;
        let guard = match token {
            Some(token) => Guard::Lease(Lease::held(&self.store, record.id, token, sent, &self.tasks)),
            None => {
                Guard::Lock(self.batch_lock(record.id).await?.unwrap_or_else(|holder| panic!("bug: a new batch is locked by {holder}")))
            }
        };
        Ok((record, guard))
    }

    /// A folder in work/ without the id form: left by an earlier version (its unfinished
    /// record is adopted, so it resumes into its own UUID) or put there by hand (claimed anew).
    pub async fn adopt(&self, dir: &Path, work: &Path) -> Result<Option<(BatchRecord, PathBuf, Option<Guard>)>, LifecycleError> {
        // An orphan keeps the name it was dropped with, not the id of a record gone.
        let name = folder_name(dir);
        let name = folders::parse_claimed(&name).map_or(name.clone(), |(_, dropped)| dropped.to_owned());
        let Some(record) = self.store.unfinished_at(&source_path(dir).await).await? else {
            // Put there by hand: its tenant is known only when there is one route.
            return match &self.ways[..] {
                [only] if only.route.name.is_none() => match self.claim(dir, &name, work, &only.route).await? {
                    Claimed::Ready { record, dir, guard } => Ok(Some((record, dir, Some(guard)))),
                    Claimed::Gone | Claimed::NotAFolder { .. } => Ok(None),
                },
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
            return Ok(Lease::take(&self.store, id, &self.tasks).await?.map(Guard::Lease));
        }
        Ok(self.batch_lock(id).await?.map(Guard::Lock))
    }

    /// The kernel lock of batch `id` (one host), taken off the async runtime.
    async fn batch_lock(&self, id: i64) -> Result<Result<Held, Holder>, LockError> {
        let locks = self.locks.clone();
        blocking(move || locks.batch(id)).await
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
        if filing::outcome_summary(&outcome).is_some() && !guard.confirm().await {
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
        match self.check_claim(record, dir, guard).await? {
            Ok(mut claim) => self.attempt(&mut claim, false).await,
            Err(outcome) => Ok(outcome),
        }
    }

    /// A held batch that `run_to_end` is to work (a resubmission): validated, a failed one
    /// reopened first (it resumes into its own folder).
    pub async fn ready(&self, record: BatchRecord, dir: &Path, guard: Guard) -> Result<Result<Claim, Outcome>, LifecycleError> {
        let record = if record.state == State::Failed { self.reopen(record).await? } else { record };
        self.check_claim(record, dir, Arc::new(guard)).await
    }

    /// The held batch `record` in `dir`, validated (again): ready for an attempt, or its outcome
    /// when it is invalid (rejected), changed since it was checked (failed), or taken over.
    pub async fn check_claim(&self, record: BatchRecord, dir: &Path, guard: Arc<Guard>) -> Result<Result<Claim, Outcome>, LifecycleError> {
        let mut checked = self.validate(dir).await?;
        checked.report.batch = record.name.clone();
        let (key, digests) = digest(&checked);
        let record = if record.state == State::Discovered {
            if !self.store.record_contents(record.id, &contents_of(&key, &checked)).await? {
                return self.moved_elsewhere(record).await.map(Err);
            }
            if !checked.report.valid {
                let record = self.reject_invalid(record, &checked.report).await?;
                return Ok(Err(Outcome::Rejected { record, report: checked.report }));
            }
            self.store.transition(record.id, State::Discovered, State::Validated, Change::default()).await?.unwrap_or(record)
        } else if key != record.content_key || !checked.report.valid {
            // What is shipped must be what was checked: never mix two versions in one folder.
            let reason = "the batch folder changed after it was validated (a file was added, removed, resized or edited); \
                          drop the corrected batch into the inbox as a new batch";
            return self.fail(record, reason).await.map(Err);
        } else {
            record
        };
        Ok(Ok(Claim { record, dir: dir.to_path_buf(), checked, digests, guard }))
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

/// Where a claimed folder sits, as recorded for `send`'s folders (canonical path; resolved off
/// the async runtime: the folder may be on a share).
pub async fn source_path(dir: &Path) -> String {
    let dir = dir.to_path_buf();
    blocking(move || dir.canonicalize().unwrap_or(dir).display().to_string()).await
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

/// The digest of what was checked (each file's sha256, taken as validation read it) and its
/// fingerprint, the batch's content key; nothing for a batch that is not valid.
fn digest(checked: &Validated) -> (String, BTreeMap<String, String>) {
    if !checked.report.valid {
        return (String::new(), BTreeMap::new());
    }
    (fingerprint::fingerprint(&checked.files, &checked.sha256), checked.sha256.clone())
}
