//! What an operator touches: the systemd unit, sd_notify, `status`, `check`, `retry`, `--help`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};
use support::daemon::Drops;
use support::sshd::TestServer;

const MARKER_MODE: &str = "ready = \"marker\"\npoll_secs = 1";

fn bin(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jumio-batchd")).arg("--config").arg(config).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The unit as installed, pointing at the binary under test (verify checks ExecStart exists).
fn unit_under_test(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/jumio-batchd.service")).unwrap();
    let path = dir.join("jumio-batchd.service");
    std::fs::write(&path, text.replace("/usr/bin/jumio-batchd", env!("CARGO_BIN_EXE_jumio-batchd"))).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_without_a_warning_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze (scripts/test installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("jumio-batchd")).collect();
    assert!(out.status.success() && about_unit.is_empty(), "systemd-analyze verify: {stderr}");

    let out = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&unit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = text.lines().find(|l| l.contains("Overall exposure level")) {
        let score: f64 = line.split(':').nth(1).and_then(|r| r.split_whitespace().next()).and_then(|s| s.parse().ok()).unwrap();
        assert!(score <= 2.0, "exposure {score}: {text}");
    }
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=jumio-batchd",
        "StateDirectory=jumio-batchd",
        "ProtectSystem=strict",
        "UMask=0027",
    ] {
        assert!(unit_text.contains(line), "{line}");
    }
}

