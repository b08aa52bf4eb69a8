//! Incremental translation (issue 4): a revision that changes a few Mappings re-builds
//! and re-encodes a few routes and clusters, not all of them.
//!
//! [`Cache`] is an explicit value its owner keeps between revisions (the pipeline does),
//! so translation stays a pure function of its arguments: `(config, endpoints, cache)`
//! in, encoded resources and the next cache out. What it remembers is memoisation of
//! the translation's own pure steps, each keyed by *every* input that step reads:
//! - a route group's encoded route, by its Mappings (whole), the names of their
//!   clusters, whether an AuthService exists, and the header matchers a virtual host
//!   appends;
//! - a cluster's encoded bytes, by its target, name and users, under the Module, TLS
//!   contexts, secrets and endpoint resolution it was built with;
//! - a load assignment's encoded bytes, by its Service port's endpoints.
//!
//! In [`Cache::translate`], everything else (groups, Emissary's route order, cluster
//! names, listeners, secrets) is computed afresh each time, from the whole config,
//! exactly as [`super::translate`] does, with the same code. A RouteConfiguration is
//! then assembled from its routes' bytes: a protobuf message is the concatenation of its
//! fields, and prost writes them in declaration order, where `name` and `domains`
//! precede a virtual host's `routes` and `name` precedes a RouteConfiguration's
//! `virtual_hosts`. The result is byte-identical to encoding [`super::translate`]'s
//! output (see the tests).
//!
//! [`Cache::translate_delta`] is the steady state: given what changed (Mappings only),
//! it works on the last translation's route lists (`steady`) and clusters instead of the
//! whole config, so its work follows the size of the change.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, RouteConfiguration};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

use super::provenance::Provenance;
use super::route::Group;
use super::steady::Routes;
use super::vhost::{self, RouteSlot};
use super::{cluster, listener, names, route, sorted, users};
use crate::config::{Action, Config, GatewayModule, Mapping, Meta, Target, TlsContext, TlsSecret};
use crate::endpoints::{Endpoint, Endpoints, Resolution, ServiceKey};

/// One encoded resource: its name and its protobuf bytes.
pub type Encoded = (String, Bytes);

/// Every resource of one revision, encoded, each list sorted by name: the encoding of
/// [`super::Resources`], type by type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedResources {
    pub clusters: Vec<Encoded>,
    pub endpoints: Vec<Encoded>,
    pub listeners: Vec<Encoded>,
    pub routes: Vec<Encoded>,
    pub secrets: Vec<Encoded>,
}

/// What the last translation built, to reuse in the next. Holds the last revision's
/// entries only: anything the new config no longer has is dropped.
#[derive(Debug, Default)]
pub struct Cache {
    /// By the group's first Mapping, `namespace/name` (neither may hold a `/`).
    routes: HashMap<String, RouteMemo>,
    /// The cluster names the memos above were built with.
    cluster_names: BTreeMap<Target, String>,
    /// Sorted by cluster name.
    clusters: Vec<(String, ClusterMemo)>,
    /// What every cluster above was built under.
    cluster_context: Option<ClusterContext>,
    /// Sorted by load assignment (EDS service) name.
    assignments: Vec<(String, AssignmentMemo)>,
    /// What [`Cache::translate_delta`] changes: the last translation's route lists and
    /// what it was translated from besides the Mappings.
    steady: Option<Steady>,
}

/// The last translation, kept to apply a change of Mappings to.
#[derive(Debug)]
struct Steady {
    routes: Routes,
    /// The config it translated, without its Mappings.
    rest: Config,
    endpoints: Endpoints,
    listeners: Vec<Encoded>,
    endpoints_out: Vec<Encoded>,
    secrets: Vec<Encoded>,
}

/// How much of a translation [`Cache::translate`] could reuse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reuse {
    pub routes_built: usize,
    pub routes_reused: usize,
    pub clusters_built: usize,
    pub clusters_reused: usize,
}

#[derive(Debug)]
struct RouteMemo {
    members: Vec<Mapping>,
    mirrors: Vec<Mapping>,
    /// The cluster name of each member, then of each mirror.
    clusters: Vec<Option<String>>,
    auth_enabled: bool,
    /// The route's encoding for each set of header matchers a virtual host appends
    /// (usually none, or an `:authority` match).
    variants: Vec<Variant>,
}

