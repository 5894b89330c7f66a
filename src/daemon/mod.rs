//! The long-running service: watch the inbox, claim ready batches into work/, ship them,
//! retry what failed, and file each outcome into done/, rejected/ or failed/.
//! Shutdown is a parameter (a future), so tests and `main` each bring their own.

mod claim;
mod inbox;
mod outcome;
mod systemd;
mod watch;

pub use claim::{move_unique, same_filesystem};
pub use inbox::is_ignored;
pub use outcome::{ERRORS_FILE, FAILED_FILE, RECEIPT_FILE, REJECTED_FILE};

use crate::batch::State;
use crate::config::{Loaded, PathsConfig, Readiness, RetryConfig, SftpConfig, WatchConfig};
use crate::deliver::{self, Outcome, Shipper};
use crate::store::Store;
use crate::validate;
use anyhow::Context as _;
use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long in-flight uploads get to reach a safe point after SIGTERM.
pub const SHUTDOWN_GRACE_SECS: u64 = 30;
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Everything a batch task needs; shared by all of them.
struct Context {
    store: Store,
    sftp: SftpConfig,
    retry: RetryConfig,
    paths: PathsConfig,
    watch: WatchConfig,
    stop: Arc<AtomicBool>,
}

pub struct Daemon {
    ctx: Arc<Context>,
    tasks: JoinSet<PathBuf>,
    running: HashSet<PathBuf>,
    settle: inbox::Settle,
    inbox_missing: bool,
}

/// What one step did and when the next is due at the latest.
#[derive(Debug, Default)]
pub struct Step {
    pub claimed: usize,
    pub resumed: usize,
    pub wake_at: Option<Instant>,
}

