//! What a change of configuration does to Envoy, route by route and cluster by cluster.
//!
//! `attache diff A B` translates two commits and compares the results here, for review
//! of a pull request: which routes appear, disappear or change, and which clusters,
//! listeners and virtual hosts, each with the config file and line it comes from.
//!
//! "Changed" means Envoy would behave differently: resources are compared with their
//! provenance metadata left out, so moving a Mapping within its file (or to another file)
//! is not reported as a change of the route.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::route::v3::{
    Route, VirtualHost, route, route_action, route_match,
};
use prost::{Message, Name};
use prost_reflect::{DynamicMessage, ReflectMessage};
use serde::Serialize;

use crate::translate::Resources;
use crate::translate::provenance::Provenance;

/// How one thing differs between the old and the new configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

impl ChangeKind {
    fn sign(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Changed => '~',
        }
    }
}

/// What sort of Envoy object changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Object {
    Listener,
    VirtualHost,
    Route,
    Cluster,
    Endpoints,
    Secret,
}

impl Object {
    fn heading(self) -> &'static str {
        match self {
            Object::Listener => "listeners",
            Object::VirtualHost => "virtual hosts",
            Object::Route => "routes",
            Object::Cluster => "clusters",
            Object::Endpoints => "endpoints",
            Object::Secret => "secrets",
        }
    }
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Change {
    pub object: Object,
    /// The object's name; routes are `ROUTE_CONFIG/VIRTUAL_HOST/ROUTE`.
    pub name: String,
    pub change: ChangeKind,
    /// `file:line` of the config resource it comes from (the new one, or the old one for
    /// a removal); empty for built-in defaults.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// For routes: what it matches and where it goes, in the new configuration (the old
    /// one for a removal).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// For changed routes: the old summary, when it differs.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub was: String,
    /// For changed objects: the fields that differ, as paths (`route.timeout`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// Every difference between `old` and `new`, sorted by object kind and name.
pub fn diff(old: &Resources, new: &Resources) -> Vec<Change> {
    let mut changes = Vec::new();
    compare(
        &mut changes,
        Object::Listener,
        keyed(&old.listeners, |l| (l.name.clone(), l)),
        keyed(&new.listeners, |l| (l.name.clone(), l)),
        |l| {
            let mut l = l.clone();
            l.metadata = None;
            for chain in &mut l.filter_chains {
                chain.metadata = None;
            }
            l.encode_to_vec()
        },
        |l| l.metadata.as_ref(),
        |_| String::new(),
    );
    let vhosts = |resources: &Resources| -> BTreeMap<String, VirtualHost> {
        let mut map = BTreeMap::new();
        for config in &resources.routes {
            for vhost in &config.virtual_hosts {
                map.insert(format!("{}/{}", config.name, vhost.name), vhost.clone());
            }
        }
        map
    };
    let (old_vhosts, new_vhosts) = (vhosts(old), vhosts(new));
    compare(
        &mut changes,
        Object::VirtualHost,
        old_vhosts.iter().map(|(k, v)| (k.clone(), v)).collect(),
        new_vhosts.iter().map(|(k, v)| (k.clone(), v)).collect(),
        |v| {
            let mut v = v.clone();
            v.metadata = None;
            v.routes.clear();
            v.encode_to_vec()
        },
        |v| v.metadata.as_ref(),
        |v| v.domains.join(" "),
    );
    let routes = |vhosts: &BTreeMap<String, VirtualHost>| -> BTreeMap<String, Route> {
        let mut map = BTreeMap::new();
        for (vhost_name, vhost) in vhosts {
            for (index, route) in vhost.routes.iter().enumerate() {
                let name = if route.name.is_empty() {
                    format!("#{index}")
                } else {
                    route.name.clone()
                };
                map.insert(format!("{vhost_name}/{name}"), route.clone());
            }
        }
        map
    };
    let (old_routes, new_routes) = (routes(&old_vhosts), routes(&new_vhosts));
    compare(
        &mut changes,
        Object::Route,
        old_routes.iter().map(|(k, v)| (k.clone(), v)).collect(),
        new_routes.iter().map(|(k, v)| (k.clone(), v)).collect(),
        |r| {
            let mut r = r.clone();
            r.metadata = None;
            r.encode_to_vec()
        },
        |r| r.metadata.as_ref(),
        describe_route,
    );
    compare(
        &mut changes,
        Object::Cluster,
        keyed(&old.clusters, |c| (c.name.clone(), c)),
        keyed(&new.clusters, |c| (c.name.clone(), c)),
        |c| {
            let mut c = c.clone();
            c.metadata = None;
            c.encode_to_vec()
        },
        |c| c.metadata.as_ref(),
        |_| String::new(),
    );
    compare(
        &mut changes,
        Object::Endpoints,
        keyed(&old.endpoints, |e| (e.cluster_name.clone(), e)),
        keyed(&new.endpoints, |e| (e.cluster_name.clone(), e)),
        Message::encode_to_vec,
        |_| None,
        |_| String::new(),
    );
    // Secrets are compared by content but never shown: they hold private keys.
    compare(
        &mut changes,
        Object::Secret,
        keyed(&old.secrets, |s| (s.name.clone(), s)),
        keyed(&new.secrets, |s| (s.name.clone(), s)),
        Message::encode_to_vec,
        |_| None,
        |_| String::new(),
    );
    changes
}

fn keyed<'a, T>(items: &'a [T], key: impl Fn(&'a T) -> (String, &'a T)) -> BTreeMap<String, &'a T> {
    items.iter().map(key).collect()
}

