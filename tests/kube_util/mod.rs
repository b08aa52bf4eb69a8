//! A fake Kubernetes API server on 127.0.0.1 for the endpoint watcher's tests and the
//! load benchmark: Services and `discovery.k8s.io/v1` EndpointSlices in the real wire
//! format, so attache talks to it through a kubeconfig exactly as to a cluster.
//!
//! It serves, for both kinds, cluster-wide and namespaced paths:
//! - list: `{"kind":"…List","metadata":{"resourceVersion":"N"},"items":[…]}`; `limit` is
//!   ignored (as the API server does when it serves from its watch cache), and a list at
//!   an explicit `resourceVersion` older than the compacted history is `410 Gone`;
//! - watch (`?watch=true&resourceVersion=N`): chunked, newline-delimited JSON events
//!   (`ADDED`, `MODIFIED`, `DELETED`, and `BOOKMARK` every 200 ms with
//!   `allowWatchBookmarks=true`), replaying history after `N` first; a watch from a
//!   version older than the compacted history gets what the real server sends, an
//!   `ERROR` event holding a `Status` with code 410, and the stream ends;
//! - `timeoutSeconds` ends a watch cleanly, as the server does;
//! - `labelSelector` with `key` and `key=value` terms.
//!
//! Tests break things on purpose: [`FakeApi::drop_watches`] cuts every open watch in
//! the middle of an event (a dropped connection), [`FakeApi::expire_watches`] sends
//! every open watch a 410 and forgets the history (etcd compaction), so the watcher has
//! to re-list.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// The two kinds the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }
}

/// One stored change, as watchers receive it.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    namespace: String,
    labels: BTreeMap<String, String>,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    kind_of_event: &'static str,
    object: Value,
}

/// What a test does to open watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disruption {
    None,
    /// Cut the connection in the middle of an event.
    Drop,
    /// Send `ERROR` 410 and end the stream.
    Expire,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: VecDeque<Arc<Change>>,
    /// Changes at or below this version are forgotten.
    compacted: u64,
}

/// Requests served, by kind, for tests that check a re-list happened.
#[derive(Debug, Default)]
pub struct Counters {
    pub lists: [AtomicU64; 2],
    pub watches: [AtomicU64; 2],
    pub gone: AtomicU64,
}

struct Shared {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<Change>>,
    disrupt: watch::Sender<(u64, Disruption)>,
    counters: Counters,
    /// Longest history kept for replay.
    history_limit: usize,
}

/// The fake API server, stopped when dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone)]
pub struct Ep {
    pub ip: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub zone: Option<String>,
}

impl Ep {
    /// A ready endpoint.
    pub fn ready(ip: impl Into<String>) -> Ep {
        Ep {
            ip: ip.into(),
            ready: true,
            serving: true,
            terminating: false,
            zone: None,
        }
    }

    /// Failing its readiness probe: neither ready nor serving.
    pub fn not_ready(ip: impl Into<String>) -> Ep {
        Ep {
            ready: false,
            serving: false,
            ..Ep::ready(ip)
        }
    }

    /// Shutting down but still serving.
    pub fn terminating(ip: impl Into<String>) -> Ep {
        Ep {
            ready: false,
            serving: true,
            terminating: true,
            ..Ep::ready(ip)
        }
    }
}

