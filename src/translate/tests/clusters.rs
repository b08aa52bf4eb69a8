//! Service forms -> clusters: EDS for Kubernetes Services, STRICT_DNS for names, STATIC
//! for IPs; HTTP/2 for grpc, upstream TLS, connect timeouts, EDS assignments.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    HealthStatus, address, config_source, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, lb_endpoint,
};
use envoy_types::pb::envoy::config::route::v3::route_action;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    UpstreamTlsContext, tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use prost::Message;

use super::{load_yaml, run};
use crate::config::UpstreamTls;
use crate::endpoints::{Endpoint, EndpointHealth, Endpoints, ServiceKey};
use crate::translate::testing::*;
use crate::translate::translate;

fn cluster_of<'a>(resources: &'a crate::translate::Resources, name: &str) -> &'a Cluster {
    resources
        .clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = resources.clusters.iter().map(|c| c.name.as_str()).collect();
            panic!("no cluster {name} in {names:?}")
        })
}

fn discovery(c: &Cluster) -> cluster::DiscoveryType {
    match c.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => {
            cluster::DiscoveryType::try_from(t).expect("a known discovery type")
        }
        ref other => panic!("no discovery type: {other:?}"),
    }
}

/// (host, port) of one endpoint.
fn endpoint_address(e: &LbEndpoint) -> (String, u32) {
    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
        panic!("not an endpoint: {e:?}");
    };
    match ep.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => match sa.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) => (sa.address.clone(), p),
            ref other => panic!("no port value: {other:?}"),
        },
        other => panic!("not a socket address: {other:?}"),
    }
}

/// (host, port) of every endpoint of an assignment.
fn inline_endpoints(assignment: &ClusterLoadAssignment) -> Vec<(String, u32)> {
    assignment
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(endpoint_address)
        .collect()
}

fn upstream_tls(c: &Cluster) -> UpstreamTlsContext {
    let socket = c.transport_socket.as_ref().expect("a transport socket");
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    match &socket.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => {
            UpstreamTlsContext::decode(any.value.as_slice()).expect("an UpstreamTlsContext")
        }
        other => panic!("not typed: {other:?}"),
    }
}

/// The cluster a one-Mapping YAML config routes to.
fn yaml_cluster(service: &str, extra: &str) -> (Cluster, crate::translate::Resources) {
    let config = load_yaml(
        &format!(
            "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: m\n  namespace: shop\nspec:\n  prefix: /\n  service: {service}\n{extra}"
        ),
        &[],
    );
    let resources = run(&config);
    let route = &default_vhost(&resources, "*").routes[0];
    let name = match &action(route).cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
        other => panic!("{other:?}"),
    };
    (cluster_of(&resources, &name).clone(), resources)
}

#[test]
fn service_forms_map_to_the_right_cluster_kind() {
    // (service, cluster name, discovery type, EDS service name or inline endpoint)
    let cases = [
        ("users", "cluster_users_shop", "k8s/shop/users"),
        ("users.other", "cluster_users_other", "k8s/other/users"),
        (
            "users:8080",
            "cluster_users_shop_8080",
            "k8s/shop/users:8080",
        ),
        (
            "users.other:http",
            "cluster_users_other_http",
            "k8s/other/users:http",
        ),
        (
            "users.other.svc.cluster.local:81",
            "cluster_users_other_81",
            "k8s/other/users:81",
        ),
    ];
    for (service, name, eds) in cases {
        let (c, resources) = yaml_cluster(service, "");
        assert_eq!(c.name, name, "{service}");
        assert_eq!(discovery(&c), cluster::DiscoveryType::Eds, "{service}");
        let eds_config = c.eds_cluster_config.as_ref().expect("an EDS config");
        assert_eq!(eds_config.service_name, eds, "{service}");
        assert!(
            matches!(
                eds_config
                    .eds_config
                    .as_ref()
                    .and_then(|s| s.config_source_specifier.as_ref()),
                Some(config_source::ConfigSourceSpecifier::Ads(_))
            ),
            "{service}: EDS over ADS"
        );
        assert!(c.load_assignment.is_none(), "{service}");
        // And its (empty, endpoints unknown) assignment is there for EDS to serve.
        let assignments: Vec<&str> = resources
            .endpoints
            .iter()
            .map(|a| a.cluster_name.as_str())
            .collect();
        assert_eq!(assignments, [eds], "{service}");
    }
}

