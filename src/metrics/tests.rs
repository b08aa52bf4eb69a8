use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;

use super::*;
use crate::pipeline::{RevisionMeta, StageTimings};
use crate::snapshot::{Protocol, Snapshot, StoreConfig};
use crate::translate::Resources;

/// The value of the one sample of `name` whose labels contain `labels`.
fn value(text: &str, name: &str, labels: &str) -> f64 {
    let matching: Vec<&str> = samples(text, name).filter(|l| l.contains(labels)).collect();
    let [line] = matching.as_slice() else {
        panic!("expected one sample {name}{{{labels}}}, got {matching:?} in\n{text}");
    };
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {line:?}"))
}

fn attempt(outcome: Outcome, parse_ms: u64) -> Attempt {
    Attempt {
        revision: RevisionMeta {
            id: "abc".into(),
            ..RevisionMeta::default()
        },
        outcome,
        warnings: vec![],
        timings: StageTimings {
            read: Duration::from_millis(3),
            parse: Duration::from_millis(parse_ms),
            translate: Duration::ZERO,
            publish: Duration::ZERO,
        },
        at: 0,
    }
}

fn store(metrics: &Arc<Metrics>) -> Arc<Store> {
    Arc::new(Store::new(StoreConfig {
        metrics: Some(metrics.clone()),
        ..StoreConfig::default()
    }))
}

#[test]
fn revisions_are_counted_by_outcome_with_stage_durations() {
    let metrics = Arc::new(Metrics::new());
    metrics.revision_attempted(&attempt(
        Outcome::Accepted {
            snapshot: "abc+e0".into(),
        },
        20,
    ));
    metrics.revision_attempted(&attempt(Outcome::Rejected { errors: vec![] }, 5));
    metrics.revision_attempted(&attempt(
        Outcome::Failed {
            reason: "inconsistent".into(),
        },
        5,
    ));
    metrics.git_fetch_failed();
    metrics.endpoint_events(7);
    let text = metrics.encode(&store(&metrics)).expect("encodes");
    assert_eq!(value(&text, "attache_revisions_fetched_total", ""), 3.0);
    assert_eq!(value(&text, "attache_revisions_accepted_total", ""), 1.0);
    assert_eq!(
        value(
            &text,
            "attache_revisions_rejected_total",
            "reason=\"invalid\""
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "attache_revisions_rejected_total",
            "reason=\"failed\""
        ),
        1.0
    );
    assert_eq!(value(&text, "attache_git_fetch_errors_total", ""), 1.0);
    assert_eq!(value(&text, "attache_endpoint_events_total", ""), 7.0);
    let count = |stage: &str| {
        value(
            &text,
            "attache_reconcile_duration_seconds_count",
            &format!("stage=\"{stage}\""),
        )
    };
    assert_eq!(count("read"), 3.0);
    assert_eq!(count("parse"), 3.0);
    assert_eq!(count("total"), 3.0);
    // Stages a revision never reached are not observed as zero.
    assert!(
        samples(&text, "attache_reconcile_duration_seconds_count")
            .all(|l| !l.contains("stage=\"translate\""))
    );
    let parse_sum = value(
        &text,
        "attache_reconcile_duration_seconds_sum",
        "stage=\"parse\"",
    );
    assert!((parse_sum - 0.030).abs() < 1e-9, "{parse_sum}");
}

