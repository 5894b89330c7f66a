//! Prometheus metrics for monitoring (`[metrics] listen`, off by default): the `metrics` facade
//! records where things happen, `metrics-exporter-prometheus` serves the text format at
//! `/metrics`. Without a listener every call here is a no-op. Labels are states and outcomes,
//! never a batch's name or anything from its content.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {listen}: {reason}; set [metrics] listen to a free address such as 127.0.0.1:9464, or remove it")]
pub struct MetricsError {
    listen: String,
    reason: String,
}

/// Starts the HTTP listener (inside the tokio runtime) and publishes the build.
pub fn serve(listen: &str) -> Result<(), MetricsError> {
    let error = |reason: String| MetricsError { listen: listen.to_owned(), reason };
    let addr: std::net::SocketAddr = listen.parse().map_err(|e| error(format!("not an address and port ({e})")))?;
    // Bind first, so a taken port is an error at start rather than a log line later.
    drop(std::net::TcpListener::bind(addr).map_err(|e| error(e.to_string()))?);
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(UPLOAD_SECONDS.to_owned()),
            &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0],
        )
        .map_err(|e| error(e.to_string()))?
        .install()
        .map_err(|e| error(e.to_string()))?;
    describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(())
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

pub fn filed(outcome: &'static str) {
    metrics::counter!(FILED, "outcome" => outcome).increment(1);
}

pub fn shipped_bytes(bytes: u64) {
    metrics::counter!(BYTES_SHIPPED).increment(bytes);
}

pub fn shipped_file() {
    metrics::counter!(FILES_SHIPPED).increment(1);
}

pub fn submitted(upload: Duration) {
    metrics::histogram!(UPLOAD_SECONDS).record(upload.as_secs_f64());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    metrics::gauge!(LAST_SUBMITTED).set(now.as_secs_f64());
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
pub fn states<'a>(counts: impl IntoIterator<Item = (&'a str, i64)>) {
    for (state, n) in counts {
        metrics::gauge!(BATCHES, "state" => state.to_owned()).set(n as f64);
    }
}
