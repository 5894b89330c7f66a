//! One authenticated SFTP session: TCP connect with a timeout, the host key checked against
//! known_hosts before authenticating, key authentication only. Only `ship/` knows ssh2.

use super::channel::SftpChannel;
use super::{quickack, ShipError};
use crate::config::SftpConfig;
use base64::Engine;
use sha2::Digest;
use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, MethodType, Session, Sftp};
use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// Host key algorithms in the order tried; one missing from known_hosts makes us try the next
/// the server offers, as OpenSSH prefers the types it already knows.
const HOST_KEY_ALGORITHMS: &[&str] =
    &["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"];

/// Ciphers offered, in order: OpenSSH's default set without CBC. AES-CTR first: our libssh2
/// encrypts a whole packet per OpenSSL call in CTR mode (vendor/README.md), while it makes a call
/// per 16-byte block for AES-GCM and runs ChaCha20 in portable C, at three times the CPU.
const CIPHERS: &str = "aes128-ctr,aes256-ctr,aes192-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com";
/// MACs for the CTR ciphers, encrypt-then-MAC first; the GCM and ChaCha20 modes carry their own.
const MACS: &str = "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256,hmac-sha2-512";

/// The algorithm whose key matched known_hosts, per server, so later sessions need one handshake.
static KNOWN_ALGORITHM: Mutex<BTreeMap<String, &'static str>> = Mutex::new(BTreeMap::new());

fn key_type_of(algorithm: &str) -> &str {
    if algorithm.contains("rsa") {
        "ssh-rsa"
    } else {
        algorithm
    }
}

pub struct Connection {
    /// Our SFTP channel, opened at first use and kept while the connection lives.
    channel: Mutex<Option<SftpChannel>>,
    /// libssh2's SFTP, opened only where a listing or a probe needs it.
    sftp: OnceLock<Sftp>,
    pub session: Session,
    pub addr: String,
    pub timeout_secs: u64,
    failed: AtomicBool,
    /// Ended by `abort`: nothing more goes out, not even a disconnect.
    aborted: AtomicBool,
    /// sha256 of the known_hosts file the server's key was last found trusted in.
    trusted_under: Mutex<[u8; 32]>,
}

impl Connection {
    pub fn open(cfg: &SftpConfig) -> Result<Connection, ShipError> {
        check_private_key(cfg)?;
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let remembered = KNOWN_ALGORITHM.lock().unwrap_or_else(|p| p.into_inner()).get(&addr).copied();
        let mut first_unknown = None;
        let mut tried_types = Vec::new();
        for &algorithm in remembered.iter().chain(HOST_KEY_ALGORITHMS) {
            if tried_types.contains(&key_type_of(algorithm)) {
                continue;
            }
            let (session, acks) = match handshake(cfg, &addr, algorithm) {
                Ok(opened) => opened,
                // The server does not offer this algorithm: try the next one.
                Err(ShipError::Ssh { .. }) => continue,
                Err(e) => return Err(e),
            };
            tried_types.push(key_type_of(algorithm));
            if let Some(trusted_under) = verify_host_key(cfg, &addr, &session)? {
                KNOWN_ALGORITHM.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.clone(), algorithm);
                return authenticate(cfg, addr, session, acks, trusted_under);
            }
            first_unknown.get_or_insert_with(|| unknown_key_error(cfg, &addr, &session));
        }
        Err(first_unknown.unwrap_or_else(|| ShipError::Ssh {
            what: format!("SSH handshake with {addr}"),
            message: "no host key algorithm, cipher or MAC in common with the server, or the server closed the connection".to_owned(),
        }))
    }

    /// The server's key this connection saw is still trusted by known_hosts as it is now: the
    /// file unchanged since it was last checked (its sha256), or its key found in it again and
    /// not `@revoked`. A pooled connection is handed out only then.
    pub fn still_trusted(&self, cfg: &SftpConfig) -> bool {
        let Ok(text) = std::fs::read(&cfg.known_hosts) else { return false };
        let digest: [u8; 32] = sha2::Sha256::digest(&text).into();
        let mut trusted_under = self.trusted_under.lock().unwrap_or_else(|p| p.into_inner());
        if *trusted_under == digest {
            return true;
        }
        match verify_host_key(cfg, &self.addr, &self.session) {
            Ok(Some(now)) => {
                *trusted_under = now;
                true
            }
            _ => false,
        }
    }

    /// Classifies a failure of this session. A failed session is never used again, so from now
    /// on its calls (closing handles, the disconnect) wait at most a second: a stalled server
    /// costs one timeout, not one per handle.
    pub fn error(&self, e: ssh2::Error, what: &str, path: &str) -> ShipError {
        self.failed();
        ShipError::from_ssh(e, what, path, &self.addr, self.timeout_secs)
    }

    /// Ends the connection sending nothing more: no disconnect, and the socket is reset when it
    /// closes (SO_LINGER 0), so neither libssh2's half-sent packet nor the kernel's unsent bytes
    /// reach the server. For a shipment whose lease ran out mid-write.
    pub fn abort(&self) {
        use std::os::unix::io::AsRawFd;
        self.failed();
        self.aborted.store(true, Ordering::SeqCst);
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: a valid linger struct and its size, on the session's own socket, still open.
        unsafe {
            libc::setsockopt(
                self.session.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }

    /// Marks the session failed: its remaining calls wait at most a second, and it is never
    /// used for another batch.
    pub fn failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.session.set_timeout(DISCONNECT_TIMEOUT_MS);
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Runs a conversation on our SFTP channel (opened at first use), the session non-blocking
    /// meanwhile. Any error fails the connection.
    pub fn talk<T>(&self, f: impl FnOnce(&mut SftpChannel) -> Result<T, ShipError>) -> Result<T, ShipError> {
        let mut slot = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(SftpChannel::open(self)?);
        }
        let channel = slot.as_mut().expect("opened above");
        self.session.set_blocking(false);
        let result = f(channel);
        self.session.set_blocking(true);
        if result.is_err() {
            self.failed();
        }
        result
    }

    /// libssh2's SFTP session (blocking), opened at first use.
    pub fn sftp(&self) -> Result<&Sftp, ShipError> {
        if let Some(sftp) = self.sftp.get() {
            return Ok(sftp);
        }
        let sftp = self.session.sftp().map_err(|e| self.error(e, "opening SFTP", ""))?;
        Ok(self.sftp.get_or_init(|| sftp))
    }
}

