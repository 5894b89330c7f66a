//! `jumio-batchd status [--json] [NAME|ID]`: what the store says, read-only.

use super::EXIT_OK;
use crate::batch::{Kind, RejectReason, State};
use crate::config::Config;
use crate::store::{BatchRecord, Schema, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::Path;

const RECENT: i64 = 10;
const JSON_LIMIT: i64 = 1000;

/// One batch in `status --json`.
#[derive(Debug, Serialize)]
struct BatchStatus<'a> {
    id: i64,
    name: &'a str,
    state: State,
    /// The route (tenant) it goes to; absent in a config without routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    /// The batch it was made from: `resubmission` (from `first_row`) or `part` (`part`, rows
    /// `first_row..=last_row`).
    #[serde(skip_serializing_if = "Option::is_none")]
    made_from: Option<MadeFrom>,
    /// The batches made from it: its resubmissions and parts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    made_into: Vec<MadeInto>,
    /// The batch's folder on the server: its name (a UUID), and its path from the tenant home.
    remote_uuid: Option<&'a str>,
    remote_dir: Option<&'a str>,
    /// Fleet mode: the host working it now (its lease is live), and until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_expires_at: Option<String>,
    reject_reason: Option<RejectReason>,
    duplicate_of: Option<i64>,
    rows: i64,
    files: i64,
    bytes: i64,
    bytes_sent: i64,
    attempts: i64,
    last_error: Option<&'a str>,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Serialize)]
struct MadeFrom {
    id: i64,
    kind: Kind,
    first_row: Option<i64>,
    last_row: Option<i64>,
    part: Option<i64>,
}

#[derive(Debug, Serialize)]
struct MadeInto {
    id: i64,
    name: String,
    kind: Option<Kind>,
    state: State,
    first_row: Option<i64>,
    last_row: Option<i64>,
    part: Option<i64>,
    remote_uuid: Option<String>,
}

impl MadeInto {
    fn of(c: &BatchRecord) -> MadeInto {
        MadeInto {
            id: c.id,
            name: c.name.clone(),
            kind: c.origin.kind,
            state: c.state,
            first_row: c.origin.first_row,
            last_row: c.origin.last_row,
            part: c.origin.part,
            remote_uuid: c.remote_uuid.clone(),
        }
    }
}

impl<'a> BatchStatus<'a> {
    fn of(r: &'a BatchRecord, children: &[BatchRecord], now: DateTime<Utc>) -> Self {
        BatchStatus {
            id: r.id,
            name: &r.name,
            state: r.state,
            route: r.origin.route.as_deref(),
            made_from: r.origin.parent_id.zip(r.origin.kind).map(|(id, kind)| MadeFrom {
                id,
                kind,
                first_row: r.origin.first_row,
                last_row: r.origin.last_row,
                part: r.origin.part,
            }),
            made_into: children.iter().map(MadeInto::of).collect(),
            remote_uuid: r.remote_uuid.as_deref(),
            remote_dir: r.remote_dir.as_deref(),
            holder: r.held_by(now),
            lease_expires_at: r.held_by(now).and(r.lease_expires_at).map(|t| t.to_rfc3339()),
            reject_reason: r.reject_reason,
            duplicate_of: r.duplicate_of,
            rows: r.rows,
            files: r.files,
            bytes: r.bytes,
            bytes_sent: if r.state == State::Submitted { r.bytes } else { r.bytes_sent },
            attempts: r.attempts,
            last_error: r.last_error.as_deref(),
            created_at: r.created_at.to_rfc3339(),
            updated_at: r.updated_at.to_rfc3339(),
        }
    }
}

pub async fn run(config: Option<&Path>, json: bool, key: Option<&str>) -> anyhow::Result<u8> {
    let loaded = Config::load_or_default(config)?;
    let state = &loaded.config.state;
    let store = match state.postgres_url() {
        Some(_) => Store::connect(state, &loaded.config.fleet, Schema::MustExist).await?,
        None if !state.database.exists() => anyhow::bail!(
            "no state database at {}; nothing has been sent yet (or [state] database points elsewhere)",
            state.database.display()
        ),
        None => Store::open_read_only(&state.database).await?,
    };
    let records = match key {
        Some(key) => vec![store.find(key).await?.ok_or_else(|| anyhow::anyhow!("no batch named or numbered {key:?}"))?],
        None => store.recent(JSON_LIMIT).await?,
    };
    if json {
        let mut children = Vec::with_capacity(records.len());
        for r in &records {
            children.push(store.children(r.id).await?);
        }
        let list: Vec<BatchStatus> = records.iter().zip(&children).map(|(r, c)| BatchStatus::of(r, c, store.now())).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if let Some(record) = records.first().filter(|_| key.is_some()) {
        let parent = match record.origin.parent_id {
            Some(id) => store.get(id).await?,
            None => None,
        };
        print!("{}", one(record, parent.as_ref(), &store.children(record.id).await?, store.now()));
        for e in store.events(record.id).await? {
            let from = e.from_state.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
            println!(
                "  {}  {from} -> {} (attempt {}){}{}",
                shown_at(e.at),
                e.to_state,
                e.attempt,
                e.host.map(|h| format!(" on {h}")).unwrap_or_default(),
                e.detail.map(|d| format!(": {d}")).unwrap_or_default()
            );
        }
    } else {
        print!("{}", overview(&store.counts().await?, &records, store.now()));
    }
    Ok(EXIT_OK)
}

fn one(r: &BatchRecord, parent: Option<&BatchRecord>, children: &[BatchRecord], now: DateTime<Utc>) -> String {
    let mut text = format!("batch {} (id {}): {}\n", r.name, r.id, r.state);
    if let Some(route) = &r.origin.route {
        text.push_str(&format!("  route {route} ({})\n", r.origin.tenant.as_deref().unwrap_or("-")));
    }
    if let Some(p) = parent {
        let rows = format!("rows {}-{}", r.origin.first_row.unwrap_or_default(), r.origin.last_row.unwrap_or_default());
        match r.origin.kind {
            Some(Kind::Part) => {
                text.push_str(&format!("  part {} of batch {} (id {}): {rows}\n", r.origin.part.unwrap_or_default(), p.name, p.id))
            }
            _ => text.push_str(&format!(
                "  resubmission of batch {} (id {}) from row {}\n",
                p.name,
                p.id,
                r.origin.first_row.unwrap_or_default()
            )),
        }
    }
    for c in children {
        let how = match c.origin.kind {
            Some(Kind::Part) => {
                format!(
                    "part {} (rows {}-{})",
                    c.origin.part.unwrap_or_default(),
                    c.origin.first_row.unwrap_or_default(),
                    c.origin.last_row.unwrap_or_default()
                )
            }
            _ => format!("resubmitted from row {}", c.origin.first_row.unwrap_or_default()),
        };
        text.push_str(&format!(
            "  {how}: batch {} (id {}) {}{}\n",
            c.name,
            c.id,
            c.state,
            c.remote_uuid.as_deref().map(|u| format!(" into {u}")).unwrap_or_default()
        ));
    }
    text.push_str(&format!("  {} rows, {} images, {} bytes; attempts {}\n", r.rows, r.files, r.bytes, r.attempts));
    if let (Some(host), Some(until)) = (r.held_by(now), r.lease_expires_at) {
        text.push_str(&format!("  worked by host {host} (lease until {})\n", when(until, now)));
    }
    if let Some(uuid) = &r.remote_uuid {
        text.push_str(&format!("  remote folder {uuid} ({})\n", r.remote_dir.as_deref().unwrap_or(uuid)));
    }
    if let Some(at) = r.submitted_at {
        text.push_str(&format!("  submitted {}\n", when(at, now)));
    }
    if let Some(e) = &r.last_error {
        text.push_str(&format!("  last error: {e}\n"));
    }
    if let (State::RetryWait, Some(at)) = (r.state, r.next_attempt_at) {
        text.push_str(&format!("  next attempt {}\n", when(at, now)));
    }
    if let Some(p) = &r.filed_path {
        text.push_str(&format!("  folder {p}\n"));
    }
    text.push_str("  history:\n");
    text
}

fn overview(counts: &std::collections::BTreeMap<State, i64>, records: &[BatchRecord], now: DateTime<Utc>) -> String {
    let mut text = String::from("batches:");
    for state in State::ALL {
        text.push_str(&format!(" {} {}", state, counts.get(&state).copied().unwrap_or(0)));
    }
    text.push('\n');
    let in_flight: Vec<&BatchRecord> = records.iter().filter(|r| r.state == State::Uploading).collect();
    if !in_flight.is_empty() {
        text.push_str("in flight:\n");
        for r in in_flight {
            let secs = r.upload_started_at.map_or(0.0, |t| (now - t).num_milliseconds() as f64 / 1000.0);
            let rate = if secs > 0.0 { r.bytes_sent as f64 / secs / 1e6 } else { 0.0 };
            text.push_str(&format!(
                "  {} (id {}){}{} {} / {} bytes, {rate:.1} MB/s, attempt {}, into {}\n",
                r.name,
                r.id,
                route_of(r),
                r.held_by(now).map(|h| format!(" on {h}")).unwrap_or_default(),
                r.bytes_sent,
                r.bytes,
                r.attempts,
                r.remote_uuid.as_deref().unwrap_or("-")
            ));
        }
    }
    for (state, title) in [
        (State::RetryWait, "waiting to retry"),
        (State::Submitted, "recently submitted"),
        (State::Rejected, "recently rejected"),
        (State::Failed, "recently failed"),
    ] {
        let some: Vec<&BatchRecord> = records.iter().filter(|r| r.state == state).take(RECENT as usize).collect();
        if some.is_empty() {
            continue;
        }
        text.push_str(&format!("{title}:\n"));
        for r in some {
            let detail = match state {
                State::Submitted => format!(
                    "as {} at {}",
                    r.remote_uuid.as_deref().unwrap_or("-"),
                    r.submitted_at.map(|t| when(t, now)).unwrap_or_default()
                ),
                State::RetryWait => format!(
                    "next attempt {}: {}",
                    r.next_attempt_at.map(|t| when(t, now)).unwrap_or_default(),
                    r.last_error.as_deref().unwrap_or("")
                ),
                _ => r.last_error.clone().unwrap_or_default(),
            };
            text.push_str(&format!("  {} (id {}){} {detail}\n", r.name, r.id, route_of(r)));
        }
    }
    text
}

/// ` [route]` for a batch of a named route, nothing otherwise.
fn route_of(r: &BatchRecord) -> String {
    r.origin.route.as_deref().map(|route| format!(" [{route}]")).unwrap_or_default()
}

/// A time as a person reads it: `2026-12-04 02:22:29 UTC` (RFC 3339 stays in `--json`).
fn shown_at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `shown_at`, and how long ago or ahead of `now` it is: `... UTC (3 min ago)`, `(in 40 s)`.
fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let span = |s: i64| match s {
        s if s < 90 => format!("{s} s"),
        s if s < 90 * 60 => format!("{} min", (s + 30) / 60),
        s if s < 36 * 3600 => format!("{} h", (s + 1800) / 3600),
        s => format!("{} days", (s + 43_200) / 86_400),
    };
    let relative = if secs >= 0 { format!("{} ago", span(secs)) } else { format!("in {}", span(-secs)) };
    format!("{} ({relative})", shown_at(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_a_person_reads_them() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T02:25:29Z").unwrap().to_utc();
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        assert_eq!(when(at("2026-12-04T02:22:29Z"), now), "2026-12-04 02:22:29 UTC (3 min ago)");
        assert_eq!(when(at("2026-12-04T02:25:59Z"), now), "2026-12-04 02:25:59 UTC (in 30 s)");
        assert_eq!(when(at("2026-12-01T02:25:29Z"), now), "2026-12-01 02:25:29 UTC (3 days ago)");
        assert_eq!(when(at("2026-12-04T00:25:29Z"), now), "2026-12-04 00:25:29 UTC (2 h ago)");
    }
}
