//! The JSON API under `/api/v1/`: what `/diag` shows, for scripts and dashboards.
//!
//! - `status`: the serving snapshot, the applied and the last attempted revision (with
//!   its errors), the source's health and the rollout.
//! - `nodes`, `nodes/{id}`: every node's metadata, per-type sent/ACKed versions and NACKs.
//! - `revisions`: the pipeline's attempts, newest first, and the snapshots in the history.
//! - `revisions/{id}`: the newest attempt at one revision (a commit id or a unique
//!   prefix); 404 until the pipeline has processed it, so a deploy script can wait for
//!   its commit with `curl --retry` and then read whether it was accepted.
//! - `resources[?type=T][&snapshot=V]`: every resource with its provenance (file:line).
//! - `routes`, `clusters` (same parameters): the decoded route table and clusters.
//! - `diff?from=A&to=B`: what changes between two snapshots, by type and route by route.
//!
//! Snapshots are named by version (`REV+eN`), by revision id, or by a unique prefix of
//! either (as short commit ids are pasted).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State as Extract};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::inventory::{Inventory, ResourceRow, RouteRow};
use super::{Error, Result, State};
use crate::pipeline::{Attempt, SourceError};
use crate::snapshot::{Diff, NackRecord, NodeState, ResourceType, RolloutStatus, Snapshot};

/// The API routes, nested under `/api/v1`.
pub(super) fn router() -> Router<State> {
    Router::new()
        .route("/status", get(status))
        .route("/nodes", get(nodes))
        .route("/nodes/{id}", get(node))
        .route("/revisions", get(revisions))
        .route("/revisions/{id}", get(revision))
        .route("/resources", get(resources))
        .route("/routes", get(routes))
        .route("/clusters", get(clusters))
        .route("/diff", get(diff))
}

/// `GET /api/v1/status`.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// What the fleet is served: snapshot version and revision; `None` before any.
    pub serving: Option<Serving>,
    /// The newest published snapshot (what canaries get during a rollout).
    pub latest_snapshot: Option<String>,
    /// The revision being served, as the pipeline accepted it.
    pub applied: Option<Attempt>,
    /// The newest revision the pipeline processed, accepted or not.
    pub last_attempted: Option<Attempt>,
    /// True when the last attempted revision was rejected: newer config is waiting for
    /// a fix while the applied one keeps serving.
    pub newer_rejected: bool,
    /// Set while the source cannot be read.
    pub source_error: Option<SourceError>,
    /// Revisions accepted since start.
    pub accepted_total: u64,
    /// Revisions rejected (or failed) since start.
    pub rejected_total: u64,
    /// Where the canary rollout stands.
    pub rollout: RolloutStatus,
}

/// A served snapshot.
#[derive(Debug, Serialize)]
pub struct Serving {
    /// Its version, `REVISION+eGENERATION`.
    pub snapshot: String,
    /// The config revision it was built from.
    pub revision: String,
    /// The endpoints generation it was built from.
    pub endpoints_generation: u64,
    /// How many resources it holds.
    pub resources: usize,
}

/// One node, as `GET /api/v1/nodes` lists it.
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// The store's record: id, cluster, metadata, streams, per-type sent/ACKed, NACKs.
    #[serde(flatten)]
    pub state: NodeState,
    /// Whether it has an open stream.
    pub connected: bool,
    /// The newest NACK, with Envoy's message.
    pub last_nack: Option<NackRecord>,
}

#[derive(Debug, Serialize)]
struct Revisions {
    /// The pipeline's attempts, newest first.
    attempts: Vec<Attempt>,
    /// The snapshots in the store's history, oldest first.
    snapshots: Vec<Serving>,
}