#[test]
fn dns_names_are_strict_dns_and_ips_static() {
    let (c, resources) = yaml_cluster("api.example.com:8443", "");
    assert_eq!(c.name, "cluster_api_example_com_8443");
    assert_eq!(discovery(&c), cluster::DiscoveryType::StrictDns);
    assert_eq!(c.dns_lookup_family, cluster::DnsLookupFamily::V4Only as i32);
    assert_eq!(
        inline_endpoints(c.load_assignment.as_ref().expect("inline endpoints")),
        [("api.example.com".to_owned(), 8443)]
    );
    assert!(resources.endpoints.is_empty(), "no EDS for an address");

    let (c, _) = yaml_cluster("10.1.2.3:9000", "");
    assert_eq!(c.name, "cluster_10_1_2_3_9000");
    assert_eq!(discovery(&c), cluster::DiscoveryType::Static);
    assert_eq!(
        inline_endpoints(c.load_assignment.as_ref().expect("inline endpoints")),
        [("10.1.2.3".to_owned(), 9000)]
    );

    let (c, _) = yaml_cluster("\"[::1]:9000\"", "");
    assert_eq!(discovery(&c), cluster::DiscoveryType::Static);
    assert_eq!(
        inline_endpoints(c.load_assignment.as_ref().expect("inline endpoints")),
        [("::1".to_owned(), 9000)]
    );
    // The inline assignment names its own cluster.
    assert_eq!(
        c.load_assignment.as_ref().map(|a| a.cluster_name.as_str()),
        Some(c.name.as_str())
    );
}

#[test]
fn https_services_originate_tls_with_sni() {
    let (c, _) = yaml_cluster("https://api.example.com", "");
    assert_eq!(c.name, "cluster_api_example_com_443_tls");
    assert_eq!(discovery(&c), cluster::DiscoveryType::StrictDns);
    let tls = upstream_tls(&c);
    assert_eq!(tls.sni, "api.example.com");
    assert!(
        tls.common_tls_context
            .as_ref()
            .is_some_and(|c| c.tls_certificate_sds_secret_configs.is_empty())
    );

    // `tls: true` on a Kubernetes Service: SNI is the Service's name.namespace.
    let (c, _) = yaml_cluster("users:443", "  tls: true\n");
    assert_eq!(c.name, "cluster_users_shop_443_tls");
    assert_eq!(upstream_tls(&c).sni, "users.shop");

    // No SNI for an IP literal (RFC 6066).
    let (c, _) = yaml_cluster("https://10.0.0.1:8443", "");
    assert_eq!(upstream_tls(&c).sni, "");

    let (c, _) = yaml_cluster("users", "");
    assert!(c.transport_socket.is_none());
}

#[test]
fn tls_context_origination_uses_its_client_certificate_and_settings() {
    let config = load_yaml(
        r#"apiVersion: getambassador.io/v3alpha1
kind: TLSContext
metadata:
  name: upstream
  namespace: shop
spec:
  secret: client-cert
  min_tls_version: v1.2
  max_tls_version: v1.3
  alpn_protocols: h2,http/1.1
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: m
  namespace: shop
spec:
  prefix: /
  service: api.example.com:443
  tls: upstream
"#,
        &["client-cert"],
    );
    let resources = run(&config);
    let c = cluster_of(&resources, "cluster_api_example_com_443_tls_upstream");
    let tls = upstream_tls(c);
    assert_eq!(tls.sni, "api.example.com");
    let common = tls.common_tls_context.expect("a common context");
    let sds: Vec<&str> = common
        .tls_certificate_sds_secret_configs
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(sds, ["client-cert"]);
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
    // The client certificate is served over SDS.
    let secrets: Vec<&str> = resources.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(secrets, ["client-cert"]);
}

#[test]
fn grpc_speaks_http2_upstream() {
    let (c, _) = yaml_cluster("grpc-users:50051", "  grpc: true\n");
    assert_eq!(c.name, "cluster_grpc_users_shop_50051_h2");
    let any = c
        .typed_extension_protocol_options
        .get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        .expect("HTTP protocol options");
    let options = HttpProtocolOptions::decode(any.value.as_slice()).expect("decodes");
    assert!(matches!(
        options.upstream_protocol_options,
        Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(
                    http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(_)
                )
            }
        ))
    ));
    // gRPC over TLS offers ALPN h2.
    let (c, _) = yaml_cluster("https://grpc.example.com", "  grpc: true\n");
    let common = upstream_tls(&c)
        .common_tls_context
        .expect("a common context");
    assert_eq!(common.alpn_protocols, ["h2"]);

    let (c, _) = yaml_cluster("users", "");
    assert!(c.typed_extension_protocol_options.is_empty());
}

