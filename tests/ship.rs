//! Shipping against a real OpenSSH server: byte-identical trees, DONE last, host keys.

mod support;

use jumio_batchd::delivery::{Progress, Unfenced};
use jumio_batchd::ship::{ship, Pool, ShipError, Shipping};
use jumio_batchd::validate::validate;
use std::process::Command;
use support::fixtures::{self, Batch};
use support::sshd::{dir_bytes, keygen, tree, with_done, TestServer};
use tokio_util::sync::CancellationToken;

fn send(server: &TestServer, batch: &Batch, extra: &[&str]) -> (i32, String, String) {
    send_configured(&server.write_config_file(&[]), batch, extra)
}

/// `send` with the config file at `config`.
fn send_configured(config: &std::path::Path, batch: &Batch, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg("--config")
        .arg(config)
        .arg("send")
        .args(extra)
        .arg(&batch.dir)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// The local batch as it must appear on the server.
fn expected_tree(batch: &Batch) -> std::collections::BTreeMap<String, Vec<u8>> {
    with_done(tree(&batch.dir))
}

#[test]
fn sent_batch_lands_byte_identical_in_a_fresh_uuid_folder_with_done_last() {
    let server = TestServer::start_logged();
    let batch = Batch::valid("batch-a", 5);
    let (code, stdout, stderr) = send(&server, &batch, &["--json"]);
    assert_eq!(code, 0, "{stderr}");
    let receipt: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let folders = server.remote_folders();
    assert_eq!(folders.len(), 1);
    let uuid = uuid::Uuid::parse_str(&folders[0]).expect("folder named by a UUID");
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(receipt["remote_dir"], folders[0]);
    assert_eq!((receipt["batch"].as_str(), receipt["rows"].as_u64(), receipt["files"].as_u64()), (Some("batch-a"), Some(5), Some(15)));
    assert_eq!(tree(&server.home().join(&folders[0])), expected_tree(&batch));
    let csv_sha = receipt["files_sha256"]["input.csv"].as_str().unwrap();
    assert_eq!(csv_sha, sha256_hex(&std::fs::read(batch.path("input.csv")).unwrap()));
    assert_eq!(receipt["files_sha256"].as_object().unwrap().len(), 16);

    let closed = server.closed_in_order();
    assert_eq!(closed.last().map(String::as_str), Some(format!("{}/DONE", folders[0]).as_str()), "DONE must be closed last: {closed:?}");
    assert_eq!(closed.len(), 17, "each file written once, DONE once: {closed:?}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn unreferenced_files_and_the_marker_stay_home() {
    let server = TestServer::start();
    let batch = Batch::valid("b", 1).file("DONE", b"").file("notes.txt", b"private notes");
    let (code, stdout, stderr) = send(&server, &batch, &[]);
    assert_eq!(code, 0, "{stderr}");
    let remote = tree(&server.home().join(stdout.trim()));
    assert_eq!(
        remote.keys().map(String::as_str).collect::<Vec<_>>(),
        ["DONE", "img/1.back.jpg", "img/1.face.png", "img/1.front.png", "input.csv"]
    );
    assert!(remote["DONE"].is_empty());
}

#[test]
fn an_invalid_batch_is_refused_and_nothing_reaches_the_server() {
    let server = TestServer::start();
    let batch = Batch::valid("b", 2).csv(&format!("{}\n{}\n", fixtures::HEADER, fixtures::row(3)));
    let (code, _, stderr) = send(&server, &batch, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("[image_missing] frontImage"), "{stderr}");
    assert!(server.remote_folders().is_empty());
}

/// Ships `batch` straight through the engine with `connections`; returns the sessions used.
fn ship_directly(server: &TestServer, batch: &Batch, connections: usize, uuid: &str) -> usize {
    let checked = validate(&batch.dir, Some("DONE")).unwrap();
    assert!(checked.report.valid, "{:?}", checked.report.errors);
    let mut cfg = server.sftp_config();
    cfg.connections = connections;
    let progress = Progress::default();
    let digests = checked.sha256.clone();
    let before = server.log().matches("Accepted publickey").count();
    let (stop, files) = (CancellationToken::new(), &checked.files);
    let job =
        Shipping { root: &batch.dir, files, checked: &digests, uuid, fresh: true, progress: &progress, stop: &stop, fence: &Unfenced };
    let shipment = ship(&cfg, &Pool::none(), &job).unwrap();
    assert_eq!(shipment.uploaded, checked.files.len());
    assert_eq!(progress.bytes_sent.load(std::sync::atomic::Ordering::SeqCst), checked.report.bytes);
    assert_eq!(tree(&server.home().join(&shipment.remote_dir)), expected_tree(batch));
    server.log().matches("Accepted publickey").count() - before
}

#[test]
fn many_small_files_go_over_one_pipelined_session_and_many_bytes_over_several() {
    let server = TestServer::start();
    let small = Batch::valid("small", 40);
    small.png("img/big.png", 1200, 900);
    let csv = std::fs::read_to_string(small.path("input.csv")).unwrap() + "10015,ref-big,img/big.png,,,,,,,,,,,,,\n";
    let small = small.csv(&csv);
    assert_eq!(ship_directly(&server, &small, 3, "2f1c9a3e-0000-4000-8000-000000000001"), 1, "122 small files, one session");

    let large = Batch::new("large");
    let mut csv = "workflowDefinitionKey,customerInternalReference,frontImage\n".to_owned();
    for i in 0..4 {
        large.file_ref(&format!("img/{i}.png"), &[fixtures::png(8, 8), fixtures::noise(14_000_000, i)].concat());
        csv.push_str(&format!("10015,large-{i},img/{i}.png\n"));
    }
    let large = large.csv(&csv);
    assert_eq!(ship_directly(&server, &large, 3, "2f1c9a3e-0000-4000-8000-000000000002"), 3, "56 MB: three sessions share it");
}

/// Our libssh2 encrypts a whole packet per call in CTR mode (vendor/README.md). Whatever cipher
/// and MAC a server insists on, the batch must arrive intact: the server checks every packet's
/// MAC and would drop the connection at the first wrong byte. Offered everything, the server
/// gets the cheapest strong pair.
#[test]
fn every_cipher_and_mac_a_server_may_insist_on_carries_the_batch_intact() {
    let batch = Batch::valid("b", 2);
    // 2 MB and 3 bytes: many full packets and a short last one.
    batch.file_ref("big/odd.png", &[fixtures::png(8, 8), fixtures::noise(2_000_003, 7)].concat());
    let csv = std::fs::read_to_string(batch.path("input.csv")).unwrap() + "10015,ref-big,big/odd.png,,,,,,,,,,,,,\n";
    let batch = batch.csv(&csv);
    let cases = [
        ("", "aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
        ("Ciphers aes256-ctr\nMACs hmac-sha2-512-etm@openssh.com\n", "aes256-ctr", "hmac-sha2-512-etm@openssh.com"),
        ("Ciphers aes192-ctr\nMACs hmac-sha2-256\n", "aes192-ctr", "hmac-sha2-256"),
        ("Ciphers aes128-ctr\nMACs hmac-sha2-512\n", "aes128-ctr", "hmac-sha2-512"),
        ("Ciphers aes256-gcm@openssh.com\n", "aes256-gcm@openssh.com", "<implicit>"),
        ("Ciphers chacha20-poly1305@openssh.com\n", "chacha20-poly1305@openssh.com", "<implicit>"),
    ];
    for (server_config, cipher, mac) in cases {
        let server = TestServer::start_configured(&format!("{server_config}LogLevel DEBUG\n"));
        let (code, _, stderr) = send(&server, &batch, &[]);
        assert_eq!(code, 0, "{cipher} {mac}: {stderr}");
        let folders = server.remote_folders();
        assert_eq!(tree(&server.home().join(&folders[0])), expected_tree(&batch), "{cipher} {mac}");
        let negotiated = format!("kex: client->server cipher: {cipher} MAC: {mac} ");
        assert!(server.log().contains(&negotiated), "expected {negotiated:?} in the server log");
    }
}

#[test]
fn an_unknown_host_key_is_refused_before_anything_is_created() {
    let server = TestServer::start();
    // Known for another host only: unknown here.
    server.pin_other_key("ed25519", 1);
    let (code, _, stderr) = send(&server, &Batch::valid("b", 1), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("is not in") && stderr.contains("SHA256:") && stderr.contains("ssh-keyscan -p"), "{stderr}");
    assert!(server.remote_folders().is_empty());
    assert!(!server.log().contains("Accepted publickey"), "must refuse before authenticating");

    // Same host, another key of the same type: changed.
    server.pin_other_key("ed25519", server.port);
    let (code, _, stderr) = send(&server, &Batch::valid("b", 1), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("HOST KEY CHANGED") && stderr.contains("SHA256:"), "{stderr}");
    assert!(server.remote_folders().is_empty());
}

#[test]
fn client_keys_sign_their_first_request_and_a_key_the_server_does_not_know_is_refused() {
    let server = TestServer::start_logged();
    // An RSA key, registered: signed with rsa-sha2 in the first request, and let in.
    let rsa = server.dir.path().join("rsa_key");
    keygen(&rsa, "rsa");
    let authorized = server.dir.path().join("authorized_keys");
    let mut keys = std::fs::read_to_string(&authorized).unwrap();
    keys.push_str(&std::fs::read_to_string(rsa.with_extension("pub")).unwrap());
    std::fs::write(&authorized, keys).unwrap();
    let client_key = server.dir.path().join("client_key").display().to_string();
    let config = server.write_config_file(&[(&client_key, &rsa.display().to_string())]);
    let batch = Batch::valid("b", 1);
    let (code, _, stderr) = send_configured(&config, &batch, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(server.log().contains("Accepted publickey") && server.log().contains("RSA"), "{}", server.log());
    assert_eq!(server.remote_folders().len(), 1);

    // A key the server does not know: refused, nothing created, an error that says what to check.
    let stranger = server.dir.path().join("stranger_key");
    keygen(&stranger, "ed25519");
    let config = server.write_config_file(&[(&client_key, &stranger.display().to_string())]);
    let (code, _, stderr) = send_configured(&config, &Batch::valid("c", 2), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("refused key authentication") && stderr.contains("registered in the Jumio Portal"), "{stderr}");
    assert_eq!(server.remote_folders().len(), 1, "nothing more on the server");
}

#[test]
fn a_known_key_of_another_type_only_is_refused() {
    let server = TestServer::start();
    server.pin_other_key("rsa", server.port);
    let (code, _, stderr) = send(&server, &Batch::valid("b", 1), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("is not in") && stderr.contains("ssh-ed25519"), "{stderr}");
    assert!(server.remote_folders().is_empty());
}

#[test]
fn hashed_known_hosts_entries_are_accepted() {
    let server = TestServer::start();
    let known = server.dir.path().join("known_hosts");
    let status = Command::new("ssh-keygen").arg("-H").arg("-f").arg(&known).output().unwrap();
    assert!(status.status.success());
    assert!(std::fs::read_to_string(&known).unwrap().starts_with("|1|"));
    let (code, _, stderr) = send(&server, &Batch::valid("b", 1), &[]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_private_key_readable_by_others_is_refused() {
    let server = TestServer::start();
    let key = server.dir.path().join("client_key");
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&key).unwrap().permissions(), 0o644);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, _, stderr) = send(&server, &Batch::valid("b", 1), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(server.remote_folders().is_empty());
}

#[test]
fn server_killed_mid_upload_leaves_no_done_and_says_why() {
    let mut server = TestServer::start();
    let batch = Batch::valid("b", 1);
    for i in 0..12 {
        batch.file_ref(&format!("big/{i}.png"), &[fixtures::png(8, 8), fixtures::noise(6_000_000, i)].concat());
    }
    let mut csv = std::fs::read_to_string(batch.path("input.csv")).unwrap();
    for i in 0..12 {
        csv.push_str(&format!("10015,ref-big-{i},big/{i}.png,,,,,,,,,,,,,\n"));
    }
    let batch = batch.csv(&csv);
    let config = server.write_config_file(&[("connections = 4", "connections = 1"), ("max_attempts = 3", "max_attempts = 1")]);
    let child = Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg("--config")
        .arg(&config)
        .arg("send")
        .arg(&batch.dir)
        // 50 ms per file: the server dies mid-batch however loaded the machine is.
        .env(jumio_batchd::failpoint::ENV, "after_file~50")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some bytes are on the server, then pull the plug.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while dir_bytes(&server.home()) < 3_000_000 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    server.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.trim().is_empty());
    let folders = server.remote_folders();
    assert_eq!(folders.len(), 1);
    assert!(!server.home().join(&folders[0]).join("DONE").exists());
}

#[test]
fn permanent_errors_are_classified() {
    assert!(ShipError::AuthRefused { addr: "h:22".into(), user: "u".into(), key: "k".into() }.is_permanent());
    assert!(!ShipError::RemoteFull { path: "p".into() }.is_permanent());
}

#[test]
fn a_missing_remote_dir_fails_at_once_with_the_fix() {
    let server = TestServer::start();
    let config = server.write_config_file(&[("remote_dir = \".\"", "remote_dir = \"incoming\"")]);
    let out = Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg("--config")
        .arg(&config)
        .arg("send")
        .arg(&Batch::valid("b", 1).dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("check that sftp.remote_dir exists") && !stderr.contains("retrying"), "{stderr}");

    std::fs::create_dir(server.home().join("incoming")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg("--config")
        .arg(&config)
        .args(["send", "--allow-duplicate"])
        .arg(&Batch::valid("b2", 1).dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let folder = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(folder.starts_with("incoming/"), "{folder}");
    assert!(server.home().join(&folder).join("DONE").is_file());
}

/// Ships `batch` into `uuid` through `pool`; the shipment or the error.
fn ship_pooled(server: &TestServer, pool: &Pool, batch: &Batch, uuid: &str) -> Result<String, ShipError> {
    let checked = validate(&batch.dir, Some("DONE")).unwrap();
    let digests = checked.sha256.clone();
    let cfg = server.sftp_config();
    let (stop, progress) = (CancellationToken::new(), Progress::default());
    let job = Shipping {
        root: &batch.dir,
        files: &checked.files,
        checked: &digests,
        uuid,
        fresh: false,
        progress: &progress,
        stop: &stop,
        fence: &Unfenced,
    };
    ship(&cfg, pool, &job).map(|s| s.remote_dir)
}

/// A connection is kept for the next batch only while all goes well: the second batch is
/// shipped without a new login; a server that dropped the connection meanwhile costs a new one,
/// not a failed batch; a shipment that failed gives nothing back; one idle past its time is closed.
#[test]
fn a_pooled_connection_serves_the_next_batch_until_it_fails_is_dropped_or_idles_out() {
    let mut server = TestServer::start();
    let logins = |server: &TestServer| server.log().matches("Accepted publickey").count();
    let pool = Pool::new(4, std::time::Duration::from_secs(60));
    let batch = Batch::valid("b", 2);
    let uuids = ["2f1c9a3e-0000-4000-8000-0000000000a1", "2f1c9a3e-0000-4000-8000-0000000000a2", "2f1c9a3e-0000-4000-8000-0000000000a3"];

    ship_pooled(&server, &pool, &batch, uuids[0]).unwrap();
    ship_pooled(&server, &pool, &batch, uuids[1]).unwrap();
    assert_eq!((logins(&server), pool.idle()), (1, 1), "the second batch went over the first one's connection");
    for uuid in &uuids[..2] {
        assert_eq!(tree(&server.home().join(uuid)), expected_tree(&batch));
    }

    // The server goes away and comes back: the idle connection is dead, the batch still ships.
    server.kill();
    server.restart();
    ship_pooled(&server, &pool, &batch, uuids[2]).unwrap();
    assert_eq!((logins(&server), pool.idle()), (2, 1));
    assert_eq!(tree(&server.home().join(uuids[2])), expected_tree(&batch));

    // A shipment that fails (its folder's parent is missing) leaves nothing in the pool.
    let error = ship_pooled(&server, &pool, &batch, "no/such/parent").unwrap_err();
    assert!(error.to_string().contains("no/such/parent"), "{error}");
    assert_eq!(pool.idle(), 0, "a connection that saw an error is never reused");

    let short = Pool::new(4, std::time::Duration::from_millis(1));
    let batch_b = Batch::valid("c", 1);
    ship_pooled(&server, &short, &batch_b, "2f1c9a3e-0000-4000-8000-0000000000a4").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    short.sweep();
    assert_eq!(short.idle(), 0, "idled out and closed");
}

#[test]
fn a_resumed_folder_s_files_are_written_whole_whether_an_earlier_attempt_left_them_short_or_long() {
    let server = TestServer::start_logged();
    let batch = Batch::valid("resumed", 3);
    let uuid = "0b6f4c1e-1d2a-4c55-9b0e-6d1f7a2b3c4d";
    let folder = server.home().join(uuid);
    std::fs::create_dir_all(folder.join("img")).unwrap();
    let csv = std::fs::read(batch.path("input.csv")).unwrap();
    // input.csv longer than the batch's (garbage after it), an image cut short.
    std::fs::write(folder.join("input.csv"), [csv.as_slice(), b"garbage that must go"].concat()).unwrap();
    std::fs::write(folder.join("img/1.front.png"), &std::fs::read(batch.path("img/1.front.png")).unwrap()[..10]).unwrap();
    let pool = Pool::new(4, std::time::Duration::from_secs(30));
    ship_pooled(&server, &pool, &batch, uuid).unwrap();
    assert_eq!(tree(&folder), expected_tree(&batch));
    // Writes never truncate; only the longer file was emptied first, by an OPEN of its own.
    let log = std::fs::read_to_string(server.dir.path().join("sftp.log")).unwrap();
    let truncating: Vec<&str> = log.lines().filter(|l| l.contains("open \"") && l.contains("TRUNCATE")).collect();
    assert_eq!(truncating.len(), 1, "{truncating:#?}");
    assert!(truncating[0].contains(&format!("{uuid}/input.csv")), "{truncating:#?}");
}
