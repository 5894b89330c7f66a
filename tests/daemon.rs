//! The daemon as a process: batches dropped into the inbox while `run` runs.

mod support;

use std::time::Duration;
use support::daemon::Drops;
use support::fixtures::{self, Batch};
use support::sshd::{dir_bytes, tree, TestServer};

const MARKER_MODE: &str = "ready = \"marker\"\npoll_secs = 1\nmax_parallel_batches = 2";
const WAIT: Duration = Duration::from_secs(90);

fn valid(drops: &Drops, name: &str, rows: usize) -> Batch {
    drops.stage(name).with_tagged_rows(rows, name)
}

/// The server folder whose input.csv equals the batch's.
fn remote_folder_of(server: &TestServer, local: &std::collections::BTreeMap<String, Vec<u8>>) -> String {
    server
        .remote_folders()
        .into_iter()
        .find(|f| std::fs::read(server.home().join(f).join("input.csv")).ok().as_ref() == local.get("input.csv"))
        .expect("batch on the server")
}

#[test]
fn dropped_batches_are_shipped_byte_identical_with_done_last_and_the_invalid_one_is_rejected_with_a_report() {
    let server = TestServer::start_logged();
    let drops = Drops::new(&server, MARKER_MODE);
    let mut daemon = drops.spawn(&[]);
    let mut originals = Vec::new();
    for name in ["batch-a", "batch-b", "batch-c"] {
        let batch = valid(&drops, name, 3);
        originals.push((name, tree(&batch.dir)));
        drops.drop_in(&batch, true);
    }
    let bad =
        valid(&drops, "batch-bad", 2).csv(&format!("{}\n{}\n10015,r/2,img/missing.png,,,,,,,,,,,,,\n", fixtures::HEADER, fixtures::row(1)));
    drops.drop_in(&bad, true);

    drops.wait_for("done", 3, WAIT);
    drops.wait_for("rejected", 1, WAIT);
    assert_eq!(drops.names("done"), ["batch-a", "batch-b", "batch-c"]);
    assert_eq!(drops.names("rejected"), ["batch-bad"]);
    assert!(drops.names("inbox").is_empty() && drops.names("work").is_empty());
    assert_eq!(server.remote_folders().len(), 3);

    let closed = server.closed_in_order();
    for (name, local) in &originals {
        let folder = remote_folder_of(&server, local);
        assert!(tree(&server.home().join(&folder)) == expected_remote_from(local), "{name} differs on the server");
        let last = closed.iter().rposition(|p| p.starts_with(&format!("{folder}/"))).unwrap();
        assert_eq!(closed[last], format!("{folder}/DONE"), "{name}: DONE closed last");
        let receipt: serde_json::Value =
            serde_json::from_slice(&std::fs::read(drops.dir("done").join(name).join("RECEIPT.json")).unwrap()).unwrap();
        assert_eq!(receipt["remote_uuid"], folder.as_str());
        assert_eq!(receipt["files_sha256"].as_object().unwrap().len(), 10);
    }

    let report = std::fs::read_to_string(drops.dir("rejected/batch-bad/REJECTED.txt")).unwrap();
    assert!(report.contains("was NOT sent to Jumio"), "{report}");
    assert!(report.contains("row 2 (r/2):\n"), "{report}");
    assert!(report.contains("[reference_forbidden_character] customerInternalReference:"), "{report}");
    assert!(report.contains("[image_missing] frontImage:"), "{report}");
    let errors: serde_json::Value = serde_json::from_slice(&std::fs::read(drops.dir("rejected/batch-bad/errors.json")).unwrap()).unwrap();
    assert_eq!(errors["valid"], false);
    assert_eq!(errors["errors"].as_array().unwrap().len(), 2);

    assert_eq!(daemon.terminate(), Some(0));
    let log = drops.logs();
    assert!(log.contains("submitted") && log.contains("rejected"), "{log}");
    drops.assert_no_personal_data_logged();
}

fn expected_remote_from(local: &std::collections::BTreeMap<String, Vec<u8>>) -> std::collections::BTreeMap<String, Vec<u8>> {
    support::sshd::with_done(local.clone())
}

/// Writes the files one by one with a pause after each, checking nobody claimed the folder.
fn write_slowly(target: &std::path::Path, files: &std::collections::BTreeMap<String, Vec<u8>>, gap: Duration) {
    for (rel, bytes) in files {
        let path = target.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        std::thread::sleep(gap);
        assert!(target.is_dir(), "claimed while still being written");
    }
}

