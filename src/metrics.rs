//! Prometheus metrics: one [`Metrics`] owns the registry and every family.
//!
//! Each number is recorded where it is observed: the pipeline calls
//! [`Metrics::revision_attempted`] once per revision, the git source
//! [`Metrics::git_fetch_failed`], the endpoint watcher [`Metrics::endpoint_events`], and
//! the snapshot store (through `StoreConfig::metrics`) counts what every ADS stream sent,
//! and what came back ACKed or NACKed. What is a state rather than an event (connected
//! nodes, the rollout, the revision being served) is read from the store on each scrape,
//! in [`Metrics::encode`], so it can never drift from what `/diag` shows.
//!
//! Names follow the Prometheus conventions: `attache_` prefix, base units (seconds),
//! `_total` on counters, `_info` on the info metric. The text is OpenMetrics, which
//! Prometheus scrapes natively.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::endpoints::Endpoints;
use crate::pipeline::{Attempt, Outcome, Status};
use crate::snapshot::{ResourceType, RolloutStatus, Store};
use crate::xds::type_url;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every attache metric. Share it as `Arc<Metrics>`; recording never blocks on a scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    revisions_fetched: Counter,
    revisions_accepted: Counter,
    revisions_rejected: Family<ReasonLabels, Counter>,
    reconcile_duration: Family<StageLabels, Histogram>,
    git_fetch_errors: Counter,
    endpoint_events: Counter,
    responses_sent: Family<TypeLabels, Counter>,
    acks: Family<TypeLabels, Counter>,
    nacks: Family<TypeLabels, Counter>,
    publish_to_ack: Family<TypeLabels, Histogram>,
    connected_nodes: Gauge,
    streams: Gauge,
    xds_tls_handshake_failures: Family<TlsFailureLabels, Counter>,
    /// What [`FleetCollector`] shows, refreshed from the store on each scrape.
    fleet: Arc<Mutex<Fleet>>,
    /// Held for a whole scrape, so two concurrent scrapes never interleave one's refresh
    /// with the other's encode.
    scrape: Mutex<()>,
}

/// A stage of the reconcile loop, as the `stage` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Stage {
    read,
    parse,
    translate,
    publish,
    total,
}

