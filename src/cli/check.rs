//! `jumio-batchd check`: one line per check, OK or the exact fix.

use super::{EXIT_INVALID, EXIT_OK};
use crate::config::{Config, Route};
use crate::folders::same_filesystem;
use crate::layout::Layout;
use crate::ship;
use crate::store::{Schema, Store, StoreError};
use std::path::Path;

struct Checks {
    failed: usize,
}

impl Checks {
    fn report(&mut self, what: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => println!("OK    {what}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") }),
            Err(fix) => {
                self.failed += 1;
                println!("FAIL  {what}: {fix}");
            }
        }
    }
}

pub async fn run(config: Option<&Path>) -> anyhow::Result<u8> {
    let mut checks = Checks { failed: 0 };
    let loaded = match Config::load_or_default(config) {
        Ok(loaded) => {
            checks.report("config", Ok(loaded.path.display().to_string()));
            loaded
        }
        Err(e) => {
            checks.report("config", Err(e.to_string()));
            return Ok(EXIT_INVALID);
        }
    };
    match loaded.paths() {
        Ok(paths) => {
            for (name, dir) in [
                ("inbox", &paths.inbox),
                ("work", &paths.work),
                ("done", &paths.done),
                ("rejected", &paths.rejected),
                ("failed", &paths.failed),
            ] {
                checks.report(&format!("paths.{name}"), writable(dir));
            }
            let same = match same_filesystem(&paths.inbox, &paths.work) {
                Ok(true) => Ok("inbox and work on one filesystem".to_owned()),
                Ok(false) => Err(format!(
                    "{} and {} are on different filesystems; put work on the inbox's filesystem (claiming is a rename)",
                    paths.inbox.display(),
                    paths.work.display()
                )),
                Err(e) => Err(format!("cannot compare filesystems: {e}")),
            };
            checks.report("claiming", same);
            if let Ok(routes) = loaded.routes() {
                let state = &loaded.config.state;
                let database = state.postgres_url().is_none().then_some(state.database.as_path());
                let apart = Layout::check(paths, &routes, database)
                    .map(|_| "no inbox or drop folder is another, or lies inside another".to_owned())
                    .map_err(|e| e.to_string());
                checks.report("folders apart", apart);
            }
        }
        Err(e) => checks.report("paths", Err(e.to_string())),
    }
    let state = &loaded.config.state;
    match Store::connect(state, &loaded.config.fleet, Schema::MustExist).await {
        Ok(store) => {
            checks.report("state database", Ok(state.shown()));
            checks.report("migrations", migrations(&store).await);
            if let Some(fleet) = store.fleet() {
                let hosts = store.live_hosts(fleet.lease).await.map_err(|e| e.to_string()).map(|hosts| {
                    let names: Vec<String> = hosts
                        .iter()
                        .map(|h| {
                            format!("{} (PID {}, up since {}, {})", h.host_id, h.pid, h.started_at.to_rfc3339(), clock(h.clock_offset_ms))
                        })
                        .collect();
                    format!(
                        "this host is {}; {} live: {}",
                        fleet.host,
                        hosts.len(),
                        if names.is_empty() { "none".into() } else { names.join(", ") }
                    )
                });
                checks.report("fleet", hosts);
            }
            store.close().await;
        }
        Err(StoreError::Empty { path }) => {
            let history = loaded.paths().ok().and_then(crate::layout::history);
            checks.report(
                "state database",
                match history {
                    None => Ok(format!("{path}: not made yet; the daemon makes it at its first start")),
                    Some(history) => Err(format!(
                        "{path} does not exist or is empty, but {} holds earlier batches: restore the database, or start once with `run --new-database`",
                        history.display()
                    )),
                },
            )
        }
        Err(e) => checks.report("state database", Err(e.to_string())),
    }
    match loaded.routes() {
        Ok(routes) => {
            for route in routes {
                check_route(&mut checks, &route).await?;
            }
        }
        Err(e) => checks.report("sftp", Err(e.to_string())),
    }
    Ok(if checks.failed == 0 { EXIT_OK } else { EXIT_INVALID })
}

