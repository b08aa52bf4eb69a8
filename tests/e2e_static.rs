//! Behaviour through a real Envoy: each test writes a gateway config into a temp dir,
//! renders it with `attache render --bootstrap`, starts Envoy on that static bootstrap and
//! sends requests to loopback backends through it. Issue 2, "Tests that must exist".
//!
//! Each test has its own config, ports, Envoy (distinct `--base-id`) and backends, so they
//! run in parallel. Only the request counts are bounded, never the time they take.
mod util;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use util::{Backend, EnvoyProcess, RenderedGateway, Response, http_request};

/// A running gateway: Envoy on the rendered bootstrap of one test's config.
struct Gateway {
    /// Where the HTTP listener is, on 127.0.0.1.
    addr: SocketAddr,
    envoy: EnvoyProcess,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Renders `config` (YAML) beside an HTTP Listener on a free port and starts Envoy on
    /// it. `None` when there is no Envoy binary outside CI (the skip is printed).
    fn start(config: &str) -> Option<Gateway> {
        let dir = tempfile::tempdir().expect("temp dir");
        let RenderedGateway { addr, envoy } =
            RenderedGateway::start(dir.path(), "HTTP", config, None)?;
        Some(Gateway {
            addr,
            envoy,
            _dir: dir,
        })
    }

    fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", host, path, headers)
    }

    fn request(&self, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        http_request(self.addr, method, host, path, headers).unwrap_or_else(|e| {
            panic!(
                "{method} {host}{path} through Envoy failed: {e}\n{}",
                self.envoy.log()
            )
        })
    }
}

/// Translation binds listeners to 0.0.0.0 (a gateway serves the network); tests bind
/// them to 127.0.0.1 so nothing is reachable from outside the machine.
/// `NAME PATH` from a backend's answer: which backend got the request, and at what path.
fn served_by(response: &Response) -> String {
    assert_eq!(response.status, 200, "{}", response.body_text());
    response
        .body_text()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn mapping(name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: {name}
  namespace: default
spec:
{spec}"
    )
}

fn host(name: &str, hostname: &str) -> String {
    format!(
        "---
apiVersion: getambassador.io/v3alpha1
kind: Host
metadata:
  name: {name}
  namespace: default
spec:
  hostname: {hostname}
"
    )
}

#[test]
fn prefix_match_and_rewrite() {
    let users = Backend::start("users");
    let plain = Backend::start("plain");
    let config = [
        mapping(
            "users",
            &format!(
                "prefix: /api/users/\nrewrite: /v2/users/\nservice: {}",
                users.addr
            ),
        ),
        // No rewrite: Emissary's default rewrites the prefix to `/`.
        mapping(
            "plain",
            &format!("prefix: /plain/\nservice: {}", plain.addr),
        ),
        mapping(
            "kept",
            &format!("prefix: /kept/\nrewrite: \"\"\nservice: {}", plain.addr),
        ),
    ]
    .concat();
    let Some(gateway) = Gateway::start(&config) else {
        return;
    };
    let host = "example.com";
    assert_eq!(
        served_by(&gateway.get(host, "/api/users/42?x=1", &[])),
        "users /v2/users/42?x=1"
    );
    assert_eq!(
        served_by(&gateway.get(host, "/plain/a/b", &[])),
        "plain /a/b"
    );
    assert_eq!(
        served_by(&gateway.get(host, "/kept/a", &[])),
        "plain /kept/a"
    );
    // A prefix matches whole path segments only by what it spells: /api/users (no
    // trailing slash) is not under /api/users/.
    assert_eq!(gateway.get(host, "/api/users", &[]).status, 404);
    assert_eq!(gateway.get(host, "/elsewhere", &[]).status, 404);
}

#[test]
fn header_and_method_match() {
    let reader = Backend::start("reader");
    let writer = Backend::start("writer");
    let admin = Backend::start("admin");
    let config = [
        mapping(
            "orders-write",
            &format!("prefix: /orders/\nmethod: POST\nservice: {}", writer.addr),
        ),
        mapping(
            "orders-admin",
            &format!(
                "prefix: /orders/\nheaders:\n  x-role: admin\nservice: {}",
                admin.addr
            ),
        ),
        mapping(
            "orders-ops",
            &format!(
                "prefix: /orders/\nregex_headers:\n  x-team: \"^(ops|sre)$\"\nservice: {}",
                admin.addr
            ),
        ),
        mapping(
            "orders-read",
            &format!("prefix: /orders/\nservice: {}", reader.addr),
        ),
    ]
    .concat();
    let Some(gateway) = Gateway::start(&config) else {
        return;
    };
    let host = "shop.example.com";
    assert_eq!(served_by(&gateway.get(host, "/orders/1", &[])), "reader /1");
    let post = gateway.request("POST", host, "/orders/1", &[("content-length", "0")]);
    assert_eq!(served_by(&post), "writer /1");
    let as_admin = gateway.get(host, "/orders/1", &[("x-role", "admin")]);
    assert_eq!(served_by(&as_admin), "admin /1");
    // Exact header match: a different value falls through to the plain route.
    let as_user = gateway.get(host, "/orders/1", &[("x-role", "user")]);
    assert_eq!(served_by(&as_user), "reader /1");
    let as_sre = gateway.get(host, "/orders/1", &[("x-team", "sre")]);
    assert_eq!(served_by(&as_sre), "admin /1");
    let as_dev = gateway.get(host, "/orders/1", &[("x-team", "dev-ops")]);
    assert_eq!(served_by(&as_dev), "reader /1");
}

