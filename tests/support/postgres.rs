//! A private PostgreSQL server for tests: Debian's binaries, a data folder in a temp dir,
//! 127.0.0.1 on a free port, a password-protected user. Run as `nobody` when the tests run as
//! root (PostgreSQL refuses root). Stopped on drop.

use super::sshd::free_port;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "jumio";
pub const PASSWORD: &str = "fleet-test-secret";
const NOBODY: u32 = 65534;

pub struct TestPostgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    child: Option<Child>,
}

impl TestPostgres {
    pub fn start() -> TestPostgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let pg = dir.path().join("pg");
        std::fs::create_dir(&pg).unwrap();
        std::fs::write(pg.join("pwfile"), PASSWORD).unwrap();
        if is_root() {
            for path in [&pg, &pg.join("pwfile")] {
                std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
            }
        }
        let out = as_owner(Command::new(bin.join("initdb")))
            .args([
                "-D",
                "data",
                "-U",
                USER,
                "--pwfile=pwfile",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .current_dir(&pg)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut server = TestPostgres { dir, port: free_port(), bin, child: None };
        server.restart();
        server
    }

    /// postgres://jumio@127.0.0.1:PORT/postgres (the password comes from a file or the environment).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again, on the same port) and waits until it accepts connections.
    pub fn restart(&mut self) {
        let pg = self.dir.path().join("pg");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(pg.join("postgres.log")).unwrap();
        let child = as_owner(Command::new(self.bin.join("postgres")))
            .args(["-D", "data", "-k"])
            .arg(&pg)
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"])
            .current_dir(&pg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ready() {
            assert!(Instant::now() < deadline, "postgres did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ready(&self) -> bool {
        // The port answers, and the server says it is ready in its log.
        TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.log().contains("ready to accept connections")
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
        // The next start looks for its own "ready" line.
        let log = self.dir.path().join("pg/postgres.log");
        let _ = std::fs::rename(&log, self.dir.path().join("pg/postgres.log.old"));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg/postgres.log")).unwrap_or_default()
    }

    /// Runs `sql` with psql as the test user; its output.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A password file for clients (owned by whoever runs the tests).
    pub fn password_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("db-password");
        std::fs::write(&path, format!("{PASSWORD}\n")).unwrap();
        path
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
            let _ = child.wait();
        }
    }
}

fn as_owner(mut command: Command) -> Command {
    if is_root() {
        command.uid(NOBODY).gid(NOBODY);
    }
    command
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Debian's PostgreSQL binaries, the newest version installed.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (scripts/test installs Debian's postgresql)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").exists())
        .collect();
    found.sort_by_key(|b| b.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()));
    found.pop().expect("no /usr/lib/postgresql/*/bin/postgres")
}
