//! What the store keeps of a batch: its record, where it goes and what it was made from, its
//! history, and what a change of it may set. Plain data; the SQL is in `batches`.

use crate::batch::{Kind, RejectReason, State};
use crate::batchfs::BatchFile;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use std::collections::BTreeMap;

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
    /// Fleet mode: the host that moved it there.
    #[sqlx(default)]
    pub filed_by: Option<String>,
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
    /// The host holding a live lease on this batch (fleet mode) at `now`, the database's time
    /// (`Store::now`): a host whose clock is off still sees when a lease runs out.
    pub fn held_by(&self, now: DateTime<Utc>) -> Option<&str> {
        self.holder.as_deref().filter(|_| self.lease_expires_at.is_some_and(|t| t > now))
    }
}

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
    /// The attempt that ends with this transition does not count (this host ran short of
    /// descriptors or memory: nothing about the batch or its server).
    pub uncount_attempt: bool,
    /// The batch folder moved (`retry` brings it back into work/).
    pub source_path: Option<String>,
    /// Apply only if no other batch with the same content is uploading or waiting to retry
    /// (checked in the same statement, so two identical batches cannot both start).
    pub only_if_content_idle: bool,
    pub reject_reason: Option<RejectReason>,
    pub duplicate_of: Option<i64>,
}
