//! Every xDS type URL attache serves, in one place (STYLE.md, "Naming").

use crate::snapshot::ResourceType;

/// CDS: `envoy.config.cluster.v3.Cluster`.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// LDS: `envoy.config.listener.v3.Listener`.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// RDS: `envoy.config.route.v3.RouteConfiguration`.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The type URL of a resource type.
pub fn of(kind: ResourceType) -> &'static str {
    match kind {
        ResourceType::Cluster => CLUSTER,
        ResourceType::Endpoint => ENDPOINT,
        ResourceType::Listener => LISTENER,
        ResourceType::Route => ROUTE,
        ResourceType::Secret => SECRET,
    }
}

/// The resource type a type URL names, if attache serves it.
pub fn parse(url: &str) -> Option<ResourceType> {
    ResourceType::ALL.into_iter().find(|k| of(*k) == url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    use prost::Name;

    #[test]
    fn constants_match_the_generated_messages() {
        assert_eq!(CLUSTER, Cluster::type_url());
        assert_eq!(ENDPOINT, ClusterLoadAssignment::type_url());
        assert_eq!(LISTENER, Listener::type_url());
        assert_eq!(ROUTE, RouteConfiguration::type_url());
        assert_eq!(SECRET, Secret::type_url());
        for kind in ResourceType::ALL {
            assert_eq!(parse(of(kind)), Some(kind));
        }
        assert_eq!(
            parse("type.googleapis.com/envoy.config.route.v3.VirtualHost"),
            None
        );
    }
}
