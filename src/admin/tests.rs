//! The admin router driven with `oneshot`, no socket (STYLE.md, "Tests"). The end-to-end
//! scenario with a real Envoy is in `tests/admin.rs`.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value};
use tower::ServiceExt;

use super::*;
use crate::config::{self, Diagnostic, Severity, SourceFile};
use crate::endpoints::Endpoints;
use crate::pipeline::{Attempt, Outcome, RevisionMeta, StageTimings};
use crate::snapshot::{Protocol, ResourceType, Snapshot, StoreConfig};

const GOOD: &str = "\
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: users
  namespace: shop
spec:
  hostname: \"*\"
  prefix: /users/
  service: 127.0.0.1:9001
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: orders
  namespace: shop
spec:
  hostname: \"*\"
  prefix: /orders/
  service: 127.0.0.1:9002
";

/// A snapshot translated from real config, so it carries real provenance.
fn snapshot(revision: &str, yaml: &str) -> Snapshot {
    let files = [SourceFile {
        path: "mappings/shop.yaml".into(),
        bytes: yaml.as_bytes().to_vec(),
    }];
    let outcome = config::load_files(&files, &config::Options::default());
    let (config, _) = outcome.into_result().expect("test config is valid");
    let resources = crate::translate::translate(&config, &Endpoints::default());
    Snapshot::new(revision, 0, &resources).expect("translate gives unique names")
}

fn attempt(id: &str, message: &str, outcome: Outcome) -> Attempt {
    Attempt {
        revision: RevisionMeta {
            id: id.into(),
            author: Some("Dev <dev@example.com>".into()),
            message: Some(message.into()),
            time: 1_796_017_663,
            source: "git https://example.com/gateway.git@main".into(),
        },
        outcome,
        warnings: vec![],
        timings: StageTimings {
            read: Duration::from_millis(2),
            parse: Duration::from_millis(3),
            translate: Duration::from_millis(4),
            publish: Duration::from_millis(1),
        },
        at: 1_796_017_700,
    }
}

fn error(message: &str) -> Diagnostic {
    Diagnostic {
        file: "mappings/shop.yaml".into(),
        line: 9,
        column: 3,
        severity: Severity::Error,
        resource: None,
        field: "spec.prefix".into(),
        message: message.into(),
    }
}

struct Fixture {
    state: State,
    status: watch::Sender<Arc<Status>>,
    store: Arc<Store>,
}

fn fixture() -> Fixture {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::new(StoreConfig {
        metrics: Some(metrics.clone()),
        ..StoreConfig::default()
    }));
    let (status, rx) = watch::channel(Arc::new(Status::default()));
    Fixture {
        state: State::new(store.clone(), rx, metrics, None),
        status,
        store,
    }
}

/// Publishes `good` as accepted and then records a rejected newer commit whose message
/// holds markup.
async fn accepted_then_rejected(f: &Fixture) {
    f.store
        .publish(snapshot("c0ffee1", GOOD))
        .await
        .expect("consistent");
    let mut status = Status::default();
    status.record(attempt(
        "c0ffee1",
        "add shop routes",
        Outcome::Accepted {
            snapshot: "c0ffee1+e0".into(),
        },
    ));
    status.record(attempt(
        "badbad2",
        "<script>alert('x')</script> break things",
        Outcome::Rejected {
            errors: vec![error("must start with \"/\" <b>here</b>")],
        },
    ));
    f.status.send_replace(Arc::new(status));
}

async fn get(state: &State, uri: &str) -> (StatusCode, String, HeaderMap) {
    send(
        state,
        Request::get(uri).body(Body::empty()).expect("request"),
    )
    .await
}

async fn send(state: &State, request: Request<Body>) -> (StatusCode, String, HeaderMap) {
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn health_and_readiness_follow_the_store() {
    let f = fixture();
    assert_eq!(get(&f.state, "/healthz").await.0, StatusCode::OK);
    let (code, body, _) = get(&f.state, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    f.store
        .publish(snapshot("c0ffee1", GOOD))
        .await
        .expect("consistent");
    let (code, body, _) = get(&f.state, "/readyz").await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("c0ffee1+e0"), "{body}");
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let f = fixture();
    let (code, body, headers) = get(&f.state, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], metrics::CONTENT_TYPE);
    assert!(body.contains("attache_xds_connected_nodes 0"), "{body}");
    assert!(body.ends_with("# EOF\n"));
}

