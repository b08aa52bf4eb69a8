//! The Envoy bootstrap that points a node at attache (what `attache bootstrap` prints).
//!
//! Everything dynamic comes over one ADS stream (so make-before-break ordering holds
//! across types): LDS and CDS name ADS as their source, the ADS stream runs over gRPC
//! (HTTP/2) to a static `xds_cluster`, state-of-the-world or delta. The only static
//! resource is that cluster; the admin interface listens on loopback only.
//!
//! With [`ClientTls`] the ADS connection is TLS with a client certificate (what `attache
//! serve --xds-tls-*` requires): Envoy reads its certificate, key and the CA that signed
//! attache's certificate from files, so no key is ever part of the bootstrap text, and
//! checks that attache's certificate names the server (a DNS name or an IP SAN).
//!
//! The function returns the protobuf; rendering it (JSON/YAML, or binary for a `*.pb`
//! file, which Envoy reads as a binary proto) is the caller's business.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::bootstrap::v3::{Admin, Bootstrap, bootstrap};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, DataSource,
    GrpcService, Http2ProtocolOptions, Node, PathConfigSource, SocketAddress, TransportSocket,
    WatchedDirectory, address, api_config_source, config_source, data_source, grpc_service,
    socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, Secret, SubjectAltNameMatcher,
    TlsCertificate, UpstreamTlsContext, common_tls_context, secret, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
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

/// TLS from Envoy to attache (`attache bootstrap --xds-tls-cert ...`). Paths are written
/// as they are given: they are where Envoy finds the files, which may be another machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// Envoy's client certificate chain (PEM), signed by a CA in attache's
    /// `--xds-client-ca`.
    pub cert: String,
    /// The private key of `cert` (PEM).
    pub key: String,
    /// The CA certificates (PEM) attache's server certificate must chain to.
    pub ca: String,
    /// The name attache's certificate must carry as a SAN, and the SNI sent (a DNS name;
    /// an IP is matched as an IP SAN and sends no SNI). Default: the host of the xDS
    /// address.
    pub server_name: Option<String>,
    /// A directory holding the [`sds_files`]: when set, Envoy takes its certificate, key
    /// and CA through file-based SDS, which watches the files and reloads them when they
    /// change (cert-manager renewing a Secret volume), where files named in the
    /// bootstrap itself are read once, at start.
    pub sds_dir: Option<String>,
}

/// The file-based SDS config of Envoy's client certificate, in [`ClientTls::sds_dir`].
pub const CLIENT_CERT_SDS_FILE: &str = "xds-client-certificate.json";
/// The file-based SDS config of the CA attache's certificate must chain to.
pub const SERVER_CA_SDS_FILE: &str = "xds-server-ca.json";
const CLIENT_CERT_SECRET: &str = "attache_xds_client_certificate";
const SERVER_CA_SECRET: &str = "attache_xds_server_ca";

/// Builds the bootstrap for one node.
///
/// # Errors
///
/// [`Error::InvalidAddress`] when `xds_address` is not `HOST:PORT`.
pub fn ads_bootstrap(config: &BootstrapConfig) -> Result<Bootstrap> {
    ads_bootstrap_with_tls(config, None)
}

/// [`ads_bootstrap`], with the ADS connection over TLS when `tls` is given.
///
/// # Errors
///
/// [`Error::InvalidAddress`] when `xds_address` is not `HOST:PORT`;
/// [`Error::InvalidServerName`] when the server name is empty or holds blanks.
pub fn ads_bootstrap_with_tls(
    config: &BootstrapConfig,
    tls: Option<&ClientTls>,
) -> Result<Bootstrap> {
    let (host, port) = split_host_port(&config.xds_address)?;
    let mut xds_cluster = xds_cluster(&host, port);
    if let Some(tls) = tls {
        xds_cluster.transport_socket = Some(tls_socket(tls, &host)?);
    }
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
            clusters: vec![xds_cluster],
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

/// What goes in [`ClientTls::sds_dir`] for the bootstrap that names it: (file name,
/// contents) of the two file-based SDS configs, each a `DiscoveryResponse` holding one
/// Secret that names the PEM files. The caller writes them, rendered as JSON.
pub fn sds_files(tls: &ClientTls) -> Vec<(&'static str, DiscoveryResponse)> {
    let certificate = Secret {
        name: CLIENT_CERT_SECRET.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(file(&tls.cert)),
            private_key: Some(file(&tls.key)),
            // Reloading on the directory reads the pair together, so a renewal that
            // swaps both (a Secret volume's `..data`) is never seen half done.
            watched_directory: shared_parent(&tls.cert, &tls.key).map(watch),
            ..Default::default()
        })),
    };
    let ca = Secret {
        name: SERVER_CA_SECRET.to_owned(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(file(&tls.ca)),
                watched_directory: parent(&tls.ca).map(watch),
                ..Default::default()
            },
        )),
    };
    let response = |secret: Secret| DiscoveryResponse {
        version_info: "file".to_owned(),
        resources: vec![pack_any(secret)],
        type_url: Secret::type_url(),
        ..Default::default()
    };
    vec![
        (CLIENT_CERT_SDS_FILE, response(certificate)),
        (SERVER_CA_SDS_FILE, response(ca)),
    ]
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_owned())),
        ..Default::default()
    }
}

