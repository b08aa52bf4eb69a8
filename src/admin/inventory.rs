//! What a snapshot holds, decoded for people: every resource with the config file and
//! line it came from, the route table and the clusters with their endpoints.
//!
//! Snapshots keep only encoded bytes (they are built once and shared by every stream),
//! so this decodes them again with envoy-types and reads back the provenance that
//! `translate::provenance` put in each resource's metadata. It is done once per snapshot
//! version and cached ([`Cache`]): `/diag` refreshes every few seconds and a snapshot of
//! 10k routes should not be decoded on each.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, Route, RouteConfiguration, RouteMatch,
    query_parameter_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use parking_lot::Mutex;
use prost::Message;
use serde::Serialize;

use crate::snapshot::{ResourceType, Snapshot, sha256_hex};
use crate::translate::provenance::Provenance;

/// Where a resource came from, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// The config file, relative to the config root; empty for built-in defaults.
    pub file: String,
    /// 1-based line of the declaring document; 0 for built-in defaults.
    pub line: u32,
    /// The config resource's kind (`Mapping`, `Host`, `Listener`, `TLSContext`).
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Every Mapping sharing the resource (clusters, weighted routes); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mappings: Vec<String>,
    /// `file:line`, or `built-in`.
    pub location: String,
}

/// One xDS resource of a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceRow {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ResourceType,
    /// Its name.
    pub name: String,
    /// SHA-256 of its encoding.
    pub version: String,
    /// Where it came from; `None` for types without metadata (endpoints, secrets).
    pub source: Option<Source>,
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// One cluster.
    Cluster {
        /// The cluster.
        cluster: String,
    },
    /// Several clusters, each with its weight (canary splits).
    Weighted {
        /// `(cluster, weight)`, in route order.
        clusters: Vec<(String, u32)>,
    },
    /// An HTTP redirect.
    Redirect {
        /// What it redirects to, as `host` and/or `path`.
        to: String,
        /// The response code.
        code: i32,
    },
    /// A fixed response.
    DirectResponse {
        /// Its status.
        status: u32,
    },
    /// A cluster named by a header, or anything else attache does not generate.
    Other,
}

/// One route of the route table.
#[derive(Debug, Clone, Serialize)]
pub struct RouteRow {
    /// The RouteConfiguration holding it.
    pub route_config: String,
    /// The virtual host's domains (the `Host` header values it answers).
    pub domains: Vec<String>,
    /// The route's name.
    pub name: String,
    /// The match, as text: `prefix /api/`, plus methods, headers and query parameters.
    pub matcher: String,
    /// Where it sends requests.
    pub target: Target,
    /// Where it came from.
    pub source: Option<Source>,
    /// SHA-256 of the route without its metadata: equal when Envoy would route the same,
    /// wherever the Mapping moved in its file.
    #[serde(skip)]
    pub digest: String,
}

/// One cluster and its endpoints as attache sends them.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRow {
    /// The cluster's name.
    pub name: String,
    /// `EDS`, `STATIC`, `STRICT_DNS`, ...
    pub discovery: String,
    /// Endpoints whose health attache sends as unknown or healthy (Envoy routes to them).
    pub healthy: usize,
    /// All endpoints (draining and unhealthy included).
    pub total: usize,
    /// Where it came from.
    pub source: Option<Source>,
}

/// A snapshot, decoded.
#[derive(Debug, Default, Serialize)]
pub struct Inventory {
    /// The snapshot's version.
    pub snapshot: String,
    /// Every resource, in type then name order.
    pub resources: Vec<ResourceRow>,
    /// Every route, in route configuration, virtual host and route order.
    pub routes: Vec<RouteRow>,
    /// Every cluster, by name.
    pub clusters: Vec<ClusterRow>,
    /// Resources that could not be decoded (never expected: attache encoded them).
    pub undecodable: Vec<String>,
}

/// The inventories of the last few snapshots asked for: the serving one for `/diag`,
/// and the pair a diff compares.
#[derive(Debug, Default)]
pub struct Cache {
    recent: Mutex<VecDeque<Arc<Inventory>>>,
}

