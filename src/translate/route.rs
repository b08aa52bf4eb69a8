//! Mappings -> Envoy routes: grouping, Emissary's order, match and action.
//!
//! Three jobs, in the order `vhost` uses them:
//! 1. [`groups`]: routing Mappings with the same match (hostname, path, case sensitivity,
//!    method, headers, query parameters, precedence: Emissary's group id) become one
//!    group, served by one route with weighted clusters. Those without a `weight` share
//!    what the weighted ones leave, evenly when none has one (validation warns about
//!    that case, since it is rarely meant).
//! 2. [`Group::order_key`]: Emissary's route order, made total so output is deterministic.
//! 3. [`Group::route`]: the Envoy `Route`: `RouteMatch`, then a `RouteAction` (cluster or
//!    weighted clusters, rewrites, timeouts, upgrades, host rewrite) or a `RedirectAction`.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RedirectAction, Route, RouteAction, RouteMatch,
    WeightedCluster, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier, redirect_action, route, route_action,
    route_match, weighted_cluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::google::protobuf::{BoolValue, Duration, UInt32Value};

use super::names;
use super::provenance::Provenance;
use super::route_policy::{self, PerFilter};
use crate::config::{
    Action, HeaderToAdd, HostPattern, KeyValueMatch, Mapping, PathMatch, Redirect, Rewrite, Target,
    ValueMatch,
};

/// The share Emissary's weights are expressed in: Mappings without a weight split what the
/// others leave of 100.
const TOTAL_WEIGHT: u64 = 100;

/// Mappings served by one Envoy route: one Mapping, or several with the same match and
/// weights (sorted by namespace and name; the first one's route settings apply, which
/// validation makes sure are every member's).
#[derive(Debug, Clone)]
pub(super) struct Group<'a> {
    members: Vec<&'a Mapping>,
    /// `shadow: true` Mappings with this match: their services get a copy of each request.
    mirrors: Vec<&'a Mapping>,
}

/// What makes two Mappings "the same match".
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MatchKey<'a> {
    hostname: &'a HostPattern,
    path: &'a PathMatch,
    case_sensitive: bool,
    method: Option<&'a str>,
    headers: Vec<&'a KeyValueMatch>,
    query_parameters: Vec<&'a KeyValueMatch>,
    /// Part of the match, as in Emissary's group id: a Mapping with another precedence
    /// is another route, tried before or after, never a share of this one.
    precedence: i32,
}

impl<'a> MatchKey<'a> {
    fn of(mapping: &'a Mapping) -> Self {
        let mut headers: Vec<_> = mapping.headers.iter().collect();
        headers.sort();
        let mut query_parameters: Vec<_> = mapping.query_parameters.iter().collect();
        query_parameters.sort();
        MatchKey {
            hostname: &mapping.hostname,
            path: &mapping.path,
            case_sensitive: mapping.case_sensitive,
            method: mapping.method.as_deref(),
            headers,
            query_parameters,
            precedence: mapping.precedence,
        }
    }
}

/// Splits the Mappings into route groups. The result is in match-key order; callers sort
/// by [`Group::order_key`].
pub(super) fn groups(mappings: &[Mapping]) -> Vec<Group<'_>> {
    groups_of(mappings)
}