#[tokio::test]
async fn status_shows_applied_and_the_rejected_newer_revision() {
    let f = fixture();
    let (_, body, _) = get(&f.state, "/api/v1/status").await;
    let empty = json(&body);
    assert_eq!(empty["serving"], serde_json::Value::Null);
    assert_eq!(empty["rollout"]["state"], "idle");

    accepted_then_rejected(&f).await;
    let (code, body, _) = get(&f.state, "/api/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    let status = json(&body);
    assert_eq!(status["serving"]["snapshot"], "c0ffee1+e0");
    assert_eq!(status["applied"]["revision"]["id"], "c0ffee1");
    assert_eq!(status["last_attempted"]["revision"]["id"], "badbad2");
    assert_eq!(status["last_attempted"]["result"], "rejected");
    assert_eq!(
        status["last_attempted"]["errors"][0]["message"],
        "must start with \"/\" <b>here</b>"
    );
    assert_eq!(status["last_attempted"]["errors"][0]["line"], 9);
    assert_eq!(status["newer_rejected"], true);
    assert_eq!(status["rejected_total"], 1);
}

#[tokio::test]
async fn nodes_show_metadata_versions_and_the_last_nack() {
    let f = fixture();
    f.store
        .publish(snapshot("c0ffee1", GOOD))
        .await
        .expect("consistent");
    let node = Node {
        id: "edge-1".into(),
        cluster: "gateway".into(),
        metadata: Some(Struct {
            fields: [(
                "zone".to_owned(),
                Value {
                    kind: Some(value::Kind::StringValue("eu-west-1a".into())),
                },
            )]
            .into(),
        }),
        user_agent_name: "envoy".into(),
        ..Node::default()
    };
    let stream = f.store.open_stream(&node, Protocol::Sotw);
    stream.sent(ResourceType::Cluster, "cds1", "c0ffee1+e0", "1");
    stream.acked(ResourceType::Cluster, "cds1", "c0ffee1+e0");
    stream.sent(ResourceType::Listener, "lds1", "c0ffee1+e0", "2");
    stream.nacked(
        ResourceType::Listener,
        "lds1",
        "c0ffee1+e0",
        "Error adding listener: <bogus>",
    );

    let (code, body, _) = get(&f.state, "/api/v1/nodes").await;
    assert_eq!(code, StatusCode::OK);
    let nodes = json(&body);
    let node = &nodes[0];
    assert_eq!(node["id"], "edge-1");
    assert_eq!(node["cluster"], "gateway");
    assert_eq!(node["connected"], true);
    assert_eq!(node["user_agent"], "envoy");
    assert_eq!(node["metadata"]["zone"], "eu-west-1a");
    assert_eq!(node["types"]["cluster"]["acked"]["version"], "cds1");
    assert_eq!(node["last_nack"]["kind"], "listener");
    assert_eq!(
        node["last_nack"]["message"],
        "Error adding listener: <bogus>"
    );

    let (code, body, _) = get(&f.state, "/api/v1/nodes/edge-1").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(json(&body)["id"], "edge-1");
    let (code, body, _) = get(&f.state, "/api/v1/nodes/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        json(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"nope\""))
    );

    let (_, html, _) = get(&f.state, "/diag").await;
    assert!(html.contains("edge-1"), "{html}");
    assert!(
        html.contains("Error adding listener: &lt;bogus&gt;"),
        "{html}"
    );
    assert!(!html.contains("<bogus>"));
    drop(stream);
}