fn watch(dir: &str) -> WatchedDirectory {
    // Moves only: renewals (cert-manager, a Secret volume's `..data` swap, `mv` of a
    // finished file) are renames, and a half-written file must not be read.
    WatchedDirectory {
        path: dir.to_owned(),
        watch_modify: false,
    }
}

/// The directory part of `path`, when it has one.
fn parent(path: &str) -> Option<&str> {
    match path.rsplit_once('/') {
        Some(("", _)) => Some("/"),
        Some((dir, _)) => Some(dir),
        None => None,
    }
}

fn shared_parent<'p>(a: &'p str, b: &str) -> Option<&'p str> {
    parent(a).filter(|dir| parent(b) == Some(*dir))
}

/// A file-based SDS source: Envoy reloads `dir/file` when an entry of `dir` is moved to,
/// which is how a ConfigMap or Secret volume is updated.
fn sds_path(dir: &str, file: &str, name: &str) -> SdsSecretConfig {
    let dir = dir.trim_end_matches('/');
    let dir = if dir.is_empty() { "/" } else { dir };
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::PathConfigSource(
                PathConfigSource {
                    path: format!("{}/{file}", dir.trim_end_matches('/')),
                    watched_directory: Some(watch(dir)),
                    poll_interval: None,
                },
            )),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// The `envoy.transport_sockets.tls` socket of the xDS cluster: Envoy's certificate
