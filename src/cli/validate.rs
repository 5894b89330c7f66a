//! `jumio-batchd validate DIR [--json]`

use super::{EXIT_INVALID, EXIT_OK};
use crate::config::Config;
use crate::validate;
use std::path::Path;

pub fn run(config: Option<&Path>, dir: &Path, json: bool) -> anyhow::Result<u8> {
    let config = Config::load_or_default(config)?;
    let rules = validate::Rules { marker: config.marker(), split_over_limit: config.config.batch.split_over_limit, digest: false };
    // A link named on the command line is the operator's to follow (the daemon never follows one).
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let checked = validate::validate_with(&dir, rules)?;
    let report = &checked.report;
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", validate::render_text(report));
    }
    Ok(if report.valid { EXIT_OK } else { EXIT_INVALID })
}
