//! What makes two batches the same: a cheap content key (known before shipping) and the full
//! fingerprint (known once every file was hashed, normally while it was uploaded).

use crate::validate::BatchFile;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

const HASH_BUFFER_BYTES: usize = 1 << 20;

/// sha256 over input.csv's bytes and each file's path and size.
pub fn content_key(root: &Path, files: &[BatchFile]) -> std::io::Result<String> {
    let csv = std::fs::read(root.join(crate::validate::INPUT_CSV))?;
    let mut hasher = Sha256::new();
    hasher.update(Sha256::digest(&csv));
    for file in sorted(files) {
        hasher.update(format!("{}\0{}\n", file.path, file.size));
    }
    Ok(hex::encode(hasher.finalize()))
}

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

/// sha256 of each file, read locally (for files not uploaded by this run).
pub fn hash_files(root: &Path, files: &[BatchFile]) -> std::io::Result<BTreeMap<String, String>> {
    let mut hashes = BTreeMap::new();
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    for file in files {
        let mut local = File::open(root.join(&file.path))?;
        let mut hasher = Sha256::new();
        loop {
            let n = local.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        hashes.insert(file.path.clone(), hex::encode(hasher.finalize()));
    }
    Ok(hashes)
}
