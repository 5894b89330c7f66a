//! One session's share of a batch, pipelined across files on its own `sftp` subsystem channel:
//! the next files are OPENed while earlier ones are written, WRITEs stay in flight up to a
//! window (bytes and count), then FSTAT and CLOSE are sent without waiting, and replies are
//! matched by request id in whatever order they come. A file counts as shipped only when every
//! WRITE and its CLOSE were acknowledged OK and the server's FSTAT gave its full size; its sha256
//! (taken while reading) must equal the check's. A small file costs two round trips (OPEN, then
//! the rest), whatever order the server answers in: a reply out of order can only fail a file,
//! never pass one that is not whole.

use super::channel::{protocol, status_error, Conversation};
use super::session::Connection;
use super::wire::{self, Reply};
use super::ShipError;
use crate::batchfs::BatchDir;
use crate::batchfs::BatchFile;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// How much one session keeps in flight. WRITEs of 32 KiB: every SFTP server takes them.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub bytes: usize,
    pub requests: usize,
    pub open_files: usize,
    pub chunk_bytes: usize,
}

/// 512 files open on the server per session: a small file costs two round trips (OPEN, then
/// WRITEs + FSTAT + CLOSE), so this many at once hide them on a 150 ms link (small profile at
/// 150 ms: 6.9 s with 128, 4.9 s with 512; OpenSSH allows about 1,000 per session). Locally only
/// the file being read is open. `bytes` is the most; `for_round_trip` sizes it to the link.
pub const WINDOW: Window = Window { bytes: 8 * 1024 * 1024, requests: 4096, open_files: 512, chunk_bytes: 32 * 1024 };
/// Bytes in flight per session on a short link: 1 Gbit/s at 4 ms.
const MIN_WINDOW_BYTES: usize = 512 * 1024;
/// The rate a session's window is sized for: 1 Gbit/s.
const SESSION_BYTES_PER_SEC: f64 = 125e6;

impl Window {
    /// A window that carries 1 Gbit/s over this round trip, from 512 KiB to 8 MiB. More than the
    /// link needs only queues in the server: on loopback OpenSSH then grows its channel buffer
    /// to the whole window, copying it at each step (small profile: sshd's CPU 167 ms per batch
    /// with 2 MiB in flight, 82 ms with 512 KiB; wall 0.26 s -> 0.20 s).
    pub fn for_round_trip(round_trip: std::time::Duration) -> Window {
        let bytes = (round_trip.as_secs_f64() * SESSION_BYTES_PER_SEC) as usize;
        Window { bytes: bytes.clamp(MIN_WINDOW_BYTES, WINDOW.bytes), ..WINDOW }
    }
}
/// Unsent bytes queued for the channel before more requests are made.
const OUTBOX_BYTES: usize = 1024 * 1024;

/// Where a session gets its files and reports them; `Crew` in `upload` is the real one.
pub trait Files {
    /// The next file to upload, or `None` when there is none left or the shipment is stopping.
    fn take(&self) -> Option<&BatchFile>;
    /// A file's CLOSE was acknowledged: it is complete on the server with this sha256.
    fn shipped(&self, file: &BatchFile, sha256: String) -> Result<(), ShipError>;
    /// Bytes the server acknowledged.
    fn sent(&self, bytes: u64);
    /// True when another session failed: stop at once, it reports the error.
    fn abandoned(&self) -> bool;
    /// Right before each write to the socket: may the shipment still change the server?
    fn may_send(&self) -> Result<(), ShipError> {
        Ok(())
    }
}

/// A file being uploaded in this session.
struct Active<'f> {
    file: &'f BatchFile,
    /// Opened when its first byte is needed, closed once read: few descriptors however many
    /// files are open on the server.
    local: Option<File>,
    hasher: Sha256,
    handle: Option<Vec<u8>>,
    offset: u64,
    writes_out: usize,
    read_all: bool,
    close_sent: bool,
    size_verified: bool,
    closed: bool,
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    Open(usize),
    Write(usize, usize),
    Fstat(usize),
    Close(usize),
}

