//! Mappings that share one Envoy route must agree on what the route holds.
//!
//! Routing Mappings with the same match become one Envoy route with weighted clusters
//! (see `translate::route`). A weighted cluster entry has its own cluster, headers to add
//! or remove and host rewrite, so those differ per Mapping; everything else (rewrite,
//! timeouts, upgrades, retries, CORS, hashing, rate-limit labels, `bypass_auth`, a local
//! rate limit) is set once on the route. Translation takes it from the first Mapping by
//! namespace and name, so a canary whose settings differ would silently get the first
//! one's: `bypass_auth: true` on the stable Mapping would switch auth off for the canary's
//! traffic too. Each disagreement is an error instead.

use std::collections::{BTreeMap, BTreeSet};

use super::{Diagnostic, LimitedBy, diag_at, qualified};
use crate::config::diag::Severity;
use crate::config::model::{
    Action, Config, HostPattern, KeyValueMatch, Kind, Mapping, PathMatch, Route,
};

/// What makes two Mappings one route (as `MatchKey` in the parent module, borrowed: this
/// runs over every Mapping of a revision, and cloning each match would cost more than
/// the check). Validation keeps header and query matches sorted.
type SameMatch<'a> = (
    &'a HostPattern,
    &'a PathMatch,
    bool,
    Option<&'a str>,
    &'a [KeyValueMatch],
    &'a [KeyValueMatch],
    i32,
);

fn same_match(m: &Mapping) -> SameMatch<'_> {
    (
        &m.hostname,
        &m.path,
        m.case_sensitive,
        m.method.as_deref(),
        &m.headers,
        &m.query_parameters,
        m.precedence,
    )
}

/// The route-level settings in which two members of one route group differ, by their
/// Mapping field names.
fn differences(a: &Mapping, ar: &Route, b: &Mapping, br: &Route) -> Vec<&'static str> {
    let (ap, bp) = (&ar.policy, &br.policy);
    [
        ("rewrite", ar.rewrite != br.rewrite),
        ("timeout_ms", ar.timeout_ms != br.timeout_ms),
        ("idle_timeout_ms", ar.idle_timeout_ms != br.idle_timeout_ms),
        ("allow_upgrade", ar.upgrades != br.upgrades),
        ("retry_policy", ap.retry != bp.retry),
        ("cors", ap.cors != bp.cors),
        ("load_balancer", ap.hash != bp.hash),
        ("labels", ap.rate_limits != bp.rate_limits),
        ("bypass_auth", a.bypass_auth != b.bypass_auth),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect()
}

/// Reports every routing Mapping whose route-level settings differ from those of the
/// first Mapping (by namespace and name) of its route group, and leaves it out; and every
/// LocalRateLimit that limits only part of a group, or a group with two buckets.
pub(super) fn check(
    config: &mut Config,
    limited_by: &LimitedBy,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let mut groups: BTreeMap<SameMatch<'_>, Vec<(&Mapping, &Route)>> = BTreeMap::new();
    for m in &config.mappings {
        if let Action::Route(r) = &m.action
            && !r.shadow
        {
            groups.entry(same_match(m)).or_default().push((m, r));
        }
    }
    let mut bad = BTreeSet::new();
    for group in groups.values_mut().filter(|g| g.len() > 1) {
        group.sort_by_key(|(m, _)| qualified(&m.meta));
        let (first, first_route) = group[0];
        for &(other, route) in &group[1..] {
            let fields = differences(first, first_route, other, route);
            if fields.is_empty() {
                continue;
            }
            diagnostics.push(diag_at(
                &other.meta.origin,
                Severity::Error,
                Kind::Mapping,
                &other.meta.name,
                fields[0],
                format!(
                    "shares one Envoy route with Mapping {:?} at {} (same match), so its {} \
                     must equal that Mapping's; only the service, `tls`, `weight`, headers to \
                     add or remove, `host_rewrite` and cluster settings may differ",
                    first.meta.name,
                    first.meta.origin,
                    fields.join(", ")
                ),
            ));
            bad.insert(qualified(&other.meta));
        }
        local_limits(group, limited_by, diagnostics);
    }
    config
        .mappings
        .retain(|m| !bad.contains(&qualified(&m.meta)));
}

/// A local rate limit is one bucket on the route: a LocalRateLimit that names only some
/// Mappings of a group, or two with different buckets, would not limit what it says.
/// These are errors of the LocalRateLimits (which reject the revision: a limit that does
/// nothing must not be served as if it worked).
fn local_limits(group: &[(&Mapping, &Route)], limited_by: &LimitedBy, out: &mut Vec<Diagnostic>) {
    let bucket = |r: &Route| r.policy.local_rate_limit;
    if group.iter().all(|(_, r)| bucket(r) == bucket(group[0].1)) {
        return;
    }
    let quoted = |ms: &mut dyn Iterator<Item = &Mapping>| {
        ms.map(|m| format!("{:?}", m.meta.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut reported = BTreeSet::new();
    for (m, r) in group {
        let Some(template) = limited_by.get(&qualified(&m.meta)) else {
            continue;
        };
        // One error per LocalRateLimit, at the first entry of the group it names.
        let limit = template.resource.clone();
        if !reported.insert(limit) {
            continue;
        }
        let others = quoted(&mut group.iter().map(|(o, _)| *o).filter(|o| o.meta != m.meta));
        let unlimited = quoted(
            &mut group
                .iter()
                .filter(|(_, o)| bucket(o) != bucket(r))
                .map(|(o, _)| *o),
        );
        let mut d = template.clone();
        d.message = format!(
            "Mapping {:?} shares one Envoy route with Mapping {others} (same match), and a \
             local rate limit applies to a whole route: name every Mapping of it here, and in \
             no other LocalRateLimit ({unlimited} not limited by this one)",
            m.meta.name,
        );
        out.push(d);
    }
}

/// Whether [`check`] would report a Mapping of this one match group: `group` holds every
/// Mapping of one match (in any order).
pub(in crate::config) fn conflicts(group: &[&Mapping]) -> bool {
    let mut routing: Vec<(&Mapping, &Route)> = group
        .iter()
        .filter_map(|m| match &m.action {
            Action::Route(r) if !r.shadow => Some((*m, &**r)),
            _ => None,
        })
        .collect();
    routing.sort_by(|(a, _), (b, _)| {
        (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name))
    });
    let Some(&(first, first_route)) = routing.first() else {
        return false;
    };
    routing[1..]
        .iter()
        .any(|&(other, route)| !differences(first, first_route, other, route).is_empty())
}
