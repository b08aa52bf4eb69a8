//! State-of-the-world ADS (`StreamAggregatedResources`): one stream's state machine.
//!
//! [`Sotw`] is synchronous and owns no I/O: the stream task ([`super::server`]) feeds it
//! requests ([`Sotw::on_request`]) and snapshots ([`Sotw::set_target`]) and, whenever
//! the send buffer has room, asks it for the next response ([`Sotw::next_response`]).
//! Computing a response only when it can be sent means a slow node never queues stale
//! responses: it gets the latest state when it reads again.
//!
//! Per type it keeps the subscription, the last nonce, what was sent and ACKed, and the
//! snapshot the node fully holds (`base`). Make-before-break (xDS protocol, "Eventual
//! consistency considerations"): on a change, types go out in the order CDS, EDS, LDS,
//! RDS, SDS, and full-state types (CDS, LDS) first keep the resources the new snapshot
//! drops; the removals follow, in reverse order, only once every type is ACKed and none
//! is stuck on a rejected version, so a NACKed listener never loses the clusters the
//! node still routes to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tonic::Status;

use super::cache::ResponseCache;
use super::names::NameSets;
use super::subscription::Subscription;
use super::wire::{Reply, sotw_body};
use super::{Limits, check_names, nack_message, requested_type};
use crate::snapshot::{Resource, ResourceType, Snapshot, StreamHandle, content_version};

/// One SotW stream's protocol state.
#[derive(Debug)]
pub(crate) struct Sotw {
    handle: StreamHandle,
    limits: Limits,
    target: Option<Arc<Snapshot>>,
    types: BTreeMap<ResourceType, TypeState>,
    next_nonce: u64,
    unknown_types: BTreeSet<String>,
    /// Response bodies shared with the other streams.
    cache: Arc<ResponseCache>,
    /// Subscribed name sets shared with the other streams.
    name_sets: Arc<NameSets>,
}

#[derive(Debug, Default)]
struct TypeState {
    sub: Subscription,
    /// The nonce of the last response; requests naming another one are stale.
    nonce: Option<String>,
    sent: Option<Sent>,
    /// The last response is neither ACKed nor NACKed yet.
    in_flight: bool,
    /// The snapshot whose resources of this type the node holds in full (ACKed).
    base: Option<Arc<Snapshot>>,
    /// `version_info` of the stream's first request: what the node held before it
    /// reconnected. If it equals what we would send, nothing is sent.
    claimed: Option<String>,
    /// The last set versions computed, final state `[0]` and make phase `[1]`.
    versions: [Option<Memo>; 2],
}

/// A set version and what it was computed from. Planning asks for a type's versions
/// several times per response, and a named set's version hashes every name and
/// resource version in it: at 10k streams of 400 EDS names each, recomputing them was
/// the server's main CPU cost (issue 3).
#[derive(Debug)]
struct Memo {
    target: Arc<Snapshot>,
    base: Option<Arc<Snapshot>>,
    generation: u64,
    version: String,
}

#[derive(Debug, Clone)]
struct Sent {
    version: String,
    snapshot: Arc<Snapshot>,
    /// It held exactly the target's resources (no kept removals).
    complete: bool,
}

/// The next response to send: which type, and whether it is the make phase (new and
/// changed resources, removed ones kept) or the final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    kind: ResourceType,
    keep_removed: bool,
}

// === impl Sotw ===

impl Sotw {
    pub(crate) fn new(
        handle: StreamHandle,
        limits: Limits,
        cache: Arc<ResponseCache>,
        name_sets: Arc<NameSets>,
    ) -> Sotw {
        Sotw {
            handle,
            limits,
            target: None,
            types: BTreeMap::new(),
            next_nonce: 0,
            unknown_types: BTreeSet::new(),
            cache,
            name_sets,
        }
    }

    pub(crate) fn handle(&self) -> &StreamHandle {
        &self.handle
    }

    /// The snapshot this node should hold now (canary or stable).
    pub(crate) fn set_target(&mut self, target: Option<Arc<Snapshot>>) {
        self.target = target;
    }

