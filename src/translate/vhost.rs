//! RouteConfigurations: one per listener, a virtual host per Host, the Mappings attached.
//!
//! A Mapping attaches to every Host its hostname can serve (`*` to all of them); when its
//! hostname is narrower than the Host's (`a.example.com` under `*.example.com`), its route
//! also matches `:authority`, so the Host's other names do not reach it. With no Host at
//! all, one virtual host `*` serves every Mapping.
//!
//! A TLS Host's insecure action applies to the requests the listener's security model
//! calls insecure: none under SECURE, all under INSECURE, and under XFP those whose
//! `X-Forwarded-Proto` is not `https` (Envoy sets that header from the connection when
//! the client did not, and `require_tls` checks it).

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RedirectAction, Route, RouteConfiguration, RouteMatch,
    VirtualHost, header_matcher::HeaderMatchSpecifier, redirect_action, route, route_match,
    virtual_host,
};

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use super::listener::ListenerPlan;
use super::names;
use super::provenance::Provenance;
use super::route::{self as mapping_route, Group, OrderKey};
use super::tls;
use crate::config::{
    Config, Host, HostPattern, InsecureAction, KeyValueMatch, SecurityModel, Target, ValueMatch,
};

/// What a virtual host does with requests its listener's security model calls insecure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Insecure {
    /// Serve them like secure ones.
    Serve,
    /// `require_tls: ALL`: Envoy redirects unless `X-Forwarded-Proto` is `https`.
    RequireTls,
    /// Every request is insecure: redirect all of them to https.
    RedirectAll,
    /// Serve only when `X-Forwarded-Proto` is `https`, else 404.
    RejectUnlessXfpHttps,
    /// Every request is insecure: 404 for all.
    RejectAll,
}

fn insecure(model: SecurityModel, terminates_tls: bool, action: InsecureAction) -> Insecure {
    match (model, terminates_tls, action) {
        (SecurityModel::Secure, _, _) | (_, false, _) | (_, true, InsecureAction::Route) => {
            Insecure::Serve
        }
        (SecurityModel::Xfp, true, InsecureAction::Redirect) => Insecure::RequireTls,
        (SecurityModel::Xfp, true, InsecureAction::Reject) => Insecure::RejectUnlessXfpHttps,
        (SecurityModel::Insecure, true, InsecureAction::Redirect) => Insecure::RedirectAll,
        (SecurityModel::Insecure, true, InsecureAction::Reject) => Insecure::RejectAll,
    }
}

/// How a listener's virtual host for `host` treats insecure requests.
fn host_policy(plan: &ListenerPlan<'_>, config: &Config, host: &Host) -> Insecure {
    let terminates_tls = tls::host_tls(config, host).is_some();
    insecure(plan.security_model, terminates_tls, host.insecure_action)
}

/// The matchers that every route of `host`'s virtual host carries besides its own.
///
/// A Host that requires client certificates needs one on every request it serves, not
/// only on the connections of its own filter chain: every TLS Host of a listener (and its
/// cleartext side) shares one RouteConfiguration, so a client could do TLS under another
/// Host's name (SNI) and send this Host's name in `Host:`. The listener then sets
/// `x-forwarded-client-cert` from a verified client certificate and strips any a client
/// sent (`SANITIZE_SET`, see `listener`), so its presence means that this connection
/// presented a certificate that a CA of that listener verified.
fn host_extra(policy: Insecure, config: &Config, host: &Host) -> Option<Vec<HeaderMatcher>> {
    let mut extra = match policy {
        Insecure::Serve | Insecure::RequireTls => Vec::new(),
        Insecure::RejectUnlessXfpHttps => vec![xfp_https()],
        Insecure::RedirectAll | Insecure::RejectAll => return None,
    };
    if tls::requires_client_certificate(config, host) {
        extra.push(client_certificate(false));
    }
    Some(extra)
}

/// `x-forwarded-client-cert` present, or (`absent`) not.
fn client_certificate(absent: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: XFCC.to_owned(),
        header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
        invert_match: absent,
        ..Default::default()
    }
}

/// The header Envoy sets from a verified client certificate.
const XFCC: &str = "x-forwarded-client-cert";

/// Whether a virtual host with this policy carries the Mappings' routes.
fn serves_routes(policy: Insecure) -> bool {
    match policy {
        Insecure::Serve | Insecure::RequireTls | Insecure::RejectUnlessXfpHttps => true,
        Insecure::RedirectAll | Insecure::RejectAll => false,
    }
}

