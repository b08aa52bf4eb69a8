//! Kubernetes API objects -> the reduced forms [`super::super::state`] keeps.
//!
//! Every object can be wrong (a hand-written slice, an address of the wrong family): each
//! problem leaves out only the part it concerns and is logged naming the object and the
//! field, so one bad endpoint never hides the rest of its Service.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::endpoints::state::{self, ServicePort, ServicePorts, ServiceRef, Slice, SliceEndpoint};

/// The label the EndpointSlice controller puts on every slice of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why an object is left out as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// The object has no namespace or name (the API always sets both; a proxy may not).
    #[error("{kind} without metadata.namespace or metadata.name")]
    Unnamed {
        /// `Service` or `EndpointSlice`.
        kind: &'static str,
    },
    /// A slice without the `kubernetes.io/service-name` label belongs to no Service.
    #[error("EndpointSlice {namespace}/{name}: no {SERVICE_NAME_LABEL:?} label")]
    NoService { namespace: String, name: String },
    /// `addressType: FQDN` (or a future type): Envoy would need DNS for it.
    #[error("EndpointSlice {namespace}/{name}: addressType {address_type:?} is not IPv4 or IPv6")]
    AddressType {
        namespace: String,
        name: String,
        address_type: String,
    },
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p == "TCP")
}

/// A Service's identity and its TCP ports.
///
/// # Errors
///
/// [`Skip::Unnamed`] when it has no namespace or name.
pub fn service(object: &Service) -> Result<(ServiceRef, ServicePorts), Skip> {
    let (Some(namespace), Some(name)) = (&object.metadata.namespace, &object.metadata.name) else {
        return Err(Skip::Unnamed { kind: "Service" });
    };
    let mut ports = ServicePorts::new();
    let declared = object.spec.as_ref().and_then(|s| s.ports.as_ref());
    for (i, p) in declared.into_iter().flatten().enumerate() {
        if !is_tcp(p.protocol.as_deref()) {
            continue;
        }
        match u16::try_from(p.port) {
            Ok(port) if port > 0 => ports.push(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port,
            }),
            _ => tracing::warn!(
                "Service {namespace}/{name}: spec.ports[{i}].port {} is not a port number; port left out",
                p.port
            ),
        }
    }
    Ok((
        ServiceRef {
            namespace: namespace.clone(),
            name: name.clone(),
        },
        ports,
    ))
}

