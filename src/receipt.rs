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
