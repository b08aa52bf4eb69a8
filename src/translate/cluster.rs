//! Clusters and ClusterLoadAssignments: one cluster per distinct Mapping target.
//!
//! A Kubernetes Service becomes an EDS cluster whose endpoints come on the ADS stream (one
//! ClusterLoadAssignment per Service port, shared by every cluster that targets it), so an
//! endpoint change sends one small EDS update and leaves clusters alone. An address with
//! an IP becomes a STATIC cluster, a DNS name a STRICT_DNS one; both carry their single
//! endpoint inline. Outside Kubernetes ([`Resolution::Dns`]) a Service is a DNS name too:
//! `name.namespace.svc.cluster.local`.

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
use crate::config::{Config, Meta, Service, ServicePort, Target, UpstreamTls};
use crate::endpoints::{EndpointHealth, Endpoints, Resolution, ServiceKey};

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
        crate::parallel::map(&by_name, crate::parallel::SMALL_ITEMS, |(name, target)| {
            let provenance = users
                .get(target)
                .and_then(|metas| Provenance::shared(metas.iter().copied()));
            cluster(config, target, name, provenance, &endpoints.resolution)
        });
    let assignments = assignments(names.keys(), endpoints, None);
    (clusters, assignments)
}

/// The ClusterLoadAssignment of every Kubernetes Service port among `targets`, by name;
/// none in DNS mode, where clusters resolve their endpoints themselves. With `since`,
/// only those whose endpoints differ from `since`'s.
pub(super) fn assignments<'a>(
    targets: impl IntoIterator<Item = &'a Target>,
    endpoints: &Endpoints,
    since: Option<&Endpoints>,
) -> Vec<ClusterLoadAssignment> {
    if endpoints.resolution != Resolution::Eds {
        return Vec::new();
    }
    // After a change of resolution everything is new.
    let since = since.filter(|old| old.resolution == endpoints.resolution);
    let services = service_keys(targets);
    let mut out: Vec<ClusterLoadAssignment> = services
        .iter()
        .filter(|key| since.is_none_or(|old| old.get(key) != endpoints.get(key)))
        .map(|key| assignment(names::eds_service(key), endpoints.get(key)))
        .collect();
    // Not the key order: `k8s/a-b/x` sorts before `k8s/a/x`.
    out.sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    out
}

/// The Kubernetes Service ports among `targets`: one ClusterLoadAssignment each.
pub(super) fn service_keys<'a>(
    targets: impl IntoIterator<Item = &'a Target>,
) -> BTreeSet<ServiceKey> {
    targets
        .into_iter()
        .filter_map(|target| match &target.service {
            Service::Kubernetes {
                name,
                namespace,
                port,
            } => Some(names::service_key(name, namespace, port.as_ref())),
            Service::Address { .. } => None,
        })
        .collect()
}

pub(super) fn cluster(
    config: &Config,
    target: &Target,
    name: &str,
    provenance: Option<Provenance>,
    resolution: &Resolution,
) -> Cluster {
    use cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig};
    let mut envoy = Cluster {
        name: name.to_owned(),
        connect_timeout: Some(duration_ms(target.connect_timeout_ms)),
        metadata: provenance.map(|p| p.to_metadata()),
        ..Default::default()
    };
    let peer = match (&target.service, resolution) {
        (
            Service::Kubernetes {
                name: service,
                namespace,
                port,
            },
            Resolution::Dns { cluster_domain },
        ) => {
            let host = format!("{service}.{namespace}.svc.{cluster_domain}");
            // Emissary's defaults for a Service without a port; a port *name* needs the
            // Service object, which DNS cannot give (endpoints::missing_services warns).
            let port = match port {
                Some(ServicePort::Number(n)) => Some(*n),
                Some(ServicePort::Name(_)) => None,
                None if target.tls == UpstreamTls::Plain => Some(80),
                None => Some(443),
            };
            envoy.dns_lookup_family = DnsLookupFamily::V4Only as i32;
            envoy.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
            envoy.load_assignment = Some(ClusterLoadAssignment {
                cluster_name: name.to_owned(),
                endpoints: port
                    .map(|port| LocalityLbEndpoints {
                        lb_endpoints: vec![lb_endpoint(&host, port, HealthStatus::Unknown)],
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            });
            tls::PeerName::Dns(format!("{service}.{namespace}"))
        }
        (
            Service::Kubernetes {
                name: service,
                namespace,
                port,
            },
            Resolution::Eds,
        ) => {
            let key = names::service_key(service, namespace, port.as_ref());
            envoy.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            envoy.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(tls::ads()),
                service_name: names::eds_service(&key),
            });
            tls::PeerName::Dns(format!("{service}.{namespace}"))
        }
        (Service::Address { host, port }, _) => {
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
            match ip {
                Some(ip) => tls::PeerName::Ip(ip),
                None => tls::PeerName::Dns(bare.to_owned()),
            }
        }
    };
    super::upstream::apply(&mut envoy, target, config.module.buffer_limit_bytes);
    let context = match &target.tls {
        UpstreamTls::Plain => None,
        UpstreamTls::Tls => Some(None),
        UpstreamTls::Context(r) => Some(tls::upstream_context(config, r)),
    };
    if let Some(context) = context {
        let upstream = tls::upstream(&peer, context, config, target.http2);
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
///
/// Endpoints that are neither ready nor serving are left out rather than sent as
/// UNHEALTHY: below 50 % healthy hosts Envoy's panic mode balances over *every* host
/// it knows, and Kubernetes never wants traffic on a pod that fails readiness. Draining
/// (serving, terminating) ones stay, as DRAINING: new requests avoid them while ready
/// pods exist, and when none does panic mode falls back to them, as kube-proxy does.
pub(super) fn assignment(
    cluster_name: String,
    endpoints: &[crate::endpoints::Endpoint],
) -> ClusterLoadAssignment {
    let mut by_zone: BTreeMap<Option<&str>, BTreeSet<&crate::endpoints::Endpoint>> =
        BTreeMap::new();
    for endpoint in endpoints
        .iter()
        .filter(|e| e.health != EndpointHealth::Unhealthy)
    {
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
