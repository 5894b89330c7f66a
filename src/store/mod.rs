//! The durable record: batches, their files and the audit trail, through sqlx in SQLite (one
//! host) or PostgreSQL (a fleet of hosts sharing it). One set of statements serves both.
//! `record` (the plain data), `batches` (the batch queries), `fleet` (leases, hosts, the
//! database's identity and clock).
//! **Invariants:** the only module with SQL. A state changes only through `transition`, which
//! checks the move is allowed, applies it only if the batch is still in the expected state and
//! no other host holds a live lease on it (fleet mode: this process's fencing token, checked in
//! the same statement), appends an event and logs one line, all in one transaction. Every other
//! write to a batch's row is fenced the same way. An empty database is given a schema only when
//! the caller says so (`Schema::Create`). In PostgreSQL every statement is bounded: by the
//! session's own timeouts on the server, and by `PG_STATEMENT_TIMEOUT` here.

/// Runs `$body` with `$pool` bound to whichever pool the store has: one text of SQL, compiled
/// for both databases (every statement uses `$N` parameters, which both accept). PostgreSQL's
/// is bounded by `PG_STATEMENT_TIMEOUT` (a partition or a frozen server never holds us).
macro_rules! on_db {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => tokio::time::timeout(crate::store::PG_STATEMENT_TIMEOUT, async { Ok::<_, StoreError>($body) })
                .await
                .map_err(|_| StoreError::TimedOut)??,
        }
    };
}

mod batches;
mod fleet;
mod record;

pub use fleet::{Fleet, Host};
pub use record::{BatchRecord, Change, Contents, Event, Origin};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgPool, SqlitePool};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
/// How long a PostgreSQL connection may take to come (a restarting server: the step retries).
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest any PostgreSQL call may take here, the wait for a connection included.
pub(crate) const PG_STATEMENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Set on every session of ours (the server enforces them): a statement, a wait for a lock, a
/// transaction left open by a frozen host, and a peer gone silent are all bounded, so the row
/// locks and the advisory lock of a frozen or cut-off host are given back within seconds, not
/// when TCP gives up hours later.
const PG_SESSION: [(&str, &str); 7] = [
    ("statement_timeout", "10s"),
    ("lock_timeout", "5s"),
    ("idle_in_transaction_session_timeout", "5s"),
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "20000"),
];
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per multi-row statement, well under SQLite's limit of bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the state database {path}: {reason}; check [state] database (SQLite: its folder exists and is writable by this user; PostgreSQL: the server is up, the user, and the password in [state] password_file or JUMIO_BATCHD_DATABASE_PASSWORD)"
    )]
    Open { path: String, reason: String },
    #[error("cannot migrate the state database {path}: {source}")]
    Migrate { path: String, source: sqlx::migrate::MigrateError },
    #[error("the state database {path} does not exist or has no jumio-batchd schema")]
    Empty { path: String },
    #[error("state database: {}", explain(.0))]
    Query(#[from] sqlx::Error),
    #[error("the state database did not answer within {} s (the server is down, overloaded or out of reach); trying again", PG_STATEMENT_TIMEOUT.as_secs())]
    TimedOut,
    #[error("bug: batch {id} may not go from {from} to {to}")]
    IllegalTransition { id: i64, from: crate::batch::State, to: crate::batch::State },
    #[error("cannot read the database password from {path}: {source}; check [state] password_file")]
    Password { path: String, source: std::io::Error },
}

impl StoreError {
    /// The database answered that a table of ours is not there: its schema was dropped.
    pub fn is_missing_table(&self) -> bool {
        match self {
            StoreError::Query(sqlx::Error::Database(e)) => e.code().as_deref() == Some("42P01") || e.message().contains("no such table"),
            _ => false,
        }
    }
}

/// sqlx's words, made to say what happened where they do not.
fn explain(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::PoolTimedOut => {
            format!("no connection within {} s (the server is down or out of reach); trying again", PG_ACQUIRE_TIMEOUT.as_secs())
        }
        other => other.to_string(),
    }
}