/// How many decoded snapshots [`Cache`] keeps (each is about the size of its routes'
/// text: ~15 MB for 10k Mappings).
const CACHED: usize = 3;

// === impl Cache ===

impl Cache {
    /// The inventory of `snapshot`, decoded on the first call for its version.
    pub fn get(&self, snapshot: &Snapshot) -> Arc<Inventory> {
        {
            let mut recent = self.recent.lock();
            if let Some(i) = recent.iter().position(|i| i.snapshot == snapshot.version()) {
                // Most recently used first.
                let hit = recent.remove(i).expect("position is in range");
                recent.push_front(hit.clone());
                return hit;
            }
        }
        // Decoded outside the lock: a slow decode must not hold up other requests.
        let fresh = Arc::new(Inventory::of(snapshot));
        let mut recent = self.recent.lock();
        recent.retain(|i| i.snapshot != fresh.snapshot);
        recent.push_front(fresh.clone());
        recent.truncate(CACHED);
        fresh
    }
}

// === impl Inventory ===

impl Inventory {
    /// Decodes every resource of `snapshot`.
    pub fn of(snapshot: &Snapshot) -> Inventory {
        let mut inventory = Inventory {
            snapshot: snapshot.version().to_owned(),
            ..Inventory::default()
        };
        let endpoints: BTreeMap<&str, ClusterLoadAssignment> = snapshot
            .resources(ResourceType::Endpoint)
            .iter()
            .filter_map(|(name, r)| {
                let decoded = ClusterLoadAssignment::decode(r.body.as_ref()).ok();
                decoded.map(|cla| (name.as_str(), cla))
            })
            .collect();
        for kind in ResourceType::ALL {
            for (name, resource) in snapshot.resources(kind) {
                let body = resource.body.as_ref();
                let source = match kind {
                    ResourceType::Cluster => match Cluster::decode(body) {
                        Ok(cluster) => {
                            let row = cluster_row(&cluster, &endpoints);
                            let source = row.source.clone();
                            inventory.clusters.push(row);
                            Ok(source)
                        }
                        Err(e) => Err(e),
                    },
                    ResourceType::Listener => Listener::decode(body).map(|l| source(&l.metadata)),
                    ResourceType::Route => match RouteConfiguration::decode(body) {
                        Ok(config) => {
                            inventory.routes.extend(route_rows(&config));
                            Ok(source(&config.metadata))
                        }
                        Err(e) => Err(e),
                    },
                    ResourceType::Endpoint | ResourceType::Secret => Ok(None),
                };
                let source = source.unwrap_or_else(|_| {
                    inventory.undecodable.push(format!("{kind} {name}"));
                    None
                });
                inventory.resources.push(ResourceRow {
                    kind,
                    name: name.clone(),
                    version: resource.version.clone(),
                    source,
                });
            }
        }
        inventory
    }
}

fn source(metadata: &Option<Metadata>) -> Option<Source> {
    let p = Provenance::from_metadata(metadata.as_ref()?)?;
    let location = if p.file.is_empty() {
        "built-in".to_owned()
    } else {
        format!("{}:{}", p.file, p.line)
    };
    Some(Source {
        file: p.file,
        line: p.line,
        kind: p.kind,
        namespace: p.namespace,
        name: p.name,
        mappings: p.mappings,
        location,
    })
}

fn route_rows(config: &RouteConfiguration) -> impl Iterator<Item = RouteRow> + '_ {
    config.virtual_hosts.iter().flat_map(move |vhost| {
        vhost.routes.iter().map(move |route| RouteRow {
            route_config: config.name.clone(),
            domains: vhost.domains.clone(),
            name: route.name.clone(),
            matcher: route.r#match.as_ref().map(matcher_text).unwrap_or_default(),
            target: target(route),
            source: source(&route.metadata).or_else(|| source(&vhost.metadata)),
            digest: {
                let mut bare = route.clone();
                bare.metadata = None;
                sha256_hex(&bare.encode_to_vec())
            },
        })
    })
}

