//! What a shipped batch leaves behind for people: `send --json` prints it, the daemon writes
//! it as RECEIPT.json.

use crate::store::BatchRecord;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub batch: String,
    /// The route (tenant) it went to, when the config names routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The name of the batch's folder on the server: a UUID (absent for a batch shipped as
    /// parts: each part has its own, in `parts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_uuid: Option<String>,
    /// That folder's path as seen from the tenant home (`sftp.remote_dir` + `/` + the UUID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_dir: Option<String>,
    pub rows: usize,
    /// Images shipped (input.csv not counted, as in `validate`).
    pub files: usize,
    /// Bytes shipped, input.csv included.
    pub bytes: u64,
    pub seconds: f64,
    /// sha256 of every shipped file, input.csv included, by path inside the batch.
    pub files_sha256: BTreeMap<String, String>,
    /// The batch was already at Jumio before this run: nothing was sent now.
    pub already_submitted: bool,
    /// A resubmission: the batch it was made from, and the first of its rows it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resubmission_of: Option<Link>,
    /// A batch over Jumio's row limit: the parts it was shipped as, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

/// The batch a resubmission was made from.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    pub id: i64,
    pub batch: String,
    pub remote_uuid: Option<String>,
    pub from_row: i64,
}

/// One part of a batch over the row limit: its rows of the original input.csv and its folder.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub part: i64,
    pub id: i64,
    pub first_row: i64,
    pub last_row: i64,
    pub rows: i64,
    pub files: i64,
    pub remote_uuid: Option<String>,
    pub remote_dir: Option<String>,
    pub submitted_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Part {
    pub fn of(record: &BatchRecord) -> Part {
        Part {
            part: record.origin.part.unwrap_or_default(),
            id: record.id,
            first_row: record.origin.first_row.unwrap_or_default(),
            last_row: record.origin.last_row.unwrap_or_default(),
            rows: record.rows,
            files: record.files,
            remote_uuid: record.remote_uuid.clone(),
            remote_dir: record.remote_dir.clone(),
            submitted_at: record.submitted_at,
        }
    }
}

impl Receipt {
    /// The receipt of a submitted batch, from its record and the sha256 of its files.
    pub fn of(record: &BatchRecord, files_sha256: BTreeMap<String, String>, seconds: f64, already_submitted: bool) -> Receipt {
        Receipt {
            batch: record.name.clone(),
            route: record.origin.route.clone(),
            remote_dir: record.remote_dir.clone().or_else(|| record.remote_uuid.clone()),
            remote_uuid: record.remote_uuid.clone(),
            rows: record.rows as usize,
            files: record.files as usize,
            bytes: record.bytes as u64,
            seconds,
            files_sha256,
            already_submitted,
            resubmission_of: None,
            parts: Vec::new(),
        }
    }

    /// Where the batch is at Jumio, one folder per line (several for a batch shipped as parts).
    pub fn remote_folders(&self) -> Vec<&str> {
        match &self.remote_dir {
            Some(dir) => vec![dir.as_str()],
            None => self.parts.iter().filter_map(|p| p.remote_dir.as_deref()).collect(),
        }
    }

    /// The receipt as stored: the upload's duration taken from the record's times.
    pub fn stored(record: &BatchRecord, files_sha256: BTreeMap<String, String>) -> Receipt {
        let seconds = match (record.upload_started_at, record.submitted_at) {
            (Some(start), Some(end)) => (end - start).num_milliseconds().max(0) as f64 / 1000.0,
            _ => 0.0,
        };
        Receipt::of(record, files_sha256, seconds, true)
    }
}
