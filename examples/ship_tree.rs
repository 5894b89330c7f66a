//! Benchmark helper: ships every file under DIR with the same engine `send` uses, skipping
//! validation (the "large" profile's 25 MB files exceed Jumio's 15 MB image limit).
//! usage: ship_tree CONFIG DIR

use jumio_batchd::batchfs::BatchFile;
use jumio_batchd::config::Config;
use jumio_batchd::delivery::{Progress, Unfenced};
use jumio_batchd::ship::{ship, Pool, Shipping};
use std::path::Path;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, dir] = args.as_slice() else { anyhow::bail!("usage: ship_tree CONFIG DIR") };
    let loaded = Config::load(Path::new(config))?;
    let root = Path::new(dir);
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                let path = e.path().strip_prefix(root)?.to_string_lossy().into_owned();
                files.push(BatchFile { label: path.clone(), path, size: e.metadata()?.len() });
            }
        }
    }
    // The digest of what is shipped, on every core as validation takes it (timed by
    // scripts/bench with the rest of the process, as send's validation is).
    let hashed =
        jumio_batchd::batchfs::in_parallel(&files, |f, _| Ok((f.path.clone(), jumio_batchd::fingerprint::hash_file(root, &f.path)?)));
    let checked = hashed.into_iter().collect::<std::io::Result<std::collections::BTreeMap<String, String>>>()?;
    let started = std::time::Instant::now();
    let uuid = uuid::Uuid::new_v4().to_string();
    let (progress, stop) = (Progress::default(), CancellationToken::new());
    let job =
        Shipping { root, files: &files, checked: &checked, uuid: &uuid, fresh: true, progress: &progress, stop: &stop, fence: &Unfenced };
    let shipment = ship(loaded.sftp()?, &Pool::none(), &job)?;
    println!("{} {} files {:.3} s", shipment.remote_dir, files.len(), started.elapsed().as_secs_f64());
    Ok(())
}
