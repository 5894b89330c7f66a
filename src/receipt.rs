//! What a shipped batch leaves behind for people: `send --json` prints it, the daemon writes
//! it as RECEIPT.json.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    pub batch: String,
    /// The UUID folder on the server, as seen from the tenant home.
    pub remote_dir: String,
    pub rows: usize,
    /// Images shipped (input.csv not counted, as in `validate`).
    pub files: usize,
    /// Bytes shipped, input.csv included.
    pub bytes: u64,
    pub seconds: f64,
    /// sha256 of every shipped file, input.csv included, by path inside the batch.
    pub files_sha256: BTreeMap<String, String>,
}

impl Receipt {
    /// The receipt of a submitted batch, from its record and the sha256 of its files.
    pub fn of(record: &crate::store::BatchRecord, remote_dir: String, files_sha256: BTreeMap<String, String>, seconds: f64) -> Receipt {
        Receipt {
            batch: record.name.clone(),
            remote_dir,
            rows: record.rows as usize,
            files: record.files as usize,
            bytes: record.bytes as u64,
            seconds,
            files_sha256,
        }
    }
}
