//! Test helpers: short builders for config values and lookups into [`Resources`].
//!
//! Builders return plain model values with Emissary's defaults; tests change fields with
//! struct-update syntax, so each test shows only what it is about.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{Listener as EnvoyListener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route as EnvoyRoute, RouteAction, RouteConfiguration, VirtualHost, route,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use prost::Message;

use super::Resources;
use crate::config::*;

/// A test certificate for `example.com` and `*.example.com`.
pub const CERT: &str = include_str!("../../tests/fixtures/certs/example.com.crt");
/// Its private key.
pub const KEY: &str = include_str!("../../tests/fixtures/certs/example.com.key");

pub fn meta(kind: Kind, name: &str) -> Meta {
    Meta {
        kind,
        name: name.to_owned(),
        namespace: "default".to_owned(),
        origin: Origin {
            file: Arc::from(format!("{}/{name}.yaml", kind.as_str().to_lowercase())),
            line: 3,
            column: 1,
        },
    }
}

/// `*`, `*.example.com` or an exact name.
pub fn pattern(text: &str) -> HostPattern {
    match text {
        "*" => HostPattern::Any,
        t if t.starts_with("*.") => HostPattern::Suffix(t[1..].to_owned()),
        t => HostPattern::Exact(t.to_owned()),
    }
}

/// Kubernetes Service `name` in `default`, port 80, plaintext, HTTP/1.
pub fn kube(name: &str) -> Target {
    Target {
        service: Service::Kubernetes {
            name: name.to_owned(),
            namespace: "default".to_owned(),
            port: Some(ServicePort::Number(80)),
        },
        tls: UpstreamTls::Plain,
        http2: false,
        connect_timeout_ms: 3000,
        policy: UpstreamPolicy::default(),
    }
}

pub fn address(host: &str, port: u16) -> Target {
    Target {
        service: Service::Address {
            host: host.to_owned(),
            port,
        },
        ..kube("unused")
    }
}

/// Route settings with Emissary's defaults: rewrite `/`, timeout 3000 ms.
pub fn forward(target: Target) -> Route {
    Route {
        target,
        rewrite: Rewrite::Prefix("/".to_owned()),
        timeout_ms: 3000,
        idle_timeout_ms: None,
        upgrades: Vec::new(),
        host_rewrite: None,
        shadow: false,
        policy: RoutePolicy::default(),
    }
}

/// Mapping `name`: prefix `prefix` on any host to Service `service`.
pub fn mapping(name: &str, prefix: &str, service: &str) -> Mapping {
    Mapping {
        meta: meta(Kind::Mapping, name),
        hostname: HostPattern::Any,
        path: PathMatch::Prefix(prefix.to_owned()),
        case_sensitive: true,
        method: None,
        headers: Vec::new(),
        query_parameters: Vec::new(),
        action: Action::Route(Box::new(forward(kube(service)))),
        weight: None,
        precedence: 0,
        add_request_headers: Vec::new(),
        remove_request_headers: Vec::new(),
        add_response_headers: Vec::new(),
        remove_response_headers: Vec::new(),
        bypass_auth: false,
    }
}

/// The routing settings of a Mapping built by [`mapping`], to change in place.
pub fn settings(mapping: &mut Mapping) -> &mut Route {
    match &mut mapping.action {
        Action::Route(route) => route,
        Action::Redirect(_) => panic!("{} is a redirect", mapping.meta.name),
    }
}

/// A cleartext Host.
pub fn host(name: &str, hostname: &str) -> Host {
    Host {
        meta: meta(Kind::Host, name),
        hostname: pattern(hostname),
        tls_secret: None,
        tls_context: None,
        insecure_action: InsecureAction::Redirect,
        labels: BTreeMap::new(),
    }
}

/// A Host terminating TLS with secret `secret` (add it with [`with_secret`]).
pub fn tls_host(name: &str, hostname: &str, secret: &str) -> Host {
    Host {
        tls_secret: Some(secret.to_owned()),
        ..host(name, hostname)
    }
}

pub fn listener(name: &str, port: u16, protocol: Protocol) -> Listener {
    Listener {
        meta: meta(Kind::Listener, name),
        port,
        protocol,
        security_model: SecurityModel::Xfp,
        host_binding: HostBinding::All,
    }
}