/// Every session ends with an SSH disconnect, done or abandoned, so the server sees a clean end
/// instead of a reset; bounded, so a stalled server cannot hold us. Then the socket is shut: the
/// disconnect ends the channels with it, and libssh2 would otherwise wait a round trip for the
/// server to confirm each channel's close.
impl Drop for Connection {
    fn drop(&mut self) {
        use std::os::unix::io::AsRawFd;
        if self.aborted.load(Ordering::SeqCst) {
            // Nothing more is sent: the socket's close resets the connection.
            return;
        }
        self.session.set_timeout(DISCONNECT_TIMEOUT_MS);
        let _ = self.session.disconnect(Some(ssh2::DisconnectCode::ByApplication), "jumio-batchd: done", None);
        // SAFETY: shuts down (does not close) the session's own socket, still open here.
        unsafe { libc::shutdown(self.session.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

const DISCONNECT_TIMEOUT_MS: u32 = 1000;

/// Refuses a private key readable by group or others, as ssh does, and one protected by a
/// passphrase (nobody is there to type it).
pub fn check_private_key(cfg: &SftpConfig) -> Result<(), ShipError> {
    let unreadable = |source| ShipError::KeyUnreadable { path: cfg.private_key.clone(), source };
    let meta = std::fs::metadata(&cfg.private_key).map_err(unreadable)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ShipError::KeyPermissions { path: cfg.private_key.clone(), mode });
    }
    if has_passphrase(&std::fs::read_to_string(&cfg.private_key).map_err(unreadable)?) {
        return Err(ShipError::KeyHasPassphrase { path: cfg.private_key.clone() });
    }
    Ok(())
}

/// PEM keys say `ENCRYPTED`; OpenSSH's own format names its cipher (`none` when unprotected).
fn has_passphrase(key: &str) -> bool {
    if key.contains("ENCRYPTED") {
        return true;
    }
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(body.trim()) else { return false };
    let Some(rest) = bytes.strip_prefix(b"openssh-key-v1\0") else { return false };
    let len = rest.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    rest.get(4..4 + len).is_some_and(|cipher| cipher != b"none")
}

fn handshake(cfg: &SftpConfig, addr: &str, algorithm: &str) -> Result<(Session, quickack::Installed), ShipError> {
    let timeout = cfg.timeout();
    let connect_err = |source| ShipError::Connect { addr: addr.to_owned(), source };
    let sockets = addr.to_socket_addrs().map_err(connect_err)?.collect::<Vec<_>>();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolves to no address");
    let mut stream = None;
    for socket in sockets {
        match TcpStream::connect_timeout(&socket, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let stream = stream.ok_or_else(|| connect_err(last))?;
    let _ = stream.set_nodelay(true);
    let mut session = Session::new().map_err(|e| ShipError::Ssh { what: "creating an SSH session".into(), message: e.to_string() })?;
    session.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
    let preferences = [
        (MethodType::HostKey, algorithm),
        (MethodType::CryptCs, CIPHERS),
        (MethodType::CryptSc, CIPHERS),
        (MethodType::MacCs, MACS),
        (MethodType::MacSc, MACS),
    ];
    for (method, list) in preferences {
        session
            .method_pref(method, list)
            .map_err(|e| ShipError::Ssh { what: format!("algorithm preference {list}"), message: e.to_string() })?;
    }
    let acks = quickack::install(&session);
    session.set_tcp_stream(stream);
    session.handshake().map_err(|e| ShipError::from_ssh(e, "the SSH handshake", "", addr, cfg.timeout_secs))?;
    Ok((session, acks))
}

/// The sha256 of known_hosts when the key matches it, `None` when it holds no key of the offered
/// type for the host (another algorithm may match); a different key of the same type is refused
/// at once, and so is a `@revoked` one.
fn verify_host_key(cfg: &SftpConfig, addr: &str, session: &Session) -> Result<Option<[u8; 32]>, ShipError> {
    let unreadable = |reason: String| ShipError::KnownHostsUnreadable { path: cfg.known_hosts.clone(), reason };
    let bytes = std::fs::read(&cfg.known_hosts).map_err(|e| unreadable(e.to_string()))?;
    let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    let text = String::from_utf8_lossy(&bytes);
    let (key, key_type) =
        session.host_key().ok_or_else(|| ShipError::Ssh { what: "reading the host key".into(), message: "no key".into() })?;
    let offered = key_type_name(key_type);
    if is_revoked(&text, key) {
        return Err(ShipError::HostKeyRevoked {
            addr: addr.to_owned(),
            known_hosts: cfg.known_hosts.clone(),
            fingerprint: fingerprint(session),
        });
    }
    // libssh2 compares a host's keys of every type; give it only the lines of the offered type,
    // so "no key of this type" and "a different key" can be told apart.
    let mut known = session.known_hosts().map_err(|e| unreadable(e.to_string()))?;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 3 && !fields[0].starts_with(['#', '@']) && fields[1] == offered {
            let _ = known.read_str(line, KnownHostFileKind::OpenSSH);
        }
    }
    match known.check_port(&cfg.host, cfg.port, key) {
        CheckResult::Match => Ok(Some(digest)),
        CheckResult::Mismatch => Err(ShipError::HostKeyChanged {
            addr: addr.to_owned(),
            known_hosts: cfg.known_hosts.clone(),
            key_type: offered.to_owned(),
            fingerprint: fingerprint(session),
        }),
        CheckResult::NotFound | CheckResult::Failure => Ok(None),
    }
}

/// OpenSSH's `@revoked` marker: the key on that line must never be accepted, whatever else
/// the file says (libssh2 ignores marker lines).
fn is_revoked(known_hosts: &str, key: &[u8]) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    known_hosts.lines().map(str::split_whitespace).any(|mut fields| {
        fields.next() == Some("@revoked") && fields.nth(2).and_then(|blob| engine.decode(blob).ok()).is_some_and(|blob| blob == key)
    })
}

fn unknown_key_error(cfg: &SftpConfig, addr: &str, session: &Session) -> ShipError {
    let key_type = session.host_key().map_or("unknown", |(_, t)| key_type_name(t));
    let short_type = key_type.strip_prefix("ssh-").unwrap_or(key_type);
    let short_type = if short_type.starts_with("ecdsa") { "ecdsa" } else { short_type };
    let keyscan_args =
        if cfg.port == 22 { format!("-t {short_type} {}", cfg.host) } else { format!("-p {} -t {short_type} {}", cfg.port, cfg.host) };
    ShipError::HostKeyUnknown {
        addr: addr.to_owned(),
        known_hosts: cfg.known_hosts.clone(),
        key_type: key_type.to_owned(),
        fingerprint: fingerprint(session),
        keyscan_args,
    }
}

/// The OpenSSH form: `SHA256:` and unpadded base64.
fn fingerprint(session: &Session) -> String {
    let hash = session.host_key_hash(HashType::Sha256).unwrap_or_default();
    format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash))
}

