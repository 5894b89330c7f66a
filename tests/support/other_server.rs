//! An SFTP server that is not OpenSSH: asyncssh's (Python) on 127.0.0.1, a free port, generated
//! keys, a temp home. Jumio's server is not necessarily OpenSSH; what we rely on must hold here
//! too. Killed on drop.

use super::sshd::{server_files, sftp_toml};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OtherServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl OtherServer {
    pub fn start() -> OtherServer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        server_files(&d);
        let mut server = OtherServer { dir, port: 0, child: None };
        server.restart();
        let known = format!("[127.0.0.1]:{} {}", server.port, std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap());
        std::fs::write(d.join("known_hosts"), known).unwrap();
        server
    }

    /// Starts the server (again, on the same port once it had one).
    pub fn restart(&mut self) {
        let d = self.dir.path();
        let port_file = d.join("port");
        let _ = std::fs::remove_file(&port_file);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/asyncssh_sftp.py");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("server.log")).unwrap();
        let child = Command::new("python3")
            .arg(script)
            .args([d.join("host_ed25519"), d.join("authorized_keys"), d.join("home"), port_file.clone()])
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3 with asyncssh (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !port_file.exists() {
            assert!(Instant::now() < deadline, "the asyncssh server did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.port = std::fs::read_to_string(&port_file).unwrap().trim().parse().unwrap();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A config file for this server with a state database in the temp dir.
    pub fn write_config_file(&self, connections: usize) -> PathBuf {
        let d = self.dir.path();
        let text = format!(
            "{}\n[state]\ndatabase = \"{}\"\n\n[retry]\ninitial_delay_secs = 1\nmax_delay_secs = 2\nmax_attempts = 3\n",
            sftp_toml(self.port, &d.join("client_key"), &d.join("known_hosts"))
                .replace("connections = 4", &format!("connections = {connections}")),
            d.join("state.db").display()
        );
        let path = d.join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn remote_folders(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(self.home()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }
}

impl Drop for OtherServer {
    fn drop(&mut self) {
        self.kill();
    }
}