#[derive(Debug)]
struct Variant {
    headers: Vec<HeaderMatcher>,
    body: Bytes,
    /// Whether this translation used it; unused ones are dropped after it.
    used: bool,
}

#[derive(Debug)]
struct ClusterMemo {
    target: Target,
    users: Vec<Meta>,
    body: Bytes,
}

/// The parts of a config a cluster reads besides its target.
#[derive(Debug, PartialEq)]
struct ClusterContext {
    module: GatewayModule,
    tls_contexts: Vec<TlsContext>,
    secrets: BTreeMap<String, TlsSecret>,
    resolution: Resolution,
}

#[derive(Debug)]
struct AssignmentMemo {
    endpoints: Vec<Endpoint>,
    body: Bytes,
}

// === impl Cache ===

impl Cache {
    /// An empty cache: the first translation builds everything.
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Translates `config` with `endpoints` like [`super::translate`] and encodes the
    /// result, reusing what the previous call built where its inputs are unchanged.
    /// Equal to encoding `translate(config, endpoints)` resource by resource.
    pub fn translate(
        &mut self,
        config: &Config,
        endpoints: &Endpoints,
    ) -> (EncodedResources, Reuse) {
        let config = sorted(config);
        let config = config.as_ref();
        let users = users(config);
        // Cluster names depend on the set of targets alone (collisions included): the
        // same set as last time keeps last time's names, without sanitising and
        // hashing thousands of targets again.
        let names_unchanged = self.cluster_names.len() == users.len()
            && self.cluster_names.keys().eq(users.keys().copied());
        let cluster_names = if names_unchanged {
            std::mem::take(&mut self.cluster_names)
        } else {
            names::clusters(users.keys().copied())
        };
        let groups = route::groups(&config.mappings);
        let plans = listener::plans(config);
        let mut reuse = Reuse::default();

        let mut memos =
            self.route_memos(&groups, &cluster_names, names_unchanged, config, &mut reuse);
        let layouts: Vec<_> = plans
            .iter()
            .map(|plan| vhost::route_configuration_layout(plan, config, &groups))
            .collect();
        build_variants(&mut memos, &layouts, &groups, &cluster_names, config);
        let mut out = EncodedResources::default();
        for plan in &plans {
            let listener = listener::listener(plan, config, &cluster_names);
            out.listeners
                .push((listener.name.clone(), Bytes::from(listener.encode_to_vec())));
        }
        let configs = layouts
            .into_iter()
            .zip(&plans)
            .map(|((shell, layouts), plan)| (shell, layouts, vhost::attachments(plan, config)))
            .collect();
        let buffers = self
            .steady
            .as_mut()
            .map(|s| s.routes.take_buffers())
            .unwrap_or_default();
        let route = &mut |index: usize, headers: &[HeaderMatcher]| {
            memos[index]
                .variants
                .iter()
                .find(|v| v.headers == headers)
                .map(|v| v.body.clone())
                .unwrap_or_default()
        };
        let routes = Routes::new(configs, &groups, route, buffers);
        out.routes.extend(routes.encoded());
        for (group, mut memo) in groups.iter().zip(memos) {
            memo.variants.retain(|v| v.used);
            memo.variants.iter_mut().for_each(|v| v.used = false);
            let primary = &group.primary().meta;
            self.routes
                .insert(format!("{}/{}", primary.namespace, primary.name), memo);
        }
        out.clusters = self.clusters(config, endpoints, &cluster_names, &users, &mut reuse);
        out.endpoints = self.assignments(&cluster_names, endpoints);
        out.secrets = super::secrets(config, &plans, &cluster_names)
            .into_iter()
            .map(|s| (s.name.clone(), Bytes::from(s.encode_to_vec())))
            .collect();
        for list in [
            &mut out.listeners,
            &mut out.routes,
            &mut out.clusters,
            &mut out.endpoints,
            &mut out.secrets,
        ] {
            list.sort_by(|a, b| a.0.cmp(&b.0));
        }
        self.cluster_names = cluster_names;
        self.steady = Some(Steady {
            routes,
            rest: without_mappings(config),
            endpoints: endpoints.clone(),
            listeners: out.listeners.clone(),
            endpoints_out: out.endpoints.clone(),
            secrets: out.secrets.clone(),
        });
        (out, reuse)
    }

