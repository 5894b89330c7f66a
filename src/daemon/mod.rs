//! The long-running service: watch the inbox, claim ready batches into work/, ship them,
//! retry what failed, and file each outcome into done/, rejected/ or failed/.
//! Shutdown is a parameter (a future), so tests and `main` each bring their own.

mod inbox;
mod systemd;
mod watch;

pub use inbox::is_ignored;

use crate::batch::State;
use crate::config::{Loaded, PathsConfig, Readiness, WatchConfig};
use crate::folders::{self, folder_name, parse_claimed};
use crate::lifecycle::{self, Held, Lifecycle, LifecycleError, Locks, Outcome};
use crate::store::Store;
use anyhow::Context as _;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long in-flight uploads get to reach a safe point after SIGTERM.
pub const SHUTDOWN_GRACE_SECS: u64 = 30;
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A batch whose task ended in an error is left alone this long before it is tried again.
const ERROR_BACKOFF: Duration = Duration::from_secs(60);
/// A batch whose task panicked is not touched again by this process.
const NEVER_AGAIN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

type TaskResult = (i64, Result<Outcome, LifecycleError>);

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
    /// Batches this process could not handle (an error or a panic): `run --once` then fails.
    pub troubled: usize,
    settle: inbox::Settle,
    inbox_missing: bool,
    _lock: Held,
}

/// What one step did and when the next is due at the latest.
#[derive(Debug, Default)]
pub struct Step {
    pub claimed: usize,
    pub resumed: usize,
    pub wake_at: Option<Instant>,
}

