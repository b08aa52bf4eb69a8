//! Issue 3 against a real Envoy 1.40 (loopback only): Envoy connects over ADS (SotW and
//! delta), ACKs and routes traffic; new snapshots change it; a rejected listener leaves it
//! serving and is not resent; a canary goes first; a restart serves the persisted
//! snapshot with no needless push.
//!
//! Envoy comes from `ENVOY` or `.venv/bin/envoy`; without it these tests skip (and fail
//! under `CI`). Every wait is a bounded poll.
mod util;
mod xds_util;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use attache::snapshot::{CanarySelector, StoreConfig};
use attache::translate::Resources;
use util::{Backend, EnvoyProcess};
use xds_util::{Server, WAIT, expect_route, gateway, rejected_listener, snapshot, start_envoy};

/// The cluster Envoy's own route table sends `prefix` to (admin `config_dump`), for
/// when several Envoys share listener ports (Envoy binds with `SO_REUSEPORT`, so traffic
/// cannot tell them apart).
fn dumped_route(envoy: &EnvoyProcess, prefix: &str) -> Option<String> {
    let resp = util::http_get(
        envoy.admin,
        "localhost",
        "/config_dump?resource=dynamic_route_configs",
        &[],
    )
    .ok()?;
    let dump: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
    let configs = dump.get("configs")?.as_array()?;
    configs
        .iter()
        .filter_map(|c| c.get("route_config"))
        .flat_map(|rc| {
            rc.get("virtual_hosts")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
        })
        .flat_map(|vh| {
            vh.get("routes")
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
        })
        .find(|r| r.pointer("/match/prefix").and_then(|p| p.as_str()) == Some(prefix))
        .and_then(|r| r.pointer("/route/cluster")?.as_str().map(str::to_owned))
}

/// Polls (blocking, bounded) until Envoy's route table sends `prefix` to `cluster`.
fn expect_dumped_route(envoy: &EnvoyProcess, prefix: &str, cluster: &str) {
    let mut last = None;
    let ok = tokio::task::block_in_place(|| {
        envoy.eventually(WAIT, || {
            last = dumped_route(envoy, prefix);
            last.as_deref() == Some(cluster)
        })
    });
    assert!(
        ok,
        "{prefix} routes to {last:?}, not {cluster:?}\n{}",
        envoy.log()
    );
}

fn stat(envoy: &EnvoyProcess, name: &str) -> u64 {
    tokio::task::block_in_place(|| envoy.stat(name)).unwrap_or(0)
}

fn envoy_or_skip() -> Option<PathBuf> {
    util::envoy_binary()
}

fn two_routes(port: u16, alpha: &Backend, beta: &Backend, root: &str) -> Resources {
    gateway(
        port,
        &[("/only-alpha", "alpha"), ("/", root)],
        &[("alpha", alpha.addr), ("beta", beta.addr)],
    )
}

