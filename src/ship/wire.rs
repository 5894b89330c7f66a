//! The few SFTP v3 packets a pipelined upload needs (draft-ietf-secsh-filexfer-02): INIT and
//! VERSION, OPEN / HANDLE, WRITE, FSTAT / ATTRS, CLOSE, MKDIR, STAT, STATUS. Pure: requests become bytes, bytes become
//! replies, whatever way the bytes were cut into reads. Replies carry the request id, so they
//! may come in any order.

const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_WRITE: u8 = 6;
const FXP_FSTAT: u8 = 8;
const FXP_MKDIR: u8 = 14;
const FXP_STAT: u8 = 17;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_ATTRS: u8 = 105;

pub const FXF_WRITE: u32 = 0x02;
pub const FXF_CREAT: u32 = 0x08;
pub const FXF_TRUNC: u32 = 0x10;
pub const FXF_EXCL: u32 = 0x20;
const ATTR_SIZE: u32 = 0x01;
const ATTR_UIDGID: u32 = 0x02;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;
const ATTR_EXTENDED: u32 = 0x8000_0000;
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;

pub const FX_OK: u32 = 0;
pub const FX_FAILURE: u32 = 4;
pub const FX_NO_SUCH_FILE: u32 = 2;
pub const FX_PERMISSION_DENIED: u32 = 3;
pub const FX_NO_SPACE_ON_FILESYSTEM: u32 = 14;
pub const FX_QUOTA_EXCEEDED: u32 = 15;

/// Replies larger than this are not SFTP as we speak it (servers send small replies to uploads).
const MAX_REPLY_BYTES: usize = 256 * 1024;

/// A reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Version(u32),
    Status {
        id: u32,
        code: u32,
        message: String,
    },
    Handle {
        id: u32,
        handle: Vec<u8>,
    },
    /// A file's attributes (STAT, FSTAT): its size and whether it is a folder, where the server
    /// said.
    Attrs {
        id: u32,
        size: Option<u64>,
        is_dir: Option<bool>,
    },
    /// A reply of a kind an upload never asks for.
    Other {
        kind: u8,
    },
}

