//! One batch, one record: a batch is known by its record, never by its folder's name, and one
//! process works a batch at a time. The real binary, a real sshd, drop folders in a temp dir.

mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::daemon::Drops;
use support::fixtures::{self, Batch};
use support::sshd::{tree, with_done, TestServer};

const MARKER_MODE: &str = "ready = \"marker\"\npoll_secs = 1\nmax_parallel_batches = 2";
const WAIT: Duration = Duration::from_secs(90);

type Files = std::collections::BTreeMap<String, Vec<u8>>;

/// The server folder holding exactly `local` plus DONE.
#[track_caller]
fn folder_holding(server: &TestServer, local: &Files) -> String {
    let expected = with_done(local.clone());
    let found: Vec<String> = server.remote_folders().into_iter().filter(|f| tree(&server.home().join(f)) == expected).collect();
    assert_eq!(found.len(), 1, "exactly one folder on the server holds the batch: {:?}", server.remote_folders());
    found[0].clone()
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn jumio(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jumio-batchd")).arg("--config").arg(config).args(args).output().unwrap()
}

fn status_of(config: &Path, name: &str) -> serde_json::Value {
    let out = jumio(config, &["status", "--json", name]);
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap().remove(0)
}

#[test]
fn the_same_name_dropped_again_with_new_content_ships_again_into_a_second_uuid_folder() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let _daemon = drops.spawn(&[]);
    let first = drops.stage("daily").with_tagged_rows(2, "monday");
    let monday = tree(&first.dir);
    drops.drop_in(&first, true);
    drops.wait_for("done", 1, WAIT);
    let second = drops.stage("daily").with_tagged_rows(3, "tuesday");
    let tuesday = tree(&second.dir);
    drops.drop_in(&second, true);
    drops.wait_for("done", 2, WAIT);

    assert_eq!(drops.names("done"), ["daily", "daily-2"]);
    assert_eq!(server.remote_folders().len(), 2);
    let (monday_folder, tuesday_folder) = (folder_holding(&server, &monday), folder_holding(&server, &tuesday));
    assert_ne!(monday_folder, tuesday_folder);
    assert_eq!(json_file(&drops.dir("done/daily/RECEIPT.json"))["remote_uuid"], monday_folder.as_str());
    let receipt = json_file(&drops.dir("done/daily-2/RECEIPT.json"));
    assert_eq!((receipt["remote_uuid"].as_str(), receipt["rows"].as_u64()), (Some(tuesday_folder.as_str()), Some(3)));
    assert!(drops.names("work").is_empty() && drops.names("rejected").is_empty());
    drops.assert_no_personal_data_logged();
}

#[test]
fn a_rejected_batch_dropped_again_corrected_is_shipped() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let _daemon = drops.spawn(&[]);
    let broken = format!("{}\n{}\n", fixtures::HEADER, fixtures::row(1).replace("10015,", "ten,"));
    drops.drop_in(&drops.stage("b2").with_tagged_rows(1, "b2").csv(&broken), true);
    drops.wait_for("rejected", 1, WAIT);
    let report = std::fs::read_to_string(drops.dir("rejected/b2/REJECTED.txt")).unwrap();
    assert!(report.contains("1 problem(s) to fix") && report.contains("workflowDefinitionKey"), "{report}");

    let fixed = drops.stage("b2").with_tagged_rows(1, "b2");
    let files = tree(&fixed.dir);
    drops.drop_in(&fixed, true);
    drops.wait_for("done", 1, WAIT);
    let folder = folder_holding(&server, &files);
    assert_eq!(json_file(&drops.dir("done/b2/RECEIPT.json"))["remote_uuid"], folder.as_str());
    assert_eq!(drops.names("rejected"), ["b2"], "the first report stays, nothing overwritten");
}

#[test]
fn the_content_of_a_submitted_batch_dropped_again_under_any_name_is_rejected_as_a_duplicate_naming_the_original() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let _daemon = drops.spawn(&[]);
    let original = drops.stage("orig").with_tagged_rows(2, "same");
    let files = tree(&original.dir);
    drops.drop_in(&original, true);
    drops.wait_for("done", 1, WAIT);
    let uuid = folder_holding(&server, &files);

    for (i, name) in ["orig", "copy"].iter().enumerate() {
        let again = drops.stage(name);
        for (rel, bytes) in &files {
            again.file_ref(rel, bytes);
        }
        drops.drop_in(&again, true);
        drops.wait_for("rejected", i + 1, WAIT);
        let filed = drops.names("rejected")[i].clone();
        let report = std::fs::read_to_string(drops.dir("rejected").join(&filed).join("REJECTED.txt")).unwrap();
        assert!(report.contains("duplicate of orig, submitted ") && report.contains(&uuid), "{report}");
        let errors = json_file(&drops.dir("rejected").join(&filed).join("errors.json"));
        assert_eq!(errors["errors"][0]["code"], "duplicate_batch");
    }
    assert_eq!(drops.names("rejected"), ["copy", "orig"]);
    let copy = status_of(&drops.config, "copy");
    assert_eq!(
        (copy["reject_reason"].as_str(), copy["duplicate_of"].clone()),
        (Some("duplicate"), status_of(&drops.config, "1")["id"].clone())
    );
    assert_eq!(server.remote_folders(), [uuid]);
}

