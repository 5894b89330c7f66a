//! Fleet mode: several daemons (hosts) on one drop share and one PostgreSQL database, each a
//! real process, against a real sshd and a private PostgreSQL server. Leases are 3 s here.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use support::daemon::{Daemon, Drops};
use support::fixtures::Batch;
use support::postgres::TestPostgres;
use support::sshd::{tree, with_done, TestServer};

const WATCH: &str = "ready = \"marker\"\npoll_secs = 1\nmax_parallel_batches = 2";
const WAIT: Duration = Duration::from_secs(120);
const FAILPOINT: &str = jumio_batchd::failpoint::ENV;

/// One share (drop folders), one sshd, one database; a config per host.
struct Fleet {
    server: TestServer,
    pg: TestPostgres,
    drops: Drops,
}

impl Fleet {
    fn start() -> Fleet {
        let server = TestServer::start_logged();
        let pg = TestPostgres::start();
        let drops = Drops::new(&server, WATCH);
        Fleet { server, pg, drops }
    }

    /// The config of host `id`: the shared database (password from a file), its own local folder.
    fn config(&self, id: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.drops.config).unwrap();
        let sqlite = text.lines().find(|l| l.starts_with("database = ")).unwrap().to_owned();
        let local = self.drops.dir(&format!("local-{id}"));
        let state = format!(
            "database = \"{}\"\npassword_file = \"{}\"\nlocal_dir = \"{}\"",
            self.pg.url(),
            self.pg.password_file(self.drops.root.path()).display(),
            local.display()
        );
        let text = format!("{}\n[fleet]\nhost_id = \"{id}\"\nlease_secs = 3\n", text.replace(&sqlite, &state));
        let path = self.drops.dir(&format!("config-{id}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn host(&self, id: &str, env: &[(&str, &str)]) -> Daemon {
        let daemon = self.drops.spawn_config(&self.config(id), &[], env);
        daemon.wait_for_log("jumio-batchd running", WAIT);
        daemon
    }

    /// `jumio-batchd status ARGS` as host `id` sees it.
    fn status(&self, id: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
            .arg("--config")
            .arg(self.config(id))
            .arg("status")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn records(&self) -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&self.status("observer", &["--json"])).unwrap().as_array().unwrap().clone()
    }

    /// Stages `count` distinct valid batches, returns their trees by name, then drops them all.
    fn drop_batches(&self, prefix: &str, count: usize, rows: usize) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
        let staged: Vec<Batch> = (1..=count)
            .map(|i| {
                let name = format!("{prefix}-{i:02}");
                self.drops.stage(&name).with_tagged_rows(rows, &name)
            })
            .collect();
        let trees = staged.iter().map(|b| (b.dir.file_name().unwrap().to_string_lossy().into_owned(), tree(&b.dir))).collect();
        for batch in &staged {
            self.drops.drop_in(batch, true);
        }
        trees
    }

    /// Every batch is on the server exactly once, byte for byte, in the folder its record
    /// names, with one DONE opened once and nothing written into the folder after it.
    #[track_caller]
    fn assert_each_shipped_once(&self, trees: &BTreeMap<String, BTreeMap<String, Vec<u8>>>) {
        let records = self.records();
        let submitted: Vec<&serde_json::Value> = records.iter().filter(|r| r["state"] == "submitted").collect();
        assert_eq!(submitted.len(), trees.len(), "one submitted record per batch: {records:#?}");
        let mut folders: Vec<String> = submitted.iter().map(|r| r["remote_uuid"].as_str().unwrap().to_owned()).collect();
        folders.sort();
        assert_eq!(folders, self.server.remote_folders(), "one remote folder per batch, no other");
        let opens = self.server.write_opens();
        for record in submitted {
            let (name, folder) = (record["name"].as_str().unwrap(), record["remote_uuid"].as_str().unwrap());
            let expected = with_done(trees[name].clone());
            assert!(tree(&self.server.home().join(folder)) == expected, "{name}: the server's folder {folder} differs from the batch");
            let done = format!("{folder}/DONE");
            let in_folder: Vec<&String> = opens.iter().map(|(p, _)| p).filter(|p| p.starts_with(&format!("{folder}/"))).collect();
            assert_eq!(in_folder.iter().filter(|p| ***p == done).count(), 1, "{name}: DONE opened once");
            assert_eq!(in_folder.last().map(|p| p.as_str()), Some(done.as_str()), "{name}: nothing written after DONE");
            let late = self.server.requests_after_done(folder);
            assert!(late.is_empty(), "{name}: requests after DONE:\n{}", late.join("\n"));
        }
    }
}