/// What connecting may do to a database that has no schema of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Create the schema (an empty or missing database is a new one).
    Create,
    /// Refuse (`StoreError::Empty`): an emptied database must never be taken for a new one.
    MustExist,
}

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
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

#[derive(Clone)]
pub struct Store {
    db: Db,
    fleet: Option<Fleet>,
    /// The leases this process holds: batch id → fencing token.
    fences: Arc<Mutex<HashMap<i64, i64>>>,
    /// The database's clock minus this host's, in milliseconds (fleet mode; 0 in SQLite).
    clock_offset_ms: Arc<AtomicI64>,
}

impl Store {
    /// The database `[state]` names: a SQLite file, or PostgreSQL (fleet mode, with `fleet`'s
    /// host id and lease length), migrated; given a schema when empty only with `Schema::Create`.
    pub async fn connect(
        state: &crate::config::StateConfig,
        fleet: &crate::config::FleetConfig,
        schema: Schema,
    ) -> Result<Store, StoreError> {
        let Some(url) = state.postgres_url() else { return Store::open_with(&state.database, schema).await };
        let shown = state.shown();
        let secrets = state.secrets();
        let open = |reason: String| StoreError::Open { path: shown.clone(), reason: crate::config::redact(&reason, &secrets) };
        let mut options = PgConnectOptions::from_str(url).map_err(|e| open(e.to_string()))?;
        if let Some(password) = database_password(state)? {
            options = options.password(&password);
        }
        let options = options.options(PG_SESSION);
        // One connection first: its failure says why (refused, a wrong password), where a
        // pool would only say that it timed out.
        match tokio::time::timeout(PG_ACQUIRE_TIMEOUT, sqlx::PgConnection::connect_with(&options)).await {
            Ok(Ok(first)) => {
                let _ = first.close().await;
            }
            Ok(Err(e)) => return Err(open(e.to_string())),
            Err(_) => return Err(open(format!("no answer within {} s (is the server up and reachable?)", PG_ACQUIRE_TIMEOUT.as_secs()))),
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(PG_ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| open(e.to_string()))?;
        let fleet = Fleet { host: fleet.host_id.clone(), lease: Duration::from_secs(fleet.lease_secs) };
        let store = Store { db: Db::Postgres(pool.clone()), fleet: Some(fleet), fences: Arc::default(), clock_offset_ms: Arc::default() };
        let has_schema: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&pool).await?;
        if !has_schema && schema == Schema::MustExist {
            return Err(StoreError::Empty { path: shown.clone() });
        }
        PG_MIGRATOR.run(&pool).await.map_err(|source| StoreError::Migrate { path: shown, source })?;
        store.measure_clock().await?;
        Ok(store)
    }

    /// Opens (creating if missing) and migrates a SQLite database: WAL, synchronous=FULL, so a
    /// committed transition survives power loss (a lost commit could mean a duplicate).
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, Schema::Create).await
    }

    async fn open_with(path: &Path, schema: Schema) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        if schema == Schema::MustExist && !path.exists() {
            return Err(StoreError::Empty { path: shown });
        }
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
            .map_err(|e| StoreError::Open { path: shown.clone(), reason: e.to_string() })?;
        MIGRATOR.run(&pool).await.map_err(|source| StoreError::Migrate { path: shown, source })?;
        Ok(Store { db: Db::Sqlite(pool), fleet: None, fences: Arc::default(), clock_offset_ms: Arc::default() })
    }

    /// Opens an existing SQLite database for reading only (safe while the daemon runs).
    pub async fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new().filename(path).read_only(true).busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open { path: path.display().to_string(), reason: e.to_string() })?;
        Ok(Store { db: Db::Sqlite(pool), fleet: None, fences: Arc::default(), clock_offset_ms: Arc::default() })
    }

    /// Fleet mode (PostgreSQL): this host's id and lease length.
    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
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
}

fn database_password(state: &crate::config::StateConfig) -> Result<Option<String>, StoreError> {
    if let Some(path) = &state.password_file {
        let text = std::fs::read_to_string(path).map_err(|source| StoreError::Password { path: path.display().to_string(), source })?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    Ok(std::env::var(crate::config::DATABASE_PASSWORD_ENV).ok().filter(|p| !p.is_empty()))
}
