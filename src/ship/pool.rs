//! Connections kept open between batches: a tiny batch then costs its requests, not a TCP and
//! SSH handshake, key exchange, authentication and channel opening per session. Only a
//! connection whose whole shipment went well comes back; one idle past `idle` or that the server
//! has spoken on or closed meanwhile is dropped (with its disconnect), never handed out; nor is
//! one whose server key known_hosts no longer trusts (re-read at every hand-out). A new
//! connection checks the host key against known_hosts, as every connection does.

use super::session::Connection;
use super::ShipError;
use crate::config::SftpConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    limit: usize,
    keep: Duration,
}

struct Idle {
    server: String,
    conn: Connection,
    since: Instant,
}

impl Pool {
    /// At most `limit` idle connections, each kept `keep` at the longest.
    pub fn new(limit: usize, keep: Duration) -> Pool {
        Pool { idle: Mutex::new(Vec::new()), limit: if keep.is_zero() { 0 } else { limit }, keep }
    }

    /// No pool: every connection is opened for one shipment and closed after it.
    pub fn none() -> Pool {
        Pool::new(0, Duration::ZERO)
    }

    /// An idle connection to this server that is still good, or a new one.
    pub fn take(&self, cfg: &SftpConfig) -> Result<Connection, ShipError> {
        let server = server_of(cfg);
        let found = {
            let mut idle = self.lock();
            idle.iter().rposition(|i| i.server == server).map(|at| idle.swap_remove(at))
        };
        if let Some(idle) = found {
            if idle.since.elapsed() < self.keep && quiet(&idle.conn) {
                if idle.conn.still_trusted(cfg) {
                    return Ok(idle.conn);
                }
                tracing::info!(server = %idle.conn.addr, "known_hosts changed and no longer trusts the key a kept connection was opened under; closing it and connecting anew");
            }
        }
        Connection::open(cfg)
    }

    /// Keeps connections for the next batch, unless failed or the pool is full; the others are
    /// closed, all at once.
    pub fn give(&self, cfg: &SftpConfig, conns: impl IntoIterator<Item = Connection>) {
        let mut closing = Vec::new();
        {
            let mut idle = self.lock();
            for conn in conns {
                if !conn.is_failed() && idle.len() < self.limit {
                    idle.push(Idle { server: server_of(cfg), conn, since: Instant::now() });
                } else {
                    closing.push(conn);
                }
            }
        }
        close_all(closing);
    }

    /// Closes the connections idle past their time; the daemon calls it as it goes.
    pub fn sweep(&self) {
        let expired: Vec<Idle> = {
            let mut idle = self.lock();
            let (keep, expired) = std::mem::take(&mut *idle).into_iter().partition(|i| i.since.elapsed() < self.keep);
            *idle = keep;
            expired
        };
        close_all(expired.into_iter().map(|i| i.conn).collect());
    }

    /// Connections idle now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        close_all(std::mem::take(&mut *self.lock()).into_iter().map(|i| i.conn).collect());
    }
}

/// Closes connections at once, one thread each: a close (channel close, disconnect) waits about
/// a round trip for the server, which one after the other would cost one round trip per session
/// at the end of every shipment and of `send`.
pub fn close_all(conns: Vec<Connection>) {
    if conns.len() <= 1 {
        return drop(conns);
    }
    std::thread::scope(|scope| {
        for conn in conns {
            scope.spawn(move || drop(conn));
        }
    });
}

/// Connections to one server as one user with one key are interchangeable.
fn server_of(cfg: &SftpConfig) -> String {
    format!("{}@{}:{} {} {}", cfg.user, cfg.host, cfg.port, cfg.private_key.display(), cfg.known_hosts.display())
}

/// True when nothing came from the server while the connection was idle: a closed connection
/// (EOF, a reset) or a message we did not ask for makes the socket readable.
fn quiet(conn: &Connection) -> bool {
    use std::os::unix::io::AsRawFd;
    let mut fd = libc::pollfd { fd: conn.session.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd on the stack, its count 1; the socket stays open for the call.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready == 0
}
