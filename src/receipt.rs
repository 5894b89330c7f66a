//! What a shipped batch leaves behind for people: `send --json` prints it, the daemon writes
//! it as RECEIPT.json.

use crate::store::BatchRecord;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub batch: String,
    /// The name of the batch's folder on the server: a UUID.
    pub remote_uuid: String,
    /// That folder's path as seen from the tenant home (`sftp.remote_dir` + `/` + the UUID).
    pub remote_dir: String,
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
}

impl Receipt {
    /// The receipt of a submitted batch, from its record and the sha256 of its files.
    pub fn of(record: &BatchRecord, files_sha256: BTreeMap<String, String>, seconds: f64, already_submitted: bool) -> Receipt {
        let remote_uuid = record.remote_uuid.clone().unwrap_or_default();
        Receipt {
            batch: record.name.clone(),
            remote_dir: record.remote_dir.clone().unwrap_or_else(|| remote_uuid.clone()),
            remote_uuid,
            rows: record.rows as usize,
            files: record.files as usize,
            bytes: record.bytes as u64,
            seconds,
            files_sha256,
            already_submitted,
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
