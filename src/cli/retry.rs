//! `jumio-batchd retry NAME|ID`: a failed batch back into the queue, same remote folder.

use super::{EXIT_INVALID, EXIT_OK};
use crate::batch::State;
use crate::config::Config;
use crate::daemon::move_unique;
use crate::store::{Change, Store};
use std::path::Path;

pub async fn run(config: Option<&Path>, key: &str) -> anyhow::Result<u8> {
    let loaded = Config::load_or_default(config)?;
    let store = Store::open(&loaded.config.state.database).await?;
    let Some(record) = store.find(key).await? else {
        eprintln!("no batch named or numbered {key:?}; see `jumio-batchd status`");
        return Ok(EXIT_INVALID);
    };
    if record.state != State::Failed {
        eprintln!("batch {} (id {}) is {}, not failed; only failed batches can be retried", record.name, record.id, record.state);
        return Ok(EXIT_INVALID);
    }
    let filed = record.filed_path.as_deref().map(Path::new).filter(|p| p.is_dir());
    let (source_path, how) = match (filed, loaded.config.paths.as_ref()) {
        (Some(folder), Some(paths)) => {
            let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| record.name.clone());
            let _ = std::fs::remove_file(folder.join(crate::daemon::FAILED_FILE));
            let moved = move_unique(folder, &paths.work, &name)?;
            (Some(moved.display().to_string()), format!("moved back to {}; the daemon resumes it at its next scan", moved.display()))
        }
        _ => (None, format!("run `jumio-batchd send {}` to resume it", record.source_path)),
    };
    let change = Change { source_path, ..Change::default() };
    let moved = store.transition(record.id, State::Failed, State::Validated, change).await?;
    match moved {
        Some(r) => {
            println!(
                "batch {} (id {}) queued again into remote folder {}; {how}",
                r.name,
                r.id,
                r.remote_uuid.as_deref().unwrap_or("(new)")
            );
            Ok(EXIT_OK)
        }
        None => {
            eprintln!("batch {} changed state meanwhile; nothing done", record.name);
            Ok(EXIT_INVALID)
        }
    }
}
