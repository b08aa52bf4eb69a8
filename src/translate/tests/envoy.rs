//! Does a real Envoy accept what translation produces? Every fixture repo, the example
//! repo and a model config using every feature go through `envoy --mode validate`
//! (see `render::testing` for how the binary is found, and when a missing one fails).

use super::{FIXTURE_SECRETS, crate_root, fixture_repos, load_dir, run};
use crate::config::*;
use crate::render::testing as envoy_check;
use crate::translate::testing::*;

#[test]
fn every_fixture_repo_passes_envoy_validate() {
    for repo in fixture_repos() {
        let resources = run(&load_dir(&repo, FIXTURE_SECRETS));
        if let Err(why) = envoy_check::validate_resources(&resources) {
            panic!("{}: {why}", repo.display());
        }
    }
}

#[test]
fn the_example_repo_passes_envoy_validate() {
    let repo = crate_root().join("example-repo");
    let resources = run(&load_dir(&repo, FIXTURE_SECRETS));
    assert!(!resources.listeners.is_empty());
    if let Err(why) = envoy_check::validate_resources(&resources) {
        panic!("{}: {why}", repo.display());
    }
}

/// Every Mapping field and Host setting at once, including the combinations that are
/// easiest to get wrong for Envoy: weighted clusters with per-cluster headers, redirects
/// beside routes, regex rewrites on regex routes, HTTP/2 over TLS with a client
/// certificate, every insecure action and listener protocol.
#[test]
fn a_config_using_every_feature_passes_envoy_validate() {
    let kv = |name: &str, value: ValueMatch| KeyValueMatch {
        name: name.into(),
        value,
    };
    let add = |name: &str, append| HeaderToAdd {
        name: name.into(),
        value: "v".into(),
        append,
    };
    let mut everything = Mapping {
        hostname: pattern("a.example.com"),
        case_sensitive: false,
        method: Some("PUT".into()),
        headers: vec![
            kv("x-present", ValueMatch::Present),
            kv("x-exact", ValueMatch::Exact("1".into())),
            kv("x-regex", ValueMatch::Regex("^[a-z]+$".into())),
        ],
        query_parameters: vec![
            kv("p", ValueMatch::Present),
            kv("q", ValueMatch::Exact("1".into())),
            kv("r", ValueMatch::Regex("[0-9]+".into())),
        ],
        precedence: 3,
        add_request_headers: vec![add("x-req", true), add("x-req2", false)],
        remove_request_headers: vec!["cookie".into()],
        add_response_headers: vec![add("x-res", false)],
        remove_response_headers: vec!["server".into()],
        ..mapping("everything", "/all/", "all")
    };
    let s = settings(&mut everything);
    s.timeout_ms = 0;
    s.idle_timeout_ms = Some(60_000);
    s.upgrades = vec!["websocket".into()];
    s.host_rewrite = Some("internal.example.com".into());
    s.target = Target {
        tls: UpstreamTls::Context("client".into()),
        http2: true,
        connect_timeout_ms: 250,
        ..address("upstream.example.com", 8443)
    };
    let mut regex = Mapping {
        path: PathMatch::Regex("^/orders/([0-9]+)$".into()),
        case_sensitive: false,
        ..mapping("regex", "/", "orders")
    };
    settings(&mut regex).target = address("10.0.0.1", 80);
    let mut regex_rewrite = mapping("regex-rewrite", "/legacy/", "legacy");
    settings(&mut regex_rewrite).rewrite = Rewrite::Regex {
        pattern: "^/legacy/(.*)$".into(),
        substitution: "/\\1".into(),
    };
    let mut exact = Mapping {
        path: PathMatch::Exact("/healthz".into()),
        ..mapping("exact", "/", "health")
    };
    settings(&mut exact).rewrite = Rewrite::Keep;
    let mut canary = Mapping {
        weight: Some(10),
        add_request_headers: vec![add("x-canary", true)],
        ..mapping("shop-canary", "/shop/", "shop-next")
    };
    settings(&mut canary).host_rewrite = Some("next.internal".into());
    settings(&mut canary).target = Target {
        tls: UpstreamTls::Tls,
        ..address("::1", 9443)
    };
    let redirect = |name: &str, prefix: &str, r: Redirect| Mapping {
        action: Action::Redirect(r),
        ..mapping(name, prefix, "unused")
    };
    let mappings = vec![
        everything,
        regex,
        regex_rewrite,
        exact,
        Mapping {
            weight: Some(90),
            ..mapping("shop", "/shop/", "shop")
        },
        canary,
        redirect(
            "moved",
            "/moved/",
            Redirect {
                host: Some("new.example.com".into()),
                path: None,
                prefix: Some("/new/".into()),
                response_code: 308,
            },
        ),
        Mapping {
            path: PathMatch::Regex("^/gone/.*".into()),
            ..redirect(
                "gone",
                "/",
                Redirect {
                    host: None,
                    path: None,
                    prefix: Some("/".into()),
                    response_code: 302,
                },
            )
        },
        redirect(
            "page",
            "/page",
            Redirect {
                host: Some("pages.example.com".into()),
                path: Some("/index.html".into()),
                prefix: None,
                response_code: 307,
            },
        ),
    ];
    let hosts = vec![
        Host {
            insecure_action: InsecureAction::Redirect,
            ..tls_host("a", "a.example.com", "example-cert")
        },
        Host {
            insecure_action: InsecureAction::Reject,
            ..tls_host("wild", "*.example.com", "example-cert")
        },
        Host {
            insecure_action: InsecureAction::Route,
            tls_context: Some("modern".into()),
            ..tls_host("b", "b.example.com", "other-cert")
        },
        host("plain", "plain.example.org"),
    ];
    let mut cfg = with_secret(
        with_secret(
            with_secret(config(mappings, hosts), "example-cert"),
            "other-cert",
        ),
        "client-cert",
    );
    cfg.tls_contexts = vec![
        TlsContext {
            secret: Some("client-cert".into()),
            alpn_protocols: vec!["h2".into()],
            min_tls_version: Some(TlsVersion::V1_2),
            ..tls_context("client")
        },
        TlsContext {
            min_tls_version: Some(TlsVersion::V1_2),
            max_tls_version: Some(TlsVersion::V1_3),
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            cipher_suites: vec!["ECDHE-RSA-AES128-GCM-SHA256".into()],
            ..tls_context("modern")
        },
    ];
    cfg.listeners = vec![
        listener("http", 8080, Protocol::Http),
        Listener {
            security_model: SecurityModel::Insecure,
            ..listener("insecure", 8081, Protocol::Http)
        },
        Listener {
            security_model: SecurityModel::Secure,
            ..listener("https", 8443, Protocol::Https)
        },
        listener("proxy", 9000, Protocol::HttpsProxy),
    ];
    sort(&mut cfg);
    let resources = run(&cfg);
    assert_eq!(resources.listeners.len(), 4);
    if let Err(why) = envoy_check::validate_resources(&resources) {
        panic!("{why}");
    }
}