impl Reply {
    /// The id of the request it answers (VERSION and unknown kinds answer none).
    pub fn id(&self) -> Option<u32> {
        match self {
            Reply::Status { id, .. } | Reply::Handle { id, .. } | Reply::Attrs { id, .. } => Some(*id),
            Reply::Version(_) | Reply::Other { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server sent a malformed SFTP reply ({0})")]
pub struct Malformed(pub &'static str);

pub fn init() -> Vec<u8> {
    packet(FXP_INIT, |body| put_u32(body, 3))
}

/// OPEN for writing: created, truncated, mode 0644 (set by the OPEN itself: never a SETSTAT).
/// OPEN for writing a file of the batch: created if missing, never truncated. The whole file is
/// then written from its first byte, so what it held (nothing, or part of the same bytes) is
/// overwritten; and an OPEN that a server handles late (a stalled session of a host whose lease
/// ran out) changes nothing in a file another host completed meanwhile.
pub fn open(id: u32, path: &str) -> Vec<u8> {
    open_with(id, path, FXF_WRITE | FXF_CREAT)
}

/// OPEN that cuts an existing file to nothing (a file found longer than the batch's own).
pub fn open_truncate(id: u32, path: &str) -> Vec<u8> {
    open_with(id, path, FXF_WRITE | FXF_TRUNC)
}

/// OPEN that creates the file or fails: the file must not be there yet (DONE).
pub fn open_exclusive(id: u32, path: &str) -> Vec<u8> {
    open_with(id, path, FXF_WRITE | FXF_CREAT | FXF_EXCL)
}

fn open_with(id: u32, path: &str, flags: u32) -> Vec<u8> {
    packet(FXP_OPEN, |body| {
        put_u32(body, id);
        put_bytes(body, path.as_bytes());
        put_u32(body, flags);
        put_u32(body, ATTR_PERMISSIONS);
        put_u32(body, 0o644);
    })
}

/// MKDIR with mode 0755.
pub fn mkdir(id: u32, path: &str) -> Vec<u8> {
    packet(FXP_MKDIR, |body| {
        put_u32(body, id);
        put_bytes(body, path.as_bytes());
        put_u32(body, ATTR_PERMISSIONS);
        put_u32(body, 0o755);
    })
}

/// STAT of a path (links followed).
pub fn stat(id: u32, path: &str) -> Vec<u8> {
    packet(FXP_STAT, |body| {
        put_u32(body, id);
        put_bytes(body, path.as_bytes());
    })
}

/// FSTAT of an open handle: the size the server holds for the file being written.
pub fn fstat(id: u32, handle: &[u8]) -> Vec<u8> {
    packet(FXP_FSTAT, |body| {
        put_u32(body, id);
        put_bytes(body, handle);
    })
}

/// The header of a WRITE of `len` bytes at `offset`; the data follows it on the wire, so it is
/// never copied into the packet.
pub fn write_header(id: u32, handle: &[u8], offset: u64, len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + handle.len());
    body.push(FXP_WRITE);
    put_u32(&mut body, id);
    put_bytes(&mut body, handle);
    body.extend_from_slice(&offset.to_be_bytes());
    put_u32(&mut body, len as u32);
    let mut out = Vec::with_capacity(4 + body.len());
    put_u32(&mut out, (body.len() + len) as u32);
    out.extend_from_slice(&body);
    out
}

pub fn close(id: u32, handle: &[u8]) -> Vec<u8> {
    packet(FXP_CLOSE, |body| {
        put_u32(body, id);
        put_bytes(body, handle);
    })
}

fn packet(kind: u8, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut body = vec![kind];
    fill(&mut body);
    let mut out = Vec::with_capacity(4 + body.len());
    put_u32(&mut out, body.len() as u32);
    out.extend_from_slice(&body);
    out
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// Collects bytes as they arrive and hands out whole replies.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole reply, `None` until enough bytes arrived.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, Malformed> {
        let Some(len) = self.buffer.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
            return Ok(None);
        };
        if len == 0 || len > MAX_REPLY_BYTES {
            return Err(Malformed("impossible length"));
        }
        if self.buffer.len() < 4 + len {
            return Ok(None);
        }
        let body: Vec<u8> = self.buffer.drain(..4 + len).skip(4).collect();
        parse(&body).map(Some)
    }
}

fn parse(body: &[u8]) -> Result<Reply, Malformed> {
    let mut r = Reader(&body[1..]);
    Ok(match body[0] {
        FXP_VERSION => Reply::Version(r.u32()?),
        FXP_STATUS => {
            let (id, code) = (r.u32()?, r.u32()?);
            // Version 3 servers add a message and a language tag; some old ones send neither.
            let message = r.bytes().map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
            Reply::Status { id, code, message }
        }
        FXP_HANDLE => Reply::Handle { id: r.u32()?, handle: r.bytes()?.to_vec() },
        FXP_ATTRS => {
            let id = r.u32()?;
            let flags = r.u32()?;
            let size = if flags & ATTR_SIZE != 0 { Some(r.u64()?) } else { None };
            if flags & ATTR_UIDGID != 0 {
                r.u32()?;
                r.u32()?;
            }
            let is_dir = if flags & ATTR_PERMISSIONS != 0 { Some(r.u32()? & S_IFMT == S_IFDIR) } else { None };
            if flags & ATTR_ACMODTIME != 0 {
                r.u32()?;
                r.u32()?;
            }
            if flags & ATTR_EXTENDED != 0 {
                for _ in 0..r.u32()? {
                    r.bytes()?;
                    r.bytes()?;
                }
            }
            Reply::Attrs { id, size, is_dir }
        }
        kind => Reply::Other { kind },
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, Malformed> {
        let (head, rest) = self.0.split_first_chunk::<4>().ok_or(Malformed("cut short"))?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        let (head, rest) = self.0.split_first_chunk::<8>().ok_or(Malformed("cut short"))?;
        self.0 = rest;
        Ok(u64::from_be_bytes(*head))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u32()? as usize;
        let bytes = self.0.get(..len).ok_or(Malformed("cut short"))?;
        self.0 = &self.0[len..];
        Ok(bytes)
    }
}

/// The human name of a status code, for messages.
pub fn status_name(code: u32) -> &'static str {
    match code {
        FX_OK => "OK",
        1 => "EOF",
        FX_NO_SUCH_FILE => "no such file",
        FX_PERMISSION_DENIED => "permission denied",
        FX_FAILURE => "failure",
        5 => "bad message",
        6 => "no connection",
        7 => "connection lost",
        8 => "operation unsupported",
        11 => "file already exists",
        FX_NO_SPACE_ON_FILESYSTEM => "no space on filesystem",
        FX_QUOTA_EXCEEDED => "quota exceeded",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u32, code: u32, message: &str) -> Vec<u8> {
        packet(FXP_STATUS, |b| {
            put_u32(b, id);
            put_u32(b, code);
            put_bytes(b, message.as_bytes());
            put_bytes(b, b"en");
        })
    }

    fn handle(id: u32, h: &[u8]) -> Vec<u8> {
        packet(FXP_HANDLE, |b| {
            put_u32(b, id);
            put_bytes(b, h);
        })
    }

    fn drain(decoder: &mut Decoder) -> Vec<Reply> {
        std::iter::from_fn(|| decoder.next_reply().unwrap()).collect()
    }

    #[test]
    fn replies_come_out_whole_however_the_bytes_were_cut() {
        let stream =
            [handle(7, b"h-7"), status(9, FX_OK, "ok"), status(8, FX_PERMISSION_DENIED, "denied"), packet(FXP_VERSION, |b| put_u32(b, 3))]
                .concat();
        let expected = vec![
            Reply::Handle { id: 7, handle: b"h-7".to_vec() },
            Reply::Status { id: 9, code: FX_OK, message: "ok".into() },
            Reply::Status { id: 8, code: FX_PERMISSION_DENIED, message: "denied".into() },
            Reply::Version(3),
        ];
        for cut in [1, 2, 3, 5, 7, 13, stream.len()] {
            let mut decoder = Decoder::default();
            let mut got = Vec::new();
            for piece in stream.chunks(cut) {
                decoder.feed(piece);
                got.extend(drain(&mut decoder));
            }
            assert_eq!(got, expected, "cut every {cut} bytes");
        }
    }

    #[test]
    fn a_status_without_message_and_unknown_kinds_are_understood() {
        let mut decoder = Decoder::default();
        decoder.feed(&packet(FXP_STATUS, |b| {
            put_u32(b, 1);
            put_u32(b, FX_NO_SPACE_ON_FILESYSTEM);
        }));
        decoder.feed(&packet(104, |b| put_u32(b, 2)));
        assert_eq!(drain(&mut decoder), [Reply::Status { id: 1, code: 14, message: String::new() }, Reply::Other { kind: 104 }]);
    }

    #[test]
    fn attributes_give_the_size_and_whether_it_is_a_folder_whatever_else_they_hold() {
        let mut decoder = Decoder::default();
        decoder.feed(&packet(FXP_ATTRS, |b| {
            put_u32(b, 4);
            put_u32(b, ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME | ATTR_EXTENDED);
            b.extend_from_slice(&70_000u64.to_be_bytes());
            put_u32(b, 1000);
            put_u32(b, 1000);
            put_u32(b, 0o100644);
            put_u32(b, 1);
            put_u32(b, 2);
            put_u32(b, 1);
            put_bytes(b, b"name@example.com");
            put_bytes(b, b"value");
        }));
        decoder.feed(&packet(FXP_ATTRS, |b| {
            put_u32(b, 5);
            put_u32(b, ATTR_PERMISSIONS);
            put_u32(b, 0o040755);
        }));
        decoder.feed(&packet(FXP_ATTRS, |b| {
            put_u32(b, 6);
            put_u32(b, ATTR_SIZE);
            b.extend_from_slice(&[0, 0, 0]);
        }));
        assert_eq!(decoder.next_reply(), Ok(Some(Reply::Attrs { id: 4, size: Some(70_000), is_dir: Some(false) })));
        assert_eq!(decoder.next_reply(), Ok(Some(Reply::Attrs { id: 5, size: None, is_dir: Some(true) })));
        assert_eq!(decoder.next_reply(), Err(Malformed("cut short")));
    }

    #[test]
    fn malformed_replies_are_errors_not_hangs() {
        let mut decoder = Decoder::default();
        decoder.feed(&[0, 0, 0, 0]);
        assert!(decoder.next_reply().is_err());
        let mut decoder = Decoder::default();
        decoder.feed(&[0xff, 0, 0, 0]);
        assert!(decoder.next_reply().is_err());
        let mut decoder = Decoder::default();
        decoder.feed(&packet(FXP_HANDLE, |b| put_u32(b, 1)));
        assert_eq!(decoder.next_reply(), Err(Malformed("cut short")));
    }

    #[test]
    fn requests_are_encoded_as_the_draft_says() {
        assert_eq!(init(), [0, 0, 0, 5, 1, 0, 0, 0, 3]);
        let open = open(5, "u/a.png");
        assert_eq!(&open[..13], &[0, 0, 0, 28, 3, 0, 0, 0, 5, 0, 0, 0, 7]);
        assert_eq!(&open[13..20], b"u/a.png");
        assert_eq!(&open[20..], &[0, 0, 0, 0x0a, 0, 0, 0, 4, 0, 0, 1, 0xa4], "WRITE | CREAT: never TRUNC");
        let header = write_header(6, b"hh", 1 << 32, 3);
        assert_eq!(header, [0, 0, 0, 26, 6, 0, 0, 0, 6, 0, 0, 0, 2, b'h', b'h', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(close(4, b"h"), [0, 0, 0, 10, 4, 0, 0, 0, 4, 0, 0, 0, 1, b'h']);
        assert_eq!(fstat(9, b"h"), [0, 0, 0, 10, 8, 0, 0, 0, 9, 0, 0, 0, 1, b'h']);
        assert_eq!(stat(2, "u"), [0, 0, 0, 10, 17, 0, 0, 0, 2, 0, 0, 0, 1, b'u']);
        assert_eq!(mkdir(3, "u"), [0, 0, 0, 18, 14, 0, 0, 0, 3, 0, 0, 0, 1, b'u', 0, 0, 0, 4, 0, 0, 1, 0xed]);
        assert_eq!(&open_exclusive(1, "u/DONE")[19..23], &[0, 0, 0, 0x2a], "WRITE | CREAT | EXCL");
    }
}