#[test]
fn a_folder_written_slowly_is_not_claimed_before_its_marker() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let _daemon = drops.spawn(&[]);
    let staged = valid(&drops, "slow", 3);
    let files = tree(&staged.dir);
    let target = drops.dir("inbox/slow");
    write_slowly(&target, &files, Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(target.is_dir() && drops.names("work").is_empty(), "claimed without a marker");
    std::fs::write(target.join("DONE"), b"").unwrap();
    drops.wait_for("done", 1, WAIT);
    let folder = remote_folder_of(&server, &files);
    assert!(tree(&server.home().join(folder)) == expected_remote_from(&files));
    drops.assert_no_personal_data_logged();
}

#[test]
fn in_settle_mode_a_folder_is_claimed_only_once_it_stopped_changing() {
    let server = TestServer::start();
    let drops = Drops::new(&server, "ready = \"settle\"\nsettle_secs = 2\npoll_secs = 1");
    let _daemon = drops.spawn(&[]);
    let staged = valid(&drops, "settling", 3);
    let files = tree(&staged.dir);
    let target = drops.dir("inbox/settling");
    write_slowly(&target, &files, Duration::from_millis(700));
    drops.wait_for("done", 1, WAIT);
    let folder = remote_folder_of(&server, &files);
    assert!(tree(&server.home().join(folder)) == expected_remote_from(&files));
}

#[test]
fn fifty_batches_dropped_at_once_are_each_shipped_exactly_once() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let mut staged = Vec::new();
    for i in 0..50 {
        staged.push(valid(&drops, &format!("b{i:02}"), 1));
    }
    let _daemon = drops.spawn(&[]);
    for batch in &staged {
        drops.drop_in(batch, true);
    }
    drops.wait_for("done", 50, WAIT);
    let folders = server.remote_folders();
    assert_eq!(folders.len(), 50);
    for folder in &folders {
        assert!(server.home().join(folder).join("DONE").is_file());
    }
    let mut csvs: Vec<Vec<u8>> = folders.iter().map(|f| std::fs::read(server.home().join(f).join("input.csv")).unwrap()).collect();
    csvs.sort();
    csvs.dedup();
    assert_eq!(csvs.len(), 50, "no batch shipped twice");
    assert!(drops.names("rejected").is_empty() && drops.names("failed").is_empty());
}

#[test]
fn sigterm_during_an_upload_stops_cleanly_and_a_restart_completes_it_exactly_once() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    // One session, slowed by 150 ms per file: SIGTERM lands mid-batch whatever the machine's load.
    let text = std::fs::read_to_string(&drops.config).unwrap().replace("connections = 4", "connections = 1");
    std::fs::write(&drops.config, text).unwrap();
    let batch = drops.stage("big");
    let mut csv = format!("{}\n", "workflowDefinitionKey,customerInternalReference,frontImage");
    for i in 0..24 {
        batch.file_ref(&format!("img/{i}.png"), &[fixtures::png(8, 8), fixtures::noise(2_500_000, i)].concat());
        csv.push_str(&format!("10015,big-{i},img/{i}.png\n"));
    }
    let batch = batch.csv(&csv);
    let files = tree(&batch.dir);
    let mut daemon = drops.spawn_with_env(&[], &[(jumio_batchd::failpoint::ENV, "after_file~150")]);
    drops.drop_in(&batch, true);
    let deadline = std::time::Instant::now() + WAIT;
    while dir_bytes(&server.home()) < 5_000_000 {
        assert!(std::time::Instant::now() < deadline, "upload never started: {}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(daemon.terminate(), Some(0), "{}", daemon.log_text());
    assert!(drops.names("done").is_empty(), "stopped before finishing");
    let work = drops.names("work");
    assert!(work.len() == 1 && work[0].ends_with(".big"), "the claimed folder carries its record id: {work:?}");
    assert_eq!(server.remote_folders().len(), 1);
    assert!(!server.home().join(&server.remote_folders()[0]).join("DONE").exists());

    let mut again = drops.spawn(&["--once"]);
    assert_eq!(again.wait(), Some(0), "{}", again.log_text());
    assert_eq!(drops.names("done"), ["big"]);
    let folders = server.remote_folders();
    assert_eq!(folders.len(), 1, "resumed into the same folder");
    assert!(tree(&server.home().join(&folders[0])) == expected_remote_from(&files));
    drops.assert_no_personal_data_logged();
}

#[test]
fn a_loose_file_in_the_inbox_is_filed_with_an_explanation() {
    let server = TestServer::start();
    let drops = Drops::new(&server, "ready = \"marker\"\nsettle_secs = 1\npoll_secs = 1");
    std::fs::write(drops.dir("inbox/input.csv"), "workflowDefinitionKey\n").unwrap();
    std::fs::write(drops.dir("inbox/.hidden"), "x").unwrap();
    std::fs::write(drops.dir("inbox/upload.part"), "x").unwrap();
    let _daemon = drops.spawn(&[]);
    drops.wait_for("rejected", 1, WAIT);
    let report = std::fs::read_to_string(drops.dir("rejected/input.csv/REJECTED.txt")).unwrap();
    assert!(report.contains("a batch must be a folder"), "{report}");
    assert!(drops.dir("rejected/input.csv/input.csv").is_file());
    assert_eq!(drops.names("inbox"), [".hidden", "upload.part"]);
}

#[test]
fn run_once_ships_what_is_ready_and_exits() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    drops.drop_in(&valid(&drops, "one", 1), true);
    drops.drop_in(&valid(&drops, "two", 1), true);
    drops.drop_in(&valid(&drops, "not-ready", 1), false);
    let mut daemon = drops.spawn(&["--once"]);
    assert_eq!(daemon.wait(), Some(0), "{}", daemon.log_text());
    assert_eq!(drops.names("done"), ["one", "two"]);
    assert_eq!(drops.names("inbox"), ["not-ready"]);
}

