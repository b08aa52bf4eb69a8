//! Hosts -> virtual hosts and TLS filter chains; insecure actions; TLSContexts.

use envoy_types::pb::envoy::config::core::v3::transport_socket;
use envoy_types::pb::envoy::config::listener::v3::FilterChain;
use envoy_types::pb::envoy::config::route::v3::{
    VirtualHost, header_matcher, redirect_action, route, route_match, virtual_host,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher;
use prost::Message;

use super::{load_yaml, run};
use crate::config::*;
use crate::translate::testing::*;

fn domains(v: &VirtualHost) -> Vec<&str> {
    v.domains.iter().map(String::as_str).collect()
}

fn chain<'a>(resources: &'a crate::translate::Resources, port: u16, name: &str) -> &'a FilterChain {
    let l = listener_named(resources, &format!("listener_{port}"));
    l.filter_chains
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = l.filter_chains.iter().map(|c| c.name.as_str()).collect();
            panic!("no filter chain {name} in {names:?}")
        })
}

fn downstream(chain: &FilterChain) -> DownstreamTlsContext {
    let socket = chain
        .transport_socket
        .as_ref()
        .expect("a TLS transport socket");
    match &socket.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => {
            DownstreamTlsContext::decode(any.value.as_slice()).expect("a DownstreamTlsContext")
        }
        other => panic!("not typed: {other:?}"),
    }
}

/// The regex of the route's `:authority` matcher, if it has one.
fn authority(route: &envoy_types::pb::envoy::config::route::v3::Route) -> Option<String> {
    let m = route.r#match.as_ref()?;
    let h = m.headers.iter().find(|h| h.name == ":authority")?;
    match &h.header_match_specifier {
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(sm)) => match &sm.match_pattern {
            Some(string_matcher::MatchPattern::SafeRegex(r)) => Some(r.regex.clone()),
            other => panic!("not a regex: {other:?}"),
        },
        other => panic!("not a string match: {other:?}"),
    }
}

#[test]
fn without_hosts_every_mapping_is_served_on_star() {
    let resources = run(&config(
        vec![
            mapping("a", "/a/", "a"),
            Mapping {
                hostname: pattern("api.example.com"),
                ..mapping("b", "/b/", "b")
            },
        ],
        Vec::new(),
    ));
    let rc = route_config(&resources, "routes_8080");
    assert_eq!(rc.virtual_hosts.len(), 1);
    let v = &rc.virtual_hosts[0];
    assert_eq!(domains(v), ["*"]);
    assert_eq!(route_names(v), ["default/b", "default/a"]);
    // The Mapping narrower than `*` still only answers for its own hostname.
    let b = route_named(v, "default/b");
    assert_eq!(
        authority(b).as_deref(),
        Some(r"(?i)api\.example\.com(:[0-9]+)?")
    );
    assert_eq!(authority(route_named(v, "default/a")), None);
}

#[test]
fn each_host_is_a_virtual_host_for_its_hostname() {
    let resources = run(&config(
        vec![
            Mapping {
                hostname: pattern("api.example.com"),
                ..mapping("api", "/", "api")
            },
            Mapping {
                hostname: pattern("*.shop.example.com"),
                ..mapping("shops", "/", "shops")
            },
            mapping("everywhere", "/healthz", "health"),
        ],
        vec![
            host("api", "api.example.com"),
            host("shops", "*.shop.example.com"),
            host("www", "www.example.com"),
        ],
    ));
    let rc = route_config(&resources, "routes_8080");
    let api = vhost(rc, "default/api");
    assert_eq!(domains(api), ["api.example.com"]);
    assert_eq!(route_names(api), ["default/everywhere", "default/api"]);
    let shops = vhost(rc, "default/shops");
    assert_eq!(domains(shops), ["*.shop.example.com"]);
    assert_eq!(route_names(shops), ["default/everywhere", "default/shops"]);
    let www = vhost(rc, "default/www");
    assert_eq!(domains(www), ["www.example.com"]);
    assert_eq!(route_names(www), ["default/everywhere"]);
    assert_eq!(rc.virtual_hosts.len(), 3);
}

/// A Host header with a port (`x.shop.example.com:8080`) must reach a wildcard Host too,
/// and Envoy allows one wildcard per domain: the listener strips the port before routing.
#[test]
fn host_ports_are_stripped_before_virtual_host_matching() {
    let resources = run(&config(
        vec![mapping("a", "/", "a")],
        vec![host("shops", "*.shop.example.com")],
    ));
    let hcm = hcm(listener_named(&resources, "listener_8080"));
    assert_eq!(
        hcm.strip_port_mode,
        Some(
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::StripPortMode::StripAnyHostPort(true)
        )
    );
}

