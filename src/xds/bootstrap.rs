//! The Envoy bootstrap that points a node at attache (what `attache bootstrap` prints).
//!
//! Everything dynamic comes over one ADS stream (so make-before-break ordering holds
//! across types): LDS and CDS name ADS as their source, the ADS stream runs over gRPC
//! (HTTP/2) to a static `xds_cluster`, state-of-the-world or delta. The only static
//! resource is that cluster; the admin interface listens on loopback only.
//!
//! The function returns the protobuf; rendering it (JSON/YAML, or binary for a `*.pb`
//! file, which Envoy reads as a binary proto) is the caller's business.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap, bootstrap};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, GrpcService,
    Http2ProtocolOptions, Node, SocketAddress, address, api_config_source, config_source,
    grpc_service, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::{Duration, Struct, Value, value};
use envoy_types::util::pack_any;
use prost::Name;

use super::{Error, Result};

/// The static cluster the ADS stream goes to.
pub const XDS_CLUSTER: &str = "xds_cluster";

/// What the bootstrap says about the node and where attache is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapConfig {
    /// `node.id`: the name attache knows this Envoy by (its per-node state, `/diag`).
    pub node_id: String,
    /// `node.cluster`: the node's group (`--canary cluster=NAME` matches it).
    pub cluster: String,
    /// `node.metadata`, as strings (`--canary metadata.KEY=VALUE` matches it).
    pub metadata: BTreeMap<String, String>,
    /// attache's ADS address, `HOST:PORT` (`[V6]:PORT` for IPv6). An IP gives a STATIC
    /// cluster, a DNS name a STRICT_DNS one.
    pub xds_address: String,
    /// Incremental (delta) ADS instead of state-of-the-world.
    pub delta: bool,
    /// Port of Envoy's admin interface, on 127.0.0.1.
    pub admin_port: u16,
}

/// Builds the bootstrap for one node.
///
/// # Errors
///
/// [`Error::InvalidAddress`] when `xds_address` is not `HOST:PORT`.
pub fn ads_bootstrap(config: &BootstrapConfig) -> Result<Bootstrap> {
    let (host, port) = split_host_port(&config.xds_address)?;
    let ads_source = ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    };
    let api_type = if config.delta {
        api_config_source::ApiType::DeltaGrpc
    } else {
        api_config_source::ApiType::Grpc
    };
    let ads_config = ApiConfigSource {
        api_type: api_type as i32,
        transport_api_version: ApiVersion::V3 as i32,
        grpc_services: vec![GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: XDS_CLUSTER.to_owned(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        // The node is cached from the first request of each stream (issue 3).
        set_node_on_first_message_only: true,
        ..Default::default()
    };
    let metadata = (!config.metadata.is_empty()).then(|| Struct {
        fields: config
            .metadata
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value {
                        kind: Some(value::Kind::StringValue(v.clone())),
                    },
                )
            })
            .collect(),
    });
    Ok(Bootstrap {
        node: Some(Node {
            id: config.node_id.clone(),
            cluster: config.cluster.clone(),
            metadata,
            ..Default::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            clusters: vec![xds_cluster(&host, port)],
            ..Default::default()
        }),
        dynamic_resources: Some(bootstrap::DynamicResources {
            lds_config: Some(ads_source.clone()),
            cds_config: Some(ads_source),
            ads_config: Some(ads_config),
            ..Default::default()
        }),
        admin: Some(Admin {
            address: Some(socket(
                &IpAddr::from([127, 0, 0, 1]).to_string(),
                config.admin_port,
            )),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The HTTP/2 cluster of attache itself.
fn xds_cluster(host: &str, port: u16) -> Cluster {
    use cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily};
    let ip = host.parse::<IpAddr>().is_ok();
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    Cluster {
        name: XDS_CLUSTER.to_owned(),
        connect_timeout: Some(duration(StdDuration::from_secs(1))),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(if ip {
            DiscoveryType::Static as i32
        } else {
            DiscoveryType::StrictDns as i32
        })),
        dns_lookup_family: if ip {
            DnsLookupFamily::Auto as i32
        } else {
            DnsLookupFamily::V4Only as i32
        },
        typed_extension_protocol_options: HashMap::from([(
            HttpProtocolOptions::full_name(),
            pack_any(options),
        )]),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: XDS_CLUSTER.to_owned(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(host, port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn socket(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn duration(d: StdDuration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// `HOST:PORT` or `[V6]:PORT` into the bare host and the port.
fn split_host_port(text: &str) -> Result<(String, u16)> {
    let bad = || Error::InvalidAddress(text.to_owned());
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(address: &str, delta: bool) -> BootstrapConfig {
        BootstrapConfig {
            node_id: "edge-1".into(),
            cluster: "edge".into(),
            metadata: BTreeMap::from([("canary".into(), "true".into())]),
            xds_address: address.into(),
            delta,
            admin_port: 9901,
        }
    }

    #[test]
    fn points_lds_and_cds_at_ads_over_grpc() {
        let b = ads_bootstrap(&config("127.0.0.1:18000", false)).expect("valid address");
        let node = b.node.expect("node");
        assert_eq!(
            (node.id.as_str(), node.cluster.as_str()),
            ("edge-1", "edge")
        );
        assert!(
            node.metadata
                .expect("metadata")
                .fields
                .contains_key("canary")
        );
        let dynamic = b.dynamic_resources.expect("dynamic resources");
        let ads = dynamic.ads_config.expect("ads config");
        assert_eq!(ads.api_type, api_config_source::ApiType::Grpc as i32);
        assert_eq!(ads.transport_api_version, ApiVersion::V3 as i32);
        for source in [dynamic.lds_config, dynamic.cds_config] {
            let source = source.expect("lds and cds configured");
            assert!(matches!(
                source.config_source_specifier,
                Some(config_source::ConfigSourceSpecifier::Ads(_))
            ));
            assert_eq!(source.resource_api_version, ApiVersion::V3 as i32);
        }
        let cluster = &b.static_resources.expect("static").clusters[0];
        assert_eq!(cluster.name, XDS_CLUSTER);
        assert_eq!(
            cluster.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32
            ))
        );
        assert!(
            cluster
                .typed_extension_protocol_options
                .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        );
    }

    #[test]
    fn delta_and_dns_names() {
        let b = ads_bootstrap(&config("attache.gw.svc:18000", true)).expect("valid address");
        let ads = b.dynamic_resources.and_then(|d| d.ads_config).expect("ads");
        assert_eq!(ads.api_type, api_config_source::ApiType::DeltaGrpc as i32);
        let cluster = &b.static_resources.expect("static").clusters[0];
        assert_eq!(
            cluster.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::StrictDns as i32
            ))
        );
        assert!(ads_bootstrap(&config("[::1]:18000", false)).is_ok());
    }

    #[test]
    fn bad_addresses_are_named() {
        for bad in [
            "",
            "host",
            "host:",
            "host:http",
            ":80",
            "::1:80",
            "[::1:80",
            "h:0",
        ] {
            let err = ads_bootstrap(&config(bad, false)).expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