#[test]
fn connect_timeout_is_milliseconds_and_splits_clusters() {
    let (c, _) = yaml_cluster("users", "  connect_timeout_ms: 1500\n");
    assert_eq!(c.name, "cluster_users_shop_ct1500");
    let t = c.connect_timeout.expect("a connect timeout");
    assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
    let (c, _) = yaml_cluster("users", "");
    let t = c.connect_timeout.expect("a connect timeout");
    assert_eq!((t.seconds, t.nanos), (3, 0));
}

#[test]
fn mappings_with_one_target_share_one_cluster() {
    let resources = run(&config(
        vec![
            mapping("a", "/a/", "users"),
            mapping("b", "/b/", "users"),
            mapping("c", "/c/", "orders"),
        ],
        Vec::new(),
    ));
    let names: Vec<&str> = resources.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["cluster_orders_default_80", "cluster_users_default_80"]
    );
}

#[test]
fn clusters_of_one_service_port_share_its_assignment() {
    let mut tls = mapping("tls", "/tls/", "users");
    settings(&mut tls).target.tls = UpstreamTls::Tls;
    let mut h2 = mapping("h2", "/h2/", "users");
    settings(&mut h2).target.http2 = true;
    let resources = run(&config(
        vec![mapping("plain", "/", "users"), tls, h2],
        Vec::new(),
    ));
    let names: Vec<&str> = resources.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cluster_users_default_80",
            "cluster_users_default_80_h2",
            "cluster_users_default_80_tls"
        ]
    );
    for c in &resources.clusters {
        assert_eq!(
            c.eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.as_str()),
            Some("k8s/default/users:80"),
            "{}",
            c.name
        );
    }
    assert_eq!(resources.endpoints.len(), 1);
}

#[test]
fn eds_assignments_hold_the_known_endpoints_by_zone() {
    let key = ServiceKey {
        namespace: "default".into(),
        name: "users".into(),
        port: "80".into(),
    };
    let ep = |ip: &str, zone: Option<&str>, health| Endpoint {
        ip: ip.parse::<IpAddr>().expect("an IP"),
        port: 8080,
        health,
        zone: zone.map(str::to_owned),
    };
    let endpoints = Endpoints {
        generation: 1,
        services: [(
            key,
            vec![
                ep("10.0.0.2", Some("b"), EndpointHealth::Healthy),
                ep("10.0.0.1", Some("a"), EndpointHealth::Draining),
                ep("10.0.0.3", None, EndpointHealth::Unhealthy),
                ep("10.0.0.1", Some("a"), EndpointHealth::Draining),
            ],
        )]
        .into(),
        ..Endpoints::default()
    };
    let resources = translate(
        &config(vec![mapping("a", "/", "users")], Vec::new()),
        &endpoints,
    );
    let cla = &resources.endpoints[0];
    assert_eq!(cla.cluster_name, "k8s/default/users:80");
    let zones: Vec<Option<&str>> = cla
        .endpoints
        .iter()
        .map(|l| l.locality.as_ref().map(|l| l.zone.as_str()))
        .collect();
    // 10.0.0.3 is neither ready nor serving: left out, so Envoy's panic mode can never
    // send it traffic.
    assert_eq!(zones, [Some("a"), Some("b")]);
    let health: Vec<(String, i32)> = cla
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| (endpoint_address(e).0, e.health_status))
        .collect();
    assert_eq!(
        health,
        [
            ("10.0.0.1".to_owned(), HealthStatus::Draining as i32),
            ("10.0.0.2".to_owned(), HealthStatus::Healthy as i32),
        ]
    );
}

