//! The long-running service: watch the inbox, claim ready batches into work/, ship them,
//! retry what failed, and file each outcome into done/, rejected/ or failed/.
//! Shutdown is a parameter (a future), so tests and `main` each bring their own.

mod inbox;
mod systemd;
mod watch;

pub use inbox::is_ignored;
use inbox::EntryKind;

use crate::batch::State;
use crate::config::{Loaded, PathsConfig, Readiness, Route, WatchConfig};
use crate::folders::{self, folder_name, parse_claimed};
use crate::layout::Layout;
use crate::lifecycle::{self, Claimed, Guard, Held, Lifecycle, LifecycleError, Locks, Outcome};
use crate::store::{Store, StoreError};
use crate::tasks::Tasks;
use crate::telemetry::blocking;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long in-flight uploads get to reach a safe point after SIGTERM; with the runtime's own
/// shutdown bound (cli) the process is gone within 30 s, before systemd's TimeoutStopSec.
pub const SHUTDOWN_GRACE_SECS: u64 = 27;
/// Then the background tasks get this long to end, before the database is closed.
const BACKGROUND_GRACE: Duration = Duration::from_secs(2);
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A batch whose task ended in an error is left alone this long before it is tried again.
const ERROR_BACKOFF: Duration = Duration::from_secs(60);
/// A folder in work/ that could not be adopted is looked at again after this long.
const FOLDER_BACKOFF: Duration = Duration::from_secs(600);
/// A batch whose task panicked is not touched again by this process.
const NEVER_AGAIN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

type TaskResult = (i64, Result<Outcome, LifecycleError>);

