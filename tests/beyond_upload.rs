//! Jumio's batch lifecycle beyond one upload, with the binary as a process and real sshd:
//! resubmitting from the row where Jumio stopped, batches over 10,000 rows shipped as parts,
//! and several tenants (routes) served from one host.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;
use support::daemon::Drops;
use support::fixtures::{self, Batch};
use support::sshd::{tree, TestServer};

const MARKER_MODE: &str = "ready = \"marker\"\npoll_secs = 1\nmax_parallel_batches = 2";
const WAIT: Duration = Duration::from_secs(120);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Ships `batch` through `run --once` and returns its remote folder.
fn ship_through_the_daemon(drops: &Drops, server: &TestServer, batch: &Batch) -> String {
    let before = server.remote_folders();
    drops.drop_in(batch, true);
    assert_eq!(drops.spawn(&["--once"]).wait(), Some(0));
    let after: Vec<String> = server.remote_folders().into_iter().filter(|f| !before.contains(f)).collect();
    assert_eq!(after.len(), 1, "one new folder on the server");
    after[0].clone()
}

/// The header line and data rows `first..=last` (1-based) of a CSV written one row per line.
fn rows_of(csv: &[u8], first: usize, last: usize) -> Vec<u8> {
    let text = text(csv);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = format!("{}\n", lines[0]);
    for line in &lines[first..=last] {
        out.push_str(line);
        out.push('\n');
    }
    out.into_bytes()
}

/// What the server must hold for a batch of `csv` cut from `original` (a local tree): that
/// input.csv, exactly the images its rows name, and an empty DONE.
fn expected_remote(original: &BTreeMap<String, Vec<u8>>, csv: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::from([("input.csv".to_owned(), csv.to_vec()), ("DONE".to_owned(), Vec::new())]);
    for line in text(csv).lines().skip(1) {
        for field in line.split(',').filter(|f| f.starts_with("img/")) {
            files.insert(field.to_owned(), original[field].clone());
        }
    }
    files
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(bytes)))
}

