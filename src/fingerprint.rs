//! What makes two batches the same: the fingerprint over every file's path, size and sha256,
//! each taken by validation as it read the file (the digest of what was checked: the content
//! key of the record, the duplicate guard's key, and what each uploaded file is compared with).

use crate::batchfs::{BatchDir, BatchFile, Opened};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
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

/// sha256 of bytes in memory, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// sha256 of one file of the batch, as hex.
pub fn hash_file(root: &Path, rel: &str) -> std::io::Result<String> {
    let Opened { mut file, size } = BatchDir::open(root)?.file(rel)?;
    Ok(hash_rest(Sha256::new(), &mut file, size, &mut Vec::new())?.0)
}

/// Goes on hashing from where `file` stands to its end: the sha256 as hex and the bytes read.
/// Reads through `buffer`, grown as `size` (the file's expected length) needs, to at most 1 MiB:
/// a small image does not cost a megabyte of zeroes.
pub fn hash_rest(mut hasher: Sha256, file: &mut File, size: u64, buffer: &mut Vec<u8>) -> std::io::Result<(String, u64)> {
    let want = (size as usize).clamp(4096, HASH_BUFFER_BYTES);
    if buffer.len() < want {
        buffer.resize(want, 0);
    }
    let mut read = 0;
    loop {
        match file.read(buffer) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buffer[..n]);
                read += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hex::encode(hasher.finalize()), read))
}
