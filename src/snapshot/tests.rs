use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use super::*;

fn listener(name: &str, route: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: route.into(),
            config_source: None,
        })),
        ..Default::default()
    };
    Listener {
        name: name.into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(Any {
                    type_url: HttpConnectionManager::type_url(),
                    value: hcm.encode_to_vec(),
                })),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn eds_cluster(name: &str, service: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            service_name: service.into(),
            eds_config: None,
        }),
        ..Default::default()
    }
}

fn route(name: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        ..Default::default()
    }
}

fn full(rev: &str) -> Snapshot {
    let resources = Resources {
        clusters: vec![eds_cluster("api", ""), eds_cluster("web", "web-svc")],
        endpoints: vec![
            ClusterLoadAssignment {
                cluster_name: "api".into(),
                ..Default::default()
            },
            ClusterLoadAssignment {
                cluster_name: "web-svc".into(),
                ..Default::default()
            },
        ],
        listeners: vec![listener("http", "main")],
        routes: vec![route("main")],
        secrets: vec![],
    };
    Snapshot::new(rev, 7, &resources).expect("unique names")
}

#[test]
fn versions_are_content_hashes() {
    let a = full("rev-a");
    let b = full("rev-b");
    assert_eq!(a.version(), "rev-a+e7");
    assert_ne!(a.version(), b.version());
    for kind in ResourceType::ALL {
        assert_eq!(
            a.type_version(kind),
            b.type_version(kind),
            "{kind}: same content, same version"
        );
        assert_eq!(a.resources(kind), b.resources(kind));
    }
    let l = &a.resources(ResourceType::Listener)["http"];
    assert_eq!(
        l.version,
        sha256_hex(&listener("http", "main").encode_to_vec())
    );
    assert_eq!(l.version.len(), 64);
}

#[test]
fn consistent_finds_missing_route_and_endpoints() {
    assert!(full("a").consistent().is_ok());
    let mut r = Resources {
        listeners: vec![listener("http", "nope")],
        ..Default::default()
    };
    let err = Snapshot::new("a", 0, &r)
        .expect("unique")
        .consistent()
        .expect_err("route missing");
    assert!(
        matches!(&err, Error::Inconsistent { kind: ResourceType::Route, name, .. } if name == "nope"),
        "{err}"
    );
    r.listeners.clear();
    r.clusters = vec![eds_cluster("web", "web-svc")];
    let err = Snapshot::new("a", 0, &r)
        .expect("unique")
        .consistent()
        .expect_err("eds missing");
    assert!(err.to_string().contains("web-svc"), "{err}");
}

#[test]
fn duplicate_names_are_rejected() {
    let r = Resources {
        routes: vec![route("x"), route("x")],
        ..Default::default()
    };
    let err = Snapshot::new("a", 0, &r).expect_err("duplicate");
    assert!(err.to_string().contains("\"x\""), "{err}");
}

#[test]
fn diff_reports_added_removed_changed() {
    let old = full("a");
    let r = Resources {
        clusters: vec![eds_cluster("api", ""), eds_cluster("web", "other")],
        endpoints: vec![
            ClusterLoadAssignment {
                cluster_name: "api".into(),
                ..Default::default()
            },
            ClusterLoadAssignment {
                cluster_name: "other".into(),
                ..Default::default()
            },
        ],
        listeners: vec![listener("http", "main")],
        routes: vec![route("main")],
        secrets: vec![],
    };
    let new = Snapshot::new("b", 7, &r).expect("unique");
    let d = new.diff(&old);
    assert_eq!(d.types.len(), 2, "{d:?}");
    assert_eq!(
        d.types[&ResourceType::Cluster].changed,
        vec!["web".to_owned()]
    );
    let e = &d.types[&ResourceType::Endpoint];
    assert_eq!(
        (e.added.clone(), e.removed.clone()),
        (vec!["other".to_owned()], vec!["web-svc".to_owned()])
    );
    assert!(new.diff(&new).is_empty());
}

