//! Clusters and ClusterLoadAssignments: one cluster per distinct Mapping target.
//!
//! A Kubernetes Service becomes an EDS cluster whose endpoints come on the ADS stream (one
//! ClusterLoadAssignment per Service port, shared by every cluster that targets it), so an
//! endpoint change sends one small EDS update and leaves clusters alone. An address with
//! an IP becomes a STATIC cluster, a DNS name a STRICT_DNS one; both carry their single
//! endpoint inline.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    HealthStatus, Locality, TransportSocket, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::util::pack_any;

use super::listener::socket_address;
use super::names;
use super::provenance::Provenance;
use super::route::duration_ms;
use super::tls;
use crate::config::{Config, Meta, Service, Target, UpstreamTls};
use crate::endpoints::{EndpointHealth, Endpoints};

/// The clusters of `targets` (with the Mappings that use each) and the
/// ClusterLoadAssignments of their Kubernetes Services, each sorted by name.
pub(super) fn clusters(
    config: &Config,
    endpoints: &Endpoints,
    names: &BTreeMap<Target, String>,
    users: &BTreeMap<&Target, Vec<&Meta>>,
) -> (Vec<Cluster>, Vec<ClusterLoadAssignment>) {
    // Built in name order: sorting the finished clusters would move kilobyte-sized
    // structs around, which cost more than building them at 10k clusters.
    let mut by_name: Vec<(&String, &Target)> = names.iter().map(|(t, n)| (n, t)).collect();
    by_name.sort_unstable();
    let clusters =
        super::parallel::map(&by_name, super::parallel::SMALL_ITEMS, |(name, target)| {
            let provenance = users
                .get(target)
                .and_then(|metas| Provenance::shared(metas.iter().copied()));
            cluster(config, target, name, provenance)
        });
    let mut services = BTreeSet::new();
    for (_, target) in &by_name {
        if let Service::Kubernetes {
            name,
            namespace,
            port,
        } = &target.service
        {
            services.insert(names::service_key(name, namespace, port.as_ref()));
        }
    }
    let assignments = services
        .iter()
        .map(|key| assignment(names::eds_service(key), endpoints.get(key)))
        .collect();
    (clusters, assignments)
}

fn cluster(
    config: &Config,
    target: &Target,
    name: &str,
    provenance: Option<Provenance>,
) -> Cluster {
    use cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig};
    let mut envoy = Cluster {
        name: name.to_owned(),
        connect_timeout: Some(duration_ms(target.connect_timeout_ms)),
        metadata: provenance.map(|p| p.to_metadata()),
        ..Default::default()
    };
    let sni = match &target.service {
        Service::Kubernetes {
            name: service,
            namespace,
            port,
        } => {
            let key = names::service_key(service, namespace, port.as_ref());
            envoy.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            envoy.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(tls::ads()),
                service_name: names::eds_service(&key),
            });
            Some(format!("{service}.{namespace}"))
        }
        Service::Address { host, port } => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let ip = bare.parse::<IpAddr>().ok();
            let kind = if ip.is_some() {
                DiscoveryType::Static
            } else {
                // Emissary's default: pods commonly have no IPv6 route, and AUTO prefers v6.
                envoy.dns_lookup_family = DnsLookupFamily::V4Only as i32;
                DiscoveryType::StrictDns
            };
            envoy.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
            envoy.load_assignment = Some(ClusterLoadAssignment {
                cluster_name: name.to_owned(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![lb_endpoint(bare, *port, HealthStatus::Unknown)],
                    ..Default::default()
                }],
                ..Default::default()
            });
            ip.is_none().then(|| bare.to_owned())
        }
    };
    super::upstream::apply(&mut envoy, target, config.module.buffer_limit_bytes);
    let context = match &target.tls {
        UpstreamTls::Plain => None,
        UpstreamTls::Tls => Some(None),
        UpstreamTls::Context(name) => Some(tls::context_by_name(config, name, None)),
    };
    if let Some(context) = context {
        let upstream = tls::upstream(sni.as_deref(), context, config, target.http2);
        envoy.transport_socket = Some(TransportSocket {
            name: "envoy.transport_sockets.tls".to_owned(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
                upstream,
            ))),
        });
    }
    envoy
}

/// The ClusterLoadAssignment of one Service port: endpoints grouped by zone (no zone
/// first), each sorted by address; empty while the Service's endpoints are unknown.
fn assignment(
    cluster_name: String,
    endpoints: &[crate::endpoints::Endpoint],
) -> ClusterLoadAssignment {
    let mut by_zone: BTreeMap<Option<&str>, BTreeSet<&crate::endpoints::Endpoint>> =
        BTreeMap::new();
    for endpoint in endpoints {
        by_zone
            .entry(endpoint.zone.as_deref())
            .or_default()
            .insert(endpoint);
    }
    let localities = by_zone
        .into_iter()
        .map(|(zone, endpoints)| {
            let mut seen = BTreeSet::new();
            LocalityLbEndpoints {
                locality: zone.map(|z| Locality {
                    zone: z.to_owned(),
                    ..Default::default()
                }),
                lb_endpoints: endpoints
                    .into_iter()
                    // One entry per address: Envoy rejects duplicates within a locality.
                    .filter(|e| seen.insert((e.ip, e.port)))
                    .map(|e| lb_endpoint(&e.ip.to_string(), e.port, health(e.health)))
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name,
        endpoints: localities,
        ..Default::default()
    }
}

fn health(health: EndpointHealth) -> HealthStatus {
    match health {
        EndpointHealth::Healthy => HealthStatus::Healthy,
        EndpointHealth::Draining => HealthStatus::Draining,
        EndpointHealth::Unhealthy => HealthStatus::Unhealthy,
    }
}

fn lb_endpoint(host: &str, port: u16, health: HealthStatus) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(host, port)),
            ..Default::default()
        })),
        health_status: health as i32,
        ..Default::default()
    }
}
