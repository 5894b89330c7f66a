//! A batch reaches the server exactly once, complete, whatever happens to the process or the
//! server: the real binary is killed with SIGKILL at many instants and run again.

mod support;

use jumio_batchd::batch::State;
use jumio_batchd::store::Store;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::fixtures::{self, Batch};
use support::sshd::{dir_bytes, tree, with_done, TestServer};

const ROWS: usize = 12;
/// Slows each file by 50 ms, so a server killed after some megabytes dies mid-batch under any load.
const SLOW: &str = "after_file~50";
const IMAGE_BYTES: usize = 2_800_000;

/// About 100 MB: ROWS rows, three incompressible images each.
fn big_batch() -> Batch {
    let batch = Batch::new("batch-big");
    let mut csv = format!("{}\n", "workflowDefinitionKey,customerInternalReference,frontImage,backImage,faceImage");
    for row in 0..ROWS {
        let mut names = Vec::new();
        for (k, side) in ["front", "back", "face"].iter().enumerate() {
            let name = format!("img/{row:02}.{side}.png");
            batch.file_ref(&name, &[fixtures::png(8, 8), fixtures::noise(IMAGE_BYTES + k * 1000, (row * 3 + k) as u64)].concat());
            names.push(name);
        }
        csv.push_str(&format!("10015,big-{row:02},{}\n", names.join(",")));
    }
    batch.csv(&csv)
}

fn send(config: &Path, batch: &Batch, failpoint: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jumio-batchd"));
    cmd.arg("--config").arg(config).args(["send", "--json"]).arg(&batch.dir).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.env_remove(jumio_batchd::failpoint::ENV);
    if let Some(point) = failpoint {
        cmd.env(jumio_batchd::failpoint::ENV, point);
    }
    cmd.spawn().unwrap()
}

/// Lines of the child's stderr, as they come.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

enum Instant_ {
    Failpoint(&'static str),
    BytesOnServer(u64),
}

/// Runs `send` until the instant, kills it with SIGKILL, runs it again to completion, and
/// checks that exactly one complete copy with one DONE is on the server.
fn kill_at_then_resume(server: &TestServer, batch: &Batch, instant: Instant_, label: &str) {
    for entry in std::fs::read_dir(server.home()).unwrap().flatten() {
        std::fs::remove_dir_all(entry.path()).unwrap();
    }
    let db = server.dir.path().join(format!("state-{label}.db"));
    let config = server.write_config_file(&[(&server.dir.path().join("state.db").display().to_string(), &db.display().to_string())]);
    let mut child = match instant {
        Instant_::Failpoint(point) => {
            let mut child = send(&config, batch, Some(point));
            let lines = stderr_lines(&mut child);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let line = lines.recv_timeout(deadline - Instant::now()).unwrap_or_else(|_| panic!("{label}: failpoint never reached"));
                if line.contains("failpoint") {
                    break;
                }
            }
            child
        }
        Instant_::BytesOnServer(threshold) => {
            let mut child = send(&config, batch, None);
            let deadline = Instant::now() + Duration::from_secs(60);
            while dir_bytes(&server.home()) < threshold && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(child.try_wait().unwrap().is_none(), "{label}: send finished before the instant");
            child
        }
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let out = send(&config, batch, None).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{label}: resumed send failed: {stderr}");
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let folders = server.remote_folders();
    assert_eq!(folders.len(), 1, "{label}: exactly one remote folder, got {folders:?}");
    assert_eq!(receipt["remote_dir"], folders[0], "{label}");
    let expected = with_done(tree(&batch.dir));
    let remote = tree(&server.home().join(&folders[0]));
    assert_eq!(remote.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{label}");
    assert!(remote == expected, "{label}: remote files differ from the batch");

    let record = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = Store::open_read_only(&db).await.unwrap();
        store.find("batch-big").await.unwrap().unwrap()
    });
    assert_eq!(record.state, State::Submitted, "{label}");
    assert_eq!(record.remote_uuid.as_deref(), Some(folders[0].as_str()), "{label}");

    // A script that loops `send` until exit 0 sees 0 again, and nothing more is sent.
    let again = send(&config, batch, None).wait_with_output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{label}: {}", String::from_utf8_lossy(&again.stderr));
    let stored: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!((stored["already_submitted"].as_bool(), stored["remote_uuid"].as_str()), (Some(true), Some(folders[0].as_str())), "{label}");
    assert_eq!(server.remote_folders(), folders, "{label}");
    assert!(tree(&server.home().join(&folders[0])) == expected, "{label}: untouched");
}

