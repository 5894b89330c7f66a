//! `jumio-batchd retry NAME|ID`: a failed batch back into the queue, same remote folder
//! (`Lifecycle::requeue`).

use super::{EXIT_INVALID, EXIT_OK};
use crate::config::Config;
use crate::lifecycle::{Lifecycle, Requeued};
use crate::store::{Schema, Store};
use std::path::Path;

pub async fn run(config: Option<&Path>, key: &str) -> anyhow::Result<u8> {
    let loaded = Config::load_or_default(config)?;
    let store = Store::connect(&loaded.config.state, &loaded.config.fleet, Schema::MustExist).await?;
    let Some(record) = store.find(key).await? else {
        eprintln!("no batch named or numbered {key:?}; see `jumio-batchd status`");
        return Ok(EXIT_INVALID);
    };
    let life = Lifecycle::new(store, &loaded.config, loaded.routes()?, crate::tasks::Tasks::new()).await?;
    match life.requeue(record, loaded.config.paths.as_ref()).await? {
        Requeued::Refused(why) => {
            eprintln!("{why}");
            Ok(EXIT_INVALID)
        }
        Requeued::Queued { record, folder } => {
            let how = match folder {
                Some(to) => format!("moved back to {}; the daemon resumes it at its next scan", to.display()),
                None => format!("run `jumio-batchd send {}` to resume it", record.source_path),
            };
            println!(
                "batch {} (id {}) queued again into remote folder {}; {how}",
                record.name,
                record.id,
                record.remote_uuid.as_deref().unwrap_or("(new)")
            );
            Ok(EXIT_OK)
        }
    }
}
