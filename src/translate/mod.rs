//! Translation: validated [`Config`] + [`Endpoints`] -> Envoy xDS resources.
//!
//! This module is pure: no I/O, no clock, no global state. The same input gives
//! byte-identical output on every replica, which is what lets snapshot versions be
//! content hashes (DESIGN.md, "Scaling past one machine").

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

#[allow(unused_imports)]
use crate::config::Config;
#[allow(unused_imports)]
use crate::endpoints::Endpoints;

/// Every Envoy resource of one configuration revision, each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    pub secrets: Vec<Secret>,
}
