//! Hostile trees, careless drops and faults, against the real binary and a real sshd: nothing
//! from outside a batch is shipped, nothing but what was checked, no personal data or forged
//! line in a log, no hang, no loop, and a clear word for each.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::daemon::Drops;
use support::fixtures::{self, Batch};
use support::sshd::{dir_bytes, tree, TestServer};

const MARKER_MODE: &str = "ready = \"marker\"\npoll_secs = 1\nmax_parallel_batches = 2";
const WAIT: Duration = Duration::from_secs(90);

fn jumio(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jumio-batchd")).arg("--config").arg(config).args(args).stdin(Stdio::null()).output().unwrap()
}

/// `send` with a failpoint that slows it, its output captured.
fn send_slowed(config: &Path, batch: &Batch, failpoint: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg("--config")
        .arg(config)
        .arg("send")
        .arg(&batch.dir)
        .env(jumio_batchd::failpoint::ENV, failpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[track_caller]
fn wait_for_server_bytes(server: &TestServer, bytes: u64) {
    let deadline = Instant::now() + WAIT;
    while dir_bytes(&server.home()) < bytes {
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_linked_folder_leading_out_of_the_batch_is_refused_and_nothing_is_shipped() {
    let server = TestServer::start();
    let config = server.write_config_file(&[]);
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("x.png"), fixtures::png(20, 20)).unwrap();
    let batch = Batch::new("linked").csv("workflowDefinitionKey,customerInternalReference,frontImage\n10015,ref-1,imgs/x.png\n");
    std::os::unix::fs::symlink(elsewhere.path(), batch.path("imgs")).unwrap();
    let out = jumio(&config, &["send", &batch.dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("[image_outside_batch] frontImage"), "{}", text(&out.stderr));
    assert!(server.remote_folders().is_empty());
}

#[test]
fn a_fifo_as_input_csv_or_image_never_hangs_validate_or_the_daemon() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let fifo = |path: &Path| {
        rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).unwrap()
    };
    let csv_fifo = drops.stage("csv-fifo");
    fifo(&csv_fifo.path("input.csv"));
    let image_fifo = drops.stage("image-fifo").csv("workflowDefinitionKey,customerInternalReference,frontImage\n10015,ref-1,a.png\n");
    fifo(&image_fifo.path("a.png"));
    let mut validate =
        Command::new(env!("CARGO_BIN_EXE_jumio-batchd")).arg("validate").arg(&csv_fifo.dir).stdout(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while validate.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "validate hangs on a FIFO");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(validate.wait().unwrap().code(), Some(1));

    let _daemon = drops.spawn(&[]);
    drops.drop_in(&csv_fifo, true);
    drops.drop_in(&image_fifo, true);
    drops.wait_for("rejected", 2, WAIT);
    assert!(std::fs::read_to_string(drops.dir("rejected/csv-fifo/REJECTED.txt")).unwrap().contains("[input_csv_not_a_file]"));
    assert!(std::fs::read_to_string(drops.dir("rejected/image-fifo/REJECTED.txt")).unwrap().contains("[image_not_a_file]"));
    let next = drops.stage("next").with_tagged_rows(1, "next");
    drops.drop_in(&next, true);
    drops.wait_for("done", 1, WAIT);
}

#[test]
fn an_image_changed_after_validation_fails_the_attempt_without_done_and_names_no_file() {
    let server = TestServer::start();
    let config = server.write_config_file(&[("connections = 4", "connections = 1")]);
    let mut csv = "workflowDefinitionKey,customerInternalReference,frontImage\n10015,ref-1,img/Jane_Doe_passport.png\n".to_owned();
    let batch = Batch::new("swapped");
    for i in 2..7 {
        batch.file_ref(&format!("img/{i}.png"), &[fixtures::png(8, 8), fixtures::noise(3_000_000, i)].concat());
        csv.push_str(&format!("10015,ref-{i},img/{i}.png\n"));
    }
    let batch = batch.csv(&csv);
    let small = [fixtures::png(8, 8), fixtures::noise(1000, 2)].concat();
    batch.file_ref("img/Jane_Doe_passport.png", &small);
    // Largest first, the small one last: it is read only once 8 MB (the window) are acknowledged,
    // and each finished file pauses 1.5 s (failpoint); we swap it for other bytes of its size.
    let child = send_slowed(&config, &batch, "after_file~1500");
    wait_for_server_bytes(&server, 2_000_000);
    let swapped = [fixtures::png(8, 8), fixtures::noise(1000, 3)].concat();
    assert_eq!(swapped.len(), small.len());
    std::fs::write(batch.path("img/Jane_Doe_passport.png"), swapped).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("the image of row 1, frontImage changed after the batch was validated"), "{said}");
    assert!(!said.contains("Jane_Doe"), "a local file name in an error: {said}");
    let folder = &server.remote_folders()[0];
    assert!(!server.home().join(folder).join("DONE").exists(), "no DONE over content that was not checked");
}

#[test]
fn a_batch_name_with_a_newline_cannot_forge_a_log_line() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let daemon = drops.spawn(&[]);
    let forged = "evil\n2026-01-01T00:00:00.000000Z ERROR forged line";
    drops.drop_in(&drops.stage(forged).with_tagged_rows(1, "evil"), true);
    drops.wait_for("done", 1, WAIT);
    let log = daemon.log_text();
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01T00:00:00.000000Z ERROR forged")), "{log}");
    assert!(log.contains("evil\\n2026-01-01"), "the name is shown escaped: {log}");
    assert_eq!(drops.names("done"), ["evil\\n2026-01-01T00:00:00.000000Z ERROR forged line"]);
}

