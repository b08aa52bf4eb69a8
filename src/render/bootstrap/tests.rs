use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use super::*;
use crate::render::document::{Format, bootstrap_document, to_text};
use crate::render::testing::{KEY, envoy_validate, example_resources};

fn hcms(listener: &Listener) -> Vec<HttpConnectionManager> {
    listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.as_ref())
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any))
                if any.type_url == HttpConnectionManager::type_url() =>
            {
                Some(HttpConnectionManager::decode(any.value.as_slice()).expect("valid HCM"))
            }
            _ => None,
        })
        .collect()
}

fn downstream_contexts(listener: &Listener) -> Vec<DownstreamTlsContext> {
    listener
        .filter_chains
        .iter()
        .filter_map(|c| c.transport_socket.as_ref())
        .filter_map(|s| match &s.config_type {
            Some(transport_socket::ConfigType::TypedConfig(any)) => {
                DownstreamTlsContext::decode(any.value.as_slice()).ok()
            }
            None => None,
        })
        .collect()
}

#[test]
fn example_repo_resources_are_all_inline() {
    let resources = example_resources();
    // The example exercises every kind of reference this module resolves.
    assert!(!resources.secrets.is_empty(), "example-repo has a TLS Host");
    assert!(
        !resources.endpoints.is_empty(),
        "example-repo has a Kubernetes service"
    );

    let admin: SocketAddr = ([127, 0, 0, 1], 9901).into();
    let bootstrap = static_bootstrap(&resources, Some(admin));
    let statics = bootstrap.static_resources.expect("static resources");

    let admin_address = bootstrap
        .admin
        .and_then(|a| a.address)
        .and_then(|a| a.address);
    let Some(address::Address::SocketAddress(sa)) = admin_address else {
        panic!("admin address missing");
    };
    assert_eq!(sa.address, "127.0.0.1");
    assert_eq!(
        sa.port_specifier,
        Some(socket_address::PortSpecifier::PortValue(9901))
    );

    assert_eq!(statics.listeners.len(), resources.listeners.len());
    let mut tls_chains = 0;
    for listener in &statics.listeners {
        let hcms = hcms(listener);
        assert!(!hcms.is_empty(), "{} has an HCM", listener.name);
        for hcm in hcms {
            let Some(RouteSpecifier::RouteConfig(inline)) = hcm.route_specifier else {
                panic!("{}: route config not inline", listener.name);
            };
            let original = resources
                .routes
                .iter()
                .find(|r| r.name == inline.name)
                .expect("inline route config is one of the translated ones");
            assert_eq!(&inline, original);
        }
        for context in downstream_contexts(listener) {
            tls_chains += 1;
            let common = context.common_tls_context.expect("common context");
            assert!(!common.tls_certificate_sds_secret_configs.is_empty());
            for sds in &common.tls_certificate_sds_secret_configs {
                assert_eq!(sds.sds_config, None, "{}", sds.name);
                assert!(statics.secrets.iter().any(|s| s.name == sds.name));
            }
        }
    }
    assert!(tls_chains > 0, "the TLS Host's filter chain was checked");

    assert_eq!(statics.clusters.len(), resources.clusters.len());
    let mut were_eds = 0;
    for (cluster, original) in statics.clusters.iter().zip(&resources.clusters) {
        assert_eq!(cluster.eds_cluster_config, None, "{}", cluster.name);
        if original.eds_cluster_config.is_some() {
            were_eds += 1;
            assert_eq!(
                cluster.cluster_discovery_type,
                Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
            );
            let assignment = cluster.load_assignment.as_ref().expect("inline endpoints");
            assert_eq!(assignment.cluster_name, cluster.name);
        }
    }
    assert!(were_eds > 0, "an EDS cluster was checked");
    assert_eq!(statics.secrets, resources.secrets);
}

#[test]
fn rds_naming_no_route_configuration_gets_an_empty_one() {
    let mut resources = example_resources();
    let missing: RouteConfiguration = resources.routes.remove(0);
    let statics = static_bootstrap(&resources, None)
        .static_resources
        .expect("static resources");
    let inline: Vec<RouteConfiguration> = statics
        .listeners
        .iter()
        .flat_map(hcms)
        .filter_map(|h| match h.route_specifier {
            Some(RouteSpecifier::RouteConfig(r)) => Some(r),
            _ => None,
        })
        .collect();
    let empty = inline
        .iter()
        .find(|r| r.name == missing.name)
        .expect("the listener that named it still has a route config");
    assert!(empty.virtual_hosts.is_empty());
}

#[test]
fn example_repo_bootstrap_passes_envoy_validate_as_json_and_yaml() {
    let resources = example_resources();
    let doc = bootstrap_document(&resources, Some(([127, 0, 0, 1], 0).into())).expect("renders");
    let json = to_text(&doc, Format::Json).expect("json");
    let yaml = to_text(&doc, Format::Yaml).expect("yaml");
    // Envoy needs the key to serve TLS: the bootstrap keeps it.
    let key_line = KEY.lines().nth(1).expect("a PEM key has a base64 line");
    assert!(
        json.contains(key_line),
        "bootstrap JSON holds the private key"
    );
    assert!(
        yaml.contains(key_line),
        "bootstrap YAML holds the private key"
    );
    envoy_validate(&json, "json").unwrap_or_else(|e| panic!("{e}"));
    envoy_validate(&yaml, "yaml").unwrap_or_else(|e| panic!("{e}"));
}
