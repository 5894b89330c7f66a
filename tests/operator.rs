//! What an operator sees: `send`'s progress bar on a terminal, the demo.

mod support;

use std::process::Command;
use std::time::Duration;
use support::daemon::Drops;
use support::fixtures::Batch;
use support::sshd::{tree, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_jumio-batchd");

/// Runs `send` with its output on a pseudo-terminal (util-linux `script`); what the terminal showed.
fn send_on_a_terminal(config: &std::path::Path, batch: &Batch, extra: &str) -> String {
    let command = format!("{BIN} --config {} send {extra} {}", config.display(), batch.dir.display());
    let out = Command::new("script").args(["-qefc", &command, "/dev/null"]).env("TERM", "xterm").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn send_draws_a_progress_bar_on_a_terminal_and_none_otherwise() {
    let server = TestServer::start();
    let config = server.write_config_file(&[]);
    let files = |batch: &Batch| tree(&batch.dir).len();

    let batch = Batch::valid("on-a-terminal", 3);
    let shown = send_on_a_terminal(&config, &batch, "");
    let n = files(&batch);
    assert!(shown.contains(&format!("{n}/{n} files")), "no finished bar on the terminal:\n{shown}");
    assert!(shown.contains("ETA") && shown.contains("B/s"), "{shown}");
    assert!(!shown.contains(" INFO"), "log lines on a terminal without -v:\n{shown}");
    assert!(shown.contains("on-a-terminal: shipped 3 rows"), "{shown}");

    let quiet = Batch::valid("quiet", 2);
    let shown = send_on_a_terminal(&config, &quiet, "--quiet");
    let folder = shown.trim();
    assert!(uuid::Uuid::parse_str(folder).is_ok(), "--quiet prints the remote folder only:\n{shown}");

    let verbose = Batch::valid("verbose", 4);
    let shown = send_on_a_terminal(&config, &verbose, "-v");
    assert!(shown.contains(" INFO") && shown.contains("files"), "{shown}");

    let piped = Batch::valid("piped", 5);
    let out = Command::new(BIN).arg("--config").arg(&config).arg("send").arg(&piped.dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(" files [") && !stderr.contains("ETA"), "a bar drawn into a pipe:\n{stderr}");
    assert!(stderr.contains(" INFO") && stderr.contains("submitted"), "scripts keep the log lines:\n{stderr}");
}

/// README's first command: the daemon ships a dropped batch and rejects a broken one, and the
/// demo shows the receipt and the report (run with this build instead of a release build).
#[test]
fn the_demo_runs_the_daemon_to_the_end_and_shows_the_receipt_and_the_report() {
    let out = Command::new("bash").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo")).env("DEMO_BIN", BIN).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "== done/batch-demo/RECEIPT.json",
        "\"remote_uuid\"",
        "== rejected/batch-broken/REJECTED.txt",
        "[image_missing] faceImage",
        "[reference_forbidden_character] customerInternalReference",
        "submitted 1",
        "the daemon stopped cleanly (exit 0)",
        "Shown: the daemon shipped batch-demo",
    ] {
        assert!(shown.contains(expected), "{expected:?} not in the demo's output:\n{shown}");
    }
    assert_eq!(shown.matches("/DONE  0 bytes").count(), 1, "one batch on the server, DONE once:\n{shown}");
}

/// `/metrics` as Prometheus scrapes it: HTTP GET, then the text format parsed by a
/// Prometheus text-format parser.
fn scrape(port: u16) -> Vec<prometheus_parse::Sample> {
    let lines = scrape_text(port).lines().map(|l| Ok(l.to_owned())).collect::<Vec<_>>();
    prometheus_parse::Scrape::parse(lines.into_iter()).expect("Prometheus text format").samples
}

/// The body of `/metrics`, as served.
fn scrape_text(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.") && head.contains(" 200"), "{head}");
    body.to_owned()
}

/// Runs Prometheus's own `promtool` (Debian's prometheus package; scripts/test installs it) with
/// `input` on its standard input.
fn promtool(args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_readme_alerts_are_valid_prometheus_rules() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rules = readme.split("```yaml\n").nth(1).and_then(|r| r.split("```").next()).expect("the alerts in README");
    assert!(rules.contains("jumio_batchd_batches_filed_total"), "{rules}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.yml");
    std::fs::write(&file, rules).unwrap();
    let (ok, said) = promtool(&["check", "rules", file.to_str().unwrap()], "");
    assert!(ok, "{said}");
}

fn value(samples: &[prometheus_parse::Sample], metric: &str, label: Option<(&str, &str)>) -> f64 {
    let sample = samples
        .iter()
        .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("{metric} {label:?} not scraped"));
    match sample.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{metric}: {other:?}"),
    }
}

