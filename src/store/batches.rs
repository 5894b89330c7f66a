//! The batch queries: records, their files and their history. One text of SQL per statement,
//! compiled for SQLite and PostgreSQL alike (`on_db!`).

use super::{fenced, Db, Store, StoreError, ROWS_PER_STATEMENT};
use super::{BatchRecord, Change, Contents, Event, Origin};
use crate::batch::State;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

macro_rules! insert_discovered {
    ($tx:expr, $now:expr, $name:expr, $source_path:expr, $origin:expr, $host:expr) => {{
        let now: DateTime<Utc> = $now;
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

/// Inside a transaction: locks batch `$id`'s row if this process may still change it (its
/// lease, `$fence`, is live; or nobody's is), so a takeover waits until the transaction ends
/// (at most the session's timeouts). False: it may not; nothing is to be written.
macro_rules! hold_row {
    ($tx:expr, $id:expr, $fence:expr) => {{
        let sql = format!("UPDATE batches SET id = id WHERE id = $1 AND {} RETURNING id", fenced(2));
        let held: Option<i64> = sqlx::query_scalar(&sql).bind($id).bind($fence).fetch_optional(&mut *$tx).await?;
        held.is_some()
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

impl Store {
    pub async fn insert(&self, name: &str, source_path: &str, origin: &Origin, contents: &Contents<'_>) -> Result<BatchRecord, StoreError> {
        let record = on_db!(self, |pool| {
            let mut tx = pool.begin().await?;
            let record = insert_discovered!(&mut *tx, self.now(), name, source_path, origin, self.host());
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
                let record = insert_discovered!(&mut *tx, self.now(), name, "", origin, self.host());
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
                let record = insert_discovered!(&mut *tx, self.now(), name, "", origin, self.host());
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

    /// Replaces what is recorded of a batch's contents (validation ran again on its folder);
    /// false when this process no longer holds the batch (fenced, as every change).
    pub async fn record_contents(&self, id: i64, contents: &Contents<'_>) -> Result<bool, StoreError> {
        let fence = self.fence(id);
        Ok(on_db!(self, |pool| {
            let mut tx = pool.begin().await?;
            let held = hold_row!(&mut *tx, id, fence);
            if held {
                sqlx::query("DELETE FROM files WHERE batch_id = $1").bind(id).execute(&mut *tx).await?;
                set_contents!(&mut *tx, id, contents);
                tx.commit().await?;
            }
            held
        }))
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
        let now = self.now();
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
                .bind(i64::from(change.count_attempt) - i64::from(change.uncount_attempt))
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
                // A host frozen here holds the row's lock until its session's timeouts end it.
                crate::failpoint::hit(&format!("in_transition_to_{to}"));
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

    /// The highest batch id recorded (0: none): ids only grow, so a lower one later means batches
    /// went away (deleted, or an older backup restored).
    pub async fn high_water(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COALESCE(MAX(id), 0) FROM batches";
        Ok(on_db!(self, |pool| sqlx::query_scalar(sql).fetch_one(pool).await?))
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

    /// Where a finished batch's folder now is, and the host that moved it there; false when
    /// this process no longer holds the batch.
    pub async fn set_filed_path(&self, id: i64, path: &str) -> Result<bool, StoreError> {
        let sql = format!("UPDATE batches SET filed_path = $1, filed_by = $3 WHERE id = $2 AND {}", fenced(4));
        let fence = self.fence(id);
        let done =
            on_db!(self, |pool| sqlx::query(&sql).bind(path).bind(id).bind(self.host()).bind(fence).execute(pool).await?.rows_affected());
        Ok(done == 1)
    }

    /// Progress of an upload, for `status` (fenced: a host that lost the batch writes nothing).
    pub async fn set_bytes_sent(&self, id: i64, bytes_sent: u64) -> Result<(), StoreError> {
        let sql = format!("UPDATE batches SET bytes_sent = $1 WHERE id = $2 AND {}", fenced(3));
        let fence = self.fence(id);
        on_db!(self, |pool| sqlx::query(&sql).bind(bytes_sent as i64).bind(id).bind(fence).execute(pool).await?.rows_affected());
        Ok(())
    }

    /// Marks files as on the server, with the sha256 of what was sent; false when this process
    /// no longer holds the batch (nothing is written then).
    pub async fn record_shipped(&self, id: i64, hashes: &BTreeMap<String, String>) -> Result<bool, StoreError> {
        let hashes: Vec<(&String, &String)> = hashes.iter().collect();
        let fence = self.fence(id);
        Ok(on_db!(self, |pool| {
            let mut tx = pool.begin().await?;
            let held = hold_row!(&mut *tx, id, fence);
            if held {
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
            }
            held
        }))
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