/// The check itself must be able to fail: a cluster Envoy refuses (no name) is refused.
#[test]
fn envoy_validate_rejects_a_broken_config() {
    if envoy_check::envoy_binary().is_none() {
        return;
    }
    let mut resources = run(&config(vec![mapping("a", "/", "a")], Vec::new()));
    resources.clusters[0].name = String::new();
    let why = envoy_check::validate_resources(&resources).expect_err("a cluster without a name");
    assert!(why.contains("ClusterValidationError.Name"), "{why}");
}

/// Two Mappings with the same match and the same service (an A/B test that differs only
/// in the headers each adds) put one cluster twice into the weighted clusters.
#[test]
fn weighted_members_with_one_target_pass_envoy_validate() {
    let a = Mapping {
        weight: Some(50),
        add_request_headers: vec![HeaderToAdd {
            name: "x-variant".into(),
            value: "a".into(),
            append: false,
        }],
        ..mapping("a", "/ab/", "shop")
    };
    let b = Mapping {
        weight: Some(50),
        add_request_headers: vec![HeaderToAdd {
            name: "x-variant".into(),
            value: "b".into(),
            append: false,
        }],
        ..mapping("b", "/ab/", "shop")
    };
    let resources = run(&config(vec![a, b], Vec::new()));
    if let Err(why) = envoy_check::validate_resources(&resources) {
        panic!("{why}");
    }
}
