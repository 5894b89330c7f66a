//! The images a batch names: where they are, what they are, how big. Reads headers only.

use super::csv_rules::ImageRef;
use super::problem::Findings;
use crate::batchfs::{in_parallel, BatchDir, BatchFile, Opened};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

pub const MAX_IMAGE_BYTES: u64 = 15_000_000;
pub const MAX_IMAGE_PIXELS_PER_SIDE: usize = 8000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jpeg,
    Png,
    Pdf,
    Other(&'static str),
}

/// The images a batch will ship and the sha256 of each, taken as the check read it.
pub struct Images {
    pub files: Vec<BatchFile>,
    pub sha256: BTreeMap<String, String>,
}

/// Checks every referenced image once (a file named by several rows is checked once, and each
/// row gets its own problem), on as many threads as there are cores; returns the files to
/// ship, sorted by path, with their digests when `digest` (each file then read whole): what is
/// shipped is compared with what was checked.
/// `markers` are top-level names an image may not have (Jumio's DONE, the local ready marker).
/// Err when this host ran short of descriptors or memory while reading: nothing is known of
/// the batch then (never a verdict on it).
pub fn check_images(root: &Path, refs: &[ImageRef], markers: &[&str], digest: bool, out: &mut Findings) -> Result<Images, std::io::Error> {
    let mut labels: BTreeMap<&str, String> = BTreeMap::new();
    for image in refs {
        labels.entry(image.path.as_str()).or_insert_with(|| format!("the image of row {}, {}", image.row, image.column));
    }
    let dir = BatchDir::open(root);
    let paths: Vec<&str> = labels.keys().copied().collect();
    let verdicts: BTreeMap<&str, Verdict> = paths
        .iter()
        .copied()
        .zip(in_parallel(&paths, |path, buffer| check_one(root, &dir, path, markers, digest.then_some(buffer))))
        .collect();
    if let Some(Err((_, why))) = verdicts.values().find(|v| matches!(v, Err((code, _)) if *code == EXHAUSTED)) {
        return Err(std::io::Error::other(why.clone()));
    }
    for image in refs {
        match &verdicts[image.path.as_str()] {
            Ok(checked) if checked.format == Format::Pdf && !image.allows_pdf => {
                out.error(
                    Some(image.row),
                    Some(&image.column),
                    "image_bad_format",
                    "the file is a PDF; this column needs a JPEG or PNG photo",
                );
            }
            Ok(_) => {}
            Err((code, message)) => out.error(Some(image.row), Some(&image.column), code, message.clone()),
        }
    }
    let mut images = Images { files: Vec::new(), sha256: BTreeMap::new() };
    for (path, verdict) in verdicts {
        if let Ok(checked) = verdict {
            images.files.push(BatchFile { path: path.to_owned(), size: checked.size, label: labels[path].clone() });
            if let Some(sha256) = checked.sha256 {
                images.sha256.insert(path.to_owned(), sha256);
            }
        }
    }
    Ok(images)
}

/// The verdict of a file this host could not read for want of descriptors or memory.
const EXHAUSTED: &str = "host_out_of_resources";

/// An image that passed: its size, format and (when asked for) sha256.
struct Checked {
    size: u64,
    format: Format,
    sha256: Option<String>,
}