fn matcher_text(m: &RouteMatch) -> String {
    let mut out = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => format!("prefix {p}"),
        Some(PathSpecifier::Path(p)) => format!("path {p}"),
        Some(PathSpecifier::SafeRegex(r)) => format!("regex {}", r.regex),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => format!("path-separated prefix {p}"),
        Some(PathSpecifier::ConnectMatcher(_)) => "CONNECT".to_owned(),
        Some(PathSpecifier::PathMatchPolicy(p)) => format!("path policy {}", p.name),
        None => "any path".to_owned(),
    };
    for header in &m.headers {
        out.push_str(", ");
        out.push_str(&header_text(header));
    }
    for query in &m.query_parameters {
        out.push_str(", ");
        out.push_str(&query_text(query));
    }
    if m.case_sensitive.as_ref().is_some_and(|c| !c.value) {
        out.push_str(", case-insensitive");
    }
    out
}

fn header_text(h: &HeaderMatcher) -> String {
    let not = if h.invert_match { "not " } else { "" };
    let condition = match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::StringMatch(s)) => string_match(s),
        Some(HeaderMatchSpecifier::RangeMatch(r)) => format!("in [{}, {})", r.start, r.end),
        Some(HeaderMatchSpecifier::PresentMatch(present)) => {
            if *present { "present" } else { "absent" }.to_owned()
        }
        None => "present".to_owned(),
        // The deprecated pre-StringMatcher forms: translate never emits them.
        Some(_) => "(deprecated matcher)".to_owned(),
    };
    format!("header {} {not}{condition}", h.name)
}

fn query_text(q: &QueryParameterMatcher) -> String {
    let condition = match &q.query_parameter_match_specifier {
        Some(query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(s)) => {
            string_match(s)
        }
        Some(query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(_)) | None => {
            "present".to_owned()
        }
    };
    format!("query {} {condition}", q.name)
}

fn string_match(s: &StringMatcher) -> String {
    let ci = if s.ignore_case { " (any case)" } else { "" };
    let text = match &s.match_pattern {
        Some(MatchPattern::Exact(v)) => format!("= {v}"),
        Some(MatchPattern::Prefix(v)) => format!("starts with {v}"),
        Some(MatchPattern::Suffix(v)) => format!("ends with {v}"),
        Some(MatchPattern::Contains(v)) => format!("contains {v}"),
        Some(MatchPattern::SafeRegex(r)) => format!("~ {}", r.regex),
        Some(MatchPattern::Custom(c)) => format!("custom {}", c.name),
        None => "present".to_owned(),
    };
    format!("{text}{ci}")
}

fn target(route: &Route) -> Target {
    match &route.action {
        Some(Action::Route(action)) => match &action.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => Target::Cluster { cluster: c.clone() },
            Some(ClusterSpecifier::WeightedClusters(w)) => Target::Weighted {
                clusters: w
                    .clusters
                    .iter()
                    .map(|c| (c.name.clone(), c.weight.as_ref().map_or(0, |w| w.value)))
                    .collect(),
            },
            _ => Target::Other,
        },
        Some(Action::Redirect(r)) => {
            use envoy_types::pb::envoy::config::route::v3::redirect_action::PathRewriteSpecifier;
            let path = match &r.path_rewrite_specifier {
                Some(PathRewriteSpecifier::PathRedirect(p)) => p.clone(),
                Some(PathRewriteSpecifier::PrefixRewrite(p)) => format!("{p}…"),
                Some(
                    PathRewriteSpecifier::RegexRewrite(_) | PathRewriteSpecifier::PathRewrite(_),
                ) => "(rewritten path)".to_owned(),
                None => String::new(),
            };
            Target::Redirect {
                to: format!("{}{path}", r.host_redirect),
                code: redirect_code(r.response_code),
            }
        }
        Some(Action::DirectResponse(d)) => Target::DirectResponse { status: d.status },
        _ => Target::Other,
    }
}

/// Envoy's `RedirectResponseCode` enum as the HTTP status it stands for.
fn redirect_code(code: i32) -> i32 {
    match code {
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        _ => 301,
    }
}

