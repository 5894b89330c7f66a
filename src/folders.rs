//! Moving batch folders between the drop folders: atomic renames that never overwrite, and the
//! names a claimed folder carries in work/ (`<id>.<name>`: the record's id, then the dropped name).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Renames `src` to `dest_dir/name`, or `name-2`, `name-3`, ... if taken. Never overwrites.
pub fn move_unique(src: &Path, dest_dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    first_free(dest_dir, name, |candidate| rename_no_replace(src, candidate))
}

/// Creates the folder `parent/name`, or `name-2`, ... if taken.
pub fn create_unique_dir(parent: &Path, name: &str) -> std::io::Result<PathBuf> {
    first_free(parent, name, |candidate| std::fs::create_dir(candidate))
}

/// Puts the file `src` into `dir` as `name`, or `stem-2.ext`, ... if taken (a batch may hold a
/// file of that name): a report never replaces a file of the dropper's.
pub fn place_unique(src: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let (stem, ext) = name.rsplit_once('.').map_or((name, String::new()), |(s, e)| (s, format!(".{e}")));
    let placed =
        first_free_named(dir, |n| if n == 1 { name.to_owned() } else { format!("{stem}-{n}{ext}") }, |to| std::fs::hard_link(src, to))?;
    std::fs::remove_file(src)?;
    Ok(placed)
}

/// Tries `take` on `name`, `name-2`, `name-3`, ... until one is not AlreadyExists.
fn first_free(dir: &Path, name: &str, take: impl FnMut(&Path) -> std::io::Result<()>) -> std::io::Result<PathBuf> {
    first_free_named(dir, |n| if n == 1 { name.to_owned() } else { format!("{name}-{n}") }, take)
}

fn first_free_named(
    dir: &Path,
    name: impl Fn(usize) -> String,
    mut take: impl FnMut(&Path) -> std::io::Result<()>,
) -> std::io::Result<PathBuf> {
    for n in 1..10_000 {
        let candidate = dir.join(name(n));
        match take(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!("no free name for {} in {}", name(1), dir.display())))
}

/// rename(2) that fails with AlreadyExists instead of replacing (renameat2 RENAME_NOREPLACE;
/// where the filesystem lacks it, a check right before a plain rename).
pub fn rename_no_replace(src: &Path, dest: &Path) -> std::io::Result<()> {
    let c_src = CString::new(src.as_os_str().as_bytes())?;
    let c_dest = CString::new(dest.as_os_str().as_bytes())?;
    // SAFETY: both pointers are NUL-terminated strings that live until the call returns.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, c_src.as_ptr(), libc::AT_FDCWD, c_dest.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if std::fs::symlink_metadata(dest).is_ok() {
                return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
            }
            std::fs::rename(src, dest)
        }
        Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists)),
        _ => Err(err),
    }
}

/// The name of batch `id`'s folder in work/: its identity travels with the folder.
pub fn claimed_name(id: i64, name: &str) -> String {
    format!("{id}.{name}")
}

/// The record id and dropped name a folder in work/ carries, if it has the claimed form.
pub fn parse_claimed(folder: &str) -> Option<(i64, &str)> {
    let (id, name) = folder.split_once('.')?;
    let digits_only = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0');
    Some((id.parse().ok().filter(|_| digits_only)?, name)).filter(|(_, name)| !name.is_empty())
}

/// The last component of a drop-folder path, as shown in logs and reports and used for
/// destination names: control characters escaped (`\n`), so a name can never forge a log line.
pub fn folder_name(dir: &Path) -> String {
    dir.file_name().map(|n| shown(&n.to_string_lossy())).unwrap_or_else(|| "batch".into())
}

/// `name` with control characters escaped as Rust does (`\n`, `\u{1b}`).
pub fn shown(name: &str) -> String {
    name.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Claiming is a rename, so the inbox and the work folder must share a filesystem.
pub fn same_filesystem(a: &Path, b: &Path) -> std::io::Result<bool> {
    Ok(std::fs::metadata(a)?.dev() == std::fs::metadata(b)?.dev())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_name_gets_a_suffix_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, work) = (dir.path().join("inbox"), dir.path().join("work"));
        std::fs::create_dir_all(work.join("b")).unwrap();
        std::fs::create_dir_all(inbox.join("b")).unwrap();
        std::fs::write(inbox.join("b/input.csv"), "new").unwrap();
        let moved = move_unique(&inbox.join("b"), &work, "b").unwrap();
        assert_eq!(moved, work.join("b-2"));
        assert_eq!(std::fs::read_to_string(work.join("b-2/input.csv")).unwrap(), "new");
        assert!(work.join("b").is_dir(), "the empty folder already there is kept");
    }

    #[test]
    fn a_claimed_folder_name_carries_the_record_id() {
        assert_eq!(claimed_name(17, "daily"), "17.daily");
        assert_eq!(parse_claimed("17.daily"), Some((17, "daily")));
        assert_eq!(parse_claimed("17.2026.11.23"), Some((17, "2026.11.23")));
        for not_claimed in ["daily", "2026-11-23", ".17", "17.", "017.x", "x17.y", "-3.y"] {
            assert_eq!(parse_claimed(not_claimed), None, "{not_claimed}");
        }
    }
}
