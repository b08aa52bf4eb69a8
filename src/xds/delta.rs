//! Incremental ADS (`DeltaAggregatedResources`): one stream's state machine.
//!
//! Like [`super::sotw::Sotw`] it is synchronous and I/O-free; the stream task feeds it
//! and asks for the next response when the send buffer has room.
//!
//! Per type it tracks what the node *holds* (name -> version), seeded from
//! `initial_resource_versions` on the stream's first request, so a node reconnecting
//! with identical versions (to this or another replica) gets no push. A response carries
//! only resources whose version differs from what the node holds, never twice the same
//! name; names a node asked for that do not exist are reported once in
//! `removed_resources` (xDS protocol, "Knowing when a requested resource does not
//! exist"). Subscription changes apply whatever the nonce; ACK/NACK only for a nonce we
//! sent. Make-before-break: updates go out in CDS, EDS, LDS, RDS, SDS order; removals
//! follow, in reverse order, once nothing is in flight and nothing is rejected.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as WireResource,
};
use tonic::Status;

use super::subscription::Subscription;
use super::{Limits, check_names, nack_message, requested_type, to_any, type_url};
use crate::snapshot::{ResourceType, Snapshot, StreamHandle, content_version};

/// How many unanswered responses per type a stream remembers; older ones count as lost
/// (Envoy answers every response, so only a broken client reaches this).
const MAX_OUTSTANDING: usize = 64;

/// One delta stream's protocol state.
#[derive(Debug)]
pub(crate) struct Delta {
    handle: StreamHandle,
    limits: Limits,
    target: Option<Arc<Snapshot>>,
    types: BTreeMap<ResourceType, TypeState>,
    next_nonce: u64,
    unknown_types: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct TypeState {
    sub: Subscription,
    seen: bool,
    /// What the node holds: name -> version.
    held: BTreeMap<String, String>,
    /// Names asked for that the node was told do not exist.
    told_missing: BTreeSet<String>,
    responses: u64,
    had_initial: bool,
    outstanding: VecDeque<Pending>,
}

#[derive(Debug)]
struct Pending {
    nonce: String,
    /// Content version of what the node holds once it applies the response.
    version: String,
    snapshot: String,
    resource_versions: Vec<String>,
}

// === impl Delta ===

impl Delta {
    pub(crate) fn new(handle: StreamHandle, limits: Limits) -> Delta {
        Delta {
            handle,
            limits,
            target: None,
            types: BTreeMap::new(),
            next_nonce: 0,
            unknown_types: BTreeSet::new(),
        }
    }

    pub(crate) fn handle(&self) -> &StreamHandle {
        &self.handle
    }

    /// The snapshot this node should hold now (canary or stable).
    pub(crate) fn set_target(&mut self, target: Option<Arc<Snapshot>>) {
        self.target = target;
    }

    /// Applies one request: ACK/NACK when its nonce is one we sent, then the
    /// subscription change (always, even with a stale nonce, per the xDS protocol).
    ///
    /// # Errors
    ///
    /// A gRPC status that ends the stream: no type URL, or absurd name lists.
    pub(crate) fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Status> {
        let Some(kind) = requested_type(
            &req.type_url,
            "delta discovery request",
            &mut self.unknown_types,
            self.handle.node_id(),
        )?
        else {
            return Ok(());
        };
        check_names(&self.limits, &req.type_url, &req.resource_names_subscribe)?;
        check_names(&self.limits, &req.type_url, &req.resource_names_unsubscribe)?;
        if req.initial_resource_versions.len() > self.limits.max_names {
            return Err(Status::invalid_argument(format!(
                "request for {} lists {} initial resource versions, more than the limit of {}",
                req.type_url,
                req.initial_resource_versions.len(),
                self.limits.max_names
            )));
        }
        let st = self.types.entry(kind).or_default();
        let first = !st.seen;
        st.seen = true;
        if !req.response_nonce.is_empty() {
            match st
                .outstanding
                .iter()
                .position(|p| p.nonce == req.response_nonce)
            {
                Some(pos) => {
                    let answered = st.outstanding.drain(..=pos).next_back();
                    if let Some(p) = answered {
                        match &req.error_detail {
                            Some(status) => self.handle.nacked_resources(
                                kind,
                                &p.version,
                                &p.resource_versions,
                                &p.snapshot,
                                &nack_message(status),
                            ),
                            None => self.handle.acked(kind, &p.version, &p.snapshot),
                        }
                    }
                }
                None => {
                    tracing::debug!(%kind, nonce = %req.response_nonce, "unknown or stale nonce: only the subscription change applies");
                }
            }
        }
        st.sub.delta_update(
            first,
            &req.resource_names_subscribe,
            &req.resource_names_unsubscribe,
        );
        for name in &req.resource_names_unsubscribe {
            st.held.remove(name);
            st.told_missing.remove(name);
        }
        for name in &req.resource_names_subscribe {
            // A fresh subscription to a missing name deserves a fresh answer.
            st.told_missing.remove(name);
        }
        if first && !req.initial_resource_versions.is_empty() {
            st.had_initial = true;
            st.held.extend(req.initial_resource_versions);
        }
        Ok(())
    }