#[test]
fn three_hosts_ship_thirty_batches_each_exactly_once_and_a_killed_host_s_batch_lands_in_its_own_folder() {
    let fleet = Fleet::start();
    // host-a stops inside its first upload (after its 2nd file) and is killed there.
    let mut a = fleet.host("host-a", &[(FAILPOINT, "after_file:2")]);
    let _b = fleet.host("host-b", &[]);
    let _c = fleet.host("host-c", &[]);
    let trees = fleet.drop_batches("batch", 30, 2);
    a.wait_for_log("failpoint after_file:2 reached", WAIT);
    // `status` shows which host works a batch.
    let held: Vec<serde_json::Value> = fleet.records().into_iter().filter(|r| r["holder"] == "host-a").collect();
    assert!(!held.is_empty() && held.iter().all(|r| r["lease_expires_at"].is_string()), "host-a's batches: {held:#?}");
    a.kill();

    fleet.drops.wait_for("done", 30, WAIT);
    assert!(fleet.drops.names("rejected").is_empty() && fleet.drops.names("failed").is_empty());
    assert!(fleet.drops.names("work").iter().all(|n| n.starts_with('.')), "work/ is empty: {:?}", fleet.drops.names("work"));
    fleet.assert_each_shipped_once(&trees);

    // The batch host-a was killed on: started there, finished by another host, same folder.
    let taken_over: Vec<String> = fleet
        .records()
        .iter()
        .map(|r| fleet.status("observer", &[&r["id"].to_string()]))
        .filter(|history| history.contains("validated -> uploading (attempt 1) on host-a"))
        .filter(|history| !history.contains("-> submitted (attempt 1) on host-a"))
        .collect();
    assert!(!taken_over.is_empty(), "no batch was taken over from host-a");
    for history in &taken_over {
        // The same attempt and UUID: the record's remote folder is the one it landed in (above).
        assert_eq!(history.matches("-> uploading").count(), 1, "{history}");
        let by_other = ["host-b", "host-c"].iter().any(|h| history.contains(&format!("uploading -> submitted (attempt 1) on {h}")));
        assert!(by_other, "finished by another host:\n{history}");
    }
    fleet.drops.assert_no_personal_data_logged();
}