#[tokio::test]
async fn resources_routes_and_clusters_carry_file_and_line() {
    let f = fixture();
    let (code, _, _) = get(&f.state, "/api/v1/resources").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    f.store
        .publish(snapshot("c0ffee1", GOOD))
        .await
        .expect("consistent");

    let (code, body, _) = get(&f.state, "/api/v1/resources?type=cluster").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let listing = json(&body);
    assert_eq!(listing["snapshot"], "c0ffee1+e0");
    let items = listing["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{body}");
    assert!(items.iter().all(|r| r["type"] == "cluster"));
    let locations: Vec<&str> = items
        .iter()
        .filter_map(|r| r["source"]["location"].as_str())
        .collect();
    assert!(locations.contains(&"mappings/shop.yaml:1"), "{locations:?}");
    assert!(
        locations.contains(&"mappings/shop.yaml:11"),
        "{locations:?}"
    );

    let (_, body, _) = get(&f.state, "/api/v1/routes").await;
    let routes = json(&body);
    let users = routes["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|r| r["matcher"].as_str().is_some_and(|m| m.contains("/users/")))
        .unwrap_or_else(|| panic!("a /users/ route in {body}"));
    assert_eq!(users["source"]["location"], "mappings/shop.yaml:1");
    assert_eq!(users["source"]["name"], "users");
    assert_eq!(users["target"]["kind"], "cluster");

    let (_, body, _) = get(&f.state, "/api/v1/clusters").await;
    let clusters = json(&body);
    let first = &clusters["items"][0];
    assert_eq!(first["healthy"], 1);
    assert_eq!(first["total"], 1);

    let (code, body, _) = get(&f.state, "/api/v1/resources?type=routes").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("unknown resource type \\\"routes\\\""),
        "{body}"
    );
    let (code, _, _) = get(&f.state, "/api/v1/resources?snapshot=ffff").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn revisions_and_diff() {
    let f = fixture();
    accepted_then_rejected(&f).await;
    let changed = GOOD.replace("127.0.0.1:9002", "127.0.0.1:9003");
    f.store
        .publish(snapshot("d00d003", &changed))
        .await
        .expect("consistent");

    let (_, body, _) = get(&f.state, "/api/v1/revisions").await;
    let revisions = json(&body);
    assert_eq!(revisions["attempts"][0]["revision"]["id"], "badbad2");
    assert_eq!(revisions["attempts"][1]["revision"]["id"], "c0ffee1");
    assert_eq!(revisions["snapshots"][0]["snapshot"], "c0ffee1+e0");
    assert_eq!(revisions["snapshots"][1]["snapshot"], "d00d003+e0");

    // By revision id, and by a unique prefix, as short commit ids are pasted.
    let (code, body, _) = get(&f.state, "/api/v1/diff?from=c0ffee1&to=d00d").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let diff = json(&body);
    assert_eq!(diff["from"], "c0ffee1+e0");
    assert_eq!(diff["to"], "d00d003+e0");
    assert!(
        !diff["types"]["cluster"]["added"]
            .as_array()
            .expect("added")
            .is_empty(),
        "{body}"
    );
    let changed_routes = diff["routes"]["changed"].as_array().expect("changed");
    assert_eq!(changed_routes.len(), 1, "{body}");
    assert_eq!(changed_routes[0][1]["source"]["name"], "orders");

    // A version pasted unencoded: its `+` arrives as a space.
    let (code, body, _) = get(&f.state, "/api/v1/diff?from=c0ffee1+e0&to=d00d003%2Be0").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["from"], "c0ffee1+e0");

    let (code, body, _) = get(&f.state, "/api/v1/diff?from=c0ffee1").await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body, _) = get(&f.state, "/api/v1/diff?from=c0ffee1&to=nothere").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("?to="), "{body}");
}

