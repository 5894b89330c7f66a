//! `jumio-batchd retry NAME|ID`: a failed batch back into the queue, same remote folder.
//! The state change is recorded before the folder moves back into work/ (under its id-carrying
//! name); run again after a crash in between, it finishes the move.

use super::{EXIT_INVALID, EXIT_OK};
use crate::batch::State;
use crate::config::{Config, PathsConfig};
use crate::folders::{claimed_name, rename_no_replace};
use crate::store::{BatchRecord, Change, Store};
use std::path::{Path, PathBuf};

pub async fn run(config: Option<&Path>, key: &str) -> anyhow::Result<u8> {
    let loaded = Config::load_or_default(config)?;
    let store = Store::connect(&loaded.config.state, &loaded.config.fleet).await?;
    let Some(record) = store.find(key).await? else {
        eprintln!("no batch named or numbered {key:?}; see `jumio-batchd status`");
        return Ok(EXIT_INVALID);
    };
    let filed = record.filed_path.as_deref().map(PathBuf::from).filter(|p| p.is_dir());
    let back_to = loaded.config.paths.as_ref().map(|paths| work_folder(paths, &record));
    let finishing_a_move = record.state == State::Validated && filed.is_some() && back_to.as_ref().is_some_and(|to| !to.exists());
    if record.state != State::Failed && !finishing_a_move {
        eprintln!("batch {} (id {}) is {}, not failed; only failed batches can be retried", record.name, record.id, record.state);
        return Ok(EXIT_INVALID);
    }
    let (source_path, how) = match (&filed, &back_to) {
        (Some(_), Some(to)) => {
            (Some(to.display().to_string()), format!("moved back to {}; the daemon resumes it at its next scan", to.display()))
        }
        _ => (None, format!("run `jumio-batchd send {}` to resume it", record.source_path)),
    };
    let record = if record.state == State::Failed {
        let change = Change { source_path, ..Change::default() };
        match store.transition(record.id, State::Failed, State::Validated, change).await? {
            Some(moved) => moved,
            None => {
                eprintln!("batch {} changed state meanwhile; nothing done", record.name);
                return Ok(EXIT_INVALID);
            }
        }
    } else {
        record
    };
    if let (Some(folder), Some(to)) = (filed, back_to) {
        let _ = std::fs::remove_file(folder.join(crate::lifecycle::FAILED_FILE));
        rename_no_replace(&folder, &to)?;
    }
    println!(
        "batch {} (id {}) queued again into remote folder {}; {how}",
        record.name,
        record.id,
        record.remote_uuid.as_deref().unwrap_or("(new)")
    );
    Ok(EXIT_OK)
}

/// Where a batch's folder lives in work/: its id travels with it.
fn work_folder(paths: &PathsConfig, record: &BatchRecord) -> PathBuf {
    paths.work.join(claimed_name(record.id, &record.name))
}
