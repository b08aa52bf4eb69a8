//! Mapping traffic policies through a real Envoy (issue 7, "Tests that must exist"):
//! retries, circuit breaker overflow, outlier ejection, CORS, shadowing, ring-hash
//! affinity, local rate limits, the Module's server name and JSON access log, Zipkin
//! spans at a TracingService's collector and access log entries at a LogService (a gRPC
//! server on envoy-types' AccessLogService).
//!
//! One Envoy serves every check (starting Envoy is the slow part); each check has its own
//! Mapping, path prefix and backends, so they do not disturb each other.
mod policy_util;
mod util;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::{
    AccessLogService, AccessLogServiceServer,
};
use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse, stream_access_logs_message,
};
use policy_util::{Gateway, GrpcServer, Reply, Scripted, mapping, resource};
use util::Backend;

/// Request paths from every HTTP access log entry Envoy streamed.
#[derive(Default)]
struct AccessLogs {
    paths: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl AccessLogService for AccessLogs {
    async fn stream_access_logs(
        &self,
        request: tonic::Request<tonic::Streaming<StreamAccessLogsMessage>>,
    ) -> Result<tonic::Response<StreamAccessLogsResponse>, tonic::Status> {
        let mut stream = request.into_inner();
        while let Some(message) = stream.message().await? {
            if let Some(stream_access_logs_message::LogEntries::HttpLogs(logs)) =
                message.log_entries
            {
                let mut paths = self.paths.lock().expect("not poisoned");
                paths.extend(
                    logs.log_entry
                        .iter()
                        .filter_map(|e| e.request.as_ref())
                        .map(|r| r.path.clone()),
                );
            }
        }
        Ok(tonic::Response::new(StreamAccessLogsResponse::default()))
    }
}

/// The backends behind the gateway, kept alive for the whole test.
struct Backends {
    flaky: Scripted,
    slow: Scripted,
    pool_bad: Scripted,
    pool_good: Vec<Backend>,
    sticky: Vec<Backend>,
    main: Backend,
    mirror: Backend,
    cors: Backend,
    limited: Backend,
    zipkin: Scripted,
    als: GrpcServer,
    als_paths: Arc<Mutex<Vec<String>>>,
}

fn backends() -> Backends {
    let logs = AccessLogs::default();
    let als_paths = logs.paths.clone();
    let als = GrpcServer::start(move || {
        tonic::transport::Server::builder().add_service(AccessLogServiceServer::new(logs))
    });
    Backends {
        // Fails the first two requests, then serves.
        flaky: Scripted::start(|n, _| {
            if n < 2 {
                Reply::new(503, "not yet")
            } else {
                Reply::new(200, "flaky ok")
            }
        }),
        slow: Scripted::start(|_, _| Reply {
            delay: Duration::from_millis(1500),
            ..Reply::new(200, "slow ok")
        }),
        pool_bad: Scripted::start(|_, _| Reply::new(503, "always failing")),
        pool_good: vec![Backend::start("good-1"), Backend::start("good-2")],
        sticky: vec![
            Backend::start("sticky-a"),
            Backend::start("sticky-b"),
            Backend::start("sticky-c"),
        ],
        main: Backend::start("main"),
        mirror: Backend::start("mirror"),
        cors: Backend::start("cors"),
        limited: Backend::start("limited"),
        zipkin: Scripted::start(|_, _| Reply::new(202, "")),
        als,
        als_paths,
    }
}

fn config(b: &Backends) -> String {
    [
        mapping(
            "retry",
            &format!(
                "prefix: /retry/
service: {}
retry_policy:
  retry_on: 5xx
  num_retries: 2",
                b.flaky.addr
            ),
        ),
        mapping(
            "breaker",
            &format!(
                "prefix: /breaker/
service: {}
timeout_ms: 10000
circuit_breakers:
  - max_connections: 1
    max_pending_requests: 1
    max_requests: 1",
                b.slow.addr
            ),
        ),
        mapping(
            "pool",
            "prefix: /pool/
service: pool
outlier_detection:
  consecutive_5xx: 2
  interval_ms: 10000
  base_ejection_time_ms: 60000
  max_ejection_percent: 50",
        ),
        mapping(
            "sticky",
            "prefix: /sticky/
service: sticky
load_balancer:
  policy: ring_hash
  header: x-user",
        ),
        mapping(
            "main",
            &format!("prefix: /shadow/\nservice: {}", b.main.addr),
        ),
        mapping(
            "main-mirror",
            &format!("prefix: /shadow/\nservice: {}\nshadow: true", b.mirror.addr),
        ),
        mapping(
            "cors",
            &format!(
                "prefix: /cors/
service: {}
cors:
  origins: https://app.example.com,^https://[a-z]+\\.example\\.org$
  methods: GET, POST
  headers: x-custom
  exposed_headers: x-backend
  credentials: true
  max_age: \"600\"",
                b.cors.addr
            ),
        ),
        mapping(
            "limited",
            &format!("prefix: /limited/\nservice: {}", b.limited.addr),
        ),
        resource(
            "attache.io/v1",
            "LocalRateLimit",
            "limited-burst",
            "mappings: [limited]
max_tokens: 3
tokens_per_fill: 3
fill_interval: 1h",
        ),
        resource(
            "getambassador.io/v3alpha1",
            "TracingService",
            "zipkin",
            &format!(
                "service: {}
driver: zipkin
config:
  collector_endpoint: /api/v2/spans",
                b.zipkin.addr
            ),
        ),
        resource(
            "getambassador.io/v3alpha1",
            "LogService",
            "als",
            &format!(
                "service: {}\ndriver: http\nflush_interval_time: 1",
                b.als.addr
            ),
        ),
        resource(
            "getambassador.io/v3alpha1",
            "Module",
            "ambassador",
            "config:
  server_name: attache-test
  enable_http10: true
  merge_slashes: true
  max_request_headers_kb: 8
  buffer:
    max_request_bytes: 1024
  envoy_log_path: {DIR}/access.log
  envoy_log_type: json
  envoy_log_format:
    method: \"%REQ(:METHOD)%\"
    path: \"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\"
    status: \"%RESPONSE_CODE%\"",
        ),
    ]
    .concat()
}

fn addrs(backends: &[Backend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

#[test]
fn mapping_policies_through_envoy() {
    let b = backends();
    let mut pool = addrs(&b.pool_good);
    pool.push(b.pool_bad.addr);
    let services = [("pool", pool), ("sticky", addrs(&b.sticky))];
    let Some(gateway) = Gateway::start(&config(&b), &services) else {
        return;
    };
    retries_hide_two_failures(&gateway, &b);
    breaker_overflow_is_503_with_the_overflow_stat(&gateway);
    outlier_detection_ejects_the_failing_endpoint(&gateway, &b);
    ring_hash_keeps_a_users_requests_on_one_backend(&gateway);
    shadow_traffic_reaches_the_mirror(&gateway, &b);
    cors_preflight_and_actual_request(&gateway, &b);
    local_rate_limit_429s_the_request_past_the_bucket(&gateway, &b);
    module_server_name_and_json_access_log(&gateway);
    spans_reach_the_zipkin_collector(&gateway, &b);
    entries_reach_the_access_log_service(&gateway, &b);
}

/// The status line and headers of an HTTP/1.0 GET.
fn http10(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request = format!("GET {path} HTTP/1.0\r\nHost: example.com\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

fn spans_reach_the_zipkin_collector(gateway: &Gateway, b: &Backends) {
    // Envoy flushes spans every 5 s, or sooner once it has a few.
    let posted = gateway.envoy.eventually(Duration::from_secs(15), || {
        b.zipkin
            .seen()
            .iter()
            .any(|s| s.method == "POST" && s.path == "/api/v2/spans")
    });
    assert!(posted, "the collector saw {:?}", b.zipkin.seen().len());
    let spans: Vec<String> = b
        .zipkin
        .seen()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    let all = spans.concat();
    assert!(all.contains("/cors/items"), "spans: {all}");
    let parsed: serde_json::Value = serde_json::from_str(&spans[0]).expect("JSON spans");
    assert!(parsed.as_array().is_some_and(|a| !a.is_empty()), "{parsed}");
}

fn entries_reach_the_access_log_service(gateway: &Gateway, b: &Backends) {
    // The local rate limit's 429 never reached an upstream, so its path is as sent.
    let logged = gateway.envoy.eventually(Duration::from_secs(10), || {
        b.als_paths
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|p| p == "/limited/3")
    });
    let paths = b.als_paths.lock().expect("not poisoned").clone();
    assert!(logged, "the access log service saw {paths:?}");
}

fn retries_hide_two_failures(gateway: &Gateway, b: &Backends) {
    let response = gateway.get("/retry/x", &[]);
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_eq!(response.body_text(), "flaky ok");
    assert_eq!(
        b.flaky.hits(),
        3,
        "two failed tries and the one that served"
    );
    assert_eq!(gateway.stat_sum(".upstream_rq_retry"), 2);
}

fn breaker_overflow_is_503_with_the_overflow_stat(gateway: &Gateway) {
    // One request in flight and one pending fill the breaker; the rest overflow.
    let addr = gateway.addr;
    let threads: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                util::http_get(addr, "example.com", &format!("/breaker/{i}"), &[])
                    .map(|r| (r.status, r.header("x-envoy-overloaded").map(str::to_owned)))
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("request thread").expect("a response"))
        .collect();
    let overflowed: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert!(
        !overflowed.is_empty() && results.iter().any(|(s, _)| *s == 200),
        "{results:?}"
    );
    assert!(
        overflowed.iter().all(|(_, h)| h.as_deref() == Some("true")),
        "Envoy marks breaker 503s x-envoy-overloaded: {results:?}"
    );
    // Each 503 is counted as an overflow: of the pending queue, or of active requests
    // when it hit the breaker before queueing.
    let pending = gateway.stat_sum(".upstream_rq_pending_overflow");
    let active = gateway.stat_sum(".upstream_rq_active_overflow");
    assert!(pending >= 1, "{results:?}: pending overflow {pending}");
    assert_eq!(
        pending + active,
        overflowed.len() as u64,
        "{results:?}: pending {pending}, active {active}"
    );
}

fn outlier_detection_ejects_the_failing_endpoint(gateway: &Gateway, b: &Backends) {
    let mut statuses = Vec::new();
    for i in 0..30 {
        statuses.push(gateway.get(&format!("/pool/{i}"), &[]).status);
    }
    // Two consecutive 5xx eject the failing endpoint for a minute, and everything after
    // the ejection is served. The main thread ejects and then tells the workers, so one
    // more request may reach it on the way.
    assert!(b.pool_bad.hits() <= 3, "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        gateway.stat_sum(".outlier_detection.ejections_enforced_total") >= 1,
        "{statuses:?}"
    );
}

fn ring_hash_keeps_a_users_requests_on_one_backend(gateway: &Gateway) {
    let mut used = BTreeSet::new();
    // Twelve users: the chance that all land on one of three backends by accident (the
    // ring depends on the backends' random ports) is 3 / 3^12, about 6 in a million.
    let users = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
        "mallory", "niaj",
    ];
    for user in users {
        let mut backends = BTreeSet::new();
        for i in 0..5 {
            let response = gateway.get(&format!("/sticky/{i}"), &[("x-user", user)]);
            assert_eq!(response.status, 200, "{}", response.body_text());
            backends.insert(response.header("x-backend").unwrap_or_default().to_owned());
        }
        assert_eq!(backends.len(), 1, "{user} went to {backends:?}");
        used.extend(backends);
    }
    // Hashing spreads users over the ring (a constant would not).
    assert!(used.len() >= 2, "every user on {used:?}");
}

fn shadow_traffic_reaches_the_mirror(gateway: &Gateway, b: &Backends) {
    for i in 0..3 {
        let response = gateway.get(&format!("/shadow/{i}"), &[]);
        assert_eq!(response.header("x-backend"), Some("main"));
    }
    // Mirrored requests are sent alongside and their answers dropped: wait for them.
    let mirrored = gateway.envoy.eventually(Duration::from_secs(5), || {
        b.mirror.hits.load(std::sync::atomic::Ordering::Relaxed) == 3
    });
    assert!(mirrored, "the mirror saw {:?}", b.mirror.hits);
    assert_eq!(b.main.hits.load(std::sync::atomic::Ordering::Relaxed), 3);
}

fn cors_preflight_and_actual_request(gateway: &Gateway, b: &Backends) {
    let preflight = gateway.request(
        "OPTIONS",
        "/cors/items",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
    );
    assert_eq!(preflight.status, 200, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET,POST")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("x-custom")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("600"));
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    let hits = b.cors.hits.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(hits, 0, "Envoy answers a preflight itself");

    // The regex origin, on an actual request.
    let actual = gateway.get("/cors/items", &[("origin", "https://shop.example.org")]);
    assert_eq!(actual.status, 200);
    assert_eq!(actual.header("x-backend"), Some("cors"));
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://shop.example.org")
    );
    assert_eq!(
        actual.header("access-control-expose-headers"),
        Some("x-backend")
    );

    // An origin that is not allowed gets no CORS headers.
    let other = gateway.get("/cors/items", &[("origin", "https://evil.example.com")]);
    assert_eq!(other.header("access-control-allow-origin"), None);
}

fn local_rate_limit_429s_the_request_past_the_bucket(gateway: &Gateway, b: &Backends) {
    for i in 0..3 {
        let response = gateway.get(&format!("/limited/{i}"), &[]);
        assert_eq!(response.status, 200, "request {i}: {response:?}");
    }
    let limited = gateway.get("/limited/3", &[]);
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.header("x-local-rate-limit"), Some("true"));
    assert_eq!(limited.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(b.limited.hits.load(std::sync::atomic::Ordering::Relaxed), 3);
    // Other routes have no bucket.
    for i in 0..5 {
        assert_eq!(gateway.get(&format!("/cors/{i}"), &[]).status, 200);
    }
}

fn module_server_name_and_json_access_log(gateway: &Gateway) {
    let response = gateway.get("/cors/server", &[]);
    assert_eq!(response.header("server"), Some("attache-test"));
    // merge_slashes: `//cors//x` routes as `/cors/x`.
    let merged = gateway.get("//cors//merged", &[]);
    assert_eq!(merged.status, 200, "{merged:?}");
    assert!(
        merged.body_text().starts_with("cors /merged"),
        "{}",
        merged.body_text()
    );
    // enable_http10: an HTTP/1.0 request is served, not refused with 426.
    let old = http10(gateway.addr, "/cors/old");
    assert!(old.starts_with("HTTP/1.0 200"), "{old}");
    // max_request_headers_kb: 8 KiB of headers is the most Envoy reads.
    let big = "x".repeat(10 * 1024);
    let refused = gateway.get("/cors/big", &[("x-big", &big)]);
    assert_eq!(refused.status, 431, "{refused:?}");
    // buffer.max_request_bytes: a body over it is refused with 413, one under it served.
    let small = policy_util::http_with_body(gateway.addr, "POST", "/cors/small", &[], &[b'a'; 512])
        .expect("a response");
    assert_eq!(small.status, 200, "{small:?}");
    let large =
        policy_util::http_with_body(gateway.addr, "POST", "/cors/large", &[], &[b'a'; 4096])
            .expect("a response");
    assert_eq!(large.status, 413, "{large:?}");
    let log_path = gateway.dir.path().join("access.log");
    let mut lines = Vec::new();
    let logged = gateway.envoy.eventually(Duration::from_secs(10), || {
        lines = std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.iter().any(|l| l.contains("/cors/server"))
    });
    assert!(logged, "access log: {lines:?}");
    let entry: serde_json::Value = lines
        .iter()
        .find(|l| l.contains("/cors/server"))
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("a JSON access log line");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/cors/server");
    assert_eq!(entry["status"], 200);
}