#[tokio::test]
async fn one_revision_by_id_or_prefix_404_until_processed() {
    let f = fixture();
    accepted_then_rejected(&f).await;

    let (code, body, _) = get(&f.state, "/api/v1/revisions/badbad2").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let rejected = json(&body);
    assert_eq!(rejected["result"], "rejected", "{body}");
    assert!(rejected["errors"][0]["message"].is_string(), "{body}");

    let (code, body, _) = get(&f.state, "/api/v1/revisions/c0f").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["result"], "accepted", "{body}");
    assert_eq!(json(&body)["snapshot"], "c0ffee1+e0", "{body}");

    // Not processed yet: what a deploy script's `curl --retry` waits through.
    let (code, body, _) = get(&f.state, "/api/v1/revisions/d00d003").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("not been processed"), "{body}");

    // A prefix two revisions share names both.
    let mut status = Status::clone(&f.status.borrow());
    status.record(attempt(
        "c0ffee9",
        "another",
        Outcome::Failed { reason: "x".into() },
    ));
    f.status.send_replace(Arc::new(status));
    let (code, body, _) = get(&f.state, "/api/v1/revisions/c0ffee").await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("c0ffee1") && body.contains("c0ffee9"),
        "{body}"
    );
}

#[tokio::test]
async fn diag_shows_the_serving_and_rejected_commits_escaped() {
    let f = fixture();
    let (code, html, headers) = get(&f.state, "/diag").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(html.contains("Nothing served yet"), "{html}");

    accepted_then_rejected(&f).await;
    let (_, html, _) = get(&f.state, "/diag").await;
    assert!(html.contains("id=serving"), "{html}");
    assert!(html.contains("add shop routes"));
    assert!(html.contains("Dev &lt;dev@example.com&gt;"));
    assert!(html.contains("id=rejected"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; break things"));
    assert!(html.contains("must start with &quot;/&quot; &lt;b&gt;here&lt;/b&gt;"));
    assert!(html.contains("mappings/shop.yaml:9:3"));
    // The page's only script is its own refresh toggle.
    assert_eq!(html.matches("<script>").count(), 1, "{html}");
    assert!(!html.contains("<b>here"));
    // The route table names each route's file and line.
    assert!(html.contains("prefix /users/"), "{html}");
    assert!(html.contains("<code>mappings/shop.yaml:1</code>"), "{html}");
    assert!(
        html.contains("<code>mappings/shop.yaml:11</code>"),
        "{html}"
    );
    assert_eq!(get(&f.state, "/").await.0, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn webhook_answers_by_the_sources_verdict() {
    let f = fixture();
    let post = |body: &'static str| {
        Request::post("/webhook")
            .header("x-hub-signature-256", "sha256=abc")
            .body(Body::from(body))
            .expect("request")
    };
    let (code, body, _) = send(&f.state, post("{}")).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");

    let mut state = f.state.clone();
    state.webhook = Some(Arc::new(|headers: &HeaderMap, body: &Bytes| {
        match (headers.get("x-hub-signature-256"), body.as_ref()) {
            (None, _) => WebhookOutcome::Unauthorized("no signature".into()),
            (Some(_), b"push") => WebhookOutcome::Triggered,
            (Some(_), b"ping") => WebhookOutcome::Ignored("a ping".into()),
            (Some(_), _) => WebhookOutcome::BadRequest("not a push event".into()),
        }
    }));
    assert_eq!(send(&state, post("push")).await.0, StatusCode::ACCEPTED);
    assert_eq!(send(&state, post("ping")).await.0, StatusCode::OK);
    let (code, body, _) = send(&state, post("junk")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("not a push event"));
    let unsigned = Request::post("/webhook")
        .body(Body::from("push"))
        .expect("request");
    assert_eq!(send(&state, unsigned).await.0, StatusCode::UNAUTHORIZED);
    // GET is not a webhook.
    assert_eq!(
        get(&state, "/webhook").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let huge = Request::post("/webhook")
        .header("x-hub-signature-256", "sha256=abc")
        .body(Body::from(vec![b'x'; MAX_WEBHOOK_BYTES + 1]))
        .expect("request");
    assert_eq!(send(&state, huge).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn unknown_paths_are_json_404s() {
    let f = fixture();
    let (code, body, _) = get(&f.state, "/api/v1/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(json(&body)["error"].is_string());
}

#[tokio::test]
async fn diag_lists_the_nodes_needing_attention_first_and_caps_the_table() {
    let f = fixture();
    f.store
        .publish(snapshot("c0ffee1", GOOD))
        .await
        .expect("consistent");
    let node = |id: &str| Node {
        id: id.into(),
        ..Node::default()
    };
    let in_sync = f.store.open_stream(&node("a-in-sync"), Protocol::Sotw);
    in_sync.synced(Some("c0ffee1+e0"));
    let lagging: Vec<_> = (0..MAX_NODE_ROWS_FOR_TEST)
        .map(|i| {
            f.store
                .open_stream(&node(&format!("lagging-{i:03}")), Protocol::Delta)
        })
        .collect();
    let (_, html, _) = get(&f.state, "/diag").await;
    assert!(html.contains("The first 500"), "{html}");
    assert!(html.contains("lagging-000") && html.contains("lagging-499"));
    assert!(
        !html.contains("a-in-sync"),
        "in-sync nodes come after the lagging ones"
    );
    assert_eq!(html.matches("<tr class=node>").count(), 500);
    drop((in_sync, lagging));
}

const MAX_NODE_ROWS_FOR_TEST: usize = 500;

#[tokio::test]
async fn diag_filters_routes_and_clusters() {
    let f = fixture();
    f.store
        .publish(snapshot("c0ffee1", GOOD))
        .await
        .expect("consistent");
    let (_, html, _) = get(&f.state, "/diag?q=ORDERS").await;
    assert!(html.contains("Routes (1 of 2)"), "{html}");
    assert!(html.contains("prefix /orders/"));
    assert!(!html.contains("prefix /users/"));
    assert!(html.contains("Clusters (1 of 2)"), "{html}");
    // By file:line too.
    let (_, html, _) = get(&f.state, "/diag?q=shop.yaml:1").await;
    assert!(html.contains("prefix /users/") && html.contains("prefix /orders/"));
    // The filter's own text goes back into the form, escaped.
    let (_, html, _) = get(&f.state, "/diag?q=%22%3E%3Cscript%3E").await;
    assert!(
        html.contains("value=\"&quot;&gt;&lt;script&gt;\""),
        "{html}"
    );
    assert!(html.contains("Routes (0 of 2)"));
}

#[tokio::test]
async fn a_halted_canary_rollout_shows_on_diag_status_and_metrics() {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::new(StoreConfig {
        metrics: Some(metrics.clone()),
        canary: Some(crate::snapshot::CanarySelector::try_new("cluster=canary").expect("selector")),
        ..StoreConfig::default()
    }));
    let (_status, rx) = watch::channel(Arc::new(Status::default()));
    let state = State::new(store.clone(), rx, metrics, None);
    store
        .publish(snapshot("c0ffee1", GOOD))
        .await
        .expect("consistent");
    let canary = store.open_stream(
        &Node {
            id: "canary-1".into(),
            cluster: "canary".into(),
            ..Node::default()
        },
        Protocol::Sotw,
    );
    let changed = GOOD.replace("/orders/", "/orders/v2/");
    store
        .publish(snapshot("d00d003", &changed))
        .await
        .expect("consistent");
    canary.sent(ResourceType::Route, "rds2", "d00d003+e0", "1");
    canary.nacked(
        ResourceType::Route,
        "rds2",
        "d00d003+e0",
        "route <regex> too long",
    );

    let (_, body, _) = get(&state, "/api/v1/status").await;
    let status = json(&body);
    assert_eq!(status["rollout"]["state"], "halted", "{body}");
    assert_eq!(status["rollout"]["node"], "canary-1");
    assert_eq!(
        status["serving"]["snapshot"], "c0ffee1+e0",
        "the fleet stays"
    );
    assert_eq!(status["latest_snapshot"], "d00d003+e0");

    let (_, html, _) = get(&state, "/diag").await;
    assert!(html.contains("canary rollout halted"), "{html}");
    assert!(html.contains("route &lt;regex&gt; too long"), "{html}");
    assert!(html.contains("<strong>canary</strong>"), "{html}");

    let (_, text, _) = get(&state, "/metrics").await;
    assert!(
        text.contains("attache_rollout_state{state=\"halted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("attache_rollout_state{state=\"idle\"} 0"),
        "{text}"
    );
    drop(canary);
}