    /// Applies one request: subscription change, ACK or NACK. A request whose nonce is not
    /// the type's latest is stale and ignored whole (xDS protocol, "ACK and NACK semantics").
    ///
    /// # Errors
    ///
    /// A gRPC status that ends the stream: no type URL, or an absurd name list.
    pub(crate) fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), Status> {
        let Some(kind) = requested_type(
            &req.type_url,
            "discovery request",
            &mut self.unknown_types,
            self.handle.node_id(),
        )?
        else {
            return Ok(());
        };
        check_names(&self.limits, &req.type_url, &req.resource_names)?;
        let st = self.types.entry(kind).or_default();
        let first = st.nonce.is_none() && st.sent.is_none() && st.claimed.is_none();
        if let Some(nonce) = &st.nonce {
            if req.response_nonce != *nonce {
                tracing::debug!(%kind, nonce = %req.response_nonce, latest = %nonce, "stale nonce: request ignored");
                return Ok(());
            }
            if st.in_flight {
                st.in_flight = false;
                if let Some(sent) = &st.sent {
                    let snapshot = sent.snapshot.version();
                    match &req.error_detail {
                        Some(status) => {
                            self.handle
                                .nacked(kind, &sent.version, snapshot, &nack_message(status))
                        }
                        None => {
                            self.handle.acked(kind, &sent.version, snapshot);
                            if sent.complete {
                                st.base = Some(sent.snapshot.clone());
                            }
                        }
                    }
                }
            }
        } else if first && !req.version_info.is_empty() {
            st.claimed = Some(req.version_info.clone());
        }
        st.sub
            .sotw_update(first, req.resource_names, &self.name_sets);
        Ok(())
    }

    /// The next response to send, if any; it is recorded as sent. Its body comes from
    /// the shared cache: the version names the set's content, so streams sent the same
    /// set share one encoding.
    pub(crate) fn next_response(&mut self) -> Option<Reply> {
        let plan = self.plan()?;
        let target = self.target.clone()?;
        let st = self.types.get_mut(&plan.kind)?;
        let version = set_version(plan.kind, st, &target, plan.keep_removed);
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        let body = self.cache.body(plan.kind, &version, || {
            let set = response_set(plan.kind, st, &target, plan.keep_removed);
            sotw_body(plan.kind, &version, &set)
        });
        let response = Reply::sotw(body, &nonce);
        self.handle
            .sent(plan.kind, &version, target.version(), &nonce);
        tracing::debug!(kind = %plan.kind, version, nonce, keep_removed = plan.keep_removed, "sotw response");
        st.nonce = Some(nonce);
        st.in_flight = true;
        st.sent = Some(Sent {
            version,
            snapshot: target,
            complete: !plan.keep_removed,
        });
        Some(response)
    }

    /// Reports to the store whether the node holds the whole target (every subscribed
    /// type ACKed at the target's content).
    pub(crate) fn report_sync(&mut self) {
        let synced = self.synced();
        self.handle.synced(synced.as_deref());
    }

    fn synced(&mut self) -> Option<String> {
        let target = self.target.clone()?;
        if self.types.is_empty() {
            return None;
        }
        for (kind, st) in &mut self.types {
            if st.in_flight {
                return None;
            }
            let version = set_version(*kind, st, &target, false);
            let held = st.sent.as_ref().map(|s| s.version.as_str());
            let nothing_due = !kind.is_full_state()
                && held.is_none()
                && st.sub.select(target.resources(*kind)).next().is_none();
            if held != Some(version.as_str()) && !nothing_due {
                return None;
            }
        }
        Some(target.version().to_owned())
    }

    /// Picks the next response: make phase in CDS, EDS, LDS, RDS, SDS order, then the
    /// removals in reverse order once everything is ACKed and nothing is rejected.
    fn plan(&mut self) -> Option<Plan> {
        let target = self.target.clone()?;
        let mut blocked = false;
        for (kind, st) in &mut self.types {
            let kind = *kind;
            let version = set_version(kind, st, &target, true);
            if st.sent.is_none() && st.claimed.as_deref() == Some(version.as_str()) {
                // Reconnected holding exactly this: nothing to send (issue 3, "no
                // needless push for identical versions").
                st.claimed = None;
                self.handle.acked(kind, &version, target.version());
                st.sent = Some(Sent {
                    version,
                    snapshot: target.clone(),
                    complete: true,
                });
                st.base = Some(target.clone());
                continue;
            }
            // The make-phase set differs from the final state exactly when it keeps
            // removed resources.
            let complete = set_version(kind, st, &target, false);
            // Up to date when the node was sent either this make-phase set or the final
            // state (the removals went out already).
            let up_to_date = st
                .sent
                .as_ref()
                .is_some_and(|s| s.version == version || s.version == complete);
            if up_to_date {
                blocked |= st
                    .sent
                    .as_ref()
                    .is_some_and(|s| self.handle.is_rejected(kind, &s.version));
                continue;
            }
            if !kind.is_full_state()
                && st.sent.is_none()
                && st.sub.select(target.resources(kind)).next().is_none()
            {
                continue;
            }
            if self.handle.is_rejected(kind, &version) {
                blocked = true;
                continue;
            }
            let keep_removed = kind.is_full_state() && version != complete;
            return Some(Plan { kind, keep_removed });
        }
        if blocked || self.types.values().any(|st| st.in_flight) {
            return None;
        }
        for (kind, st) in self.types.iter_mut().rev() {
            if !kind.is_full_state() {
                continue;
            }
            let version = set_version(*kind, st, &target, false);
            if st.sent.as_ref().is_some_and(|s| s.version != version)
                && !self.handle.is_rejected(*kind, &version)
            {
                return Some(Plan {
                    kind: *kind,
                    keep_removed: false,
                });
            }
        }
        None
    }
}