#[test]
fn the_daemon_refuses_to_start_when_inbox_and_work_are_on_different_filesystems() {
    if !std::path::Path::new("/dev/shm").is_dir() {
        return;
    }
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let text = std::fs::read_to_string(&drops.config)
        .unwrap()
        .replace(&format!("{}/work", drops.root.path().display()), &shm.path().display().to_string());
    std::fs::write(&drops.config, text).unwrap();
    let mut daemon = drops.spawn(&[]);
    assert_ne!(daemon.wait(), Some(0));
    assert!(daemon.log_text().contains("different filesystems"), "{}", daemon.log_text());
}

#[test]
fn json_logs_carry_one_structured_line_per_transition() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let text = std::fs::read_to_string(&drops.config).unwrap() + "\n[log]\nformat = \"json\"\nlevel = \"info\"\n";
    std::fs::write(&drops.config, text).unwrap();
    drops.drop_in(&valid(&drops, "logged", 1), true);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg("--config")
        .arg(&drops.config)
        .args(["run", "--once"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
    let states: Vec<&str> =
        lines.iter().filter(|l| l["batch"] == "logged" && l["id"].is_number()).filter_map(|l| l["state"].as_str()).collect();
    assert_eq!(states, ["discovered", "validated", "uploading", "submitted"]);
    let submitted = lines.iter().find(|l| l["state"] == "submitted").unwrap();
    assert_eq!(submitted["remote_uuid"], server.remote_folders()[0].as_str());
    assert_eq!(submitted["level"], "INFO");
}

#[test]
fn a_replaced_inbox_is_watched_again_and_batches_dropped_there_are_shipped() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let _daemon = drops.spawn(&[]);
    let watching = || drops.logs().matches("watching the inbox for changes").count();
    let deadline = std::time::Instant::now() + WAIT;
    while watching() < 1 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The share is unmounted and mounted again: a new directory where the inbox was.
    std::fs::rename(drops.dir("inbox"), drops.dir("inbox.old")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::create_dir(drops.dir("inbox")).unwrap();
    while watching() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", drops.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    drops.drop_in(&valid(&drops, "after-remount", 1), true);
    drops.wait_for("done", 1, WAIT);
    assert!(drops.logs().contains("cannot read the inbox") && drops.logs().contains("inbox is readable again"), "{}", drops.logs());
}

/// Batches dropped one at a time, as upstream systems do all day, share one SSH login: the
/// daemon keeps its connection between them.
#[test]
fn batches_dropped_one_after_another_go_over_the_connection_kept_from_the_first() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let mut daemon = drops.spawn(&[]);
    for (i, name) in ["one", "two", "three"].into_iter().enumerate() {
        let batch = valid(&drops, name, 2);
        drops.drop_in(&batch, true);
        drops.wait_for("done", i + 1, WAIT);
    }
    assert_eq!(server.remote_folders().len(), 3);
    assert_eq!(server.log().matches("Accepted publickey").count(), 1, "one login for three batches");
    assert_eq!(daemon.terminate(), Some(0));
}
