//! Listeners: Emissary's defaults, explicit ports and protocols, host binding.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    CodecType, RouteSpecifier,
};

use super::run;
use crate::config::*;
use crate::translate::testing::*;

fn listener_names(resources: &crate::translate::Resources) -> Vec<&str> {
    resources
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect()
}

fn port_of(l: &envoy_types::pb::envoy::config::listener::v3::Listener) -> u32 {
    match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => {
            assert_eq!(sa.address, "0.0.0.0");
            match sa.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => p,
                ref other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
}

fn chain_names(l: &envoy_types::pb::envoy::config::listener::v3::Listener) -> Vec<&str> {
    l.filter_chains.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn without_listeners_http_is_on_8080_and_https_only_with_a_tls_host() {
    let cleartext = run(&config(
        vec![mapping("a", "/", "a")],
        vec![host("www", "www.example.com")],
    ));
    assert_eq!(listener_names(&cleartext), ["listener_8080"]);
    let names: Vec<&str> = cleartext.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["routes_8080"]);

    let tls = run(&with_secret(
        config(
            vec![mapping("a", "/", "a")],
            vec![tls_host("api", "api.example.com", "example-cert")],
        ),
        "example-cert",
    ));
    assert_eq!(listener_names(&tls), ["listener_8080", "listener_8443"]);
    assert_eq!(port_of(listener_named(&tls, "listener_8080")), 8080);
    assert_eq!(port_of(listener_named(&tls, "listener_8443")), 8443);
    let names: Vec<&str> = tls.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["routes_8080", "routes_8443"]);
}

#[test]
fn every_listener_takes_its_routes_over_rds() {
    let resources = run(&config(vec![mapping("a", "/", "a")], Vec::new()));
    let hcm = hcm(listener_named(&resources, "listener_8080"));
    assert_eq!(hcm.stat_prefix, "ingress_8080");
    assert_eq!(hcm.codec_type, CodecType::Auto as i32);
    match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => assert_eq!(rds.route_config_name, "routes_8080"),
        other => panic!("not RDS: {other:?}"),
    }
    let filters: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(filters, ["envoy.filters.http.router"]);
}

#[test]
fn explicit_listeners_replace_the_defaults() {
    let mut cfg = with_secret(
        config(
            vec![mapping("a", "/", "a")],
            vec![tls_host("api", "api.example.com", "example-cert")],
        ),
        "example-cert",
    );
    cfg.listeners = vec![
        listener("plain", 8000, Protocol::Http),
        listener("secure", 9443, Protocol::Https),
        listener("both", 7000, Protocol::HttpsProxy),
    ];
    sort(&mut cfg);
    let resources = run(&cfg);
    assert_eq!(
        listener_names(&resources),
        ["listener_7000", "listener_8000", "listener_9443"]
    );
    // HTTP: one cleartext chain, no TLS inspector.
    let plain = listener_named(&resources, "listener_8000");
    assert_eq!(chain_names(plain), ["cleartext"]);
    assert!(plain.listener_filters.is_empty());
    assert!(plain.filter_chains[0].filter_chain_match.is_none());
    // HTTPS: TLS chains only.
    let secure = listener_named(&resources, "listener_9443");
    assert_eq!(chain_names(secure), ["default/api", "fallback"]);
    // HTTPSPROXY: TLS chains and a cleartext one, told apart by the inspector.
    let both = listener_named(&resources, "listener_7000");
    assert_eq!(chain_names(both), ["default/api", "fallback", "cleartext"]);
    assert_eq!(both.listener_filters.len(), 1);
    assert_eq!(
        both.filter_chains[2]
            .filter_chain_match
            .as_ref()
            .map(|m| m.transport_protocol.as_str()),
        Some("raw_buffer")
    );
    // Each listener fetches its own route configuration.
    assert_eq!(resources.routes.len(), 3);
}