impl Daemon {
    /// Checks the folders and opens the store; refuses to start with a clear message otherwise.
    pub async fn start(loaded: &Loaded) -> anyhow::Result<Daemon> {
        let paths = loaded.paths()?.clone();
        let sftp = loaded.sftp()?.clone();
        prepare_folders(&paths)?;
        let store = Store::open(&loaded.config.state.database).await?;
        let ctx = Context {
            store,
            sftp,
            retry: loaded.config.retry.clone(),
            paths,
            watch: loaded.config.watch.clone(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        Ok(Daemon {
            ctx: Arc::new(ctx),
            tasks: JoinSet::new(),
            running: HashSet::new(),
            settle: inbox::Settle::default(),
            inbox_missing: false,
        })
    }

    pub fn store(&self) -> &Store {
        &self.ctx.store
    }

    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// Resumes what is in work/ (recovered after a restart, due for a retry, or sent back by
    /// `retry`), then claims ready batches from the inbox while there is capacity.
    pub async fn step(&mut self) -> anyhow::Result<Step> {
        let mut step = Step::default();
        if self.ctx.stop.load(Ordering::SeqCst) {
            return Ok(step);
        }
        step.resumed = self.resume_work(&mut step).await?;
        self.claim_ready(&mut step);
        Ok(step)
    }

    async fn resume_work(&mut self, step: &mut Step) -> anyhow::Result<usize> {
        let mut resumed = 0;
        let dirs = std::fs::read_dir(&self.ctx.paths.work).with_context(|| format!("reading {}", self.ctx.paths.work.display()))?;
        let mut dirs: Vec<PathBuf> = dirs.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            if self.running.contains(&dir)
                || self.running.len() >= self.ctx.watch.max_parallel_batches
                || inbox::is_ignored(&outcome::folder_name(&dir))
            {
                continue;
            }
            if let Some(record) = self.ctx.store.latest_for_source(&deliver::source_path(&dir)).await? {
                if record.state == State::RetryWait {
                    let due = deliver::wait_for(&record);
                    if !due.is_zero() {
                        let at = Instant::now() + due;
                        step.wake_at = Some(step.wake_at.map_or(at, |w| w.min(at)));
                        continue;
                    }
                }
            }
            self.spawn(dir);
            resumed += 1;
        }
        Ok(resumed)
    }

    fn claim_ready(&mut self, step: &mut Step) {
        let ctx = self.ctx.clone();
        let paths = &ctx.paths;
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
        let watch = &ctx.watch;
        let now = Instant::now();
        let (ready, next) =
            self.settle.ready(&paths.inbox, &entries, watch.ready, &watch.marker, Duration::from_secs(watch.settle_secs), now);
        if let Some(next) = next {
            step.wake_at = Some(step.wake_at.map_or(next, |w| w.min(next)));
        }
        for entry in ready {
            if self.running.len() >= watch.max_parallel_batches {
                break;
            }
            let src = paths.inbox.join(&entry.name);
            self.settle.forget(&entry.name);
            if !entry.is_dir {
                match outcome::file_loose(&src, &paths.rejected) {
                    Ok(to) => {
                        tracing::warn!(file = %entry.name, to = %to.display(), "a loose file in the inbox is not a batch; filed with a report")
                    }
                    Err(e) => tracing::error!(file = %entry.name, "cannot move a loose file out of the inbox: {e}"),
                }
                continue;
            }
            match claim::move_unique(&src, &paths.work, &entry.name) {
                Ok(dir) => {
                    tracing::info!(batch = %outcome::folder_name(&dir), "claimed from the inbox");
                    step.claimed += 1;
                    self.spawn(dir);
                }
                Err(e) => tracing::error!(batch = %entry.name, "cannot claim into {}: {e}", paths.work.display()),
            }
        }
    }

    fn spawn(&mut self, dir: PathBuf) {
        self.running.insert(dir.clone());
        let ctx = self.ctx.clone();
        self.tasks.spawn(async move {
            if let Err(e) = process(&ctx, &dir).await {
                tracing::error!(batch = %outcome::folder_name(&dir), "{e:#}");
            }
            dir
        });
    }

    /// One line for `systemctl status`.
    pub async fn status_line(&self) -> String {
        let counts = self.ctx.store.counts().await.unwrap_or_default();
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

    /// Waits for one batch task to end; `None` when none is running.
    pub async fn join_next(&mut self) -> Option<PathBuf> {
        let dir = self.tasks.join_next().await?.ok()?;
        self.running.remove(&dir);
        Some(dir)
    }

    /// Stops claiming, lets uploads reach a file boundary (at most `grace`), and waits.
    pub async fn shutdown(&mut self, grace: Duration) {
        self.ctx.stop.store(true, Ordering::SeqCst);
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
    Ok(())
}

fn prepare_folders(paths: &PathsConfig) -> anyhow::Result<()> {
    if !paths.inbox.is_dir() {
        anyhow::bail!("inbox {} does not exist or is not a folder; create it (or mount the share) and start again", paths.inbox.display());
    }
    for dir in [&paths.work, &paths.done, &paths.rejected, &paths.failed] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if !claim::same_filesystem(&paths.inbox, &paths.work)? {
        anyhow::bail!(
            "inbox {} and work {} are on different filesystems; claiming a batch must be an atomic rename: put work on the same filesystem as the inbox",
            paths.inbox.display(),
            paths.work.display()
        );
    }
    Ok(())
}

/// One batch in work/: validate, record, ship, and file the outcome.
async fn process(ctx: &Context, dir: &Path) -> anyhow::Result<()> {
    let marker = ctx.watch.marker.clone();
    let path = dir.to_path_buf();
    let checked = tokio::task::spawn_blocking(move || validate::validate(&path, Some(&marker))).await??;
    if let Some(record) = ctx.store.latest_for_source(&deliver::source_path(dir)).await? {
        if file_finished(ctx, dir, &record, &checked.report).await? {
            return Ok(());
        }
    }
    let record = deliver::admit(&ctx.store, dir, &checked).await?;
    if !checked.report.valid {
        let to = outcome::file_rejected(dir, &ctx.paths.rejected, &checked.report)?;
        ctx.store.set_filed_path(record.id, &to.display().to_string()).await?;
        tracing::info!(batch = %record.name, id = record.id, errors = checked.report.errors.len(), to = %to.display(), "rejected: report written");
        return Ok(());
    }
    let shipper = Shipper { store: &ctx.store, sftp: &ctx.sftp, retry: &ctx.retry, stop: ctx.stop.clone() };
    match shipper.attempt(record, dir, &checked.files, false).await? {
        Outcome::Submitted { record, receipt } => {
            let to = outcome::file_done(dir, &ctx.paths.done, &record, &receipt)?;
            ctx.store.set_filed_path(record.id, &to.display().to_string()).await?;
            tracing::info!(batch = %record.name, id = record.id, remote_uuid = %receipt.remote_dir, to = %to.display(), "filed with its receipt");
        }
        Outcome::Duplicate { record, .. } => {
            let reason = record.last_error.clone().unwrap_or_default();
            let to = outcome::file_duplicate(dir, &ctx.paths.rejected, &checked.report, &reason)?;
            ctx.store.set_filed_path(record.id, &to.display().to_string()).await?;
            tracing::info!(batch = %record.name, id = record.id, to = %to.display(), "rejected as a duplicate");
        }
        Outcome::Failed { record } => {
            let to = outcome::file_failed(dir, &ctx.paths.failed, &record)?;
            ctx.store.set_filed_path(record.id, &to.display().to_string()).await?;
            tracing::info!(batch = %record.name, id = record.id, to = %to.display(), "filed as failed");
        }
        Outcome::RetryWait { .. } | Outcome::Interrupted { .. } => {}
    }
    Ok(())
}

/// A batch whose outcome was recorded but not yet filed (a crash in between): files it now and
/// returns true; false when the batch is still to be shipped.
async fn file_finished(ctx: &Context, dir: &Path, record: &crate::store::BatchRecord, report: &validate::Report) -> anyhow::Result<bool> {
    let to = match record.state {
        State::Submitted => {
            let files = ctx.store.files(record.id).await?;
            let hashes = files.into_iter().filter_map(|(path, _, sha, _)| sha.map(|s| (path, s))).collect();
            let receipt = crate::receipt::Receipt::of(record, record.remote_dir.clone().unwrap_or_default(), hashes, 0.0);
            outcome::file_done(dir, &ctx.paths.done, record, &receipt)?
        }
        State::Failed => outcome::file_failed(dir, &ctx.paths.failed, record)?,
        State::Rejected if record.last_error.as_deref().is_some_and(|e| e.starts_with("duplicate of")) => {
            outcome::file_duplicate(dir, &ctx.paths.rejected, report, record.last_error.as_deref().unwrap_or_default())?
        }
        State::Rejected => outcome::file_rejected(dir, &ctx.paths.rejected, report)?,
        _ => return Ok(false),
    };
    ctx.store.set_filed_path(record.id, &to.display().to_string()).await?;
    tracing::info!(batch = %record.name, id = record.id, state = %record.state, "filed after a restart");
    Ok(true)
}