    /// The next response to send, if any; it is recorded as sent.
    pub(crate) fn next_response(&mut self) -> Option<DeltaDiscoveryResponse> {
        let target = self.target.clone()?;
        let mut blocked = false;
        for (kind, st) in &mut self.types {
            let kind = *kind;
            let map = target.resources(kind);
            let mut updates = Vec::new();
            for r in st.sub.select(map) {
                if st.held.get(&r.name) == Some(&r.version) {
                    continue;
                }
                if self.handle.is_rejected(kind, &r.version) {
                    blocked = true;
                    continue;
                }
                updates.push(r);
            }
            let missing: Vec<String> = st
                .sub
                .names()
                .iter()
                .filter(|n| {
                    !map.contains_key(*n)
                        && !st.held.contains_key(*n)
                        && !st.told_missing.contains(*n)
                })
                .cloned()
                .collect();
            let first_answer = st.responses == 0 && !st.had_initial;
            if updates.is_empty() && missing.is_empty() && !first_answer {
                continue;
            }
            let resources: Vec<WireResource> = updates
                .iter()
                .map(|r| WireResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(to_any(kind, r)),
                    ..Default::default()
                })
                .collect();
            let resource_versions = updates.iter().map(|r| r.version.clone()).collect();
            for r in &updates {
                st.held.insert(r.name.clone(), r.version.clone());
            }
            st.told_missing.extend(missing.iter().cloned());
            let response = self.commit(kind, &target, resources, missing, resource_versions);
            return Some(response);
        }
        if blocked || self.types.values().any(|st| !st.outstanding.is_empty()) {
            return None;
        }
        let kinds: Vec<ResourceType> = self.types.keys().rev().copied().collect();
        for kind in kinds {
            let st = self.types.get_mut(&kind)?;
            let map = target.resources(kind);
            let removed: Vec<String> = st
                .held
                .keys()
                .filter(|n| !(st.sub.wants(n) && map.contains_key(*n)))
                .cloned()
                .collect();
            if removed.is_empty() {
                continue;
            }
            for name in &removed {
                st.held.remove(name);
            }
            return Some(self.commit(kind, &target, Vec::new(), removed, Vec::new()));
        }
        None
    }

    fn commit(
        &mut self,
        kind: ResourceType,
        target: &Snapshot,
        resources: Vec<WireResource>,
        removed: Vec<String>,
        resource_versions: Vec<String>,
    ) -> DeltaDiscoveryResponse {
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        let Some(st) = self.types.get_mut(&kind) else {
            // Only called for a type in the map.
            return DeltaDiscoveryResponse::default();
        };
        let version = content_version(st.held.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        self.handle.sent(kind, &version, target.version(), &nonce);
        tracing::debug!(%kind, nonce, updated = resources.len(), removed = removed.len(), "delta response");
        st.responses += 1;
        if st.outstanding.len() >= MAX_OUTSTANDING {
            st.outstanding.pop_front();
        }
        st.outstanding.push_back(Pending {
            nonce: nonce.clone(),
            version,
            snapshot: target.version().to_owned(),
            resource_versions,
        });
        DeltaDiscoveryResponse {
            system_version_info: target.version().to_owned(),
            resources,
            type_url: type_url::of(kind).to_owned(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        }
    }

    /// Reports to the store whether the node holds the whole target.
    pub(crate) fn report_sync(&mut self) {
        let synced = self.synced();
        self.handle.synced(synced.as_deref());
    }

    fn synced(&self) -> Option<String> {
        let target = self.target.as_ref()?;
        if self.types.is_empty() {
            return None;
        }
        for (kind, st) in &self.types {
            if !st.outstanding.is_empty() {
                return None;
            }
            let mut count = 0;
            for r in st.sub.select(target.resources(*kind)) {
                count += 1;
                if st.held.get(&r.name) != Some(&r.version) {
                    return None;
                }
            }
            if count != st.held.len() {
                return None;
            }
        }
        Some(target.version().to_owned())
    }
}
