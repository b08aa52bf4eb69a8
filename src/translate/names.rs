//! Resource naming rules, in one place.
//!
//! Envoy links resources by name: a listener's HttpConnectionManager asks RDS for a route
//! configuration by name, a route points at a cluster by name, an EDS cluster asks for a
//! ClusterLoadAssignment by service name, a TLS context asks SDS for a secret by name. The
//! xDS server (subscriptions), `render` (static bootstraps) and `diff` all need to compute
//! or recognise these names, so the rules live here and nowhere else.
//!
//! Names are stable and readable: they derive from what the resource stands for (a port,
//! a Service), never from input order, so an unrelated change to the config repo leaves
//! them, and therefore Envoy's stats, unchanged.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::config::{Service, ServicePort, Target, UpstreamTls};
use crate::endpoints::ServiceKey;

/// Emissary's default upstream connect timeout; cluster names carry a suffix only when a
/// Mapping asks for another one.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 3000;

/// The namespace under which attache's own metadata lives in Envoy resources.
pub const METADATA_NAMESPACE: &str = "attache";

/// The name of the Listener bound to `port`: `listener_8080`.
///
/// One Envoy listener per port: two listeners cannot share a socket.
pub fn listener(port: u16) -> String {
    format!("listener_{port}")
}

/// The name of the RouteConfiguration that the listener on `port` fetches over RDS:
/// `routes_8080`.
pub fn route_config(port: u16) -> String {
    format!("routes_{port}")
}

/// The HttpConnectionManager's `stat_prefix` for the listener on `port`: `ingress_8080`.
pub fn stat_prefix(port: u16) -> String {
    format!("ingress_{port}")
}

/// The SDS name of the CA bundle of secret `name` (a TLSContext's `ca_secret`):
/// `ca/NAME`. Apart from certificate Secrets, which are named by the secret alone: one
/// Kubernetes Secret (cert-manager's) may hold both a certificate and a CA, and Secret
/// names cannot hold a `/`, so the two never collide.
pub fn ca_secret(name: &str) -> String {
    format!("ca/{name}")
}

/// The name of a Host's virtual host or filter chain: `namespace/name`.
pub fn qualified(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The EDS `service_name` (and ClusterLoadAssignment `cluster_name`) of a Kubernetes
/// Service port: `k8s/NAMESPACE/NAME:PORT`, or `k8s/NAMESPACE/NAME` for the Service's
/// default port.
///
/// Every cluster that targets the same Service port (plain, TLS, HTTP/2) shares one
/// assignment, because the endpoints are a property of the Service, not of the cluster.
pub fn eds_service(key: &ServiceKey) -> String {
    if key.port.is_empty() {
        format!("k8s/{}/{}", key.namespace, key.name)
    } else {
        format!("k8s/{}/{}:{}", key.namespace, key.name, key.port)
    }
}

/// The [`ServiceKey`] under which [`crate::endpoints::Endpoints`] holds a Kubernetes
/// Service's endpoints. A Mapping that names no port gets the empty port text, which the
/// endpoint watchers use for the Service's only (or first) port.
pub fn service_key(name: &str, namespace: &str, port: Option<&ServicePort>) -> ServiceKey {
    ServiceKey {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port: match port {
            None => String::new(),
            Some(ServicePort::Number(n)) => n.to_string(),
            Some(ServicePort::Name(n)) => n.clone(),
        },
    }
}

/// Cluster names for a set of targets.
///
/// The readable name is `cluster_` plus the service (`users_shop_8080` for Service
/// `users.shop:8080`, `10_0_0_1_8080` for an address), then `_tls`, `_tls_CONTEXT`, `_h2`
/// and `_ctMS` (non-default connect timeout) as they apply. Sanitising to `[a-z0-9_]`
/// can make two targets collide (`users.shop:80` the address and `users` in namespace
/// `shop` port 80); then every colliding name gets a suffix from a hash of its target, so
/// the outcome does not depend on input order.
pub fn clusters<'a>(targets: impl IntoIterator<Item = &'a Target>) -> BTreeMap<Target, String> {
    // A sorted list, not a tree: callers pass the keys of a map, already sorted and
    // unique, which the sort sees in one pass, and the map below is then built in bulk
    // from sorted entries instead of one comparison-heavy insert per target.
    let mut targets: Vec<&Target> = targets.into_iter().collect();
    targets.sort_unstable();
    targets.dedup();
    let bases: Vec<String> = targets.iter().map(|t| cluster_base(t)).collect();
    let mut uses: HashMap<&str, usize> = HashMap::with_capacity(bases.len());
    for base in &bases {
        *uses.entry(base.as_str()).or_default() += 1;
    }
    let collides: Vec<bool> = bases
        .iter()
        .map(|base| uses.get(base.as_str()).is_some_and(|n| *n > 1))
        .collect();
    drop(uses);
    targets
        .into_iter()
        .zip(bases)
        .zip(collides)
        .map(|((target, base), collides)| {
            let name = if collides {
                format!("{base}_{}", target_hash(target))
            } else {
                base
            };
            (target.clone(), name)
        })
        .collect()
}