/// Each route group's Envoy route, built once and handed to the virtual hosts that use it:
/// a copy for each but the last, which takes the original. A Mapping usually attaches to
/// several virtual hosts (its Host and `*`, on each listener), and building a route
/// (matchers, action, provenance) costs more than copying it, which costs more than
/// moving it.
pub(super) struct SharedRoutes<'a> {
    groups: &'a [Group<'a>],
    clusters: &'a BTreeMap<Target, String>,
    /// Whether the gateway has an AuthService (routes then say when to skip it).
    auth_enabled: bool,
    slots: Vec<Mutex<Slot>>,
}

struct Slot {
    uses_left: usize,
    route: Option<Route>,
}

impl<'a> SharedRoutes<'a> {
    /// Builds every group's route and counts the virtual hosts of `plans` that will use it.
    pub(super) fn new(
        groups: &'a [Group<'a>],
        clusters: &'a BTreeMap<Target, String>,
        plans: &[ListenerPlan<'_>],
        config: &Config,
    ) -> Self {
        let mut uses = vec![0usize; groups.len()];
        for plan in plans {
            let patterns: Vec<&HostPattern> = if config.hosts.is_empty() {
                vec![&HostPattern::Any]
            } else {
                plan.hosts
                    .iter()
                    .filter(|host| serves_routes(host_policy(plan, config, host)))
                    .map(|host| &host.hostname)
                    .collect()
            };
            for (group, uses) in groups.iter().zip(&mut uses) {
                let mapping = &group.primary().hostname;
                *uses += patterns.iter().filter(|h| attaches(mapping, h)).count();
            }
        }
        let auth_enabled = config.auth_service.is_some();
        let built = crate::parallel::map(groups, crate::parallel::SMALL_ITEMS, |g| {
            g.route(clusters, &[], auth_enabled)
        });
        let slots = built
            .into_iter()
            .zip(uses)
            .map(|(route, uses_left)| {
                Mutex::new(Slot {
                    uses_left,
                    route: Some(route),
                })
            })
            .collect();
        SharedRoutes {
            groups,
            clusters,
            auth_enabled,
            slots,
        }
    }

    /// Group `index`'s route for one more virtual host.
    fn take(&self, index: usize) -> Route {
        let mut slot = self.slots[index].lock();
        slot.uses_left = slot.uses_left.saturating_sub(1);
        let route = if slot.uses_left == 0 {
            slot.route.take()
        } else {
            slot.route.clone()
        };
        drop(slot);
        // Only a miscount could leave nothing here; build it again rather than lose it.
        route.unwrap_or_else(|| self.groups[index].route(self.clusters, &[], self.auth_enabled))
    }

    /// Whether every route went to exactly the virtual hosts counted for it.
    #[cfg(test)]
    pub(super) fn all_used(&self) -> bool {
        self.slots.iter().all(|slot| {
            let slot = slot.lock();
            slot.uses_left == 0 && slot.route.is_none()
        })
    }
}

/// One entry of a virtual host's `routes`.
pub(super) enum RouteSlot {
    /// Group `index`'s route with `headers` appended to its match (`:authority` for a
    /// Mapping narrower than its Host, `x-forwarded-proto`); usually none.
    Group {
        index: usize,
        headers: Vec<HeaderMatcher>,
    },
    /// A route of the virtual host's own (the insecure redirect or 404); boxed, as it
    /// is a hundred times the size of the common variant.
    Fixed(Box<Route>),
}

/// A virtual host as its routes' places: `shell` is the virtual host with no routes.
/// The cold translation fills the places with route structs; the incremental one
/// (`translate::incremental`) with routes it encoded before.
pub(super) struct VirtualHostLayout {
    pub shell: VirtualHost,
    pub routes: Vec<RouteSlot>,
}