#[test]
fn a_mapping_narrower_than_its_host_also_matches_authority() {
    let resources = run(&config(
        vec![Mapping {
            hostname: pattern("a.example.com"),
            ..mapping("a", "/", "a")
        }],
        vec![host("wild", "*.example.com"), host("b", "b.example.com")],
    ));
    let rc = route_config(&resources, "routes_8080");
    let wild = vhost(rc, "default/wild");
    assert_eq!(
        authority(route_named(wild, "default/a")).as_deref(),
        Some(r"(?i)a\.example\.com(:[0-9]+)?")
    );
    // It does not attach to a Host it cannot serve.
    assert!(vhost(rc, "default/b").routes.is_empty());
}

#[test]
fn wildcard_mappings_attach_to_overlapping_wildcard_hosts() {
    let resources = run(&config(
        vec![
            Mapping {
                hostname: pattern("*.eu.example.com"),
                ..mapping("eu", "/", "eu")
            },
            Mapping {
                hostname: pattern("*.example.com"),
                ..mapping("all", "/", "all")
            },
        ],
        vec![
            host("wide", "*.example.com"),
            host("narrow", "*.de.eu.example.com"),
        ],
    ));
    let rc = route_config(&resources, "routes_8080");
    let wide = vhost(rc, "default/wide");
    // The narrower Mapping comes first (its :authority match weighs) and keeps to its names.
    assert_eq!(route_names(wide), ["default/eu", "default/all"]);
    assert_eq!(
        authority(route_named(wide, "default/eu")).as_deref(),
        Some(r"(?i)[^:]+\.eu\.example\.com(:[0-9]+)?")
    );
    assert_eq!(authority(route_named(wide, "default/all")), None);
    // Both serve every name of the narrower Host, so neither needs an :authority match.
    let narrow = vhost(rc, "default/narrow");
    assert_eq!(route_names(narrow), ["default/all", "default/eu"]);
    assert!(narrow.routes.iter().all(|r| authority(r).is_none()));
}

#[test]
fn tls_secret_gives_a_filter_chain_with_sni_and_an_sds_certificate() {
    let cfg = with_secret(
        config(
            vec![mapping("a", "/", "a")],
            vec![
                tls_host("api", "api.example.com", "example-cert"),
                tls_host("shops", "*.shop.example.com", "example-cert"),
                host("plain", "plain.example.com"),
            ],
        ),
        "example-cert",
    );
    let resources = run(&cfg);
    let api = chain(&resources, 8443, "default/api");
    let m = api.filter_chain_match.as_ref().expect("a chain match");
    assert_eq!(m.server_names, ["api.example.com"]);
    assert_eq!(m.transport_protocol, "tls");
    let sds: Vec<String> = downstream(api)
        .common_tls_context
        .expect("a common context")
        .tls_certificate_sds_secret_configs
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(sds, ["example-cert"]);
    let shops = chain(&resources, 8443, "default/shops");
    assert_eq!(
        shops
            .filter_chain_match
            .as_ref()
            .map(|m| m.server_names.clone()),
        Some(vec!["*.shop.example.com".to_owned()])
    );
    // Clients without SNI still get a certificate.
    let fallback = chain(&resources, 8443, "fallback");
    assert!(
        fallback
            .filter_chain_match
            .as_ref()
            .is_some_and(|m| m.server_names.is_empty())
    );
    // The cleartext Host has no chain of its own, and one Secret serves both chains.
    assert_eq!(
        listener_named(&resources, "listener_8443")
            .filter_chains
            .len(),
        3
    );
    let secrets: Vec<&str> = resources.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(secrets, ["example-cert"]);
    // The TLS inspector reads the SNI.
    let l = listener_named(&resources, "listener_8443");
    assert_eq!(
        l.listener_filters
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["envoy.filters.listener.tls_inspector"]
    );
}

#[test]
fn a_tls_host_whose_secret_is_missing_serves_cleartext_only() {
    // Validation reports the missing secret; translation must not make a listener wait for
    // a secret that never comes.
    let resources = run(&config(
        vec![mapping("a", "/", "a")],
        vec![tls_host("api", "api.example.com", "missing")],
    ));
    let names: Vec<&str> = resources
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["listener_8080"]);
    assert!(resources.secrets.is_empty());
}

fn tls_config(action: InsecureAction) -> Config {
    with_secret(
        config(
            vec![mapping("a", "/", "a")],
            vec![Host {
                insecure_action: action,
                ..tls_host("api", "api.example.com", "example-cert")
            }],
        ),
        "example-cert",
    )
}

#[test]
fn insecure_redirect_requires_tls() {
    let resources = run(&tls_config(InsecureAction::Redirect));
    for port in [8080, 8443] {
        let v = vhost(
            route_config(&resources, &format!("routes_{port}")),
            "default/api",
        );
        // On 8443 X-Forwarded-Proto is https, so Envoy serves; on 8080 it redirects.
        assert_eq!(
            v.require_tls,
            virtual_host::TlsRequirementType::All as i32,
            "{port}"
        );
        assert_eq!(route_names(v), ["default/a"]);
    }
}

#[test]
fn insecure_route_serves_cleartext_too() {
    let resources = run(&tls_config(InsecureAction::Route));
    let v = vhost(route_config(&resources, "routes_8080"), "default/api");
    assert_eq!(v.require_tls, virtual_host::TlsRequirementType::None as i32);
    assert_eq!(route_names(v), ["default/a"]);
}