#[test]
fn persisted_snapshot_round_trips_and_detects_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = full("a");
    persist::write(dir.path(), &snap).expect("write");
    let back = persist::read(dir.path()).expect("read").expect("present");
    assert_eq!(back, snap);
    let path = dir.path().join(persist::FILE_NAME);
    let mut data = std::fs::read(&path).expect("read file");
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&path, &data).expect("write");
    assert!(matches!(
        persist::read(dir.path()),
        Err(Error::Corrupt { .. })
    ));
    let mut data = persist::encode(&snap);
    data[16..20].copy_from_slice(&9u32.to_be_bytes());
    std::fs::write(&path, &data).expect("write");
    assert!(matches!(
        persist::read(dir.path()),
        Err(Error::UnsupportedFormat { found: 9, .. })
    ));
    assert!(
        persist::read(&dir.path().join("missing"))
            .expect("no file is fine")
            .is_none()
    );
}

fn store(dir: Option<&std::path::Path>, canary: Option<&str>) -> Arc<Store> {
    Arc::new(Store::new(StoreConfig {
        state_dir: dir.map(Into::into),
        canary: canary.map(|c| CanarySelector::try_new(c).expect("valid selector")),
        canary_bake: std::time::Duration::from_secs(10),
        history: 3,
        metrics: None,
    }))
}

#[tokio::test]
async fn store_publishes_keeps_bounded_history_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(Some(dir.path()), None);
    let mut rx = s.subscribe();
    for rev in ["a", "b", "c", "d"] {
        s.publish(full(rev)).await.expect("consistent");
    }
    assert!(rx.has_changed().expect("open"));
    assert_eq!(
        rx.borrow_and_update()
            .stable
            .as_ref()
            .map(|s| s.revision().to_owned()),
        Some("d".to_owned())
    );
    let versions: Vec<_> = s
        .history()
        .iter()
        .map(|s| s.revision().to_owned())
        .collect();
    assert_eq!(versions, ["b", "c", "d"]);
    assert!(s.diff("b+e7", "d+e7").expect("both in history").is_empty());
    let bad = Snapshot::new(
        "e",
        0,
        &Resources {
            listeners: vec![listener("l", "missing")],
            ..Default::default()
        },
    )
    .expect("unique");
    assert!(s.publish(bad).await.is_err());
    assert_eq!(
        s.stable().map(|s| s.revision().to_owned()),
        Some("d".to_owned()),
        "inconsistent snapshot never replaces"
    );

    let restarted = store(Some(dir.path()), None);
    let loaded = restarted
        .load_persisted()
        .expect("readable")
        .expect("present");
    assert_eq!(loaded.version(), "d+e7");
    assert_eq!(
        restarted
            .subscribe()
            .borrow()
            .stable
            .as_ref()
            .map(|s| s.version().to_owned()),
        Some("d+e7".to_owned())
    );
}

