//! The durable record: batches, their files and the audit trail, through sqlx in SQLite (one
//! host) or PostgreSQL (a fleet of hosts sharing it). One set of statements serves both.
//! **Invariants:** the only module with SQL. A state changes only through `transition`, which
//! checks the move is allowed, applies it only if the batch is still in the expected state and
//! no other host holds a live lease on it (fleet mode: this process's fencing token, checked in
//! the same statement), appends an event and logs one line, all in one transaction.

use crate::batch::{Kind, RejectReason, State};
use crate::validate::BatchFile;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, PgPool, SqlitePool};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// How long a PostgreSQL connection may take to come (a restarting server: the step retries).
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per multi-row statement, well under SQLite's limit of bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the state database {path}: {source}; check [state] database (SQLite: its folder exists and is writable by this user; PostgreSQL: the server is up, the user, and the password in [state] password_file or JUMIO_BATCHD_DATABASE_PASSWORD)"
    )]
    Open { path: String, source: sqlx::Error },
    #[error("cannot migrate the state database {path}: {source}")]
    Migrate { path: String, source: sqlx::migrate::MigrateError },
    #[error("state database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("bug: batch {id} may not go from {from} to {to}")]
    IllegalTransition { id: i64, from: State, to: State },
    #[error("cannot read the database password from {path}: {source}; check [state] password_file")]
    Password { path: String, source: std::io::Error },
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct BatchRecord {
    pub id: i64,
    pub name: String,
    pub source_path: String,
    pub content_key: String,
    pub fingerprint: Option<String>,
    pub state: State,
    pub remote_uuid: Option<String>,
    pub remote_dir: Option<String>,
    pub rows: i64,
    pub files: i64,
    pub bytes: i64,
    pub bytes_sent: i64,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub upload_started_at: Option<DateTime<Utc>>,
    /// Where the daemon moved the folder once finished (done/, rejected/ or failed/).
    pub filed_path: Option<String>,
    pub reject_reason: Option<RejectReason>,
    /// The batch this one duplicates (`reject_reason = duplicate`).
    pub duplicate_of: Option<i64>,
    /// Where it goes and what it was made from.
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub origin: Origin,
    /// Fleet mode: the host working the batch, while `lease_expires_at` is in the future.
    /// (Defaults: `status` may read a database an older daemon still runs on, unmigrated.)
    #[sqlx(default)]
    pub holder: Option<String>,
    #[serde(skip)]
    #[sqlx(default)]
    pub lease_token: i64,
    #[sqlx(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

impl BatchRecord {
    /// The host holding a live lease on this batch (fleet mode), by this machine's clock.
    pub fn held_by(&self) -> Option<&str> {
        self.holder.as_deref().filter(|_| self.lease_expires_at.is_some_and(|t| t > Utc::now()))
    }
}

/// A daemon of the fleet, as it registered itself.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Host {
    pub host_id: String,
    pub pid: i64,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
}

/// Fleet mode: who this process is and how long its leases last.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub host: String,
    pub lease: Duration,
}

/// Where a batch goes and what it was made from: fixed when it is recorded.
#[derive(Debug, Clone, Default, FromRow, Serialize)]
pub struct Origin {
    /// The route it goes to (`None`: a config without routes).
    pub route: Option<String>,
    /// `user@host:port` of that route: the duplicate guard looks within one tenant.
    pub tenant: Option<String>,
    /// The batch this one was made from, and how.
    pub parent_id: Option<i64>,
    pub kind: Option<Kind>,
    /// The parent's data rows this one holds (1-based, inclusive).
    pub first_row: Option<i64>,
    pub last_row: Option<i64>,
    /// A part's number, from 1.
    pub part: Option<i64>,
}

impl Origin {
    /// A batch made from `parent`'s rows `first..=last`: it goes to the parent's tenant.
    pub fn made_from(parent: &BatchRecord, kind: Kind, first: usize, last: usize, part: Option<i64>) -> Origin {
        Origin {
            route: parent.origin.route.clone(),
            tenant: parent.origin.tenant.clone(),
            parent_id: Some(parent.id),
            kind: Some(kind),
            first_row: Some(first as i64),
            last_row: Some(last as i64),
            part,
        }
    }
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub from_state: Option<State>,
    pub to_state: State,
    pub attempt: i64,
    pub detail: Option<String>,
    /// Fleet mode: the host that made the change.
    #[sqlx(default)]
    pub host: Option<String>,
}