/// The migrations applied against those this build knows.
async fn migrations(store: &Store) -> Result<String, String> {
    let applied = store.migrations().await.map_err(|e| e.to_string())?;
    let known = store.known_migrations();
    match applied.last() {
        Some((version, description)) if applied.len() == known => Ok(format!("{known} applied, the newest {version} ({description})")),
        _ => Err(format!("{} of {known} applied; a newer jumio-batchd may have migrated this database", applied.len())),
    }
}

/// The key, known_hosts and a real login with a write probe, for one route (and its inbox).
async fn check_route(checks: &mut Checks, route: &Route) -> anyhow::Result<()> {
    let sftp = &route.sftp;
    let prefix = match &route.name {
        Some(name) => format!("route {name}: "),
        None => String::new(),
    };
    if let (Some(_), Some(inbox)) = (&route.name, &route.inbox) {
        checks.report(&format!("{prefix}inbox"), writable(inbox));
    }
    checks.report(
        &format!("{prefix}private key"),
        ship::check_private_key(sftp).map(|()| sftp.private_key.display().to_string()).map_err(|e| e.to_string()),
    );
    checks.report(&format!("{prefix}known_hosts"), known_hosts(&sftp.known_hosts, &sftp.host, sftp.port));
    let cfg = sftp.clone();
    let probe = tokio::task::spawn_blocking(move || ship::probe(&cfg)).await?;
    let target = format!("{}@{}:{} {}", sftp.user, sftp.host, sftp.port, sftp.remote_dir);
    checks.report(
        &format!("{prefix}connect, host key, login, write access"),
        probe.map(|folder| format!("{target} (created and removed {folder})")).map_err(|e| e.to_string()),
    );
    Ok(())
}

fn writable(dir: &Path) -> Result<String, String> {
    if !dir.is_dir() {
        return Err(format!(
            "{} does not exist; create it: mkdir -p {} && chown jumio-batchd: {}",
            dir.display(),
            dir.display(),
            dir.display()
        ));
    }
    let probe = dir.join(format!(".jumio-batchd-check-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(dir.display().to_string())
        }
        Err(e) => Err(format!(
            "{} is not writable ({e}); give the service user write access: chown jumio-batchd: {}",
            dir.display(),
            dir.display()
        )),
    }
}

fn known_hosts(path: &Path, host: &str, port: u16) -> Result<String, String> {
    let scan = if port == 22 { format!("ssh-keyscan {host}") } else { format!("ssh-keyscan -p {port} {host}") };
    match std::fs::read_to_string(path) {
        Ok(text) if text.lines().any(|l| l.starts_with("@cert-authority")) => Err(format!(
            "{} has @cert-authority lines, which jumio-batchd does not support (host certificates are not checked); list the server's host key itself: {scan} >> {}",
            path.display(),
            path.display()
        )),
        Ok(text) if text.lines().any(|l| !l.trim().is_empty() && !l.starts_with(['#', '@'])) => Ok(path.display().to_string()),
        Ok(_) => Err(format!(
            "{} is empty; add the server's key: {scan} > {} and compare its fingerprint (ssh-keygen -lf {}) with the Jumio Portal",
            path.display(),
            path.display(),
            path.display()
        )),
        Err(e) => Err(format!(
            "cannot read {} ({e}); create it: {scan} > {}, then compare the fingerprint with the Jumio Portal",
            path.display(),
            path.display()
        )),
    }
}

/// How far a host's clock is from the database's (leases are decided by the database's).
fn clock(offset_ms: Option<i64>) -> String {
    match offset_ms {
        None => "clock offset unknown".into(),
        Some(ms) if ms.abs() < 1000 => "clock in step with the database".into(),
        Some(ms) if ms < 0 => format!("clock {} s behind the database", (-ms + 500) / 1000),
        Some(ms) => format!("clock {} s ahead of the database", (ms + 500) / 1000),
    }
}