#[tokio::test]
async fn xds_events_are_counted_per_type_url_and_fleet_state_is_read_on_scrape() {
    let metrics = Arc::new(Metrics::new());
    let store = store(&metrics);
    let text = metrics.encode(&store).expect("encodes");
    assert_eq!(value(&text, "attache_xds_connected_nodes", ""), 0.0);
    assert_eq!(value(&text, "attache_rollout_state", "state=\"idle\""), 1.0);
    assert_eq!(
        value(&text, "attache_rollout_state", "state=\"halted\""),
        0.0
    );
    assert!(
        samples(&text, "attache_serving_revision_info")
            .next()
            .is_none()
    );

    store
        .publish(Snapshot::new("rev1", 0, &Resources::default()).expect("empty"))
        .await
        .expect("consistent");
    let node = Node {
        id: "edge-1".into(),
        ..Node::default()
    };
    let stream = store.open_stream(&node, Protocol::Sotw);
    // A reconnecting node's claim of what it holds is no ACK of anything sent.
    stream.acked(ResourceType::Cluster, "v0", "rev1+e0");
    stream.sent(ResourceType::Cluster, "v1", "rev1+e0", "1");
    stream.acked(ResourceType::Cluster, "v1", "rev1+e0");
    stream.sent(ResourceType::Listener, "v2", "rev1+e0", "2");
    stream.nacked(ResourceType::Listener, "v2", "rev1+e0", "bad listener");

    let text = metrics.encode(&store).expect("encodes");
    let cds = format!("type_url=\"{}\"", type_url::CLUSTER);
    let lds = format!("type_url=\"{}\"", type_url::LISTENER);
    assert_eq!(value(&text, "attache_xds_responses_sent_total", &cds), 1.0);
    assert_eq!(value(&text, "attache_xds_responses_sent_total", &lds), 1.0);
    assert_eq!(value(&text, "attache_xds_acks_total", &cds), 1.0);
    assert_eq!(value(&text, "attache_xds_acks_total", &lds), 0.0);
    assert_eq!(value(&text, "attache_xds_nacks_total", &lds), 1.0);
    assert_eq!(
        value(&text, "attache_xds_publish_to_ack_seconds_count", &cds),
        1.0
    );
    assert_eq!(value(&text, "attache_xds_connected_nodes", ""), 1.0);
    assert_eq!(value(&text, "attache_xds_streams", ""), 1.0);
    assert_eq!(
        value(
            &text,
            "attache_serving_revision_info",
            "revision=\"rev1\",snapshot=\"rev1+e0\""
        ),
        1.0
    );
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");

    drop(stream);
    let text = metrics.encode(&store).expect("encodes");
    assert_eq!(value(&text, "attache_xds_connected_nodes", ""), 0.0);
}

#[test]
fn rollout_states_have_stable_labels() {
    let states: Vec<&str> = [
        RolloutStatus::Idle { stable: None },
        RolloutStatus::AwaitingCanaries {
            stable: None,
            candidate: "c".into(),
        },
        RolloutStatus::Baking {
            stable: None,
            candidate: "c".into(),
            remaining_ms: 1,
        },
        RolloutStatus::Halted {
            stable: None,
            candidate: "c".into(),
            node: "n".into(),
            message: "m".into(),
        },
    ]
    .iter()
    .map(rollout_state)
    .collect();
    assert_eq!(states, ROLLOUT_STATES);
}

#[tokio::test]
async fn following_the_status_counts_every_attempt_and_fetch_failure() {
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = watch::channel(Arc::new(Status::default()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(follow_status(rx, metrics.clone(), true, shutdown.clone()));
    let store = store(&metrics);
    let accepted = || {
        attempt(
            Outcome::Accepted {
                snapshot: "abc+e0".into(),
            },
            1,
        )
    };
    // Two attempts in one update, as a coalesced channel delivers them.
    tx.send_modify(|s| {
        let s = Arc::make_mut(s);
        s.record(accepted());
        s.record(attempt(Outcome::Rejected { errors: vec![] }, 1));
    });
    let now = std::time::SystemTime::now();
    tx.send_modify(|s| Arc::make_mut(s).source_failed("unreachable".into(), now));
    tx.send_modify(|s| Arc::make_mut(s).source_failed("unreachable".into(), now));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics.encode(&store).expect("encodes");
        let done = value(&text, "attache_revisions_fetched_total", "") == 2.0
            && value(&text, "attache_git_fetch_errors_total", "") == 2.0;
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = metrics.encode(&store).expect("encodes");
    assert_eq!(value(&text, "attache_revisions_accepted_total", ""), 1.0);
    assert_eq!(
        value(
            &text,
            "attache_revisions_rejected_total",
            "reason=\"invalid\""
        ),
        1.0
    );
    shutdown.cancel();
    task.await.expect("follower ends on shutdown");
}

#[tokio::test]
async fn endpoint_changes_are_counted_by_generation() {
    let metrics = Arc::new(Metrics::new());
    let store = store(&metrics);
    let (tx, rx) = watch::channel(Arc::new(crate::endpoints::Endpoints::default()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(follow_endpoints(rx, metrics.clone(), shutdown.clone()));
    for generation in [1, 2, 5] {
        tx.send_replace(Arc::new(crate::endpoints::Endpoints {
            generation,
            ..Default::default()
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while value(
        &metrics.encode(&store).expect("encodes"),
        "attache_endpoint_events_total",
        "",
    ) != 5.0
    {
        assert!(tokio::time::Instant::now() < deadline, "not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    task.await.expect("follower ends on shutdown");
}