async fn traffic_follows_snapshots(delta: bool) {
    let Some(envoy_bin) = envoy_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (alpha, beta) = (Backend::start("alpha"), Backend::start("beta"));
    let port = util::free_port();
    let server = Server::start(StoreConfig::default()).await;
    server
        .publish(snapshot("v1", &two_routes(port, &alpha, &beta, "alpha")))
        .await;
    let envoy = tokio::task::block_in_place(|| {
        start_envoy(
            &envoy_bin,
            dir.path(),
            "edge-1",
            BTreeMap::new(),
            server.addr,
            delta,
        )
    });
    expect_route(&envoy, port, "/", "alpha");
    server
        .until("edge-1 in sync with v1", |s| {
            s.node("edge-1")
                .is_some_and(|n| n.synced_snapshot.as_deref() == Some("v1+e0"))
        })
        .await;

    server
        .publish(snapshot("v2", &two_routes(port, &alpha, &beta, "beta")))
        .await;
    expect_route(&envoy, port, "/", "beta");
    expect_route(&envoy, port, "/only-alpha/x", "alpha");

    // v3 drops the /only-alpha route: it falls to "/" (beta), and with no "/" at all, 404.
    let v3 = gateway(port, &[("/only-alpha", "alpha")], &[("alpha", alpha.addr)]);
    server.publish(snapshot("v3", &v3)).await;
    expect_route(&envoy, port, "/", "404");
    expect_route(&envoy, port, "/only-alpha", "alpha");
    server
        .until("edge-1 in sync with v3", |s| {
            s.node("edge-1")
                .is_some_and(|n| n.synced_snapshot.as_deref() == Some("v3+e0"))
        })
        .await;
    assert_eq!(stat(&envoy, "listener_manager.lds.update_rejected"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_envoy_routes_and_follows_new_snapshots() {
    traffic_follows_snapshots(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_envoy_routes_and_follows_new_snapshots() {
    traffic_follows_snapshots(true).await;
}

async fn rejected_listener_is_recorded_and_not_resent(delta: bool) {
    let Some(envoy_bin) = envoy_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (alpha, beta) = (Backend::start("alpha"), Backend::start("beta"));
    let port = util::free_port();
    let server = Server::start(StoreConfig::default()).await;
    server
        .publish(snapshot("v1", &two_routes(port, &alpha, &beta, "alpha")))
        .await;
    let envoy = tokio::task::block_in_place(|| {
        start_envoy(
            &envoy_bin,
            dir.path(),
            "edge-n",
            BTreeMap::new(),
            server.addr,
            delta,
        )
    });
    expect_route(&envoy, port, "/", "alpha");

    let mut bad = two_routes(port, &alpha, &beta, "alpha");
    bad.listeners = vec![rejected_listener("http", port)];
    server.publish(snapshot("v2", &bad)).await;
    server
        .until("Envoy's NACK recorded", |s| {
            s.node("edge-n").is_some_and(|n| !n.nacks.is_empty())
        })
        .await;
    let node = server.store.node("edge-n").expect("node state");
    let nack = &node.nacks[0];
    assert_eq!(nack.snapshot, "v2+e0");
    assert!(
        nack.message.contains("attache.test.DoesNotExist"),
        "Envoy's message is kept: {}",
        nack.message
    );
    expect_route(&envoy, port, "/", "alpha");
    assert_eq!(stat(&envoy, "listener_manager.lds.update_rejected"), 1);
    let lds_before = stat(&envoy, "listener_manager.lds.update_success");

    // v3 keeps the rejected listener and moves "/only-alpha" to beta (an RDS change): the
    // route change arrives, the listener is not sent again.
    let mut v3 = gateway(
        port,
        &[("/only-alpha", "beta"), ("/", "alpha")],
        &[("alpha", alpha.addr), ("beta", beta.addr)],
    );
    v3.listeners = vec![rejected_listener("http", port)];
    server.publish(snapshot("v3", &v3)).await;
    expect_route(&envoy, port, "/only-alpha", "beta");
    assert_eq!(
        stat(&envoy, "listener_manager.lds.update_rejected"),
        1,
        "the rejected listener was resent"
    );
    assert_eq!(
        stat(&envoy, "listener_manager.lds.update_success"),
        lds_before
    );
    let node = server.store.node("edge-n").expect("node state");
    assert_eq!(node.nacks.len(), 1, "{:?}", node.nacks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_envoy_nack_keeps_serving_and_is_not_resent() {
    rejected_listener_is_recorded_and_not_resent(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_envoy_nack_keeps_serving_and_is_not_resent() {
    rejected_listener_is_recorded_and_not_resent(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_goes_first_and_a_canary_nack_halts_the_rollout() {
    let Some(envoy_bin) = envoy_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (alpha, beta) = (Backend::start("alpha"), Backend::start("beta"));
    let (canary_port, fleet_port) = (util::free_port(), util::free_port());
    let config = StoreConfig {
        canary: Some(CanarySelector::try_new("metadata.canary=true").expect("selector")),
        canary_bake: Duration::from_secs(3),
        ..StoreConfig::default()
    };
    let server = Server::start(config).await;
    // Both Envoys get the same resources, so both bind both listeners (Envoy uses
    // SO_REUSEPORT): what each one routes is read from its own admin config_dump.
    let build = |root: &str, bad: bool| {
        let mut res = two_routes(canary_port, &alpha, &beta, root);
        let mut second = xds_util::listener("http-fleet", fleet_port, "main");
        if bad {
            second = rejected_listener("http-fleet", fleet_port);
        }
        res.listeners.push(second);
        res
    };
    server.publish(snapshot("v1", &build("alpha", false))).await;
    let canary = tokio::task::block_in_place(|| {
        start_envoy(
            &envoy_bin,
            dir.path(),
            "canary-1",
            BTreeMap::from([("canary".to_owned(), "true".to_owned())]),
            server.addr,
            false,
        )
    });
    let fleet = tokio::task::block_in_place(|| {
        start_envoy(
            &envoy_bin,
            dir.path(),
            "fleet-1",
            BTreeMap::new(),
            server.addr,
            true,
        )
    });
    expect_route(&canary, canary_port, "/", "alpha");
    expect_dumped_route(&canary, "/", "alpha");
    expect_dumped_route(&fleet, "/", "alpha");

    // v2 holds a listener Envoy rejects: the canary NACKs it, the rollout halts, and the
    // fleet never receives v2.
    server.publish(snapshot("v2", &build("beta", true))).await;
    server
        .until("the canary's NACK halts the rollout", |s| {
            matches!(
                s.rollout_status(),
                attache::snapshot::RolloutStatus::Halted { .. }
            )
        })
        .await;
    let fleet_state = server.store.node("fleet-1").expect("fleet node");
    assert!(
        fleet_state
            .types
            .values()
            .all(|t| t.sent.as_ref().is_none_or(|s| s.snapshot != "v2+e0")),
        "the fleet got the halted candidate: {fleet_state:?}"
    );
    expect_dumped_route(&fleet, "/", "alpha");

    // v3 is good: the canary gets it first, then, after the bake, the fleet.
    server.publish(snapshot("v3", &build("beta", false))).await;
    expect_dumped_route(&canary, "/", "beta");
    // Read the fleet's state, then the rollout: if v3 was not yet promoted when the
    // rollout was read, it was not when the fleet's state was read either, so the
    // fleet must not have been sent v3.
    let fleet_state = server.store.node("fleet-1").expect("fleet node");
    if !matches!(
        server.store.rollout_status(),
        attache::snapshot::RolloutStatus::Idle { .. }
    ) {
        assert!(
            fleet_state
                .types
                .values()
                .all(|t| t.sent.as_ref().is_none_or(|s| s.snapshot == "v1+e0")),
            "the fleet got v3 before the canary bake ended: {fleet_state:?}"
        );
        expect_dumped_route(&fleet, "/", "alpha");
    }
    server
        .until("the bake promotes v3", |s| {
            s.stable().is_some_and(|v| v.version() == "v3+e0")
        })
        .await;
    expect_dumped_route(&fleet, "/", "beta");
    let fleet_state = server.store.node("fleet-1").expect("fleet node");
    assert!(
        !fleet_state
            .types
            .values()
            .any(|t| t.sent.as_ref().is_some_and(|s| s.snapshot == "v2+e0")),
        "the fleet got the halted candidate: {fleet_state:?}"
    );
    assert_eq!(
        server
            .store
            .stable()
            .map(|s| s.version().to_owned())
            .as_deref(),
        Some("v3+e0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_serves_the_persisted_snapshot_without_a_needless_push() {
    let Some(envoy_bin) = envoy_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let (alpha, beta) = (Backend::start("alpha"), Backend::start("beta"));
    let port = util::free_port();
    let config = StoreConfig {
        state_dir: Some(state.clone()),
        ..StoreConfig::default()
    };
    let server = Server::start(config.clone()).await;
    server
        .publish(snapshot("v1", &two_routes(port, &alpha, &beta, "alpha")))
        .await;
    let xds_addr = server.addr;
    let envoy = tokio::task::block_in_place(|| {
        start_envoy(
            &envoy_bin,
            dir.path(),
            "edge-r",
            BTreeMap::new(),
            xds_addr,
            true,
        )
    });
    expect_route(&envoy, port, "/", "alpha");
    server
        .until("edge-r in sync", |s| {
            s.node("edge-r")
                .is_some_and(|n| n.synced_snapshot.as_deref() == Some("v1+e0"))
        })
        .await;
    let updates = |envoy: &EnvoyProcess| {
        [
            "cluster_manager.cds.update_success",
            "listener_manager.lds.update_success",
        ]
        .map(|name| stat(envoy, name))
    };
    let before = updates(&envoy);
    server.stop().await;
    // Envoy keeps routing with attache gone.
    expect_route(&envoy, port, "/", "alpha");

    // Same address, same state dir, no publish: the persisted snapshot is served.
    let store = std::sync::Arc::new(attache::snapshot::Store::new(config));
    let loaded = store.load_persisted().expect("state file readable");
    assert_eq!(
        loaded.map(|s| s.version().to_owned()).as_deref(),
        Some("v1+e0")
    );
    let listener = {
        let mut tries = 0;
        loop {
            match tokio::net::TcpListener::bind(xds_addr).await {
                Ok(l) => break l,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 100, "cannot rebind {xds_addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(attache::xds::serve(
        listener,
        store.clone(),
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let reconnected = |store: &attache::snapshot::Store| {
        store
            .node("edge-r")
            .is_some_and(|n| n.synced_snapshot.as_deref() == Some("v1+e0"))
    };
    while !reconnected(&store) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Envoy did not reconnect\n{}",
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect_route(&envoy, port, "/", "alpha");
    // Probe: a route change must arrive; any needless CDS/LDS push came before it.
    let v2 = two_routes(port, &alpha, &beta, "beta");
    store
        .publish(snapshot("v2", &v2))
        .await
        .expect("consistent");
    expect_route(&envoy, port, "/", "beta");
    assert_eq!(
        updates(&envoy),
        before,
        "identical clusters or listeners were pushed again"
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(WAIT, task).await;
}
