//! Translation: validated [`Config`] + [`Endpoints`] -> Envoy xDS resources.
//!
//! This module is pure: no I/O, no clock, no global state. The same input gives
//! byte-identical output on every replica, which is what lets snapshot versions be
//! content hashes (DESIGN.md, "Scaling past one machine"). Every list is sorted by
//! name, every name derives from what it stands for ([`names`]), and no `HashMap` order
//! reaches the encoded bytes (see [`provenance`] for the one place that needed care).
//!
//! Start at [`translate`]; it reads top-down:
//! - `listener`: which listeners (explicit, or Emissary's 8080/8443 defaults), which Hosts
//!   each binds, and the Listener resources with their TLS filter chains;
//! - `vhost`: one RouteConfiguration per listener, a virtual host per Host, insecure
//!   actions;
//! - `route`: Mappings -> routes, weighted groups, Emissary's order;
//! - `cluster`: one cluster per distinct target, and the EDS assignments;
//! - `tls`: TLS contexts and SDS secrets.

mod cluster;
mod filters;
pub mod incremental;
mod listener;
pub mod names;
pub mod provenance;
mod route;
mod route_policy;
mod steady;
mod tls;
mod upstream;
mod vhost;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

use crate::config::{Action, Config, Meta, Target, UpstreamTls};
use crate::endpoints::Endpoints;

pub use incremental::{Cache, EncodedResources, Reuse};
pub use listener::{DEFAULT_HTTP_PORT, DEFAULT_HTTPS_PORT};

/// Every Envoy resource of one configuration revision, each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// CDS resources, by `name`.
    pub clusters: Vec<Cluster>,
    /// EDS resources, by `cluster_name` (one per Kubernetes Service port in use).
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// LDS resources, by `name`.
    pub listeners: Vec<Listener>,
    /// RDS resources, by `name` (one per listener).
    pub routes: Vec<RouteConfiguration>,
    /// SDS resources, by `name` (only the secrets some listener or cluster uses).
    pub secrets: Vec<Secret>,
}

/// Translates a validated configuration and the current endpoints into Envoy resources.
///
/// Total and deterministic: the output depends on the content of `config`, never on the
/// order of its lists (the loader sorts them; a list that is not sorted is sorted here,
/// since group membership, virtual host order and "first one wins" rules follow it).
/// `config` has been validated, so there is nothing left to
/// reject; where the model still allows something Envoy would refuse (two Listeners on one
/// port, two Hosts with one hostname) the first in (namespace, name) order wins.
pub fn translate(config: &Config, endpoints: &Endpoints) -> Resources {
    let config = sorted(config);
    let config = config.as_ref();
    let users = users(config);
    let cluster_names = names::clusters(users.keys().copied());
    let groups = route::groups(&config.mappings);
    let plans = listener::plans(config);
    let built = vhost::SharedRoutes::new(&groups, &cluster_names, &plans, config);

    let mut resources = Resources::default();
    for plan in &plans {
        resources
            .listeners
            .push(listener::listener(plan, config, &cluster_names));
        resources
            .routes
            .push(vhost::route_configuration(plan, config, &groups, &built));
    }
    let (clusters, assignments) = cluster::clusters(config, endpoints, &cluster_names, &users);
    resources.clusters = clusters;
    resources.endpoints = assignments;
    resources.secrets = secrets(config, &plans, &cluster_names);

    resources.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    resources.routes.sort_by(|a, b| a.name.cmp(&b.name));
    resources.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    resources
        .endpoints
        .sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    resources.secrets.sort_by(|a, b| a.name.cmp(&b.name));
    resources
}