/// A slice's namespace, name and routing content.
///
/// # Errors
///
/// [`Skip`] when the whole slice is left out; a bad port or endpoint is only logged.
pub fn slice(object: &EndpointSlice) -> Result<(String, String, Slice), Skip> {
    let (Some(namespace), Some(name)) = (&object.metadata.namespace, &object.metadata.name) else {
        return Err(Skip::Unnamed {
            kind: "EndpointSlice",
        });
    };
    let Some(service) = object
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
    else {
        return Err(Skip::NoService {
            namespace: namespace.clone(),
            name: name.clone(),
        });
    };
    let ipv6 = match object.address_type.as_str() {
        "IPv4" => false,
        "IPv6" => true,
        other => {
            return Err(Skip::AddressType {
                namespace: namespace.clone(),
                name: name.clone(),
                address_type: other.to_owned(),
            });
        }
    };
    let mut ports = Vec::new();
    for (i, p) in object.ports.iter().flatten().enumerate() {
        if !is_tcp(p.protocol.as_deref()) {
            continue;
        }
        match p.port.map(u16::try_from) {
            Some(Ok(port)) if port > 0 => ports.push((p.name.clone().unwrap_or_default(), port)),
            // A null port means "all ports", which only headless Services without
            // ports use; there is nothing Envoy could connect to.
            None => {}
            Some(_) => tracing::warn!(
                "EndpointSlice {namespace}/{name}: ports[{i}].port {:?} is not a port number; port left out",
                p.port
            ),
        }
    }
    let mut endpoints = Vec::new();
    for (i, e) in object.endpoints.iter().flatten().enumerate() {
        // "Consumers must handle different types of addresses in the context of their own
        // capabilities"; the first address is the canonical one (discovery.k8s.io/v1).
        let Some(text) = e.addresses.first() else {
            tracing::warn!(
                "EndpointSlice {namespace}/{name}: endpoints[{i}] has no address; left out"
            );
            continue;
        };
        let ip = match text.parse::<IpAddr>() {
            Ok(ip) if ip.is_ipv6() == ipv6 => ip,
            Ok(_) => {
                tracing::warn!(
                    "EndpointSlice {namespace}/{name}: endpoints[{i}].addresses[0] {text:?} is not an {} address; left out",
                    object.address_type
                );
                continue;
            }
            Err(_) => {
                tracing::warn!(
                    "EndpointSlice {namespace}/{name}: endpoints[{i}].addresses[0] {text:?} is not an IP address; left out"
                );
                continue;
            }
        };
        let c = e.conditions.as_ref();
        endpoints.push(SliceEndpoint {
            ip,
            health: state::health(
                c.and_then(|c| c.ready),
                c.and_then(|c| c.serving),
                c.and_then(|c| c.terminating),
            ),
            zone: e.zone.clone().filter(|z| !z.is_empty()),
        });
    }
    Ok((
        namespace.clone(),
        name.clone(),
        Slice {
            service: ServiceRef {
                namespace: namespace.clone(),
                name: service.clone(),
            },
            ports,
            endpoints,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::EndpointHealth;

    fn slice_json(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).expect("a valid EndpointSlice")
    }

    #[test]
    fn a_slice_keeps_tcp_ports_and_good_addresses() {
        let s = slice_json(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": "shop", "name": "users-x",
                         "labels": {"kubernetes.io/service-name": "users"}},
            "addressType": "IPv6",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 53, "protocol": "UDP"},
                      {"name": "bad", "port": 70000}],
            "endpoints": [
                {"addresses": ["fd00::1"], "conditions": {"ready": true}, "zone": "z1"},
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["nope"]},
                {"addresses": ["fd00::2"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }));
        let (ns, name, got) = slice(&s).expect("kept");
        assert_eq!((ns.as_str(), name.as_str()), ("shop", "users-x"));
        assert_eq!(got.service.name, "users");
        assert_eq!(got.ports, [("http".to_owned(), 8080)]);
        let eps: Vec<(String, EndpointHealth, Option<&str>)> = got
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.health, e.zone.as_deref()))
            .collect();
        assert_eq!(
            eps,
            [
                ("fd00::1".to_owned(), EndpointHealth::Healthy, Some("z1")),
                ("fd00::2".to_owned(), EndpointHealth::Draining, None),
            ]
        );
    }

    #[test]
    fn slices_without_a_service_or_with_fqdn_addresses_are_skipped_by_name() {
        let no_label = slice_json(serde_json::json!({
            "metadata": {"namespace": "a", "name": "s"}, "addressType": "IPv4"
        }));
        assert_eq!(
            slice(&no_label).expect_err("skipped").to_string(),
            "EndpointSlice a/s: no \"kubernetes.io/service-name\" label"
        );
        let fqdn = slice_json(serde_json::json!({
            "metadata": {"namespace": "a", "name": "s", "labels": {"kubernetes.io/service-name": "x"}},
            "addressType": "FQDN"
        }));
        assert!(matches!(slice(&fqdn), Err(Skip::AddressType { .. })));
    }

    #[test]
    fn a_service_keeps_its_tcp_ports_in_order() {
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "shop", "name": "users"},
            "spec": {"ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "metrics", "port": 9090, "protocol": "UDP"},
                {"name": "grpc", "port": 81, "targetPort": 9000}
            ]}
        }))
        .expect("a valid Service");
        let (svc, ports) = service(&s).expect("kept");
        assert_eq!(svc.name, "users");
        let ports: Vec<(&str, u16)> = ports.iter().map(|p| (p.name.as_str(), p.port)).collect();
        assert_eq!(ports, [("http", 80), ("grpc", 81)]);
    }
}