/// The requests in flight and what their replies mean: pure bookkeeping, no I/O but reading
/// the local files it uploads.
pub struct Flight<'f> {
    folder: String,
    root: &'f Path,
    /// The batch folder, opened at the first file this session reads.
    dir: Option<BatchDir>,
    window: Window,
    next_id: u32,
    pending: HashMap<u32, Pending>,
    slots: Vec<Option<Active<'f>>>,
    bytes_out: usize,
    outbox: Vec<u8>,
    sent_upto: usize,
    no_more_files: bool,
}

impl<'f> Flight<'f> {
    pub fn new(root: &'f Path, folder: &str, window: Window) -> Flight<'f> {
        Flight {
            folder: folder.to_owned(),
            root,
            dir: None,
            window,
            next_id: 1,
            pending: HashMap::new(),
            slots: Vec::new(),
            bytes_out: 0,
            outbox: Vec::new(),
            sent_upto: 0,
            no_more_files: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.no_more_files && self.pending.is_empty() && self.slots.iter().all(Option::is_none) && self.unsent().is_empty()
    }

    pub fn unsent(&self) -> &[u8] {
        &self.outbox[self.sent_upto..]
    }

    pub fn mark_sent(&mut self, n: usize) {
        self.sent_upto += n;
        // The outbox is refilled before it drains: drop what was sent, so memory stays bounded.
        if self.sent_upto == self.outbox.len() {
            self.outbox.clear();
            self.sent_upto = 0;
        } else if self.sent_upto >= OUTBOX_BYTES {
            self.outbox.drain(..self.sent_upto);
            self.sent_upto = 0;
        }
    }

    /// Queues every request the window allows: OPENs for new files, WRITEs, CLOSEs.
    pub fn fill(&mut self, files: &'f impl Files, buffer: &mut Vec<u8>) -> Result<(), ShipError> {
        while self.unsent().len() < OUTBOX_BYTES && self.pending.len() < self.window.requests {
            if !self.queue_one(files, buffer)? {
                break;
            }
        }
        Ok(())
    }

    /// Queues one request; false when nothing can be sent now.
    fn queue_one(&mut self, files: &'f impl Files, buffer: &mut Vec<u8>) -> Result<bool, ShipError> {
        // Finish what is open first: a WRITE or a CLOSE of the oldest file that can take one.
        for slot in 0..self.slots.len() {
            let Some(active) = self.slots[slot].as_mut() else { continue };
            let Some(handle) = active.handle.clone() else { continue };
            if !active.read_all {
                if self.bytes_out + self.window.chunk_bytes > self.window.bytes {
                    // No room for bytes, but an OPEN ahead is small: the next file's handle is
                    // then there when the window drains (no round trip lost between files).
                    return self.open_next(files);
                }
                buffer.resize(self.window.chunk_bytes, 0);
                if active.local.is_none() {
                    let dir = match &mut self.dir {
                        Some(dir) => dir,
                        empty => empty.insert(BatchDir::open(self.root).map_err(|source| read_error(active.file, source))?),
                    };
                    active.local = Some(dir.file(&active.file.path).map_err(|source| read_error(active.file, source))?.file);
                }
                let local = active.local.as_mut().expect("opened above");
                let (n, at_end) = read_some(local, buffer).map_err(|source| read_error(active.file, source))?;
                if active.offset + n as u64 > active.file.size {
                    return Err(changed(active.file, "it grew after it was validated".into()));
                }
                if at_end {
                    active.read_all = true;
                    active.local = None;
                    if active.offset + n as u64 != active.file.size {
                        let read = active.offset + n as u64;
                        return Err(changed(active.file, format!("{read} bytes read, {} when validated", active.file.size)));
                    }
                }
                if n > 0 {
                    active.hasher.update(&buffer[..n]);
                    let id = self.id(Pending::Write(slot, n));
                    let active = self.slots[slot].as_mut().expect("slot in use");
                    self.outbox.extend_from_slice(&wire::write_header(id, &handle, active.offset, n));
                    self.outbox.extend_from_slice(&buffer[..n]);
                    active.offset += n as u64;
                    active.writes_out += 1;
                    self.bytes_out += n;
                    return Ok(true);
                }
            }
            let active = self.slots[slot].as_mut().expect("slot in use");
            if active.read_all && !active.close_sent {
                // Behind its WRITEs on the same handle: the size the server then holds, and the close.
                active.close_sent = true;
                let id = self.id(Pending::Fstat(slot));
                self.outbox.extend_from_slice(&wire::fstat(id, &handle));
                let id = self.id(Pending::Close(slot));
                self.outbox.extend_from_slice(&wire::close(id, &handle));
                return Ok(true);
            }
        }
        self.open_next(files)
    }

    /// Takes the next file from the shared list, while this session has room for it: fewer than
    /// `open_files` open, and less than two windows of bytes still to write in those it has. A
    /// session that took every large file at once would leave the others idle (and one channel's
    /// window caps one session at about 2 MiB per round trip with OpenSSH).
    fn open_next(&mut self, files: &'f impl Files) -> Result<bool, ShipError> {
        let open = self.slots.iter().flatten();
        let (open_now, unwritten) =
            open.fold((0, 0u64), |(n, bytes), a| (n + 1, bytes + if a.read_all { 0 } else { a.file.size.saturating_sub(a.offset) }));
        if self.no_more_files || open_now >= self.window.open_files || unwritten >= 2 * self.window.bytes as u64 {
            return Ok(false);
        }
        let Some(file) = files.take() else {
            self.no_more_files = true;
            return Ok(false);
        };
        let active = Active {
            file,
            local: None,
            hasher: Sha256::new(),
            handle: None,
            offset: 0,
            writes_out: 0,
            read_all: false,
            close_sent: false,
            size_verified: false,
            closed: false,
        };
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[slot] = Some(active);
        let id = self.id(Pending::Open(slot));
        self.outbox.extend_from_slice(&wire::open(id, &format!("{}/{}", self.folder, file.path)));
        Ok(true)
    }

    fn id(&mut self, pending: Pending) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.pending.insert(id, pending);
        id
    }

    /// What a reply means for the request it answers; any status but OK fails the shipment,
    /// naming the file and the step.
    pub fn on_reply(&mut self, reply: Reply, files: &impl Files) -> Result<(), ShipError> {
        let id = reply.id().ok_or_else(|| protocol("a reply no request asked for"))?;
        let pending = self.pending.remove(&id).ok_or_else(|| protocol("a reply to no request"))?;
        let (slot, step) = match pending {
            Pending::Open(slot) => (slot, "creating"),
            Pending::Write(slot, _) => (slot, "writing"),
            Pending::Fstat(slot) => (slot, "checking the size of"),
            Pending::Close(slot) => (slot, "closing"),
        };
        let active = self.slots[slot].as_mut().ok_or_else(|| protocol("a reply for a finished file"))?;
        let shown = format!("{} in {}", active.file.label, self.folder);
        match (pending, reply) {
            (_, Reply::Status { code, message, .. }) if code != wire::FX_OK => return Err(status_error(step, &shown, code, &message)),
            (Pending::Open(_), Reply::Handle { handle, .. }) => active.handle = Some(handle),
            (Pending::Write(_, len), Reply::Status { .. }) => {
                active.writes_out -= 1;
                self.bytes_out -= len;
                files.sent(len as u64);
            }
            (Pending::Fstat(_), Reply::Attrs { size, .. }) => {
                let remote = size.ok_or_else(|| protocol("FSTAT answered without a size"))?;
                if remote != active.file.size {
                    return Err(ShipError::SizeMismatch { file: shown, local: active.file.size, remote });
                }
                active.size_verified = true;
            }
            (Pending::Close(_), Reply::Status { .. }) => active.closed = true,
            _ => return Err(protocol("a reply of the wrong kind")),
        }
        if active.closed && active.size_verified && active.writes_out == 0 {
            let done = self.slots[slot].take().expect("slot in use");
            files.shipped(done.file, hex::encode(done.hasher.finalize()))?;
            crate::failpoint::hit_counted("after_file");
        }
        Ok(())
    }
}

/// Runs one session's share on the connection's SFTP channel: sends and receives without
/// blocking until every file it took is closed on the server, or something fails.
pub fn upload(conn: &Connection, root: &Path, folder: &str, files: &impl Files) -> Result<(), ShipError> {
    conn.talk(|channel| {
        let window = Window::for_round_trip(channel.round_trip());
        let mut upload = Upload { flight: Flight::new(root, folder, window), files, buffer: Vec::new() };
        channel.drive(conn, &mut upload)
    })
}

/// A `Flight` with the files it takes from: the conversation a channel drives.
struct Upload<'f, F> {
    flight: Flight<'f>,
    files: &'f F,
    buffer: Vec<u8>,
}