#[test]
fn an_https_listener_without_a_tls_host_is_left_out() {
    // Envoy refuses a listener without filter chains.
    let mut cfg = config(
        vec![mapping("a", "/", "a")],
        vec![host("www", "www.example.com")],
    );
    cfg.listeners = vec![
        listener("http", 8080, Protocol::Http),
        listener("https", 8443, Protocol::Https),
    ];
    let resources = run(&cfg);
    assert_eq!(listener_names(&resources), ["listener_8080"]);
    assert_eq!(resources.routes.len(), 1);
}

#[test]
fn two_listeners_on_one_port_keep_the_first() {
    let mut cfg = config(vec![mapping("a", "/", "a")], Vec::new());
    cfg.listeners = vec![
        listener("a-first", 8080, Protocol::Http),
        Listener {
            security_model: SecurityModel::Insecure,
            ..listener("b-second", 8080, Protocol::Http)
        },
    ];
    let resources = run(&cfg);
    assert_eq!(listener_names(&resources), ["listener_8080"]);
    let p = crate::translate::provenance::Provenance::from_metadata(
        resources.listeners[0].metadata.as_ref().expect("metadata"),
    )
    .expect("provenance");
    assert_eq!(p.name, "a-first");
}

fn labelled(name: &str, hostname: &str, namespace: &str, team: &str) -> Host {
    let mut h = host(name, hostname);
    h.meta.namespace = namespace.to_owned();
    h.labels = BTreeMap::from([("team".to_owned(), team.to_owned())]);
    h
}

fn vhost_names(resources: &crate::translate::Resources, port: u16) -> Vec<String> {
    route_config(resources, &format!("routes_{port}"))
        .virtual_hosts
        .iter()
        .map(|v| v.name.clone())
        .collect()
}

#[test]
fn host_binding_chooses_the_hosts_a_listener_serves() {
    let hosts = vec![
        labelled("a", "a.example.com", "shop", "red"),
        labelled("b", "b.example.com", "infra", "blue"),
        labelled("c", "c.example.com", "shop", "blue"),
    ];
    let mut cfg = config(vec![mapping("m", "/", "m")], hosts);
    let mut same_ns = listener("same", 8001, Protocol::Http);
    same_ns.meta.namespace = "shop".into();
    same_ns.host_binding = HostBinding::SameNamespace;
    cfg.listeners = vec![
        listener("all", 8000, Protocol::Http),
        same_ns,
        Listener {
            host_binding: HostBinding::Labels(BTreeMap::from([(
                "team".to_owned(),
                "blue".to_owned(),
            )])),
            ..listener("blue", 8002, Protocol::Http)
        },
    ];
    sort(&mut cfg);
    let resources = run(&cfg);
    assert_eq!(
        vhost_names(&resources, 8000),
        ["infra/b", "shop/a", "shop/c"]
    );
    assert_eq!(vhost_names(&resources, 8001), ["shop/a", "shop/c"]);
    assert_eq!(vhost_names(&resources, 8002), ["infra/b", "shop/c"]);
}

#[test]
fn listeners_carry_their_provenance_and_defaults_say_they_are_built_in() {
    let mut cfg = config(vec![mapping("a", "/", "a")], Vec::new());
    let resources = run(&cfg);
    let p = crate::translate::provenance::Provenance::from_metadata(
        resources.listeners[0].metadata.as_ref().expect("metadata"),
    )
    .expect("provenance");
    assert_eq!((p.file.as_str(), p.line), ("", 0));
    assert_eq!(
        (p.kind.as_str(), p.name.as_str()),
        ("Listener", "default-http")
    );

    cfg.listeners = vec![listener("http", 8000, Protocol::Http)];
    let resources = run(&cfg);
    for metadata in [
        resources.listeners[0].metadata.as_ref(),
        resources.routes[0].metadata.as_ref(),
    ] {
        let p =
            crate::translate::provenance::Provenance::from_metadata(metadata.expect("metadata"))
                .expect("provenance");
        assert_eq!(p.file, "listener/http.yaml");
        assert_eq!(p.line, 3);
        assert_eq!((p.kind.as_str(), p.name.as_str()), ("Listener", "http"));
    }
}
