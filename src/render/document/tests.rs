use serde_json::json;

use super::*;
use crate::render::testing::{CERT, KEY, example_resources};

#[test]
fn resources_document_lists_every_type_in_order() {
    let resources = example_resources();
    let doc = resources_document(&resources).expect("renders");
    let keys: Vec<&str> = doc
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["clusters", "endpoints", "listeners", "routes", "secrets"]
    );
    let names = |key: &str, field: &str| -> Vec<String> {
        doc[key]
            .as_array()
            .expect("a list")
            .iter()
            .map(|r| r[field].as_str().expect("named").to_owned())
            .collect()
    };
    let expected: Vec<String> = resources.clusters.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names("clusters", "name"), expected);
    let expected: Vec<String> = resources.routes.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names("routes", "name"), expected);
    let expected: Vec<String> = resources
        .endpoints
        .iter()
        .map(|e| e.cluster_name.clone())
        .collect();
    assert_eq!(names("endpoints", "cluster_name"), expected);
}

#[test]
fn resources_document_never_shows_a_private_key() {
    let resources = example_resources();
    let doc = resources_document(&resources).expect("renders");
    let key_line = KEY.lines().nth(1).expect("a PEM key has a base64 line");
    let cert_line = CERT.lines().nth(1).expect("a PEM cert has a base64 line");
    for format in [Format::Json, Format::Yaml] {
        let text = to_text(&doc, format).expect("serializes");
        assert!(!text.contains(key_line), "{format:?} output leaks the key");
        assert!(
            !text.contains("PRIVATE KEY"),
            "{format:?} output leaks the key"
        );
        // The certificate is public and worth seeing.
        assert!(
            text.contains(cert_line),
            "{format:?} output shows the certificate"
        );
    }
    let secret = &doc["secrets"][0];
    assert_eq!(secret["tls_certificate"]["private_key"], REDACTED);
}

#[test]
fn redaction_reaches_keys_inlined_anywhere() {
    let mut value = json!({
        "listeners": [{
            "transport_socket": { "typed_config": { "common_tls_context": {
                "tls_certificates": [{
                    "certificate_chain": { "inline_string": "public" },
                    "private_key": { "inline_string": "secret" },
                    "password": { "inline_string": "secret" }
                }]
            }}},
            "session_ticket_keys": { "keys": [{ "inline_bytes": "c2VjcmV0" }] }
        }]
    });
    redact(&mut value);
    let text = value.to_string();
    assert!(!text.contains("secret\""), "{text}");
    assert!(text.contains("public"), "{text}");
}

#[test]
fn yaml_and_json_text_parse_back_to_the_same_value() {
    let doc = resources_document(&example_resources()).expect("renders");
    let json_text = to_text(&doc, Format::Json).expect("json");
    let back: serde_json::Value = serde_json::from_str(&json_text).expect("valid JSON");
    assert_eq!(back, doc);
    let yaml_text = to_text(&doc, Format::Yaml).expect("yaml");
    assert!(yaml_text.ends_with('\n'));
    let back: serde_json::Value = serde_saphyr::from_str(&yaml_text).expect("valid YAML");
    assert_eq!(back, doc);
}

#[test]
fn whole_doubles_print_as_integers_and_fractions_stay() {
    let mut value = json!({ "line": 59.0, "ratio": 0.25, "big": 1e300, "n": [2.0, -3.0], "i": 7 });
    whole_numbers(&mut value);
    assert_eq!(
        value.to_string(),
        r#"{"big":1e+300,"i":7,"line":59,"n":[2,-3],"ratio":0.25}"#
    );

    let doc = resources_document(&example_resources()).expect("renders");
    let text = to_text(&doc, Format::Yaml).expect("yaml");
    assert!(
        !text.contains(".0\n"),
        "provenance lines are integers:\n{text}"
    );
}

#[test]
fn the_streamed_document_is_the_same_document() {
    let resources = example_resources();
    let doc = resources_document(&resources).expect("renders");
    let mut json_text = Vec::new();
    write_resources(&resources, Format::Json, &mut json_text).expect("streams json");
    let back: serde_json::Value = serde_json::from_slice(&json_text).expect("valid JSON");
    assert_eq!(back, doc);
    let mut yaml_text = Vec::new();
    write_resources(&resources, Format::Yaml, &mut yaml_text).expect("streams yaml");
    let back: serde_json::Value = serde_saphyr::from_slice(&yaml_text).expect("valid YAML");
    assert_eq!(back, doc);
    // Private keys stay out of the streamed form too.
    let key_line = KEY.lines().nth(1).expect("a key body line");
    assert!(!String::from_utf8_lossy(&yaml_text).contains(key_line));
    assert!(!String::from_utf8_lossy(&json_text).contains(key_line));
}

#[test]
fn empty_resources_stream_as_empty_lists() {
    let empty = Resources::default();
    for format in [Format::Json, Format::Yaml] {
        let mut text = Vec::new();
        write_resources(&empty, format, &mut text).expect("streams");
        let back: serde_json::Value = match format {
            Format::Json => serde_json::from_slice(&text).expect("json"),
            Format::Yaml => serde_saphyr::from_slice(&text).expect("yaml"),
        };
        assert_eq!(
            back,
            resources_document(&empty).expect("renders"),
            "{format:?}"
        );
    }
}

#[test]
fn route_configurations_stream_with_empty_and_bare_virtual_hosts() {
    use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
    let route = |name: &str| Route {
        name: name.to_owned(),
        ..Default::default()
    };
    let resources = Resources {
        routes: vec![
            RouteConfiguration::default(),
            RouteConfiguration {
                name: "rc".to_owned(),
                virtual_hosts: vec![
                    VirtualHost::default(),
                    VirtualHost {
                        routes: vec![Route::default(), route("a")],
                        ..Default::default()
                    },
                    VirtualHost {
                        name: "named".to_owned(),
                        domains: vec!["*".to_owned()],
                        routes: vec![route("b"), route("c")],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let doc = resources_document(&resources).expect("renders");
    for format in [Format::Json, Format::Yaml] {
        let mut text = Vec::new();
        write_resources(&resources, format, &mut text).expect("streams");
        let back: serde_json::Value = match format {
            Format::Json => serde_json::from_slice(&text).expect("json"),
            Format::Yaml => serde_saphyr::from_slice(&text).expect("yaml"),
        };
        assert_eq!(back, doc, "{format:?}:\n{}", String::from_utf8_lossy(&text));
    }
}
