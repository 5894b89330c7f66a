//! A private OpenSSH server for tests: 127.0.0.1, a free port, generated keys, a temp home,
//! internal-sftp logging every open and close. Killed (with its session processes) on drop.

use jumio_batchd::config::SftpConfig;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    logged: bool,
    /// sshd_config lines placed before ours (sshd keeps the first value of a keyword).
    extra_config: String,
}

impl TestServer {
    /// The server with `Subsystem sftp internal-sftp`.
    pub fn start() -> TestServer {
        TestServer::start_with(false, "")
    }

    /// The server with these sshd_config lines taking precedence, e.g. `Ciphers aes256-ctr`.
    pub fn start_configured(extra_config: &str) -> TestServer {
        TestServer::start_with(false, extra_config)
    }

    /// The server running OpenSSH's sftp-server with every open and close logged to a file, in
    /// the order the server handled them (see `closed_in_order`).
    pub fn start_logged() -> TestServer {
        TestServer::start_with(true, "")
    }

    fn start_with(logged: bool, extra_config: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        server_files(&d);
        if is_root() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let mut server = TestServer { dir, port: 0, child: None, logged, extra_config: extra_config.to_owned() };
        server.restart();
        let known = format!("[127.0.0.1]:{} {}", server.port, std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap());
        std::fs::write(d.join("known_hosts"), known).unwrap();
        server
    }