impl Step {
    fn wake_by(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

impl Daemon {
    /// Takes the database's daemon lock, checks the folders and opens the store; refuses to
    /// start with a clear message otherwise.
    pub async fn start(loaded: &Loaded) -> anyhow::Result<Daemon> {
        let paths = loaded.paths()?.clone();
        let sftp = loaded.sftp()?.clone();
        let database = &loaded.config.state.database;
        let lock = match Locks::beside(database).daemon()? {
            Ok(lock) => lock,
            Err(holder) => anyhow::bail!(
                "jumio-batchd is already running as {holder} on the state database {}; stop it first (or give this one its own [state] database)",
                database.display()
            ),
        };
        prepare_folders(&paths)?;
        let store = Store::open(database).await?;
        let life = Lifecycle::new(store, &loaded.config, sftp, Arc::new(AtomicBool::new(false)));
        forget_unclaimed(&life, &paths.work).await?;
        Ok(Daemon {
            life: Arc::new(life),
            paths,
            watch: loaded.config.watch.clone(),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            task_of: HashMap::new(),
            ended: Vec::new(),
            held_back: HashMap::new(),
            troubled: 0,
            settle: inbox::Settle::default(),
            inbox_missing: false,
            _lock: lock,
        })
    }

    pub fn store(&self) -> &Store {
        &self.life.store
    }

    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// Settles the tasks that ended, resumes what is in work/ (recovered after a restart, due
    /// for a retry, or sent back by `retry`), then claims ready batches while there is capacity.
    pub async fn step(&mut self) -> anyhow::Result<Step> {
        let mut step = Step::default();
        self.settle_ended().await;
        if self.life.stop.load(Ordering::SeqCst) {
            return Ok(step);
        }
        step.resumed = self.resume_work(&mut step).await?;
        self.claim_ready(&mut step).await;
        Ok(step)
    }

    async fn resume_work(&mut self, step: &mut Step) -> anyhow::Result<usize> {
        let mut resumed = 0;
        let work = &self.paths.work;
        let dirs = std::fs::read_dir(work).with_context(|| format!("reading {}", work.display()))?;
        let mut dirs: Vec<PathBuf> = dirs.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
        dirs.sort();
        let now = Instant::now();
        for dir in dirs {
            if self.running.len() >= self.watch.max_parallel_batches {
                break;
            }
            let name = folder_name(&dir);
            if inbox::is_ignored(&name) {
                continue;
            }
            let Some((record_id, dir)) = self.identify(&dir, &name).await? else { continue };
            if self.running.contains_key(&record_id) {
                continue;
            }
            if let Some(&until) = self.held_back.get(&record_id) {
                if until > now {
                    step.wake_by(until);
                    continue;
                }
            }
            if let Some(record) = self.life.store.get(record_id).await? {
                if record.state == State::RetryWait {
                    let due = lifecycle::wait_for(&record);
                    if !due.is_zero() {
                        step.wake_by(now + due);
                        continue;
                    }
                }
            }
            self.spawn(record_id, dir);
            resumed += 1;
        }
        Ok(resumed)
    }

    /// The record a folder in work/ belongs to: by the id in its name, else adopted.
    async fn identify(&self, dir: &Path, name: &str) -> anyhow::Result<Option<(i64, PathBuf)>> {
        if let Some((id, dropped)) = parse_claimed(name) {
            if self.running.contains_key(&id) {
                return Ok(Some((id, dir.to_path_buf())));
            }
            if self.life.store.get(id).await?.is_some_and(|r| r.name == dropped) {
                return Ok(Some((id, dir.to_path_buf())));
            }
        }
        match self.life.adopt(dir, &self.paths.work).await {
            Ok(found) => Ok(found.map(|(record, to)| {
                tracing::info!(batch = %record.name, id = record.id, "a folder in work/ without its record id: adopted");
                (record.id, to)
            })),
            Err(e) => {
                tracing::error!(folder = %name, "cannot adopt a folder found in work/: {e}");
                Ok(None)
            }
        }
    }

    async fn claim_ready(&mut self, step: &mut Step) {
        let paths = self.paths.clone();
        let entries = match inbox::scan(&paths.inbox) {
            Ok(entries) => {
                if self.inbox_missing {
                    tracing::info!(inbox = %paths.inbox.display(), "inbox is readable again");
                    self.inbox_missing = false;
                }
                entries
            }
            Err(e) => {
                if !self.inbox_missing {
                    tracing::warn!(inbox = %paths.inbox.display(), "cannot read the inbox ({e}); is the share mounted? will keep trying");
                    self.inbox_missing = true;
                }
                return;
            }
        };
        let watch = &self.watch;
        let (ready, next) =
            self.settle.ready(&paths.inbox, &entries, watch.ready, &watch.marker, Duration::from_secs(watch.settle_secs), Instant::now());
        if let Some(next) = next {
            step.wake_by(next);
        }
        for entry in ready {
            if self.running.len() >= self.watch.max_parallel_batches {
                break;
            }
            let src = paths.inbox.join(&entry.name);
            self.settle.forget(&entry.name);
            if !entry.is_dir {
                match lifecycle::file_loose(&src, &paths.rejected) {
                    Ok(to) => {
                        tracing::warn!(file = %entry.name, to = %to.display(), "a loose file in the inbox is not a batch; filed with a report")
                    }
                    Err(e) => tracing::error!(file = %entry.name, "cannot move a loose file out of the inbox: {e}"),
                }
                continue;
            }
            match self.life.claim(&src, &entry.name, &paths.work).await {
                Ok(Some((record, dir))) => {
                    tracing::info!(batch = %record.name, id = record.id, "claimed from the inbox");
                    step.claimed += 1;
                    self.spawn(record.id, dir);
                }
                Ok(None) => tracing::info!(batch = %entry.name, "left the inbox before it could be claimed"),
                Err(e) => tracing::error!(batch = %entry.name, "cannot claim: {e}"),
            }
        }
    }

    fn spawn(&mut self, id: i64, dir: PathBuf) {
        self.running.insert(id, dir.clone());
        let (life, paths) = (self.life.clone(), self.paths.clone());
        let handle = self.tasks.spawn(async move { (id, life.work(id, &dir, &paths).await) });
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
                    tracing::error!(id, "{e}; will try again in {} s", ERROR_BACKOFF.as_secs());
                    self.held_back.insert(id, Instant::now() + ERROR_BACKOFF);
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

    /// One line for `systemctl status`.
    pub async fn status_line(&self) -> String {
        let counts = self.life.store.counts().await.unwrap_or_default();
        let n = |s: &str| counts.get(s).copied().unwrap_or(0);
        format!(
            "{} in flight, {} waiting to retry; {} submitted, {} rejected, {} failed in all",
            self.running.len(),
            n("retry_wait"),
            n("submitted"),
            n("rejected"),
            n("failed")
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
        self.life.stop.store(true, Ordering::SeqCst);
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

/// Claims whose folder never reached work/ (a crash between the record and the rename):
/// the folder is still in the inbox and will be claimed again under a new record.
async fn forget_unclaimed(life: &Lifecycle, work: &Path) -> anyhow::Result<()> {
    for record in life.store.in_state(State::Discovered).await? {
        let folder = Path::new(&record.source_path);
        if folder.starts_with(work) && !folder.exists() && life.store.forget_unclaimed(record.id).await? {
            tracing::info!(batch = %record.name, id = record.id, "forgot a claim whose folder never reached work/");
        }
    }
    Ok(())
}

/// Runs until `shutdown` resolves (or, with `once`, until every batch ready now is handled).
pub async fn run(loaded: &Loaded, shutdown: impl Future<Output = ()>, once: bool) -> anyhow::Result<()> {
    let mut daemon = Daemon::start(loaded).await?;
    let paths = loaded.paths()?;
    let (mut watch, mut events) = watch::InboxWatch::new(&paths.inbox, loaded.config.watch.events);
    let poll = Duration::from_secs(loaded.config.watch.poll_secs);
    let heartbeat = systemd::Heartbeat::default();
    heartbeat.beat();
    systemd::ready();
    // The loop wakes at least every poll interval; three missed wakes mean it is stuck.
    tokio::spawn(systemd::watchdog(heartbeat.clone(), poll * 3 + Duration::from_secs(30)));
    tracing::info!(inbox = %paths.inbox.display(), ready = ?loaded.config.watch.ready, events = watch.is_active(), "jumio-batchd running");
    let mut last_status = String::new();
    if once && loaded.config.watch.ready == Readiness::Settle {
        daemon.step().await?;
        tokio::time::sleep(Duration::from_secs(loaded.config.watch.settle_secs)).await;
    }
    tokio::pin!(shutdown);
    loop {
        heartbeat.beat();
        watch.ensure();
        let step = daemon.step().await?;
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
                tokio::time::sleep(DEBOUNCE).await;
                while events.try_recv().is_ok() {}
            }
            Some(_) = daemon.join_next(), if daemon.in_flight() > 0 => {}
            _ = tokio::time::sleep(wake), if !(once && daemon.in_flight() > 0) => {}
        }
    }
    daemon.store().close().await;
    tracing::info!("jumio-batchd stopped");
    if once && daemon.troubled > 0 {
        anyhow::bail!("{} batch(es) could not be handled; the log above says why", daemon.troubled);
    }
    Ok(())
}

fn prepare_folders(paths: &PathsConfig) -> anyhow::Result<()> {
    if !paths.inbox.is_dir() {
        anyhow::bail!("inbox {} does not exist or is not a folder; create it (or mount the share) and start again", paths.inbox.display());
    }
    for dir in [&paths.work, &paths.done, &paths.rejected, &paths.failed] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if !folders::same_filesystem(&paths.inbox, &paths.work)? {
        anyhow::bail!(
            "inbox {} and work {} are on different filesystems; claiming a batch must be an atomic rename: put work on the same filesystem as the inbox",
            paths.inbox.display(),
            paths.work.display()
        );
    }
    Ok(())
}
