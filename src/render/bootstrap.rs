//! One static Envoy bootstrap holding every resource of a revision.
//!
//! Translation emits resources for ADS: listeners name their routes (RDS), Kubernetes
//! clusters wait for endpoints (EDS), TLS contexts name their certificates (SDS), and all
//! of them point at an ADS stream. A static bootstrap has no such stream, so each reference
//! is resolved here into what it names:
//! - an HCM's `rds` becomes `route_config` with the RouteConfiguration inline;
//! - an EDS cluster becomes STATIC with its ClusterLoadAssignment as `load_assignment`;
//! - an SDS reference loses its `sds_config`, which makes Envoy look the secret up by name
//!   among `static_resources.secrets`.
//!
//! That is what `attache render --bootstrap` prints, and how tests run translation
//! through a real Envoy (`--mode validate`, or serving traffic) without an xDS server.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap, bootstrap::StaticResources};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, TransportSocket, address, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext, common_tls_context,
    downstream_tls_context,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use crate::translate::Resources;

/// Every resource in `resources` as one static bootstrap, with the admin interface on
/// `admin` when given (tests need it for `/ready`; `--mode validate` does not).
///
/// References that name nothing in `resources` still resolve: an unknown route
/// configuration becomes an empty one of that name (every request gets a 404), an EDS
/// cluster without an assignment gets no endpoints (503), as they would under ADS.
pub fn static_bootstrap(resources: &Resources, admin: Option<SocketAddr>) -> Bootstrap {
    Bootstrap {
        admin: admin.map(|addr| Admin {
            address: Some(socket_address(addr)),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners: resources
                .listeners
                .iter()
                .map(|l| static_listener(l, resources))
                .collect(),
            clusters: resources
                .clusters
                .iter()
                .map(|c| static_cluster(c, resources))
                .collect(),
            secrets: resources.secrets.clone(),
        }),
        ..Default::default()
    }
}

fn socket_address(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

fn static_listener(listener: &Listener, resources: &Resources) -> Listener {
    let mut listener = listener.clone();
    let chains = listener
        .filter_chains
        .iter_mut()
        .chain(listener.default_filter_chain.as_mut());
    for chain in chains {
        for filter in &mut chain.filters {
            inline_routes(filter, resources);
        }
        if let Some(socket) = &mut chain.transport_socket {
            map_packed(socket, |context: &mut DownstreamTlsContext| {
                if let Some(common) = &mut context.common_tls_context {
                    static_common(common);
                }
                if let Some(
                    downstream_tls_context::SessionTicketKeysType::SessionTicketKeysSdsSecretConfig(
                        sds,
                    ),
                ) = &mut context.session_ticket_keys_type
                {
                    sds.sds_config = None;
                }
            });
        }
    }
    listener
}

/// Replaces an HCM's `rds` by the RouteConfiguration it names.
fn inline_routes(filter: &mut Filter, resources: &Resources) {
    let Some(filter::ConfigType::TypedConfig(any)) = &mut filter.config_type else {
        return;
    };
    if any.type_url != HttpConnectionManager::type_url() {
        return;
    }
    let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
        return;
    };
    if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
        let routes = resources
            .routes
            .iter()
            .find(|r| r.name == rds.route_config_name)
            .cloned()
            .unwrap_or_else(|| RouteConfiguration {
                name: rds.route_config_name.clone(),
                ..Default::default()
            });
        hcm.route_specifier = Some(RouteSpecifier::RouteConfig(routes));
        any.value = hcm.encode_to_vec();
    }
}

fn static_cluster(cluster: &Cluster, resources: &Resources) -> Cluster {
    let mut cluster = cluster.clone();
    let is_eds = matches!(
        cluster.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(t)) if t == cluster::DiscoveryType::Eds as i32
    );
    if is_eds {
        // An empty service_name means "the cluster's own name" (cluster.proto).
        let service = cluster
            .eds_cluster_config
            .take()
            .map(|eds| eds.service_name)
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| cluster.name.clone());
        let mut assignment = resources
            .endpoints
            .iter()
            .find(|a| a.cluster_name == service)
            .cloned()
            .unwrap_or_default();
        assignment.cluster_name = cluster.name.clone();
        cluster.load_assignment = Some(assignment);
        cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        ));
    }
    let sockets = cluster.transport_socket.iter_mut().chain(
        cluster
            .transport_socket_matches
            .iter_mut()
            .filter_map(|m| m.transport_socket.as_mut()),
    );
    for socket in sockets {
        map_packed(socket, |context: &mut UpstreamTlsContext| {
            if let Some(common) = &mut context.common_tls_context {
                static_common(common);
            }
        });
    }
    cluster
}

/// Drops `sds_config` from every secret reference in `common`.
fn static_common(common: &mut CommonTlsContext) {
    use common_tls_context::ValidationContextType;
    for sds in &mut common.tls_certificate_sds_secret_configs {
        sds.sds_config = None;
    }
    match &mut common.validation_context_type {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => sds.sds_config = None,
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            if let Some(sds) = &mut combined.validation_context_sds_secret_config {
                sds.sds_config = None;
            }
        }
        _ => {}
    }
}

/// Applies `edit` to the `T` packed in `socket`'s typed config, if it holds a `T`.
fn map_packed<T: Message + Name + Default>(
    socket: &mut TransportSocket,
    edit: impl FnOnce(&mut T),
) {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &mut socket.config_type else {
        return;
    };
    repack(any, edit);
}

fn repack<T: Message + Name + Default>(any: &mut Any, edit: impl FnOnce(&mut T)) {
    if any.type_url != T::type_url() {
        return;
    }
    if let Ok(mut message) = T::decode(any.value.as_slice()) {
        edit(&mut message);
        any.value = message.encode_to_vec();
    }
}

#[cfg(test)]
mod tests;