type Verdict = Result<Checked, (&'static str, String)>;

/// Checks one image; with a `buffer`, reads it whole through it and takes its sha256.
fn check_one(root: &Path, dir: &std::io::Result<BatchDir>, rel: &str, markers: &[&str], buffer: Option<&mut Vec<u8>>) -> Verdict {
    check_path_shape(rel)?;
    if markers.iter().any(|m| m.eq_ignore_ascii_case(rel)) {
        return Err((
            "image_named_like_marker",
            format!("the file is called `{rel}`, the name of the file that starts Jumio's processing (and of the ready marker); rename the image (e.g. {rel}.jpg) in the folder and the CSV"),
        ));
    }
    let opened = match dir {
        Ok(dir) => dir.file(rel),
        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
    };
    let Opened { mut file, size } = opened.map_err(|e| match crate::batchfs::is_exhausted(&e) {
        true => (EXHAUSTED, format!("this host ran short while opening a file of the batch ({e})")),
        false => unopenable(root, rel, &e),
    })?;
    if size == 0 {
        return Err(("image_empty", "the file is empty (0 bytes); copy the image again".to_owned()));
    }
    if size > MAX_IMAGE_BYTES {
        return Err((
            "image_too_large",
            format!(
                "the file is {:.1} MB; Jumio accepts at most 15 MB: re-save it with more compression or a lower resolution",
                size as f64 / 1e6
            ),
        ));
    }
    let head = read_head(&mut file).map_err(|_| unreadable())?;
    let format = classify(&head);
    match format {
        Format::Jpeg | Format::Png => check_dimensions(&head, size, &mut file)?,
        Format::Pdf => {}
        Format::Other(kind) => {
            return Err((
                "image_bad_format",
                format!("the content is {kind}, not JPEG or PNG (or PDF for document images); convert it to JPEG"),
            ));
        }
    }
    let Some(buffer) = buffer else { return Ok(Checked { size, format, sha256: None }) };
    let (sha256, read) = if head.len() < HEAD_BYTES {
        // The head reached the end: it is the whole file.
        (hex::encode(Sha256::digest(&head)), head.len() as u64)
    } else {
        // The rest into the digest, from where the head ended (a dimension search may have read on).
        file.seek(SeekFrom::Start(head.len() as u64)).map_err(|_| unreadable())?;
        let hasher = Sha256::new_with_prefix(&head);
        let (sha256, rest) = crate::fingerprint::hash_rest(hasher, &mut file, size, buffer).map_err(|_| unreadable())?;
        (sha256, head.len() as u64 + rest)
    };
    if read != size {
        return Err((
            "image_unreadable",
            "the file changed while it was being checked (still being copied?); drop the batch again once every file is complete"
                .to_owned(),
        ));
    }
    Ok(Checked { size, format, sha256: Some(sha256) })
}

fn unreadable() -> (&'static str, String) {
    ("image_unreadable", "the file cannot be read; check its permissions".to_owned())
}

/// Why an image named by the CSV could not be opened, as a code and what to do.
fn unopenable(root: &Path, rel: &str, e: &std::io::Error) -> (&'static str, String) {
    use std::io::ErrorKind::*;
    match e.kind() {
        _ if crate::batchfs::is_outside(e) => (
            "image_outside_batch",
            "the path leads outside the batch folder (through a symbolic link); copy the image into the batch folder instead".to_owned(),
        ),
        NotFound if std::fs::symlink_metadata(root.join(rel)).is_ok() => {
            ("image_missing", "is a symbolic link to a file that does not exist; copy the real image into the batch folder".to_owned())
        }
        NotFound | NotADirectory => missing(root, rel),
        InvalidInput => {
            ("image_not_a_file", "names a folder or special file, not an image file; give the path of the image itself".to_owned())
        }
        _ => unreadable(),
    }
}

fn check_path_shape(rel: &str) -> Result<(), (&'static str, String)> {
    if rel.contains('\\') {
        return Err(("image_path_backslash", "the path uses `\\`; separate folders with `/` (e.g. images/front.jpg)".to_owned()));
    }
    let path = Path::new(rel);
    if path.is_absolute() || rel.starts_with('~') {
        return Err((
            "image_path_absolute",
            "the path is absolute; give it relative to the batch folder (e.g. images/front.jpg)".to_owned(),
        ));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(("image_path_outside_batch", "the path contains `..`; images must be inside the batch folder".to_owned()));
    }
    if rel.trim() != rel {
        return Err(("image_path_whitespace", "the path has spaces at its start or end; remove them".to_owned()));
    }
    if rel.split('/').any(|part| part.is_empty() || part == ".") {
        return Err((
            "image_path_not_canonical",
            "the path contains `./`, `//` or ends with `/`; write it plainly, folders separated by one `/` (e.g. images/front.jpg)"
                .to_owned(),
        ));
    }
    Ok(())
}

fn missing(root: &Path, rel: &str) -> (&'static str, String) {
    match case_insensitive_match(root, rel) {
        Some(found) => ("image_missing", format!("no such file in the batch folder, but `{found}` differs only in upper/lower case; names are case-sensitive: fix the name in the CSV or the file")),
        None => ("image_missing", "no such file in the batch folder; copy the image in or correct the path (relative to input.csv, case-sensitive)".to_owned()),
    }
}

fn case_insensitive_match(root: &Path, rel: &str) -> Option<String> {
    let mut dir = root.to_path_buf();
    let mut found = Vec::new();
    for part in rel.split('/') {
        let entry = std::fs::read_dir(&dir).ok()?.flatten().find(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(part))?;
        found.push(entry.file_name().to_string_lossy().into_owned());
        dir = entry.path();
    }
    Some(found.join("/"))
}

/// The first bytes of an image: its format and, nearly always, its dimensions are in them.
const HEAD_BYTES: usize = 64 * 1024;

/// Reads the first `HEAD_BYTES` of the file (all of a smaller one) in one pass.
fn read_head(file: &mut File) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    file.take(HEAD_BYTES as u64).read_to_end(&mut head)?;
    Ok(head)
}