    /// Translates `config`, which differs from the config of the last translation by
    /// its Mappings alone: `removed` left it and `added` came in (a changed Mapping is
    /// in both; see `config::MappingDelta`). Only what those Mappings touch is built
    /// again: their route groups, placed anew in each virtual host's order (see
    /// `steady`), and the clusters of their targets. Equal to [`Cache::translate`] of
    /// `config`; `None` when the change needs a whole translation (other endpoints,
    /// anything but Mappings changed, a cluster name that a new target would make
    /// collide), after which the caller runs [`Cache::translate`].
    pub fn translate_delta(
        &mut self,
        config: &Config,
        removed: &[Mapping],
        added: &[Mapping],
        endpoints: &Endpoints,
    ) -> Option<(EncodedResources, Reuse)> {
        let mut steady = self.steady.take()?;
        if !matches!(sorted(config), Cow::Borrowed(_))
            || steady.endpoints != *endpoints
            || !same_except_mappings(&steady.rest, config)
        {
            return None;
        }
        let plans = listener::plans(config);
        let attachments: Vec<_> = plans
            .iter()
            .map(|plan| vhost::attachments(plan, config))
            .collect();
        if !steady.routes.same_attachments(&attachments) {
            return None;
        }
        let mut reuse = Reuse::default();
        let targets_changed = self.clusters_delta(config, removed, added, endpoints, &mut reuse)?;

        // The groups of the changed Mappings' matches, before and after.
        let changed: Vec<&Mapping> = removed.iter().chain(added).collect();
        let affected = |m: &Mapping| changed.iter().any(|c| route::same_match(c, m));
        let added_keys: HashSet<(&str, &str)> = added
            .iter()
            .map(|m| (m.meta.namespace.as_str(), m.meta.name.as_str()))
            .collect();
        let old_members = config
            .mappings
            .iter()
            .filter(|m| {
                !added_keys.contains(&(m.meta.namespace.as_str(), m.meta.name.as_str()))
                    && affected(m)
            })
            .chain(removed);
        let old_groups = route::groups_of(old_members);
        let new_groups = route::groups_of(config.mappings.iter().filter(|m| affected(m)));

        let auth_enabled = config.auth_service.is_some();
        // Memos of groups that are gone go; those of groups that stay are checked below.
        let staying: HashSet<String> = new_groups.iter().map(memo_key).collect();
        for group in &old_groups {
            let key = memo_key(group);
            if !staying.contains(&key) {
                self.routes.remove(&key);
            }
        }
        let mut memos: Vec<RouteMemo> = new_groups
            .iter()
            .map(|group| {
                let kept = self
                    .routes
                    .remove(&memo_key(group))
                    .filter(|memo| memo.fits(group, &self.cluster_names, false, auth_enabled));
                match kept {
                    Some(memo) => {
                        reuse.routes_reused += 1;
                        memo
                    }
                    None => RouteMemo::new(group, &self.cluster_names, auth_enabled),
                }
            })
            .collect();
        let clusters = &self.cluster_names;
        let applied = steady
            .routes
            .apply(&old_groups, &new_groups, &mut |index, headers| {
                let memo = &mut memos[index];
                if let Some(variant) = memo.variants.iter_mut().find(|v| v.headers == headers) {
                    variant.used = true;
                    return variant.body.clone();
                }
                reuse.routes_built += 1;
                let body = encode_route(&new_groups[index], headers, clusters, auth_enabled);
                memo.variants.push(Variant {
                    headers: headers.to_vec(),
                    body: body.clone(),
                    used: true,
                });
                body
            });
        if applied.is_err() {
            return None;
        }
        for (group, mut memo) in new_groups.iter().zip(memos) {
            memo.variants.retain(|v| v.used);
            memo.variants.iter_mut().for_each(|v| v.used = false);
            self.routes.insert(memo_key(group), memo);
        }

        let mut out = EncodedResources::default();
        for plan in &plans {
            let listener = listener::listener(plan, config, &self.cluster_names);
            out.listeners
                .push((listener.name.clone(), Bytes::from(listener.encode_to_vec())));
        }
        out.listeners.sort_by(|a, b| a.0.cmp(&b.0));
        if targets_changed {
            let names = std::mem::take(&mut self.cluster_names);
            steady.endpoints_out = self.assignments(&names, endpoints);
            steady.secrets = super::secrets(config, &plans, &names)
                .into_iter()
                .map(|s| (s.name.clone(), Bytes::from(s.encode_to_vec())))
                .collect();
            steady.secrets.sort_by(|a, b| a.0.cmp(&b.0));
            self.cluster_names = names;
        }
        out.routes = steady.routes.encoded().collect();
        out.routes.sort_by(|a, b| a.0.cmp(&b.0));
        out.clusters = self
            .clusters
            .iter()
            .map(|(name, memo)| (name.clone(), memo.body.clone()))
            .collect();
        out.endpoints = steady.endpoints_out.clone();
        out.secrets = steady.secrets.clone();
        // Equal listeners keep the kept buffers, so the snapshot sees them unchanged.
        if out.listeners == steady.listeners {
            out.listeners = steady.listeners.clone();
        } else {
            steady.listeners = out.listeners.clone();
        }
        self.steady = Some(steady);
        Some((out, reuse))
    }