#[test]
fn a_revoked_host_key_is_refused_even_when_listed_as_known() {
    let server = TestServer::start();
    let config = server.write_config_file(&[]);
    let known = server.dir.path().join("known_hosts");
    let line = std::fs::read_to_string(&known).unwrap();
    std::fs::write(&known, format!("@revoked {line}{line}")).unwrap();
    let out = jumio(&config, &["send", &Batch::valid("revoked", 1).dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is marked @revoked"), "{}", text(&out.stderr));
    assert!(server.remote_folders().is_empty());

    std::fs::write(&known, format!("@cert-authority *.example.com {}", line.split_once(' ').unwrap().1)).unwrap();
    let out = jumio(&config, &["check"]);
    assert!(text(&out.stdout).contains("@cert-authority lines, which jumio-batchd does not support"), "{}", text(&out.stdout));
}

#[test]
fn run_once_gives_up_on_a_batch_it_cannot_file_and_exits_non_zero() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    drops.drop_in(&drops.stage("earlier").with_tagged_rows(1, "earlier"), true);
    let mut first = drops.spawn(&["--once"]);
    assert_eq!(first.wait(), Some(0));
    // Every name filing could take in done/ is taken: filing fails every time.
    std::fs::write(drops.dir("done/stuck"), b"").unwrap();
    for n in 2..10_000 {
        std::fs::write(drops.dir(&format!("done/stuck-{n}")), b"").unwrap();
    }
    drops.drop_in(&drops.stage("stuck").with_tagged_rows(1, "stuck"), true);
    let mut once = drops.spawn(&["--once"]);
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(code) = once.try_wait() {
            break code;
        }
        assert!(Instant::now() < deadline, "run --once never ends: {}", once.log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = once.log_text();
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("cannot file") && log.contains("1 batch(es) could not be handled"), "{log}");
    assert!(log.lines().filter(|l| l.contains("ERROR")).count() < 5, "{log}");
    assert_eq!(server.remote_folders().len(), 2, "shipped once (beside the earlier batch)");
}

#[test]
fn a_deleted_database_is_never_silently_replaced() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let batch = drops.stage("shipped").with_tagged_rows(1, "shipped");
    let files = tree(&batch.dir);
    drops.drop_in(&batch, true);
    let mut once = drops.spawn(&["--once"]);
    assert_eq!(once.wait(), Some(0));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(server.dir.path().join(format!("state.db{suffix}")));
    }
    let again = drops.stage("shipped");
    for (rel, bytes) in &files {
        again.file_ref(rel, bytes);
    }
    drops.drop_in(&again, true);
    let mut refused = drops.spawn(&["--once"]);
    assert_eq!(refused.wait(), Some(2));
    let said = refused.log_text();
    assert!(
        said.contains("does not exist or holds no batches, but")
            && said.contains("--new-database")
            && said.contains("Restore the database"),
        "{said}"
    );
    assert_eq!(server.remote_folders().len(), 1, "nothing shipped a second time");
    assert_eq!(drops.names("inbox"), ["shipped"]);

    let mut deliberate = drops.spawn(&["--once", "--new-database"]);
    assert_eq!(deliberate.wait(), Some(0), "{}", deliberate.log_text());
}

#[test]
fn sighup_is_logged_and_the_daemon_goes_on() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let mut daemon = drops.spawn(&[]);
    daemon.wait_for_log("jumio-batchd running", WAIT);
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    daemon.wait_for_log("SIGHUP received", WAIT);
    drops.drop_in(&drops.stage("after-hup").with_tagged_rows(1, "hup"), true);
    drops.wait_for("done", 1, WAIT);
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn reports_never_overwrite_files_of_the_batch() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let bad = drops.stage("mine").csv("workflowDefinitionKey\n10015\n");
    bad.file_ref("REJECTED.txt", b"the dropper's own notes");
    bad.file_ref("errors.json", b"{\"mine\": true}");
    drops.drop_in(&bad, true);
    let mut once = drops.spawn(&["--once"]);
    assert_eq!(once.wait(), Some(0));
    let folder = drops.dir("rejected/mine");
    assert_eq!(std::fs::read_to_string(folder.join("REJECTED.txt")).unwrap(), "the dropper's own notes");
    assert_eq!(std::fs::read_to_string(folder.join("errors.json")).unwrap(), "{\"mine\": true}");
    assert!(std::fs::read_to_string(folder.join("REJECTED-2.txt")).unwrap().contains("was NOT sent to Jumio"));
    assert!(std::fs::read_to_string(folder.join("errors-2.json")).unwrap().contains("missing_column"));
}

