//! Our own `sftp` subsystem channel on a session: opened once per connection (kept while the
//! connection is pooled), and driven without blocking for one conversation at a time: an
//! upload's requests (`pipeline::Flight`) or a few single requests (MKDIR, STAT, DONE), replies
//! matched by request id in whatever order they come.

use super::session::Connection;
use super::wire::{self, Decoder, Reply};
use super::{fenced, ShipError};
use crate::delivery::Fence;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

/// libssh2's "would block", which ssh2 reports as a session error.
const LIBSSH2_ERROR_EAGAIN: i32 = -37;

/// Requests going out and replies coming in, with no I/O of its own.
pub trait Conversation {
    /// Queues whatever may be sent now.
    fn fill(&mut self) -> Result<(), ShipError>;
    fn unsent(&self) -> &[u8];
    fn mark_sent(&mut self, n: usize);
    fn on_reply(&mut self, reply: Reply) -> Result<(), ShipError>;
    /// Nothing left to send or to wait for.
    fn is_done(&self) -> bool;
    /// Requests sent and not answered yet.
    fn outstanding(&self) -> usize;
    /// True when it should end at once (another session failed and reports the error).
    fn abandoned(&self) -> bool {
        false
    }
    /// Asked right before each write to the socket: may this conversation still change the
    /// server? An error ends it there, with what is queued dropped, never flushed (a lease lost).
    fn may_send(&self) -> Result<(), ShipError> {
        Ok(())
    }
    /// What it is doing, for a timeout or a lost connection.
    fn what(&self) -> String;
}

pub struct SftpChannel {
    channel: ssh2::Channel,
    decoder: Decoder,
    incoming: Vec<u8>,
    /// How long the server took to confirm this channel: one round trip, measured once.
    round_trip: Duration,
}

impl SftpChannel {
    /// Opens the `sftp` subsystem on a channel of its own and says hello (blocking, with the
    /// session's timeout). The hello follows the subsystem request without waiting for its
    /// reply, as OpenSSH's client does: the server handles a channel's messages in order, and
    /// a refused subsystem still fails here, from the reply. One round trip less per connection.
    pub fn open(conn: &Connection) -> Result<SftpChannel, ShipError> {
        let asked = Instant::now();
        let mut channel = conn.session.channel_session().map_err(|e| conn.error(e, "opening an SFTP channel", ""))?;
        let round_trip = asked.elapsed();
        let init = wire::init();
        conn.session.set_blocking(false);
        let requested = channel.subsystem("sftp");
        let pending = matches!(&requested, Err(e) if e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_EAGAIN));
        // Sent only when the request has left libssh2 (it refuses other data while a packet is
        // half sent); a partial or refused write is finished below, with the same bytes.
        let early = if pending { channel.write(&init).unwrap_or(0) } else { 0 };
        conn.session.set_blocking(true);
        // A pending request resumes here and waits for its reply.
        let started = if pending { channel.subsystem("sftp") } else { requested };
        started.map_err(|e| conn.error(e, "starting the sftp subsystem", ""))?;
        channel.write_all(&init[early..]).map_err(|e| lost(conn, "the SFTP hello".into(), e))?;
        let mut decoder = Decoder::default();
        let mut buf = [0u8; 1024];
        loop {
            let n = channel.read(&mut buf).map_err(|e| lost(conn, "the SFTP hello".into(), e))?;
            if n == 0 {
                return Err(lost(conn, "the SFTP hello".into(), std::io::ErrorKind::UnexpectedEof.into()));
            }
            decoder.feed(&buf[..n]);
            match decoder.next_reply().map_err(|e| protocol(e.0))? {
                Some(Reply::Version(_)) => return Ok(SftpChannel { channel, decoder, incoming: vec![0u8; 64 * 1024], round_trip }),
                Some(_) => return Err(protocol("the server did not answer INIT with VERSION")),
                None => {}
            }
        }
    }

    /// The round trip to the server, as the channel's opening measured it (a message the
    /// server answers at once, with no process to start or file to touch).
    pub fn round_trip(&self) -> Duration {
        self.round_trip
    }

    /// Sends and receives without blocking until the conversation is done, fails, or the server
    /// has said nothing for the session's timeout. The session must be non-blocking.
    pub fn drive(&mut self, conn: &Connection, talk: &mut impl Conversation) -> Result<(), ShipError> {
        let timeout = Duration::from_secs(conn.timeout_secs);
        let mut last_progress = Instant::now();
        loop {
            // A lease lost while we waited: what is queued here and in libssh2 never leaves.
            if let Err(stop) = talk.may_send() {
                conn.abort();
                return Err(stop);
            }
            if talk.abandoned() {
                if talk.outstanding() > 0 {
                    // Replies still on their way: this channel cannot serve another conversation.
                    conn.failed();
                }
                return Ok(());
            }
            talk.fill()?;
            if talk.is_done() {
                return Ok(());
            }
            let mut progressed = false;
            while !talk.unsent().is_empty() {
                crate::failpoint::hit_counted("before_send");
                if let Err(stop) = talk.may_send() {
                    conn.abort();
                    return Err(stop);
                }
                match self.channel.write(talk.unsent()) {
                    Ok(0) => break,
                    Ok(n) => {
                        talk.mark_sent(n);
                        progressed = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(lost(conn, talk.what(), e)),
                }
            }
            loop {
                match self.channel.read(&mut self.incoming) {
                    Ok(0) if self.channel.eof() => return Err(lost(conn, talk.what(), std::io::ErrorKind::UnexpectedEof.into())),
                    Ok(0) => break,
                    Ok(n) => {
                        self.decoder.feed(&self.incoming[..n]);
                        progressed = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(lost(conn, talk.what(), e)),
                }
            }
            while let Some(reply) = self.decoder.next_reply().map_err(|e| protocol(e.0))? {
                talk.on_reply(reply)?;
            }
            if progressed {
                last_progress = Instant::now();
                continue;
            }
            let waited = last_progress.elapsed();
            if waited >= timeout {
                return Err(ShipError::Timeout { what: talk.what(), addr: conn.addr.clone(), secs: conn.timeout_secs });
            }
            wait_for_socket(conn, timeout - waited);
        }
    }
}

/// A few requests sent at once; their replies in the order they were asked. Each write of
/// them to the socket is fenced like an upload's.
pub struct Calls<'f> {
    what: String,
    outbox: Vec<u8>,
    sent: usize,
    replies: Vec<Option<Reply>>,
    answered: usize,
    fence: &'f dyn Fence,
}

