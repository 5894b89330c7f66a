//! What an attacker or a careless operator tries on one host, against the real binary and real
//! sshd instances: drop folders that alias, a route pointed at another tenant mid-batch, a kept
//! copy edited before a resubmission, trust withdrawn while a connection is pooled, a flood of
//! idle connections, a linked batch folder. Each is refused or survived, with a word that says why.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::daemon::Drops;
use support::fixtures::{self, Batch};
use support::sshd::{tree, with_done, TestServer};

const MARKER_MODE: &str = "ready = \"marker\"\npoll_secs = 1\nmax_parallel_batches = 2";
const WAIT: Duration = Duration::from_secs(90);

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn jumio(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jumio-batchd")).arg("--config").arg(config).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Replaces `from` by `to` in the config file.
fn edit_config(drops: &Drops, from: &str, to: &str) {
    let text = std::fs::read_to_string(&drops.config).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    std::fs::write(&drops.config, text.replace(from, to)).unwrap();
}

#[test]
fn drop_folders_that_alias_are_refused_at_start_and_by_check_naming_both() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    std::fs::create_dir_all(drops.dir("inbox/alpha")).unwrap();
    std::os::unix::fs::symlink(drops.dir("inbox/alpha"), drops.dir("inbox/beta")).unwrap();
    let routes = |a: &str, b: &str| format!("{}{}", server.route_toml("a", a), server.route_toml("b", b));
    let clean = std::fs::read_to_string(&drops.config).unwrap();
    for (inboxes, says) in [
        (routes("alpha", "beta"), "are one folder"),
        (routes("alpha", "../inbox/alpha"), "are one folder"),
        (routes("alpha", "alpha/sub"), "lies inside"),
        (routes(".", "gamma"), "lies inside"),
        (routes("alpha", "../work"), "are one folder"),
        (routes("alpha", ".."), "lies inside"),
    ] {
        std::fs::write(&drops.config, format!("{clean}{inboxes}")).unwrap();
        let mut daemon = drops.spawn(&["--once"]);
        assert_eq!(daemon.wait(), Some(2), "{inboxes}");
        let said = daemon.log_text();
        let named = said.contains("routes.a.inbox") || said.contains("routes.b.inbox");
        assert!(said.contains(says) && named, "{inboxes}:\n{said}");
        let check = jumio(&drops.config, &["check"]);
        assert_eq!(check.status.code(), Some(1));
        assert!(text(&check).contains("FAIL  folders apart:") && text(&check).contains(says), "{}", text(&check));
    }
    // Without routes: the inbox may not be the work folder.
    let r = drops.root.path().display();
    std::fs::write(&drops.config, clean.replace(&format!("inbox = \"{r}/inbox\""), &format!("inbox = \"{r}/work/../work\""))).unwrap();
    let mut daemon = drops.spawn(&["--once"]);
    assert_eq!(daemon.wait(), Some(2));
    assert!(daemon.log_text().contains("[paths] inbox") && daemon.log_text().contains("[paths] work"), "{}", daemon.log_text());
    assert!(server.remote_folders().is_empty());
}

