//! What makes two batches the same: the fingerprint over every file's path, size and sha256,
//! computed right after validation (the digest of what was checked: the content key of the
//! record, the duplicate guard's key, and what each uploaded file is compared with).

use crate::batchfs::{BatchDir, Opened};
use crate::validate::BatchFile;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

const HASH_BUFFER_BYTES: usize = 1 << 20;

/// sha256 over each file's path, size and sha256 (input.csv among them).
pub fn fingerprint(files: &[BatchFile], hashes: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for file in sorted(files) {
        let sha = hashes.get(&file.path).map(String::as_str).unwrap_or("");
        hasher.update(format!("{}\0{}\0{sha}\n", file.path, file.size));
    }
    hex::encode(hasher.finalize())
}

fn sorted(files: &[BatchFile]) -> Vec<&BatchFile> {
    let mut v: Vec<&BatchFile> = files.iter().collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// sha256 of each file, read from the batch folder (never from outside it), on as many threads
/// as there are cores: this pass stands between validation and the upload.
pub fn hash_files(root: &Path, files: &[BatchFile]) -> std::io::Result<BTreeMap<String, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len()).max(1);
    let next = AtomicUsize::new(0);
    let dir = BatchDir::open(root)?;
    let hash_some = || -> std::io::Result<Vec<(String, String)>> {
        let mut buffer = Vec::new();
        let mut out = Vec::new();
        while let Some(file) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
            out.push((file.path.clone(), hash_with(&dir, &file.path, &mut buffer)?));
        }
        Ok(out)
    };
    let parts: Vec<std::io::Result<Vec<(String, String)>>> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(hash_some)).collect();
        let mine = hash_some();
        std::iter::once(mine).chain(helpers.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))).collect()
    });
    let mut hashes = BTreeMap::new();
    for part in parts {
        hashes.extend(part?);
    }
    Ok(hashes)
}

/// sha256 of bytes in memory, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// sha256 of one file of the batch, as hex.
pub fn hash_file(root: &Path, rel: &str) -> std::io::Result<String> {
    hash_with(&BatchDir::open(root)?, rel, &mut Vec::new())
}

/// Reads through `buffer`, grown to at most 1 MiB as the file needs (a small image does not
/// cost a megabyte of zeroes).
fn hash_with(dir: &BatchDir, rel: &str, buffer: &mut Vec<u8>) -> std::io::Result<String> {
    let Opened { file: mut local, size } = dir.file(rel)?;
    let want = (size as usize).clamp(4096, HASH_BUFFER_BYTES);
    if buffer.len() < want {
        buffer.resize(want, 0);
    }
    let mut hasher = Sha256::new();
    loop {
        match local.read(buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}