/// One request of `Calls`.
pub enum Request<'a> {
    Mkdir(&'a str),
    Stat(&'a str),
    /// OPEN that creates the file or fails because it is there.
    CreateNew(&'a str),
    /// OPEN that cuts an existing file to nothing.
    Truncate(&'a str),
    Close(&'a [u8]),
}

impl<'f> Calls<'f> {
    pub fn new(what: impl Into<String>, requests: &[Request], fence: &'f dyn Fence) -> Calls<'f> {
        let mut outbox = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            let id = i as u32 + 1;
            outbox.extend(match request {
                Request::Mkdir(path) => wire::mkdir(id, path),
                Request::Stat(path) => wire::stat(id, path),
                Request::CreateNew(path) => wire::open_exclusive(id, path),
                Request::Truncate(path) => wire::open_truncate(id, path),
                Request::Close(handle) => wire::close(id, handle),
            });
        }
        Calls { what: what.into(), outbox, sent: 0, replies: vec![None; requests.len()], answered: 0, fence }
    }

    pub fn replies(self) -> Vec<Reply> {
        self.replies.into_iter().flatten().collect()
    }
}

impl Conversation for Calls<'_> {
    fn fill(&mut self) -> Result<(), ShipError> {
        Ok(())
    }
    fn may_send(&self) -> Result<(), ShipError> {
        fenced(self.fence)
    }
    fn unsent(&self) -> &[u8] {
        &self.outbox[self.sent..]
    }
    fn mark_sent(&mut self, n: usize) {
        self.sent += n;
    }
    fn on_reply(&mut self, reply: Reply) -> Result<(), ShipError> {
        let slot = reply
            .id()
            .and_then(|id| self.replies.get_mut((id as usize).wrapping_sub(1)))
            .filter(|slot| slot.is_none())
            .ok_or_else(|| protocol("a reply to no request"))?;
        *slot = Some(reply);
        self.answered += 1;
        Ok(())
    }
    fn is_done(&self) -> bool {
        self.answered == self.replies.len()
    }
    fn outstanding(&self) -> usize {
        self.replies.len() - self.answered
    }
    fn what(&self) -> String {
        self.what.clone()
    }
}

/// Sleeps until the socket can move the way libssh2 waits for, or `limit` passes: replies in
/// always; room out only when libssh2 is stuck sending on the socket. Bytes that wait for the
/// channel's window wait for the server's window adjust, which comes in: polling for room out
/// then would spin on a writable socket and burn the core the server needs.
fn wait_for_socket(conn: &Connection, limit: Duration) {
    let stuck_sending = matches!(conn.session.block_directions(), ssh2::BlockDirections::Outbound | ssh2::BlockDirections::Both);
    let events = if stuck_sending { libc::POLLIN | libc::POLLOUT } else { libc::POLLIN };
    let mut fd = libc::pollfd { fd: conn.session.as_raw_fd(), events, revents: 0 };
    let millis = limit.as_millis().clamp(1, 1000) as libc::c_int;
    // SAFETY: one valid pollfd on the stack, its count 1; the socket stays open for the call.
    unsafe { libc::poll(&mut fd, 1, millis) };
}

pub fn protocol(what: &'static str) -> ShipError {
    ShipError::Ssh { what: "the SFTP conversation".into(), message: format!("the server broke the protocol: {what}") }
}

fn lost(conn: &Connection, what: String, e: std::io::Error) -> ShipError {
    conn.failed();
    ShipError::Ssh { what, message: format!("the connection failed ({e})") }
}

/// A non-OK status for `step` on `shown`, classified as `ShipError::from_ssh` does.
pub fn status_error(step: &str, shown: &str, code: u32, message: &str) -> ShipError {
    match code {
        wire::FX_NO_SUCH_FILE => ShipError::RemoteMissing { path: shown.to_owned() },
        wire::FX_PERMISSION_DENIED => ShipError::PermissionDenied { path: shown.to_owned() },
        wire::FX_NO_SPACE_ON_FILESYSTEM | wire::FX_QUOTA_EXCEEDED => ShipError::RemoteFull { path: shown.to_owned() },
        _ => ShipError::Ssh {
            what: format!("{step} {shown}"),
            message: format!("the server answered SFTP status {code} ({}){}", wire::status_name(code), shown_message(message)),
        },
    }
}

fn shown_message(message: &str) -> String {
    let message = crate::folders::shown(message.trim());
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}
