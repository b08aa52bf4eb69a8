//! Listeners: which ports Envoy opens, which Hosts each serves, and the Listener resource.
//!
//! [`plans`] decides the listeners (the explicit ones, or Emissary's defaults) and binds
//! Hosts to them; `vhost` builds each plan's RouteConfiguration and [`listener`] its
//! Listener. Every listener's HttpConnectionManager takes its routes over RDS (from the
//! ADS stream), so a route change never touches the listener and never drains
//! connections.
//!
//! TLS is terminated per Host: an HTTPS listener has the TLS inspector read the SNI and one
//! filter chain per TLS Host matching it, each with that Host's certificate by SDS.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, TransportSocket, address, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;

use super::names;
use super::provenance::Provenance;
use super::tls::{self, HostTls};
use crate::config::{Config, Host, HostBinding, HostPattern, Protocol, SecurityModel, Target};

/// Emissary's default cleartext port.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Emissary's default TLS port, opened when some Host terminates TLS.
pub const DEFAULT_HTTPS_PORT: u16 = 8443;

/// One listener to build: its port, protocol, security model and the Hosts bound to it.
#[derive(Debug, Clone)]
pub(super) struct ListenerPlan<'a> {
    pub port: u16,
    pub protocol: Protocol,
    pub security_model: SecurityModel,
    /// Bound Hosts in config order, one per hostname (the first wins: Envoy refuses two
    /// virtual hosts or filter chains for one name).
    pub hosts: Vec<&'a Host>,
    pub provenance: Provenance,
}

// === impl ListenerPlan ===

impl<'a> ListenerPlan<'a> {
    /// The bound Hosts that terminate TLS, with their TLS settings.
    pub fn tls_hosts(&self, config: &'a Config) -> Vec<(&'a Host, HostTls<'a>)> {
        self.hosts
            .iter()
            .filter_map(|h| tls::host_tls(config, h).map(|t| (*h, t)))
            .collect()
    }

    /// Whether the listener accepts TLS (HTTPS or HTTPSPROXY).
    pub fn terminates_tls(&self) -> bool {
        matches!(self.protocol, Protocol::Https | Protocol::HttpsProxy)
    }
}

/// The listeners to build, by port.
///
/// Explicit Listeners come first; with none, Emissary's defaults: HTTP on 8080, and HTTPS
/// on 8443 when some Host terminates TLS, both with the XFP security model. Two Listeners
/// on one port cannot both have it, so the first in (namespace, name) order wins
/// (validation reports the clash). TCP Listeners and HTTPS ones without a TLS Host are
/// left out: attache routes HTTP only, and Envoy refuses a listener with no filter chain.
pub(super) fn plans(config: &Config) -> Vec<ListenerPlan<'_>> {
    let mut by_port: BTreeMap<u16, ListenerPlan<'_>> = BTreeMap::new();
    if config.listeners.is_empty() {
        let all = bind(config, |_| true);
        by_port.insert(
            DEFAULT_HTTP_PORT,
            ListenerPlan {
                port: DEFAULT_HTTP_PORT,
                protocol: Protocol::Http,
                security_model: SecurityModel::Xfp,
                hosts: all.clone(),
                provenance: Provenance::builtin("Listener", "default-http"),
            },
        );
        by_port.insert(
            DEFAULT_HTTPS_PORT,
            ListenerPlan {
                port: DEFAULT_HTTPS_PORT,
                protocol: Protocol::Https,
                security_model: SecurityModel::Xfp,
                hosts: all,
                provenance: Provenance::builtin("Listener", "default-https"),
            },
        );
    }
    for listener in &config.listeners {
        if listener.protocol == Protocol::Tcp || by_port.contains_key(&listener.port) {
            continue;
        }
        let hosts = bind(config, |host| match &listener.host_binding {
            HostBinding::All => true,
            HostBinding::SameNamespace => host.meta.namespace == listener.meta.namespace,
            HostBinding::Labels(selector) => selector
                .iter()
                .all(|(k, v)| host.labels.get(k).is_some_and(|hv| hv == v)),
        });
        by_port.insert(
            listener.port,
            ListenerPlan {
                port: listener.port,
                protocol: listener.protocol,
                security_model: listener.security_model,
                hosts,
                provenance: Provenance::of(&listener.meta),
            },
        );
    }
    by_port
        .into_values()
        .filter(|plan| plan.protocol != Protocol::Https || !plan.tls_hosts(config).is_empty())
        .collect()
}