#[test]
fn metrics_are_served_in_the_prometheus_text_format_and_move_as_batches_are_filed() {
    let server = TestServer::start();
    let port = support::sshd::free_port();
    let drops = Drops::new(&server, &format!("ready = \"marker\"\npoll_secs = 1\n\n[metrics]\nlisten = \"127.0.0.1:{port}\""));
    let mut daemon = drops.spawn(&[]);
    daemon.wait_for_log("serving Prometheus metrics", Duration::from_secs(30));

    let before = scrape(port);
    assert_eq!(value(&before, "jumio_batchd_build_info", Some(("version", env!("CARGO_PKG_VERSION")))), 1.0);
    // Every series an alert may watch is there from the start, at 0: `increase()` sees the first.
    for outcome in ["done", "rejected", "failed"] {
        assert_eq!(value(&before, "jumio_batchd_batches_filed_total", Some(("outcome", outcome))), 0.0, "{outcome}");
    }
    for counter in ["jumio_batchd_retries_total", "jumio_batchd_bytes_shipped_total", "jumio_batchd_files_shipped_total"] {
        assert_eq!(value(&before, counter, None), 0.0, "{counter}");
    }
    assert!(value(&before, "jumio_batchd_last_submission_timestamp_seconds", None) > 1.7e9, "set at start");
    let (ok, said) = promtool(&["check", "metrics"], &scrape_text(port));
    assert!(ok, "promtool check metrics:\n{said}");

    let good = drops.stage("metrics-good").with_tagged_rows(3, "metrics-good");
    let bytes = support::sshd::dir_bytes(&good.dir);
    drops.drop_in(&good, true);
    let bad = drops.stage("metrics-bad").csv("workflowDefinitionKey,customerInternalReference,frontImage\n10015,r1,missing.png\n");
    drops.drop_in(&bad, true);
    drops.wait_for("done", 1, Duration::from_secs(60));
    drops.wait_for("rejected", 1, Duration::from_secs(60));
    // The gauges are published after each step of the daemon: scraped until they show it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let samples = scrape(port);
        let settled = samples.iter().any(|s| {
            s.metric == "jumio_batchd_batches"
                && s.labels.get("state") == Some("submitted")
                && value(std::slice::from_ref(s), &s.metric, None) == 1.0
        }) && value(&samples, "jumio_batchd_work_in_flight", None) == 0.0;
        if settled || std::time::Instant::now() > deadline {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(value(&after, "jumio_batchd_batches_filed_total", Some(("outcome", "done"))), 1.0);
    assert_eq!(value(&after, "jumio_batchd_batches_filed_total", Some(("outcome", "rejected"))), 1.0);
    assert_eq!(value(&after, "jumio_batchd_bytes_shipped_total", None), bytes as f64);
    assert_eq!(value(&after, "jumio_batchd_files_shipped_total", None), 10.0);
    assert_eq!(value(&after, "jumio_batchd_batches", Some(("state", "submitted"))), 1.0);
    assert_eq!(value(&after, "jumio_batchd_batches", Some(("state", "failed"))), 0.0);
    assert_eq!(value(&after, "jumio_batchd_work_in_flight", None), 0.0);
    assert_eq!(value(&after, "jumio_batchd_inbox_ready", None), 0.0);
    assert!(value(&after, "jumio_batchd_last_submission_timestamp_seconds", None) > 1.7e9);
    assert!(after.iter().any(|s| s.metric == "jumio_batchd_upload_duration_seconds_count"), "the upload histogram");
    let names: Vec<String> = after.iter().flat_map(|s| s.labels.values().cloned()).collect();
    assert!(!names.iter().any(|v| v.contains("metrics-")), "a batch name in a label: {names:?}");
    assert_eq!(daemon.terminate(), Some(0));
}

/// `scripts/package` (from the debug build here): the .deb holds the binary, the unit, the
/// service user, the config as a conffile, the man page and completions, and lintian finds no
/// error in it.
#[test]
fn the_debian_package_holds_every_file_an_install_needs_and_lintian_finds_no_error() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash").arg(format!("{root}/scripts/package")).env("PACKAGE_PROFILE", "dev").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let deb = format!("{root}/{}", stdout.lines().last().unwrap().trim());

    let listing = Command::new("dpkg-deb").args(["-c", &deb]).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in [
        "./usr/bin/jumio-batchd",
        "./lib/systemd/system/jumio-batchd.service",
        "./usr/lib/sysusers.d/jumio-batchd.conf",
        "./etc/jumio-batchd/config.toml",
        "./usr/share/man/man1/jumio-batchd.1.gz",
        "./usr/share/bash-completion/completions/jumio-batchd",
        "./usr/share/zsh/vendor-completions/_jumio-batchd",
        "./usr/share/fish/vendor_completions.d/jumio-batchd.fish",
        "./usr/share/doc/jumio-batchd/copyright",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(path)), "{path} not in the package:\n{listing}");
    }
    let control = Command::new("dpkg-deb").args(["--ctrl-tarfile", &deb]).output().unwrap();
    let conffiles = Command::new("tar").args(["-xOf", "-", "./conffiles"]).stdin_bytes(&control.stdout);
    assert_eq!(conffiles.trim(), "/etc/jumio-batchd/config.toml");

    let lintian = Command::new("lintian").args(["--no-tag-display-limit", &deb]).output().unwrap();
    let report = String::from_utf8_lossy(&lintian.stdout);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{report}");
}

trait StdinBytes {
    fn stdin_bytes(&mut self, input: &[u8]) -> String;
}

impl StdinBytes for Command {
    /// Runs the command with `input` on stdin; its stdout.
    fn stdin_bytes(&mut self, input: &[u8]) -> String {
        use std::io::Write;
        let mut child = self.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    }
}