#[test]
fn killed_at_any_instant_the_batch_still_lands_exactly_once() {
    let server = TestServer::start();
    let batch = big_batch();
    let instants = [
        ("after_admit", Instant_::Failpoint("after_admit")),
        ("after_uuid_commit", Instant_::Failpoint("after_uuid_commit")),
        ("before_mkdir", Instant_::Failpoint("before_mkdir")),
        ("first_megabyte", Instant_::BytesOnServer(1_000_000)),
        ("mid_file_20mb", Instant_::BytesOnServer(20_000_000)),
        ("between_files_1", Instant_::Failpoint("after_file:1")),
        ("mid_file_55mb", Instant_::BytesOnServer(55_000_000)),
        ("between_files_20", Instant_::Failpoint("after_file:20")),
        ("mid_file_80mb", Instant_::BytesOnServer(80_000_000)),
        ("just_before_done", Instant_::Failpoint("before_done")),
        ("just_after_done", Instant_::Failpoint("after_done")),
    ];
    for (label, instant) in instants {
        kill_at_then_resume(&server, &batch, instant, label);
    }
}

/// A longer randomized loop: `JUMIO_KILL_LOOP=N cargo test --test exactly_once -- --ignored`.
#[test]
#[ignore]
fn killed_at_random_instants_the_batch_still_lands_exactly_once() {
    let server = TestServer::start();
    let batch = big_batch();
    let runs: u64 = std::env::var("JUMIO_KILL_LOOP").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    for run in 0..runs {
        let threshold = (fixtures::noise(8, run)[0] as u64 * 400_000) % 100_000_000;
        kill_at_then_resume(&server, &batch, Instant_::BytesOnServer(threshold), &format!("random-{run}-{threshold}"));
    }
}

#[test]
fn sshd_stopped_mid_batch_and_restarted_later_the_batch_completes_after_retries() {
    let mut server = TestServer::start();
    let batch = big_batch();
    let config = server.write_config_file(&[("max_attempts = 3", "max_attempts = 8")]);
    let mut child = send(&config, &batch, Some(SLOW));
    let lines = stderr_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while dir_bytes(&server.home()) < 30_000_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill();
    std::thread::sleep(Duration::from_millis(2500));
    server.restart();
    let status = child.wait().unwrap();
    let stderr: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{stderr:#?}");
    assert!(stderr.iter().any(|l| l.contains("retrying in")), "{stderr:#?}");
    let folders = server.remote_folders();
    assert_eq!(folders.len(), 1, "the retry resumed into the same folder");
    assert!(server.home().join(&folders[0]).join("DONE").exists());
    let expected = with_done(tree(&batch.dir));
    assert!(tree(&server.home().join(&folders[0])) == expected);
}

#[test]
fn a_wrong_host_key_fails_at_once_with_the_reason_and_sends_nothing() {
    let server = TestServer::start();
    server.pin_other_key("ed25519", server.port);
    let config = server.write_config_file(&[("max_attempts = 3", "max_attempts = 8")]);
    let batch = Batch::valid("batch-k", 2);
    let started = Instant::now();
    let out = send(&config, &batch, None).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(started.elapsed() < Duration::from_secs(30), "no retries for a permanent error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST KEY CHANGED"));
    assert!(server.remote_folders().is_empty());
    assert_eq!(dir_bytes(&server.home()), 0);
    let record = tokio::runtime::Runtime::new().unwrap().block_on(async {
        Store::open_read_only(&server.dir.path().join("state.db")).await.unwrap().find("batch-k").await.unwrap().unwrap()
    });
    assert_eq!((record.state, record.attempts), (State::Failed, 1));
    assert!(record.last_error.unwrap().contains("HOST KEY CHANGED"));
}

#[test]
fn the_same_batch_sent_again_is_refused_as_a_duplicate_unless_allowed() {
    let server = TestServer::start();
    let config = server.write_config_file(&[]);
    let batch = Batch::valid("batch-d", 2);
    assert!(send(&config, &batch, None).wait().unwrap().success());
    let copy = Batch::new("batch-d-copy");
    for (rel, bytes) in tree(&batch.dir) {
        copy.file_ref(&rel, &bytes);
    }
    let out = send(&config, &copy, None).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("duplicate of batch-d, submitted ") && stderr.contains(&server.remote_folders()[0]), "{stderr}");
    assert_eq!(server.remote_folders().len(), 1);
    let out = Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg("--config")
        .arg(&config)
        .args(["send", "--allow-duplicate"])
        .arg(&copy.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.remote_folders().len(), 2);
}

#[test]
fn sending_a_failed_batch_again_resumes_into_its_own_folder() {
    let mut server = TestServer::start();
    let batch = big_batch();
    let config = server.write_config_file(&[("max_attempts = 3", "max_attempts = 1")]);
    let child = send(&config, &batch, Some(SLOW));
    let deadline = Instant::now() + Duration::from_secs(60);
    while dir_bytes(&server.home()) < 20_000_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed: gave up after 1 attempt(s)"));
    let partial = server.remote_folders();
    assert_eq!(partial.len(), 1);

    server.restart();
    let out = send(&config, &batch, None).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.remote_folders(), partial, "the same folder, completed");
    let expected = with_done(tree(&batch.dir));
    assert!(tree(&server.home().join(&partial[0])) == expected);
}