#[test]
fn under_systemd_the_daemon_says_ready_status_watchdog_and_stopping() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let socket_path = drops.dir("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // As systemd does: WATCHDOG_PID is the service's own pid (the shell's, kept by exec).
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" --config \"$1\" run")
        .arg(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg(&drops.config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(std::fs::File::create(drops.dir("daemon-notify.log")).unwrap())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(seen.iter().any(|m: &String| m.contains("WATCHDOG=1")) && seen.iter().any(|m| m.starts_with("STATUS=")))
        && Instant::now() < deadline
    {
        let n = socket.recv(&mut buf).unwrap();
        seen.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned());
    }
    assert_eq!(seen.first().map(String::as_str), Some("READY=1"), "{seen:?}");
    assert!(seen.iter().any(|m| m.starts_with("STATUS=0 in flight")), "{seen:?}");
    assert!(seen.iter().any(|m| m == "WATCHDOG=1"), "{seen:?}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    loop {
        let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("{e}: {seen:?} {}", drops.logs()));
        if String::from_utf8_lossy(&buf[..n]).trim_end() == "STOPPING=1" {
            break;
        }
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn status_shows_counts_and_each_batch_with_its_history() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    drops.drop_in(&drops.stage("good").with_tagged_rows(2, "good"), true);
    drops.drop_in(&drops.stage("bad").csv("workflowDefinitionKey\n10015\n"), true);
    let mut daemon = drops.spawn(&["--once"]);
    assert_eq!(daemon.wait(), Some(0), "{}", daemon.log_text());

    let (code, stdout, _) = bin(&drops.config, &["status", "--json"]);
    assert_eq!(code, 0);
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list.len(), 2);
    let good = list.iter().find(|b| b["name"] == "good").unwrap();
    let keys: Vec<&str> = good.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "attempts",
            "bytes",
            "bytes_sent",
            "created_at",
            "duplicate_of",
            "files",
            "id",
            "last_error",
            "name",
            "reject_reason",
            "remote_dir",
            "remote_uuid",
            "rows",
            "state",
            "updated_at"
        ]
    );
    let folder = server.remote_folders()[0].clone();
    assert_eq!((good["state"].as_str(), good["remote_uuid"].as_str()), (Some("submitted"), Some(folder.as_str())));
    assert_eq!(good["remote_dir"].as_str(), Some(folder.as_str()), "remote_dir = \".\" puts the folder in the home");
    assert_eq!((good["rows"].as_u64(), good["files"].as_u64(), good["attempts"].as_u64()), (Some(2), Some(6), Some(1)));
    assert_eq!(good["bytes_sent"], good["bytes"]);
    let bad = list.iter().find(|b| b["name"] == "bad").unwrap();
    assert_eq!((bad["state"].as_str(), bad["reject_reason"].as_str()), (Some("rejected"), Some("invalid")));
    assert!(bad["last_error"].as_str().unwrap().contains("missing_column"));

    let (_, text, _) = bin(&drops.config, &["status"]);
    assert!(text.starts_with("batches: discovered 0 validated 0 rejected 1 uploading 0 retry_wait 0 submitted 1 failed 0\n"), "{text}");
    assert!(text.contains("recently submitted:\n  good (id "), "{text}");
    let (_, one, _) = bin(&drops.config, &["status", "good"]);
    assert!(one.contains("batch good (id ") && one.contains("uploading -> submitted"), "{one}");
    let (code, _, err) = bin(&drops.config, &["status", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no batch named"), "{err}");
}

#[test]
fn check_passes_on_a_good_setup_and_names_the_fix_otherwise() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    for dir in ["work", "done", "rejected", "failed"] {
        std::fs::create_dir_all(drops.dir(dir)).unwrap();
    }
    let (code, stdout, _) = bin(&drops.config, &["check"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("OK ")), "{stdout}");
    assert!(stdout.contains("created and removed"), "{stdout}");
    assert!(server.remote_folders().is_empty(), "the probe folder is removed");

    std::fs::remove_dir(drops.dir("failed")).unwrap();
    std::fs::write(server.dir.path().join("known_hosts"), "").unwrap();
    let (code, stdout, _) = bin(&drops.config, &["check"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("FAIL  paths.failed:") && stdout.contains("mkdir -p"), "{stdout}");
    assert!(stdout.contains("FAIL  known_hosts:") && stdout.contains("ssh-keyscan -p"), "{stdout}");
    assert!(stdout.contains("FAIL  connect, host key, login, write access:"), "{stdout}");
}

#[test]
fn a_failed_batch_is_retried_into_the_same_remote_folder() {
    let mut server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let text = std::fs::read_to_string(&drops.config).unwrap().replace("max_attempts = 3", "max_attempts = 1");
    std::fs::write(&drops.config, text).unwrap();
    let batch = drops.stage("flaky").with_tagged_rows(2, "flaky");
    let original = support::sshd::tree(&batch.dir);
    drops.drop_in(&batch, true);
    server.kill();
    let mut daemon = drops.spawn(&["--once"]);
    assert_eq!(daemon.wait(), Some(0), "{}", daemon.log_text());
    assert_eq!(drops.names("failed"), ["flaky"]);
    let report = std::fs::read_to_string(drops.dir("failed/flaky/FAILED.txt")).unwrap();
    assert!(report.contains("could NOT be delivered") && report.contains("jumio-batchd retry flaky"), "{report}");
    let (_, stdout, _) = bin(&drops.config, &["status", "--json", "flaky"]);
    let status: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let uuid = status[0]["remote_uuid"].as_str().unwrap().to_owned();
    let id = status[0]["id"].as_i64().unwrap();

    server.restart();
    let (code, stdout, stderr) = bin(&drops.config, &["retry", "flaky"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&uuid), "{stdout}");
    assert_eq!(drops.names("work"), [format!("{id}.flaky")], "back in work/ under its id");
    let mut daemon = drops.spawn(&["--once"]);
    assert_eq!(daemon.wait(), Some(0), "{}", daemon.log_text());
    assert_eq!(drops.names("done"), ["flaky"]);
    assert_eq!(server.remote_folders(), vec![uuid.clone()]);
    assert!(support::sshd::tree(&server.home().join(&uuid)) == support::sshd::with_done(original));
    let (code, _, stderr) = bin(&drops.config, &["retry", "flaky"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("is submitted, not failed"), "{stderr}");
}

#[test]
fn every_command_has_help_with_examples() {
    for command in ["validate", "send", "run", "status", "check", "retry"] {
        let out = Command::new(env!("CARGO_BIN_EXE_jumio-batchd")).args([command, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("Examples:"), "{command}: {text}");
    }
}