/// The SDS secrets: the certificates of the Hosts that TLS listeners terminate, and the
/// client certificates of the TLSContexts upstream clusters use; the CA bundles those
/// TLSContexts verify peers against. Each only when something uses it. By name.
fn secrets(
    config: &Config,
    plans: &[listener::ListenerPlan<'_>],
    cluster_names: &BTreeMap<Target, String>,
) -> Vec<Secret> {
    let mut secrets = BTreeSet::new();
    let mut cas = BTreeSet::new();
    let mut ca_of = |context: Option<&crate::config::TlsContext>| {
        if let Some(v) = context.and_then(|c| c.peer_validation.as_ref()) {
            cas.insert(v.ca_secret.clone());
        }
    };
    for plan in plans.iter().filter(|p| p.terminates_tls()) {
        for (_, host) in plan.tls_hosts(config) {
            secrets.insert(host.secret);
            ca_of(host.context);
        }
    }
    for target in cluster_names.keys() {
        if let UpstreamTls::Context(r) = &target.tls {
            let context = tls::upstream_context(config, r);
            secrets.extend(context.and_then(|c| c.secret.as_deref()));
            ca_of(context);
        }
    }
    secrets
        .into_iter()
        .filter_map(|name| config.secrets.get(name))
        .map(tls::secret)
        .chain(
            cas.iter()
                .filter_map(|name| config.ca_bundles.get(name))
                .map(tls::ca_secret),
        )
        .collect()
}

/// Every target Envoy needs a cluster for, with the resources that use it: routing
/// Mappings, then the gateway services Envoy calls (auth server, rate limit service,
/// collectors).
fn users(config: &Config) -> BTreeMap<&Target, Vec<&Meta>> {
    let routing = config.mappings.iter().filter_map(|m| match &m.action {
        Action::Route(route) => Some((&route.target, &m.meta)),
        Action::Redirect(_) => None,
    });
    let services = [
        config.auth_service.as_ref().map(|a| (&a.target, &a.meta)),
        config
            .rate_limit_service
            .as_ref()
            .map(|r| (&r.target, &r.meta)),
        config
            .tracing_service
            .as_ref()
            .map(|t| (&t.target, &t.meta)),
    ];
    let logs = config.log_services.iter().map(|l| (&l.target, &l.meta));
    let mut pairs: Vec<(&Target, &Meta)> = routing
        .chain(services.into_iter().flatten())
        .chain(logs)
        .collect();
    // Stable, so each target's users stay in the order above; the map is then built in
    // bulk from sorted keys, where one insert per Mapping would compare targets some
    // twenty times each at 100k Mappings.
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut users: Vec<(&Target, Vec<&Meta>)> = Vec::new();
    for (target, meta) in pairs {
        match users.last_mut() {
            Some((last, metas)) if *last == target => metas.push(meta),
            _ => users.push((target, vec![meta])),
        }
    }
    users.into_iter().collect()
}

/// The ClusterLoadAssignments [`translate`] would give for `config` and `endpoints`,
/// without building anything else: the fast path for an endpoints-only change, which
/// touches EDS alone (no CDS, LDS or RDS churn). Equal to `translate(..).endpoints`.
pub fn assignments(config: &Config, endpoints: &Endpoints) -> Vec<ClusterLoadAssignment> {
    cluster::assignments(route_targets(config), endpoints, None)
}

/// Like [`assignments`], only those of the Service ports whose endpoints differ between
/// `old` and `new`: with thousands of Services a change touches a few, and building,
/// encoding and hashing only those is what keeps the publish lag of a burst low. Feed
/// the result to `Snapshot::with_changed_assignments` on a snapshot built with `old`.
pub fn changed_assignments(
    config: &Config,
    old: &Endpoints,
    new: &Endpoints,
) -> Vec<ClusterLoadAssignment> {
    cluster::assignments(route_targets(config), new, Some(old))
}

fn route_targets(config: &Config) -> impl Iterator<Item = &Target> {
    config.mappings.iter().filter_map(|m| match &m.action {
        Action::Route(route) => Some(&route.target),
        Action::Redirect(_) => None,
    })
}

/// `config` with every list in (namespace, name) order, as the model promises; borrowed
/// when it already is (always, from the loader), so the common path copies nothing.
fn sorted(config: &Config) -> Cow<'_, Config> {
    fn key(meta: &Meta) -> (&str, &str) {
        (&meta.namespace, &meta.name)
    }
    let in_order = config
        .mappings
        .is_sorted_by(|a, b| key(&a.meta) <= key(&b.meta))
        && config
            .hosts
            .is_sorted_by(|a, b| key(&a.meta) <= key(&b.meta))
        && config
            .listeners
            .is_sorted_by(|a, b| key(&a.meta) <= key(&b.meta))
        && config
            .tls_contexts
            .is_sorted_by(|a, b| key(&a.meta) <= key(&b.meta));
    if in_order {
        return Cow::Borrowed(config);
    }
    let mut owned = config.clone();
    owned
        .mappings
        .sort_by(|a, b| key(&a.meta).cmp(&key(&b.meta)));
    owned.hosts.sort_by(|a, b| key(&a.meta).cmp(&key(&b.meta)));
    owned
        .listeners
        .sort_by(|a, b| key(&a.meta).cmp(&key(&b.meta)));
    owned
        .tls_contexts
        .sort_by(|a, b| key(&a.meta).cmp(&key(&b.meta)));
    Cow::Owned(owned)
}
