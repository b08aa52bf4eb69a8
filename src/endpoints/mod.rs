//! Endpoint discovery: which addresses stand behind each Kubernetes Service port.
//!
//! `translate` reads an [`Endpoints`] value to fill ClusterLoadAssignments. Watchers that
//! keep it current publish new values on a `watch` channel; the data type itself is plain
//! so that translation stays pure.
//!
//! Two ways to find endpoints ([`Mode`], chosen by `--endpoints`):
//! - [`kube`]: Services and `discovery.k8s.io/v1` EndpointSlices watched through the
//!   Kubernetes API ([`state`] merges them, [`coalesce`] turns bursts of events into one
//!   publish);
//! - DNS: outside Kubernetes a Service `name.namespace` becomes a STRICT_DNS cluster on
//!   `name.namespace.svc.CLUSTER_DOMAIN`; [`Endpoints::resolution`] tells `translate`.
//!
//! Start at [`spawn`]; the pipeline then calls `translate::assignments` and
//! `Snapshot::with_assignments` on every value the receiver yields, and
//! [`missing_services`] for the warnings of a revision.

pub mod coalesce;
mod discovery;
pub mod kube;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::config::{Action, Config, Diagnostic, ResourceRef, Service, ServicePort, Severity};

pub use discovery::{
    DEFAULT_CLUSTER_DOMAIN, Discovery, Error, KubeSource, Mode, parse_cluster_domain,
    parse_namespace, spawn,
};

/// Identifies one port of one Kubernetes Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
    /// The Service port as the Mapping names it (number or name), rendered as text.
    pub port: String,
}

/// Health of one endpoint as Kubernetes reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointHealth {
    /// `ready: true`.
    Healthy,
    /// `serving: true, terminating: true`: finish in-flight requests, take no new ones.
    Draining,
    /// Neither ready nor serving.
    Unhealthy,
}

/// One address behind a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub health: EndpointHealth,
    /// Kubernetes zone, mapped to Envoy's locality.
    pub zone: Option<String>,
}

/// How the upstreams of Kubernetes Service targets are found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Resolution {
    /// EDS: [`Endpoints::services`] holds the endpoints (from EndpointSlices).
    #[default]
    Eds,
    /// No cluster: Envoy resolves `name.namespace.svc.DOMAIN` itself (STRICT_DNS), and
    /// [`Endpoints::services`] is not consulted.
    Dns {
        /// The cluster DNS domain, `cluster.local` unless the cluster was set up otherwise.
        cluster_domain: String,
    },
}

/// All known endpoints, by Service port. Sorted maps keep translation deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Bumped by the watcher on every published change; part of the snapshot version.
    /// 0 means nothing has been learned yet (the first full listing is still running).
    pub generation: u64,
    /// Every Service port that has EndpointSlices, under each name a Mapping may use for
    /// it: the port number, the port name, and `""` for the Service's first port. A key
    /// with no endpoints is a Service scaled to zero; a missing key is a Service (or port)
    /// that has no EndpointSlice at all.
    pub services: BTreeMap<ServiceKey, Vec<Endpoint>>,
    /// EDS or DNS.
    pub resolution: Resolution,
}

impl Endpoints {
    /// The endpoints of one Service port, or none when the Service is unknown.
    pub fn get(&self, key: &ServiceKey) -> &[Endpoint] {
        self.services.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The value DNS mode publishes: no endpoints, Envoy resolves names itself.
    pub fn dns(cluster_domain: &str) -> Endpoints {
        Endpoints {
            generation: 1,
            services: BTreeMap::new(),
            resolution: Resolution::Dns {
                cluster_domain: cluster_domain.to_owned(),
            },
        }
    }
}

/// The Kubernetes Service ports that `config`'s routing Mappings target, sorted.
///
/// Only these reach a snapshot: `translate` builds assignments for them alone.
pub fn referenced_services(config: &Config) -> BTreeSet<ServiceKey> {
    config
        .mappings
        .iter()
        .filter_map(|m| match &m.action {
            Action::Route(route) => match &route.target.service {
                Service::Kubernetes {
                    name,
                    namespace,
                    port,
                } => Some(crate::translate::names::service_key(
                    name,
                    namespace,
                    port.as_ref(),
                )),
                Service::Address { .. } => None,
            },
            Action::Redirect(_) => None,
        })
        .collect()
}

/// One warning per Mapping whose Kubernetes Service port has no EndpointSlice (no such
/// Service, no such port, or no slice in the watched namespaces): its cluster exists but
/// has no endpoints, so requests get 503 until endpoints appear. Not an error: the
/// Service may simply not be deployed yet. Nothing before the first full listing
/// (generation 0), when nothing can be said yet. In DNS mode, one warning per Mapping
/// that names a Service port by name, which only the Kubernetes API can resolve.
///
/// The pipeline appends these to the diagnostics of the revision it serves, and calls
/// it again when the endpoints change if it keeps the diagnostics current.
pub fn missing_services(config: &Config, endpoints: &Endpoints) -> Vec<Diagnostic> {
    if endpoints.generation == 0 {
        return Vec::new();
    }
    let dns = endpoints.resolution != Resolution::Eds;
    let mut out = Vec::new();
    for mapping in &config.mappings {
        let Action::Route(route) = &mapping.action else {
            continue;
        };
        let Service::Kubernetes {
            name,
            namespace,
            port,
        } = &route.target.service
        else {
            continue;
        };
        let key = crate::translate::names::service_key(name, namespace, port.as_ref());
        let message = if dns {
            let Some(ServicePort::Name(port_name)) = port else {
                continue;
            };
            format!(
                "Service {namespace}/{name}: port name {port_name:?} needs the Kubernetes API \
                 to resolve, and endpoints come from DNS (--endpoints dns): \
                 the cluster has no endpoints; name the port by number"
            )
        } else if endpoints.services.contains_key(&key) {
            continue;
        } else {
            let port_text = if key.port.is_empty() {
                "its first port".to_owned()
            } else {
                format!("port {}", key.port)
            };
            format!(
                "Service {namespace}/{name} has no EndpointSlice for {port_text} \
                 (no such Service, port or slice in the watched namespaces): \
                 its cluster has no endpoints until one appears"
            )
        };
        let origin = &mapping.meta.origin;
        out.push(Diagnostic {
            file: origin.file.clone(),
            line: origin.line,
            column: origin.column,
            severity: Severity::Warning,
            resource: Some(ResourceRef::new(mapping.meta.kind, &mapping.meta.name)),
            field: "spec.service".to_owned(),
            message,
        });
    }
    out
}

#[cfg(test)]
mod tests;
