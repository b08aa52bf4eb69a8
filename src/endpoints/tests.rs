//! Which Services a config references, and the warnings for those without endpoints.

use super::*;
use crate::config::{Options, SourceFile};

fn load(yaml: &str) -> Config {
    let files = [SourceFile {
        path: "mappings.yaml".to_owned(),
        bytes: yaml.as_bytes().to_vec(),
    }];
    let (config, _) = crate::config::load_files(&files, &Options::default())
        .into_result()
        .expect("a valid config");
    config
}

const MAPPINGS: &str = "\
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata: {name: users, namespace: shop}
spec: {hostname: '*', prefix: /users/, service: 'users:http'}
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata: {name: orders, namespace: shop}
spec: {hostname: '*', prefix: /orders/, service: orders.billing:8080}
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata: {name: external, namespace: shop}
spec: {hostname: '*', prefix: /ext/, service: 'api.example.com:443'}
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata: {name: moved, namespace: shop}
spec: {hostname: '*', prefix: /old/, host_redirect: true, service: new.example.com}
";

fn key(namespace: &str, name: &str, port: &str) -> ServiceKey {
    ServiceKey {
        namespace: namespace.into(),
        name: name.into(),
        port: port.into(),
    }
}

#[test]
fn only_routed_kubernetes_services_are_referenced() {
    let config = load(MAPPINGS);
    let got: Vec<ServiceKey> = referenced_services(&config).into_iter().collect();
    assert_eq!(
        got,
        [
            key("billing", "orders", "8080"),
            key("shop", "users", "http")
        ]
    );
}

/// Issue 5: a referenced Service with no slices is a warning naming the Mapping, its
/// file and line; a Service scaled to zero (a key with no endpoints) is not.
#[test]
fn services_without_slices_are_warnings_at_their_mapping() {
    let config = load(MAPPINGS);
    let endpoints = Endpoints {
        generation: 4,
        services: [(key("shop", "users", "http"), Vec::new())].into(),
        ..Endpoints::default()
    };
    let warnings = missing_services(&config, &endpoints);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(w.resource.as_ref().map(|r| r.name.as_str()), Some("orders"));
    assert_eq!(
        (&*w.file, w.line, w.field.as_str()),
        ("mappings.yaml", 6, "spec.service")
    );
    assert!(
        w.to_string()
            .contains("Service billing/orders has no EndpointSlice for port 8080"),
        "{w}"
    );
    // Before the first listing nothing is known, so nothing is claimed.
    let unsynced = Endpoints::default();
    assert!(missing_services(&config, &unsynced).is_empty());
}

#[test]
fn dns_mode_warns_only_about_port_names() {
    let config = load(MAPPINGS);
    let warnings = missing_services(&config, &Endpoints::dns(DEFAULT_CLUSTER_DOMAIN));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].message.contains("port name \"http\""),
        "{}",
        warnings[0]
    );
}
