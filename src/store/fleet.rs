//! Fleet mode's part of the store: leases on batches (fencing tokens), the daemons' `hosts`
//! rows, and two facts about the database itself: its identity (a database emptied or
//! replaced under a running daemon is noticed) and its clock (every "has this lease run out"
//! is decided by the database's time, whatever this host's clock says).

use super::{Db, Store, StoreError, PG_STATEMENT_TIMEOUT};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A daemon of the fleet, as it registered itself.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Host {
    pub host_id: String,
    pub pid: i64,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// The machine it runs on (`/etc/machine-id`).
    #[sqlx(default)]
    pub machine: Option<String>,
    /// Its clock minus the database's, at its last heartbeat, in milliseconds.
    #[sqlx(default)]
    pub clock_offset_ms: Option<i64>,
}

/// Fleet mode: who this process is and how long its leases last.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub host: String,
    pub lease: Duration,
}

/// A PostgreSQL call bounded by `PG_STATEMENT_TIMEOUT`.
async fn bounded<T>(call: impl std::future::Future<Output = Result<T, sqlx::Error>>) -> Result<T, StoreError> {
    Ok(tokio::time::timeout(PG_STATEMENT_TIMEOUT, call).await.map_err(|_| StoreError::TimedOut)??)
}

impl Store {
    pub(super) fn lease_secs(&self) -> f64 {
        self.fleet.as_ref().map_or(0.0, |f| f.lease.as_secs_f64())
    }

    /// Now by the database's clock (this host's clock corrected by the offset last measured):
    /// what leases and retry times are compared with. This host's clock in SQLite.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// Measures how far the database's clock is from this host's (fleet mode), half the round
    /// trip taken off.
    pub async fn measure_clock(&self) -> Result<(), StoreError> {
        let Db::Postgres(pool) = &self.db else { return Ok(()) };
        let sent = Utc::now();
        let db: DateTime<Utc> = bounded(sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(pool)).await?;
        let back = Utc::now();
        let local = sent + (back - sent) / 2;
        self.clock_offset_ms.store((db - local).num_milliseconds(), Ordering::Relaxed);
        Ok(())
    }

    /// The identity this database was given when its schema was made: another (or none) means
    /// it was emptied or replaced. `None`: a database from before identities.
    pub async fn identity(&self) -> Result<Option<String>, StoreError> {
        let sql = "SELECT id FROM installation ORDER BY created_at LIMIT 1";
        Ok(on_db!(self, |pool| sqlx::query_scalar(sql).fetch_optional(pool).await?))
    }

    /// Fleet mode: takes the lease of batch `id` if no host holds a live one. `Ok(token)`, or
    /// `Err((holder, until))` of the host that holds it.
    pub async fn acquire_lease(&self, id: i64) -> Result<Result<i64, (Option<String>, Option<DateTime<Utc>>)>, StoreError> {
        let Db::Postgres(pool) = &self.db else { panic!("bug: leases are for fleet mode") };
        let token: Option<i64> = bounded(
            sqlx::query_scalar(
                "UPDATE batches SET holder = $2, lease_token = lease_token + 1,
                        lease_expires_at = CURRENT_TIMESTAMP + make_interval(secs => $3)
                  WHERE id = $1 AND (lease_expires_at IS NULL OR lease_expires_at < CURRENT_TIMESTAMP)
                  RETURNING lease_token",
            )
            .bind(id)
            .bind(self.host())
            .bind(self.lease_secs())
            .fetch_optional(pool),
        )
        .await?;
        match token {
            Some(token) => {
                self.fences.lock().unwrap_or_else(|p| p.into_inner()).insert(id, token);
                Ok(Ok(token))
            }
            None => {
                let held: Option<(Option<String>, Option<DateTime<Utc>>)> =
                    bounded(sqlx::query_as("SELECT holder, lease_expires_at FROM batches WHERE id = $1").bind(id).fetch_optional(pool))
                        .await?;
                Ok(Err(held.unwrap_or_default()))
            }
        }
    }