#[allow(clippy::too_many_arguments)]
fn compare<T: Message + Name>(
    changes: &mut Vec<Change>,
    object: Object,
    old: BTreeMap<String, &T>,
    new: BTreeMap<String, &T>,
    behaviour: impl Fn(&T) -> Vec<u8>,
    metadata: impl Fn(&T) -> Option<&Metadata>,
    summary: impl Fn(&T) -> String,
) {
    let source = |item: &T| {
        metadata(item)
            .and_then(Provenance::from_metadata)
            .filter(|p| !p.file.is_empty())
            .map(|p| format!("{}:{}", p.file, p.line))
            .unwrap_or_default()
    };
    for (name, before) in &old {
        match new.get(name) {
            None => changes.push(Change {
                object,
                name: name.clone(),
                change: ChangeKind::Removed,
                source: source(before),
                summary: summary(before),
                was: String::new(),
                fields: Vec::new(),
            }),
            Some(after) if behaviour(before) != behaviour(after) => {
                let (now, then) = (summary(after), summary(before));
                changes.push(Change {
                    object,
                    name: name.clone(),
                    change: ChangeKind::Changed,
                    source: source(after),
                    was: if then == now { String::new() } else { then },
                    summary: now,
                    // Secrets hold private keys: which field changed is all one may see.
                    fields: if object == Object::Secret {
                        Vec::new()
                    } else {
                        changed_fields(
                            T::full_name().as_str(),
                            &behaviour(before),
                            &behaviour(after),
                        )
                    },
                });
            }
            Some(_) => {}
        }
    }
    for (name, after) in &new {
        if !old.contains_key(name) {
            changes.push(Change {
                object,
                name: name.clone(),
                change: ChangeKind::Added,
                source: source(after),
                summary: summary(after),
                was: String::new(),
                fields: Vec::new(),
            });
        }
    }
    changes.sort();
}