/// The RouteConfiguration of one listener, with no virtual hosts, and its virtual hosts'
/// layouts, in order.
pub(super) fn route_configuration_layout(
    plan: &ListenerPlan<'_>,
    config: &Config,
    groups: &[Group<'_>],
) -> (RouteConfiguration, Vec<VirtualHostLayout>) {
    let virtual_hosts = if config.hosts.is_empty() {
        vec![catch_all(groups)]
    } else {
        crate::parallel::map_uneven(&plan.hosts, |host| {
            let policy = host_policy(plan, config, host);
            virtual_host(host, policy, host_extra(policy, config, host), groups)
        })
    };
    let shell = RouteConfiguration {
        name: names::route_config(plan.port),
        metadata: Some(plan.provenance.to_metadata()),
        ..Default::default()
    };
    (shell, virtual_hosts)
}

/// The RouteConfiguration of one listener.
pub(super) fn route_configuration(
    plan: &ListenerPlan<'_>,
    config: &Config,
    groups: &[Group<'_>],
    built: &SharedRoutes<'_>,
) -> RouteConfiguration {
    let (mut shell, layouts) = route_configuration_layout(plan, config, groups);
    shell.virtual_hosts = layouts
        .into_iter()
        .map(|layout| {
            let mut vhost = layout.shell;
            vhost.routes = layout
                .routes
                .into_iter()
                .map(|slot| match slot {
                    RouteSlot::Group { index, headers } => {
                        let mut route = built.take(index);
                        if !headers.is_empty() {
                            route
                                .r#match
                                .get_or_insert_with(Default::default)
                                .headers
                                .extend(headers);
                        }
                        route
                    }
                    RouteSlot::Fixed(route) => *route,
                })
                .collect();
            vhost
        })
        .collect();
    shell
}

/// With no Host at all, Emissary serves every Mapping on `*`.
fn catch_all(groups: &[Group<'_>]) -> VirtualHostLayout {
    let routes = ordered_routes(groups, &HostPattern::Any, &[]);
    VirtualHostLayout {
        shell: VirtualHost {
            name: "*".to_owned(),
            domains: vec!["*".to_owned()],
            metadata: Some(Provenance::builtin("Host", "*").to_metadata()),
            ..Default::default()
        },
        routes,
    }
}

/// Where a virtual host takes the Mappings' routes: the pattern a Mapping's hostname
/// attaches to, and the matchers the virtual host appends to each route.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Attachment {
    pub pattern: HostPattern,
    pub extra: Vec<HeaderMatcher>,
}

/// For each virtual host of `plan`'s RouteConfiguration, in the order of
/// [`route_configuration_layout`], where the Mappings' routes attach; `None` for one
/// that carries none (it redirects or rejects everything). What the incremental
/// translation needs to place a changed route.
pub(super) fn attachments(plan: &ListenerPlan<'_>, config: &Config) -> Vec<Option<Attachment>> {
    if config.hosts.is_empty() {
        return vec![Some(Attachment {
            pattern: HostPattern::Any,
            extra: Vec::new(),
        })];
    }
    plan.hosts
        .iter()
        .map(|host| {
            let extra = host_extra(host_policy(plan, config, host), config, host)?;
            Some(Attachment {
                pattern: host.hostname.clone(),
                extra,
            })
        })
        .collect()
}

fn xfp_https() -> HeaderMatcher {
    mapping_route::header_matcher(&KeyValueMatch {
        name: "x-forwarded-proto".to_owned(),
        value: ValueMatch::Exact("https".to_owned()),
    })
}

fn virtual_host(
    host: &Host,
    policy: Insecure,
    extra: Option<Vec<HeaderMatcher>>,
    groups: &[Group<'_>],
) -> VirtualHostLayout {
    let routes = match (policy, extra) {
        (Insecure::RejectAll, _) => vec![RouteSlot::Fixed(Box::new(reject_route()))],
        (Insecure::RedirectAll, _) => vec![RouteSlot::Fixed(Box::new(https_redirect_route()))],
        (_, None) => Vec::new(),
        (_, Some(extra)) => {
            let mut routes = ordered_routes(groups, &host.hostname, &extra);
            if extra.iter().any(|m| m.name == XFCC) {
                routes.push(RouteSlot::Fixed(Box::new(certificate_required_route())));
            }
            if policy == Insecure::RejectUnlessXfpHttps {
                routes.push(RouteSlot::Fixed(Box::new(reject_route())));
            }
            routes
        }
    };
    VirtualHostLayout {
        shell: VirtualHost {
            name: names::qualified(&host.meta.namespace, &host.meta.name),
            domains: domains(&host.hostname),
            require_tls: if policy == Insecure::RequireTls {
                virtual_host::TlsRequirementType::All
            } else {
                virtual_host::TlsRequirementType::None
            } as i32,
            metadata: Some(Provenance::of(&host.meta).to_metadata()),
            ..Default::default()
        },
        routes,
    }
}

/// The virtual host's domains: the Host's pattern. No `name:*` forms are needed: the
/// listener strips the port from the Host header before routing (see `listener`).
fn domains(pattern: &HostPattern) -> Vec<String> {
    vec![pattern.as_domain()]
}

/// The route slots of the groups that attach to a Host with pattern `host`, in
/// Emissary's order.
fn ordered_routes(
    groups: &[Group<'_>],
    host: &HostPattern,
    extra: &[HeaderMatcher],
) -> Vec<RouteSlot> {
    // A Host of `*` gets an `:authority` match for every Mapping, but Mappings share a
    // few hostnames: each one's matcher and weight is worked out once.
    let mut authorities: HashMap<&HostPattern, (Option<HeaderMatcher>, usize)> = HashMap::new();
    let mut attached: Vec<(usize, usize)> = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        let mapping = &group.primary().hostname;
        if !attaches(mapping, host) {
            continue;
        }
        let (_, weight) = authorities.entry(mapping).or_insert_with(|| {
            let authority = authority_matcher(mapping, host);
            let weight = if authority.is_some() {
                mapping_route::authority_weight(mapping)
            } else {
                0
            };
            (authority, weight)
        });
        attached.push((index, *weight));
    }
    attached.sort_by_cached_key(|(index, weight)| groups[*index].order_key(*weight));
    attached
        .into_iter()
        .map(|(index, _)| {
            let authority = authorities
                .get(&groups[index].primary().hostname)
                .and_then(|(authority, _)| authority.clone());
            let mut headers = Vec::new();
            if authority.is_some() || !extra.is_empty() {
                headers.extend(authority);
                headers.extend_from_slice(extra);
            }
            RouteSlot::Group { index, headers }
        })
        .collect()
}

/// Where `group`'s route goes in a virtual host for Host pattern `host` that appends
/// `extra`: its key in Emissary's order and the matchers appended to it; `None` when
/// the group does not attach there.
pub(super) fn slot<'a>(
    group: &Group<'a>,
    host: &HostPattern,
    extra: &[HeaderMatcher],
) -> Option<(OrderKey<'a>, Vec<HeaderMatcher>)> {
    let mapping = &group.primary().hostname;
    if !attaches(mapping, host) {
        return None;
    }
    let authority = authority_matcher(mapping, host);
    let weight = if authority.is_some() {
        mapping_route::authority_weight(mapping)
    } else {
        0
    };
    let mut headers = Vec::new();
    if authority.is_some() || !extra.is_empty() {
        headers.extend(authority);
        headers.extend_from_slice(extra);
    }
    Some((group.order_key(weight), headers))
}

/// Whether a Mapping with hostname `mapping` belongs on a Host with hostname `host`: when
/// some request name could match both.
pub(super) fn attaches(mapping: &HostPattern, host: &HostPattern) -> bool {
    match (mapping, host) {
        (HostPattern::Any, _) | (_, HostPattern::Any) => true,
        (HostPattern::Exact(m), h) => h.matches(m),
        (m, HostPattern::Exact(h)) => m.matches(h),
        (HostPattern::Suffix(m), HostPattern::Suffix(h)) => {
            let (m, h) = (m.to_ascii_lowercase(), h.to_ascii_lowercase());
            m.ends_with(&h) || h.ends_with(&m)
        }
    }
}

/// An `:authority` match when the Mapping's hostname is narrower than the Host's, so the
/// Host's other names do not reach the Mapping. Case-insensitive, any port.
fn authority_matcher(mapping: &HostPattern, host: &HostPattern) -> Option<HeaderMatcher> {
    let narrower = match (mapping, host) {
        (HostPattern::Any, _) => false,
        (_, HostPattern::Any) => true,
        (HostPattern::Exact(_), HostPattern::Exact(_)) => false,
        (HostPattern::Suffix(_), HostPattern::Exact(_)) => false,
        (HostPattern::Exact(_), HostPattern::Suffix(_)) => true,
        (HostPattern::Suffix(m), HostPattern::Suffix(h)) => m.len() > h.len(),
    };
    let name = match mapping {
        HostPattern::Any => return None,
        HostPattern::Exact(h) => regex::escape(h),
        HostPattern::Suffix(s) => format!("[^:]+{}", regex::escape(s)),
    };
    narrower.then(|| {
        mapping_route::header_matcher(&KeyValueMatch {
            name: ":authority".to_owned(),
            value: ValueMatch::Regex(format!("(?i){name}(:[0-9]+)?")),
        })
    })
}

fn catch_all_match() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
        ..Default::default()
    }
}

fn reject_route() -> Route {
    Route {
        name: "insecure-reject".to_owned(),
        r#match: Some(catch_all_match()),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 404,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// 403 for a request without a verified client certificate, to a Host that requires one
/// (see [`host_extra`]).
fn certificate_required_route() -> Route {
    let mut matcher = catch_all_match();
    matcher.headers.push(client_certificate(true));
    Route {
        name: "client-certificate-required".to_owned(),
        r#match: Some(matcher),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 403,
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn https_redirect_route() -> Route {
    Route {
        name: "insecure-redirect".to_owned(),
        r#match: Some(catch_all_match()),
        action: Some(route::Action::Redirect(RedirectAction {
            scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(
                true,
            )),
            ..Default::default()
        })),
        ..Default::default()
    }
}