/// What validation found in a batch folder: its content key, counts and the files to ship.
pub struct Contents<'a> {
    pub content_key: &'a str,
    pub rows: usize,
    pub files: usize,
    pub bytes: u64,
    pub file_list: &'a [BatchFile],
    /// The sha256 of each file as validation read it (empty when not taken).
    pub sha256: &'a BTreeMap<String, String>,
}

/// What a transition changes besides the state. `None` leaves a field as it is, except
/// `last_error` and `next_attempt_at`, which every transition sets (clearing them by default).
#[derive(Debug, Default, Clone)]
pub struct Change {
    pub remote_uuid: Option<String>,
    pub remote_dir: Option<String>,
    pub fingerprint: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// This transition starts an upload attempt.
    pub count_attempt: bool,
    /// The batch folder moved (`retry` brings it back into work/).
    pub source_path: Option<String>,
    /// Apply only if no other batch with the same content is uploading or waiting to retry
    /// (checked in the same statement, so two identical batches cannot both start).
    pub only_if_content_idle: bool,
    pub reject_reason: Option<RejectReason>,
    pub duplicate_of: Option<i64>,
}

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store has: one text of SQL, compiled
/// for both databases (every statement uses `$N` parameters, which both accept).
macro_rules! on_db {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// The condition a change of batch `id` must meet (`$n` is this process's fencing token, or
/// NULL): with a token, the live lease must still be that token's; without one, no host may
/// hold a live lease on it. Always true in SQLite, where no row has a lease.
fn fenced(n: usize) -> String {
    format!(
        "(CAST(${n} AS BIGINT) IS NULL AND (lease_expires_at IS NULL OR lease_expires_at < CURRENT_TIMESTAMP)
          OR lease_token = ${n} AND lease_expires_at > CURRENT_TIMESTAMP)"
    )
}

macro_rules! insert_discovered {
    ($tx:expr, $name:expr, $source_path:expr, $origin:expr, $host:expr) => {{
        let now = Utc::now();
        let origin: &Origin = $origin;
        let record: BatchRecord = sqlx::query_as(
            "INSERT INTO batches (name, source_path, content_key, state, created_at, updated_at,
                                  route, tenant, parent_id, kind, first_row, last_row, part)
             VALUES ($1, $2, '', 'discovered', $3, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
        )
        .bind($name)
        .bind($source_path)
        .bind(now)
        .bind(&origin.route)
        .bind(&origin.tenant)
        .bind(origin.parent_id)
        .bind(origin.kind)
        .bind(origin.first_row)
        .bind(origin.last_row)
        .bind(origin.part)
        .fetch_one(&mut *$tx)
        .await?;
        sqlx::query("INSERT INTO events (batch_id, at, from_state, to_state, attempt, host) VALUES ($1, $2, NULL, 'discovered', 0, $3)")
            .bind(record.id)
            .bind(now)
            .bind($host)
            .execute(&mut *$tx)
            .await?;
        record
    }};
}