fn cluster_row(cluster: &Cluster, endpoints: &BTreeMap<&str, ClusterLoadAssignment>) -> ClusterRow {
    let discovery = match cluster.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t)
            .map(|t| t.as_str_name().to_owned())
            .unwrap_or_else(|_| format!("type {t}")),
        Some(ClusterDiscoveryType::ClusterType(ref c)) => c.name.clone(),
        None => "STATIC".to_owned(),
    };
    let assignment = if discovery == "EDS" {
        let service = cluster
            .eds_cluster_config
            .as_ref()
            .map(|c| c.service_name.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(&cluster.name);
        endpoints.get(service)
    } else {
        cluster.load_assignment.as_ref()
    };
    let (mut healthy, mut total) = (0, 0);
    for lb in assignment
        .into_iter()
        .flat_map(|a| &a.endpoints)
        .flat_map(|l| &l.lb_endpoints)
    {
        total += 1;
        let status = HealthStatus::try_from(lb.health_status).unwrap_or(HealthStatus::Unknown);
        healthy += usize::from(matches!(
            status,
            HealthStatus::Unknown | HealthStatus::Healthy
        ));
    }
    ClusterRow {
        name: cluster.name.clone(),
        discovery,
        healthy,
        total,
        source: source(&cluster.metadata),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Kind, Meta, Origin};
    use crate::translate::Resources;
    use envoy_types::pb::envoy::config::route::v3::{RouteAction, VirtualHost, route_match};

    fn meta(name: &str, file: &str, line: u32) -> Meta {
        Meta {
            kind: Kind::Mapping,
            name: name.into(),
            namespace: "default".into(),
            origin: Origin {
                file: Arc::from(file),
                line,
                column: 1,
            },
        }
    }

    #[test]
    fn routes_carry_their_file_and_line() {
        let route = Route {
            name: "default/users".into(),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/users/".into())),
                headers: vec![HeaderMatcher {
                    name: ":method".into(),
                    header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(
                        StringMatcher {
                            match_pattern: Some(MatchPattern::Exact("GET".into())),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            action: Some(Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster("users".into())),
                ..Default::default()
            })),
            metadata: Some(Provenance::of(&meta("users", "mappings/users.yaml", 12)).to_metadata()),
            ..Default::default()
        };
        let resources = Resources {
            routes: vec![RouteConfiguration {
                name: "main".into(),
                virtual_hosts: vec![VirtualHost {
                    name: "shop".into(),
                    domains: vec!["shop.example.com".into()],
                    routes: vec![route],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Resources::default()
        };
        let snapshot = Snapshot::new("r1", 0, &resources).expect("unique names");
        let inventory = Inventory::of(&snapshot);
        assert!(inventory.undecodable.is_empty());
        let [row] = inventory.routes.as_slice() else {
            panic!("one route: {:?}", inventory.routes);
        };
        assert_eq!(row.domains, ["shop.example.com"]);
        assert_eq!(row.matcher, "prefix /users/, header :method = GET");
        assert_eq!(
            row.target,
            Target::Cluster {
                cluster: "users".into()
            }
        );
        let source = row.source.as_ref().expect("provenance");
        assert_eq!(source.location, "mappings/users.yaml:12");
        assert_eq!(source.name, "users");
    }

    #[test]
    fn cache_decodes_each_version_once() {
        let snapshot = Snapshot::new("r1", 0, &Resources::default()).expect("empty");
        let cache = Cache::default();
        let a = cache.get(&snapshot);
        let b = cache.get(&snapshot);
        assert!(Arc::ptr_eq(&a, &b));
        let other = Snapshot::new("r2", 0, &Resources::default()).expect("empty");
        assert_eq!(cache.get(&other).snapshot, "r2+e0");
        // r1 is still cached beside r2 (a diff compares two).
        assert!(Arc::ptr_eq(&cache.get(&snapshot), &a));
        for r in ["r3", "r4", "r5"] {
            cache.get(&Snapshot::new(r, 0, &Resources::default()).expect("empty"));
        }
        assert!(
            !Arc::ptr_eq(&cache.get(&snapshot), &a),
            "evicted after {CACHED} others"
        );
    }
}
