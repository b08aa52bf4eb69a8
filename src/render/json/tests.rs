use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{Http2ProtocolOptions, Metadata};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::{Any, Duration, Struct, Value, value};
use envoy_types::util::pack_any;
use prost::{Message, Name};
use serde_json::json;

use super::*;

fn http2_cluster() -> Cluster {
    use http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config,
    };
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    };
    let provenance = Struct {
        fields: [(
            "file".to_owned(),
            Value {
                kind: Some(value::Kind::StringValue("mappings/a.yaml".to_owned())),
            },
        )]
        .into(),
    };
    Cluster {
        name: "grpc_echo".to_owned(),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 500_000_000,
        }),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        )),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            pack_any(options),
        )]
        .into(),
        metadata: Some(Metadata {
            filter_metadata: [("attache".to_owned(), provenance)].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn rds_listener() -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: "ingress_http".to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: "listener-8080".to_owned(),
            config_source: None,
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: "listener-8080".to_owned(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn cluster_json_has_type_urls_proto_names_and_wkt_forms() {
    let json = to_json(&http2_cluster()).expect("renders");
    assert_eq!(
        json,
        json!({
            "name": "grpc_echo",
            "type": "STRICT_DNS",
            "connect_timeout": "1.500s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": { "http2_protocol_options": {} }
                }
            },
            "metadata": {
                "filter_metadata": { "attache": { "file": "mappings/a.yaml" } }
            }
        })
    );
}

#[test]
fn listener_json_unpacks_nested_anys() {
    let json = to_json(&rds_listener()).expect("renders");
    let hcm = &json["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["@type"], HttpConnectionManager::type_url());
    assert_eq!(hcm["stat_prefix"], "ingress_http");
    assert_eq!(hcm["rds"]["route_config_name"], "listener-8080");
    let router = &hcm["http_filters"][0];
    assert_eq!(router["name"], "envoy.filters.http.router");
    assert_eq!(
        router["typed_config"],
        json!({ "@type": Router::type_url() })
    );
}

#[test]
fn json_round_trips_to_the_same_bytes() {
    let cluster = http2_cluster();
    let back: Cluster = from_json(&to_json(&cluster).expect("renders")).expect("parses");
    assert_eq!(back, cluster);
    assert_eq!(back.encode_to_vec(), cluster.encode_to_vec());

    let listener = rds_listener();
    let back: Listener = from_json(&to_json(&listener).expect("renders")).expect("parses");
    assert_eq!(back.encode_to_vec(), listener.encode_to_vec());
}

#[test]
fn any_of_a_type_outside_the_descriptor_set_is_an_error_naming_it() {
    let mut listener = rds_listener();
    listener.filter_chains[0].filters[0].config_type = Some(filter::ConfigType::TypedConfig(Any {
        type_url: "type.googleapis.com/example.NotAnEnvoyType".to_owned(),
        value: vec![8, 1],
    }));
    let err = to_json(&listener).expect_err("unknown Any type");
    assert!(matches!(err, Error::Json { .. }), "{err:?}");
    let chain = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(chain.contains("example.NotAnEnvoyType"), "{chain}");
}

#[test]
fn from_json_rejects_unknown_fields_naming_the_type() {
    let err = from_json::<Cluster>(&json!({ "name": "a", "nmae": "typo" })).expect_err("typo");
    assert!(
        err.to_string().contains("envoy.config.cluster.v3.Cluster"),
        "{err}"
    );
}