/// The Hosts `keep` accepts, one per hostname.
fn bind(config: &Config, keep: impl Fn(&Host) -> bool) -> Vec<&Host> {
    let mut seen = std::collections::BTreeSet::new();
    config
        .hosts
        .iter()
        .filter(|h| keep(h) && seen.insert(h.hostname.clone()))
        .collect()
}

/// The Listener resource of a plan.
pub(super) fn listener(
    plan: &ListenerPlan<'_>,
    config: &Config,
    clusters: &BTreeMap<Target, String>,
) -> Listener {
    let mut manager = http_connection_manager(plan.port);
    super::filters::apply(&mut manager, config, clusters);
    // Routes of Hosts that require client certificates match on the header this sets from
    // a verified certificate (and strips from clients); see `vhost::host_extra`.
    if plan
        .hosts
        .iter()
        .any(|h| tls::requires_client_certificate(config, h))
    {
        manager.forward_client_cert_details =
            http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32;
    }
    let hcm = Filter {
        name: "envoy.filters.network.http_connection_manager".to_owned(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(manager))),
    };
    let mut filter_chains = Vec::new();
    let mut listener_filters = Vec::new();
    if plan.terminates_tls() {
        listener_filters.push(ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".to_owned(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                TlsInspector::default(),
            ))),
            ..Default::default()
        });
        let tls_hosts = plan.tls_hosts(config);
        let mut has_default = false;
        for (host, host_tls) in &tls_hosts {
            let server_names = match &host.hostname {
                HostPattern::Any => Vec::new(),
                pattern => vec![pattern.as_domain()],
            };
            has_default |= server_names.is_empty();
            filter_chains.push(tls_chain(
                names::qualified(&host.meta.namespace, &host.meta.name),
                server_names,
                host_tls,
                &hcm,
                Provenance::of(&host.meta),
            ));
        }
        // Clients that send no SNI (or one no Host claims) still get a certificate: the
        // first TLS Host's. Routing then goes by the Host header as usual.
        if let (false, Some((host, host_tls))) = (has_default, tls_hosts.first()) {
            filter_chains.push(tls_chain(
                "fallback".to_owned(),
                Vec::new(),
                host_tls,
                &hcm,
                Provenance::of(&host.meta),
            ));
        }
    }
    if plan.protocol != Protocol::Https {
        filter_chains.push(FilterChain {
            name: "cleartext".to_owned(),
            // Only needed beside TLS chains (HTTPSPROXY), where the inspector tells them apart.
            filter_chain_match: (plan.protocol == Protocol::HttpsProxy).then(|| FilterChainMatch {
                transport_protocol: "raw_buffer".to_owned(),
                ..Default::default()
            }),
            filters: vec![hcm.clone()],
            metadata: Some(plan.provenance.to_metadata()),
            ..Default::default()
        });
    }
    Listener {
        name: names::listener(plan.port),
        address: Some(socket_address("0.0.0.0", plan.port)),
        filter_chains,
        listener_filters,
        metadata: Some(plan.provenance.to_metadata()),
        per_connection_buffer_limit_bytes: config
            .module
            .buffer_limit_bytes
            .map(|value| UInt32Value { value }),
        ..Default::default()
    }
}

fn tls_chain(
    name: String,
    server_names: Vec<String>,
    host_tls: &HostTls<'_>,
    hcm: &Filter,
    provenance: Provenance,
) -> FilterChain {
    FilterChain {
        name,
        filter_chain_match: Some(FilterChainMatch {
            server_names,
            transport_protocol: "tls".to_owned(),
            ..Default::default()
        }),
        filters: vec![hcm.clone()],
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".to_owned(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
                tls::downstream(host_tls),
            ))),
        }),
        metadata: Some(provenance.to_metadata()),
        ..Default::default()
    }
}

/// HTTP/1.1 and HTTP/2 (codec AUTO), routes by RDS over ADS; `filters::apply` adds the
/// filter chain and the Module's settings.
///
/// The port is stripped from the Host header before routing: a virtual host's domains
/// hold host names only, and Envoy allows one wildcard per domain, so `*.example.com`
/// could never also match `x.example.com:8080`. Stripping also keeps the https redirect
/// of an insecure request from pointing at the cleartext port.
fn http_connection_manager(port: u16) -> HttpConnectionManager {
    HttpConnectionManager {
        strip_port_mode: Some(http_connection_manager::StripPortMode::StripAnyHostPort(
            true,
        )),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        stat_prefix: names::stat_prefix(port),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(tls::ads()),
            route_config_name: names::route_config(port),
        })),
        ..Default::default()
    }
}

/// A TCP socket address.
pub(super) fn socket_address(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}