/// The readable cluster name of one target, before collision handling.
fn cluster_base(target: &Target) -> String {
    let mut name = String::from("cluster_");
    match &target.service {
        Service::Kubernetes {
            name: svc,
            namespace,
            port,
        } => {
            push_sanitized(&mut name, svc);
            name.push('_');
            push_sanitized(&mut name, namespace);
            match port {
                None => {}
                Some(ServicePort::Number(n)) => name.push_str(&format!("_{n}")),
                Some(ServicePort::Name(p)) => {
                    name.push('_');
                    push_sanitized(&mut name, p);
                }
            }
        }
        Service::Address { host, port } => {
            push_sanitized(&mut name, host);
            name.push_str(&format!("_{port}"));
        }
    }
    match &target.tls {
        UpstreamTls::Plain => {}
        UpstreamTls::Tls => name.push_str("_tls"),
        UpstreamTls::Context(context) => {
            // The name alone: two contexts of one name in two namespaces collide, and
            // collisions get a hash suffix (see `clusters`).
            name.push_str("_tls_");
            push_sanitized(&mut name, &context.name);
        }
    }
    if target.http2 {
        name.push_str("_h2");
    }
    if target.connect_timeout_ms != DEFAULT_CONNECT_TIMEOUT_MS {
        name.push_str(&format!("_ct{}", target.connect_timeout_ms));
    }
    // Breakers, outlier detection, load balancing and keepalive have too many settings to
    // spell out; a hash of them keeps Mappings with equal policies on one cluster and
    // different ones apart, and leaves default-policy names as they were.
    if !target.policy.is_default() {
        let digest = Sha256::digest(format!("{:?}", target.policy).as_bytes());
        name.push_str("_p");
        name.extend(digest[..4].iter().map(|b| format!("{b:02x}")));
    }
    name
}

/// Lower-case ASCII letters and digits stay, everything else becomes `_`.
fn push_sanitized(out: &mut String, text: &str) {
    out.extend(text.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        }
    }));
}

/// Eight hex digits of the SHA-256 of the target's debug form: stable across runs and
/// replicas because the form holds only the target's own fields.
fn target_hash(target: &Target) -> String {
    let digest = Sha256::digest(format!("{target:?}").as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kube(name: &str, namespace: &str, port: Option<ServicePort>) -> Target {
        Target {
            service: Service::Kubernetes {
                name: name.into(),
                namespace: namespace.into(),
                port,
            },
            tls: UpstreamTls::Plain,
            http2: false,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            policy: Default::default(),
        }
    }

    fn address(host: &str, port: u16) -> Target {
        Target {
            service: Service::Address {
                host: host.into(),
                port,
            },
            ..kube("x", "y", None)
        }
    }

    #[test]
    fn kubernetes_service_names_are_readable() {
        let t = kube("users", "shop", Some(ServicePort::Number(8080)));
        assert_eq!(clusters([&t])[&t], "cluster_users_shop_8080");
        let t = kube("users", "shop", Some(ServicePort::Name("http".into())));
        assert_eq!(clusters([&t])[&t], "cluster_users_shop_http");
        let t = kube("users", "shop", None);
        assert_eq!(clusters([&t])[&t], "cluster_users_shop");
    }

    #[test]
    fn suffixes_name_tls_h2_and_connect_timeout() {
        let t = Target {
            tls: UpstreamTls::Context("Upstream-CA".into()),
            http2: true,
            connect_timeout_ms: 500,
            ..address("api.example.com", 443)
        };
        assert_eq!(
            clusters([&t])[&t],
            "cluster_api_example_com_443_tls_upstream_ca_h2_ct500"
        );
        let t = Target {
            tls: UpstreamTls::Tls,
            ..address("10.0.0.1", 443)
        };
        assert_eq!(clusters([&t])[&t], "cluster_10_0_0_1_443_tls");
    }

    #[test]
    fn a_policy_gets_a_stable_suffix_and_equal_policies_share_it() {
        let plain = kube("users", "shop", None);
        let limited = |max| Target {
            policy: crate::config::UpstreamPolicy {
                circuit_breakers: vec![crate::config::CircuitBreaker {
                    max_connections: Some(max),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..kube("users", "shop", None)
        };
        let (a, b, c) = (limited(1), limited(1), limited(2));
        let names = clusters([&plain, &a, &c]);
        assert_eq!(names[&plain], "cluster_users_shop");
        assert!(names[&a].starts_with("cluster_users_shop_p"), "{names:?}");
        assert_eq!(names[&a], clusters([&b])[&b]);
        assert_ne!(names[&a], names[&c]);
    }

    #[test]
    fn sanitising_collisions_get_distinct_order_independent_names() {
        let a = kube("users", "shop", Some(ServicePort::Number(80)));
        let b = address("users.shop", 80);
        let c = kube("orders", "shop", Some(ServicePort::Number(80)));
        let forward = clusters([&a, &b, &c]);
        let backward = clusters([&c, &b, &a]);
        assert_eq!(forward, backward);
        assert_ne!(forward[&a], forward[&b]);
        assert!(
            forward[&a].starts_with("cluster_users_shop_80_"),
            "{forward:?}"
        );
        assert!(
            forward[&b].starts_with("cluster_users_shop_80_"),
            "{forward:?}"
        );
        assert_eq!(forward[&c], "cluster_orders_shop_80");
    }

    #[test]
    fn eds_service_names_include_the_port_when_given() {
        let key = service_key("users", "shop", Some(&ServicePort::Number(8080)));
        assert_eq!(eds_service(&key), "k8s/shop/users:8080");
        let key = service_key("users", "shop", None);
        assert_eq!(key.port, "");
        assert_eq!(eds_service(&key), "k8s/shop/users");
    }

    #[test]
    fn listener_and_route_names_follow_the_port() {
        assert_eq!(listener(8443), "listener_8443");
        assert_eq!(route_config(8443), "routes_8443");
        assert_eq!(stat_prefix(8443), "ingress_8443");
    }
}