#[test]
fn a_panic_in_one_batch_task_files_that_batch_in_failed_and_the_next_batch_still_ships() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let _daemon = drops.spawn_with_env(&[], &[(jumio_batchd::failpoint::ENV, "panic:batch_task")]);
    drops.drop_in(&drops.stage("unlucky").with_tagged_rows(1, "unlucky"), true);
    drops.wait_for("failed", 1, WAIT);
    let report = std::fs::read_to_string(drops.dir("failed/unlucky/FAILED.txt")).unwrap();
    assert!(report.contains("internal error: failpoint panic:batch_task injected"), "{report}");
    assert_eq!(status_of(&drops.config, "unlucky")["state"], "failed");

    let next = drops.stage("next").with_tagged_rows(1, "next");
    let files = tree(&next.dir);
    drops.drop_in(&next, true);
    drops.wait_for("done", 1, WAIT);
    folder_holding(&server, &files);
    assert_eq!(server.remote_folders().len(), 1, "the batch whose task panicked was not shipped");
}

#[test]
fn run_once_does_not_hang_on_a_panicked_batch_and_says_so_in_its_exit_status() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    drops.drop_in(&drops.stage("unlucky").with_tagged_rows(1, "unlucky"), true);
    let mut once = drops.spawn_with_env(&["--once"], &[(jumio_batchd::failpoint::ENV, "panic:batch_task")]);
    assert_eq!(once.wait(), Some(2), "{}", once.log_text());
    assert_eq!(drops.names("failed"), ["unlucky"]);
    assert!(once.log_text().contains("1 batch(es) could not be handled"), "{}", once.log_text());
}

#[test]
fn killed_while_a_batch_is_being_filed_the_restart_files_it_exactly_once() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let batch = drops.stage("filing").with_tagged_rows(2, "filing");
    let files = tree(&batch.dir);
    drops.drop_in(&batch, true);
    let mut daemon = drops.spawn_with_env(&[], &[(jumio_batchd::failpoint::ENV, "while_filing")]);
    daemon.wait_for_log("failpoint while_filing reached", WAIT);
    daemon.kill();
    let work = drops.names("work");
    assert!(work.len() == 1 && work[0].ends_with(".filing"), "{work:?}");
    assert!(drops.names("done").is_empty());

    let mut again = drops.spawn(&["--once"]);
    assert_eq!(again.wait(), Some(0), "{}", again.log_text());
    assert_eq!(drops.names("done"), ["filing"]);
    assert!(drops.names("work").is_empty() && drops.names("inbox").is_empty());
    let folder = folder_holding(&server, &files);
    assert_eq!(server.remote_folders().len(), 1);
    let receipt = json_file(&drops.dir("done/filing/RECEIPT.json"));
    assert_eq!(receipt["remote_uuid"], folder.as_str());
    assert_eq!(receipt["files_sha256"].as_object().unwrap().len(), 7);
    assert_eq!(tree(&drops.dir("done/filing")).into_iter().filter(|(k, _)| k != "RECEIPT.json" && k != "DONE").collect::<Files>(), files);
}

#[test]
fn a_second_daemon_on_the_same_database_refuses_to_start() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let first = drops.spawn(&[]);
    first.wait_for_log("jumio-batchd running", WAIT);
    let mut second = drops.spawn(&[]);
    assert_eq!(second.wait(), Some(2));
    let said = second.log_text();
    assert!(said.contains(&format!("already running as PID {} since ", first.pid())), "{said}");

    let batch = drops.stage("still").with_tagged_rows(1, "still");
    let files = tree(&batch.dir);
    drops.drop_in(&batch, true);
    drops.wait_for("done", 1, WAIT);
    folder_holding(&server, &files);
}

fn send(config: &Path, dir: &Path, failpoint: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jumio-batchd"));
    cmd.arg("--config").arg(config).args(["send", "--json"]).arg(dir).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.env_remove(jumio_batchd::failpoint::ENV);
    if let Some(point) = failpoint {
        cmd.env(jumio_batchd::failpoint::ENV, point);
    }
    cmd.spawn().unwrap()
}