/// The paths of the fields that differ between two encodings of the message
/// `full_name`, descending into sub-messages a few levels (`route.timeout`,
/// `load_assignment.endpoints`); empty when the type is unknown to the descriptor pool.
fn changed_fields(full_name: &str, old: &[u8], new: &[u8]) -> Vec<String> {
    const DEPTH: usize = 4;
    fn walk(
        a: &DynamicMessage,
        b: &DynamicMessage,
        prefix: &str,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        for field in a.descriptor().fields() {
            let (x, y) = (a.get_field(&field), b.get_field(&field));
            if x == y {
                continue;
            }
            let path = format!("{prefix}{}", field.name());
            match (x.as_message(), y.as_message()) {
                (Some(x), Some(y)) if depth < DEPTH => {
                    walk(x, y, &format!("{path}."), depth + 1, out)
                }
                _ => out.push(path),
            }
        }
    }
    let Some(descriptor) = crate::render::descriptor_pool().get_message_by_name(full_name) else {
        return Vec::new();
    };
    let (Ok(a), Ok(b)) = (
        DynamicMessage::decode(descriptor.clone(), old),
        DynamicMessage::decode(descriptor, new),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&a, &b, "", 0, &mut out);
    out
}

/// `prefix /users/ [GET] -> users_default_80` in a line: what a route matches and where
/// it sends the request.
pub fn describe_route(route: &Route) -> String {
    let mut text = String::new();
    if let Some(m) = &route.r#match {
        match &m.path_specifier {
            Some(route_match::PathSpecifier::Prefix(p)) => text.push_str(&format!("prefix {p}")),
            Some(route_match::PathSpecifier::Path(p)) => text.push_str(&format!("path {p}")),
            Some(route_match::PathSpecifier::SafeRegex(r)) => {
                text.push_str(&format!("regex {}", r.regex));
            }
            Some(other) => text.push_str(&format!("{other:?}")),
            None => text.push_str("any path"),
        }
        for header in &m.headers {
            text.push_str(&format!(" [{}]", header.name));
        }
        for query in &m.query_parameters {
            text.push_str(&format!(" [?{}]", query.name));
        }
    }
    match &route.action {
        Some(route::Action::Route(action)) => match &action.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(c)) => text.push_str(&format!(" -> {c}")),
            Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                let parts: Vec<String> = w
                    .clusters
                    .iter()
                    .map(|c| format!("{} ({})", c.name, c.weight.as_ref().map_or(0, |w| w.value)))
                    .collect();
                text.push_str(&format!(" -> {}", parts.join(", ")));
            }
            _ => text.push_str(" -> (no cluster)"),
        },
        Some(route::Action::Redirect(_)) => text.push_str(" -> redirect"),
        Some(route::Action::DirectResponse(d)) => {
            text.push_str(&format!(" -> direct response {}", d.status));
        }
        _ => {}
    }
    text
}

/// The changes as text, grouped by object kind, one line each:
/// `  ~ 8080/example.com/default/users  prefix /u/ -> users (was prefix /u/ -> old)  users.yaml:3`.
pub fn to_text(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes to Envoy's configuration\n".to_owned();
    }
    let mut out = String::new();
    let mut heading = None;
    for change in changes {
        if heading != Some(change.object) {
            heading = Some(change.object);
            out.push_str(&format!("{}:\n", change.object.heading()));
        }
        out.push_str(&format!("  {} {}", change.change.sign(), change.name));
        if !change.summary.is_empty() {
            out.push_str(&format!("  {}", change.summary));
        }
        if !change.was.is_empty() {
            out.push_str(&format!(" (was {})", change.was));
        }
        if !change.fields.is_empty() {
            out.push_str(&format!(" [{}]", change.fields.join(", ")));
        }
        if !change.source.is_empty() {
            out.push_str(&format!("  {}", change.source));
        }
        out.push('\n');
    }
    let count = |kind| changes.iter().filter(|c| c.change == kind).count();
    out.push_str(&format!(
        "{} added, {} removed, {} changed\n",
        count(ChangeKind::Added),
        count(ChangeKind::Removed),
        count(ChangeKind::Changed)
    ));
    out
}