/// Why a revision did not reach the store, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Reason {
    /// Failed validation.
    invalid,
    /// Validated, but no snapshot could be built from it.
    failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabels {
    stage: Stage,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabels {
    type_url: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TlsFailureLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RolloutLabels {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServingLabels {
    revision: String,
    snapshot: String,
}

/// The store's state as of the last scrape.
#[derive(Debug, Default)]
struct Fleet {
    serving: Option<ServingLabels>,
    rollout: &'static str,
}

/// Encodes [`Fleet`]: the serving revision (an info metric, whose labels change with
/// every revision, which a registered `Info` cannot do) and the rollout state.
#[derive(Debug)]
struct FleetCollector(Arc<Mutex<Fleet>>);

/// Every rollout state, so each scrape shows all of them (one at 1, the rest at 0) and
/// a query for `state="halted"` sees 0 rather than nothing.
const ROLLOUT_STATES: [&str; 4] = ["idle", "awaiting_canaries", "baking", "halted"];

// === impl Metrics ===

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family registered under `attache_`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("attache");
        let seconds_buckets = || Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let ack_buckets = || Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let metrics = Metrics {
            revisions_fetched: Counter::default(),
            revisions_accepted: Counter::default(),
            revisions_rejected: Family::default(),
            reconcile_duration: Family::new_with_constructor(seconds_buckets),
            git_fetch_errors: Counter::default(),
            endpoint_events: Counter::default(),
            responses_sent: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            publish_to_ack: Family::new_with_constructor(ack_buckets),
            connected_nodes: Gauge::default(),
            streams: Gauge::default(),
            xds_tls_handshake_failures: Family::default(),
            fleet: Arc::new(Mutex::new(Fleet {
                serving: None,
                rollout: "idle",
            })),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "revisions_fetched",
            "Revisions the pipeline received from its source",
            metrics.revisions_fetched.clone(),
        );
        registry.register(
            "revisions_accepted",
            "Revisions validated, translated and published",
            metrics.revisions_accepted.clone(),
        );
        registry.register(
            "revisions_rejected",
            "Revisions that never reached a node: invalid config, or no snapshot could be built",
            metrics.revisions_rejected.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time one revision spent in each stage of the pipeline",
            prometheus_client::registry::Unit::Seconds,
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "git_fetch_errors",
            "Failed fetches of the git remote",
            metrics.git_fetch_errors.clone(),
        );
        registry.register(
            "endpoint_events",
            "Endpoint changes published by the endpoint watcher (bursts of EndpointSlice events coalesce into one)",
            metrics.endpoint_events.clone(),
        );
        registry.register(
            "xds_responses_sent",
            "xDS responses sent to Envoy nodes",
            metrics.responses_sent.clone(),
        );
        registry.register(
            "xds_acks",
            "xDS responses Envoy nodes accepted",
            metrics.acks.clone(),
        );
        registry.register(
            "xds_nacks",
            "xDS responses Envoy nodes rejected",
            metrics.nacks.clone(),
        );
        registry.register_with_unit(
            "xds_publish_to_ack",
            "Time from a snapshot's publication (or the stream's start, if later) to a node's ACK of it",
            prometheus_client::registry::Unit::Seconds,
            metrics.publish_to_ack.clone(),
        );
        registry.register(
            "xds_connected_nodes",
            "Envoy nodes with at least one open ADS stream",
            metrics.connected_nodes.clone(),
        );
        registry.register("xds_streams", "Open ADS streams", metrics.streams.clone());
        registry.register(
            "xds_tls_handshake_failures",
            "TLS handshakes on the xDS port that failed, by reason (no or untrusted client certificate, not TLS, ...)",
            metrics.xds_tls_handshake_failures.clone(),
        );
        registry.register_collector(Box::new(FleetCollector(metrics.fleet.clone())));
        // Zero series up front, so rates and alerts work before the first event.
        for kind in ResourceType::ALL {
            let labels = TypeLabels {
                type_url: type_url::of(kind),
            };
            drop(metrics.responses_sent.get_or_create(&labels));
            drop(metrics.acks.get_or_create(&labels));
            drop(metrics.nacks.get_or_create(&labels));
        }
        for failure in crate::xds::tls::Failure::ALL {
            drop(
                metrics
                    .xds_tls_handshake_failures
                    .get_or_create(&TlsFailureLabels {
                        reason: failure.label(),
                    }),
            );
        }
        for reason in [Reason::invalid, Reason::failed] {
            drop(
                metrics
                    .revisions_rejected
                    .get_or_create(&ReasonLabels { reason }),
            );
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The pipeline finished with one revision: counts it as fetched, accepted or
    /// rejected, and records how long each stage took.
    pub fn revision_attempted(&self, attempt: &Attempt) {
        self.revisions_fetched.inc();
        match attempt.outcome {
            Outcome::Accepted { .. } => {
                self.revisions_accepted.inc();
            }
            Outcome::Rejected { .. } => {
                self.rejected(Reason::invalid);
            }
            Outcome::Failed { .. } => {
                self.rejected(Reason::failed);
            }
        }
        let t = &attempt.timings;
        let mut total = Duration::ZERO;
        for (stage, took) in [
            (Stage::read, t.read),
            (Stage::parse, t.parse),
            (Stage::translate, t.translate),
            (Stage::publish, t.publish),
        ] {
            // A stage a rejected revision never reached took no time; observing its zero
            // would drag the stage's quantiles down.
            if took.is_zero() && stage != Stage::read {
                continue;
            }
            total += took;
            self.stage(stage, took);
        }
        self.stage(Stage::total, total);
    }

    fn rejected(&self, reason: Reason) {
        self.revisions_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    fn stage(&self, stage: Stage, took: Duration) {
        self.reconcile_duration
            .get_or_create(&StageLabels { stage })
            .observe(took.as_secs_f64());
    }

    /// A fetch of the git remote failed (network, auth, a missing ref).
    pub fn git_fetch_failed(&self) {
        self.git_fetch_errors.inc();
    }

    /// The endpoint watcher published `n` changes.
    pub fn endpoint_events(&self, n: u64) {
        self.endpoint_events.inc_by(n);
    }

    /// A response of type `kind` went out on an ADS stream.
    pub fn response_sent(&self, kind: ResourceType) {
        self.responses_sent.get_or_create(&types(kind)).inc();
    }

    /// A node ACKed a response of type `kind`, `latency` after its snapshot became
    /// available to it (`None` when that is unknown, e.g. the snapshot left the history).
    pub fn acked(&self, kind: ResourceType, latency: Option<Duration>) {
        self.acks.get_or_create(&types(kind)).inc();
        if let Some(latency) = latency {
            self.publish_to_ack
                .get_or_create(&types(kind))
                .observe(latency.as_secs_f64());
        }
    }

    /// A TLS handshake on the xDS port failed for `reason` (a `tls::Failure` label).
    pub fn xds_tls_handshake_failed(&self, reason: &'static str) {
        self.xds_tls_handshake_failures
            .get_or_create(&TlsFailureLabels { reason })
            .inc();
    }

    /// A node rejected a response of type `kind`.
    pub fn nacked(&self, kind: ResourceType) {
        self.nacks.get_or_create(&types(kind)).inc();
    }

    /// Every metric in OpenMetrics text, with the fleet state read from `store` now.
    ///
    /// # Errors
    ///
    /// Only if formatting into a `String` fails, which it does not; the error is kept
    /// so that no panic path hides in a scrape.
    pub fn encode(&self, store: &Store) -> Result<String, std::fmt::Error> {
        let _scrape = self.scrape.lock();
        let (nodes, streams) = store.connection_counts();
        self.connected_nodes
            .set(i64::try_from(nodes).unwrap_or(i64::MAX));
        self.streams.set(i64::try_from(streams).unwrap_or(i64::MAX));
        let mut fleet = self.fleet.lock();
        fleet.serving = store.stable().map(|s| ServingLabels {
            revision: s.revision().to_owned(),
            snapshot: s.version().to_owned(),
        });
        fleet.rollout = rollout_state(&store.rollout_status());
        // The collector locks `fleet` itself while encoding.
        drop(fleet);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Counts the pipeline's attempts and source failures from its status channel until
/// `shutdown`: every attempt recorded in [`Status`] goes through
/// [`Metrics::revision_attempted`], and while `git` is set every new source failure
/// through [`Metrics::git_fetch_failed`].
///
/// Following the status rather than being called by the pipeline keeps the pipeline free
/// of metrics, and is exact: attempts are counted by the status's running totals, so
/// updates the channel coalesces are still all counted (up to [`crate::pipeline::HISTORY`]
/// between two wake-ups).
///
/// # Cancellation
///
/// Cancel-safe; it only stops counting.
pub async fn follow_status(
    mut status: watch::Receiver<Arc<Status>>,
    metrics: Arc<Metrics>,
    git: bool,
    shutdown: CancellationToken,
) {
    // The status's totals count from the pipeline's start, as these counters do: begin
    // at zero and take in what is already there.
    let mut seen = StatusMarks::default();
    loop {
        let current = status.borrow_and_update().clone();
        let now = StatusMarks::of(&current);
        let new_attempts = now.attempts.saturating_sub(seen.attempts);
        // Oldest first, so a histogram's sum and a log reader agree on order.
        let new = current
            .history
            .iter()
            .take(usize::try_from(new_attempts).unwrap_or(usize::MAX));
        for attempt in new.rev() {
            metrics.revision_attempted(attempt);
        }
        if git {
            // A new run of failures (another `since`) restarts its count at 1.
            let failures = if now.since == seen.since {
                now.failures.saturating_sub(seen.failures)
            } else {
                now.failures
            };
            for _ in 0..failures {
                metrics.git_fetch_failed();
            }
        }
        seen = now;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}

/// Counts endpoint changes from the endpoint watcher's channel until `shutdown`: each
/// published generation is one change (the watcher coalesces bursts of EndpointSlice
/// events into one publish), counted by generation so coalesced updates still add up.
///
/// # Cancellation
///
/// Cancel-safe; it only stops counting.
pub async fn follow_endpoints(
    mut endpoints: watch::Receiver<Arc<Endpoints>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut seen = 0;
    loop {
        let generation = endpoints.borrow_and_update().generation;
        if generation > seen {
            metrics.endpoint_events(generation - seen);
            seen = generation;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            changed = endpoints.changed() => if changed.is_err() { return },
        }
    }
}

/// What [`follow_status`] has counted so far.
#[derive(Debug, Clone, Copy, Default)]
struct StatusMarks {
    attempts: u64,
    failures: u64,
    since: Option<i64>,
}

impl StatusMarks {
    fn of(status: &Status) -> StatusMarks {
        StatusMarks {
            attempts: status.accepted_total + status.rejected_total,
            failures: status.source_error.as_ref().map_or(0, |e| e.failures),
            since: status.source_error.as_ref().map(|e| e.since),
        }
    }
}

fn types(kind: ResourceType) -> TypeLabels {
    TypeLabels {
        type_url: type_url::of(kind),
    }
}

/// The `state` label of a rollout status.
pub fn rollout_state(status: &RolloutStatus) -> &'static str {
    match status {
        RolloutStatus::Idle { .. } => "idle",
        RolloutStatus::AwaitingCanaries { .. } => "awaiting_canaries",
        RolloutStatus::Baking { .. } => "baking",
        RolloutStatus::Halted { .. } => "halted",
    }
}

// === impl FleetCollector ===

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fleet = self.0.lock();
        if let Some(serving) = &fleet.serving {
            let metric = encoder.encode_descriptor(
                "serving_revision",
                "The revision and snapshot version served to the fleet",
                None,
                MetricType::Info,
            )?;
            let info = prometheus_client::metrics::info::Info::new(serving.clone());
            info.encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "rollout_state",
            "Where the canary rollout stands: 1 for the current state",
            None,
            MetricType::Gauge,
        )?;
        for state in ROLLOUT_STATES {
            let gauge = ConstGauge::new(i64::from(state == fleet.rollout));
            gauge.encode(family.encode_family(&RolloutLabels { state })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// The sample lines (`name{labels} value`) of metric `name` in a scrape's text.
pub fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.lines().filter(move |line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}