/// Why the daemon cannot start or go on; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] lifecycle::LockError),
    #[error(transparent)]
    Layout(#[from] crate::layout::LayoutError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error("jumio-batchd is already running as {holder} on the state database {}; stop it first (or give this one its own [state] database)", database.display())]
    AlreadyRunning { holder: lifecycle::Holder, database: PathBuf },
    #[error("a daemon with host id {host} is already running in the fleet (PID {pid}, its last heartbeat at {at}); give each daemon its own [fleet] host_id, or stop that one first")]
    HostIdTaken { host: String, pid: i64, at: String },
    #[error("inbox {} does not exist or is not a folder; create it (or mount the share) and start again", .0.display())]
    NoInbox(PathBuf),
    #[error("cannot {what} {}: {source}; check that it exists and this user may read and write it", path.display())]
    Folder { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("inbox {} and work {} are on different filesystems; claiming a batch must be an atomic rename: put work on the same filesystem as the inbox", inbox.display(), work.display())]
    DifferentFilesystems { inbox: PathBuf, work: PathBuf },
    #[error("{0} batch(es) could not be handled; the log above says why")]
    Troubled(usize),
    #[error(transparent)]
    Memory(#[from] crate::lifecycle::memory::MemoryError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(std::io::Error),
    #[error("the state database {0} was deleted, emptied, replaced or rolled back while running (its file, schema, identity or newest batch is not what this daemon saw); stopped claiming so nothing is shipped without its record. Restore the newest backup, then start again")]
    DatabaseGone(String),
    #[error("jumio-batchd already runs on this host as {holder} with [state] local_dir {}; stop it first (a frozen one too: it still holds its lock), or give this daemon its own local_dir and host_id", dir.display())]
    HostAlreadyRunning { holder: lifecycle::Holder, dir: PathBuf },
}

pub struct Daemon {
    life: Arc<Lifecycle>,
    paths: PathsConfig,
    watch: WatchConfig,
    tasks: JoinSet<TaskResult>,
    /// Batches with a task, by record id, and the folder it works on.
    running: HashMap<i64, PathBuf>,
    task_of: HashMap<tokio::task::Id, i64>,
    /// Tasks that ended, waiting for `step` to settle them (join_next must stay cancel-safe).
    ended: Vec<(i64, Result<TaskResult, String>)>,
    /// Batches left alone until the instant (an error, a panic, another process on them).
    held_back: HashMap<i64, Instant>,
    /// Folders of work/ that could not be adopted, left alone until the instant.
    held_back_folders: HashMap<PathBuf, Instant>,
    /// Batches this process could not handle (an error or a panic): `run --once` then fails.
    pub troubled: usize,
    /// Where batches are dropped: one inbox per route (and, with named routes, `[paths] inbox`
    /// itself, where a batch belongs to no route).
    inboxes: Vec<Inbox>,
    /// What the database was at start.
    identity: Identity,
    /// One daemon per database (SQLite) or per local folder of this host (fleet mode).
    _lock: Held,
}

/// The database a daemon started with: its file (SQLite: path, device and inode) and the id its
/// schema was made with.
struct Identity {
    file: Option<(PathBuf, Option<(u64, u64)>)>,
    id: Option<String>,
    /// The highest batch id seen: ids only grow, a lower one means batches went away.
    high_water: std::sync::atomic::AtomicI64,
}

/// What one step did and when the next is due at the latest.
#[derive(Debug, Default)]
pub struct Step {
    pub claimed: usize,
    pub resumed: usize,
    /// Folders in the inbox ready to be claimed when it was scanned.
    pub ready: usize,
    pub wake_at: Option<Instant>,
}

impl Step {
    fn wake_by(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// One folder the daemon claims batches from.
struct Inbox {
    path: PathBuf,
    /// The route of its batches (an index into the lifecycle's routes); `None`: the top of a
    /// config with named routes, where a batch belongs to no route and is filed with a report.
    route: Option<usize>,
    /// What not to take for batches: the route inboxes inside this folder, by name, and links
    /// here that lead to one (an operator's way into a route's inbox), by where they lead.
    skip: Vec<String>,
    skip_links_to: Vec<PathBuf>,
    settle: inbox::Settle,
    missing: bool,
}

/// The inboxes to scan: one per route, and with named routes the top of `[paths] inbox` too,
/// where a batch belongs to no route (the routes' inboxes in it are skipped).
fn inboxes(paths: &PathsConfig, routes: &[Route], layout: &Layout) -> Vec<Inbox> {
    let inbox = |path: PathBuf, route, skip, skip_links_to| Inbox {
        path,
        route,
        skip,
        skip_links_to,
        settle: inbox::Settle::default(),
        missing: false,
    };
    let mut all: Vec<Inbox> = routes
        .iter()
        .enumerate()
        .map(|(i, r)| inbox(r.inbox.clone().unwrap_or_else(|| paths.inbox.clone()), Some(i), Vec::new(), Vec::new()))
        .collect();
    let top_is_a_route = layout.routes.iter().any(|r| r.real == layout.top.real);
    if routes.iter().any(|r| r.name.is_some()) && !top_is_a_route {
        let route_inboxes = layout.routes.iter().map(|r| r.real.clone()).collect();
        all.push(inbox(paths.inbox.clone(), None, layout.route_names_in_top(), route_inboxes));
    }
    all
}

impl Daemon {
    /// Takes the database's daemon lock, checks the folders and opens the store; refuses to
    /// start with a clear message otherwise.
    pub async fn start(loaded: &Loaded, new_database: bool) -> Result<Daemon, DaemonError> {
        let paths = loaded.paths()?.clone();
        let routes = loaded.routes()?;
        let state = &loaded.config.state;
        let fleet = state.postgres_url().is_some();
        let database = &state.database;
        // One daemon per database (SQLite), and per [state] local_dir on this host (fleet mode):
        // a kernel lock, given back by the kernel when its holder dies, never while it is frozen.
        let locks = Locks::beside(&state.local_base());
        let lock = blocking({
            let locks = locks.clone();
            move || locks.daemon()
        })
        .await?
        .map_err(|holder| match fleet {
            false => DaemonError::AlreadyRunning { holder, database: database.clone() },
            true => DaemonError::HostAlreadyRunning { holder, dir: state.local_dir.clone() },
        })?;
        Layout::check(&paths, &routes, (!fleet).then_some(database.as_path()))?;
        let tasks = Tasks::new();
        prepare_folders(&paths, &routes)?;
        // Again now that every folder exists: what was only spelled before is resolved now.
        let layout = Layout::check(&paths, &routes, (!fleet).then_some(database.as_path()))?;
        // The database must be the memory of these drop folders: never an empty or older one.
        let store = crate::lifecycle::memory::open_store(&loaded.config, new_database).await?;
        if let Some(fleet) = store.fleet().cloned() {
            let dead = |pid: i64| u32::try_from(pid).is_ok_and(|pid| !crate::lifecycle::lock::alive(pid));
            if let Some(other) = store.register_host(std::process::id(), fleet.lease, &crate::lifecycle::lock::this_machine(), dead).await?
            {
                return Err(DaemonError::HostIdTaken { host: other.host_id, pid: other.pid, at: other.heartbeat_at.to_rfc3339() });
            }
            tasks.spawn(host_heartbeat(store.clone(), fleet.lease / 3, tasks.clone()));
            tracing::info!(host_id = %fleet.host, lease_secs = fleet.lease.as_secs(), database = %state.shown(), "fleet mode: sharing the state database");
        }
        let identity = Identity {
            file: (!fleet).then(|| (database.clone(), file_identity(database))),
            id: store.identity().await?,
            high_water: std::sync::atomic::AtomicI64::new(store.high_water().await?),
        };
        let inboxes = inboxes(&paths, &routes, &layout);
        let life = Lifecycle::new(store, &loaded.config, routes, tasks).await?;
        life.forget_unclaimed(&paths.work).await?;
        Ok(Daemon {
            life: Arc::new(life),
            paths,
            watch: loaded.config.watch.clone(),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            task_of: HashMap::new(),
            ended: Vec::new(),
            held_back: HashMap::new(),
            held_back_folders: HashMap::new(),
            troubled: 0,
            inboxes,
            identity,
            _lock: lock,
        })
    }

    /// False once the database was deleted, emptied or replaced under the running daemon: its
    /// file (SQLite) or its identity is not the one it started with, or its schema is gone.
    /// A database out of reach says nothing here (the step reports it).
    pub async fn database_is_ours(&self) -> bool {
        if let Some((path, file)) = &self.identity.file {
            let (path, file) = (path.clone(), *file);
            if blocking(move || file_identity(&path)).await != file {
                return false;
            }
        }
        let id = match self.life.store().identity().await {
            Ok(id) => id,
            Err(e) => return !e.is_missing_table(),
        };
        let Ok(high_water) = self.life.store().high_water().await else { return true };
        let seen = self.identity.high_water.fetch_max(high_water, std::sync::atomic::Ordering::SeqCst);
        id == self.identity.id && high_water >= seen
    }

    pub fn store(&self) -> &Store {
        self.life.store()
    }

    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// Settles the tasks that ended, resumes what is in work/ (recovered after a restart, due
    /// for a retry, or sent back by `retry`), then claims ready batches while there is capacity.
    pub async fn step(&mut self) -> Result<Step, DaemonError> {
        let mut step = Step::default();
        self.settle_ended().await;
        if self.life.tasks().is_stopping() {
            return Ok(step);
        }
        self.life.sweep_connections().await;
        step.resumed = self.resume_work(&mut step).await?;
        self.claim_ready(&mut step).await;
        Ok(step)
    }

    async fn resume_work(&mut self, step: &mut Step) -> Result<usize, DaemonError> {
        let mut resumed = 0;
        let work = self.paths.work.clone();
        let dirs = blocking(move || folders_in(&work)).await.map_err(|source| DaemonError::Folder {
            what: "read",
            path: self.paths.work.clone(),
            source,
        })?;
        let now = Instant::now();
        for dir in dirs {
            if self.running.len() >= self.watch.max_parallel_batches {
                break;
            }
            let name = folder_name(&dir);
            if inbox::is_ignored(&name) {
                continue;
            }
            if parse_claimed(&name).is_some_and(|(id, _)| self.running.contains_key(&id)) {
                continue;
            }
            if self.held_back_folders.get(&dir).is_some_and(|until| *until > now) {
                continue;
            }
            let found = match self.life.identify(&dir, &self.paths.work).await {
                Ok(found) => found,
                Err(LifecycleError::Store(e)) => return Err(e.into()),
                Err(e) => {
                    tracing::error!(folder = %name, "cannot adopt a folder found in work/: {e}; looked at again in {} min", FOLDER_BACKOFF.as_secs() / 60);
                    self.held_back_folders.insert(dir, now + FOLDER_BACKOFF);
                    continue;
                }
            };
            let Some((record, dir, guard)) = found else { continue };
            let due = self.life.due_in(&record, guard.is_some());
            if !due.is_zero() {
                // Waiting to retry, or another host holds its lease: looked at again then.
                step.wake_by(now + due);
                continue;
            }
            if let Some(&until) = self.held_back.get(&record.id) {
                if until > now {
                    step.wake_by(until);
                    continue;
                }
            }
            self.spawn(record.id, dir, guard);
            resumed += 1;
        }
        Ok(resumed)
    }

    async fn claim_ready(&mut self, step: &mut Step) {
        for at in 0..self.inboxes.len() {
            self.claim_from(at, step).await;
        }
    }

    /// Claims the ready batches of one inbox while there is capacity.
    async fn claim_from(&mut self, at: usize, step: &mut Step) {
        let paths = self.paths.clone();
        let inbox = &mut self.inboxes[at];
        // Scanning (a share, perhaps) and snapshotting folders is blocking work.
        let (path, watch, mut settle, skip, skip_links_to) =
            (inbox.path.clone(), self.watch.clone(), std::mem::take(&mut inbox.settle), inbox.skip.clone(), inbox.skip_links_to.clone());
        let (settle, scanned) = blocking(move || {
            let scanned = inbox::scan(&path).map(|mut entries| {
                let leads_to_a_route = |e: &inbox::Entry| {
                    e.kind == EntryKind::Link && path.join(&e.name).canonicalize().is_ok_and(|to| skip_links_to.contains(&to))
                };
                entries.retain(|e| !skip.contains(&e.name) && !leads_to_a_route(e));
                settle.ready(&path, &entries, watch.ready, &watch.marker, Duration::from_secs(watch.settle_secs), Instant::now())
            });
            (settle, scanned)
        })
        .await;
        inbox.settle = settle;
        let (ready, next) = match scanned {
            Ok(found) => {
                if inbox.missing {
                    tracing::info!(inbox = %inbox.path.display(), "inbox is readable again");
                    inbox.missing = false;
                }
                found
            }
            Err(e) => {
                if !inbox.missing {
                    tracing::warn!(inbox = %inbox.path.display(), "cannot read the inbox ({e}); is the share mounted? will keep trying");
                    inbox.missing = true;
                }
                return;
            }
        };
        if let Some(next) = next {
            step.wake_by(next);
        }
        step.ready += ready.len();
        let (path, route) = (inbox.path.clone(), inbox.route);
        for entry in ready {
            if self.running.len() >= self.watch.max_parallel_batches {
                break;
            }
            let src = path.join(&entry.name);
            self.inboxes[at].settle.forget(&entry.name);
            let name = folders::shown(&entry.name);
            let route = match route {
                Some(route) if entry.kind == EntryKind::Folder => self.life.route_at(route).clone(),
                _ => {
                    self.file_misplaced(&src, &name, entry.kind).await;
                    continue;
                }
            };
            match self.life.claim(&src, &name, &paths.work, &route).await {
                Ok(Claimed::Ready { record, dir, guard }) => {
                    tracing::info!(batch = %record.name, id = record.id, route = route.label(), "claimed from the inbox");
                    step.claimed += 1;
                    self.spawn(record.id, dir, Some(guard));
                }
                Ok(Claimed::Gone) => tracing::info!(batch = %name, "left the inbox before it could be claimed"),
                Ok(Claimed::NotAFolder { now_at, is_link }) => {
                    let kind = if is_link { EntryKind::Link } else { EntryKind::File };
                    self.file_misplaced(&now_at, &entry.name, kind).await;
                }
                Err(e) => {
                    tracing::error!(batch = %name, "cannot claim: {e}");
                    self.troubled += 1;
                }
            }
        }
    }

    /// A loose file or a link in an inbox, or a folder dropped where no route takes it: filed
    /// into rejected/ with a report saying where batches go (a link is moved, never followed).
    async fn file_misplaced(&self, src: &Path, name: &str, kind: EntryKind) {
        let (file, rejected, dropped) = (src.to_path_buf(), self.paths.rejected.clone(), name.to_owned());
        let routes: Vec<String> = self.inboxes.iter().filter(|i| i.route.is_some()).map(|i| i.path.display().to_string()).collect();
        let filed = blocking(move || match kind {
            EntryKind::Folder => lifecycle::file_unrouted(&file, &rejected, &routes),
            EntryKind::File => lifecycle::file_loose(&file, &dropped, &rejected),
            EntryKind::Link => lifecycle::file_link(&file, &dropped, &rejected),
        })
        .await;
        let name = folders::shown(name);
        match (filed, kind) {
            (Ok(to), EntryKind::Folder) => {
                tracing::warn!(batch = %name, to = %to.display(), "a batch dropped outside every route's inbox; filed with a report")
            }
            (Ok(to), EntryKind::File) => {
                tracing::warn!(file = %name, to = %to.display(), "a loose file in the inbox is not a batch; filed with a report")
            }
            (Ok(to), EntryKind::Link) => tracing::warn!(
                link = %name,
                to = %to.display(),
                "a symbolic link in the inbox is not a batch (nothing is read through it); filed with a report"
            ),
            (Err(e), _) => tracing::error!(file = %name, "cannot move a misplaced entry out of the inbox: {e}"),
        }
    }

    /// Works batch `id` in a task of its own (already held when claimed just now).
    fn spawn(&mut self, id: i64, dir: PathBuf, guard: Option<Guard>) {
        self.running.insert(id, dir.clone());
        let (life, paths) = (self.life.clone(), self.paths.clone());
        let handle = self.tasks.spawn(async move {
            let outcome = match guard {
                Some(guard) => life.work_held(id, &dir, &paths, guard).await,
                None => life.work(id, &dir, &paths).await,
            };
            (id, outcome)
        });
        self.task_of.insert(handle.id(), id);
    }

    /// Logs how each ended task went; a panicked one fails its batch into failed/.
    async fn settle_ended(&mut self) {
        for (id, ended) in std::mem::take(&mut self.ended) {
            let dir = self.running.remove(&id).unwrap_or_default();
            match ended {
                Ok((_, Ok(Outcome::Busy { record, holder }))) => {
                    tracing::info!(batch = %record.name, id, "being worked by {holder}; will look again");
                    self.held_back.insert(id, Instant::now() + Duration::from_secs(self.watch.poll_secs));
                }
                Ok((_, Ok(_))) => {}
                Ok((_, Err(e))) => {
                    // The database out of reach (a restart, the network): soon again, not in a minute.
                    let backoff = match e {
                        LifecycleError::Store(_) => Duration::from_secs(self.watch.poll_secs).min(ERROR_BACKOFF),
                        _ => ERROR_BACKOFF,
                    };
                    tracing::error!(id, "{e}; will try again in {} s", backoff.as_secs());
                    self.held_back.insert(id, Instant::now() + backoff);
                    self.troubled += 1;
                }
                Err(panic) => {
                    tracing::error!(id, "the batch's task panicked ({panic}); filing it as failed");
                    self.held_back.insert(id, Instant::now() + NEVER_AGAIN);
                    self.troubled += 1;
                    if let Err(e) = self.life.fail_abandoned(id, &dir, &self.paths, &panic).await {
                        tracing::error!(id, "cannot file the batch as failed after its task panicked: {e}");
                    }
                }
            }
        }
    }

    /// The queue and the batches by state, for `/metrics` (no-op without a listener).
    pub async fn publish_metrics(&self, step: &Step) {
        crate::metrics::queue(step.ready.saturating_sub(step.claimed), self.running.len());
        if let Ok(counts) = self.life.store().counts().await {
            crate::metrics::states(&counts);
        }
    }

    /// One line for `systemctl status`.
    pub async fn status_line(&self) -> String {
        let counts = self.life.store().counts().await.unwrap_or_default();
        let n = |s: State| counts.get(&s).copied().unwrap_or(0);
        format!(
            "{} in flight, {} waiting to retry; {} submitted, {} rejected, {} failed in all",
            self.running.len(),
            n(State::RetryWait),
            n(State::Submitted),
            n(State::Rejected),
            n(State::Failed)
        )
    }

    /// Waits for one batch task to end (settled at the next `step`); `None` when none is running.
    /// Cancel-safe: nothing but taking the result happens here.
    pub async fn join_next(&mut self) -> Option<i64> {
        let joined = self.tasks.join_next_with_id().await?;
        let (id, result) = match joined {
            Ok((task, result)) => (self.task_of.remove(&task), Ok(result)),
            Err(e) => (self.task_of.remove(&e.id()), Err(panic_message(e))),
        };
        let id = id.expect("every task is registered");
        self.ended.push((id, result));
        Some(id)
    }

    /// Stops claiming, lets uploads reach a file boundary (at most `grace`), and waits.
    pub async fn shutdown(&mut self, grace: Duration) {
        self.life.tasks().stop();
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        while !self.tasks.is_empty() {
            tokio::select! {
                _ = self.tasks.join_next() => {}
                _ = &mut deadline => {
                    tracing::warn!(in_flight = self.tasks.len(), "shutdown grace period over; the rest resumes at the next start");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        self.running.clear();
    }

    /// After `shutdown`: every background task (heartbeat, watchdog, metrics, lease releases)
    /// has ended, then this host leaves the fleet's list and the database is closed.
    pub async fn close(self) {
        if !self.life.tasks().finish(BACKGROUND_GRACE).await {
            tracing::warn!("some background work did not end within {} s", BACKGROUND_GRACE.as_secs());
        }
        if let Err(e) = self.life.store().unregister_host(std::process::id()).await {
            tracing::warn!("cannot take this host out of the fleet's list ({e}); it drops out when its heartbeat stops");
        }
        self.life.store().close().await;
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}

/// Runs until `shutdown` resolves (or, with `once`, until every batch ready now is handled).
pub async fn run(loaded: &Loaded, shutdown: impl Future<Output = ()>, once: bool, new_database: bool) -> Result<(), DaemonError> {
    let (open_files, was) = systemd::raise_open_files_limit();
    if open_files != was {
        tracing::debug!(open_files, was, "raised the limit of open files to the hard limit");
    }
    let mut daemon = Daemon::start(loaded, new_database).await?;
    if let Some(listen) = &loaded.config.metrics.listen {
        crate::metrics::serve(listen, daemon.life.tasks()).await?;
        let last = daemon.store().last_submitted_at().await.ok().flatten();
        crate::metrics::last_submission(last.map_or_else(std::time::SystemTime::now, Into::into));
        tracing::info!(listen = %listen, "serving Prometheus metrics at /metrics");
    }
    let hangups = systemd::log_hangups(daemon.life.tasks().clone()).map_err(DaemonError::Signal)?;
    daemon.life.tasks().spawn(hangups);
    let paths = loaded.paths()?;
    let (mut watch, mut events) = watch::InboxWatch::new(&paths.inbox, loaded.config.watch.events);
    let poll = Duration::from_secs(loaded.config.watch.poll_secs);
    let heartbeat = systemd::Heartbeat::default();
    heartbeat.beat();
    systemd::ready();
    // The loop wakes at least every poll interval; three missed wakes mean it is stuck.
    daemon.life.tasks().spawn(systemd::watchdog(heartbeat.clone(), poll * 3 + Duration::from_secs(30), daemon.life.tasks().clone()));
    tracing::info!(inbox = %paths.inbox.display(), ready = ?loaded.config.watch.ready, events = watch.is_active(), "jumio-batchd running");
    let mut last_status = String::new();
    let mut stalled = crate::telemetry::Every::new(Duration::from_secs(60));
    if once && loaded.config.watch.ready == Readiness::Settle {
        daemon.step().await?;
        tokio::time::sleep(Duration::from_secs(loaded.config.watch.settle_secs)).await;
    }
    tokio::pin!(shutdown);
    loop {
        heartbeat.beat();
        // The inbox may be a share: whether it was remounted is asked off the async runtime.
        watch = blocking(move || {
            watch.ensure();
            watch
        })
        .await;
        if !daemon.database_is_ours().await {
            tracing::error!("the state database was deleted, emptied or replaced while running; no more claims, stopping");
            daemon.shutdown(Duration::from_secs(SHUTDOWN_GRACE_SECS)).await;
            return Err(DaemonError::DatabaseGone(loaded.config.state.shown()));
        }
        let step = match daemon.step().await {
            Ok(step) => step,
            // The database out of reach, work/ unreadable, descriptors run out: the batches in
            // flight wait for it; so does the loop (said once a minute, not at every step).
            Err(e) if !once => {
                if stalled.due() {
                    tracing::warn!("{e}; trying again every {} s (said once a minute while it lasts)", poll.as_secs());
                }
                Step { wake_at: Some(Instant::now() + poll), ..Step::default() }
            }
            Err(e) => return Err(e),
        };
        daemon.publish_metrics(&step).await;
        let line = daemon.status_line().await;
        if line != last_status {
            systemd::status(&line);
            last_status = line;
        }
        if once && step.claimed == 0 && step.resumed == 0 && daemon.in_flight() == 0 {
            break;
        }
        let wake = step.wake_at.map_or(poll, |at| at.saturating_duration_since(Instant::now()).min(poll));
        tokio::select! {
            _ = &mut shutdown => {
                systemd::stopping();
                tracing::info!(in_flight = daemon.in_flight(), "stopping: no new claims; letting uploads reach a safe point");
                daemon.shutdown(Duration::from_secs(SHUTDOWN_GRACE_SECS)).await;
                break;
            }
            Some(()) = events.recv(), if !once => {
                // A burst of events becomes one scan; a batch ending meanwhile frees a slot, which
                // is refilled at once (claims are events too: they must not idle the slots).
                let debounce = tokio::time::sleep(DEBOUNCE);
                tokio::pin!(debounce);
                tokio::select! {
                    _ = &mut debounce => {}
                    Some(_) = daemon.join_next(), if daemon.in_flight() > 0 => {}
                }
                while events.try_recv().is_ok() {}
            }
            Some(_) = daemon.join_next(), if daemon.in_flight() > 0 => {}
            _ = tokio::time::sleep(wake), if !(once && daemon.in_flight() > 0) => {}
        }
    }
    let troubled = daemon.troubled;
    daemon.close().await;
    tracing::info!("jumio-batchd stopped");
    if once && troubled > 0 {
        return Err(DaemonError::Troubled(troubled));
    }
    Ok(())
}

fn prepare_folders(paths: &PathsConfig, routes: &[Route]) -> Result<(), DaemonError> {
    if !paths.inbox.is_dir() {
        return Err(DaemonError::NoInbox(paths.inbox.clone()));
    }
    for dir in [&paths.work, &paths.done, &paths.rejected, &paths.failed] {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Folder { what: "create", path: dir.clone(), source })?;
    }
    for inbox in routes.iter().filter_map(|r| r.inbox.as_ref()) {
        // A route's subfolder of the inbox is made for it; an inbox elsewhere must be there.
        if inbox.starts_with(&paths.inbox) {
            std::fs::create_dir_all(inbox).map_err(|source| DaemonError::Folder { what: "create", path: inbox.clone(), source })?;
        }
        if !inbox.is_dir() {
            return Err(DaemonError::NoInbox(inbox.clone()));
        }
        if !folders::same_filesystem(inbox, &paths.work).unwrap_or(false) {
            return Err(DaemonError::DifferentFilesystems { inbox: inbox.clone(), work: paths.work.clone() });
        }
    }
    let same = folders::same_filesystem(&paths.inbox, &paths.work).map_err(|source| DaemonError::Folder {
        what: "inspect",
        path: paths.work.clone(),
        source,
    })?;
    if !same {
        return Err(DaemonError::DifferentFilesystems { inbox: paths.inbox.clone(), work: paths.work.clone() });
    }
    Ok(())
}

/// Fleet mode: this daemon's row in `hosts` says it is alive (`check` lists the live hosts);
/// until the daemon stops.
async fn host_heartbeat(store: Store, every: Duration, tasks: Tasks) {
    while crate::tasks::sleep_unless_stopped(&tasks, every).await {
        if let Err(e) = store.host_heartbeat(std::process::id()).await {
            tracing::warn!("cannot renew this host's heartbeat in the fleet ({e}); will try again");
        }
    }
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The folders directly in `dir`, sorted.
fn folders_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> =
        std::fs::read_dir(dir)?.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
    found.sort();
    Ok(found)
}