#[test]
fn host_based_virtual_hosts() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let wild = Backend::start("wild");
    let config = [
        host("a", "a.example.com"),
        host("b", "b.example.com"),
        host("wild", "\"*.apps.example.com\""),
        mapping(
            "a",
            &format!("hostname: a.example.com\nprefix: /\nservice: {}", a.addr),
        ),
        mapping(
            "b",
            &format!("hostname: b.example.com\nprefix: /\nservice: {}", b.addr),
        ),
        mapping(
            "wild",
            &format!(
                "hostname: \"*.apps.example.com\"\nprefix: /\nservice: {}",
                wild.addr
            ),
        ),
    ]
    .concat();
    let Some(gateway) = Gateway::start(&config) else {
        return;
    };
    assert_eq!(served_by(&gateway.get("a.example.com", "/x", &[])), "a /x");
    assert_eq!(served_by(&gateway.get("b.example.com", "/x", &[])), "b /x");
    // The port in Host does not change the virtual host.
    let port = gateway.addr.port();
    let with_port = gateway.get(&format!("b.example.com:{port}"), "/x", &[]);
    assert_eq!(served_by(&with_port), "b /x");
    let wildcard = gateway.get("shop.apps.example.com", "/y", &[]);
    assert_eq!(served_by(&wildcard), "wild /y");
    // No Host serves this name.
    assert_eq!(gateway.get("c.example.com", "/x", &[]).status, 404);
    assert_eq!(a.hits.load(Ordering::Relaxed), 1);
    assert_eq!(b.hits.load(Ordering::Relaxed), 2);
}

#[test]
fn weighted_split_90_10() {
    let stable = Backend::start("stable");
    let canary = Backend::start("canary");
    let config = [
        mapping(
            "stable",
            &format!("prefix: /shop/\nweight: 90\nservice: {}", stable.addr),
        ),
        mapping(
            "canary",
            &format!("prefix: /shop/\nweight: 10\nservice: {}", canary.addr),
        ),
    ]
    .concat();
    let Some(gateway) = Gateway::start(&config) else {
        return;
    };
    const REQUESTS: u64 = 200;
    for i in 0..REQUESTS {
        let who = served_by(&gateway.get("example.com", &format!("/shop/{i}"), &[]));
        assert!(
            who == format!("stable /{i}") || who == format!("canary /{i}"),
            "{who}"
        );
    }
    let stable_hits = stable.hits.load(Ordering::Relaxed);
    let canary_hits = canary.hits.load(Ordering::Relaxed);
    assert_eq!(stable_hits + canary_hits, REQUESTS);
    // Expected 180; the bounds are about 5 standard deviations (sd ~ 4.2) wide.
    assert!(
        (150..=195).contains(&stable_hits),
        "stable got {stable_hits} of {REQUESTS}, canary {canary_hits}"
    );
}

#[test]
fn redirect_301_with_location() {
    let web = Backend::start("web");
    let config = [
        mapping(
            "blog-moved",
            "prefix: /blog/
host_redirect: true
service: blog.example.org
path_redirect: /moved
redirect_response_code: 301",
        ),
        mapping(
            "docs-moved",
            "prefix: /docs/
host_redirect: true
service: docs.example.org
prefix_redirect: /manual/",
        ),
        mapping(
            "web",
            &format!("prefix: /\nrewrite: \"\"\nservice: {}", web.addr),
        ),
    ]
    .concat();
    let Some(gateway) = Gateway::start(&config) else {
        return;
    };
    let moved = gateway.get("www.example.com", "/blog/2024/post", &[]);
    assert_eq!(moved.status, 301, "{}", moved.body_text());
    assert_eq!(
        moved.header("location"),
        Some("http://blog.example.org/moved")
    );
    let docs = gateway.get("www.example.com", "/docs/intro", &[]);
    // Envoy's default redirect code.
    assert_eq!(docs.status, 301, "{}", docs.body_text());
    assert_eq!(
        docs.header("location"),
        Some("http://docs.example.org/manual/intro")
    );
    assert_eq!(
        web.hits.load(Ordering::Relaxed),
        0,
        "redirects never reach a backend"
    );
    assert_eq!(
        served_by(&gateway.get("www.example.com", "/about", &[])),
        "web /about"
    );
}
