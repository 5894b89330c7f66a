//! Opening the files of a batch without ever leaving its folder: every path is resolved beneath
//! the batch folder by the kernel (`openat2` with `RESOLVE_BENEATH`: no `..`, no absolute link, no
//! link anywhere in the path that leads out), opened without blocking (a FIFO never hangs us),
//! and accepted only if it is a regular file. Validation, hashing and upload all read through here,
//! so what is shipped is read exactly as it was checked.

use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A file that will be shipped: its path inside the batch (with `/`), its size, and how
/// messages name it (`input.csv`, or the row and column that name an image: file names may be
/// personal, so they never appear in logs or errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFile {
    pub path: String,
    pub size: u64,
    pub label: String,
}

/// A batch folder held open: its files are opened beneath this descriptor, so a pass over
/// thousands of images opens the folder once (and keeps to the folder it opened, should the
/// name be moved meanwhile).
pub struct BatchDir {
    root: PathBuf,
    dir: File,
}

/// A regular file of the batch, open for reading, with its size when opened.
pub struct Opened {
    pub file: File,
    pub size: u64,
}

impl BatchDir {
    /// Opens the batch folder itself, which must be a folder, not a link to one.
    pub fn open(root: &Path) -> std::io::Result<BatchDir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = match rustix::fs::open(root, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::LOOP) => return Err(outside()),
            Err(e) => return Err(e.into()),
        };
        Ok(BatchDir { root: root.to_path_buf(), dir })
    }

    /// Opens `rel` (a path with `/`, relative to the folder) for reading, if it is a regular
    /// file that lies beneath the folder however its path is spelled or linked.
    pub fn file(&self, rel: &str) -> std::io::Result<Opened> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let file = match rustix::fs::openat2(&self.dir, rel, flags, Mode::empty(), ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS) {
            Ok(fd) => File::from(fd),
            // Kernels before 5.6 (or a sandbox that hides openat2): resolve, compare, then open.
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => open_resolved(&self.root, rel, flags)?,
            Err(rustix::io::Errno::XDEV) => return Err(outside()),
            Err(e) => return Err(e.into()),
        };
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file (a folder, FIFO, device or socket)"));
        }
        Ok(Opened { file, size: metadata.len() })
    }

    /// Reads a whole batch file of at most `cap` bytes; larger is an error (never read past `cap`).
    pub fn read_capped(&self, rel: &str, cap: u64) -> std::io::Result<Vec<u8>> {
        let Opened { file, size } = self.file(rel)?;
        let mut bytes = Vec::with_capacity(size.min(cap) as usize);
        file.take(cap + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > cap {
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, format!("larger than {cap} bytes")));
        }
        Ok(bytes)
    }
}

/// Reads one whole file of the batch at `root` (see `BatchDir::read_capped`).
pub fn read_capped(root: &Path, rel: &str, cap: u64) -> std::io::Result<Vec<u8>> {
    BatchDir::open(root)?.read_capped(rel, cap)
}

/// `check` of each item (a batch's files, say), in order, spread over the cores; each thread
/// reads through a buffer of its own.
pub fn in_parallel<T: Sync, R: Send>(items: &[T], check: impl Fn(&T, &mut Vec<u8>) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len()).max(1);
    let next = AtomicUsize::new(0);
    let some = || {
        let mut buffer = Vec::new();
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { return done };
            done.push((i, check(item, &mut buffer)));
        }
    };
    let mut done = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(some)).collect();
        let mut done = some();
        for helper in helpers {
            done.extend(helper.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        done
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// True when the error is this host running short (descriptors, memory), not the file: the
/// same read succeeds later, so it may neither reject a batch nor fail it for good.
pub fn is_exhausted(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS))
}

/// True when the error says the path leads out of the batch folder.
pub fn is_outside(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) || e.to_string().contains(OUTSIDE)
}

const OUTSIDE: &str = "leads outside the batch folder";

fn outside() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, OUTSIDE)
}

fn open_resolved(root: &Path, rel: &str, flags: OFlags) -> std::io::Result<File> {
    let (root, target) = (root.canonicalize()?, root.join(rel).canonicalize()?);
    if !target.starts_with(&root) {
        return Err(outside());
    }
    Ok(File::from(rustix::fs::open(&target, flags, Mode::empty())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn only_regular_files_beneath_the_folder_open_whatever_links_the_path_holds() {
        let top = tempfile::tempdir().unwrap();
        let (batch, elsewhere) = (top.path().join("batch"), top.path().join("elsewhere"));
        std::fs::create_dir_all(batch.join("img")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(batch.join("img/a.png"), b"inside").unwrap();
        std::fs::write(elsewhere.join("x.png"), b"outside").unwrap();
        symlink(&elsewhere, batch.join("linked")).unwrap();
        symlink("img/a.png", batch.join("alias.png")).unwrap();
        symlink("/dev/zero", batch.join("zero")).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, batch.join("fifo"), rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();

        assert_eq!(read_capped(&batch, "img/a.png", 100).unwrap(), b"inside");
        assert_eq!(read_capped(&batch, "alias.png", 100).unwrap(), b"inside", "a link within the batch is fine");
        let dir = BatchDir::open(&batch).unwrap();
        let refused = |rel: &str| dir.file(rel).err().unwrap_or_else(|| panic!("{rel} opened"));
        for leaving in ["linked/x.png", "../elsewhere/x.png", "zero"] {
            let e = refused(leaving);
            assert!(is_outside(&e), "{leaving}: {e}");
        }
        assert!(refused("fifo").to_string().contains("not a regular file"), "a FIFO is refused, not waited on");
        assert!(refused("img").to_string().contains("not a regular file"));
        assert_eq!(dir.file("img/a.png").unwrap().size, 6, "the size as opened");
        assert_eq!(read_capped(&batch, "img/a.png", 3).unwrap_err().kind(), std::io::ErrorKind::FileTooLarge);
    }
}