impl FakeApi {
    /// Starts the server on 127.0.0.1:0.
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (changes, _) = broadcast::channel(65_536);
        let (disrupt, _) = watch::channel((0, Disruption::None));
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rv: 1000,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                compacted: 0,
            }),
            changes,
            disrupt,
            counters: Counters::default(),
            history_limit: 100_000,
        });
        let router = Router::new()
            .route("/version", get(version))
            .route("/api/v1/services", get(all_services))
            .route("/api/v1/namespaces/{ns}/services", get(ns_services))
            .route("/apis/discovery.k8s.io/v1/endpointslices", get(all_slices))
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                get(ns_slices),
            )
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeApi { addr, shared, task }
    }

    /// Writes a kubeconfig that points at this server (plain HTTP, no credentials) to
    /// `dir/kubeconfig` and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// The requests served so far.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Creates or replaces an object; returns its new resource version.
    pub fn apply(&self, kind: Kind, mut object: Value) -> u64 {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .expect("metadata.namespace")
            .to_owned();
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .expect("metadata.name")
            .to_owned();
        let mut inner = self.shared.inner.lock();
        inner.rv += 1;
        let rv = inner.rv;
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.name());
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (kind, namespace.clone(), name);
        let event = if inner.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        inner.objects.insert(key, object.clone());
        self.record(&mut inner, kind, namespace, event, object);
        rv
    }

    /// Deletes an object if it exists.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        let mut inner = self.shared.inner.lock();
        let key = (kind, namespace.to_owned(), name.to_owned());
        let Some(mut object) = inner.objects.remove(&key) else {
            return;
        };
        inner.rv += 1;
        object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        self.record(&mut inner, kind, namespace.to_owned(), "DELETED", object);
    }

    fn record(
        &self,
        inner: &mut Inner,
        kind: Kind,
        namespace: String,
        event: &'static str,
        object: Value,
    ) {
        let labels = labels_of(&object);
        let change = Arc::new(Change {
            rv: inner.rv,
            kind,
            namespace,
            labels,
            kind_of_event: event,
            object,
        });
        inner.history.push_back(change.clone());
        while inner.history.len() > self.shared.history_limit {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted = old.rv;
            }
        }
        // Sent under the lock, so a watch that read the history under it misses nothing.
        let _ = self.shared.changes.send(change);
    }

    /// A Service with TCP `ports` as (name, port, targetPort).
    pub fn apply_service(&self, namespace: &str, name: &str, ports: &[(&str, u16, u16)]) -> u64 {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(n, p, t)| {
                let mut port = json!({"port": p, "targetPort": t, "protocol": "TCP"});
                if !n.is_empty() {
                    port["name"] = json!(n);
                }
                port
            })
            .collect();
        self.apply(
            Kind::Service,
            json!({
                "metadata": {"namespace": namespace, "name": name},
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": ports}
            }),
        )
    }

    /// An EndpointSlice of Service `service` with TCP `ports` as (name, port).
    pub fn apply_slice(
        &self,
        namespace: &str,
        name: &str,
        service: &str,
        ports: &[(&str, u16)],
        endpoints: &[Ep],
    ) -> u64 {
        self.apply(
            Kind::EndpointSlice,
            slice_object(namespace, name, service, ports, endpoints),
        )
    }

    /// Cuts every open watch connection in the middle of an event.
    pub fn drop_watches(&self) {
        self.shared.disrupt.send_modify(|(n, d)| {
            *n += 1;
            *d = Disruption::Drop;
        });
    }

    /// Compacts the history (every version so far becomes too old) and sends every open
    /// watch an `ERROR` 410, as the API server does when a watcher falls behind.
    pub fn expire_watches(&self) {
        {
            let mut inner = self.shared.inner.lock();
            inner.compacted = inner.rv;
            inner.history.clear();
        }
        self.shared.disrupt.send_modify(|(n, d)| {
            *n += 1;
            *d = Disruption::Expire;
        });
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.inner.lock().rv
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An EndpointSlice object in the API's JSON form.
pub fn slice_object(
    namespace: &str,
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: &[Ep],
) -> Value {
    let ipv6 = endpoints.first().is_some_and(|e| e.ip.contains(':'));
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
        .collect();
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            let mut v = json!({
                "addresses": [e.ip],
                "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": format!("{service}-{}", e.ip.replace([':', '.'], "-"))}
            });
            if let Some(zone) = &e.zone {
                v["zone"] = json!(zone);
            }
            v
        })
        .collect();
    json!({
        "metadata": {
            "namespace": namespace,
            "name": name,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            }
        },
        "addressType": if ipv6 { "IPv6" } else { "IPv4" },
        "ports": ports,
        "endpoints": endpoints
    })
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// `key` and `key=value` terms, comma-separated, all of which must hold.
fn selector_matches(selector: Option<&str>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => labels.get(k.trim_end_matches('=')).map(String::as_str) == Some(v),
        None => labels.contains_key(term),
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

async fn version() -> impl IntoResponse {
    axum::Json(json!({
        "major": "1", "minor": "34", "gitVersion": "v1.34.0-fake", "gitCommit": "",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64"
    }))
}

type Params = Query<HashMap<String, String>>;

async fn all_services(State(s): State<Arc<Shared>>, Query(q): Params) -> Response {
    serve(s, Kind::Service, None, q)
}

async fn ns_services(
    State(s): State<Arc<Shared>>,
    UrlPath(ns): UrlPath<String>,
    Query(q): Params,
) -> Response {
    serve(s, Kind::Service, Some(ns), q)
}

async fn all_slices(State(s): State<Arc<Shared>>, Query(q): Params) -> Response {
    serve(s, Kind::EndpointSlice, None, q)
}

async fn ns_slices(
    State(s): State<Arc<Shared>>,
    UrlPath(ns): UrlPath<String>,
    Query(q): Params,
) -> Response {
    serve(s, Kind::EndpointSlice, Some(ns), q)
}

fn serve(
    shared: Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    q: HashMap<String, String>,
) -> Response {
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        watch_response(shared, kind, namespace, q)
    } else {
        list_response(&shared, kind, namespace.as_deref(), &q)
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn list_response(
    shared: &Shared,
    kind: Kind,
    namespace: Option<&str>,
    q: &HashMap<String, String>,
) -> Response {
    shared.counters.lists[kind as usize].fetch_add(1, Ordering::Relaxed);
    let inner = shared.inner.lock();
    let asked: Option<u64> = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0);
    if let Some(asked) = asked
        && asked <= inner.compacted
    {
        shared.counters.gone.fetch_add(1, Ordering::Relaxed);
        let message = format!(
            "too old resource version: {asked} ({})",
            inner.compacted + 1
        );
        return json_response(StatusCode::GONE, &status(410, "Expired", &message));
    }
    let selector = q.get("labelSelector").map(String::as_str);
    let items: Vec<Value> = inner
        .objects
        .iter()
        .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
        .filter(|(_, o)| selector_matches(selector, &labels_of(o)))
        .map(|(_, o)| {
            // List items carry no kind or apiVersion, as in the real API.
            let mut o = o.clone();
            if let Some(map) = o.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            o
        })
        .collect();
    let body = json!({
        "kind": format!("{}List", kind.name()),
        "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items
    });
    json_response(StatusCode::OK, &body)
}

fn line(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

fn watch_response(
    shared: Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    q: HashMap<String, String>,
) -> Response {
    shared.counters.watches[kind as usize].fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1024);
    let selector = q.get("labelSelector").cloned();
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(3600), Duration::from_secs);
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // History after `from`, and the live feed, taken under one lock: nothing in between.
    let (backlog, mut live, gone, start) = {
        let inner = shared.inner.lock();
        let live = shared.changes.subscribe();
        if from != 0 && from < inner.compacted {
            (Vec::new(), live, Some(inner.compacted), from)
        } else {
            // Watching from "0" or nothing starts at the current state.
            let start = if from == 0 { inner.rv } else { from };
            let backlog: Vec<Arc<Change>> = inner
                .history
                .iter()
                .filter(|c| c.rv > start)
                .cloned()
                .collect();
            (backlog, live, None, start)
        }
    };
    let mut disrupt = shared.disrupt.subscribe();
    disrupt.mark_unchanged();
    let matches = move |c: &Change| {
        c.kind == kind
            && namespace.as_deref().is_none_or(|n| n == c.namespace)
            && selector_matches(selector.as_deref(), &c.labels)
    };
    let bookmark = move |rv: u64| {
        line(&json!({
            "type": "BOOKMARK",
            "object": {"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": {"resourceVersion": rv.to_string()}}
        }))
    };
    let expired = move |compacted: u64| {
        shared.counters.gone.fetch_add(1, Ordering::Relaxed);
        line(&json!({
            "type": "ERROR",
            "object": status(410, "Expired", &format!("too old resource version: {from} ({})", compacted + 1))
        }))
    };
    tokio::spawn(async move {
        if let Some(compacted) = gone {
            let _ = tx.send(Ok(expired(compacted))).await;
            return;
        }
        let event = |c: &Change| line(&json!({"type": c.kind_of_event, "object": c.object}));
        let mut last_rv = start;
        for change in backlog.iter().filter(|c| matches(c)) {
            last_rv = change.rv;
            if tx.send(Ok(event(change))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                () = tx.closed() => return,
                changed = disrupt.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let what = disrupt.borrow_and_update().1;
                    match what {
                        Disruption::Drop => {
                            // Half an event, then the connection breaks.
                            let _ = tx.send(Ok(Bytes::from_static(b"{\"type\":\"MODIFIED\",\"object\":{\"kind\""))).await;
                            let _ = tx.send(Err(std::io::Error::other("connection dropped by the test"))).await;
                            return;
                        }
                        Disruption::Expire => {
                            let _ = tx.send(Ok(expired(last_rv))).await;
                            return;
                        }
                        Disruption::None => {}
                    }
                }
                received = live.recv() => match received {
                    Ok(change) => {
                        last_rv = last_rv.max(change.rv);
                        if matches(&change) && tx.send(Ok(event(&change))).await.is_err() {
                            return;
                        }
                    }
                    // A watcher that cannot keep up is told to re-list, like the real one.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Ok(expired(last_rv))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(bookmark(last_rv))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .expect("a valid response")
}