#[test]
fn insecure_reject_serves_only_https_and_404s_the_rest() {
    let resources = run(&tls_config(InsecureAction::Reject));
    let v = vhost(route_config(&resources, "routes_8080"), "default/api");
    assert_eq!(v.require_tls, virtual_host::TlsRequirementType::None as i32);
    assert_eq!(route_names(v), ["default/a", "insecure-reject"]);
    let a = &v.routes[0];
    let xfp = a
        .r#match
        .as_ref()
        .and_then(|m| m.headers.iter().find(|h| h.name == "x-forwarded-proto"));
    assert!(xfp.is_some(), "{a:?}");
    match &v.routes[1].action {
        Some(route::Action::DirectResponse(d)) => assert_eq!(d.status, 404),
        other => panic!("not a direct response: {other:?}"),
    }
}

#[test]
fn insecure_actions_under_the_insecure_security_model_apply_to_every_request() {
    for (action, expected) in [
        (InsecureAction::Redirect, "insecure-redirect"),
        (InsecureAction::Reject, "insecure-reject"),
    ] {
        let mut cfg = tls_config(action);
        cfg.listeners = vec![Listener {
            security_model: SecurityModel::Insecure,
            ..listener("http", 8080, Protocol::Http)
        }];
        let resources = run(&cfg);
        let v = vhost(route_config(&resources, "routes_8080"), "default/api");
        assert_eq!(route_names(v), [expected]);
        if action == InsecureAction::Redirect {
            match &v.routes[0].action {
                Some(route::Action::Redirect(r)) => assert_eq!(
                    r.scheme_rewrite_specifier,
                    Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true))
                ),
                other => panic!("not a redirect: {other:?}"),
            }
            assert!(matches!(
                v.routes[0].r#match.as_ref().and_then(|m| m.path_specifier.clone()),
                Some(route_match::PathSpecifier::Prefix(p)) if p == "/"
            ));
        }
    }
}

#[test]
fn the_secure_security_model_never_redirects() {
    let mut cfg = tls_config(InsecureAction::Redirect);
    cfg.listeners = vec![Listener {
        security_model: SecurityModel::Secure,
        ..listener("http", 8080, Protocol::Http)
    }];
    let resources = run(&cfg);
    let v = vhost(route_config(&resources, "routes_8080"), "default/api");
    assert_eq!(v.require_tls, virtual_host::TlsRequirementType::None as i32);
    assert_eq!(route_names(v), ["default/a"]);
}

#[test]
fn tls_context_sets_versions_alpn_and_ciphers_of_its_hosts() {
    let config = load_yaml(
        r#"apiVersion: getambassador.io/v3alpha1
kind: TLSContext
metadata:
  name: modern
  namespace: shop
spec:
  hosts: [api.example.com]
  secret: example-cert
  min_tls_version: v1.2
  max_tls_version: v1.3
  alpn_protocols: h2,http/1.1
  cipher_suites:
    - ECDHE-ECDSA-AES128-GCM-SHA256
    - ECDHE-RSA-AES128-GCM-SHA256
---
apiVersion: getambassador.io/v3alpha1
kind: Host
metadata:
  name: api
  namespace: shop
spec:
  hostname: api.example.com
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: m
  namespace: shop
spec:
  prefix: /
  service: users
"#,
        &["example-cert"],
    );
    let resources = run(&config);
    // The Host has no tlsSecret of its own: the TLSContext listing its hostname supplies it.
    let common = downstream(chain(&resources, 8443, "shop/api"))
        .common_tls_context
        .expect("a common context");
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    let params = common.tls_params.expect("TLS parameters");
    assert_eq!(
        params.tls_minimum_protocol_version,
        TlsProtocol::TlSv12 as i32
    );
    assert_eq!(
        params.tls_maximum_protocol_version,
        TlsProtocol::TlSv13 as i32
    );
    assert_eq!(
        params.cipher_suites,
        [
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256"
        ]
    );
    assert_eq!(
        common
            .tls_certificate_sds_secret_configs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["example-cert"]
    );
}

#[test]
fn a_host_names_its_tls_context_explicitly() {
    let mut ctx = tls_context("strict");
    ctx.min_tls_version = Some(TlsVersion::V1_3);
    let mut cfg = with_secret(
        config(
            vec![mapping("a", "/", "a")],
            vec![Host {
                tls_context: Some("strict".into()),
                ..tls_host("api", "api.example.com", "example-cert")
            }],
        ),
        "example-cert",
    );
    cfg.tls_contexts = vec![ctx];
    let resources = run(&cfg);
    let params = downstream(chain(&resources, 8443, "default/api"))
        .common_tls_context
        .and_then(|c| c.tls_params)
        .expect("TLS parameters");
    assert_eq!(
        params.tls_minimum_protocol_version,
        TlsProtocol::TlSv13 as i32
    );
    assert_eq!(
        params.tls_maximum_protocol_version,
        TlsProtocol::TlsAuto as i32
    );
}