/// [`groups`] of any Mappings: all those of a match must be among them.
pub(super) fn groups_of<'a>(mappings: impl IntoIterator<Item = &'a Mapping>) -> Vec<Group<'a>> {
    let is_shadow = |m: &Mapping| matches!(&m.action, Action::Route(r) if r.shadow);
    // A sorted list rather than a tree keyed by match: at 100k Mappings one sort is a
    // fraction of 100k tree inserts, and equal matches end up next to each other. Stable,
    // so Mappings of one match keep the config's (namespace, name) order.
    let mappings = mappings.into_iter();
    let mut by_match: Vec<(MatchKey<'_>, &Mapping)> = Vec::with_capacity(mappings.size_hint().0);
    let mut shadows: BTreeMap<MatchKey<'_>, Vec<&Mapping>> = BTreeMap::new();
    for mapping in mappings {
        if is_shadow(mapping) {
            shadows
                .entry(MatchKey::of(mapping))
                .or_default()
                .push(mapping);
        } else {
            by_match.push((MatchKey::of(mapping), mapping));
        }
    }
    by_match.sort_by(|a, b| a.0.cmp(&b.0));
    let mut groups = Vec::with_capacity(by_match.len());
    let mut rest = by_match.as_slice();
    while let Some((key, _)) = rest.first() {
        let len = rest.iter().take_while(|(k, _)| k == key).count();
        let (same, after) = rest.split_at(len);
        rest = after;
        let mut same: Vec<&Mapping> = same.iter().map(|(_, m)| *m).collect();
        same.sort_by(|a, b| {
            (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name))
        });
        // A shadow with no routing Mapping of its match mirrors nothing (validation warns).
        let mirrors = shadows.remove(key).unwrap_or_default();
        let (routing, redirects): (Vec<&Mapping>, Vec<&Mapping>) = same
            .into_iter()
            .partition(|m| matches!(m.action, Action::Route(_)));
        if routing.len() > 1 {
            groups.push(Group {
                members: routing,
                mirrors,
            });
        } else {
            groups.extend(routing.into_iter().map(|m| Group {
                members: vec![m],
                mirrors: mirrors.clone(),
            }));
        }
        groups.extend(redirects.into_iter().map(|m| Group {
            members: vec![m],
            mirrors: Vec::new(),
        }));
    }
    groups
}

/// Whether two Mappings have the same match, so belong to the same groups.
pub(super) fn same_match(a: &Mapping, b: &Mapping) -> bool {
    a.path == b.path && a.hostname == b.hostname && MatchKey::of(a) == MatchKey::of(b)
}

/// The numeric part of an [`OrderKey`] (its first six fields): what `steady` keeps per
/// group besides the text.
pub(super) type Rank = (
    Reverse<i32>,
    Reverse<usize>,
    Reverse<usize>,
    Reverse<usize>,
    u8,
    bool,
);

/// Emissary's route order for one group, as a sort key (ascending = first).
///
/// Emissary sorts by its "route weight", highest first: precedence, then the length of
/// the path pattern (prefix, exact path or regex alike), then the summed length of the
/// header matches (name + value, `*` for presence, +1 for a regex; the method counts as a
/// `:method` header and a hostname narrower than its Host as `:authority`), then the
/// same for query parameters. Ties are broken here by exact before regex before prefix,
/// a method match first, then the pattern, namespace and name, which are unique: the
/// order is total.
pub(super) type OrderKey<'a> = (
    Reverse<i32>,
    Reverse<usize>,
    Reverse<usize>,
    Reverse<usize>,
    u8,
    bool,
    &'a str,
    &'a str,
    &'a str,
);

/// How much a header or query-parameter match weighs in Emissary's order.
fn match_weight(m: &KeyValueMatch) -> usize {
    m.name.len()
        + match &m.value {
            ValueMatch::Present => 1,
            ValueMatch::Exact(v) => v.len(),
            ValueMatch::Regex(r) => r.len() + 1,
        }
}

/// The weight of the `:authority` match a virtual host adds for a Mapping whose hostname
/// is narrower than the Host's (see [`match_weight`]).
pub(super) fn authority_weight(hostname: &HostPattern) -> usize {
    ":authority".len() + hostname.as_domain().len()
}

// === impl Group ===