impl<'f, F: Files> Conversation for Upload<'f, F> {
    fn fill(&mut self) -> Result<(), ShipError> {
        self.flight.fill(self.files, &mut self.buffer)
    }
    fn unsent(&self) -> &[u8] {
        self.flight.unsent()
    }
    fn mark_sent(&mut self, n: usize) {
        self.flight.mark_sent(n)
    }
    fn on_reply(&mut self, reply: Reply) -> Result<(), ShipError> {
        self.flight.on_reply(reply, self.files)
    }
    fn is_done(&self) -> bool {
        self.flight.is_done()
    }
    fn outstanding(&self) -> usize {
        self.flight.pending.len()
    }
    fn abandoned(&self) -> bool {
        self.files.abandoned()
    }
    fn may_send(&self) -> Result<(), ShipError> {
        self.files.may_send()
    }
    fn what(&self) -> String {
        format!("uploading into {}", self.flight.folder)
    }
}

/// Fills `buffer` as far as the file goes: the bytes read, and whether its end was reached.
fn read_some(file: &mut File, buffer: &mut [u8]) -> std::io::Result<(usize, bool)> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => return Ok((filled, true)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((filled, false))
}

fn read_error(file: &BatchFile, source: std::io::Error) -> ShipError {
    ShipError::LocalRead { file: file.label.clone(), source }
}