pub fn tls_context(name: &str) -> TlsContext {
    TlsContext {
        meta: meta(Kind::TlsContext, name),
        hosts: Vec::new(),
        secret: None,
        min_tls_version: None,
        max_tls_version: None,
        alpn_protocols: Vec::new(),
        cipher_suites: Vec::new(),
        peer_validation: None,
        sni: None,
    }
}

/// A config of these Mappings and Hosts, sorted as `config::load` sorts them.
pub fn config(mappings: Vec<Mapping>, hosts: Vec<Host>) -> Config {
    let mut config = Config {
        mappings,
        hosts,
        ..Config::default()
    };
    sort(&mut config);
    config
}

/// Sorts every list by (namespace, name), as the model promises.
pub fn sort(config: &mut Config) {
    config.mappings.sort_by_key(|a| key(&a.meta));
    config.hosts.sort_by_key(|a| key(&a.meta));
    config.listeners.sort_by_key(|a| key(&a.meta));
    config.tls_contexts.sort_by_key(|a| key(&a.meta));
}

fn key(meta: &Meta) -> (String, String) {
    (meta.namespace.clone(), meta.name.clone())
}

/// Adds secret `name` holding the test certificate.
pub fn with_secret(mut config: Config, name: &str) -> Config {
    config.secrets.insert(
        name.to_owned(),
        TlsSecret {
            name: name.to_owned(),
            certificate_chain: CERT.to_owned(),
            private_key: KEY.to_owned(),
        },
    );
    config
}

/// Adds CA bundle `name` holding the test certificate (self-signed, so its own CA).
pub fn with_ca(mut config: Config, name: &str) -> Config {
    config.ca_bundles.insert(
        name.to_owned(),
        CaBundle {
            name: name.to_owned(),
            pem: CERT.to_owned(),
        },
    );
    config
}

// === lookups ===

pub fn route_config<'a>(resources: &'a Resources, name: &str) -> &'a RouteConfiguration {
    resources
        .routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route configuration {name}: {:#?}", resources.routes))
}

pub fn vhost<'a>(rc: &'a RouteConfiguration, name: &str) -> &'a VirtualHost {
    rc.virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no virtual host {name} in {}", rc.name))
}

/// The virtual host of the single route configuration of the default HTTP listener.
pub fn default_vhost<'a>(resources: &'a Resources, name: &str) -> &'a VirtualHost {
    vhost(route_config(resources, "routes_8080"), name)
}

pub fn route_named<'a>(vhost: &'a VirtualHost, name: &str) -> &'a EnvoyRoute {
    vhost
        .routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route {name} in {}", vhost.name))
}

pub fn route_names(vhost: &VirtualHost) -> Vec<&str> {
    vhost.routes.iter().map(|r| r.name.as_str()).collect()
}

pub fn action(route: &EnvoyRoute) -> &RouteAction {
    match &route.action {
        Some(route::Action::Route(action)) => action,
        other => panic!("route {} has no route action: {other:?}", route.name),
    }
}

pub fn listener_named<'a>(resources: &'a Resources, name: &str) -> &'a EnvoyListener {
    resources
        .listeners
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no listener {name}"))
}

/// The HttpConnectionManager of a listener's first filter chain.
pub fn hcm(listener: &EnvoyListener) -> HttpConnectionManager {
    let filter = &listener.filter_chains[0].filters[0];
    match &filter.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => {
            HttpConnectionManager::decode(any.value.as_slice()).expect("an HCM")
        }
        other => panic!("not a typed config: {other:?}"),
    }
}

/// Every resource, encoded, in order: what "byte-identical output" compares.
pub fn encoded(resources: &Resources) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    out.extend(resources.listeners.iter().map(Message::encode_to_vec));
    out.extend(resources.routes.iter().map(Message::encode_to_vec));
    out.extend(resources.clusters.iter().map(Message::encode_to_vec));
    out.extend(resources.endpoints.iter().map(Message::encode_to_vec));
    out.extend(resources.secrets.iter().map(Message::encode_to_vec));
    out
}