fn key_type_name(key_type: HostKeyType) -> &'static str {
    match key_type {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

fn authenticate(
    cfg: &SftpConfig,
    addr: String,
    session: Session,
    acks: quickack::Installed,
    trusted_under: [u8; 32],
) -> Result<Connection, ShipError> {
    if let Err(e) = session.userauth_pubkey_file(&cfg.user, None, &cfg.private_key, None) {
        // A timeout stays a (transient) timeout; any other failure is a refusal.
        return Err(match ShipError::from_ssh(e, "authentication", "", &addr, cfg.timeout_secs) {
            timeout @ ShipError::Timeout { .. } => timeout,
            _ => ShipError::AuthRefused { addr, user: cfg.user.clone(), key: cfg.private_key.clone() },
        });
    }
    let conn = Connection {
        channel: Mutex::new(None),
        sftp: OnceLock::new(),
        session,
        addr,
        timeout_secs: cfg.timeout_secs,
        failed: AtomicBool::new(false),
        aborted: AtomicBool::new(false),
        trusted_under: Mutex::new(trusted_under),
    };
    // Our SFTP channel opens while quick ACKs are still on: its three round trips are the last
    // of the handshake's.
    conn.talk(|_| Ok(()))?;
    quickack::remove(&conn.session, acks);
    Ok(conn)
}