fn changed(file: &BatchFile, reason: String) -> ShipError {
    ShipError::LocalChanged { file: file.label.clone(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct List {
        files: Vec<BatchFile>,
        next: RefCell<usize>,
        shipped: RefCell<Vec<(String, String)>>,
    }

    impl Files for List {
        fn take(&self) -> Option<&BatchFile> {
            let i = *self.next.borrow();
            *self.next.borrow_mut() += 1;
            self.files.get(i)
        }
        fn shipped(&self, file: &BatchFile, sha256: String) -> Result<(), ShipError> {
            self.shipped.borrow_mut().push((file.path.clone(), sha256));
            Ok(())
        }
        fn sent(&self, _: u64) {}
        fn abandoned(&self) -> bool {
            false
        }
    }

    /// Two files in a folder, the first 70,000 bytes (three WRITEs), the second 10.
    fn two_files() -> (tempfile::TempDir, List) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), vec![7u8; 70_000]).unwrap();
        std::fs::write(dir.path().join("b.png"), b"0123456789").unwrap();
        let file = |path: &str, size, row| BatchFile { path: path.into(), size, label: format!("the image of row {row}, frontImage") };
        let files = vec![file("a.png", 70_000, 1), file("b.png", 10, 2)];
        (dir, List { files, next: RefCell::new(0), shipped: RefCell::default() })
    }

    /// The requests queued so far, as (kind, id).
    fn requests(flight: &mut Flight) -> Vec<(u8, u32)> {
        let mut out = Vec::new();
        let bytes = flight.unsent().to_vec();
        let mut rest = &bytes[..];
        while rest.len() >= 9 {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            out.push((rest[4], u32::from_be_bytes(rest[5..9].try_into().unwrap())));
            rest = &rest[4 + len..];
        }
        flight.mark_sent(bytes.len());
        out
    }

    fn ok(id: u32) -> Reply {
        Reply::Status { id, code: wire::FX_OK, message: String::new() }
    }

    fn attrs(id: u32, size: u64) -> Reply {
        Reply::Attrs { id, size: Some(size), is_dir: Some(false) }
    }

    #[test]
    fn files_are_opened_ahead_written_in_a_window_then_checked_and_closed_without_waiting() {
        let (dir, list) = two_files();
        let mut flight = Flight::new(dir.path(), "u", WINDOW);
        let mut buffer = Vec::new();
        flight.fill(&list, &mut buffer).unwrap();
        assert_eq!(requests(&mut flight), [(3, 1), (3, 2)], "both files opened before any reply");
        // Handles in reverse order: replies are matched by id.
        flight.on_reply(Reply::Handle { id: 2, handle: b"hb".to_vec() }, &list).unwrap();
        flight.on_reply(Reply::Handle { id: 1, handle: b"ha".to_vec() }, &list).unwrap();
        flight.fill(&list, &mut buffer).unwrap();
        assert_eq!(
            requests(&mut flight),
            [(6, 3), (6, 4), (6, 5), (8, 6), (4, 7), (6, 8), (8, 9), (4, 10)],
            "every WRITE, then FSTAT and CLOSE behind them on the same handle, all in flight at once"
        );
        for reply in [ok(8), attrs(9, 10), ok(10)] {
            flight.on_reply(reply, &list).unwrap();
        }
        assert_eq!(list.shipped.borrow().len(), 1, "b is whole: written, its size checked, closed");
        for reply in [ok(3), ok(4), attrs(6, 70_000), ok(7)] {
            flight.on_reply(reply, &list).unwrap();
        }
        assert_eq!(list.shipped.borrow().len(), 1, "a is closed but one of its WRITEs is not acknowledged yet");
        assert!(!flight.is_done());
        flight.on_reply(ok(5), &list).unwrap();
        flight.fill(&list, &mut buffer).unwrap();
        assert!(flight.is_done());
        let shipped = list.shipped.borrow();
        assert_eq!(shipped.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["b.png", "a.png"]);
        assert_eq!(shipped[0].1, hex::encode(Sha256::digest(b"0123456789")));
    }

    #[test]
    fn a_session_takes_no_more_files_than_two_windows_of_bytes_so_other_sessions_get_the_rest() {
        let (dir, list) = two_files();
        // Two windows are 68,000 bytes: less than a's 70,000.
        let window = Window { bytes: 34_000, requests: 512, open_files: 512, chunk_bytes: 32 * 1024 };
        let mut flight = Flight::new(dir.path(), "u", window);
        let mut buffer = Vec::new();
        flight.fill(&list, &mut buffer).unwrap();
        assert_eq!(requests(&mut flight), [(3, 1)], "only a is opened");
        assert_eq!(*list.next.borrow(), 1, "b is left in the shared list for another session");
        flight.on_reply(Reply::Handle { id: 1, handle: b"ha".to_vec() }, &list).unwrap();
        flight.fill(&list, &mut buffer).unwrap();
        assert_eq!(
            requests(&mut flight),
            [(6, 2), (3, 3)],
            "one WRITE fills the window; a has less than two windows left to write: b is opened ahead"
        );
        assert!(list.shipped.borrow().is_empty(), "while a is still being written");
    }

    #[test]
    fn an_error_status_for_each_request_or_a_short_file_fails_naming_the_file_and_the_step() {
        let cases = [
            (0, wire::FX_PERMISSION_DENIED, "permission denied on the server for the image of row 1, frontImage in u"),
            (0, wire::FX_NO_SUCH_FILE, "the image of row 1, frontImage in u has no parent folder"),
            (1, wire::FX_NO_SPACE_ON_FILESYSTEM, "disk or quota is full while writing the image of row 1, frontImage in u"),
            (1, 4, "writing the image of row 1, frontImage in u failed: the server answered SFTP status 4 (failure): nope"),
            (2, 4, "checking the size of the image of row 2, frontImage in u failed: the server answered SFTP status 4 (failure): nope"),
            (3, 4, "closing the image of row 2, frontImage in u failed: the server answered SFTP status 4 (failure): nope"),
            (4, 0, "the image of row 2, frontImage in u"),
        ];
        for (step, code, expected) in cases {
            let (dir, list) = two_files();
            let mut flight = Flight::new(dir.path(), "u", WINDOW);
            let mut buffer = Vec::new();
            flight.fill(&list, &mut buffer).unwrap();
            requests(&mut flight);
            let fail = |id| Reply::Status { id, code, message: "nope".into() };
            let error = match step {
                0 => flight.on_reply(fail(1), &list).unwrap_err(),
                1 => {
                    flight.on_reply(Reply::Handle { id: 1, handle: b"ha".to_vec() }, &list).unwrap();
                    flight.fill(&list, &mut buffer).unwrap();
                    requests(&mut flight);
                    flight.on_reply(fail(3), &list).unwrap_err()
                }
                _ => {
                    flight.on_reply(Reply::Handle { id: 2, handle: b"hb".to_vec() }, &list).unwrap();
                    flight.fill(&list, &mut buffer).unwrap();
                    assert_eq!(requests(&mut flight), [(6, 3), (8, 4), (4, 5)]);
                    flight.on_reply(ok(3), &list).unwrap();
                    match step {
                        2 => flight.on_reply(fail(4), &list).unwrap_err(),
                        3 => {
                            flight.on_reply(attrs(4, 10), &list).unwrap();
                            flight.on_reply(fail(5), &list).unwrap_err()
                        }
                        _ => flight.on_reply(attrs(4, 9), &list).unwrap_err(),
                    }
                }
            };
            assert!(error.to_string().contains(expected), "{error}");
            assert!(!error.to_string().contains(".png"), "a file name in {error}");
            assert!(list.shipped.borrow().is_empty());
        }
    }

    #[test]
    fn a_reply_of_the_wrong_kind_is_a_protocol_error() {
        let (dir, list) = two_files();
        let mut flight = Flight::new(dir.path(), "u", WINDOW);
        flight.fill(&list, &mut Vec::new()).unwrap();
        requests(&mut flight);
        let error = flight.on_reply(attrs(1, 10), &list).unwrap_err();
        assert!(error.to_string().contains("a reply of the wrong kind"), "{error}");
    }

    #[test]
    fn the_outbox_stays_bounded_while_it_is_refilled_before_it_drains() {
        let (dir, list) = two_files();
        let mut flight = Flight::new(dir.path(), "u", WINDOW);
        for _ in 0..10 {
            flight.outbox.extend_from_slice(&vec![0u8; OUTBOX_BYTES / 2]);
            let half = flight.unsent().len() / 2;
            flight.mark_sent(half.max(1));
        }
        assert!(flight.outbox.len() <= 3 * OUTBOX_BYTES, "{} bytes kept", flight.outbox.len());
        drop(list);
    }

    #[test]
    fn a_session_keeps_in_flight_what_a_gigabit_carries_over_its_round_trip() {
        let bytes = |ms| Window::for_round_trip(std::time::Duration::from_micros(ms)).bytes;
        assert_eq!(bytes(60), 512 * 1024, "loopback: no more than the server can take at once");
        assert_eq!(bytes(20_000), 2_500_000, "20 ms");
        assert_eq!(bytes(50_000), 6_250_000, "50 ms");
        assert_eq!(bytes(150_000), 8 * 1024 * 1024, "150 ms: the most a session keeps in flight");
        assert_eq!(Window::for_round_trip(std::time::Duration::ZERO).requests, WINDOW.requests);
    }

    #[test]
    fn a_reply_to_nothing_is_a_protocol_error_and_a_small_window_holds_writes_back() {
        let (dir, list) = two_files();
        let window = Window { bytes: 40_000, requests: 512, open_files: 1, chunk_bytes: 32 * 1024 };
        let mut flight = Flight::new(dir.path(), "u", window);
        let mut buffer = Vec::new();
        flight.fill(&list, &mut buffer).unwrap();
        assert_eq!(requests(&mut flight), [(3, 1)], "one file open at a time");
        assert!(flight.on_reply(ok(99), &list).unwrap_err().to_string().contains("a reply to no request"));
        flight.on_reply(Reply::Handle { id: 1, handle: b"ha".to_vec() }, &list).unwrap();
        flight.fill(&list, &mut buffer).unwrap();
        assert_eq!(requests(&mut flight), [(6, 2)], "40,000 bytes of window: one 32 KiB WRITE out");
        flight.on_reply(ok(2), &list).unwrap();
        flight.fill(&list, &mut buffer).unwrap();
        assert_eq!(requests(&mut flight), [(6, 3)]);
    }
}
