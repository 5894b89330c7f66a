//! Against an SFTP server that is not OpenSSH (asyncssh's): a batch lands byte-identical with
//! DONE last, a killed `send` resumes into its one folder, and a wrong host key is refused.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::fixtures::Batch;
use support::other_server::OtherServer;
use support::sshd::{keygen, tree, with_done};

fn send(config: &Path, batch: &Batch) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg("--config")
        .arg(config)
        .args(["send", "--json"])
        .arg(&batch.dir)
        .env_remove(jumio_batchd::failpoint::ENV)
        .output()
        .unwrap()
}

#[test]
fn a_batch_lands_byte_identical_with_done_over_one_and_four_sessions() {
    let server = OtherServer::start();
    for (connections, name) in [(1, "one-session"), (4, "four-sessions")] {
        let config = server.write_config_file(connections);
        let batch = Batch::new(name).with_tagged_rows(6, name);
        let out = send(&config, &batch);
        assert_eq!(out.status.code(), Some(0), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
        let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let folder = receipt["remote_uuid"].as_str().unwrap();
        assert!(tree(&server.home().join(folder)) == with_done(tree(&batch.dir)), "{name}: the server holds exactly the batch");
    }
    assert_eq!(server.remote_folders().len(), 2);
}

#[test]
fn a_send_killed_mid_batch_resumes_into_its_one_folder() {
    let server = OtherServer::start();
    let config = server.write_config_file(1);
    let batch = Batch::valid("resumed", 4);
    let mut child = Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg("--config")
        .arg(&config)
        .arg("send")
        .arg(&batch.dir)
        .env(jumio_batchd::failpoint::ENV, "after_file:3")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in stderr.lines() {
        assert!(Instant::now() < deadline);
        if line.unwrap().contains("failpoint after_file:3 reached") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = server.remote_folders();
    assert_eq!(partial.len(), 1);
    assert!(!server.home().join(&partial[0]).join("DONE").exists());

    let out = send(&config, &batch);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.remote_folders(), partial, "resumed into the same folder");
    assert!(tree(&server.home().join(&partial[0])) == with_done(tree(&batch.dir)));
    let again = send(&config, &batch);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&again.stdout).unwrap()["already_submitted"], true);
}

#[test]
fn a_host_key_that_is_not_the_known_one_is_refused_before_anything_is_created() {
    let server = OtherServer::start();
    let config = server.write_config_file(4);
    let other = tempfile::tempdir().unwrap();
    keygen(&other.path().join("k"), "ed25519");
    let key = std::fs::read_to_string(other.path().join("k.pub")).unwrap();
    std::fs::write(server.dir.path().join("known_hosts"), format!("[127.0.0.1]:{} {key}", server.port)).unwrap();
    let out = send(&config, &Batch::valid("refused", 1));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST KEY CHANGED"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(server.remote_folders().is_empty());
}
