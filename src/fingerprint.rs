//! What makes two batches the same: the fingerprint over every file's path, size and sha256,
//! computed right after validation (the digest of what was checked: the content key of the
//! record, the duplicate guard's key, and what each uploaded file is compared with).

use crate::validate::BatchFile;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

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

/// sha256 of each file, read from the batch folder (never from outside it).
pub fn hash_files(root: &Path, files: &[BatchFile]) -> std::io::Result<BTreeMap<String, String>> {
    files.iter().map(|file| Ok((file.path.clone(), hash_file(root, &file.path)?))).collect()
}

/// sha256 of one file of the batch, as hex.
pub fn hash_file(root: &Path, rel: &str) -> std::io::Result<String> {
    let mut local = crate::batchfs::open(root, rel)?;
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    let mut hasher = Sha256::new();
    loop {
        match local.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}
