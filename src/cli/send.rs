//! `jumio-batchd send DIR [--json]`: validate, ship into a fresh UUID folder, print the receipt.

use super::{EXIT_INVALID, EXIT_OK};
use crate::config::Config;
use crate::receipt::Receipt;
use crate::ship::{self, Progress};
use crate::validate;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub fn run(config: Option<&Path>, dir: &Path, json: bool) -> anyhow::Result<u8> {
    let loaded = Config::load_or_default(config)?;
    let sftp = loaded.sftp()?;
    let checked = validate::validate(dir, loaded.marker())?;
    let report = &checked.report;
    if !report.valid {
        if json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            eprint!("{}", validate::render_text(report));
            eprintln!("not sent: fix the errors above and send again");
        }
        return Ok(EXIT_INVALID);
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let shipment = ship::ship(sftp, dir, &checked.files, &uuid, &Progress::default(), &AtomicBool::new(false))?;
    let receipt = Receipt {
        batch: report.batch.clone(),
        remote_dir: shipment.remote_dir,
        rows: report.rows,
        files: report.files,
        bytes: report.bytes,
        seconds: started.elapsed().as_secs_f64(),
        files_sha256: shipment.files_sha256,
    };
    print_receipt(&receipt, json)?;
    Ok(EXIT_OK)
}

fn print_receipt(receipt: &Receipt, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(receipt)?);
    } else {
        println!("{}", receipt.remote_dir);
        let rate = receipt.bytes as f64 / receipt.seconds.max(1e-9) / 1e6;
        eprintln!(
            "{}: shipped {} rows, {} images, {} bytes in {:.2} s ({rate:.1} MB/s) to {}; DONE written",
            receipt.batch, receipt.rows, receipt.files, receipt.bytes, receipt.seconds, receipt.remote_dir
        );
    }
    Ok(())
}