impl<'a> Group<'a> {
    /// The Mapping whose match and route settings the group's route uses.
    pub(super) fn primary(&self) -> &'a Mapping {
        self.members[0]
    }

    /// The Mappings the route serves, the first one's settings applying.
    pub(super) fn members(&self) -> &[&'a Mapping] {
        &self.members
    }

    /// The shadow Mappings that mirror its requests.
    pub(super) fn mirrors(&self) -> &[&'a Mapping] {
        &self.mirrors
    }

    /// See [`OrderKey`]. `extra_header_weight` is the weight of the header matches the
    /// virtual host adds to this group's route.
    pub(super) fn order_key(&self, extra_header_weight: usize) -> OrderKey<'a> {
        let primary = self.primary();
        let kind = match primary.path {
            PathMatch::Exact(_) => 0,
            PathMatch::Regex(_) => 1,
            PathMatch::Prefix(_) => 2,
        };
        let method_weight = primary
            .method
            .as_ref()
            .map_or(0, |m| ":method".len() + m.len());
        let header_weight: usize = primary.headers.iter().map(match_weight).sum();
        let query_weight: usize = primary.query_parameters.iter().map(match_weight).sum();
        (
            // Every member has the same precedence: it is part of the group's match.
            Reverse(primary.precedence),
            Reverse(primary.path.pattern().len()),
            Reverse(header_weight + method_weight + extra_header_weight),
            Reverse(query_weight),
            kind,
            primary.method.is_none(),
            primary.path.pattern(),
            &primary.meta.namespace,
            &primary.meta.name,
        )
    }

    /// The Envoy route for this group. `extra_headers` are matchers the virtual host adds
    /// (`:authority` for a Mapping narrower than its Host, `x-forwarded-proto`).
    pub(super) fn route(
        &self,
        clusters: &BTreeMap<Target, String>,
        extra_headers: &[HeaderMatcher],
        auth_enabled: bool,
    ) -> Route {
        let primary = self.primary();
        let path = effective_path(primary);
        let provenance = if self.members.len() > 1 {
            Provenance::shared(self.members.iter().map(|m| &m.meta))
        } else {
            None
        }
        .unwrap_or_else(|| Provenance::of(&primary.meta));
        let mut envoy = Route {
            name: names::qualified(&primary.meta.namespace, &primary.meta.name),
            r#match: Some(route_match(primary, &path, extra_headers)),
            metadata: Some(provenance.to_metadata()),
            ..Default::default()
        };
        match &primary.action {
            Action::Redirect(redirect) => {
                envoy.action = Some(route::Action::Redirect(redirect_action(redirect, &path)));
                let per_filter = route_policy::per_filter_config(primary, None, auth_enabled);
                envoy.typed_per_filter_config = PerFilter::map(&per_filter.route);
                set_route_headers(&mut envoy, primary);
            }
            Action::Route(settings) => {
                let mut action = RouteAction {
                    timeout: Some(duration_ms(settings.timeout_ms)),
                    idle_timeout: settings.idle_timeout_ms.map(duration_ms),
                    upgrade_configs: settings
                        .upgrades
                        .iter()
                        .map(|kind| route_action::UpgradeConfig {
                            upgrade_type: kind.clone(),
                            enabled: Some(BoolValue { value: true }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                };
                apply_rewrite(&mut action, &settings.rewrite, &path);
                let cluster = |m: &Mapping| match &m.action {
                    Action::Route(r) => clusters.get(&r.target).cloned(),
                    Action::Redirect(_) => None,
                };
                let policy = &settings.policy;
                action.retry_policy = policy.retry.as_ref().map(route_policy::retry_policy);
                action.hash_policy = policy.hash.iter().map(route_policy::hash_policy).collect();
                action.rate_limits = route_policy::rate_limits(&policy.rate_limits);
                if policy.local_rate_limit.is_some() {
                    action
                        .rate_limits
                        .push(route_policy::local_rate_limit_action(primary));
                }
                action.request_mirror_policies = self
                    .mirrors
                    .iter()
                    .filter_map(|m| Some(route_policy::mirror(cluster(m)?, m.weight)))
                    .collect();
                let per_filter =
                    route_policy::per_filter_config(primary, Some(policy), auth_enabled);
                envoy.typed_per_filter_config = PerFilter::map(&per_filter.route);
                if self.members.len() == 1 && per_filter.cluster_weight.is_none() {
                    action.cluster_specifier = Some(route_action::ClusterSpecifier::Cluster(
                        cluster(primary).unwrap_or_default(),
                    ));
                    action.host_rewrite_specifier = settings
                        .host_rewrite
                        .clone()
                        .map(route_action::HostRewriteSpecifier::HostRewriteLiteral);
                    set_route_headers(&mut envoy, primary);
                } else {
                    let weights = weights(&self.members);
                    let weighted = self
                        .members
                        .iter()
                        .zip(weights)
                        .map(|(m, weight)| {
                            let mut entry = cluster_weight(m, weight, cluster(m));
                            entry.typed_per_filter_config =
                                PerFilter::map(&per_filter.cluster_weight);
                            entry
                        })
                        .collect();
                    action.cluster_specifier = Some(
                        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                            clusters: weighted,
                            ..Default::default()
                        }),
                    );
                }
                envoy.action = Some(route::Action::Route(action));
            }
        }
        envoy
    }
}

