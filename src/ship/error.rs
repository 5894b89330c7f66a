//! What can go wrong while shipping, each case a situation an operator can act on,
//! and whether trying again later can help.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("cannot connect to {addr}: {source}; check sftp.host and sftp.port, DNS and the firewall")]
    Connect { addr: String, source: std::io::Error },
    #[error("{what} timed out after {secs} s talking to {addr}; the server or the network is slow or down (sftp.timeout_secs)")]
    Timeout { what: String, addr: String, secs: u64 },
    #[error("known_hosts file {} cannot be read: {reason}; create it with the server's key (see README, \"Install on an ingest host\")", path.display())]
    KnownHostsUnreadable { path: PathBuf, reason: String },
    #[error(
        "host key of {addr} is not in {}: the server offered {key_type} {fingerprint}. Never accept it blindly: compare the fingerprint with the one shown in the Jumio Portal, then add it with `ssh-keyscan {keyscan_args} >> {}`",
        known_hosts.display(),
        known_hosts.display()
    )]
    HostKeyUnknown { addr: String, known_hosts: PathBuf, key_type: String, fingerprint: String, keyscan_args: String },
    #[error(
        "HOST KEY CHANGED for {addr}: the server offered {key_type} {fingerprint}, which does not match {}. This may be an attack; do not connect until Jumio confirms the new key, then replace the old line",
        known_hosts.display()
    )]
    HostKeyChanged { addr: String, known_hosts: PathBuf, key_type: String, fingerprint: String },
    #[error(
        "host key of {addr} ({fingerprint}) is marked @revoked in {}: it must never be accepted. Ask Jumio for the server's current key",
        known_hosts.display()
    )]
    HostKeyRevoked { addr: String, known_hosts: PathBuf, fingerprint: String },
    #[error("private key {} is readable by group or others (mode {mode:o}); run `chmod 600 {}`", path.display(), path.display())]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("private key {} is protected by a passphrase, which a service cannot type; use a key without one (`ssh-keygen -p -N '' -f {}` on a copy) and register its public half in the Jumio Portal", path.display(), path.display())]
    KeyHasPassphrase { path: PathBuf },
    #[error("private key {} cannot be read: {source}", path.display())]
    KeyUnreadable { path: PathBuf, source: std::io::Error },
    #[error("{addr} refused key authentication for user {user} with {}: check sftp.user and that the key's public half is registered in the Jumio Portal", key.display())]
    AuthRefused { addr: String, user: String, key: PathBuf },
    #[error("permission denied on the server for {path}: check sftp.remote_dir and the tenant's rights")]
    PermissionDenied { path: String },
    #[error("{path} has no parent folder on the server; check that sftp.remote_dir exists in the tenant home")]
    RemoteMissing { path: String },
    #[error("the server's disk or quota is full while writing {path}; it will be retried")]
    RemoteFull { path: String },
    #[error("{file} has {remote} bytes on the server after upload, expected {local}")]
    SizeMismatch { file: String, local: u64, remote: u64 },
    #[error("{file} changed after the batch was validated ({reason}); nothing of a batch may change once dropped: drop the corrected batch as a new one")]
    LocalChanged { file: String, reason: String },
    #[error("cannot read {file} of the batch: {source}")]
    LocalRead { file: String, source: std::io::Error },
    #[error("{what} failed: {message}")]
    Ssh { what: String, message: String },
    #[error("stopped before DONE: shutdown requested")]
    Interrupted,
    #[error("stopped before DONE: this host's lease on the batch ran out (a pause, or the database out of reach); another host may finish it into the same folder")]
    LeaseLost,
}

impl ShipError {
    /// True when trying again cannot help until a person changes something.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ShipError::KnownHostsUnreadable { .. }
                | ShipError::HostKeyUnknown { .. }
                | ShipError::HostKeyChanged { .. }
                | ShipError::HostKeyRevoked { .. }
                | ShipError::KeyPermissions { .. }
                | ShipError::KeyHasPassphrase { .. }
                | ShipError::AuthRefused { .. }
                | ShipError::PermissionDenied { .. }
                | ShipError::RemoteMissing { .. }
                | ShipError::LocalChanged { .. }
        ) || matches!(self, ShipError::LocalRead { source, .. } | ShipError::KeyUnreadable { source, .. }
            if !crate::batchfs::is_exhausted(source))
    }

    /// This host ran short of descriptors or memory (opening a file, a socket, a key): nothing
    /// is wrong with the batch or the server.
    pub fn is_host_short(&self) -> bool {
        match self {
            ShipError::LocalRead { source, .. } | ShipError::KeyUnreadable { source, .. } | ShipError::Connect { source, .. } => {
                crate::batchfs::is_exhausted(source)
            }
            ShipError::KnownHostsUnreadable { reason, .. } => reason.contains("Too many open files"),
            _ => false,
        }
    }

    /// Classifies an ssh2 error from the step `what` on `path`.
    pub fn from_ssh(e: ssh2::Error, what: &str, path: &str, addr: &str, secs: u64) -> ShipError {
        const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
        const FX_NO_SUCH_FILE: i32 = 2;
        const FX_PERMISSION_DENIED: i32 = 3;
        const FX_NO_SPACE_ON_FILESYSTEM: i32 = 14;
        const FX_QUOTA_EXCEEDED: i32 = 15;
        let what_path = if path.is_empty() { what.to_owned() } else { format!("{what} {path}") };
        match e.code() {
            ssh2::ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => ShipError::Timeout { what: what_path, addr: addr.to_owned(), secs },
            ssh2::ErrorCode::SFTP(FX_NO_SUCH_FILE) => ShipError::RemoteMissing { path: path.to_owned() },
            ssh2::ErrorCode::SFTP(FX_PERMISSION_DENIED) => ShipError::PermissionDenied { path: path.to_owned() },
            ssh2::ErrorCode::SFTP(FX_NO_SPACE_ON_FILESYSTEM | FX_QUOTA_EXCEEDED) => ShipError::RemoteFull { path: path.to_owned() },
            ssh2::ErrorCode::SFTP(status) => {
                ShipError::Ssh { what: what_path, message: format!("the server answered SFTP status {status} ({})", e.message()) }
            }
            _ => ShipError::Ssh { what: what_path, message: e.message().to_owned() },
        }
    }
}
