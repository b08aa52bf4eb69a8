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
//! Everything else (groups, Emissary's route order, cluster names, listeners, secrets)
//! is computed afresh each time, from the whole config, exactly as [`super::translate`]
//! does, with the same code. A RouteConfiguration is then assembled from its routes'
//! bytes: a protobuf message is the concatenation of its fields, and prost writes them
//! in declaration order, where `name` and `domains` precede a virtual host's `routes`
//! and `name` precedes a RouteConfiguration's `virtual_hosts`. The result is
//! byte-identical to encoding [`super::translate`]'s output (see the tests).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, RouteConfiguration, VirtualHost};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

use super::route::Group;
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
        for (plan, (shell, layouts)) in plans.iter().zip(layouts) {
            let listener = listener::listener(plan, config, &cluster_names);
            out.listeners
                .push((listener.name.clone(), Bytes::from(listener.encode_to_vec())));
            let name = shell.name.clone();
            let body = route_configuration(shell, layouts, |index, headers| {
                memos[index]
                    .variants
                    .iter()
                    .find(|v| v.headers == headers)
                    .map(|v| v.body.clone())
                    .unwrap_or_default()
            });
            out.routes.push((name, body));
        }
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
        (out, reuse)
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
        // When no target's cluster name changed (the usual case), a memo whose Mappings
        // are equal has the right cluster names too, and the lookups can be skipped.
        let cluster_of = |m: &Mapping| match &m.action {
            Action::Route(r) => clusters.get(&r.target).cloned(),
            Action::Redirect(_) => None,
        };
        let mut key = String::new();
        groups
            .iter()
            .map(|group| {
                let primary = &group.primary().meta;
                let (members, mirrors) = (group.members(), group.mirrors());
                key.clear();
                key.push_str(&primary.namespace);
                key.push('/');
                key.push_str(&primary.name);
                let kept = old.remove(key.as_str()).filter(|memo| {
                    memo.auth_enabled == auth_enabled
                        && memo.members.iter().eq(members.iter().copied())
                        && memo.mirrors.iter().eq(mirrors.iter().copied())
                        && (names_unchanged
                            || memo.clusters.iter().zip(members.iter().chain(mirrors)).all(
                                |(name, m)| match &m.action {
                                    Action::Route(r) => name.as_ref() == clusters.get(&r.target),
                                    Action::Redirect(_) => name.is_none(),
                                },
                            ))
                });
                match kept {
                    Some(memo) => {
                        reuse.routes_reused += 1;
                        memo
                    }
                    None => {
                        reuse.routes_built += 1;
                        RouteMemo {
                            members: members.iter().map(|m| (*m).clone()).collect(),
                            mirrors: mirrors.iter().map(|m| (*m).clone()).collect(),
                            clusters: members
                                .iter()
                                .chain(mirrors)
                                .map(|m| cluster_of(m))
                                .collect(),
                            auth_enabled,
                            variants: Vec::new(),
                        }
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
        let built = super::parallel::map(&slots, super::parallel::SMALL_ITEMS, |slot| {
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
    let bodies = super::parallel::map(&missing, super::parallel::SMALL_ITEMS, |&(index, at)| {
        let headers = &memos_read[index].variants[at].headers;
        let mut route = groups[index].route(clusters, &[], auth_enabled);
        if !headers.is_empty() {
            route
                .r#match
                .get_or_insert_with(Default::default)
                .headers
                .extend(headers.iter().cloned());
        }
        Bytes::from(route.encode_to_vec())
    });
    for ((index, at), body) in missing.into_iter().zip(bodies) {
        memos[index].variants[at].body = body;
    }
}

/// The encoding of `shell` with `layouts` as its virtual hosts, each route's bytes from
/// `route(group index, appended headers)`.
fn route_configuration(
    shell: RouteConfiguration,
    layouts: Vec<vhost::VirtualHostLayout>,
    route: impl Fn(usize, &[HeaderMatcher]) -> Bytes,
) -> Bytes {
    let mut vhosts = Vec::with_capacity(layouts.len());
    for layout in layouts {
        let routes: Vec<Bytes> = layout
            .routes
            .iter()
            .map(|slot| match slot {
                RouteSlot::Group { index, headers } => route(*index, headers),
                RouteSlot::Fixed(r) => Bytes::from(r.encode_to_vec()),
            })
            .collect();
        vhosts.push(virtual_host(layout.shell, &routes));
    }
    // `name` (1) is the only field prost writes before `virtual_hosts` (2).
    let head = RouteConfiguration {
        name: shell.name.clone(),
        ..Default::default()
    };
    let tail = RouteConfiguration {
        name: String::new(),
        virtual_hosts: Vec::new(),
        ..shell
    };
    let mut out = Vec::with_capacity(
        head.encoded_len() + tail.encoded_len() + vhosts.iter().map(|v| v.len() + 8).sum::<usize>(),
    );
    out.extend_from_slice(&head.encode_to_vec());
    for vhost in &vhosts {
        length_delimited(2, vhost, &mut out);
    }
    out.extend_from_slice(&tail.encode_to_vec());
    Bytes::from(out)
}

/// A virtual host's encoding from its shell (no routes) and its routes' encodings.
fn virtual_host(shell: VirtualHost, routes: &[Bytes]) -> Vec<u8> {
    // prost writes `name` (1) and `domains` (2), then `routes` (3), then the rest.
    let head = VirtualHost {
        name: shell.name.clone(),
        domains: shell.domains.clone(),
        ..Default::default()
    };
    let tail = VirtualHost {
        name: String::new(),
        domains: Vec::new(),
        routes: Vec::new(),
        ..shell
    };
    let mut out = Vec::with_capacity(
        head.encoded_len() + tail.encoded_len() + routes.iter().map(|r| r.len() + 8).sum::<usize>(),
    );
    out.extend_from_slice(&head.encode_to_vec());
    for route in routes {
        length_delimited(3, route, &mut out);
    }
    out.extend_from_slice(&tail.encode_to_vec());
    out
}

/// Field `tag` holding the message encoded as `bytes`.
fn length_delimited(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}