/// Each member's share. Explicit weights stand; Mappings without one split what is left of
/// 100 equally (the first ones get the remainder, one each). Envoy needs a positive total,
/// so a group whose weights are all zero splits evenly instead.
pub(super) fn weights(members: &[&Mapping]) -> Vec<u32> {
    let explicit: u64 = members.iter().filter_map(|m| m.weight).map(u64::from).sum();
    let unweighted = members.iter().filter(|m| m.weight.is_none()).count() as u64;
    let left = TOTAL_WEIGHT.saturating_sub(explicit);
    let mut nth_unweighted = 0u64;
    let shares: Vec<u32> = members
        .iter()
        .map(|m| match m.weight {
            Some(w) => w,
            None => {
                let share = left / unweighted + u64::from(nth_unweighted < left % unweighted);
                nth_unweighted += 1;
                u32::try_from(share).unwrap_or(u32::MAX)
            }
        })
        .collect();
    if shares.iter().all(|w| *w == 0) {
        vec![1; members.len()]
    } else {
        shares
    }
}

fn cluster_weight(
    mapping: &Mapping,
    weight: u32,
    cluster: Option<String>,
) -> weighted_cluster::ClusterWeight {
    let host_rewrite = match &mapping.action {
        Action::Route(r) => r.host_rewrite.clone(),
        Action::Redirect(_) => None,
    };
    weighted_cluster::ClusterWeight {
        name: cluster.unwrap_or_default(),
        weight: Some(UInt32Value { value: weight }),
        request_headers_to_add: headers_to_add(&mapping.add_request_headers),
        request_headers_to_remove: mapping.remove_request_headers.clone(),
        response_headers_to_add: headers_to_add(&mapping.add_response_headers),
        response_headers_to_remove: mapping.remove_response_headers.clone(),
        host_rewrite_specifier: host_rewrite
            .map(weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral),
        ..Default::default()
    }
}

fn set_route_headers(route: &mut Route, mapping: &Mapping) {
    route.request_headers_to_add = headers_to_add(&mapping.add_request_headers);
    route.request_headers_to_remove = mapping.remove_request_headers.clone();
    route.response_headers_to_add = headers_to_add(&mapping.add_response_headers);
    route.response_headers_to_remove = mapping.remove_response_headers.clone();
}

/// `append_action`, not the deprecated `append` flag: appending adds a value, otherwise the
/// header is replaced.
fn headers_to_add(headers: &[HeaderToAdd]) -> Vec<HeaderValueOption> {
    headers
        .iter()
        .map(|h| HeaderValueOption {
            header: Some(HeaderValue {
                key: h.name.clone(),
                value: h.value.clone(),
                ..Default::default()
            }),
            append_action: if h.append {
                HeaderAppendAction::AppendIfExistsOrAdd
            } else {
                HeaderAppendAction::OverwriteIfExistsOrAdd
            } as i32,
            ..Default::default()
        })
        .collect()
}

/// The Mapping's path match as Envoy must see it. Envoy applies `case_sensitive` to prefix
/// and exact matches only, never to a regex, so a case-insensitive regex carries RE2's
/// `(?i)` flag itself (and so do the rewrites and redirects derived from it).
fn effective_path(mapping: &Mapping) -> PathMatch {
    match &mapping.path {
        PathMatch::Regex(r) if !mapping.case_sensitive => PathMatch::Regex(format!("(?i){r}")),
        other => other.clone(),
    }
}

/// Path (from [`effective_path`]), case sensitivity, headers (the method as `:method`),
/// query parameters.
fn route_match(mapping: &Mapping, path: &PathMatch, extra_headers: &[HeaderMatcher]) -> RouteMatch {
    let path_specifier = match path {
        PathMatch::Prefix(p) => route_match::PathSpecifier::Prefix(p.clone()),
        PathMatch::Exact(p) => route_match::PathSpecifier::Path(p.clone()),
        PathMatch::Regex(r) => route_match::PathSpecifier::SafeRegex(regex(r)),
    };
    let mut headers: Vec<HeaderMatcher> = mapping.headers.iter().map(header_matcher).collect();
    if let Some(method) = &mapping.method {
        headers.push(header_matcher(&KeyValueMatch {
            name: ":method".to_owned(),
            value: ValueMatch::Exact(method.clone()),
        }));
    }
    headers.extend_from_slice(extra_headers);
    RouteMatch {
        path_specifier: Some(path_specifier),
        // Envoy's default is case-sensitive; say so only when it differs, as Emissary does.
        case_sensitive: (!mapping.case_sensitive).then_some(BoolValue { value: false }),
        headers,
        query_parameters: mapping
            .query_parameters
            .iter()
            .map(query_parameter_matcher)
            .collect(),
        ..Default::default()
    }
}