/// from files (directly, or through file-based SDS with `tls.sds_dir`), attache's
/// checked against `tls.ca` and the server name, ALPN `h2`.
fn tls_socket(tls: &ClientTls, xds_host: &str) -> Result<TransportSocket> {
    let name = tls.server_name.as_deref().unwrap_or(xds_host);
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(Error::InvalidServerName(name.to_owned()));
    }
    // SNI carries host names only (RFC 6066 section 3); an IP is matched as an IP SAN.
    let (san_type, sni) = match name.parse::<IpAddr>() {
        Ok(_) => (subject_alt_name_matcher::SanType::IpAddress, String::new()),
        Err(_) => (subject_alt_name_matcher::SanType::Dns, name.to_owned()),
    };
    let server_name = vec![SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(name.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut common = CommonTlsContext {
        alpn_protocols: vec!["h2".to_owned()],
        ..Default::default()
    };
    match &tls.sds_dir {
        None => {
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: Some(file(&tls.cert)),
                private_key: Some(file(&tls.key)),
                ..Default::default()
            }];
            common.validation_context_type = Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(file(&tls.ca)),
                        match_typed_subject_alt_names: server_name,
                        ..Default::default()
                    },
                ),
            );
        }
        Some(dir) => {
            common.tls_certificate_sds_secret_configs =
                vec![sds_path(dir, CLIENT_CERT_SDS_FILE, CLIENT_CERT_SECRET)];
            // The name check stays here, in the bootstrap, whatever the file holds.
            common.validation_context_type = Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: server_name,
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(sds_path(
                            dir,
                            SERVER_CA_SDS_FILE,
                            SERVER_CA_SECRET,
                        )),
                        ..Default::default()
                    },
                ),
            );
        }
    }
    let context = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni,
        ..Default::default()
    };
    Ok(TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
    })
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

    fn client_tls(server_name: Option<&str>) -> ClientTls {
        ClientTls {
            cert: "/etc/envoy/xds/tls.crt".into(),
            key: "/etc/envoy/xds/tls.key".into(),
            ca: "/etc/envoy/xds/ca.crt".into(),
            server_name: server_name.map(str::to_owned),
            sds_dir: None,
        }
    }

    /// The xds cluster's TLS context, decoded.
    fn tls_context(b: Bootstrap) -> UpstreamTlsContext {
        let cluster = b.static_resources.expect("static").clusters.remove(0);
        let socket = cluster.transport_socket.expect("tls transport socket");
        assert_eq!(socket.name, "envoy.transport_sockets.tls");
        let Some(transport_socket::ConfigType::TypedConfig(any)) = socket.config_type else {
            panic!("typed config expected");
        };
        assert_eq!(
            any.type_url,
            format!("type.googleapis.com/{}", UpstreamTlsContext::full_name())
        );
        <UpstreamTlsContext as prost::Message>::decode(any.value.as_slice()).expect("decodes")
    }

    fn san(context: &UpstreamTlsContext) -> (i32, String) {
        let common = context.common_tls_context.as_ref().expect("common");
        let Some(common_tls_context::ValidationContextType::ValidationContext(v)) =
            &common.validation_context_type
        else {
            panic!("validation context expected");
        };
        assert_eq!(
            v.trusted_ca.as_ref().and_then(|d| d.specifier.clone()),
            Some(data_source::Specifier::Filename(
                "/etc/envoy/xds/ca.crt".into()
            ))
        );
        let [matcher] = v.match_typed_subject_alt_names.as_slice() else {
            panic!("one SAN matcher");
        };
        let Some(string_matcher::MatchPattern::Exact(name)) = matcher
            .matcher
            .as_ref()
            .and_then(|m| m.match_pattern.clone())
        else {
            panic!("exact matcher");
        };
        (matcher.san_type, name)
    }

    #[test]
    fn tls_names_files_and_checks_the_server_name() {
        let b = ads_bootstrap_with_tls(
            &config("attache.gw.svc:18000", false),
            Some(&client_tls(None)),
        )
        .expect("valid");
        let context = tls_context(b);
        assert_eq!(context.sni, "attache.gw.svc");
        assert_eq!(
            san(&context),
            (
                subject_alt_name_matcher::SanType::Dns as i32,
                "attache.gw.svc".into()
            )
        );
        let common = context.common_tls_context.expect("common");
        assert_eq!(common.alpn_protocols, vec!["h2".to_owned()]);
        let [cert] = common.tls_certificates.as_slice() else {
            panic!("one client certificate");
        };
        // Files, never inline bytes: the key stays out of the bootstrap.
        assert_eq!(
            cert.private_key.as_ref().and_then(|d| d.specifier.clone()),
            Some(data_source::Specifier::Filename(
                "/etc/envoy/xds/tls.key".into()
            ))
        );
        assert_eq!(
            cert.certificate_chain
                .as_ref()
                .and_then(|d| d.specifier.clone()),
            Some(data_source::Specifier::Filename(
                "/etc/envoy/xds/tls.crt".into()
            ))
        );
    }

    #[test]
    fn tls_to_an_ip_matches_an_ip_san_without_sni() {
        let b = ads_bootstrap_with_tls(&config("127.0.0.1:18000", false), Some(&client_tls(None)))
            .expect("valid");
        let context = tls_context(b);
        assert_eq!(context.sni, "");
        assert_eq!(
            san(&context),
            (
                subject_alt_name_matcher::SanType::IpAddress as i32,
                "127.0.0.1".into()
            )
        );
        // An explicit name wins over the address.
        let b = ads_bootstrap_with_tls(
            &config("127.0.0.1:18000", false),
            Some(&client_tls(Some("attache-xds"))),
        )
        .expect("valid");
        let context = tls_context(b);
        assert_eq!(context.sni, "attache-xds");
        assert_eq!(
            san(&context),
            (
                subject_alt_name_matcher::SanType::Dns as i32,
                "attache-xds".into()
            )
        );
        for bad in ["", "attache xds"] {
            let err = ads_bootstrap_with_tls(
                &config("127.0.0.1:18000", false),
                Some(&client_tls(Some(bad))),
            )
            .expect_err(bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        // Without TLS the cluster is plaintext.
        let b = ads_bootstrap(&config("127.0.0.1:18000", false)).expect("valid");
        assert!(
            b.static_resources.expect("static").clusters[0]
                .transport_socket
                .is_none()
        );
    }

    /// With an SDS dir the bootstrap names no certificate file itself: Envoy takes both
    /// through file-based SDS, which it watches. The server-name check stays in the
    /// bootstrap.
    #[test]
    fn tls_through_sds_files_names_the_files_only_in_them() {
        let tls = ClientTls {
            sds_dir: Some("/etc/envoy/sds/".into()),
            ..client_tls(Some("attache-xds"))
        };
        let context = tls_context(
            ads_bootstrap_with_tls(&config("127.0.0.1:18000", false), Some(&tls)).expect("valid"),
        );
        assert_eq!(context.sni, "attache-xds");
        let common = context.common_tls_context.expect("common");
        assert!(common.tls_certificates.is_empty());
        let path_of = |sds: &SdsSecretConfig| match sds
            .sds_config
            .as_ref()
            .and_then(|c| c.config_source_specifier.clone())
        {
            Some(config_source::ConfigSourceSpecifier::PathConfigSource(p)) => (
                sds.name.clone(),
                p.path,
                p.watched_directory.map(|w| w.path),
            ),
            other => panic!("a path config source expected, got {other:?}"),
        };
        let [cert] = common.tls_certificate_sds_secret_configs.as_slice() else {
            panic!("one SDS certificate");
        };
        assert_eq!(
            path_of(cert),
            (
                CLIENT_CERT_SECRET.to_owned(),
                "/etc/envoy/sds/xds-client-certificate.json".to_owned(),
                Some("/etc/envoy/sds".to_owned())
            )
        );
        let Some(common_tls_context::ValidationContextType::CombinedValidationContext(combined)) =
            common.validation_context_type
        else {
            panic!("a combined validation context expected");
        };
        let defaults = combined.default_validation_context.expect("defaults");
        assert!(defaults.trusted_ca.is_none());
        let [matcher] = defaults.match_typed_subject_alt_names.as_slice() else {
            panic!("one SAN matcher");
        };
        assert_eq!(
            matcher.san_type,
            subject_alt_name_matcher::SanType::Dns as i32
        );
        let ca = combined.validation_context_sds_secret_config.expect("ca");
        assert_eq!(
            path_of(&ca).1,
            "/etc/envoy/sds/xds-server-ca.json".to_owned()
        );

        // The files name the PEM files and watch their directories.
        let files = sds_files(&tls);
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [CLIENT_CERT_SDS_FILE, SERVER_CA_SDS_FILE]);
        let secret = |response: &DiscoveryResponse| {
            let [any] = response.resources.as_slice() else {
                panic!("one resource");
            };
            assert_eq!(any.type_url, Secret::type_url());
            <Secret as prost::Message>::decode(any.value.as_slice()).expect("decodes")
        };
        let certificate = secret(&files[0].1);
        assert_eq!(certificate.name, cert.name);
        let Some(secret::Type::TlsCertificate(pair)) = certificate.r#type else {
            panic!("a certificate");
        };
        assert_eq!(
            pair.private_key.and_then(|d| d.specifier),
            Some(data_source::Specifier::Filename(
                "/etc/envoy/xds/tls.key".into()
            ))
        );
        assert_eq!(
            pair.watched_directory.map(|w| w.path).as_deref(),
            Some("/etc/envoy/xds")
        );
        let authority = secret(&files[1].1);
        assert_eq!(authority.name, ca.name);
        let Some(secret::Type::ValidationContext(v)) = authority.r#type else {
            panic!("a validation context");
        };
        assert_eq!(
            v.trusted_ca.and_then(|d| d.specifier),
            Some(data_source::Specifier::Filename(
                "/etc/envoy/xds/ca.crt".into()
            ))
        );
        // A key elsewhere than its certificate: no one directory holds the pair, so
        // Envoy's default (each file's directory) applies.
        let split = ClientTls {
            key: "/run/keys/tls.key".into(),
            ..tls
        };
        let Some(secret::Type::TlsCertificate(pair)) = secret(&sds_files(&split)[0].1).r#type
        else {
            panic!("a certificate");
        };
        assert!(pair.watched_directory.is_none());
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