#[test]
fn resubmit_from_a_row_ships_the_header_and_those_rows_with_only_their_images_once_linked_both_ways() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let batch = drops.stage("daily").with_tagged_rows(5, "daily");
    let original = tree(&batch.dir);
    let first = ship_through_the_daemon(&drops, &server, &batch);

    let out = drops.cli(&["resubmit", "daily", "--from-row", "3", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let receipt = json(&out.stdout);
    assert_eq!(receipt["resubmission_of"]["batch"], "daily");
    assert_eq!(receipt["resubmission_of"]["from_row"], 3);
    assert_eq!(receipt["resubmission_of"]["remote_uuid"], first.as_str());
    let uuid = receipt["remote_uuid"].as_str().unwrap().to_owned();
    assert_ne!(uuid, first, "a new UUID");
    let csv = rows_of(&original["input.csv"], 3, 5);
    assert!(tree(&server.home().join(&uuid)) == expected_remote(&original, &csv), "rows 3.. and only their images, DONE last");
    assert_eq!(tree(&server.home().join(&first)).len(), original.len() + 1, "the original folder is untouched");

    let filed: Value = json(&std::fs::read(drops.dir("done/daily.from-row-3/RECEIPT.json")).unwrap());
    assert_eq!((filed["resubmission_of"]["batch"].as_str(), filed["resubmission_of"]["from_row"].as_i64()), (Some("daily"), Some(3)));
    let status = text(&drops.cli(&["status", "daily"]).stdout);
    assert!(status.contains("resubmitted from row 3: batch daily.from-row-3") && status.contains(&uuid), "{status}");
    let status = text(&drops.cli(&["status", "daily.from-row-3"]).stdout);
    assert!(status.contains("resubmission of batch daily (id 1) from row 3"), "{status}");
    let listed = json(&drops.cli(&["status", "--json"]).stdout);
    let resubmission = listed.as_array().unwrap().iter().find(|b| b["name"] == "daily.from-row-3").unwrap();
    assert_eq!((resubmission["made_from"]["kind"].as_str(), resubmission["made_from"]["id"].as_i64()), (Some("resubmission"), Some(1)));

    let again = drops.cli(&["resubmit", "daily", "--from-row", "3"]);
    assert!(again.status.success() && text(&again.stderr).contains("already submitted"), "{}", text(&again.stderr));
    assert_eq!(server.remote_folders().len(), 2, "asked again, nothing is shipped twice");

    let fixed_csv = text(&original["input.csv"]).replace("daily-00004", "daily-00004-fixed");
    std::fs::write(drops.dir("fixed.csv"), &fixed_csv).unwrap();
    let out = drops.cli(&["resubmit", "1", "--from-row", "4", "--csv", drops.dir("fixed.csv").to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let uuid = json(&out.stdout)["remote_uuid"].as_str().unwrap().to_owned();
    let csv = rows_of(fixed_csv.as_bytes(), 4, 5);
    assert!(tree(&server.home().join(&uuid)) == expected_remote(&original, &csv), "the corrected rows 4..");

    std::fs::write(drops.dir("other.csv"), fixed_csv.replacen("frontImage", "front", 1)).unwrap();
    for (args, says) in [
        (vec!["--from-row", "2", "--csv", drops.dir("other.csv").to_str().unwrap()], "header differs"),
        (vec!["--from-row", "9"], "there is no row 9: input.csv has 5 data rows"),
    ] {
        let out = drops.cli(&[&["resubmit", "daily"][..], &args].concat());
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
    std::fs::remove_dir_all(drops.dir("done/daily")).unwrap();
    let out = drops.cli(&["resubmit", "daily", "--from-row", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is gone"), "{}", text(&out.stderr));
    assert_eq!(server.remote_folders().len(), 3);
    drops.assert_no_personal_data_logged();
}

#[test]
fn a_resubmission_killed_mid_upload_resumes_into_its_own_uuid_when_asked_again() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let batch = drops.stage("crashy").with_tagged_rows(6, "crashy");
    let original = tree(&batch.dir);
    let first = ship_through_the_daemon(&drops, &server, &batch);

    let mut child = drops.start_cli(&["resubmit", "crashy", "--from-row", "2"], &[("JUMIO_BATCHD_FAILPOINT", "after_file:3")]);
    let stderr = BufReader::new(child.stderr.take().unwrap());
    assert!(stderr.lines().map_while(Result::ok).any(|l| l.contains("failpoint")), "the failpoint was reached");
    child.kill().unwrap();
    child.wait().unwrap();
    let started: Vec<String> = server.remote_folders().into_iter().filter(|f| *f != first).collect();
    assert_eq!(started.len(), 1);
    assert!(!server.home().join(&started[0]).join("DONE").exists(), "killed before DONE");

    let out = drops.cli(&["resubmit", "crashy", "--from-row", "2", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out.stdout)["remote_uuid"], started[0].as_str(), "resumed into its own UUID");
    assert_eq!(server.remote_folders().len(), 2);
    let csv = rows_of(&original["input.csv"], 2, 6);
    assert!(tree(&server.home().join(&started[0])) == expected_remote(&original, &csv));
}

/// 25,001 rows; row i names three images shared by its block of 500 rows, so each part of
/// 10,000 rows has images of its own.
fn over_the_limit(drops: &Drops) -> Batch {
    let batch = drops.stage("huge");
    let mut csv = format!("{}\n", fixtures::HEADER);
    for i in 1..=25_001 {
        let block = (i - 1) / 500;
        csv.push_str(&fixtures::row(i).replace(&format!("img/{i}."), &format!("img/b{block}.")));
        csv.push('\n');
    }
    for block in 0..=50 {
        batch.png(&format!("img/b{block}.front.png"), 40 + block, 20);
        batch.jpeg(&format!("img/b{block}.back.jpg"), 30, 20 + block as u16);
        batch.png(&format!("img/b{block}.face.png"), 24, 24);
    }
    batch.csv(&csv)
}

#[test]
fn a_batch_over_10000_rows_ships_as_three_parts_in_order_and_a_kill_between_parts_ships_each_once() {
    let server = TestServer::start();
    let drops = Drops::new(&server, MARKER_MODE);
    let batch = over_the_limit(&drops);
    let refused = drops.cli(&["validate", batch.dir.to_str().unwrap()]);
    assert!(text(&refused.stdout).contains("split_over_limit"), "without the setting: an error that names it");
    drops.configure("\n[batch]\nsplit_over_limit = true\n");
    let report = json(&drops.cli(&["validate", "--json", batch.dir.to_str().unwrap()]).stdout);
    assert_eq!(report["valid"], true);
    let parts: Vec<(u64, u64)> =
        report["parts"].as_array().unwrap().iter().map(|p| (p["first"].as_u64().unwrap(), p["last"].as_u64().unwrap())).collect();
    assert_eq!(parts, [(1, 10_000), (10_001, 20_000), (20_001, 25_001)]);
    let original = tree(&batch.dir);
    drops.drop_in(&batch, true);

    let mut daemon = drops.spawn_with_env(&[], &[("JUMIO_BATCHD_FAILPOINT", "between_parts")]);
    daemon.wait_for_log("failpoint between_parts reached", WAIT);
    daemon.kill();
    let shipped = server.remote_folders();
    assert_eq!(shipped.len(), 1, "part 1 only");
    let part_one = server.home().join(&shipped[0]);
    assert!(tree(&part_one) == expected_remote(&original, &rows_of(&original["input.csv"], 1, 10_000)));

    // Killed again, this time in the middle of part 2: it resumes into part 2's own UUID.
    let mut daemon = drops.spawn_with_env(&[], &[("JUMIO_BATCHD_FAILPOINT", "after_file:20")]);
    daemon.wait_for_log("failpoint after_file:20 reached", WAIT);
    daemon.kill();
    let started: Vec<String> = server.remote_folders().into_iter().filter(|f| *f != shipped[0]).collect();
    assert_eq!(started.len(), 1, "part 2 begun");
    assert!(!server.home().join(&started[0]).join("DONE").exists());

    let mut daemon = drops.spawn(&[]);
    drops.wait_for("done", 1, WAIT);
    daemon.terminate();
    assert_eq!(server.remote_folders().len(), 3, "three parts, each once");
    let receipt = json(&std::fs::read(drops.dir("done/huge/RECEIPT.json")).unwrap());
    let listed = receipt["parts"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    let mut submitted = Vec::new();
    for ((part, range), (number, (first, last))) in listed.iter().zip(parts.iter()).zip((1..).zip(parts.iter())) {
        assert_eq!(
            (part["part"].as_u64(), part["first_row"].as_u64(), part["last_row"].as_u64()),
            (Some(number), Some(*first), Some(*last))
        );
        let folder = server.home().join(part["remote_uuid"].as_str().unwrap());
        let csv = rows_of(&original["input.csv"], range.0 as usize, range.1 as usize);
        assert!(tree(&folder) == expected_remote(&original, &csv), "part {number}: its rows and only its images");
        submitted.push(part["submitted_at"].as_str().unwrap().to_owned());
    }
    assert!(submitted.windows(2).all(|w| w[0] < w[1]), "parts submitted in order: {submitted:?}");
    assert_eq!(listed[0]["remote_uuid"], shipped[0].as_str(), "part 1 kept from before the kill");
    assert_eq!(listed[1]["remote_uuid"], started[0].as_str(), "part 2 resumed into its own UUID");
    let status = text(&drops.cli(&["status", "huge"]).stdout);
    assert!(status.contains("part 3 (rows 20001-25001): batch huge.part-3-of-3"), "{status}");
    assert!(!drops.dir("work/.parts/1").exists(), "the parts' folders are removed once shipped");
}

fn drop_into(drops: &Drops, batch: &Batch, inbox: &str) {
    let to = drops.dir("inbox").join(inbox).join(batch.dir.file_name().unwrap());
    std::fs::rename(&batch.dir, &to).unwrap();
    std::fs::write(to.join("DONE"), b"").unwrap();
}

fn input_csvs(server: &TestServer) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> =
        server.remote_folders().iter().map(|f| std::fs::read(server.home().join(f).join("input.csv")).unwrap()).collect();
    all.sort();
    all
}

#[test]
fn each_route_ships_its_inbox_to_its_own_tenant_and_the_duplicate_guard_is_per_tenant() {
    let (amer, emea) = (TestServer::start(), TestServer::start());
    let drops = Drops::new(&amer, MARKER_MODE);
    drops.configure(&format!("\n{}\n{}", amer.route_toml("amer", "amer"), emea.route_toml("emea", "emea")));
    let check = drops.cli(&["check"]);
    let said = text(&check.stdout);
    for route in ["amer", "emea"] {
        assert!(said.contains(&format!("OK    route {route}: connect, host key, login, write access")), "{said}");
    }

    let mut daemon = drops.spawn(&[]);
    let stage = |name: &str, tag: &str| drops.stage(name).with_tagged_rows(2, tag);
    let x = stage("x", "x");
    let x_csv = std::fs::read(x.dir.join("input.csv")).unwrap();
    let y = stage("y", "y");
    let y_csv = std::fs::read(y.dir.join("input.csv")).unwrap();
    while !drops.dir("inbox/emea").is_dir() {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop_into(&drops, &x, "amer");
    drop_into(&drops, &y, "emea");
    drop_into(&drops, &stage("x-for-emea", "x"), "emea");
    drops.wait_for("done", 3, WAIT);
    drop_into(&drops, &stage("x-again", "x"), "amer");
    drops.drop_in(&stage("stray", "s"), true);
    drops.wait_for("rejected", 2, WAIT);
    daemon.terminate();

    assert_eq!(input_csvs(&amer), std::slice::from_ref(&x_csv), "tenant A got only its own batch");
    let mut both = vec![x_csv, y_csv];
    both.sort();
    assert_eq!(input_csvs(&emea), both, "the same content for another tenant is not a duplicate");
    assert_eq!(drops.names("done"), ["x", "x-for-emea", "y"]);
    assert_eq!(drops.names("rejected"), ["stray", "x-again"]);
    let again = std::fs::read_to_string(drops.dir("rejected/x-again/REJECTED.txt")).unwrap();
    assert!(again.contains("duplicate of x"), "{again}");
    let stray = std::fs::read_to_string(drops.dir("rejected/stray/REJECTED.txt")).unwrap();
    assert!(stray.contains("inbox of the tenant") && stray.contains("amer") && stray.contains("emea"), "{stray}");

    let listed = json(&drops.cli(&["status", "--json"]).stdout);
    let route_of = |name: &str| listed.as_array().unwrap().iter().find(|b| b["name"] == name).unwrap()["route"].clone();
    assert_eq!((route_of("x"), route_of("y"), route_of("x-for-emea")), ("amer".into(), "emea".into(), "emea".into()));
    let logs = drops.logs();
    assert!(logs.contains("route=\"emea\"") || logs.contains("route=emea"), "the logs name the route");
    assert!(Path::new(&drops.dir("inbox/amer")).is_dir());
}

#[test]
fn a_batch_sent_by_hand_is_resubmitted_from_its_folder_without_any_drop_folders() {
    let server = TestServer::start();
    let config = server.write_config_file(&[]);
    let batch = Batch::valid("by-hand", 4);
    let original = tree(&batch.dir);
    let jumio = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_jumio-batchd")).arg("--config").arg(&config).args(args).output().unwrap()
    };
    assert!(jumio(&["send", "-q", batch.dir.to_str().unwrap()]).status.success());
    let out = jumio(&["resubmit", "by-hand", "--from-row", "2", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let uuid = json(&out.stdout)["remote_uuid"].as_str().unwrap().to_owned();
    let csv = rows_of(&original["input.csv"], 2, 4);
    assert!(tree(&server.home().join(&uuid)) == expected_remote(&original, &csv));
    let database = server.home().parent().unwrap().join("state.db.resubmits/done/by-hand.from-row-2/RECEIPT.json");
    assert!(database.is_file(), "filed beside the state database when there are no drop folders");
}
