//! Issue 6: every admin endpoint over a real socket, and the metrics after a scripted
//! scenario against a real Envoy 1.40: a revision accepted (Envoy routes with it), one
//! accepted by attache but NACKed by Envoy (a listener it cannot build), and one rejected
//! by validation.
mod util;
mod xds_util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache::admin;
use attache::config::{self, Diagnostic, Severity, SourceFile};
use attache::endpoints::Endpoints;
use attache::metrics::{self, Metrics};
use attache::pipeline::{Attempt, Outcome, RevisionMeta, StageTimings, Status};
use attache::snapshot::{Snapshot, StoreConfig};
use attache::translate::Resources;
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use util::{Backend, EnvoyProcess, Response, http_get, http_request};
use xds_util::{Server, WAIT, start_envoy};

/// The config as a user writes it, so resources carry real provenance.
fn resources(listener_port: u16, backend: SocketAddr) -> Resources {
    let yaml = util::gateway_yaml(listener_port, "/echo/", &backend.to_string());
    let files = [SourceFile {
        path: "gateway.yaml".into(),
        bytes: yaml.into_bytes(),
    }];
    let (config, _) = config::load_files(&files, &config::Options::default())
        .into_result()
        .expect("test config is valid");
    attache::translate::translate(&config, &Endpoints::default())
}

/// `good` plus a listener Envoy cannot build (its first filter names a type no
/// extension implements), which attache's validation cannot know about.
fn with_unbuildable_listener(good: &Resources, port: u16) -> Resources {
    let mut bad = good.clone();
    let mut listener = good.listeners[0].clone();
    listener.name = "unbuildable".into();
    listener.address = Some(xds_util::socket("127.0.0.1", port));
    listener.filter_chains[0].filters.insert(
        0,
        Filter {
            name: "attache.test.bogus".into(),
            config_type: Some(filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/attache.test.DoesNotExist".into(),
                value: vec![],
            })),
        },
    );
    bad.listeners.push(listener);
    bad
}

fn attempt(id: &str, message: &str, outcome: Outcome) -> Attempt {
    Attempt {
        revision: RevisionMeta {
            id: id.into(),
            author: Some("Ops <ops@example.com>".into()),
            message: Some(message.into()),
            time: 1_796_017_663,
            source: "git file:///gateway@main".into(),
        },
        outcome,
        warnings: vec![],
        timings: StageTimings {
            read: Duration::from_millis(4),
            parse: Duration::from_millis(2),
            translate: Duration::from_millis(1),
            publish: Duration::from_millis(1),
        },
        at: 1_796_017_700,
    }
}

fn accepted(id: &str, message: &str) -> Attempt {
    attempt(
        id,
        message,
        Outcome::Accepted {
            snapshot: format!("{id}+e0"),
        },
    )
}