#[test]
fn a_batch_is_resumed_only_into_the_tenant_it_was_recorded_for() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let drops = Drops::new(&a, MARKER_MODE);
    let batch = drops.stage("bound").with_tagged_rows(4, "bound");
    let original = tree(&batch.dir);
    drops.drop_in(&batch, true);
    let mut first = drops.spawn_with_env(&[], &[(jumio_batchd::failpoint::ENV, "after_file:3")]);
    first.wait_for_log("failpoint after_file:3 reached", WAIT);
    first.kill();
    let uuid = a.remote_folders().pop().expect("a partial folder on tenant A");

    // [sftp] now points at tenant B: the batch waits in failed/, named, and nothing goes to B.
    edit_config(&drops, &a.sftp_toml(), &b.sftp_toml());
    drops.run_once();
    assert_eq!(drops.names("failed"), ["bound"]);
    assert!(b.remote_folders().is_empty(), "nothing of it went to tenant B");
    assert!(!a.home().join(&uuid).join("DONE").exists());
    let report = std::fs::read_to_string(drops.dir("failed/bound/FAILED.txt")).unwrap();
    let (tenant_a, tenant_b) = (format!("127.0.0.1:{}", a.port), format!("127.0.0.1:{}", b.port));
    assert!(report.contains(&tenant_a) && report.contains(&tenant_b) && report.contains("point the route back"), "{report}");
    let retry = jumio(&drops.config, &["retry", "bound"]);
    assert_eq!(retry.status.code(), Some(1), "{}", text(&retry));
    assert!(text(&retry).contains(&tenant_a) && text(&retry).contains(&tenant_b), "{}", text(&retry));
    assert_eq!(drops.names("failed"), ["bound"], "a refused retry moves nothing");

    // Back at tenant A, spelled `localhost` this time: the same account, so it resumes there.
    edit_config(&drops, &b.sftp_toml(), &a.sftp_toml().replace("host = \"127.0.0.1\"", "host = \"localhost\""));
    let known = std::fs::read_to_string(a.dir.path().join("known_hosts")).unwrap();
    std::fs::write(a.dir.path().join("known_hosts"), format!("{known}{}", known.replace("[127.0.0.1]", "[localhost]"))).unwrap();
    let retry = jumio(&drops.config, &["retry", "bound"]);
    assert_eq!(retry.status.code(), Some(0), "{}", text(&retry));
    drops.run_once();
    assert_eq!(drops.names("done"), ["bound"]);
    assert_eq!(a.remote_folders(), std::slice::from_ref(&uuid), "into its own folder, once");
    assert!(tree(&a.home().join(&uuid)) == with_done(original.clone()));

    // One account spelled two ways is one tenant to the duplicate guard.
    let copy = drops.stage("bound-copy");
    for (rel, bytes) in &original {
        copy.file_ref(rel, bytes);
    }
    drops.drop_in(&copy, true);
    drops.run_once();
    assert_eq!(drops.names("rejected"), ["bound-copy"]);
    assert_eq!(a.remote_folders().len(), 1);
    drops.assert_no_personal_data_logged();
}