    /// Starts sshd (again, on the same port once it had one).
    pub fn restart(&mut self) {
        let first_start = self.port == 0;
        for _ in 0..20 {
            if self.port == 0 {
                self.port = free_port();
            }
            let config = self.write_config();
            let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("sshd.log")).unwrap();
            let child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stderr(log)
                .stdout(Stdio::null())
                .spawn()
                .expect("start /usr/sbin/sshd (scripts/test installs openssh-server)");
            self.child = Some(child);
            if self.wait_ready() {
                return;
            }
            self.kill();
            if first_start {
                self.port = 0;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sshd did not start; log:\n{}", self.log());
    }

    fn write_config(&self) -> PathBuf {
        let d = self.dir.path();
        let subsystem = if self.logged {
            let wrapper = d.join("sftp-logged");
            // DEBUG1: every WRITE is logged too, in the order the server handled it.
            let script = format!("#!/bin/sh\nexec {SFTP_SERVER} -e -l DEBUG1 -d {d}/home 2>>{d}/sftp.log\n", d = d.display());
            std::fs::write(&wrapper, script).unwrap();
            std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            wrapper.display().to_string()
        } else {
            format!("internal-sftp -d {}/home", d.display())
        };
        let text = format!(
            "{extra}Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
             UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             AuthenticationMethods publickey\nPermitRootLogin prohibit-password\nMaxStartups 200\nMaxSessions 100\nLogLevel INFO\n\
             Subsystem sftp {subsystem}\n",
            extra = self.extra_config,
            port = self.port,
            d = d.display()
        );
        let path = d.join("sshd_config");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut banner = [0u8; 4];
                stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the server and every session process it forked (sessions call setsid, so they are
    /// found by parentage, not by process group).
    pub fn kill(&mut self) {
        self.signal_all(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Stalls the server: sshd and every session process stop (SIGSTOP) without closing a
    /// connection, as a hung server or a silent network would.
    pub fn freeze(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal_all(libc::SIGCONT);
    }

    /// Signals sshd and every process below it.
    fn signal_all(&self, signal: i32) {
        let Some(child) = &self.child else { return };
        let mut all = vec![child.id() as i32];
        let mut i = 0;
        while i < all.len() {
            all.extend(children_of(all[i]));
            i += 1;
        }
        for pid in all.into_iter().filter(|&p| p > 1) {
            unsafe { libc::kill(pid, signal) };
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn sftp_config(&self) -> SftpConfig {
        SftpConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            user: user(),
            private_key: self.dir.path().join("client_key"),
            known_hosts: self.dir.path().join("known_hosts"),
            remote_dir: ".".into(),
            connections: 4,
            timeout_secs: 10,
            pool_idle_secs: 30,
        }
    }

    /// A whole config file for this server: `[sftp]`, a state database in the temp dir, and
    /// quick retries.
    pub fn config_toml(&self) -> String {
        format!(
            "{}\n[state]\ndatabase = \"{}\"\n\n[retry]\ninitial_delay_secs = 1\nmax_delay_secs = 2\nmax_attempts = 3\n",
            self.sftp_toml(),
            self.dir.path().join("state.db").display()
        )
    }

    /// Writes `config_toml()` (with `replace` applied: pairs of from, to) and returns its path.
    pub fn write_config_file(&self, replace: &[(&str, &str)]) -> PathBuf {
        let mut text = self.config_toml();
        for (from, to) in replace {
            assert!(text.contains(from), "{from} not in config");
            text = text.replace(from, to);
        }
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A `[routes.NAME]` section sending batches dropped into `inbox` to this server.
    pub fn route_toml(&self, name: &str, inbox: &str) -> String {
        let c = self.sftp_config();
        format!(
            "[routes.{name}]\ninbox = \"{inbox}\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nprivate_key = \"{}\"\nknown_hosts = \"{}\"\n",
            c.port,
            c.user,
            c.private_key.display(),
            c.known_hosts.display()
        )
    }

    /// The `[sftp]` section for a config file.
    pub fn sftp_toml(&self) -> String {
        let c = self.sftp_config();
        sftp_toml(c.port, &c.private_key, &c.known_hosts)
    }

    /// Pins a freshly generated key of `kind` for `[127.0.0.1]:port` as the only known_hosts
    /// entry: with this server's port the server's real key then mismatches.
    pub fn pin_other_key(&self, kind: &str, port: u16) {
        let other = tempfile::tempdir().unwrap();
        keygen(&other.path().join("k"), kind);
        let key = std::fs::read_to_string(other.path().join("k.pub")).unwrap();
        std::fs::write(self.dir.path().join("known_hosts"), format!("[127.0.0.1]:{port} {key}")).unwrap();
    }

    /// The folders directly in the tenant home (one per shipped batch).
    pub fn remote_folders(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(self.home()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// Paths (relative to the home) the server opened for writing, in order, each with the
    /// number of closes the server had logged before it (`start_logged` only).
    pub fn write_opens(&self) -> Vec<(String, usize)> {
        let log = std::fs::read_to_string(self.dir.path().join("sftp.log")).unwrap_or_default();
        let mut closes = 0;
        let mut opens = Vec::new();
        for line in log.lines() {
            if line.contains("close \"") {
                closes += 1;
            } else if let Some(rest) = line.split("open \"").nth(1) {
                let flags = rest.split("flags ").nth(1).unwrap_or("");
                if flags.contains("WRITE") {
                    opens.push((rest.split('"').next().unwrap_or("").to_owned(), closes));
                }
            }
        }
        opens
    }

    /// Every request that changes the server (open, write, close, mkdir, remove, rename,
    /// setstat) it handled in `folder` after it opened `folder/DONE` (the DONE's own close
    /// aside), as logged (`start_logged` only): must be none. Listings do not count.
    pub fn requests_after_done(&self, folder: &str) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("sftp.log")).unwrap_or_default();
        let (inside, done) = (format!("\"{folder}/"), format!("open \"{folder}/DONE\""));
        let Some(at) = log.lines().position(|l| l.contains(&done)) else { return Vec::new() };
        log.lines()
            .skip(at + 1)
            .filter(|l| l.contains(&inside) && !l.contains(&format!("close \"{folder}/DONE\"")))
            // What changes the server: opens (for writing: we never read), writes, closes, folders.
            // Not the server's own cleanup of a dead session's handles ("forced close").
            .filter(|l| ["open \"", "write \"", "close \"", "mkdir", "remove", "rename", "setstat"].iter().any(|w| l.contains(w)))
            .filter(|l| !l.starts_with("forced close"))
            .map(str::to_owned)
            .collect()
    }

    /// Paths (relative to the home) in the order the server closed them (`start_logged` only).
    pub fn closed_in_order(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("sftp.log")).unwrap_or_default();
        log.lines().filter_map(|l| l.split("close \"").nth(1)).filter_map(|rest| rest.split('"').next()).map(str::to_owned).collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn children_of(parent: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Fields after the command name, which is in parentheses: state, ppid, ...
        let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)).and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// A test server's keys in `dir` (host key, client key authorised) and its empty home.
pub fn server_files(dir: &Path) {
    keygen(&dir.join("host_ed25519"), "ed25519");
    keygen(&dir.join("client_key"), "ed25519");
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    std::fs::create_dir(dir.join("home")).unwrap();
}

/// The `[sftp]` section for a test server on 127.0.0.1.
pub fn sftp_toml(port: u16, private_key: &Path, known_hosts: &Path) -> String {
    format!(
        "[sftp]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{}\"\nprivate_key = \"{}\"\nknown_hosts = \"{}\"\nremote_dir = \".\"\nconnections = 4\ntimeout_secs = 10\n",
        user(),
        private_key.display(),
        known_hosts.display()
    )
}

pub fn keygen(path: &Path, kind: &str) {
    let status =
        Command::new("ssh-keygen").args(["-q", "-t", kind, "-N", "", "-C", "test", "-f"]).arg(path).stdin(Stdio::null()).status().unwrap();
    assert!(status.success());
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(path, perms).unwrap();
}

pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Every file under `root`, relative, with its bytes.
pub fn tree(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Bytes under `root` (what has reached the server so far).
pub fn dir_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// What a shipped batch must look like on the server: its files plus an empty DONE.
pub fn with_done(mut files: std::collections::BTreeMap<String, Vec<u8>>) -> std::collections::BTreeMap<String, Vec<u8>> {
    files.insert("DONE".into(), Vec::new());
    files
}