#[test]
fn every_session_ends_with_an_ssh_disconnect() {
    let server = TestServer::start();
    let config = server.write_config_file(&[]);
    let out = jumio(&config, &["send", &Batch::valid("polite", 4).dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let log = server.log();
    let sessions = log.matches("Accepted publickey").count();
    assert!(sessions >= 1);
    assert_eq!(log.matches("Received disconnect from").count(), sessions, "{log}");
}

#[test]
fn a_key_with_a_passphrase_is_named_as_such() {
    let server = TestServer::start();
    let key = server.dir.path().join("locked_key");
    let status = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "secret", "-f"]).arg(&key).status().unwrap();
    assert!(status.success());
    let config = server.write_config_file(&[(&server.dir.path().join("client_key").display().to_string(), &key.display().to_string())]);
    let out = jumio(&config, &["send", &Batch::valid("locked", 1).dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is protected by a passphrase"), "{}", text(&out.stderr));
}

#[test]
fn a_zero_timeout_is_refused_by_name() {
    let server = TestServer::start();
    let config = server.write_config_file(&[("timeout_secs = 10", "timeout_secs = 0")]);
    let out = jumio(&config, &["send", &Batch::valid("never", 1).dir.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("sftp.timeout_secs must be at least 1"), "{}", text(&out.stderr));
    assert!(server.remote_folders().is_empty());
}

/// A config whose network steps may take `timeout_secs`, over one session, with one attempt.
fn stalling(config: &Path, timeout_secs: u64) {
    let text = std::fs::read_to_string(config).unwrap();
    let text = text.replace("connections = 4", "connections = 1").replace("max_attempts = 3", "max_attempts = 1");
    std::fs::write(config, text.replace("timeout_secs = 10", &format!("timeout_secs = {timeout_secs}"))).unwrap();
}

fn big(name: &str, rows: usize) -> Batch {
    let batch = Batch::new(name);
    let mut csv = "workflowDefinitionKey,customerInternalReference,frontImage\n".to_owned();
    for i in 0..rows {
        batch.file_ref(&format!("img/{i}.png"), &[fixtures::png(8, 8), fixtures::noise(2_000_000, i as u64)].concat());
        csv.push_str(&format!("10015,{name}-{i},img/{i}.png\n"));
    }
    batch.csv(&csv)
}

#[test]
fn a_server_that_stalls_mid_upload_is_noticed_within_the_timeout() {
    let server = TestServer::start();
    let config = server.write_config_file(&[]);
    stalling(&config, 3);
    let batch = big("stalled", 6);
    let child = send_slowed(&config, &batch, "after_file~300");
    wait_for_server_bytes(&server, 2_000_000);
    server.freeze();
    let frozen_at = Instant::now();
    let out = child.wait_with_output().unwrap();
    let noticed = frozen_at.elapsed();
    server.thaw();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("timed out after 3 s talking to 127.0.0.1:"), "{said}");
    // One timeout of 3 s, a second for each abandoned call: far from three timeouts in a row.
    assert!(noticed < Duration::from_secs(8), "took {noticed:?} to give up on a stalled server: {said}");
}

#[test]
fn sigterm_while_the_server_stalls_ends_the_process_within_30_seconds() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    stalling(&drops.config, 300);
    let staged = drops.stage("stalled");
    for (rel, bytes) in tree(&big("stalled", 6).dir) {
        staged.file_ref(&rel, &bytes);
    }
    let mut daemon = drops.spawn_with_env(&[], &[(jumio_batchd::failpoint::ENV, "after_file~300")]);
    drops.drop_in(&staged, true);
    let deadline = Instant::now() + WAIT;
    while dir_bytes(&server.home()) < 2_000_000 {
        assert!(Instant::now() < deadline, "the upload never started: {}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(5));
    }
    server.freeze();
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGTERM) };
    let code = loop {
        if let Some(code) = daemon.try_wait() {
            break code;
        }
        assert!(asked.elapsed() < Duration::from_secs(40), "still running 40 s after SIGTERM: {}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = asked.elapsed();
    server.thaw();
    assert!(took <= Duration::from_secs(30), "the process lived {took:?} after SIGTERM");
    assert_eq!(code, Some(0), "{}", daemon.log_text());
    assert!(!server.home().join(&server.remote_folders()[0]).join("DONE").exists());
}