#[test]
fn resubmit_ships_the_kept_copy_only_as_it_was_shipped() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let batch = drops.stage("kept").with_tagged_rows(4, "kept");
    drops.drop_in(&batch, true);
    drops.run_once();
    let kept = drops.dir("done/kept");
    let shipped = server.remote_folders();

    // An image swapped for another valid one.
    let front = kept.join("img/3.front.png");
    let before = std::fs::read(&front).unwrap();
    std::fs::write(&front, fixtures::png(90, 90)).unwrap();
    let out = jumio(&drops.config, &["resubmit", "kept", "--from-row", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is not what was shipped") && text(&out).contains("the image of row 2, frontImage"), "{}", text(&out));
    assert!(text(&out).contains("its row 1 is row 2 of kept"), "{}", text(&out));
    assert!(!text(&out).contains("3.front.png"), "no file name: {}", text(&out));
    // A corrected CSV does not make an edited image acceptable.
    let fixed = drops.dir("fixed.csv");
    std::fs::write(&fixed, std::fs::read(kept.join("input.csv")).unwrap()).unwrap();
    let out = jumio(&drops.config, &["resubmit", "kept", "--from-row", "2", "--csv", fixed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    std::fs::write(&front, &before).unwrap();

    // input.csv edited.
    let csv = std::fs::read_to_string(kept.join("input.csv")).unwrap();
    std::fs::write(kept.join("input.csv"), csv.replace("kept-00003", "kept-00099")).unwrap();
    let out = jumio(&drops.config, &["resubmit", "kept", "--from-row", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("input.csv differ"), "{}", text(&out));
    assert_eq!(server.remote_folders(), shipped, "nothing shipped");
    assert!(drops.names("work").iter().all(|n| n.starts_with('.') && !n.starts_with(".resubmit")), "{:?}", drops.names("work"));

    // ...unless the edited rows come as a corrected CSV, which is validated and shipped.
    let out = jumio(&drops.config, &["resubmit", "kept", "--from-row", "2", "--csv", kept.join("input.csv").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(server.remote_folders().len(), 2);
    assert_eq!(
        jumio(&drops.config, &["resubmit", "kept", "--from-row", "0"]).status.code(),
        Some(1),
        "row 0 is refused, not a usage error"
    );
}

#[test]
fn resubmit_killed_between_its_record_and_its_folder_resumes_the_same_resubmission() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let batch = drops.stage("torn").with_tagged_rows(3, "torn");
    drops.drop_in(&batch, true);
    drops.run_once();

    let mut child = drops.start_cli(&["resubmit", "torn", "--from-row", "2"], &[(jumio_batchd::failpoint::ENV, "after_resubmit_record")]);
    let stderr = BufReader::new(child.stderr.take().unwrap());
    assert!(stderr.lines().map_while(Result::ok).any(|l| l.contains("failpoint after_resubmit_record")), "the failpoint was reached");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(drops.names("work").iter().any(|n| n.starts_with(".resubmit-")), "killed with its build in work/");

    let out = jumio(&drops.config, &["resubmit", "torn", "--from-row", "2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(server.remote_folders().len(), 2, "shipped once");
    assert!(drops.names("work").iter().all(|n| !n.starts_with(".resubmit-")), "the dead build is swept: {:?}", drops.names("work"));
    let status: Vec<serde_json::Value> = serde_json::from_slice(&jumio(&drops.config, &["status", "--json"]).stdout).unwrap();
    let resubmissions: Vec<&serde_json::Value> = status.iter().filter(|r| r["name"] == "torn.from-row-2").collect();
    assert_eq!(resubmissions.len(), 1, "one record for the one resubmission: {resubmissions:#?}");
    assert_eq!(resubmissions[0]["state"], "submitted");
}

#[test]
fn a_pooled_connection_is_not_used_once_known_hosts_no_longer_trusts_its_key() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let known_hosts = server.dir.path().join("known_hosts");
    let logins = || server.log().matches("Accepted publickey").count();
    let mut daemon = drops.spawn(&[]);
    daemon.wait_for_log("jumio-batchd running", WAIT);
    let first = drops.stage("trusted").with_tagged_rows(1, "trusted");
    drops.drop_in(&first, true);
    drops.wait_for("done", 1, WAIT);
    let after_first = logins();

    // The server's key marked @revoked while the connection it opened is kept in the pool.
    let key = std::fs::read_to_string(&known_hosts).unwrap();
    let (host, rest) = key.split_once(' ').unwrap();
    std::fs::write(&known_hosts, format!("@revoked {host} {rest}{key}")).unwrap();
    let second = drops.stage("revoked").with_tagged_rows(1, "revoked");
    drops.drop_in(&second, true);
    drops.wait_for("failed", 1, WAIT);
    let report = std::fs::read_to_string(drops.dir("failed/revoked/FAILED.txt")).unwrap();
    assert!(report.contains("@revoked"), "{report}");
    assert_eq!(server.remote_folders().len(), 1, "nothing went over the kept connection");
    assert_eq!(logins(), after_first, "nor over a new one");

    // known_hosts rotated to another key: refused too, named as a changed key.
    server.pin_other_key("ed25519", server.port);
    let third = drops.stage("rotated").with_tagged_rows(1, "rotated");
    drops.drop_in(&third, true);
    drops.wait_for("failed", 2, WAIT);
    let report = std::fs::read_to_string(drops.dir("failed/rotated/FAILED.txt")).unwrap();
    assert!(report.contains("HOST KEY CHANGED"), "{report}");
    assert_eq!(server.remote_folders().len(), 1);
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn a_flood_of_idle_metrics_connections_neither_stops_nor_starves_the_daemon() {
    use std::os::unix::process::CommandExt;
    let server = TestServer::start();
    let port = support::sshd::free_port();
    let drops = Drops::new(&server, &format!("{MARKER_MODE}\n\n[metrics]\nlisten = \"127.0.0.1:{port}\""));
    // 256 descriptors in all, as a tight limit would give: more than enough for the daemon,
    // far fewer than the connections below.
    let log = drops.dir("daemon-flood.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_jumio-batchd"));
    command.arg("--config").arg(&drops.config).arg("run").stdout(out.try_clone().unwrap()).stderr(out).stdin(Stdio::null());
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut daemon = command.spawn().unwrap();
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("jumio-batchd running") {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let idle: Vec<std::net::TcpStream> = (0..1100).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(idle.len() > 1000, "{} connections", idle.len());

    let batch = drops.stage("flooded").with_tagged_rows(3, "flooded");
    let files = tree(&batch.dir);
    drops.drop_in(&batch, true);
    drops.wait_for("done", 1, WAIT);
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon is still running");
    let folder = server.remote_folders().pop().unwrap();
    assert!(tree(&server.home().join(folder)) == with_done(files));
    // Once the idle ones time out, a scraper is served again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        if body.contains("jumio_batchd_batches_filed_total") {
            break;
        }
        assert!(Instant::now() < deadline, "/metrics never answered again");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(idle);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.matches("Too many open files").count() <= 3, "a flood of warnings:\n{said}");
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
}

#[test]
fn a_linked_batch_folder_in_the_inbox_is_filed_in_rejected_with_a_report_and_never_read() {
    let server = TestServer::start();
    let drops = Drops::new(&server, "ready = \"marker\"\npoll_secs = 1\nsettle_secs = 1");
    let elsewhere = tempfile::tempdir().unwrap();
    let target = Batch::at(&elsewhere.path().join("real")).with_tagged_rows(2, "linked");
    std::fs::write(target.path("DONE"), b"").unwrap();
    let before = tree(&target.dir);
    std::os::unix::fs::symlink(&target.dir, drops.dir("inbox/linked")).unwrap();
    let mut daemon = drops.spawn(&[]);
    drops.wait_for("rejected", 1, WAIT);
    let filed = drops.dir("rejected/linked");
    assert!(std::fs::symlink_metadata(filed.join("linked")).unwrap().file_type().is_symlink(), "the link itself was moved");
    let report = std::fs::read_to_string(filed.join("REJECTED.txt")).unwrap();
    assert!(report.contains("symbolic link") && report.contains("Nothing was read or sent"), "{report}");
    assert!(tree(&target.dir) == before, "the folder it points to is untouched");
    assert!(server.remote_folders().is_empty());
    assert!(daemon.log_text().contains("a symbolic link in the inbox is not a batch"), "{}", daemon.log_text());
    assert_eq!(daemon.terminate(), Some(0));
}

#[test]
fn a_link_swapped_in_while_a_batch_is_claimed_is_never_followed_nor_shipped() {
    let (a, b) = (TestServer::start(), TestServer::start());
    // Each claim waits 1.5 s between the scan and its rename: the swap lands in between.
    let drops = Drops::new(&a, MARKER_MODE);
    drops.configure(&format!("{}{}", a.route_toml("a", "alpha"), b.route_toml("b", "beta")));
    let for_a = Batch::at(&drops.dir("inbox/alpha/acme")).with_tagged_rows(2, "tenant-a");
    let for_b = drops.stage("grab").with_tagged_rows(1, "tenant-b");
    let grab = drops.dir("inbox/beta/grab");
    std::fs::create_dir_all(drops.dir("inbox/beta")).unwrap();
    std::fs::rename(&for_b.dir, &grab).unwrap();
    std::fs::write(grab.join("DONE"), b"").unwrap();
    let daemon = drops.spawn_with_env(&[], &[(jumio_batchd::failpoint::ENV, "before_claim_rename~1500")]);
    daemon.wait_for_log("claiming", WAIT);
    // B's dropper swaps its batch for a link to A's folder, still being written (no DONE).
    std::fs::rename(&grab, drops.dir("inbox/beta/.grab-real")).unwrap();
    std::os::unix::fs::symlink(&for_a.dir, &grab).unwrap();
    drops.wait_for("rejected", 1, WAIT);
    let filed = drops.dir("rejected/grab");
    assert!(std::fs::symlink_metadata(filed.join("grab")).unwrap().file_type().is_symlink(), "the link itself was filed");
    assert!(std::fs::read_to_string(filed.join("REJECTED.txt")).unwrap().contains("symbolic link"));
    assert!(b.remote_folders().is_empty() && a.remote_folders().is_empty(), "nothing was shipped anywhere");
    assert!(!for_a.path("RECEIPT.json").exists() && for_a.path("input.csv").exists(), "tenant A's folder is untouched");
    assert!(daemon.log_text().contains("a symbolic link in the inbox is not a batch"), "{}", daemon.log_text());
}

#[test]
fn a_database_restored_from_an_older_backup_is_refused_beside_newer_receipts() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let database = server.dir.path().join("state.db");
    let backup = drops.dir("backup");
    std::fs::create_dir_all(&backup).unwrap();
    drops.drop_in(&drops.stage("older").with_tagged_rows(1, "older"), true);
    drops.run_once();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::copy(format!("{}{suffix}", database.display()), backup.join(format!("state.db{suffix}")));
    }
    let newer = drops.stage("newer").with_tagged_rows(1, "newer");
    let files = tree(&newer.dir);
    drops.drop_in(&newer, true);
    drops.run_once();
    // Restored from the backup taken before "newer" was submitted.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
        let _ = std::fs::copy(backup.join(format!("state.db{suffix}")), format!("{}{suffix}", database.display()));
    }
    let again = drops.stage("newer-again");
    for (rel, bytes) in &files {
        again.file_ref(rel, bytes);
    }
    drops.drop_in(&again, true);
    let mut refused = drops.spawn(&["--once"]);
    assert_eq!(refused.wait(), Some(2));
    assert!(
        refused.log_text().contains("is older than the drop folders") && refused.log_text().contains("batch id 2"),
        "{}",
        refused.log_text()
    );
    let send = jumio(&drops.config, &["send", drops.dir("inbox/newer-again").to_str().unwrap()]);
    assert_eq!(send.status.code(), Some(2), "{}", text(&send));
    assert_eq!(server.remote_folders().len(), 2, "the newer batch is not shipped again");
}
