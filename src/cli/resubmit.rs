//! `jumio-batchd resubmit NAME|ID --from-row N [--csv FIXED.csv] [--json]`: the rows of a
//! shipped batch from row N down, as a new batch to the same tenant (Jumio's fix for a job that
//! stopped at a row). Built in work/, shipped like any batch, filed into done/.

use super::send::{self, Shown};
use super::EXIT_INVALID;
use crate::config::{Config, PathsConfig};
use crate::lifecycle::{Lifecycle, Outcome, Prepared, ResubmitError};
use crate::telemetry::{self, Sink};
use crate::validate::MAX_CSV_BYTES;
use std::io::Read;
use std::path::Path;

pub async fn run(config: Option<&Path>, key: &str, from_row: usize, csv: Option<&Path>, json: bool) -> anyhow::Result<u8> {
    if from_row == 0 {
        eprintln!("{key}: cannot resubmit from row 0: rows count from 1, the first row after the header (as `validate` and the Portal count them)");
        return Ok(EXIT_INVALID);
    }
    let loaded = Config::load_or_default(config)?;
    telemetry::init(Sink::Stderr, false, "info");
    let paths = match &loaded.config.paths {
        Some(paths) => paths.clone(),
        None => beside_database(&loaded.config.state.local_base())?,
    };
    let store = crate::lifecycle::memory::open_store(&loaded.config, false).await?;
    let tasks = super::run::stopped_by_signals()?;
    let life = Lifecycle::new(store, &loaded.config, loaded.routes()?, tasks.clone()).await?;
    let Some(original) = life.store().find(key).await? else {
        eprintln!("no batch named or numbered {key:?}; see `jumio-batchd status`");
        return Ok(EXIT_INVALID);
    };
    let fixed = match csv {
        Some(path) => Some(read_fixed(path)?),
        None => None,
    };
    let shown = Shown { json, quiet: false, verbose: false };
    let (record, dir, lock) = match life.resubmission(&original, from_row, fixed, &paths.work).await {
        Ok(Prepared::Ready { record, dir, lock }) => (record, dir, lock),
        Ok(Prepared::Finished(outcome)) => return send::report(*outcome, shown),
        Err(
            e @ (ResubmitError::NotShipped { .. }
            | ResubmitError::CopyGone { .. }
            | ResubmitError::Tampered { .. }
            | ResubmitError::Rows(_)),
        ) => {
            eprintln!("{}: cannot resubmit: {e}", original.name);
            return Ok(EXIT_INVALID);
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!("{}: resubmitting rows {from_row}.. as batch {} (id {})", original.name, record.name, record.id);
    let outcome = match life.ready(record.clone(), &dir, lock).await? {
        Ok(claim) => life.run_to_end(claim, false, Some(&paths), send::announce_retry).await?,
        Err(outcome) => {
            life.file(&outcome, &dir, &paths).await?;
            outcome
        }
    };
    if let Outcome::Rejected { .. } = &outcome {
        eprintln!("(row 1 of {} is row {from_row} of {}; the report is also in {})", record.name, original.name, paths.rejected.display());
    }
    let code = send::report(outcome, shown);
    tasks.finish(super::RUNTIME_SHUTDOWN).await;
    code
}

/// The corrected CSV an operator gives: a plain file, read up to the size input.csv may have.
fn read_fixed(path: &Path) -> anyhow::Result<Vec<u8>> {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        anyhow::bail!("the corrected CSV {} is not a regular file (missing, a folder, a FIFO or a device)", path.display());
    }
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot read the corrected CSV {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_CSV_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CSV_BYTES {
        anyhow::bail!(
            "the corrected CSV {} is larger than {} MB; it cannot be a batch's input.csv",
            path.display(),
            MAX_CSV_BYTES / 1_000_000
        );
    }
    Ok(bytes)
}

/// Without `[paths]` (a host that only uses `send`): the resubmission is built and filed in
/// `<database>.resubmits/{work,done,rejected,failed}`.
fn beside_database(database: &Path) -> anyhow::Result<PathsConfig> {
    let mut root = database.as_os_str().to_owned();
    root.push(".resubmits");
    let root = std::path::PathBuf::from(root);
    let paths = PathsConfig {
        inbox: root.join("work"),
        work: root.join("work"),
        done: root.join("done"),
        rejected: root.join("rejected"),
        failed: root.join("failed"),
    };
    for dir in [&paths.work, &paths.done, &paths.rejected, &paths.failed] {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    Ok(paths)
}