#[derive(Debug, Serialize)]
struct Listing<T> {
    snapshot: String,
    items: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct Select {
    /// `cluster`, `endpoint`, `listener`, `route` or `secret`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// A snapshot; the serving one when absent.
    snapshot: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DiffParams {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/v1/diff`.
#[derive(Debug, Serialize)]
pub struct DiffView {
    /// The older snapshot's version.
    pub from: String,
    /// The newer snapshot's version.
    pub to: String,
    /// Resource names added, removed and changed, by type.
    #[serde(flatten)]
    pub diff: Diff,
    /// The same, route by route (`domains route-name`), with where each came from.
    pub routes: RouteDiff,
}

/// The route-by-route part of a diff.
#[derive(Debug, Default, Serialize)]
pub struct RouteDiff {
    /// Routes only in the newer snapshot.
    pub added: Vec<RouteRow>,
    /// Routes only in the older snapshot.
    pub removed: Vec<RouteRow>,
    /// Routes in both whose Envoy configuration changed (match, target, timeouts,
    /// rewrites, ...; not merely the line they are declared on): `[old, new]`.
    pub changed: Vec<[RouteRow; 2]>,
}

// === handlers ===

async fn status(Extract(state): Extract<State>) -> Json<StatusView> {
    Json(status_view(&state))
}

/// The status as `/api/v1/status` and `/diag` show it.
pub(super) fn status_view(state: &State) -> StatusView {
    let status = state.status();
    let newer_rejected = status
        .last_attempted
        .as_ref()
        .is_some_and(|a| !a.outcome.is_accepted());
    StatusView {
        serving: state.store.stable().as_deref().map(serving),
        latest_snapshot: state.store.latest().map(|s| s.version().to_owned()),
        applied: status.applied.clone(),
        last_attempted: status.last_attempted.clone(),
        newer_rejected,
        source_error: status.source_error.clone(),
        accepted_total: status.accepted_total,
        rejected_total: status.rejected_total,
        rollout: state.store.rollout_status(),
    }
}

fn serving(s: &Snapshot) -> Serving {
    Serving {
        snapshot: s.version().to_owned(),
        revision: s.revision().to_owned(),
        endpoints_generation: s.endpoints_generation(),
        resources: s.len(),
    }
}

async fn nodes(Extract(state): Extract<State>) -> Json<Vec<NodeView>> {
    Json(state.store.nodes().into_iter().map(node_view).collect())
}

pub(super) fn node_view(state: NodeState) -> NodeView {
    NodeView {
        connected: !state.streams.is_empty(),
        last_nack: state.nacks.last().cloned(),
        state,
    }
}

async fn node(Extract(state): Extract<State>, Path(id): Path<String>) -> Result<Json<NodeView>> {
    state
        .store
        .node(&id)
        .map(|n| Json(node_view(n)))
        .ok_or_else(|| Error::NotFound(format!("no node {id:?} has connected")))
}

async fn revisions(Extract(state): Extract<State>) -> Json<Revisions> {
    let status = state.status();
    let body = Revisions {
        attempts: status.history.iter().cloned().collect(),
        snapshots: state.store.history().iter().map(|s| serving(s)).collect(),
    };
    Json(body)
}

async fn revision(Extract(state): Extract<State>, Path(id): Path<String>) -> Result<Json<Attempt>> {
    find_attempt(&state.status().history, &id).map(Json)
}

/// The newest attempt whose revision id is `id` or starts with it.
fn find_attempt<'a>(history: impl IntoIterator<Item = &'a Attempt>, id: &str) -> Result<Attempt> {
    let id = id.trim();
    if id.is_empty() {
        return Err(Error::BadRequest("a revision id is empty".into()));
    }
    // Newest first, so the first attempt per id is the one that counts.
    let mut found: Vec<&Attempt> = Vec::new();
    for attempt in history {
        let rev = &attempt.revision.id;
        if rev.starts_with(id) && !found.iter().any(|f| &f.revision.id == rev) {
            found.push(attempt);
        }
    }
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::NotFound(format!(
            "revision {id:?} has not been processed (yet): it is not among the last {} attempts",
            crate::pipeline::HISTORY
        ))),
        many => Err(Error::BadRequest(format!(
            "revision {id:?} is ambiguous: {}",
            many.iter()
                .map(|a| a.revision.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn resources(
    Extract(state): Extract<State>,
    Query(select): Query<Select>,
) -> Result<Json<Listing<ResourceRow>>> {
    let kind = parse_type(select.kind.as_deref())?;
    let inventory = inventory(&state, select.snapshot.as_deref())?;
    let items = inventory
        .resources
        .iter()
        .filter(|r| kind.is_none_or(|k| r.kind == k))
        .cloned()
        .collect();
    Ok(Json(Listing {
        snapshot: inventory.snapshot.clone(),
        items,
    }))
}

async fn routes(
    Extract(state): Extract<State>,
    Query(select): Query<Select>,
) -> Result<Json<Listing<RouteRow>>> {
    let inventory = inventory(&state, select.snapshot.as_deref())?;
    Ok(Json(Listing {
        snapshot: inventory.snapshot.clone(),
        items: inventory.routes.clone(),
    }))
}

async fn clusters(
    Extract(state): Extract<State>,
    Query(select): Query<Select>,
) -> Result<Json<Listing<super::inventory::ClusterRow>>> {
    let inventory = inventory(&state, select.snapshot.as_deref())?;
    Ok(Json(Listing {
        snapshot: inventory.snapshot.clone(),
        items: inventory.clusters.clone(),
    }))
}

async fn diff(
    Extract(state): Extract<State>,
    Query(params): Query<DiffParams>,
) -> Result<Json<DiffView>> {
    let (Some(from), Some(to)) = (params.from, params.to) else {
        return Err(Error::BadRequest(
            "diff needs both ?from=SNAPSHOT&to=SNAPSHOT (a version, revision id or unique prefix)"
                .into(),
        ));
    };
    let older = resolve(&state, &from, "from")?;
    let newer = resolve(&state, &to, "to")?;
    Ok(Json(DiffView {
        from: older.version().to_owned(),
        to: newer.version().to_owned(),
        diff: newer.diff(&older),
        routes: route_diff(&state.inventory.get(&older), &state.inventory.get(&newer)),
    }))
}

// === helpers ===

fn parse_type(kind: Option<&str>) -> Result<Option<ResourceType>> {
    let Some(kind) = kind else {
        return Ok(None);
    };
    ResourceType::ALL
        .into_iter()
        .find(|t| t.to_string() == kind)
        .map(Some)
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "unknown resource type {kind:?}: expected cluster, endpoint, listener, route or secret"
            ))
        })
}

/// The decoded snapshot named by `name`, or the serving one.
fn inventory(state: &State, name: Option<&str>) -> Result<Arc<Inventory>> {
    let snapshot = match name {
        Some(name) => resolve(state, name, "snapshot")?,
        None => state
            .store
            .stable()
            .ok_or_else(|| Error::Unavailable("no snapshot is being served yet".into()))?,
    };
    Ok(state.inventory.get(&snapshot))
}

/// A snapshot in the history by version, revision id, or unique prefix of either; the
/// newest wins when several share a revision (another endpoints generation).
fn resolve(state: &State, name: &str, param: &str) -> Result<Arc<Snapshot>> {
    // A version pasted into a URL as is (`?from=abc+e0`) arrives with its `+` decoded as
    // a space; versions hold no spaces, so put it back.
    let name = &name.replace(' ', "+");
    if name.is_empty() {
        return Err(Error::BadRequest(format!("?{param}= is empty")));
    }
    if let Some(exact) = state.store.get(name) {
        return Ok(exact);
    }
    let history = state.store.history();
    if let Some(by_revision) = history.iter().rev().find(|s| s.revision() == name) {
        return Ok(by_revision.clone());
    }
    let mut prefixed: Vec<&Arc<Snapshot>> = history
        .iter()
        .rev()
        .filter(|s| s.version().starts_with(name))
        .collect();
    prefixed.dedup_by(|a, b| a.revision() == b.revision());
    match prefixed.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::NotFound(format!(
            "?{param}={name:?}: no snapshot in the history (the last {}) has that version or revision",
            history.len()
        ))),
        many => Err(Error::BadRequest(format!(
            "?{param}={name:?} is ambiguous: {}",
            many.iter()
                .map(|s| s.version())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn route_diff(older: &Inventory, newer: &Inventory) -> RouteDiff {
    type Key = (String, Vec<String>, String);
    let key = |r: &RouteRow| -> Key { (r.route_config.clone(), r.domains.clone(), r.name.clone()) };
    let old: BTreeMap<Key, &RouteRow> = older.routes.iter().map(|r| (key(r), r)).collect();
    let new: BTreeMap<Key, &RouteRow> = newer.routes.iter().map(|r| (key(r), r)).collect();
    let mut diff = RouteDiff::default();
    for (k, n) in &new {
        match old.get(k) {
            None => diff.added.push((*n).clone()),
            Some(o) if o.digest != n.digest => {
                diff.changed.push([(*o).clone(), (*n).clone()]);
            }
            Some(_) => {}
        }
    }
    diff.removed = old
        .iter()
        .filter(|(k, _)| !new.contains_key(*k))
        .map(|(_, r)| (*r).clone())
        .collect();
    diff
}
