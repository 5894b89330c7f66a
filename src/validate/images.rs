//! The images a batch names: where they are, what they are, how big. Reads headers only.

use super::csv_rules::ImageRef;
use super::problem::Findings;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

pub const MAX_IMAGE_BYTES: u64 = 15_000_000;
pub const MAX_IMAGE_PIXELS_PER_SIDE: usize = 8000;

/// A file that will be shipped: its path inside the batch (with `/`) and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFile {
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jpeg,
    Png,
    Pdf,
    Other(&'static str),
}

/// Checks every referenced image once (a file named by several rows is checked once, and each
/// row gets its own problem); returns the files to ship, sorted by path.
pub fn check_images(root: &Path, refs: &[ImageRef], out: &mut Findings) -> Vec<BatchFile> {
    let canonical_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut verdicts: BTreeMap<&str, Verdict> = BTreeMap::new();
    for image in refs {
        let verdict = verdicts.entry(image.path.as_str()).or_insert_with(|| check_one(root, &canonical_root, &image.path));
        match verdict {
            Ok((_, Format::Pdf)) if !image.allows_pdf => {
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
    verdicts.into_iter().filter_map(|(path, v)| v.ok().map(|(size, _)| BatchFile { path: path.to_owned(), size })).collect()
}

type Verdict = Result<(u64, Format), (&'static str, String)>;

fn check_one(root: &Path, canonical_root: &Path, rel: &str) -> Verdict {
    check_path_shape(rel)?;
    let path = root.join(rel);
    let link = std::fs::symlink_metadata(&path).map_err(|_| missing(root, rel))?;
    if link.file_type().is_symlink() {
        let target = path.canonicalize().map_err(|_| {
            ("image_missing", "is a symbolic link to a file that does not exist; copy the real image into the batch folder".to_owned())
        })?;
        if !target.starts_with(canonical_root) {
            return Err((
                "image_outside_batch",
                "is a symbolic link to a file outside the batch folder; copy the image into the batch folder instead".to_owned(),
            ));
        }
    }
    let meta = std::fs::metadata(&path).map_err(|_| missing(root, rel))?;
    if !meta.is_file() {
        return Err((
            "image_not_a_file",
            "names a folder or special file, not an image file; give the path of the image itself".to_owned(),
        ));
    }
    let size = meta.len();
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
    let format = sniff(&path).map_err(|_| ("image_unreadable", "the file cannot be read; check its permissions".to_owned()))?;
    match format {
        Format::Jpeg | Format::Png => check_dimensions(&path)?,
        Format::Pdf => {}
        Format::Other(kind) => {
            return Err((
                "image_bad_format",
                format!("the content is {kind}, not JPEG or PNG (or PDF for document images); convert it to JPEG"),
            ));
        }
    }
    Ok((size, format))
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

fn sniff(path: &Path) -> std::io::Result<Format> {
    let mut head = [0u8; 16];
    let mut file = File::open(path)?;
    let mut len = 0;
    while len < head.len() {
        let n = file.read(&mut head[len..])?;
        if n == 0 {
            break;
        }
        len += n;
    }
    Ok(classify(&head[..len]))
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

fn check_dimensions(path: &Path) -> Result<(), (&'static str, String)> {
    let size = imagesize::size(path)
        .map_err(|_| ("image_unreadable", "the image header is damaged or cut off; export the image again".to_owned()))?;
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