fn node(id: &str, cluster: &str) -> Node {
    Node {
        id: id.into(),
        cluster: cluster.into(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn canary_rollout_through_the_store() {
    let s = store(None, Some("cluster=canary"));
    let driver = tokio::spawn({
        let s = s.clone();
        let token = CancellationToken::new();
        async move { s.run_rollout(token).await }
    });
    s.publish(full("a")).await.expect("first");
    let c = s.open_stream(&node("c1", "canary"), Protocol::Sotw);
    let f = s.open_stream(&node("f1", "fleet"), Protocol::Sotw);
    assert!(c.is_canary() && !f.is_canary());
    c.synced(Some("a+e7"));
    f.synced(Some("a+e7"));
    s.publish(full("b")).await.expect("second");
    let t = s.subscribe().borrow().clone();
    assert_eq!(t.for_node(true).map(|s| s.revision()), Some("b"));
    assert_eq!(t.for_node(false).map(|s| s.revision()), Some("a"));
    assert!(matches!(
        s.rollout_status(),
        RolloutStatus::AwaitingCanaries { .. }
    ));
    c.synced(Some("b+e7"));
    assert!(matches!(s.rollout_status(), RolloutStatus::Baking { .. }));
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    assert_eq!(
        s.stable().map(|s| s.revision().to_owned()),
        Some("b".to_owned())
    );

    // Now a canary NACK halts the next one.
    s.publish(full("c")).await.expect("third");
    c.nacked(ResourceType::Listener, "v-bad", "c+e7", "bad regex");
    assert!(matches!(s.rollout_status(), RolloutStatus::Halted { .. }));
    assert!(c.is_rejected(ResourceType::Listener, "v-bad"));
    assert!(!f.is_rejected(ResourceType::Listener, "v-bad"));
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    assert_eq!(
        s.stable().map(|s| s.revision().to_owned()),
        Some("b".to_owned())
    );
    let state = s.node("c1").expect("known");
    assert_eq!(state.nacks.len(), 1);
    assert_eq!(state.nacks[0].message, "bad regex");
    let json = serde_json::to_string(&s.nodes()).expect("serialisable");
    assert!(json.contains("bad regex"), "{json}");
    drop(c);
    assert!(
        s.node("c1")
            .expect("remembered")
            .disconnected_at_ms
            .is_some()
    );
    driver.abort();
}

use tokio_util::sync::CancellationToken;

/// Issue 5: an endpoints-only change replaces EDS and shares everything else (same
/// bytes, same type versions); nothing changed means nothing to publish.
#[test]
fn with_assignments_changes_only_eds() {
    use envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;
    let base = full("rev-a");
    let same = [
        ClusterLoadAssignment {
            cluster_name: "api".into(),
            ..Default::default()
        },
        ClusterLoadAssignment {
            cluster_name: "web-svc".into(),
            ..Default::default()
        },
    ];
    assert_eq!(base.with_assignments(8, &same).expect("unique"), None);
    let mut changed = same.clone();
    changed[1].endpoints = vec![LocalityLbEndpoints {
        priority: 1,
        ..Default::default()
    }];
    let encoded_before = encoded_resources();
    let next = base
        .with_assignments(8, &changed)
        .expect("unique")
        .expect("web-svc changed");
    assert!(
        encoded_resources() - encoded_before >= 1,
        "only changed assignments are encoded"
    );
    assert_eq!(next.version(), "rev-a+e8");
    assert_eq!((next.revision(), next.endpoints_generation()), ("rev-a", 8));
    assert!(next.consistent().is_ok());
    for kind in [
        ResourceType::Cluster,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ] {
        assert_eq!(next.type_version(kind), base.type_version(kind), "{kind}");
        // Shared, not copied: the same map.
        assert!(
            std::ptr::eq(next.resources(kind), base.resources(kind)),
            "{kind}"
        );
    }
    assert_ne!(
        next.type_version(ResourceType::Endpoint),
        base.type_version(ResourceType::Endpoint)
    );
    let diff = next.diff(&base);
    assert_eq!(
        diff.types.keys().collect::<Vec<_>>(),
        [&ResourceType::Endpoint]
    );
    assert_eq!(diff.types[&ResourceType::Endpoint].changed, ["web-svc"]);
    // Equal to the snapshot a full build of the same resources gives.
    let mut resources_endpoints = changed.to_vec();
    resources_endpoints.sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    let rebuilt = Snapshot::new(
        "rev-a",
        8,
        &Resources {
            clusters: vec![eds_cluster("api", ""), eds_cluster("web", "web-svc")],
            endpoints: resources_endpoints,
            listeners: vec![listener("http", "main")],
            routes: vec![route("main")],
            secrets: vec![],
        },
    )
    .expect("unique");
    assert_eq!(next, rebuilt);
    // An assignment removed is a change too.
    let fewer = base
        .with_assignments(9, &same[..1])
        .expect("unique")
        .expect("one removed");
    assert_eq!(fewer.resources(ResourceType::Endpoint).len(), 1);
    // Replacing only what changed gives the same snapshot as replacing everything.
    let partial = base
        .with_changed_assignments(8, &changed[1..])
        .expect("unique")
        .expect("web-svc changed");
    assert_eq!(partial, next);
    assert_eq!(
        base.with_changed_assignments(8, &same[..1])
            .expect("unique"),
        None
    );
    let dup = [same[0].clone(), same[0].clone()];
    assert!(matches!(
        base.with_assignments(9, &dup),
        Err(Error::DuplicateName { .. })
    ));
}

#[tokio::test]
async fn synced_nodes_counts_nodes_whose_every_stream_holds_the_snapshot() {
    let s = store(None, None);
    s.publish(full("a")).await.expect("first");
    let one = s.open_stream(&node("n1", "fleet"), Protocol::Sotw);
    let two = s.open_stream(&node("n2", "fleet"), Protocol::Sotw);
    let two_again = s.open_stream(&node("n2", "fleet"), Protocol::Delta);
    assert_eq!(s.synced_nodes("a+e7"), 0);
    one.synced(Some("a+e7"));
    two.synced(Some("a+e7"));
    assert_eq!(s.synced_nodes("a+e7"), 1, "n2 has a stream not in sync");
    two_again.synced(Some("a+e7"));
    assert_eq!(s.synced_nodes("a+e7"), 2);
    assert_eq!(s.synced_nodes("b+e7"), 0);
}
