//! The durable record: batches, their files and the audit trail, in SQLite through sqlx.
//! **Invariant:** the only module with SQL. A state changes only through `transition`, which
//! checks the move is allowed, applies it only if the batch is still in the expected state,
//! appends an event and logs one line, all in one transaction.

use crate::batch::{Kind, RejectReason, State};
use crate::validate::BatchFile;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per multi-row statement, well under SQLite's limit of bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the state database {path}: {source}; check [state] database and that its folder exists and is writable by this user"
    )]
    Open { path: String, source: sqlx::Error },
    #[error("cannot migrate the state database {path}: {source}")]
    Migrate { path: String, source: sqlx::migrate::MigrateError },
    #[error("state database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("bug: batch {id} may not go from {from} to {to}")]
    IllegalTransition { id: i64, from: State, to: State },
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
}

/// What validation found in a batch folder: its content key, counts and the files to ship.
pub struct Contents<'a> {
    pub content_key: &'a str,
    pub rows: usize,
    pub files: usize,
    pub bytes: u64,
    pub file_list: &'a [BatchFile],
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
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) and migrates the database: WAL, synchronous=FULL, so a
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
        Ok(Store { pool })
    }

    /// Opens an existing database for reading only (safe while the daemon runs).
    pub async fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new().filename(path).read_only(true).busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        Ok(Store { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A batch seen for the first time by `send`: recorded as discovered with its contents.
    pub async fn insert(&self, name: &str, source_path: &str, origin: &Origin, contents: &Contents<'_>) -> Result<BatchRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let record = insert_discovered(&mut tx, name, source_path, origin).await?;
        set_contents(&mut tx, record.id, contents).await?;
        tx.commit().await?;
        let record = self.get(record.id).await?.unwrap_or(record);
        log_transition(&record, None);
        Ok(record)
    }

    /// A batch claimed from the inbox: recorded as discovered before its folder moves, at the
    /// path `folder_for(id)` that carries its id. Its contents are recorded once validated.
    pub async fn claim(&self, name: &str, origin: &Origin, folder_for: impl FnOnce(i64) -> String) -> Result<BatchRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let record = insert_discovered(&mut tx, name, "", origin).await?;
        let record: BatchRecord = sqlx::query_as("UPDATE batches SET source_path = ? WHERE id = ? RETURNING *")
            .bind(folder_for(record.id))
            .bind(record.id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        log_transition(&record, None);
        Ok(record)
    }

    /// Replaces what is recorded of a batch's contents (validation ran again on its folder).
    pub async fn record_contents(&self, id: i64, contents: &Contents<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM files WHERE batch_id = ?").bind(id).execute(&mut *tx).await?;
        set_contents(&mut tx, id, contents).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a claim whose folder never reached work/ (pulled back, or a crash in between).
    pub async fn forget_unclaimed(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM batches WHERE id = ? AND state = 'discovered'").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves batch `id` from `from` to `to` if it is still in `from`; returns the updated
    /// record, or `None` when another actor moved it first.
    pub async fn transition(&self, id: i64, from: State, to: State, change: Change) -> Result<Option<BatchRecord>, StoreError> {
        if !from.can_become(to) {
            return Err(StoreError::IllegalTransition { id, from, to });
        }
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let record: Option<BatchRecord> = sqlx::query_as(
            "UPDATE batches SET
                state = ?1, updated_at = ?2,
                remote_uuid = COALESCE(remote_uuid, ?3),
                remote_dir = COALESCE(?4, remote_dir),
                source_path = COALESCE(?12, source_path),
                fingerprint = COALESCE(?5, fingerprint),
                last_error = ?6,
                next_attempt_at = ?7,
                attempts = attempts + ?8,
                submitted_at = CASE WHEN ?1 = 'submitted' THEN ?2 ELSE submitted_at END,
                upload_started_at = CASE WHEN ?1 = 'uploading' THEN ?2 ELSE upload_started_at END,
                reject_reason = COALESCE(?13, reject_reason),
                duplicate_of = COALESCE(?14, duplicate_of)
             WHERE id = ?9 AND state = ?10
               AND (?11 = 0 OR NOT EXISTS (SELECT 1 FROM batches o WHERE o.content_key = batches.content_key
                                           AND o.id != batches.id AND o.state IN ('uploading', 'retry_wait')
                                           AND (o.tenant IS NULL OR batches.tenant IS NULL OR o.tenant = batches.tenant)))
             RETURNING *",
        )
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
        .fetch_optional(&mut *tx)
        .await?;
        let Some(record) = record else { return Ok(None) };
        sqlx::query("INSERT INTO events (batch_id, at, from_state, to_state, attempt, detail) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(id)
            .bind(now)
            .bind(from)
            .bind(to)
            .bind(record.attempts)
            .bind(&change.last_error)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        log_transition(&record, Some(from));
        Ok(Some(record))
    }

    pub async fn get(&self, id: i64) -> Result<Option<BatchRecord>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM batches WHERE id = ?").bind(id).fetch_optional(&self.pool).await?)
    }

    /// The newest batch with this name (or this id, when `key` is a number).
    pub async fn find(&self, key: &str) -> Result<Option<BatchRecord>, StoreError> {
        let id = key.parse::<i64>().unwrap_or(-1);
        Ok(sqlx::query_as("SELECT * FROM batches WHERE id = ? OR name = ? ORDER BY id DESC LIMIT 1")
            .bind(id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// An unfinished batch from this folder with this content: a crashed, interrupted or failed
    /// run, which must resume into its own remote folder (a failed one may even hold DONE).
    pub async fn find_unfinished(
        &self,
        source_path: &str,
        content_key: &str,
        tenant: Option<&str>,
    ) -> Result<Option<BatchRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM batches WHERE source_path = ?1 AND content_key = ?2 AND (tenant IS NULL OR tenant = ?3)
               AND state IN ('discovered', 'validated', 'uploading', 'retry_wait', 'failed') ORDER BY id DESC LIMIT 1",
        )
        .bind(source_path)
        .bind(content_key)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The newest submitted batch from this folder with this content: `send` run again.
    pub async fn submitted_from(
        &self,
        source_path: &str,
        content_key: &str,
        tenant: Option<&str>,
    ) -> Result<Option<BatchRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM batches WHERE source_path = ?1 AND (content_key = ?2 OR fingerprint = ?2) AND state = 'submitted'
               AND (tenant IS NULL OR tenant = ?3) ORDER BY id DESC LIMIT 1",
        )
        .bind(source_path)
        .bind(content_key)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The unfinished batch whose folder is `source_path`: a folder left in work/ by a version
    /// that did not put the record's id into the folder's name.
    pub async fn unfinished_at(&self, source_path: &str) -> Result<Option<BatchRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM batches WHERE source_path = ? AND state NOT IN ('submitted', 'rejected', 'failed') ORDER BY id DESC LIMIT 1",
        )
        .bind(source_path)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The folder of a batch moved (a legacy folder adopted into its id-carrying name).
    pub async fn set_source_path(&self, id: i64, path: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE batches SET source_path = ? WHERE id = ?").bind(path).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Other batches for the same tenant with the same content that are submitted or on their
    /// way (the fingerprint column finds batches recorded before the content key was the full
    /// digest; a batch recorded before tenants were, counts for every tenant).
    pub async fn same_content(&self, content_key: &str, except_id: i64, tenant: Option<&str>) -> Result<Vec<BatchRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM batches WHERE (content_key = ?1 OR fingerprint = ?1) AND id != ?2
               AND state IN ('uploading', 'retry_wait', 'submitted')
               AND (tenant IS NULL OR ?3 IS NULL OR tenant = ?3) ORDER BY id",
        )
        .bind(content_key)
        .bind(except_id)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The batches made from `parent` (resubmissions and parts), oldest first.
    pub async fn children(&self, parent: i64) -> Result<Vec<BatchRecord>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM batches WHERE parent_id = ? ORDER BY id").bind(parent).fetch_all(&self.pool).await?)
    }

    /// The newest record of part `part` of `parent`, if one was made.
    pub async fn part(&self, parent: i64, part: i64) -> Result<Option<BatchRecord>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM batches WHERE parent_id = ? AND kind = 'part' AND part = ? ORDER BY id DESC LIMIT 1")
            .bind(parent)
            .bind(part)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Batches in `state`, oldest first.
    pub async fn in_state(&self, state: State) -> Result<Vec<BatchRecord>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM batches WHERE state = ? ORDER BY id").bind(state).fetch_all(&self.pool).await?)
    }

    /// The most recently changed batches.
    pub async fn recent(&self, limit: i64) -> Result<Vec<BatchRecord>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM batches ORDER BY updated_at DESC, id DESC LIMIT ?").bind(limit).fetch_all(&self.pool).await?)
    }

    pub async fn counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(State, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM batches GROUP BY state").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(s, n)| (s.to_string(), n)).collect())
    }

    pub async fn events(&self, id: i64) -> Result<Vec<Event>, StoreError> {
        Ok(sqlx::query_as("SELECT at, from_state, to_state, attempt, detail FROM events WHERE batch_id = ? ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Where a finished batch's folder now is.
    pub async fn set_filed_path(&self, id: i64, path: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE batches SET filed_path = ? WHERE id = ?").bind(path).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Progress of an upload, for `status`.
    pub async fn set_bytes_sent(&self, id: i64, bytes_sent: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE batches SET bytes_sent = ? WHERE id = ?").bind(bytes_sent as i64).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Marks files as on the server, with the sha256 of what was sent.
    pub async fn record_shipped(&self, id: i64, hashes: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let hashes: Vec<(&String, &String)> = hashes.iter().collect();
        let mut tx = self.pool.begin().await?;
        for chunk in hashes.chunks(ROWS_PER_STATEMENT) {
            // A multi-row upsert onto rows that exist: sets sha256 and shipped in one statement.
            let mut upsert = sqlx::QueryBuilder::new("INSERT INTO files (batch_id, path, size, sha256, shipped) ");
            upsert.push_values(chunk, |mut row, (path, sha)| {
                row.push_bind(id).push_bind(*path).push_bind(0i64).push_bind(*sha).push_bind(1i64);
            });
            upsert.push(" ON CONFLICT (batch_id, path) DO UPDATE SET sha256 = excluded.sha256, shipped = 1");
            upsert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// sha256 of a submitted batch's files, by path: what its receipt lists.
    pub async fn shipped_hashes(&self, id: i64) -> Result<BTreeMap<String, String>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT path, sha256 FROM files WHERE batch_id = ? AND sha256 IS NOT NULL ORDER BY path")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// (path, size, sha256, shipped) of a batch's files.
    pub async fn files(&self, id: i64) -> Result<Vec<(String, i64, Option<String>, bool)>, StoreError> {
        Ok(sqlx::query_as("SELECT path, size, sha256, shipped FROM files WHERE batch_id = ? ORDER BY path")
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }
}

async fn insert_discovered(
    tx: &mut sqlx::SqliteConnection,
    name: &str,
    source_path: &str,
    origin: &Origin,
) -> Result<BatchRecord, StoreError> {
    let now = Utc::now();
    let record: BatchRecord = sqlx::query_as(
        "INSERT INTO batches (name, source_path, content_key, state, created_at, updated_at,
                              route, tenant, parent_id, kind, first_row, last_row, part)
         VALUES (?, ?, '', 'discovered', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
    )
    .bind(name)
    .bind(source_path)
    .bind(now)
    .bind(now)
    .bind(&origin.route)
    .bind(&origin.tenant)
    .bind(origin.parent_id)
    .bind(origin.kind)
    .bind(origin.first_row)
    .bind(origin.last_row)
    .bind(origin.part)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO events (batch_id, at, from_state, to_state, attempt) VALUES (?, ?, NULL, 'discovered', 0)")
        .bind(record.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(record)
}

async fn set_contents(tx: &mut sqlx::SqliteConnection, id: i64, contents: &Contents<'_>) -> Result<(), StoreError> {
    sqlx::query("UPDATE batches SET content_key = ?, rows = ?, files = ?, bytes = ? WHERE id = ?")
        .bind(contents.content_key)
        .bind(contents.rows as i64)
        .bind(contents.files as i64)
        .bind(contents.bytes as i64)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    for chunk in contents.file_list.chunks(ROWS_PER_STATEMENT) {
        let mut insert = sqlx::QueryBuilder::new("INSERT INTO files (batch_id, path, size) ");
        insert.push_values(chunk, |mut row, file| {
            row.push_bind(id).push_bind(&file.path).push_bind(file.size as i64);
        });
        insert.build().execute(&mut *tx).await?;
    }
    Ok(())
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