/// A header match on the value: exact or whole-value RE2, or mere presence.
pub(super) fn header_matcher(m: &KeyValueMatch) -> HeaderMatcher {
    let specifier = match string_matcher(&m.value) {
        Some(sm) => HeaderMatchSpecifier::StringMatch(sm),
        None => HeaderMatchSpecifier::PresentMatch(true),
    };
    HeaderMatcher {
        name: m.name.clone(),
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

fn query_parameter_matcher(m: &KeyValueMatch) -> QueryParameterMatcher {
    let specifier = match string_matcher(&m.value) {
        Some(sm) => QueryParameterMatchSpecifier::StringMatch(sm),
        None => QueryParameterMatchSpecifier::PresentMatch(true),
    };
    QueryParameterMatcher {
        name: m.name.clone(),
        query_parameter_match_specifier: Some(specifier),
    }
}

/// `None` for [`ValueMatch::Present`], which has no string to compare.
fn string_matcher(value: &ValueMatch) -> Option<StringMatcher> {
    let pattern = match value {
        ValueMatch::Present => return None,
        ValueMatch::Exact(v) => string_matcher::MatchPattern::Exact(v.clone()),
        ValueMatch::Regex(r) => string_matcher::MatchPattern::SafeRegex(regex(r)),
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    })
}

/// An RE2 matcher; Envoy's default engine is RE2, so the engine field stays unset.
pub(super) fn regex(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_owned(),
        ..Default::default()
    }
}

/// `prefix_rewrite` replaces what a prefix or exact match matched. A regex match has no
/// prefix, so there the rewrite replaces what the path regex matches (Emissary does the
/// same with `prefix_regex`).
fn apply_rewrite(action: &mut RouteAction, rewrite: &Rewrite, path: &PathMatch) {
    match (rewrite, path) {
        (Rewrite::Keep, _) => {}
        (Rewrite::Prefix(prefix), PathMatch::Regex(pattern)) => {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex(pattern)),
                substitution: prefix.clone(),
            });
        }
        (Rewrite::Prefix(prefix), _) => action.prefix_rewrite = prefix.clone(),
        (
            Rewrite::Regex {
                pattern,
                substitution,
            },
            _,
        ) => {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex(pattern)),
                substitution: substitution.clone(),
            });
        }
    }
}

fn redirect_action(redirect: &Redirect, path: &PathMatch) -> RedirectAction {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode};
    let response_code = match redirect.response_code {
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        // 301 and anything validation let through: Emissary's default.
        _ => RedirectResponseCode::MovedPermanently,
    };
    let path_rewrite_specifier = match (&redirect.path, &redirect.prefix) {
        (Some(p), _) => Some(PathRewriteSpecifier::PathRedirect(p.clone())),
        // Envoy allows prefix_rewrite only where there is a prefix to replace.
        (None, Some(p)) if !matches!(path, PathMatch::Regex(_)) => {
            Some(PathRewriteSpecifier::PrefixRewrite(p.clone()))
        }
        (None, Some(p)) => Some(PathRewriteSpecifier::RegexRewrite(
            RegexMatchAndSubstitute {
                pattern: Some(regex(path.pattern())),
                substitution: p.clone(),
            },
        )),
        (None, None) => None,
    };
    RedirectAction {
        host_redirect: redirect.host.clone().unwrap_or_default(),
        response_code: response_code as i32,
        path_rewrite_specifier,
        ..Default::default()
    }
}

/// A protobuf Duration of `ms` milliseconds (0 is Envoy's "disabled" for timeouts).
pub(super) fn duration_ms(ms: u32) -> Duration {
    Duration {
        seconds: i64::from(ms / 1000),
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}
