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
    // Each file takes 400 ms on host-a: it is mid-upload when it is frozen.
    let mut a = fleet.host("host-a", &[(FAILPOINT, "after_file~400")]);
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
    assert!(text.contains("migrations") && text.contains("1 applied"), "{text}");
    assert!(text.contains("this host is host-b; 1 live: host-a"), "{text}");
    // A second daemon under a host id that is running is refused, naming it.
    let mut twin = fleet.drops.spawn_config(&fleet.config("host-a"), &[], &[]);
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
    jumio_batchd::store::Store::connect(&state, &fleet).await.unwrap()
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
    assert_eq!(b.get(claimed.id).await.unwrap().unwrap().held_by(), None);
}
