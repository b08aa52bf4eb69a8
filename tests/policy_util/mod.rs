//! Helpers for the traffic-policy tests (issue 7) through a real Envoy: a gateway built
//! in-process (config -> translate with test endpoints -> static bootstrap), scripted
//! HTTP backends (flaky, slow, failing, an HTTP auth server), gRPC servers for the
//! authorization and rate limit services, and raw HTTP/1.1 requests with a body.
//!
//! Everything listens on 127.0.0.1 only; every wait is bounded in count and time.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attache::config::{self, Options};
use attache::endpoints::{Endpoint, EndpointHealth, Endpoints, ServiceKey};
use serde_json::Value;

use super::util::{self, EnvoyProcess, Response};

/// A running gateway: Envoy on the static bootstrap of one test's config.
pub struct Gateway {
    /// The HTTP listener, on 127.0.0.1.
    pub addr: SocketAddr,
    pub envoy: EnvoyProcess,
    /// The test's temp dir (`{DIR}` in the config stands for it).
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Loads `config` (YAML; `{DIR}` is replaced by the test's temp dir) beside a Listener
    /// on a free port, translates it with `services` as the endpoints of Kubernetes
    /// Services in namespace `default` (by name, default port), renders the static
    /// bootstrap as JSON (the path `attache render --bootstrap` takes) and starts Envoy on
    /// it. `None` when there is no Envoy outside CI.
    pub fn start(config: &str, services: &[(&str, Vec<SocketAddr>)]) -> Option<Gateway> {
        let envoy_bin = util::envoy_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = util::free_port();
        let admin_port = util::free_port();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).expect("create repo dir");
        std::fs::write(repo.join("listener.yaml"), util::listener_yaml(port))
            .expect("write listener");
        let config = config.replace("{DIR}", &dir.path().display().to_string());
        std::fs::write(repo.join("gateway.yaml"), config).expect("write config");
        let outcome = config::load_dir(&repo, &Options::default()).expect("readable repo");
        let rendered: Vec<String> = outcome.diagnostics.iter().map(|d| d.to_string()).collect();
        let (config, _) = outcome
            .into_result()
            .unwrap_or_else(|_| panic!("test config is invalid:\n{}", rendered.join("\n")));
        let mut endpoints = Endpoints::default();
        for (name, addrs) in services {
            let key = ServiceKey {
                namespace: "default".to_owned(),
                name: (*name).to_owned(),
                port: String::new(),
            };
            let list = addrs
                .iter()
                .map(|a| Endpoint {
                    ip: a.ip(),
                    port: a.port(),
                    health: EndpointHealth::Healthy,
                    zone: None,
                })
                .collect();
            endpoints.services.insert(key, list);
        }
        let resources = attache::translate::translate(&config, &endpoints);
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let mut bootstrap =
            attache::render::bootstrap_document(&resources, Some(admin)).expect("renders");
        loopback_only(&mut bootstrap);
        let path = dir.path().join("envoy.json");
        std::fs::write(&path, bootstrap.to_string()).expect("write bootstrap");
        let envoy = EnvoyProcess::start(&envoy_bin, &path, admin_port);
        Some(Gateway {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            envoy,
            dir,
        })
    }

    /// A bodiless request through Envoy.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        util::http_request(self.addr, method, "example.com", path, headers).unwrap_or_else(|e| {
            panic!(
                "{method} {path} through Envoy failed: {e}\n{}",
                self.envoy.log()
            )
        })
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers)
    }

    /// The sum of every admin stat whose name ends with `suffix` (cluster names carry a
    /// policy hash, so tests match on the stat's own name).
    pub fn stat_sum(&self, suffix: &str) -> u64 {
        let path = format!("/stats?filter={suffix}$");
        let Ok(resp) = util::http_get(self.envoy.admin, "localhost", &path, &[]) else {
            return 0;
        };
        resp.body_text()
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(name, _)| name.ends_with(suffix))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }
}

/// Translation binds listeners to 0.0.0.0; tests bind them to 127.0.0.1.
fn loopback_only(bootstrap: &mut Value) {
    let listeners = bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .expect("the bootstrap has listeners");
    for listener in listeners {
        listener["address"]["socket_address"]["address"] = Value::from("127.0.0.1");
    }
}

/// A request with a body over a fresh connection, HTTP/1.1, 5 s timeout.
pub fn http_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    util::parse_response(&raw)
}

/// What a [`Scripted`] backend answers: status, extra headers, body, and how long to wait
/// before answering.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }
}

/// A request as a [`Scripted`] backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// An HTTP/1.1 backend whose answer to the n-th request (0-based) is a function of n and
/// the request. Runs until dropped; keeps every request it saw.
pub struct Scripted {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

type Script = dyn Fn(u64, &Seen) -> Reply + Send + Sync;

impl Scripted {
    pub fn start(script: impl Fn(u64, &Seen) -> Reply + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let (stop2, hits2, seen2) = (stop.clone(), hits.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (hits, seen, script) = (hits2.clone(), seen2.clone(), script.clone());
                        std::thread::spawn(move || serve(stream, &hits, &seen, &*script));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Scripted {
            addr,
            hits,
            seen,
            stop,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, hits: &AtomicU64, seen: &Mutex<Vec<Seen>>, script: &Script) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    for _ in 0..10_000 {
        let Some(head) = util::read_head(&mut stream, &mut buf) else {
            return;
        };
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split_whitespace();
        let method = request_line.next().unwrap_or_default().to_owned();
        let path = request_line.next().unwrap_or_default().to_owned();
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let body: Vec<u8> = if chunked {
            // Read through the last chunk, then decode.
            while !buf.windows(5).any(|w| w == b"0\r\n\r\n") {
                if util::read_more(&mut stream, &mut buf).is_none() {
                    return;
                }
            }
            let end = buf
                .windows(5)
                .position(|w| w == b"0\r\n\r\n")
                .map_or(buf.len(), |p| p + 5);
            let raw: Vec<u8> = buf.drain(..end).collect();
            let mut response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            response.extend_from_slice(&raw);
            util::parse_response(&response)
                .map(|r| r.body)
                .unwrap_or_default()
        } else {
            if !util::fill_to(&mut stream, &mut buf, length) {
                return;
            }
            buf.drain(..length).collect()
        };
        let request = Seen {
            method,
            path,
            headers,
            body,
        };
        let n = hits.fetch_add(1, Ordering::SeqCst);
        seen.lock().expect("not poisoned").push(request.clone());
        let reply = script(n, &request);
        std::thread::sleep(reply.delay);
        let mut response = format!(
            "HTTP/1.1 {} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&reply.body);
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
        if request
            .headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return;
        }
    }
}

/// A mapping document in namespace `default`.
pub fn mapping(name: &str, spec: &str) -> String {
    resource("getambassador.io/v3alpha1", "Mapping", name, spec)
}

/// Any resource document in namespace `default`.
pub fn resource(api_version: &str, kind: &str, name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "---
apiVersion: {api_version}
kind: {kind}
metadata:
  name: {name}
  namespace: default
spec:
{spec}"
    )
}

/// A tonic server on a free loopback port, on its own runtime thread; stops when dropped.
pub struct GrpcServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcServer {
    /// Serves `router` (a `tonic::transport::server::Router`) built by `build`.
    pub fn start(
        build: impl FnOnce() -> tonic::transport::server::Router + Send + 'static,
    ) -> GrpcServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind gRPC server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = build()
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        GrpcServer {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