/// Issue 5: the fast path for an endpoints-only change gives exactly the assignments a
/// full translation gives, in name order (`k8s/a-b/...` before `k8s/a/...`).
#[test]
fn assignments_alone_equal_those_of_a_full_translation() {
    let mut a = mapping("a", "/a/", "web");
    settings(&mut a).target.service = crate::config::Service::Kubernetes {
        name: "web".into(),
        namespace: "a".into(),
        port: None,
    };
    let mut b = mapping("b", "/b/", "web");
    settings(&mut b).target.service = crate::config::Service::Kubernetes {
        name: "web".into(),
        namespace: "a-b".into(),
        port: Some(crate::config::ServicePort::Name("http".into())),
    };
    let c = mapping("c", "/c/", "users");
    let mut d = mapping("d", "/d/", "users");
    settings(&mut d).target.http2 = true;
    let config = config(vec![a, b, c, d], Vec::new());
    let key = ServiceKey {
        namespace: "default".into(),
        name: "users".into(),
        port: "80".into(),
    };
    let endpoints = Endpoints {
        generation: 3,
        services: [(
            key,
            vec![Endpoint {
                ip: "10.1.0.1".parse::<IpAddr>().expect("an IP"),
                port: 8080,
                health: EndpointHealth::Healthy,
                zone: None,
            }],
        )]
        .into(),
        ..Endpoints::default()
    };
    let fast = crate::translate::assignments(&config, &endpoints);
    assert_eq!(fast, translate(&config, &endpoints).endpoints);
    let names: Vec<&str> = fast.iter().map(|c| c.cluster_name.as_str()).collect();
    assert_eq!(
        names,
        ["k8s/a-b/web:http", "k8s/a/web", "k8s/default/users:80"]
    );
}

/// Issue 5: outside Kubernetes a Service target is a STRICT_DNS cluster on its cluster
/// DNS name; no assignments go over EDS.
#[test]
fn dns_mode_resolves_services_by_their_cluster_dns_name() {
    let mut named = mapping("named", "/n/", "users");
    settings(&mut named).target.service = crate::config::Service::Kubernetes {
        name: "users".into(),
        namespace: "shop".into(),
        port: Some(crate::config::ServicePort::Name("http".into())),
    };
    let mut bare_tls = mapping("tls", "/t/", "users");
    settings(&mut bare_tls).target.service = crate::config::Service::Kubernetes {
        name: "users".into(),
        namespace: "shop".into(),
        port: None,
    };
    settings(&mut bare_tls).target.tls = UpstreamTls::Tls;
    let mut external = mapping("x", "/x/", "x");
    settings(&mut external).target = address("api.example.com", 8443);
    let config = config(
        vec![mapping("a", "/a/", "users"), named, bare_tls, external],
        Vec::new(),
    );
    let resources = translate(&config, &Endpoints::dns("cluster.local"));
    assert!(resources.endpoints.is_empty());
    assert!(crate::translate::assignments(&config, &Endpoints::dns("x")).is_empty());
    let users = cluster_of(&resources, "cluster_users_default_80");
    assert_eq!(discovery(users), cluster::DiscoveryType::StrictDns);
    assert!(users.eds_cluster_config.is_none());
    assert_eq!(
        inline_endpoints(users.load_assignment.as_ref().expect("inline endpoints")),
        [("users.default.svc.cluster.local".to_owned(), 80)]
    );
    let tls = cluster_of(&resources, "cluster_users_shop_tls");
    assert_eq!(
        inline_endpoints(tls.load_assignment.as_ref().expect("inline endpoints")),
        [("users.shop.svc.cluster.local".to_owned(), 443)]
    );
    // SNI is still the Service's short name.
    assert_eq!(upstream_tls(tls).sni, "users.shop");
    // A port name cannot be resolved without the API: a cluster with no endpoints.
    let named = cluster_of(&resources, "cluster_users_shop_http");
    assert_eq!(discovery(named), cluster::DiscoveryType::StrictDns);
    assert!(inline_endpoints(named.load_assignment.as_ref().expect("assignment")).is_empty());
    // Plain host:port targets are as before.
    let x = cluster_of(&resources, "cluster_api_example_com_8443");
    assert_eq!(
        inline_endpoints(x.load_assignment.as_ref().expect("inline endpoints")),
        [("api.example.com".to_owned(), 8443)]
    );
}

#[test]
fn clusters_carry_the_provenance_of_every_mapping_using_them() {
    let resources = run(&config(
        vec![mapping("b", "/b/", "users"), mapping("a", "/a/", "users")],
        Vec::new(),
    ));
    let c = &resources.clusters[0];
    let p = crate::translate::provenance::Provenance::from_metadata(
        c.metadata.as_ref().expect("metadata"),
    )
    .expect("provenance");
    assert_eq!((p.kind.as_str(), p.name.as_str()), ("Mapping", "a"));
    assert_eq!(p.file, "mapping/a.yaml");
    assert_eq!(p.line, 3);
    assert_eq!(p.mappings, ["default/a", "default/b"]);
}