#[test]
fn a_host_frozen_past_its_lease_writes_nothing_when_it_wakes_and_the_batch_lands_once() {
    let fleet = Fleet::start();
    // Every write to the socket waits 300 ms on host-a, just before its lease is checked: it is
    // frozen with requests queued, mid-upload.
    let mut a = fleet.host("host-a", &[(FAILPOINT, "before_send~300")]);
    let trees = fleet.drop_batches("frozen", 1, 6);
    a.wait_for_log("frozen-01 uploading", WAIT);
    // Frozen with files on the server and more to come.
    let deadline = std::time::Instant::now() + WAIT;
    while support::sshd::dir_bytes(&fleet.server.home()) == 0 || tree(&fleet.server.home()).len() < 3 {
        assert!(std::time::Instant::now() < deadline, "host-a never started writing");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.signal(libc::SIGSTOP);
    let _b = fleet.host("host-b", &[]);
    fleet.drops.wait_for("done", 1, WAIT);
    let shipped = tree(&fleet.server.home());
    a.signal(libc::SIGCONT);
    let deadline = std::time::Instant::now() + WAIT;
    while !["lost the lease", "lease on the batch ran out"].iter().any(|m| a.log_text().contains(m)) {
        assert!(std::time::Instant::now() < deadline, "host-a never noticed its lease was gone:\n{}", a.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give the woken host time to do whatever it would do.
    std::thread::sleep(Duration::from_secs(4));

    assert_eq!(tree(&fleet.server.home()), shipped, "the woken host wrote to the server");
    fleet.assert_each_shipped_once(&trees);
    for folder in fleet.server.remote_folders() {
        let late = fleet.server.requests_after_done(&folder);
        assert!(late.is_empty(), "requests reached {folder} after its DONE:\n{}", late.join("\n"));
    }
    let history = fleet.status("observer", &["frozen-01"]);
    assert_eq!(history.matches("-> submitted").count(), 1, "{history}");
    assert!(history.contains("validated -> uploading (attempt 1) on host-a"), "{history}");
    assert!(history.contains("uploading -> submitted (attempt 1) on host-b"), "{history}");
    let woken = a.log_text();
    assert!(!woken.contains("frozen-01 submitted") && !woken.contains("INFO filed"), "host-a changed the batch:\n{woken}");
    assert_eq!(a.terminate(), Some(0), "host-a goes on running:\n{}", a.log_text());
}

#[test]
fn the_database_restarted_mid_run_the_hosts_reconnect_and_finish() {
    let mut fleet = Fleet::start();
    let a = fleet.host("host-a", &[(FAILPOINT, "after_file~200")]);
    let _b = fleet.host("host-b", &[(FAILPOINT, "after_file~200")]);
    let trees = fleet.drop_batches("restart", 6, 5);
    a.wait_for_log(" uploading ", WAIT);
    fleet.pg.stop();
    std::thread::sleep(Duration::from_secs(2));
    fleet.pg.restart();

    fleet.drops.wait_for("done", 6, WAIT);
    assert!(fleet.drops.names("rejected").is_empty() && fleet.drops.names("failed").is_empty());
    fleet.assert_each_shipped_once(&trees);
    // The restart was felt mid-run (it is not a test of an idle fleet).
    let logs = fleet.drops.logs();
    let felt = ["cannot renew the lease", "error communicating with database", "pool timed out", "time to acquire exceeded"];
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    assert!(felt.iter().any(|m| logs.contains(m)), "no host noticed the restart:\n{}", warnings.join("\n"));
}

#[test]
fn the_same_content_dropped_on_two_hosts_at_once_is_shipped_once_and_the_other_is_a_duplicate() {
    let fleet = Fleet::start();
    let _a = fleet.host("host-a", &[]);
    let _b = fleet.host("host-b", &[]);
    let twins: Vec<Batch> = ["twin-1", "twin-2"].iter().map(|n| fleet.drops.stage(n).with_tagged_rows(3, "same")).collect();
    let original = tree(&twins[0].dir);
    for twin in &twins {
        fleet.drops.drop_in(twin, true);
    }
    fleet.drops.wait_for("done", 1, WAIT);
    fleet.drops.wait_for("rejected", 1, WAIT);

    let (done, rejected) = (&fleet.drops.names("done")[0], &fleet.drops.names("rejected")[0]);
    assert_ne!(done, rejected);
    let report = std::fs::read_to_string(fleet.drops.dir("rejected").join(rejected).join("REJECTED.txt")).unwrap();
    assert!(report.contains(&format!("duplicate of {done}")), "{report}");
    let folders = fleet.server.remote_folders();
    assert_eq!(folders.len(), 1, "shipped once");
    assert!(tree(&fleet.server.home().join(&folders[0])) == with_done(original));
}

#[test]
fn send_in_fleet_mode_ships_once_and_knows_it_was_sent_whichever_host_asks() {
    let fleet = Fleet::start();
    let batch = fleet.drops.stage("by-hand").with_tagged_rows(2, "by-hand");
    let original = tree(&batch.dir);
    let dir = batch.dir.display().to_string();
    // host-b takes the password from the environment instead of a file.
    let send = |host: &str| {
        let config = fleet.config(host);
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_jumio-batchd"));
        if host == "host-b" {
            let text = std::fs::read_to_string(&config).unwrap();
            let text: Vec<&str> = text.lines().filter(|l| !l.starts_with("password_file")).collect();
            std::fs::write(&config, text.join("\n")).unwrap();
            command.env(jumio_batchd::config::DATABASE_PASSWORD_ENV, support::postgres::PASSWORD);
        }
        let out = command.args(["--config", config.to_str().unwrap(), "send", &dir]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, first) = send("host-a");
    assert_eq!(code, Some(0), "{first}");
    let (code, again) = send("host-b");
    assert_eq!(code, Some(0), "{again}");
    assert!(again.contains("already submitted"), "{again}");
    let folders = fleet.server.remote_folders();
    assert_eq!(folders.len(), 1);
    assert!(tree(&fleet.server.home().join(&folders[0])) == with_done(original));
}

#[test]
fn check_reports_the_database_its_migrations_and_the_live_hosts() {
    let fleet = Fleet::start();
    let _a = fleet.host("host-a", &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .args(["--config", fleet.config("host-b").to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(&fleet.pg.url()), "{text}");
    assert!(!text.contains(support::postgres::PASSWORD), "the password is never shown:\n{text}");
    assert!(text.contains("migrations") && text.contains("2 applied"), "{text}");
    assert!(text.contains("this host is host-b; 1 live: host-a"), "{text}");
    // A second daemon under a host id that is running is refused, naming it: by its local lock
    // on this host, and by the fleet's list of hosts when it has a local folder of its own.
    let mut twin = fleet.drops.spawn_config(&fleet.config("host-a"), &[], &[]);
    assert_eq!(twin.wait(), Some(2));
    assert!(twin.log_text().contains("already runs on this host"), "{}", twin.log_text());
    let elsewhere = fleet.drops.dir("config-host-a-elsewhere.toml");
    let text = std::fs::read_to_string(fleet.config("host-a")).unwrap().replace("local-host-a", "local-host-a-2");
    std::fs::write(&elsewhere, text).unwrap();
    let mut twin = fleet.drops.spawn_config(&elsewhere, &[], &[]);
    assert_eq!(twin.wait(), Some(2));
    assert!(twin.log_text().contains("host id host-a is already running"), "{}", twin.log_text());
    // An empty database beside drop folders with history (a database dropped or replaced).
    std::fs::create_dir_all(fleet.drops.dir("done/sent-last-week")).unwrap();
    let mut late = fleet.drops.spawn_config(&fleet.config("host-c"), &[], &[]);
    assert_eq!(late.wait(), Some(2));
    assert!(late.log_text().contains("holds no batches"), "{}", late.log_text());
}

/// The store of host `id` on the test database (lease 3 s).
async fn store_of(pg: &TestPostgres, id: &str, dir: &std::path::Path) -> jumio_batchd::store::Store {
    let state = jumio_batchd::config::StateConfig {
        database: pg.url().into(),
        password_file: Some(pg.password_file(dir)),
        local_dir: dir.to_path_buf(),
    };
    let fleet = jumio_batchd::config::FleetConfig { host_id: id.into(), lease_secs: 3 };
    jumio_batchd::store::Store::connect(&state, &fleet, jumio_batchd::store::Schema::Create).await.unwrap()
}

#[tokio::test]
async fn a_host_whose_lease_ran_out_changes_nothing_and_the_host_that_took_over_does() {
    use jumio_batchd::batch::State;
    use jumio_batchd::store::{Change, Origin};
    let pg = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (store_of(&pg, "host-a", dir.path()).await, store_of(&pg, "host-b", dir.path()).await);
    let (claimed, token) = a.claim("daily", &Origin::default(), |id| format!("/share/work/{id}.daily")).await.unwrap();
    assert_eq!(token, Some(1));
    let held = b.acquire_lease(claimed.id).await.unwrap().unwrap_err();
    assert_eq!(held.0.as_deref(), Some("host-a"), "host-b sees who holds it");
    assert!(b.transition(claimed.id, State::Discovered, State::Failed, Change::default()).await.unwrap().is_none());
    assert!(!b.forget_unclaimed(claimed.id).await.unwrap(), "nor may it forget host-a's claim");

    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(!a.renew_lease(claimed.id, 1).await.unwrap(), "an expired lease is not renewed");
    let taken = b.acquire_lease(claimed.id).await.unwrap().unwrap();
    assert_eq!(taken, 2, "a new token for every holder");
    assert!(a.transition(claimed.id, State::Discovered, State::Validated, Change::default()).await.unwrap().is_none());
    let moved = b.transition(claimed.id, State::Discovered, State::Validated, Change::default()).await.unwrap().unwrap();
    assert_eq!((moved.state, moved.holder.as_deref()), (State::Validated, Some("host-b")));
    let history = b.events(claimed.id).await.unwrap();
    let hosts: Vec<(State, Option<&str>)> = history.iter().map(|e| (e.to_state, e.host.as_deref())).collect();
    assert_eq!(hosts, [(State::Discovered, Some("host-a")), (State::Validated, Some("host-b"))]);
    b.release_lease(claimed.id, taken).await.unwrap();
    assert_eq!(b.get(claimed.id).await.unwrap().unwrap().held_by(b.now()), None);
}

/// `jumio-batchd ARGS` with host `id`'s config, to its end: exit code and all it printed.
fn command(fleet: &Fleet, id: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg("--config")
        .arg(fleet.config(id))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_host_frozen_inside_a_transaction_holds_its_batch_for_seconds_not_for_the_freeze() {
    let fleet = Fleet::start();
    // host-a stops right after DONE, inside the transaction that records the batch submitted.
    let a = fleet.host("host-a", &[(FAILPOINT, "in_transition_to_submitted")]);
    let trees = fleet.drop_batches("held", 1, 3);
    a.wait_for_log("failpoint in_transition_to_submitted reached", WAIT);
    a.signal(libc::SIGSTOP);
    let started = std::time::Instant::now();
    let _b = fleet.host("host-b", &[]);
    fleet.drops.wait_for("done", 1, WAIT);
    let took = started.elapsed();
    // The lease (3 s), then the frozen session's open transaction ended by the server (5 s), a
    // wait for its row lock (5 s at most) and a step or two: never the freeze's whole length.
    assert!(took < Duration::from_secs(40), "the takeover waited {took:?}");
    let history = fleet.status("observer", &["held-01"]);
    assert!(history.contains("uploading -> submitted (attempt 1) on host-b"), "{history}");
    fleet.assert_each_shipped_once(&trees);
    a.signal(libc::SIGCONT);
}

#[test]
fn a_schema_dropped_under_running_hosts_stops_them_and_is_never_made_again_beside_history() {
    let fleet = Fleet::start();
    let mut a = fleet.host("host-a", &[]);
    let mut b = fleet.host("host-b", &[]);
    let trees = fleet.drop_batches("before", 2, 2);
    fleet.drops.wait_for("done", 2, WAIT);
    fleet.assert_each_shipped_once(&trees);
    let shipped = fleet.server.remote_folders();
    fleet.pg.sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;");
    for host in [&mut a, &mut b] {
        host.wait_for_log("deleted, emptied, replaced or rolled back while running", WAIT);
        assert_eq!(host.wait(), Some(2), "{}", host.log_text());
    }
    // A copy of a submitted batch dropped again, and a daemon restarted: refused before it makes
    // anything in the empty database, so the copy is never shipped.
    let copy = fleet.drops.stage("before-01-again");
    for (rel, bytes) in &trees["before-01"] {
        copy.file_ref(rel, bytes);
    }
    fleet.drops.drop_in(&copy, true);
    let mut again = fleet.drops.spawn_config(&fleet.config("host-a"), &[], &[]);
    assert_eq!(again.wait(), Some(2));
    assert!(again.log_text().contains("does not exist or holds no batches"), "{}", again.log_text());
    assert_eq!(fleet.pg.sql("SELECT to_regclass('batches') IS NULL"), "t", "no schema was made");
    assert_eq!(fleet.server.remote_folders(), shipped, "nothing shipped again");
    // Nor by `send`, which refuses the empty database beside the drop folders just as `run` does.
    let (code, said) =
        command(&fleet, "host-a", &["send", copy_dir(&fleet, "before-01-by-hand", &trees["before-01"]).to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("holds no batches"), "{said}");
    assert_eq!(fleet.pg.sql("SELECT to_regclass('batches') IS NULL"), "t", "no schema was made");
    // Started anew on purpose (`run --new-database`): the copy is then a new batch to it.
    let anew = fleet.drops.spawn_config(&fleet.config("host-a"), &["--new-database"], &[]);
    anew.wait_for_log("jumio-batchd running", WAIT);
    fleet.drops.wait_for("done", 3, WAIT);
}

/// A copy of a batch's files in a folder of the staging area.
fn copy_dir(fleet: &Fleet, name: &str, files: &BTreeMap<String, Vec<u8>>) -> PathBuf {
    let copy = fleet.drops.stage(name);
    for (rel, bytes) in files {
        copy.file_ref(rel, bytes);
    }
    copy.dir
}

#[test]
fn a_database_emptied_or_rolled_back_under_running_hosts_stops_them() {
    let fleet = Fleet::start();
    let mut a = fleet.host("host-a", &[]);
    let trees = fleet.drop_batches("kept", 2, 1);
    fleet.drops.wait_for("done", 2, WAIT);
    fleet.assert_each_shipped_once(&trees);
    fleet.pg.sql("TRUNCATE batches, files, events CASCADE");
    a.wait_for_log("rolled back while running", WAIT);
    assert_eq!(a.wait(), Some(2), "{}", a.log_text());
    let mut again = fleet.drops.spawn_config(&fleet.config("host-a"), &[], &[]);
    assert_eq!(again.wait(), Some(2), "an emptied database beside done/ is refused");
    assert!(again.log_text().contains("holds no batches"), "{}", again.log_text());
}

#[test]
fn a_host_an_hour_behind_takes_over_by_the_database_s_clock_and_check_shows_its_offset() {
    let faketime = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime (Debian's libfaketime; scripts/test installs it)");
    let behind = [("LD_PRELOAD", faketime), ("FAKETIME", "-1h"), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")];
    let fleet = Fleet::start();
    let mut a = fleet.host("host-a", &[(FAILPOINT, "after_file:2")]);
    let trees = fleet.drop_batches("skewed", 1, 3);
    a.wait_for_log("failpoint after_file:2 reached", WAIT);
    a.kill();
    let late = fleet.drops.spawn_config(&fleet.config("host-late"), &[], &behind);
    late.wait_for_log("jumio-batchd running", WAIT);
    let (_, said) = command(&fleet, "host-late", &["check"], &behind);
    assert!(said.contains("host-late") && said.contains("clock 3600 s behind the database"), "{said}");
    fleet.drops.wait_for("done", 1, Duration::from_secs(45));
    fleet.assert_each_shipped_once(&trees);
    let history = fleet.status("observer", &["skewed-01"]);
    assert!(history.contains("uploading -> submitted (attempt 1) on host-late"), "{history}");
}

#[test]
fn a_password_with_a_slash_never_shows_and_an_unreachable_database_says_why() {
    let fleet = Fleet::start();
    let config = fleet.config("host-a");
    let text = std::fs::read_to_string(&config).unwrap();
    let url = fleet.pg.url();
    let with_password = url.replace("jumio@", "jumio:Wrong/Pw+9=@");
    std::fs::write(&config, text.replace(&url, &with_password)).unwrap();
    for args in [&["run", "--once"][..], &["check"], &["status"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jumio-batchd")).arg("--config").arg(&config).args(args).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(!said.contains("Wrong") && !said.contains("Pw+9"), "{args:?} shows the password:\n{said}");
        assert!(said.contains("jumio:***@"), "{args:?}:\n{said}");
    }
    // The right password in the URL's query string: it works, and is never shown either.
    let in_query = format!("{url}?sslmode=disable&password={}", support::postgres::PASSWORD);
    let text = std::fs::read_to_string(fleet.config("host-c")).unwrap();
    let text: Vec<&str> = text.lines().filter(|l| !l.starts_with("password_file")).collect();
    std::fs::write(&config, text.join("\n").replace(&url, &in_query)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jumio-batchd")).arg("--config").arg(&config).arg("check").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("OK    state database") && said.contains("password=***"), "{said}");
    assert!(!said.contains(support::postgres::PASSWORD), "{said}");
    // The server down: the reason comes at once, not after a pool's timeout.
    let port = support::sshd::free_port();
    let down = std::fs::read_to_string(fleet.config("host-b")).unwrap().replace(&format!(":{}/", fleet.pg.port), &format!(":{port}/"));
    std::fs::write(fleet.drops.dir("down.toml"), down).unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jumio-batchd"))
        .arg("--config")
        .arg(fleet.drops.dir("down.toml"))
        .args(["run", "--once"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2));
    assert!(said.to_lowercase().contains("connection refused") && !said.contains("pool timed out"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
}

#[test]
fn a_killed_host_starts_again_at_once_and_a_second_one_beside_a_frozen_one_is_refused() {
    let fleet = Fleet::start();
    let mut a = fleet.host("host-a", &[]);
    a.kill();
    let mut restarted = fleet.host("host-a", &[]);
    assert!(restarted.try_wait().is_none(), "refused right after a kill -9:\n{}", restarted.log_text());
    restarted.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(4));
    let mut twin = fleet.drops.spawn_config(&fleet.config("host-a"), &[], &[]);
    assert_eq!(twin.wait(), Some(2));
    assert!(twin.log_text().contains("already runs on this host as PID"), "{}", twin.log_text());
    restarted.signal(libc::SIGCONT);
}

#[test]
fn a_batch_left_in_work_by_a_lost_database_is_adopted_when_started_anew() {
    let fleet = Fleet::start();
    // Slowed: the schema goes while its upload is under way.
    let mut a = fleet.host("host-a", &[(FAILPOINT, "before_send~300")]);
    let trees = fleet.drop_batches("orphan", 1, 6);
    a.wait_for_log("orphan-01 uploading", WAIT);
    fleet.pg.sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;");
    assert_eq!(a.wait(), Some(2), "{}", a.log_text());
    assert_eq!(fleet.drops.names("work").iter().filter(|n| !n.starts_with('.')).count(), 1, "left in work/");
    let anew = fleet.drops.spawn_config(&fleet.config("host-a"), &["--new-database"], &[]);
    fleet.drops.wait_for("done", 1, WAIT);
    assert!(anew.log_text().contains("a folder in work/ without a record: adopted"), "{}", anew.log_text());
    // Its first folder stays half-full without DONE (never processed); the batch lands whole in a new one.
    let finished: Vec<String> =
        fleet.server.remote_folders().into_iter().filter(|f| fleet.server.home().join(f).join("DONE").exists()).collect();
    assert_eq!(finished.len(), 1);
    assert!(tree(&fleet.server.home().join(&finished[0])) == with_done(trees["orphan-01"].clone()));
    assert_eq!(fleet.drops.names("done"), ["orphan-01"]);
}