    /// Forgets the last translation as a base for [`Cache::translate_delta`].
    pub fn forget_steady(&mut self) {
        self.steady = None;
    }

    /// Rebuilds the clusters whose users changed, adds those of new targets and drops
    /// those no Mapping uses any more. `Some(true)` when the set of targets changed;
    /// `None` (nothing changed) when a name would have to change: a new target's name
    /// is taken, or a removed one's had a suffix because it collided.
    fn clusters_delta(
        &mut self,
        config: &Config,
        removed: &[Mapping],
        added: &[Mapping],
        endpoints: &Endpoints,
        reuse: &mut Reuse,
    ) -> Option<bool> {
        fn target(m: &Mapping) -> Option<&Target> {
            match &m.action {
                Action::Route(r) => Some(&r.target),
                Action::Redirect(_) => None,
            }
        }
        let touched: BTreeSet<&Target> = removed.iter().chain(added).filter_map(target).collect();
        // Work out every cluster first; change nothing until all are possible.
        let mut rebuilt: Vec<(String, Target, Vec<Meta>)> = Vec::new();
        let mut gone: Vec<(Target, String)> = Vec::new();
        let mut fresh_names: BTreeSet<String> = BTreeSet::new();
        for t in touched {
            let leaving: HashSet<(&str, &str)> = removed
                .iter()
                .filter(|m| target(m) == Some(t))
                .map(|m| (m.meta.namespace.as_str(), m.meta.name.as_str()))
                .collect();
            let coming = added
                .iter()
                .filter(|m| target(m) == Some(t))
                .map(|m| &m.meta);
            let (name, before) = match self.cluster_names.get(t) {
                Some(name) => {
                    let at = self.clusters.binary_search_by(|(n, _)| n.cmp(name)).ok()?;
                    (name.clone(), self.clusters[at].1.users.as_slice())
                }
                None => {
                    let name = names::clusters([t]).into_values().next()?;
                    if self.name_taken(&name) || !fresh_names.insert(name.clone()) {
                        return None;
                    }
                    (name, &[][..])
                }
            };
            let users = users_after(before, &leaving, coming);
            if users.is_empty() {
                // Its name had a suffix only if it collided, and then the other keeps one.
                if names::clusters([t]).get(t) != Some(&name) {
                    return None;
                }
                gone.push((t.clone(), name));
            } else if users.as_slice() != before {
                rebuilt.push((name, t.clone(), users));
            }
        }
        let targets_changed = !gone.is_empty() || !fresh_names.is_empty();
        for (target, name) in gone {
            self.cluster_names.remove(&target);
            if let Ok(at) = self.clusters.binary_search_by(|(n, _)| n.cmp(&name)) {
                self.clusters.remove(at);
            }
        }
        for (name, target, users) in rebuilt {
            let provenance = Provenance::shared(&users);
            let cluster =
                cluster::cluster(config, &target, &name, provenance, &endpoints.resolution);
            reuse.clusters_built += 1;
            let memo = ClusterMemo {
                target: target.clone(),
                users,
                body: Bytes::from(cluster.encode_to_vec()),
            };
            match self.clusters.binary_search_by(|(n, _)| n.cmp(&name)) {
                Ok(at) => self.clusters[at].1 = memo,
                Err(at) => {
                    self.cluster_names.insert(target, name.clone());
                    self.clusters.insert(at, (name, memo));
                }
            }
        }
        Some(targets_changed)
    }

