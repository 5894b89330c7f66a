//! The state database is the memory of what was submitted: without it (or with an older one) the
//! duplicate guard forgets, and a batch already at Jumio ships again. So a database is opened
//! beside the drop folders only when it can be that memory: an empty or missing one beside
//! folders with history is refused before anything is created in it; one older than the drop
//! folders (a receipt in done/ names a batch it does not know) too; and while the daemon runs,
//! a database whose schema, identity or batches went away or back in time stops it.

use crate::config::Config;
use crate::store::{Schema, Store, StoreError};
use std::path::{Path, PathBuf};

/// Receipts read at start: the newest this many folders of done/ (a lost or older database
/// shows in the newest).
const RECEIPTS_READ: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the state database {database} does not exist or holds no batches, but {} holds earlier batches: starting with an empty database would forget what was already submitted and could ship it again. Restore the database from a backup to that path, or, if it is truly lost, start once with `jumio-batchd run --new-database` (already submitted batches are then not recognised as duplicates)", history.display())]
    Missing { database: String, history: PathBuf },
    #[error("the state database {database} is older than the drop folders: {} holds batch id {receipt}, the database's newest is {newest} (restored from an older backup?). Batches submitted since would not be recognised as duplicates and could ship again. Restore the newest backup, or start once with `jumio-batchd run --new-database` to go on with this one", folder.display())]
    Behind { database: String, folder: PathBuf, receipt: i64, newest: i64 },
}

/// The store `config` names, opened as the memory of the drop folders (`[paths]`, when the
/// config has them): refused when it cannot be. `new_database`: the operator accepts an empty or
/// older one.
pub async fn open_store(config: &Config, new_database: bool) -> Result<Store, MemoryError> {
    let state = &config.state;
    let paths = config.paths.clone();
    let history = match &paths {
        Some(paths) => {
            let paths = paths.clone();
            crate::telemetry::blocking(move || crate::layout::history(&paths)).await
        }
        None => None,
    };
    let missing = |history: PathBuf| MemoryError::Missing { database: state.shown(), history };
    let schema = if history.is_some() && !new_database { Schema::MustExist } else { Schema::Create };
    let store = match Store::connect(state, &config.fleet, schema).await {
        Err(StoreError::Empty { .. }) => return Err(missing(history.unwrap_or_default())),
        connected => connected?,
    };
    let (Some(history), Some(paths)) = (history.filter(|_| !new_database), paths) else { return Ok(store) };
    let newest = store.high_water().await?;
    if newest == 0 {
        return Err(missing(history));
    }
    let (done, identity) = (paths.done.clone(), store.identity().await?);
    let newest_filed = crate::telemetry::blocking(move || newest_receipt(&done, identity.as_deref())).await;
    if let Some((folder, receipt)) = newest_filed.filter(|(_, id)| *id > newest) {
        return Err(MemoryError::Behind { database: state.shown(), folder, receipt, newest });
    }
    Ok(store)
}

/// The highest batch id among the receipts of the newest folders of `done` that this database
/// (`identity`) wrote: receipts of another database (before a `--new-database`) say nothing.
fn newest_receipt(done: &Path, identity: Option<&str>) -> Option<(PathBuf, i64)> {
    let identity = identity?;
    let mut folders: Vec<(std::time::SystemTime, PathBuf)> =
        std::fs::read_dir(done).ok()?.flatten().filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path()))).collect();
    folders.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    folders
        .into_iter()
        .take(RECEIPTS_READ)
        .filter_map(|(_, folder)| {
            let bytes = crate::batchfs::read_capped(&folder, super::RECEIPT_FILE, 1 << 20).ok()?;
            let receipt = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?;
            (receipt.get("database")?.as_str()? == identity).then_some(())?;
            Some((folder, receipt.get("id")?.as_i64()?))
        })
        .max_by_key(|(_, id)| *id)
}
