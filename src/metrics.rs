//! Prometheus metrics for monitoring (`[metrics] listen`, off by default): the `metrics` facade
//! records where things happen, `metrics-exporter-prometheus` renders the text format, and a
//! small HTTP/1 server of ours serves it at `/metrics`. Without a listener every call here is a
//! no-op. Labels are states, outcomes and call kinds, never a batch's name or anything from its
//! content; every label value known in advance is exported at 0 from the start, so an alert on
//! `increase(...)` sees the first event.
//! **Invariant:** the listener holds at most `MAX_CONNECTIONS` connections, each for at most
//! `HEADER_TIMEOUT` before its request and `CONNECTION_TIMEOUT` in all; running out of
//! descriptors slows its accepting down, never the daemon.

use crate::batch::State;
use crate::tasks::Tasks;
use http_body_util::Full;
use hyper::body::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

pub const BATCHES: &str = "jumio_batchd_batches";
pub const FILED: &str = "jumio_batchd_batches_filed_total";
pub const BYTES_SHIPPED: &str = "jumio_batchd_bytes_shipped_total";
pub const FILES_SHIPPED: &str = "jumio_batchd_files_shipped_total";
pub const UPLOAD_SECONDS: &str = "jumio_batchd_upload_duration_seconds";
pub const RETRIES: &str = "jumio_batchd_retries_total";
pub const INBOX_READY: &str = "jumio_batchd_inbox_ready";
pub const IN_FLIGHT: &str = "jumio_batchd_work_in_flight";
pub const LAST_SUBMITTED: &str = "jumio_batchd_last_submission_timestamp_seconds";
pub const BUILD_INFO: &str = "jumio_batchd_build_info";

/// Scrapers served at once; more connections are closed as soon as they are accepted.
const MAX_CONNECTIONS: usize = 32;
/// A connection that has not sent its request headers by then is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed accept (out of descriptors, say), the listener waits this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// Where a batch was filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filed {
    Done,
    Rejected,
    Failed,
}

impl Filed {
    pub const ALL: [Filed; 3] = [Filed::Done, Filed::Rejected, Filed::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Filed::Done => "done",
            Filed::Rejected => "rejected",
            Filed::Failed => "failed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {listen}: {reason}; set [metrics] listen to a free address such as 127.0.0.1:9464, or remove it")]
pub struct MetricsError {
    listen: String,
    reason: String,
}

/// Binds `listen`, installs the recorder, publishes every known series at 0, and serves
/// `/metrics` (a task of `tasks`, each connection one too) until `tasks` stops.
pub async fn serve(listen: &str, tasks: &Tasks) -> Result<(), MetricsError> {
    let error = |reason: String| MetricsError { listen: listen.to_owned(), reason };
    let addr: std::net::SocketAddr = listen.parse().map_err(|e| error(format!("not an address and port ({e})")))?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| error(e.to_string()))?;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(UPLOAD_SECONDS.to_owned()),
            &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0],
        )
        .map_err(|e| error(e.to_string()))?
        .install_recorder()
        .map_err(|e| error(e.to_string()))?;
    describe();
    publish_zeros();
    tasks.spawn(accept(listener, handle, tasks.clone()));
    Ok(())
}

async fn accept(listener: tokio::net::TcpListener, handle: PrometheusHandle, tasks: Tasks) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut warned = crate::telemetry::Every::new(Duration::from_secs(60));
    loop {
        let accepted = tokio::select! {
            _ = tasks.stopping() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    tasks.spawn(serve_one(stream, handle.clone(), slot, tasks.clone()));
                }
                // Over the cap: closed at once, so a flood of idle connections holds no descriptor.
                Err(_) => drop(stream),
            },
            Err(e) => {
                if warned.due() {
                    tracing::warn!("the metrics listener cannot accept a connection ({e}); slowing down (said once a minute)");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn serve_one(stream: tokio::net::TcpStream, handle: PrometheusHandle, _slot: tokio::sync::OwnedSemaphorePermit, tasks: Tasks) {
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let response = match (request.method(), request.uri().path()) {
            (&hyper::Method::GET, "/metrics") => {
                hyper::Response::builder().header("content-type", "text/plain; version=0.0.4").body(Full::new(Bytes::from(handle.render())))
            }
            _ => hyper::Response::builder().status(404).body(Full::new(Bytes::from_static(b"see /metrics\n"))),
        };
        std::future::ready(response)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => {}
        _ = tasks.stopping() => {}
    }
}

fn describe() {
    metrics::describe_gauge!(BATCHES, "Batches in the state database, by state");
    metrics::describe_counter!(FILED, "Batches filed into a drop folder, by outcome (done, rejected, failed)");
    metrics::describe_counter!(BYTES_SHIPPED, "Bytes acknowledged by the SFTP server");
    metrics::describe_counter!(FILES_SHIPPED, "Files confirmed whole on the SFTP server");
    metrics::describe_histogram!(UPLOAD_SECONDS, "Duration of upload attempts that submitted a batch, in seconds");
    metrics::describe_counter!(RETRIES, "Upload attempts that failed transiently and will be retried");
    metrics::describe_gauge!(INBOX_READY, "Batch folders in the inbox ready to be claimed");
    metrics::describe_gauge!(IN_FLIGHT, "Batches being worked on now");
    metrics::describe_gauge!(LAST_SUBMITTED, "Unix time of the last batch submitted (DONE written)");
    metrics::describe_gauge!(BUILD_INFO, "Always 1; the version in its label");
}

/// Every series whose labels are known in advance, at 0 (gauges at their start value).
fn publish_zeros() {
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for outcome in Filed::ALL {
        metrics::counter!(FILED, "outcome" => outcome.as_str()).absolute(0);
    }
    for counter in [BYTES_SHIPPED, FILES_SHIPPED, RETRIES] {
        metrics::counter!(counter).absolute(0);
    }
    for state in State::ALL {
        metrics::gauge!(BATCHES, "state" => state.as_str()).set(0.0);
    }
    queue(0, 0);
    let _ = metrics::histogram!(UPLOAD_SECONDS);
}

pub fn filed(outcome: Filed) {
    metrics::counter!(FILED, "outcome" => outcome.as_str()).increment(1);
}

pub fn shipped_bytes(bytes: u64) {
    metrics::counter!(BYTES_SHIPPED).increment(bytes);
}

pub fn shipped_file() {
    metrics::counter!(FILES_SHIPPED).increment(1);
}

pub fn submitted(upload: Duration) {
    metrics::histogram!(UPLOAD_SECONDS).record(upload.as_secs_f64());
    last_submission(SystemTime::now());
}

/// The last DONE written: at start, the newest recorded (or the start itself, when none is),
/// so "nothing submitted for hours" can fire after a restart too.
pub fn last_submission(at: SystemTime) {
    metrics::gauge!(LAST_SUBMITTED).set(at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64());
}

pub fn retried() {
    metrics::counter!(RETRIES).increment(1);
}

/// The queue as the daemon sees it after a step.
pub fn queue(inbox_ready: usize, in_flight: usize) {
    metrics::gauge!(INBOX_READY).set(inbox_ready as f64);
    metrics::gauge!(IN_FLIGHT).set(in_flight as f64);
}

/// Batches by state, every state present (0 where none), so an alert never sees a gap.
pub fn states(counts: &std::collections::BTreeMap<State, i64>) {
    for state in State::ALL {
        metrics::gauge!(BATCHES, "state" => state.as_str()).set(counts.get(&state).copied().unwrap_or(0) as f64);
    }
}
