//! The daemon as a process: drop folders in a temp dir, a config for a test server, the real
//! binary spawned with its logs captured, killed on drop.

use super::fixtures::{Batch, PERSONAL};
use super::sshd::TestServer;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Drops {
    pub root: tempfile::TempDir,
    pub config: PathBuf,
}

impl Drops {
    /// Drop folders and a config for `server`; `watch` is the body of the [watch] section.
    pub fn new(server: &TestServer, watch: &str) -> Drops {
        let root = tempfile::tempdir().unwrap();
        for dir in ["inbox", "staging"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        let r = root.path().display();
        let text = format!(
            "{}\n[paths]\ninbox = \"{r}/inbox\"\nwork = \"{r}/work\"\ndone = \"{r}/done\"\nrejected = \"{r}/rejected\"\nfailed = \"{r}/failed\"\n\n[watch]\n{watch}\n",
            server.config_toml()
        );
        let config = root.path().join("config.toml");
        std::fs::write(&config, text).unwrap();
        Drops { root, config }
    }

    /// Adds `text` (whole sections) to the end of the config file.
    pub fn configure(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.config).unwrap();
        config.push_str(text);
        std::fs::write(&self.config, config).unwrap();
    }

    /// Runs a command of the binary with this config (`jumio-batchd --config C ARGS`), to its end.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_with_env(args, &[])
    }

    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        self.command(args, env).output().unwrap()
    }

    /// Starts a command of the binary with this config, its output piped (for failpoints).
    pub fn start_cli(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        self.command(args, env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_jumio-batchd"));
        command.arg("--config").arg(&self.config).args(args).env_remove("JUMIO_BATCHD_FAILPOINT").envs(env.iter().copied());
        command.stdin(Stdio::null());
        command
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// A batch built in a staging folder on the same filesystem, ready to be dropped.
    pub fn stage(&self, name: &str) -> Batch {
        Batch::at(&self.dir("staging").join(name))
    }

    /// Moves a staged batch into the inbox, then writes the marker last, as a dropper does.
    pub fn drop_in(&self, batch: &Batch, marker: bool) -> PathBuf {
        let name = batch.dir.file_name().unwrap();
        let to = self.dir("inbox").join(name);
        std::fs::rename(&batch.dir, &to).unwrap();
        if marker {
            std::fs::write(to.join("DONE"), b"").unwrap();
        }
        to
    }

    /// Names in a drop folder, sorted.
    pub fn names(&self, folder: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir(folder))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// `run --once` to its end, which must be a success.
    #[track_caller]
    pub fn run_once(&self) {
        let mut daemon = self.spawn(&["--once"]);
        assert_eq!(daemon.wait(), Some(0), "{}", daemon.log_text());
    }

    pub fn spawn(&self, args: &[&str]) -> Daemon {
        self.spawn_with_env(args, &[])
    }

    pub fn spawn_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        self.spawn_config(&self.config, args, env)
    }

    /// `run` with another config file (a second host of a fleet, on these drop folders).
    pub fn spawn_config(&self, config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = self
            .root
            .path()
            .join(format!("daemon-{}.log", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .args(args)
            .env_remove("JUMIO_BATCHD_FAILPOINT")
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Daemon { child: Some(child), log }
    }

    /// Waits until `folder` holds `count` entries.
    #[track_caller]
    pub fn wait_for(&self, folder: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.names(folder).len() < count {
            assert!(Instant::now() < deadline, "{folder} has {:?}, expected {count} entries", self.names(folder));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every daemon log written in this test.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(self.root.path()).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("daemon-") {
                all.push_str(&std::fs::read_to_string(e.path()).unwrap());
            }
        }
        all
    }

    #[track_caller]
    pub fn assert_no_personal_data_logged(&self) {
        let logs = self.logs();
        assert!(!logs.is_empty());
        for needle in PERSONAL {
            assert!(!logs.contains(needle), "personal data {needle:?} in the logs:\n{logs}");
        }
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap().code()
    }

    /// SIGKILL, as a crash would end it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The exit code once the process ended, without waiting.
    pub fn try_wait(&mut self) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().unwrap()?;
        self.child = None;
        Some(status.code())
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to the process.
    pub fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until the log holds `needle`.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(Instant::now() < deadline, "{needle:?} never logged:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait(&mut self) -> Option<i32> {
        self.child.take()?.wait().unwrap().code()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