    /// Whether a cluster is named `name` or `name_...` (the form a collision gives).
    fn name_taken(&self, name: &str) -> bool {
        let suffixed = format!("{name}_");
        let from = self.clusters.partition_point(|(n, _)| n.as_str() < name);
        self.clusters[from..]
            .iter()
            .take_while(|(n, _)| n.as_str() == name || n.starts_with(name))
            .any(|(n, _)| n == name || n.starts_with(&suffixed))
    }

    /// Each group's memo, in group order: the previous one when the group's inputs are
    /// unchanged, an empty one otherwise. Memos of groups that are gone are dropped.
    fn route_memos(
        &mut self,
        groups: &[Group<'_>],
        clusters: &BTreeMap<Target, String>,
        names_unchanged: bool,
        config: &Config,
        reuse: &mut Reuse,
    ) -> Vec<RouteMemo> {
        let auth_enabled = config.auth_service.is_some();
        let mut old = std::mem::take(&mut self.routes);
        let mut key = String::new();
        groups
            .iter()
            .map(|group| {
                let primary = &group.primary().meta;
                key.clear();
                key.push_str(&primary.namespace);
                key.push('/');
                key.push_str(&primary.name);
                let kept = old
                    .remove(key.as_str())
                    .filter(|memo| memo.fits(group, clusters, names_unchanged, auth_enabled));
                match kept {
                    Some(memo) => {
                        reuse.routes_reused += 1;
                        memo
                    }
                    None => {
                        reuse.routes_built += 1;
                        RouteMemo::new(group, clusters, auth_enabled)
                    }
                }
            })
            .collect()
    }

    /// Every cluster, encoded, in name order; built again only when its target, name,
    /// users or the config-wide settings it reads changed.
    fn clusters(
        &mut self,
        config: &Config,
        endpoints: &Endpoints,
        names: &BTreeMap<Target, String>,
        users: &BTreeMap<&Target, Vec<&Meta>>,
        reuse: &mut Reuse,
    ) -> Vec<Encoded> {
        let context = ClusterContext {
            module: config.module.clone(),
            tls_contexts: config.tls_contexts.clone(),
            secrets: config.secrets.clone(),
            resolution: endpoints.resolution.clone(),
        };
        let mut old = std::mem::take(&mut self.clusters);
        if self.cluster_context.as_ref() != Some(&context) {
            old.clear();
        }
        let mut by_name: Vec<(&String, &Target)> = names.iter().map(|(t, n)| (n, t)).collect();
        by_name.sort_unstable();
        let no_users = Vec::new();
        // Both lists are in name order: one merge pairs each cluster with its memo.
        let mut old = old.into_iter().peekable();
        let slots: Vec<(&String, &Target, &Vec<&Meta>, Option<ClusterMemo>)> = by_name
            .into_iter()
            .map(|(name, target)| {
                let metas = users.get(target).unwrap_or(&no_users);
                while old.next_if(|(n, _)| n < name).is_some() {}
                let kept = old
                    .next_if(|(n, _)| n == name)
                    .map(|(_, memo)| memo)
                    .filter(|memo| {
                        memo.target == *target && memo.users.iter().eq(metas.iter().copied())
                    });
                (name, target, metas, kept)
            })
            .collect();
        let built = crate::parallel::map(&slots, crate::parallel::SMALL_ITEMS, |slot| {
            let (name, target, metas, kept) = slot;
            if kept.is_some() {
                return None;
            }
            let provenance = super::provenance::Provenance::shared(metas.iter().copied());
            let cluster = cluster::cluster(config, target, name, provenance, &endpoints.resolution);
            Some(Bytes::from(cluster.encode_to_vec()))
        });
        let mut out = Vec::with_capacity(slots.len());
        for ((name, target, metas, kept), body) in slots.into_iter().zip(built) {
            let memo = match (kept, body) {
                (Some(memo), _) => {
                    reuse.clusters_reused += 1;
                    memo
                }
                (None, body) => {
                    reuse.clusters_built += 1;
                    ClusterMemo {
                        target: target.clone(),
                        users: metas.iter().map(|m| (*m).clone()).collect(),
                        body: body.unwrap_or_default(),
                    }
                }
            };
            out.push((name.clone(), memo.body.clone()));
            self.clusters.push((name.clone(), memo));
        }
        self.cluster_context = Some(context);
        out
    }

    /// Every load assignment, encoded, in name order; encoded again only when its
    /// Service port's endpoints changed.
    fn assignments(
        &mut self,
        cluster_names: &BTreeMap<Target, String>,
        endpoints: &Endpoints,
    ) -> Vec<Encoded> {
        let old = std::mem::take(&mut self.assignments);
        if endpoints.resolution != Resolution::Eds {
            return Vec::new();
        }
        let keys = cluster::service_keys(cluster_names.keys());
        let mut eds: Vec<(String, &ServiceKey)> = keys
            .iter()
            .map(|key| (names::eds_service(key), key))
            .collect();
        eds.sort_unstable();
        let mut old = old.into_iter().peekable();
        let mut out = Vec::with_capacity(eds.len());
        for (name, key) in eds {
            let current = endpoints.get(key);
            while old.next_if(|(n, _)| *n < name).is_some() {}
            let memo = match old.next_if(|(n, _)| *n == name) {
                Some((_, memo)) if memo.endpoints == current => memo,
                _ => AssignmentMemo {
                    endpoints: current.to_vec(),
                    body: Bytes::from(cluster::assignment(name.clone(), current).encode_to_vec()),
                },
            };
            out.push((name.clone(), memo.body.clone()));
            self.assignments.push((name, memo));
        }
        out
    }
}

/// Encodes the route variants the layouts need and no memo has yet (all of them on a
/// cold start, on every core), and marks the variants in use.
fn build_variants(
    memos: &mut [RouteMemo],
    layouts: &[(RouteConfiguration, Vec<vhost::VirtualHostLayout>)],
    groups: &[Group<'_>],
    clusters: &BTreeMap<Target, String>,
    config: &Config,
) {
    let auth_enabled = config.auth_service.is_some();
    let mut missing: Vec<(usize, usize)> = Vec::new();
    for slot in layouts
        .iter()
        .flat_map(|(_, vhosts)| vhosts.iter().flat_map(|v| &v.routes))
    {
        let RouteSlot::Group { index, headers } = slot else {
            continue;
        };
        let variants = &mut memos[*index].variants;
        match variants.iter_mut().find(|v| v.headers == *headers) {
            Some(variant) => variant.used = true,
            None => {
                missing.push((*index, variants.len()));
                variants.push(Variant {
                    headers: headers.clone(),
                    body: Bytes::new(),
                    used: true,
                });
            }
        }
    }
    let memos_read: &[RouteMemo] = memos;
    let bodies = crate::parallel::map(&missing, crate::parallel::SMALL_ITEMS, |&(index, at)| {
        let headers = &memos_read[index].variants[at].headers;
        encode_route(&groups[index], headers, clusters, auth_enabled)
    });
    for ((index, at), body) in missing.into_iter().zip(bodies) {
        memos[index].variants[at].body = body;
    }
}

/// Field `tag` holding the message encoded as `bytes`.
pub(super) fn length_delimited(tag: u32, bytes: &[u8], out: &mut impl bytes::BufMut) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.put_slice(bytes);
}

/// `group`'s route with `headers` appended to its match, encoded.
fn encode_route(
    group: &Group<'_>,
    headers: &[HeaderMatcher],
    clusters: &BTreeMap<Target, String>,
    auth_enabled: bool,
) -> Bytes {
    let mut route = group.route(clusters, &[], auth_enabled);
    if !headers.is_empty() {
        route
            .r#match
            .get_or_insert_with(Default::default)
            .headers
            .extend(headers.iter().cloned());
    }
    Bytes::from(route.encode_to_vec())
}

/// The key of a group's [`RouteMemo`]: its first Mapping, `namespace/name` (neither may
/// hold a `/`).
fn memo_key(group: &Group<'_>) -> String {
    let primary = &group.primary().meta;
    format!("{}/{}", primary.namespace, primary.name)
}

// === impl RouteMemo ===

impl RouteMemo {
    /// A memo for `group` with no encoding yet.
    fn new(group: &Group<'_>, clusters: &BTreeMap<Target, String>, auth_enabled: bool) -> Self {
        let (members, mirrors) = (group.members(), group.mirrors());
        RouteMemo {
            members: members.iter().map(|m| (*m).clone()).collect(),
            mirrors: mirrors.iter().map(|m| (*m).clone()).collect(),
            clusters: members
                .iter()
                .chain(mirrors)
                .map(|m| cluster_of(m, clusters))
                .collect(),
            auth_enabled,
            variants: Vec::new(),
        }
    }

