//! Logs and metrics set-up. Logs are `tracing` events (text or JSON lines); metrics go to
//! one process-wide Prometheus recorder whose handle renders `/metrics`.

pub mod storm;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::LogFormat;

/// Installs the global `tracing` subscriber (call once, from a binary).
pub fn init_logs(format: LogFormat, filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus handle, installed on first use with the node id as the
/// `node` label. One process runs one node in production; when tests start several nodes
/// in one process they share the recorder (and the first node's label).
pub fn metrics(node_id: &str) -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .add_global_label("node", node_id)
                .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Suffix("_rows".into()),
                        &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0],
                    )
                })
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("fleetcast_ready", "1 when this node was ready (Redis and the database answer) at the scrape");
    describe_gauge!("fleetcast_connections", "Open Socket.IO connections on this node");
    describe_counter!("fleetcast_connections_refused_total", "Refused connection attempts by reason");
    describe_counter!("fleetcast_events_in_total", "Client events received, by event");
    describe_counter!("fleetcast_events_out_total", "Events published or sent, by event");
    describe_counter!("fleetcast_deliveries_total", "Frames delivered to local room members");
    describe_counter!("fleetcast_acks_total", "Acks sent, by code (OK or the error code)");
    describe_counter!("fleetcast_rate_limited_total", "Client actions refused with RATE_LIMITED");
    describe_counter!("fleetcast_locations_accepted_total", "Location updates accepted");
    describe_counter!("fleetcast_locations_sampled_total", "Accepted updates sampled for a snapshot");
    describe_histogram!("fleetcast_redis_command_seconds", "Redis command latency, by command");
    describe_counter!("fleetcast_redis_errors_total", "Redis commands that failed or timed out");
    describe_counter!("fleetcast_pubsub_lagged_total", "Pub/sub frames dropped because delivery lagged");
    describe_gauge!("fleetcast_room_subscriptions", "Room channels this node holds in Redis");
    describe_counter!("fleetcast_snapshot_jobs_queued_total", "Snapshot batch jobs pushed to the queue");
    describe_counter!(
        "fleetcast_snapshot_rows_dropped_total",
        "Sampled rows dropped: buffer overflow or lost at shutdown"
    );
    describe_counter!("fleetcast_snapshot_push_failures_total", "Failed attempts to push a snapshot batch job");
    describe_gauge!("fleetcast_snapshot_buffer_rows", "Sampled rows waiting in the node's buffer");
    describe_counter!("fleetcast_worker_jobs_done_total", "Snapshot jobs written");
    describe_counter!("fleetcast_worker_jobs_failed_total", "Snapshot job attempts that failed");
    describe_counter!("fleetcast_worker_jobs_retried_total", "Failed snapshot jobs rescheduled with a delay");
    describe_counter!("fleetcast_worker_rows_written_total", "Snapshot rows inserted (replays insert none)");
    describe_histogram!("fleetcast_worker_batch_rows", "Rows per snapshot batch");
    describe_histogram!("fleetcast_worker_insert_seconds", "Latency of one batch insert");
    describe_gauge!("fleetcast_worker_queue_depth", "Snapshot jobs not yet done");
}