fn get(addr: SocketAddr, path: &str) -> Response {
    tokio::task::block_in_place(|| http_get(addr, "localhost", path, &[]))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let response = get(addr, path);
    assert_eq!(response.status, 200, "GET {path}: {}", response.body_text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The one sample of `name` whose labels contain `labels`.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let lines: Vec<&str> = metrics::samples(text, name)
        .filter(|l| l.contains(labels))
        .collect();
    let [line] = lines.as_slice() else {
        panic!("expected one {name}{{{labels}}} in:\n{text}");
    };
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {line}"))
}

fn routes_through(envoy: &EnvoyProcess, port: u16, backend: &Backend) -> bool {
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    tokio::task::block_in_place(|| {
        envoy.eventually(WAIT, || {
            http_get(listener, "example.com", "/echo/hi", &[])
                .is_ok_and(|r| r.status == 200 && r.body_text().starts_with(&backend.name))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_after_accept_nack_and_reject() {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = Backend::start("echo-backend");
    let (port, bad_port) = (util::free_port(), util::free_port());

    let metrics = Arc::new(Metrics::new());
    let server = Server::start(StoreConfig {
        metrics: Some(metrics.clone()),
        ..StoreConfig::default()
    })
    .await;
    let (status, status_rx) = watch::channel(Arc::new(Status::default()));
    let stop = CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    tokio::spawn(metrics::follow_status(
        status_rx.clone(),
        metrics.clone(),
        true,
        stop.clone(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind admin");
    let admin = listener.local_addr().expect("admin addr");
    let state = admin::State::new(server.store.clone(), status_rx, metrics.clone(), None);
    tokio::spawn(admin::serve(listener, state, stop.clone()));

    // Before anything is served: alive, not ready.
    assert_eq!(get(admin, "/healthz").status, 200);
    let not_ready = get(admin, "/readyz");
    assert_eq!(not_ready.status, 503, "{}", not_ready.body_text());
    assert_eq!(get(admin, "/api/v1/resources").status, 503);

    // 1. Accepted: Envoy connects, ACKs and routes.
    let good = resources(port, backend.addr);
    server
        .publish(Snapshot::new("a1", 0, &good).expect("unique names"))
        .await;
    status.send_modify(|s| Arc::make_mut(s).record(accepted("a1", "add echo")));
    let envoy = tokio::task::block_in_place(|| {
        start_envoy(
            &envoy_bin,
            dir.path(),
            "edge-7",
            BTreeMap::from([("zone".to_owned(), "z1".to_owned())]),
            server.addr,
            false,
        )
    });
    assert!(routes_through(&envoy, port, &backend), "{}", envoy.log());
    server
        .until("edge-7 in sync with a1", |s| {
            s.node("edge-7")
                .is_some_and(|n| n.synced_snapshot.as_deref() == Some("a1+e0"))
        })
        .await;
    assert_eq!(get(admin, "/readyz").status, 200);

    // 2. Accepted by attache, NACKed by Envoy: the node keeps a1 and says why.
    server
        .publish(
            Snapshot::new("b2", 0, &with_unbuildable_listener(&good, bad_port))
                .expect("unique names"),
        )
        .await;
    status.send_modify(|s| Arc::make_mut(s).record(accepted("b2", "add a second listener")));
    server
        .until("Envoy's NACK of b2", |s| {
            s.node("edge-7").is_some_and(|n| !n.nacks.is_empty())
        })
        .await;
    assert!(routes_through(&envoy, port, &backend), "still routes");

    // 3. Rejected by validation: nothing reaches a node.
    let error = Diagnostic {
        file: "gateway.yaml".into(),
        line: 21,
        column: 3,
        severity: Severity::Error,
        resource: None,
        field: "spec.prefix".into(),
        message: "must start with \"/\"".into(),
    };
    status.send_modify(|s| {
        Arc::make_mut(s).record(attempt(
            "c3",
            "typo <b>bold</b>",
            Outcome::Rejected {
                errors: vec![error],
            },
        ))
    });

    // /api/v1/status: applied b2, rejected c3 newer.
    let status_json = get_json(admin, "/api/v1/status");
    assert_eq!(status_json["serving"]["snapshot"], "b2+e0");
    assert_eq!(status_json["applied"]["revision"]["id"], "b2");
    assert_eq!(status_json["last_attempted"]["revision"]["id"], "c3");
    assert_eq!(
        status_json["last_attempted"]["errors"][0]["message"],
        "must start with \"/\""
    );
    assert_eq!(status_json["newer_rejected"], true);
    assert_eq!(status_json["rollout"]["state"], "idle");

    // /api/v1/nodes: metadata, versions per type, Envoy's NACK text.
    let nodes = get_json(admin, "/api/v1/nodes");
    let node = &nodes[0];
    assert_eq!(node["id"], "edge-7");
    assert_eq!(node["cluster"], "gateway");
    assert_eq!(node["connected"], true);
    assert_eq!(node["metadata"]["zone"], "z1");
    assert!(
        node["user_agent"]
            .as_str()
            .is_some_and(|a| a.starts_with("envoy/1.40")),
        "{node}"
    );
    // b2 changed only listeners: clusters were not resent, and the listeners Envoy holds
    // are still a1's.
    assert_eq!(node["types"]["cluster"]["acked"]["snapshot"], "a1+e0");
    assert_eq!(node["types"]["listener"]["sent"]["snapshot"], "b2+e0");
    assert_eq!(node["types"]["listener"]["acked"]["snapshot"], "a1+e0");
    assert_eq!(node["last_nack"]["kind"], "listener");
    assert_eq!(node["last_nack"]["snapshot"], "b2+e0");
    let nack_message = node["last_nack"]["message"].as_str().expect("message");
    assert!(
        nack_message.contains("attache.test.DoesNotExist"),
        "{nack_message}"
    );
    assert_eq!(get_json(admin, "/api/v1/nodes/edge-7")["id"], "edge-7");
    assert_eq!(get(admin, "/api/v1/nodes/edge-8").status, 404);

    // /api/v1/revisions: the attempts newest first, the snapshots oldest first.
    let revisions = get_json(admin, "/api/v1/revisions");
    let ids: Vec<&str> = revisions["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter_map(|a| a["revision"]["id"].as_str())
        .collect();
    assert_eq!(ids, ["c3", "b2", "a1"]);
    assert_eq!(revisions["snapshots"][0]["snapshot"], "a1+e0");
    assert_eq!(revisions["snapshots"][1]["snapshot"], "b2+e0");

    // /api/v1/resources, routes, clusters: each with its file:line.
    let listing = get_json(admin, "/api/v1/resources?type=listener");
    let listeners = listing["items"].as_array().expect("items");
    let http = listeners
        .iter()
        .find(|l| l["source"]["name"] == "http")
        .unwrap_or_else(|| panic!("the http listener in {listing}"));
    assert_eq!(http["source"]["location"], "gateway.yaml:1");
    let routes = get_json(admin, "/api/v1/routes");
    let echo = routes["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|r| r["matcher"].as_str().is_some_and(|m| m.contains("/echo/")))
        .unwrap_or_else(|| panic!("the echo route in {routes}"));
    assert_eq!(echo["source"]["location"], "gateway.yaml:13");
    assert_eq!(echo["source"]["kind"], "Mapping");
    let clusters = get_json(admin, "/api/v1/clusters");
    assert_eq!(clusters["items"][0]["healthy"], 1);
    assert_eq!(clusters["items"][0]["total"], 1);
    assert_eq!(
        clusters["items"][0]["source"]["location"],
        "gateway.yaml:13"
    );

    // /api/v1/diff: a1 -> b2 adds the unbuildable listener, nothing else.
    let diff = get_json(admin, "/api/v1/diff?from=a1&to=b2");
    assert_eq!(diff["types"]["listener"]["added"][0], "unbuildable");
    assert!(diff["types"]["cluster"].is_null(), "{diff}");
    assert_eq!(get(admin, "/api/v1/diff?from=a1").status, 400);
    assert_eq!(get(admin, "/api/v1/diff?from=a1&to=zz9").status, 404);

    // /diag: the serving and rejected commits, the node and its NACK, the routes.
    let diag = get(admin, "/diag");
    assert_eq!(diag.status, 200);
    assert!(
        diag.header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    let html = diag.body_text();
    for expected in [
        "add a second listener",
        "id=rejected",
        "typo &lt;b&gt;bold&lt;/b&gt;",
        "gateway.yaml:21:3",
        "edge-7",
        "attache.test.DoesNotExist",
        "<code>gateway.yaml:13</code>",
        "prefix /echo/",
    ] {
        assert!(html.contains(expected), "/diag lacks {expected:?}:\n{html}");
    }
    assert!(!html.contains("<b>bold"));

    // No webhook without a git source with a secret.
    let webhook = tokio::task::block_in_place(|| {
        http_request(
            admin,
            "POST",
            "localhost",
            "/webhook",
            &[("content-length", "0")],
        )
    })
    .expect("POST /webhook");
    assert_eq!(webhook.status, 404);

    // /metrics after the scenario.
    let scrape = get(admin, "/metrics");
    assert_eq!(scrape.status, 200);
    assert_eq!(scrape.header("content-type"), Some(metrics::CONTENT_TYPE));
    let text = scrape.body_text();
    let by_type = |url: &str| format!("type_url=\"{url}\"");
    let lds = by_type(attache::xds::type_url::LISTENER);
    let cds = by_type(attache::xds::type_url::CLUSTER);
    assert_eq!(sample(&text, "attache_revisions_fetched_total", ""), 3.0);
    assert_eq!(sample(&text, "attache_revisions_accepted_total", ""), 2.0);
    assert_eq!(
        sample(
            &text,
            "attache_revisions_rejected_total",
            "reason=\"invalid\""
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "attache_reconcile_duration_seconds_count",
            "stage=\"total\""
        ),
        3.0
    );
    assert!(sample(&text, "attache_xds_responses_sent_total", &lds) >= 2.0);
    assert!(sample(&text, "attache_xds_acks_total", &lds) >= 1.0);
    assert_eq!(sample(&text, "attache_xds_nacks_total", &lds), 1.0);
    assert_eq!(sample(&text, "attache_xds_nacks_total", &cds), 0.0);
    assert!(sample(&text, "attache_xds_acks_total", &cds) >= 1.0);
    assert!(sample(&text, "attache_xds_publish_to_ack_seconds_count", &cds) >= 1.0);
    assert_eq!(sample(&text, "attache_xds_connected_nodes", ""), 1.0);
    assert_eq!(
        sample(
            &text,
            "attache_serving_revision_info",
            "revision=\"b2\",snapshot=\"b2+e0\""
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "attache_rollout_state", "state=\"idle\""),
        1.0
    );
    assert_eq!(sample(&text, "attache_git_fetch_errors_total", ""), 0.0);

    // Envoy gone: the node shows disconnected, the gauge drops.
    drop(envoy);
    server
        .until("edge-7's stream closed", |s| {
            s.node("edge-7").is_some_and(|n| n.streams.is_empty())
        })
        .await;
    let text = get(admin, "/metrics").body_text();
    assert_eq!(sample(&text, "attache_xds_connected_nodes", ""), 0.0);
    assert_eq!(get_json(admin, "/api/v1/nodes")[0]["connected"], false);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_what_is_wrong() {
    let metrics = Arc::new(Metrics::new());
    let server = Server::start(StoreConfig {
        metrics: Some(metrics.clone()),
        ..StoreConfig::default()
    })
    .await;
    server
        .publish(
            Snapshot::new(
                "a1",
                0,
                &resources(util::free_port(), "127.0.0.1:9".parse().expect("addr")),
            )
            .expect("unique names"),
        )
        .await;
    let (_status, status_rx) = watch::channel(Arc::new(Status::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind admin");
    let admin = listener.local_addr().expect("admin addr");
    let stop = CancellationToken::new();
    let task = tokio::spawn(admin::serve(
        listener,
        admin::State::new(server.store.clone(), status_rx, metrics, None),
        stop.clone(),
    ));
    for (path, status, says) in [
        (
            "/api/v1/resources?type=widget",
            400,
            "unknown resource type \\\"widget\\\"",
        ),
        (
            "/api/v1/resources?snapshot=nope",
            404,
            "?snapshot=\\\"nope\\\"",
        ),
        ("/api/v1/diff?to=a1", 400, "needs both"),
        ("/api/v1/diff?from=&to=a1", 400, "?from= is empty"),
        (
            "/api/v1/nodes/%3Cscript%3E",
            404,
            "no node \\\"<script>\\\"",
        ),
        ("/api/v2/status", 404, "no such admin endpoint"),
    ] {
        let response = get(admin, path);
        let body = response.body_text();
        assert_eq!(response.status, status, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    // A query that cannot be read is refused with the reason.
    let twice = get(admin, "/api/v1/resources?type=route&type=cluster");
    assert_eq!(twice.status, 400);
    assert!(
        twice.body_text().contains("duplicate field"),
        "{}",
        twice.body_text()
    );
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("admin stops on shutdown")
        .expect("task")
        .expect("clean stop");
    server.stop().await;
}

#[test]
fn serve_refuses_an_admin_address_in_use_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let tmp = tempfile::tempdir().expect("temp dir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["serve", "--xds-addr", "127.0.0.1:0", "--dir"])
        .arg(tmp.path())
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .args(["--admin-addr", &addr.to_string()])
        .output()
        .expect("run attache serve");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen for the admin API on {addr}")),
        "{stderr}"
    );
}