    /// Whether this memo's encodings are `group`'s: the same Mappings, cluster names
    /// and AuthService presence. When no target's cluster name changed (the usual
    /// case), equal Mappings have equal cluster names, and the lookups are skipped.
    fn fits(
        &self,
        group: &Group<'_>,
        clusters: &BTreeMap<Target, String>,
        names_unchanged: bool,
        auth_enabled: bool,
    ) -> bool {
        let (members, mirrors) = (group.members(), group.mirrors());
        self.auth_enabled == auth_enabled
            && self.members.iter().eq(members.iter().copied())
            && self.mirrors.iter().eq(mirrors.iter().copied())
            && (names_unchanged
                || self
                    .clusters
                    .iter()
                    .zip(members.iter().chain(mirrors))
                    .all(|(name, m)| *name == cluster_of(m, clusters)))
    }
}

fn cluster_of(m: &Mapping, clusters: &BTreeMap<Target, String>) -> Option<String> {
    match &m.action {
        Action::Route(r) => clusters.get(&r.target).cloned(),
        Action::Redirect(_) => None,
    }
}

/// A cluster's users after a change: `before` less the Mappings `leaving` (by namespace
/// and name), with `coming` in their places. Users are in [`users`]'s order: Mappings
/// by namespace and name, then the gateway's services.
fn users_after<'a>(
    before: &[Meta],
    leaving: &HashSet<(&str, &str)>,
    coming: impl Iterator<Item = &'a Meta>,
) -> Vec<Meta> {
    let mut users: Vec<Meta> = before
        .iter()
        .filter(|m| {
            !(m.kind == crate::config::Kind::Mapping
                && leaving.contains(&(m.namespace.as_str(), m.name.as_str())))
        })
        .cloned()
        .collect();
    for meta in coming {
        let at = users.partition_point(|u| {
            u.kind == crate::config::Kind::Mapping
                && (u.namespace.as_str(), u.name.as_str())
                    < (meta.namespace.as_str(), meta.name.as_str())
        });
        users.insert(at, meta.clone());
    }
    users
}