/// The resources one response of `kind` carries: what the subscription selects from
/// `target`, plus (make phase of a full-state type) what the node holds from its base
/// snapshot that `target` drops.
fn response_set<'a>(
    kind: ResourceType,
    st: &'a TypeState,
    target: &'a Snapshot,
    keep_removed: bool,
) -> Vec<&'a Resource> {
    let mut set: Vec<&Resource> = st.sub.select(target.resources(kind)).collect();
    if keep_removed && kind.is_full_state() {
        set.extend(kept_removals(kind, st, target));
        set.sort_by(|a, b| a.name.cmp(&b.name));
    }
    set
}

/// Resources of `kind` in the node's base snapshot that `target` no longer holds.
fn kept_removals<'a>(
    kind: ResourceType,
    st: &'a TypeState,
    target: &'a Snapshot,
) -> impl Iterator<Item = &'a Resource> + 'a {
    st.base
        .as_deref()
        .filter(move |base| !std::ptr::eq(*base, target))
        .into_iter()
        .flat_map(move |base| {
            st.sub
                .select(base.resources(kind))
                .filter(move |r| !target.resources(kind).contains_key(&r.name))
        })
}

/// The content version of the response set [`response_set`] yields, memoised per
/// target, base snapshot and subscription. Without kept removals it depends only on the
/// target and the subscription: a wildcard's is the snapshot's type version, a named
/// set's is computed once for every stream sharing the set ([`super::names`]).
fn set_version(
    kind: ResourceType,
    st: &mut TypeState,
    target: &Arc<Snapshot>,
    keep_removed: bool,
) -> String {
    // Only full-state types keep removed resources in a response.
    let keep_removed = keep_removed && kind.is_full_state();
    let slot = usize::from(keep_removed);
    let generation = st.sub.generation();
    if let Some(memo) = &st.versions[slot]
        && Arc::ptr_eq(&memo.target, target)
        && memo.generation == generation
        && match (&memo.base, &st.base) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    {
        return memo.version.clone();
    }
    let version = {
        let st: &TypeState = st;
        if keep_removed {
            let set = response_set(kind, st, target, true);
            compute_set_version(kind, st, target, &set)
        } else if st.sub.is_wildcard() {
            target.type_version(kind).to_owned()
        } else {
            st.sub.name_set().version(kind, target, || {
                let set = response_set(kind, st, target, false);
                compute_set_version(kind, st, target, &set)
            })
        }
    };
    st.versions[slot] = Some(Memo {
        target: target.clone(),
        base: st.base.clone(),
        generation,
        version: version.clone(),
    });
    version
}

/// The content version of a response set: the snapshot's precomputed type version when
/// the set is exactly the type's wildcard content, else a hash of names and versions.
fn compute_set_version(
    kind: ResourceType,
    st: &TypeState,
    target: &Snapshot,
    set: &[&Resource],
) -> String {
    if st.sub.is_wildcard() && set.len() == target.resources(kind).len() {
        return target.type_version(kind).to_owned();
    }
    content_version(set.iter().map(|r| (r.name.as_str(), r.version.as_str())))
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

    use super::*;
    use crate::snapshot::{Protocol, Store, StoreConfig};
    use crate::translate::Resources;
    use crate::xds::{Config, type_url};

    fn snapshot(rev: &str) -> Arc<Snapshot> {
        let resources = Resources {
            clusters: vec![Cluster {
                name: format!("c-{rev}"),
                ..Default::default()
            }],
            endpoints: ["a", "b"]
                .iter()
                .map(|n| ClusterLoadAssignment {
                    cluster_name: format!("{n}-{rev}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        Arc::new(Snapshot::new(rev, 0, &resources).expect("unique names"))
    }

    fn request(type_url: &str, names: &[String], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(Node {
                id: "n".into(),
                ..Default::default()
            }),
            type_url: type_url.into(),
            resource_names: names.to_vec(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    /// Issue 3: "resources encoded once however many streams".
    #[test]
    fn streams_sent_the_same_set_share_one_encoded_body() {
        let store = Arc::new(Store::new(StoreConfig::default()));
        let cache = Arc::new(ResponseCache::new(1 << 20));
        let name_sets = Arc::new(NameSets::default());
        let target = snapshot("r1");
        let names = vec!["a-r1".to_owned(), "b-r1".to_owned()];
        let mut bodies = Vec::new();
        for i in 0..3 {
            let node = Node {
                id: format!("node-{i}"),
                ..Default::default()
            };
            let handle = store.open_stream(&node, Protocol::Sotw);
            let mut sotw = Sotw::new(
                handle,
                Config::default().limits(),
                cache.clone(),
                name_sets.clone(),
            );
            sotw.set_target(Some(target.clone()));
            sotw.on_request(request(type_url::ENDPOINT, &names, ""))
                .expect("valid");
            let reply = sotw.next_response().expect("an EDS response");
            bodies.push(reply.into_chunks().1);
            // The ACK with the same names changes nothing: no second response.
            sotw.on_request(request(type_url::ENDPOINT, &names, "1"))
                .expect("valid");
            assert!(sotw.next_response().is_none());
        }
        assert_eq!(cache.encoded(), 1, "one body for three streams");
        assert!(bodies.iter().all(|b| b.as_ptr() == bodies[0].as_ptr()));
    }
}