macro_rules! set_contents {
    ($tx:expr, $id:expr, $contents:expr) => {{
        let (id, contents): (i64, &Contents<'_>) = ($id, $contents);
        sqlx::query("UPDATE batches SET content_key = $1, rows = $2, files = $3, bytes = $4 WHERE id = $5")
            .bind(contents.content_key)
            .bind(contents.rows as i64)
            .bind(contents.files as i64)
            .bind(contents.bytes as i64)
            .bind(id)
            .execute(&mut *$tx)
            .await?;
        for chunk in contents.file_list.chunks(ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::new("INSERT INTO files (batch_id, path, size, sha256) ");
            insert.push_values(chunk, |mut row, file| {
                row.push_bind(id).push_bind(&file.path).push_bind(file.size as i64).push_bind(contents.sha256.get(&file.path));
            });
            insert.build().execute(&mut *$tx).await?;
        }
    }};
}

#[derive(Clone)]
pub struct Store {
    db: Db,
    fleet: Option<Fleet>,
    /// The leases this process holds: batch id → fencing token.
    fences: Arc<Mutex<HashMap<i64, i64>>>,
}

impl Store {
    /// The database `[state]` names, migrated: a SQLite file, or PostgreSQL (fleet mode, with
    /// `fleet`'s host id and lease length).
    pub async fn connect(state: &crate::config::StateConfig, fleet: &crate::config::FleetConfig) -> Result<Store, StoreError> {
        match state.postgres_url() {
            None => Store::open(&state.database).await,
            Some(url) => {
                let shown = state.shown();
                let mut options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Open { path: shown.clone(), source })?;
                if let Some(password) = database_password(state)? {
                    options = options.password(&password);
                }
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(PG_ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(|source| StoreError::Open { path: shown.clone(), source })?;
                PG_MIGRATOR.run(&pool).await.map_err(|source| StoreError::Migrate { path: shown, source })?;
                let fleet = Fleet { host: fleet.host_id.clone(), lease: Duration::from_secs(fleet.lease_secs) };
                Ok(Store { db: Db::Postgres(pool), fleet: Some(fleet), fences: Arc::default() })
            }
        }
    }

    /// Opens (creating if missing) and migrates a SQLite database: WAL, synchronous=FULL, so a
    /// committed transition survives power loss (a lost commit could mean a duplicate).
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { path: shown.clone(), source })?;
        MIGRATOR.run(&pool).await.map_err(|source| StoreError::Migrate { path: shown, source })?;
        Ok(Store { db: Db::Sqlite(pool), fleet: None, fences: Arc::default() })
    }

    /// Opens an existing SQLite database for reading only (safe while the daemon runs).
    pub async fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new().filename(path).read_only(true).busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        Ok(Store { db: Db::Sqlite(pool), fleet: None, fences: Arc::default() })
    }

    /// Fleet mode (PostgreSQL): this host's id and lease length.
    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    pub async fn close(&self) {
        on_db!(self, |pool| pool.close().await)
    }

    /// The applied migrations: (version, description), oldest first.
    pub async fn migrations(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let sql = "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await?))
    }

    /// The migrations this build knows, for comparison with `migrations`.
    pub fn known_migrations(&self) -> usize {
        match self.db {
            Db::Sqlite(_) => MIGRATOR.iter().count(),
            Db::Postgres(_) => PG_MIGRATOR.iter().count(),
        }
    }

    fn fence(&self, id: i64) -> Option<i64> {
        self.fences.lock().unwrap_or_else(|p| p.into_inner()).get(&id).copied()
    }

    fn host(&self) -> Option<&str> {
        self.fleet.as_ref().map(|f| f.host.as_str())
    }

    /// A batch seen for the first time by `send`: recorded as discovered with its contents.
    pub async fn insert(&self, name: &str, source_path: &str, origin: &Origin, contents: &Contents<'_>) -> Result<BatchRecord, StoreError> {
        let record = on_db!(self, |pool| {
            let mut tx = pool.begin().await?;
            let record = insert_discovered!(&mut *tx, name, source_path, origin, self.host());
            set_contents!(&mut *tx, record.id, contents);
            tx.commit().await?;
            record
        });
        let record = self.get(record.id).await?.unwrap_or(record);
        log_transition(&record, None);
        Ok(record)
    }

    /// A batch claimed from the inbox: recorded as discovered before its folder moves, at the
    /// path `folder_for(id)` that carries its id. Its contents are recorded once validated.
    /// Fleet mode: the claiming host holds its lease from the start (the token is returned).
    pub async fn claim(
        &self,
        name: &str,
        origin: &Origin,
        folder_for: impl FnOnce(i64) -> String,
    ) -> Result<(BatchRecord, Option<i64>), StoreError> {
        let (record, token) = match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let record = insert_discovered!(&mut *tx, name, "", origin, self.host());
                let record: BatchRecord = sqlx::query_as("UPDATE batches SET source_path = $1 WHERE id = $2 RETURNING *")
                    .bind(folder_for(record.id))
                    .bind(record.id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                (record, None)
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let record = insert_discovered!(&mut *tx, name, "", origin, self.host());
                let record: BatchRecord = sqlx::query_as(
                    "UPDATE batches SET source_path = $1, holder = $3, lease_token = lease_token + 1,
                            lease_expires_at = CURRENT_TIMESTAMP + make_interval(secs => $4)
                      WHERE id = $2 RETURNING *",
                )
                .bind(folder_for(record.id))
                .bind(record.id)
                .bind(self.host())
                .bind(self.lease_secs())
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                self.fences.lock().unwrap_or_else(|p| p.into_inner()).insert(record.id, record.lease_token);
                let token = record.lease_token;
                (record, Some(token))
            }
        };
        log_transition(&record, None);
        Ok((record, token))
    }

    fn lease_secs(&self) -> f64 {
        self.fleet.as_ref().map_or(0.0, |f| f.lease.as_secs_f64())
    }

    /// Fleet mode: takes the lease of batch `id` if no host holds a live one. `Ok(token)`, or
    /// `Err((holder, until))` of the host that holds it.
    pub async fn acquire_lease(&self, id: i64) -> Result<Result<i64, (Option<String>, Option<DateTime<Utc>>)>, StoreError> {
        let Db::Postgres(pool) = &self.db else { panic!("bug: leases are for fleet mode") };
        let token: Option<i64> = sqlx::query_scalar(
            "UPDATE batches SET holder = $2, lease_token = lease_token + 1,
                    lease_expires_at = CURRENT_TIMESTAMP + make_interval(secs => $3)
              WHERE id = $1 AND (lease_expires_at IS NULL OR lease_expires_at < CURRENT_TIMESTAMP)
              RETURNING lease_token",
        )
        .bind(id)
        .bind(self.host())
        .bind(self.lease_secs())
        .fetch_optional(pool)
        .await?;
        match token {
            Some(token) => {
                self.fences.lock().unwrap_or_else(|p| p.into_inner()).insert(id, token);
                Ok(Ok(token))
            }
            None => {
                let held: Option<(Option<String>, Option<DateTime<Utc>>)> =
                    sqlx::query_as("SELECT holder, lease_expires_at FROM batches WHERE id = $1").bind(id).fetch_optional(pool).await?;
                Ok(Err(held.unwrap_or_default()))
            }
        }
    }

    /// Fleet mode: extends the lease `token` of batch `id` by the lease length from now; false
    /// when it is no longer this token's (expired, or taken over).
    pub async fn renew_lease(&self, id: i64, token: i64) -> Result<bool, StoreError> {
        let Db::Postgres(pool) = &self.db else { return Ok(true) };
        let done = sqlx::query(
            "UPDATE batches SET lease_expires_at = CURRENT_TIMESTAMP + make_interval(secs => $3)
              WHERE id = $1 AND lease_token = $2 AND lease_expires_at > CURRENT_TIMESTAMP",
        )
        .bind(id)
        .bind(token)
        .bind(self.lease_secs())
        .execute(pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fleet mode: gives the lease back (a no-op once another host took it over). This process
    /// no longer changes the batch either way.
    pub async fn release_lease(&self, id: i64, token: i64) -> Result<(), StoreError> {
        self.forget_fence(id, token);
        let Db::Postgres(pool) = &self.db else { return Ok(()) };
        sqlx::query("UPDATE batches SET holder = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_token = $2")
            .bind(id)
            .bind(token)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// This process stops changing batch `id` under `token`.
    pub fn forget_fence(&self, id: i64, token: i64) {
        let mut fences = self.fences.lock().unwrap_or_else(|p| p.into_inner());
        if fences.get(&id) == Some(&token) {
            fences.remove(&id);
        }
    }

    /// Fleet mode: registers this daemon under its host id, unless a daemon with that id beat
    /// within `stale`: then that one is returned and nothing changes.
    pub async fn register_host(&self, pid: u32, stale: Duration) -> Result<Option<Host>, StoreError> {
        let (Db::Postgres(pool), Some(host)) = (&self.db, self.host()) else { return Ok(None) };
        let done = sqlx::query(
            "INSERT INTO hosts (host_id, pid, version, started_at, heartbeat_at)
             VALUES ($1, $2, $3, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)
             ON CONFLICT (host_id) DO UPDATE SET pid = excluded.pid, version = excluded.version,
                    started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at
              WHERE hosts.heartbeat_at < CURRENT_TIMESTAMP - make_interval(secs => $4)",
        )
        .bind(host)
        .bind(i64::from(pid))
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(stale.as_secs_f64())
        .execute(pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(None);
        }
        Ok(sqlx::query_as("SELECT * FROM hosts WHERE host_id = $1").bind(host).fetch_optional(pool).await?)
    }

    /// Fleet mode: this daemon is alive (its row's heartbeat), while it is still this process's.
    pub async fn host_heartbeat(&self, pid: u32) -> Result<(), StoreError> {
        let (Db::Postgres(pool), Some(host)) = (&self.db, self.host()) else { return Ok(()) };
        sqlx::query("UPDATE hosts SET heartbeat_at = CURRENT_TIMESTAMP WHERE host_id = $1 AND pid = $2")
            .bind(host)
            .bind(i64::from(pid))
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Fleet mode: this daemon stops.
    pub async fn unregister_host(&self, pid: u32) -> Result<(), StoreError> {
        let (Db::Postgres(pool), Some(host)) = (&self.db, self.host()) else { return Ok(()) };
        sqlx::query("DELETE FROM hosts WHERE host_id = $1 AND pid = $2").bind(host).bind(i64::from(pid)).execute(pool).await?;
        Ok(())
    }

    /// Fleet mode: the daemons that beat within `stale`, by host id.
    pub async fn live_hosts(&self, stale: Duration) -> Result<Vec<Host>, StoreError> {
        let Db::Postgres(pool) = &self.db else { return Ok(Vec::new()) };
        Ok(sqlx::query_as("SELECT * FROM hosts WHERE heartbeat_at >= CURRENT_TIMESTAMP - make_interval(secs => $1) ORDER BY host_id")
            .bind(stale.as_secs_f64())
            .fetch_all(pool)
            .await?)
    }

    /// Replaces what is recorded of a batch's contents (validation ran again on its folder).
    pub async fn record_contents(&self, id: i64, contents: &Contents<'_>) -> Result<(), StoreError> {
        on_db!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM files WHERE batch_id = $1").bind(id).execute(&mut *tx).await?;
            set_contents!(&mut *tx, id, contents);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Forgets a claim whose folder never reached work/ (pulled back, or a crash in between; in
    /// a fleet, another host renamed it first): this process's own claim, even one whose lease
    /// ran out meanwhile, or one nobody holds; never one another host is claiming right now.
    pub async fn forget_unclaimed(&self, id: i64) -> Result<bool, StoreError> {
        let sql = "DELETE FROM batches WHERE id = $1 AND state = 'discovered'
                     AND (lease_token = $2 OR lease_expires_at IS NULL OR lease_expires_at < CURRENT_TIMESTAMP)";
        let fence = self.fence(id);
        let forgotten = on_db!(self, |pool| sqlx::query(sql).bind(id).bind(fence).execute(pool).await?.rows_affected());
        if let Some(token) = fence {
            self.forget_fence(id, token);
        }
        Ok(forgotten == 1)
    }

    /// Moves batch `id` from `from` to `to` if it is still in `from` (and, in fleet mode, this
    /// process's lease on it is live, or nobody's is); returns the updated record, or `None` when
    /// another actor moved it first or the lease was lost.
    pub async fn transition(&self, id: i64, from: State, to: State, change: Change) -> Result<Option<BatchRecord>, StoreError> {
        if !from.can_become(to) {
            return Err(StoreError::IllegalTransition { id, from, to });
        }
        let now = Utc::now();
        let sql = format!(
            "UPDATE batches SET
                state = $1, updated_at = $2,
                remote_uuid = COALESCE(remote_uuid, $3),
                remote_dir = COALESCE($4, remote_dir),
                source_path = COALESCE($12, source_path),
                fingerprint = COALESCE($5, fingerprint),
                last_error = $6,
                next_attempt_at = $7,
                attempts = attempts + $8,
                submitted_at = CASE WHEN $1 = 'submitted' THEN $2 ELSE submitted_at END,
                upload_started_at = CASE WHEN $1 = 'uploading' THEN $2 ELSE upload_started_at END,
                reject_reason = COALESCE($13, reject_reason),
                duplicate_of = COALESCE($14, duplicate_of)
             WHERE id = $9 AND state = $10 AND {}
               AND ($11 = 0 OR NOT EXISTS (SELECT 1 FROM batches o WHERE o.content_key = batches.content_key
                                           AND o.id != batches.id AND o.state IN ('uploading', 'retry_wait')
                                           AND (o.tenant IS NULL OR batches.tenant IS NULL OR o.tenant = batches.tenant)))
             RETURNING *",
            fenced(15)
        );
        let fence = self.fence(id);
        let record: Option<BatchRecord> = on_db!(self, |pool| {
            let mut tx = pool.begin().await?;
            if change.only_if_content_idle && self.fleet.is_some() {
                // PostgreSQL's READ COMMITTED would let two transactions both find "no other
                // batch with this content on its way": a transaction-scoped advisory lock makes
                // them take turns. (SQLite serialises every writer already.)
                sqlx::query("SELECT pg_advisory_xact_lock(7419530001)").execute(&mut *tx).await?;
            }
            let record: Option<BatchRecord> = sqlx::query_as(&sql)
                .bind(to)
                .bind(now)
                .bind(&change.remote_uuid)
                .bind(&change.remote_dir)
                .bind(&change.fingerprint)
                .bind(&change.last_error)
                .bind(change.next_attempt_at)
                .bind(i64::from(change.count_attempt))
                .bind(id)
                .bind(from)
                .bind(i64::from(change.only_if_content_idle))
                .bind(&change.source_path)
                .bind(change.reject_reason)
                .bind(change.duplicate_of)
                .bind(fence)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(record) = &record {
                sqlx::query(
                    "INSERT INTO events (batch_id, at, from_state, to_state, attempt, detail, host) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(id)
                .bind(now)
                .bind(from)
                .bind(to)
                .bind(record.attempts)
                .bind(&change.last_error)
                .bind(self.host())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            record
        });
        let Some(record) = record else { return Ok(None) };
        log_transition(&record, Some(from));
        Ok(Some(record))
    }

    pub async fn get(&self, id: i64) -> Result<Option<BatchRecord>, StoreError> {
        Ok(on_db!(self, |pool| sqlx::query_as("SELECT * FROM batches WHERE id = $1").bind(id).fetch_optional(pool).await?))
    }

    /// The newest batch with this name (or this id, when `key` is a number).
    pub async fn find(&self, key: &str) -> Result<Option<BatchRecord>, StoreError> {
        let id = key.parse::<i64>().unwrap_or(-1);
        let sql = "SELECT * FROM batches WHERE id = $1 OR name = $2 ORDER BY id DESC LIMIT 1";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).bind(id).bind(key).fetch_optional(pool).await?))
    }

    /// An unfinished batch from this folder with this content: a crashed, interrupted or failed
    /// run, which must resume into its own remote folder (a failed one may even hold DONE).
    pub async fn find_unfinished(
        &self,
        source_path: &str,
        content_key: &str,
        tenant: Option<&str>,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let sql = "SELECT * FROM batches WHERE source_path = $1 AND content_key = $2 AND (tenant IS NULL OR tenant = $3)
                     AND state IN ('discovered', 'validated', 'uploading', 'retry_wait', 'failed') ORDER BY id DESC LIMIT 1";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).bind(source_path).bind(content_key).bind(tenant).fetch_optional(pool).await?))
    }

    /// The newest submitted batch from this folder with this content: `send` run again.
    pub async fn submitted_from(
        &self,
        source_path: &str,
        content_key: &str,
        tenant: Option<&str>,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let sql = "SELECT * FROM batches WHERE source_path = $1 AND (content_key = $2 OR fingerprint = $2) AND state = 'submitted'
                     AND (tenant IS NULL OR tenant = $3) ORDER BY id DESC LIMIT 1";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).bind(source_path).bind(content_key).bind(tenant).fetch_optional(pool).await?))
    }

    /// The unfinished batch whose folder is `source_path`: a folder left in work/ by a version
    /// that did not put the record's id into the folder's name.
    pub async fn unfinished_at(&self, source_path: &str) -> Result<Option<BatchRecord>, StoreError> {
        let sql =
            "SELECT * FROM batches WHERE source_path = $1 AND state NOT IN ('submitted', 'rejected', 'failed') ORDER BY id DESC LIMIT 1";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).bind(source_path).fetch_optional(pool).await?))
    }

    /// The folder of a batch moved (a legacy folder adopted into its id-carrying name).
    pub async fn set_source_path(&self, id: i64, path: &str) -> Result<(), StoreError> {
        let sql = format!("UPDATE batches SET source_path = $1 WHERE id = $2 AND {}", fenced(3));
        let fence = self.fence(id);
        on_db!(self, |pool| sqlx::query(&sql).bind(path).bind(id).bind(fence).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Other batches for the same tenant with the same content that are submitted or on their
    /// way (the fingerprint column finds batches recorded before the content key was the full
    /// digest; a batch recorded before tenants were, counts for every tenant).
    pub async fn same_content(&self, content_key: &str, except_id: i64, tenant: Option<&str>) -> Result<Vec<BatchRecord>, StoreError> {
        let sql = "SELECT * FROM batches WHERE (content_key = $1 OR fingerprint = $1) AND id != $2
                     AND state IN ('uploading', 'retry_wait', 'submitted')
                     AND (tenant IS NULL OR CAST($3 AS TEXT) IS NULL OR tenant = $3) ORDER BY id";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).bind(content_key).bind(except_id).bind(tenant).fetch_all(pool).await?))
    }

    /// When the newest submitted batch was submitted.
    pub async fn last_submitted_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = "SELECT MAX(submitted_at) FROM batches WHERE state = 'submitted'";
        Ok(on_db!(self, |pool| sqlx::query_scalar(sql).fetch_one(pool).await?))
    }

    /// Every tenant a batch was recorded for.
    pub async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT DISTINCT tenant FROM batches WHERE tenant IS NOT NULL ORDER BY tenant";
        Ok(on_db!(self, |pool| sqlx::query_scalar(sql).fetch_all(pool).await?))
    }

    /// The batches made from `parent` (resubmissions and parts), oldest first.
    pub async fn children(&self, parent: i64) -> Result<Vec<BatchRecord>, StoreError> {
        let sql = "SELECT * FROM batches WHERE parent_id = $1 ORDER BY id";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).bind(parent).fetch_all(pool).await?))
    }

    /// The newest record of part `part` of `parent`, if one was made.
    pub async fn part(&self, parent: i64, part: i64) -> Result<Option<BatchRecord>, StoreError> {
        let sql = "SELECT * FROM batches WHERE parent_id = $1 AND kind = 'part' AND part = $2 ORDER BY id DESC LIMIT 1";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).bind(parent).bind(part).fetch_optional(pool).await?))
    }

    /// Batches in `state`, oldest first.
    pub async fn in_state(&self, state: State) -> Result<Vec<BatchRecord>, StoreError> {
        let sql = "SELECT * FROM batches WHERE state = $1 ORDER BY id";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).bind(state).fetch_all(pool).await?))
    }

    /// The most recently changed batches.
    pub async fn recent(&self, limit: i64) -> Result<Vec<BatchRecord>, StoreError> {
        let sql = "SELECT * FROM batches ORDER BY updated_at DESC, id DESC LIMIT $1";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).bind(limit).fetch_all(pool).await?))
    }

    /// Batches by state (a state with none is absent).
    pub async fn counts(&self) -> Result<BTreeMap<State, i64>, StoreError> {
        let sql = "SELECT state, COUNT(*) FROM batches GROUP BY state";
        let rows: Vec<(State, i64)> = on_db!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(rows.into_iter().collect())
    }

    pub async fn events(&self, id: i64) -> Result<Vec<Event>, StoreError> {
        let sql = "SELECT * FROM events WHERE batch_id = $1 ORDER BY id";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).bind(id).fetch_all(pool).await?))
    }

    /// Where a finished batch's folder now is.
    pub async fn set_filed_path(&self, id: i64, path: &str) -> Result<(), StoreError> {
        let sql = "UPDATE batches SET filed_path = $1 WHERE id = $2";
        on_db!(self, |pool| sqlx::query(sql).bind(path).bind(id).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Progress of an upload, for `status`.
    pub async fn set_bytes_sent(&self, id: i64, bytes_sent: u64) -> Result<(), StoreError> {
        let sql = "UPDATE batches SET bytes_sent = $1 WHERE id = $2";
        on_db!(self, |pool| sqlx::query(sql).bind(bytes_sent as i64).bind(id).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Marks files as on the server, with the sha256 of what was sent.
    pub async fn record_shipped(&self, id: i64, hashes: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let hashes: Vec<(&String, &String)> = hashes.iter().collect();
        on_db!(self, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in hashes.chunks(ROWS_PER_STATEMENT) {
                // A multi-row upsert onto rows that exist: sets sha256 and shipped in one statement.
                let mut upsert = sqlx::QueryBuilder::new("INSERT INTO files (batch_id, path, size, sha256, shipped) ");
                upsert.push_values(chunk, |mut row, (path, sha)| {
                    row.push_bind(id).push_bind(*path).push_bind(0i64).push_bind(*sha).push_bind(true);
                });
                upsert.push(" ON CONFLICT (batch_id, path) DO UPDATE SET sha256 = excluded.sha256, shipped = TRUE");
                upsert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// sha256 of a submitted batch's files, by path: what its receipt lists.
    pub async fn shipped_hashes(&self, id: i64) -> Result<BTreeMap<String, String>, StoreError> {
        self.digests(id, true).await
    }

    /// sha256 of a batch's files as they were checked (and, once shipped, as they were sent).
    pub async fn checked_hashes(&self, id: i64) -> Result<BTreeMap<String, String>, StoreError> {
        self.digests(id, false).await
    }

    async fn digests(&self, id: i64, shipped_only: bool) -> Result<BTreeMap<String, String>, StoreError> {
        let sql = "SELECT path, sha256 FROM files WHERE batch_id = $1 AND sha256 IS NOT NULL AND (shipped OR $2 = 0) ORDER BY path";
        let rows: Vec<(String, String)> =
            on_db!(self, |pool| sqlx::query_as(sql).bind(id).bind(i64::from(shipped_only)).fetch_all(pool).await?);
        Ok(rows.into_iter().collect())
    }

    /// (path, size, sha256, shipped) of a batch's files.
    pub async fn files(&self, id: i64) -> Result<Vec<(String, i64, Option<String>, bool)>, StoreError> {
        let sql = "SELECT path, size, sha256, shipped FROM files WHERE batch_id = $1 ORDER BY path";
        Ok(on_db!(self, |pool| sqlx::query_as(sql).bind(id).fetch_all(pool).await?))
    }
}

fn database_password(state: &crate::config::StateConfig) -> Result<Option<String>, StoreError> {
    if let Some(path) = &state.password_file {
        let text = std::fs::read_to_string(path).map_err(|source| StoreError::Password { path: path.display().to_string(), source })?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    Ok(std::env::var(crate::config::DATABASE_PASSWORD_ENV).ok().filter(|p| !p.is_empty()))
}

/// One INFO line per transition: names, numbers and states only, never personal data.
fn log_transition(record: &BatchRecord, from: Option<State>) {
    tracing::info!(
        batch = %record.name,
        id = record.id,
        route = record.origin.route.as_deref().unwrap_or(crate::config::DEFAULT_ROUTE),
        from = from.map(State::as_str).unwrap_or("-"),
        state = %record.state,
        remote_uuid = record.remote_uuid.as_deref().unwrap_or("-"),
        remote_dir = record.remote_dir.as_deref().unwrap_or("-"),
        attempt = record.attempts,
        error = record.last_error.as_deref().unwrap_or(""),
        "batch {} {}",
        record.name,
        record.state
    );
}
