//! Endpoint discovery: which addresses stand behind each Kubernetes Service port.
//!
//! `translate` reads an [`Endpoints`] value to fill ClusterLoadAssignments. Watchers that
//! keep it current (EndpointSlices, DNS) live here too and publish new values on a
//! `watch` channel; the data type itself is plain so that translation stays pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

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

/// All known endpoints, by Service port. Sorted maps keep translation deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Bumped by the watcher on every published change; part of the snapshot version.
    pub generation: u64,
    pub services: BTreeMap<ServiceKey, Vec<Endpoint>>,
}

impl Endpoints {
    /// The endpoints of one Service port, or none when the Service is unknown.
    pub fn get(&self, key: &ServiceKey) -> &[Endpoint] {
        self.services.get(key).map(Vec::as_slice).unwrap_or(&[])
    }
}