fn classify(head: &[u8]) -> Format {
    match head {
        [0xFF, 0xD8, 0xFF, ..] => Format::Jpeg,
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Format::Png,
        [b'%', b'P', b'D', b'F', b'-', ..] => Format::Pdf,
        [b'G', b'I', b'F', b'8', ..] => Format::Other("GIF"),
        [b'B', b'M', ..] => Format::Other("BMP"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Format::Other("WebP"),
        [_, _, _, _, b'f', b't', b'y', b'p', b'h', b'e', b'i', b'c' | b'x', ..]
        | [_, _, _, _, b'f', b't', b'y', b'p', b'm', b'i', b'f', b'1', ..] => Format::Other("HEIC (iPhone photo)"),
        [b'I', b'I', 0x2A, 0x00, ..] | [b'M', b'M', 0x00, 0x2A, ..] => Format::Other("TIFF"),
        _ => Format::Other("not a recognised image"),
    }
}

/// Pixels per side, from the head read already; the rest of the file is read only when the
/// dimensions lie beyond it (a JPEG with a large embedded thumbnail).
fn check_dimensions(head: &[u8], file_size: u64, file: &mut File) -> Result<(), (&'static str, String)> {
    let damaged = || ("image_unreadable", "the image header is damaged or cut off; export the image again".to_owned());
    let size = match imagesize::blob_size(head) {
        Ok(size) => size,
        Err(_) if (head.len() as u64) < file_size => {
            file.seek(SeekFrom::Start(0)).map_err(|_| damaged())?;
            imagesize::reader_size(BufReader::new(file)).map_err(|_| damaged())?
        }
        Err(_) => return Err(damaged()),
    };
    if size.width > MAX_IMAGE_PIXELS_PER_SIDE || size.height > MAX_IMAGE_PIXELS_PER_SIDE {
        return Err((
            "image_too_many_pixels",
            format!(
                "the image is {}x{} pixels; Jumio accepts at most {MAX_IMAGE_PIXELS_PER_SIDE}x{MAX_IMAGE_PIXELS_PER_SIDE}: scale it down",
                size.width, size.height
            ),
        ));
    }
    Ok(())
}

/// Files under `root` that nothing references, as paths with `/`, sorted; hidden entries and
/// the names in `ignore` (input.csv, the ready marker) are left out.
pub fn unreferenced_files(root: &Path, referenced: &HashSet<String>, ignore: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let path: PathBuf = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((path, rel));
            } else {
                let ignored = prefix.is_empty() && ignore.contains(&name.as_str());
                if !ignored && !referenced.contains(&rel) {
                    found.push(rel);
                }
            }
        }
    }
    found.sort();
    found
}