#[test]
fn two_sends_of_one_folder_ship_one_folder_and_nothing_is_opened_for_writing_after_its_done() {
    let server = TestServer::start_logged();
    let config = server.write_config_file(&[("connections = 4", "connections = 1")]);
    let batch = Batch::valid("twice", 4);
    let files = tree(&batch.dir);
    let first = send(&config, &batch.dir, Some("after_file~200"));
    let started = Instant::now();
    while server.remote_folders().is_empty() || started.elapsed() < Duration::from_secs(1) {
        assert!(started.elapsed() < WAIT, "the first send never created its folder");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = send(&config, &batch.dir, None).wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("twice: being shipped by PID {} since ", first.id())), "{said}");

    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    let folder = folder_holding(&server, &files);
    assert_eq!(server.remote_folders(), std::slice::from_ref(&folder));
    let done = format!("{folder}/DONE");
    let done_closed_at = server.closed_in_order().iter().position(|p| *p == done).expect("DONE closed");
    let opens = server.write_opens();
    assert_eq!(opens.iter().filter(|(p, _)| *p == done).count(), 1, "DONE written once");
    let late: Vec<&(String, usize)> = opens.iter().filter(|(_, closes_before)| *closes_before > done_closed_at).collect();
    assert!(late.is_empty(), "opened for writing after DONE: {late:?}");
}

#[test]
fn send_run_again_on_a_submitted_batch_exits_0_and_sends_nothing() {
    let server = TestServer::start_logged();
    let config = server.write_config_file(&[]);
    let batch = Batch::valid("again", 2);
    let first = send(&config, &batch.dir, None).wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0));
    let receipt: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(receipt["already_submitted"], false);
    let writes = server.write_opens().len();

    let again = send(&config, &batch.dir, None).wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{said}");
    let stored: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(stored["already_submitted"], true);
    for key in ["remote_uuid", "remote_dir", "rows", "files", "bytes", "files_sha256"] {
        assert_eq!(stored[key], receipt[key], "{key}");
    }
    let uuid = receipt["remote_uuid"].as_str().unwrap();
    assert!(said.contains(&format!("again: already submitted as {uuid} at ")) && said.contains("nothing was sent"), "{said}");
    assert_eq!(server.write_opens().len(), writes, "nothing opened for writing");
    assert_eq!(server.remote_folders(), [uuid]);
    // Asked for explicitly, the same folder is submitted again.
    let forced = jumio(&config, &["send", "--allow-duplicate", &batch.dir.display().to_string()]);
    assert_eq!(forced.status.code(), Some(0), "{}", String::from_utf8_lossy(&forced.stderr));
    assert_eq!(server.remote_folders().len(), 2);

    // A changed image of the same size is other content: a new batch, shipped.
    let image = batch.dir.join("img/1.face.png");
    let mut bytes = std::fs::read(&image).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&image, bytes).unwrap();
    let changed = send(&config, &batch.dir, None).wait_with_output().unwrap();
    assert_eq!(changed.status.code(), Some(0), "{}", String::from_utf8_lossy(&changed.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&changed.stdout).unwrap()["already_submitted"], false);
    assert_eq!(server.remote_folders().len(), 3);
}

#[test]
fn folders_in_work_without_a_record_id_are_adopted_and_an_unfinished_one_resumes_into_its_own_uuid() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    // The database of an installation that has shipped before.
    drops.drop_in(&drops.stage("earlier").with_tagged_rows(1, "earlier"), true);
    drops.run_once();
    // Left by an earlier version: an unfinished record whose folder in work/ has no id in its name.
    let legacy = Batch::at(&drops.dir("work/legacy")).with_tagged_rows(2, "legacy");
    let legacy_files = tree(&legacy.dir);
    let mut interrupted = send(&drops.config, &legacy.dir, Some("after_uuid_commit"));
    let deadline = Instant::now() + WAIT;
    while status_of_opt(&drops.config, "legacy").is_none_or(|s| s["state"] != "uploading") {
        assert!(Instant::now() < deadline, "the first send never committed its UUID");
        std::thread::sleep(Duration::from_millis(50));
    }
    interrupted.kill().unwrap();
    interrupted.wait().unwrap();
    let committed = status_of(&drops.config, "legacy")["remote_uuid"].as_str().unwrap().to_owned();
    // Put there by hand: no record at all.
    let by_hand = Batch::at(&drops.dir("work/by-hand")).with_tagged_rows(1, "by-hand");
    let by_hand_files = tree(&by_hand.dir);

    let mut once = drops.spawn(&["--once"]);
    assert_eq!(once.wait(), Some(0), "{}", once.log_text());
    assert_eq!(drops.names("done"), ["by-hand", "earlier", "legacy"]);
    assert_eq!(folder_holding(&server, &legacy_files), committed, "resumed into the UUID committed before");
    folder_holding(&server, &by_hand_files);
    assert_eq!(server.remote_folders().len(), 3);
}

fn status_of_opt(config: &Path, name: &str) -> Option<serde_json::Value> {
    let out = jumio(config, &["status", "--json", name]);
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).ok()?.into_iter().next()
}