    /// Fleet mode: extends the lease `token` of batch `id` by the lease length from now; false
    /// when it is no longer this token's (expired, or taken over).
    pub async fn renew_lease(&self, id: i64, token: i64) -> Result<bool, StoreError> {
        let Db::Postgres(pool) = &self.db else { return Ok(true) };
        let done = bounded(
            sqlx::query(
                "UPDATE batches SET lease_expires_at = CURRENT_TIMESTAMP + make_interval(secs => $3)
                  WHERE id = $1 AND lease_token = $2 AND lease_expires_at > CURRENT_TIMESTAMP",
            )
            .bind(id)
            .bind(token)
            .bind(self.lease_secs())
            .execute(pool),
        )
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fleet mode: gives the lease back (a no-op once another host took it over). This process
    /// no longer changes the batch either way.
    pub async fn release_lease(&self, id: i64, token: i64) -> Result<(), StoreError> {
        self.forget_fence(id, token);
        let Db::Postgres(pool) = &self.db else { return Ok(()) };
        bounded(
            sqlx::query("UPDATE batches SET holder = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_token = $2")
                .bind(id)
                .bind(token)
                .execute(pool),
        )
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

    /// Fleet mode: registers this daemon under its host id on `machine`, unless a daemon with
    /// that id beat within `stale` and is not known dead: then that one is returned and nothing
    /// changes. `dead(pid)` says whether a PID of this machine has ended (a daemon killed here a
    /// moment ago frees its id at once).
    pub async fn register_host(
        &self,
        pid: u32,
        stale: Duration,
        machine: &str,
        dead: impl Fn(i64) -> bool,
    ) -> Result<Option<Host>, StoreError> {
        let (Db::Postgres(pool), Some(host)) = (&self.db, self.host()) else { return Ok(None) };
        let done = bounded(
            sqlx::query(
                "INSERT INTO hosts (host_id, pid, version, started_at, heartbeat_at, machine, clock_offset_ms)
                 VALUES ($1, $2, $3, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, $5, $6)
                 ON CONFLICT (host_id) DO UPDATE SET pid = excluded.pid, version = excluded.version,
                        started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,
                        machine = excluded.machine, clock_offset_ms = excluded.clock_offset_ms
                  WHERE hosts.heartbeat_at < CURRENT_TIMESTAMP - make_interval(secs => $4)",
            )
            .bind(host)
            .bind(i64::from(pid))
            .bind(env!("CARGO_PKG_VERSION"))
            .bind(stale.as_secs_f64())
            .bind(machine)
            .bind(-self.clock_offset_ms.load(Ordering::Relaxed))
            .execute(pool),
        )
        .await?;
        if done.rows_affected() == 1 {
            return Ok(None);
        }
        let Some(other) =
            bounded(sqlx::query_as::<_, Host>("SELECT * FROM hosts WHERE host_id = $1").bind(host).fetch_optional(pool)).await?
        else {
            return Ok(None);
        };
        if other.machine.as_deref() != Some(machine) || !dead(other.pid) {
            return Ok(Some(other));
        }
        // Its daemon ran on this machine and is gone: the id is ours, unless it changed hands.
        let taken = bounded(
            sqlx::query(
                "UPDATE hosts SET pid = $3, version = $4, started_at = CURRENT_TIMESTAMP, heartbeat_at = CURRENT_TIMESTAMP
                  WHERE host_id = $1 AND pid = $2 AND machine = $5",
            )
            .bind(host)
            .bind(other.pid)
            .bind(i64::from(pid))
            .bind(env!("CARGO_PKG_VERSION"))
            .bind(machine)
            .execute(pool),
        )
        .await?;
        Ok((taken.rows_affected() != 1).then_some(other))
    }

    /// Fleet mode: this daemon is alive (its row's heartbeat, and its clock's offset), while it
    /// is still this process's.
    pub async fn host_heartbeat(&self, pid: u32) -> Result<(), StoreError> {
        let (Db::Postgres(pool), Some(host)) = (&self.db, self.host()) else { return Ok(()) };
        self.measure_clock().await?;
        bounded(
            sqlx::query("UPDATE hosts SET heartbeat_at = CURRENT_TIMESTAMP, clock_offset_ms = $3 WHERE host_id = $1 AND pid = $2")
                .bind(host)
                .bind(i64::from(pid))
                .bind(-self.clock_offset_ms.load(Ordering::Relaxed))
                .execute(pool),
        )
        .await?;
        Ok(())
    }

    /// Fleet mode: this daemon stops.
    pub async fn unregister_host(&self, pid: u32) -> Result<(), StoreError> {
        let (Db::Postgres(pool), Some(host)) = (&self.db, self.host()) else { return Ok(()) };
        bounded(sqlx::query("DELETE FROM hosts WHERE host_id = $1 AND pid = $2").bind(host).bind(i64::from(pid)).execute(pool)).await?;
        Ok(())
    }

    /// Fleet mode: the daemons that beat within `stale`, by host id.
    pub async fn live_hosts(&self, stale: Duration) -> Result<Vec<Host>, StoreError> {
        let Db::Postgres(pool) = &self.db else { return Ok(Vec::new()) };
        bounded(
            sqlx::query_as("SELECT * FROM hosts WHERE heartbeat_at >= CURRENT_TIMESTAMP - make_interval(secs => $1) ORDER BY host_id")
                .bind(stale.as_secs_f64())
                .fetch_all(pool),
        )
        .await
    }
}