/// `config` without its Mappings: what a change of Mappings leaves as it was.
fn without_mappings(config: &Config) -> Config {
    let Config {
        mappings: _,
        hosts,
        listeners,
        tls_contexts,
        secrets,
        ca_bundles,
        auth_service,
        rate_limit_service,
        tracing_service,
        log_services,
        local_rate_limits,
        module,
    } = config;
    Config {
        mappings: Vec::new(),
        hosts: hosts.clone(),
        listeners: listeners.clone(),
        tls_contexts: tls_contexts.clone(),
        secrets: secrets.clone(),
        ca_bundles: ca_bundles.clone(),
        auth_service: auth_service.clone(),
        rate_limit_service: rate_limit_service.clone(),
        tracing_service: tracing_service.clone(),
        log_services: log_services.clone(),
        local_rate_limits: local_rate_limits.clone(),
        module: module.clone(),
    }
}

/// Whether `a` and `b` are equal but for their Mappings.
fn same_except_mappings(a: &Config, b: &Config) -> bool {
    a.hosts == b.hosts
        && a.listeners == b.listeners
        && a.tls_contexts == b.tls_contexts
        && a.secrets == b.secrets
        && a.ca_bundles == b.ca_bundles
        && a.auth_service == b.auth_service
        && a.rate_limit_service == b.rate_limit_service
        && a.tracing_service == b.tracing_service
        && a.log_services == b.log_services
        && a.local_rate_limits == b.local_rate_limits
        && a.module == b.module
}
