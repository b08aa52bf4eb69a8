//! The snapshot store: the single writer of snapshots and the many readers (streams).
//!
//! Snapshots reach streams on a `watch` channel holding [`Targets`] (latest value wins,
//! no backlog, no resource copies: an `Arc` per snapshot). Everything else, history,
//! per-node state and the rollout, sits behind one short, never-awaited lock.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::node::{Acked, NodeEntry, Sent, now_ms};
use super::rollout::{Rollout, Step};
use super::{
    CanarySelector, Diff, NackRecord, NodeState, Protocol, ResourceType, Result, RolloutStatus,
    Snapshot, StreamInfo, persist,
};
use crate::metrics::Metrics;

/// How many disconnected nodes the store remembers (their NACKs keep a rejected version
/// from being resent on reconnect); the longest-gone are forgotten first.
const MAX_DISCONNECTED_NODES: usize = 4096;

/// How the store behaves.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory for the last good snapshot (`--state-dir`); `None` keeps nothing on disk.
    pub state_dir: Option<PathBuf>,
    /// Which nodes are canaries (`--canary`); `None` sends every snapshot to all at once.
    pub canary: Option<CanarySelector>,
    /// How long canaries must hold a candidate without a NACK before the fleet gets it
    /// (`--canary-bake`, default 10 s).
    pub canary_bake: Duration,
    /// How many published snapshots to keep for diffs and the admin API (default 20,
    /// at least 1).
    pub history: usize,
    /// Where to count responses sent, ACKs, NACKs and publish-to-ACK latency; `None`
    /// counts nothing.
    pub metrics: Option<Arc<Metrics>>,
}

/// Which snapshot each kind of node should hold now.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// What non-canary nodes get; `None` before any snapshot exists.
    pub stable: Option<Arc<Snapshot>>,
    /// What canary nodes get: the rollout's candidate, else the stable snapshot.
    pub canary: Option<Arc<Snapshot>>,
}

/// The snapshot store. Share it as `Arc<Store>`.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    inner: Mutex<Inner>,
    targets: watch::Sender<Arc<Targets>>,
    deadline: watch::Sender<Option<Instant>>,
    /// Serialises state-file writes; holds the sequence number of the last one written.
    persisted: Arc<Mutex<u64>>,
    persist_seq: AtomicU64,
    next_stream: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    rollout: Rollout,
    latest: Option<Arc<Snapshot>>,
    history: VecDeque<Arc<Snapshot>>,
    nodes: BTreeMap<String, NodeEntry>,
    /// When each snapshot in the history was published, for publish-to-ACK latency.
    published: VecDeque<(String, std::time::Instant)>,
}

/// One open ADS stream's line to the store: the xDS server reports through it what it
/// sent, and what the node ACKed or rejected. Dropping it closes the stream's record.
#[derive(Debug)]
pub struct StreamHandle {
    store: Arc<Store>,
    node_id: String,
    stream_id: u64,
    canary: bool,
    /// When the stream opened: a snapshot published before cannot reach the node sooner.
    opened: std::time::Instant,
    /// The version last sent per type on this stream, so only an ACK of a response this
    /// stream sent counts as one (not a reconnecting node's claim of what it holds).
    sent: Mutex<BTreeMap<ResourceType, String>>,
}

// === impl StoreConfig ===

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            state_dir: None,
            canary: None,
            canary_bake: Duration::from_secs(10),
            history: 20,
            metrics: None,
        }
    }
}

// === impl Targets ===

impl Targets {
    /// The snapshot a node should hold.
    pub fn for_node(&self, canary: bool) -> Option<&Arc<Snapshot>> {
        if canary {
            self.canary.as_ref()
        } else {
            self.stable.as_ref()
        }
    }

    fn same(&self, other: &Targets) -> bool {
        let v = |s: &Option<Arc<Snapshot>>| s.as_ref().map(|s| s.version().to_owned());
        v(&self.stable) == v(&other.stable) && v(&self.canary) == v(&other.canary)
    }
}

// === impl Store ===

impl Store {
    /// An empty store. Call [`Store::load_persisted`] to serve the last good snapshot.
    pub fn new(config: StoreConfig) -> Store {
        let rollout = Rollout::new(config.canary.is_some(), config.canary_bake, None);
        Store {
            config,
            inner: Mutex::new(Inner {
                rollout,
                latest: None,
                history: VecDeque::new(),
                nodes: BTreeMap::new(),
                published: VecDeque::new(),
            }),
            targets: watch::Sender::new(Arc::new(Targets::default())),
            deadline: watch::Sender::new(None),
            persisted: Arc::new(Mutex::new(0)),
            persist_seq: AtomicU64::new(0),
            next_stream: AtomicU64::new(1),
        }
    }

    /// Loads the snapshot persisted in the state directory, if any, and serves it to
    /// every node, before any source has answered (issue 3, "Persistence").
    ///
    /// # Errors
    ///
    /// [`super::Error::Io`], [`super::Error::Corrupt`] or [`super::Error::UnsupportedFormat`]
    /// when a state file exists but cannot be used; the store stays empty then.
    pub fn load_persisted(&self) -> Result<Option<Arc<Snapshot>>> {
        let Some(dir) = &self.config.state_dir else {
            return Ok(None);
        };
        let Some(snapshot) = persist::read(dir)? else {
            return Ok(None);
        };
        let snapshot = Arc::new(snapshot);
        let mut inner = self.inner.lock();
        inner.rollout = Rollout::new(
            self.config.canary.is_some(),
            self.config.canary_bake,
            Some(snapshot.clone()),
        );
        inner.latest = Some(snapshot.clone());
        push_history(&mut inner.history, snapshot.clone(), self.config.history);
        self.published_now(&mut inner, &snapshot);
        self.refresh(&inner);
        tracing::info!(version = snapshot.version(), "serving persisted snapshot");
        Ok(Some(snapshot))
    }

    /// Publishes a snapshot: it becomes the latest, enters the history, and goes out to
    /// nodes as the rollout decides. When it becomes the fleet's it is persisted (a write
    /// failure is logged, never fatal: the snapshot is still served).
    ///
    /// # Errors
    ///
    /// [`super::Error::Inconsistent`] when [`Snapshot::consistent`] fails; the snapshot
    /// being served stays.
    pub async fn publish(&self, snapshot: Snapshot) -> Result<Arc<Snapshot>> {
        snapshot.consistent()?;
        let snapshot = Arc::new(snapshot);
        let (step, endpoints_only) = {
            let mut inner = self.inner.lock();
            let endpoints_only = inner
                .latest
                .as_ref()
                .is_some_and(|l| l.revision() == snapshot.revision());
            inner.latest = Some(snapshot.clone());
            push_history(&mut inner.history, snapshot.clone(), self.config.history);
            self.published_now(&mut inner, &snapshot);
            let step = inner.rollout.publish(snapshot.clone(), Instant::now());
            let synced = canaries_synced(&inner);
            let next = inner.rollout.canaries_synced(synced, Instant::now());
            self.refresh(&inner);
            let step = if matches!(step, Step::Promoted(_)) {
                step
            } else {
                next
            };
            (step, endpoints_only)
        };
        if endpoints_only {
            // Up to 20 a second while pods churn: not worth an info line each.
            tracing::debug!(version = snapshot.version(), "endpoints snapshot published");
        } else {
            tracing::info!(
                version = snapshot.version(),
                resources = snapshot.len(),
                "snapshot published"
            );
        }
        if let Step::Promoted(s) = step {
            if endpoints_only {
                // An endpoints-only change (issue 5) must reach Envoy within its coalescing
                // window; its write (with two fsyncs) goes on behind it, and a newer write
                // supersedes it. After a restart the watcher re-lists within a second anyway.
                self.persist_in_background(s);
            } else {
                self.persist(s).await;
            }
        }
        Ok(snapshot)
    }

    /// The latest published snapshot (what canaries get during a rollout).
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.inner.lock().latest.clone()
    }

    /// The fleet's snapshot.
    pub fn stable(&self) -> Option<Arc<Snapshot>> {
        self.inner.lock().rollout.stable().cloned()
    }

    /// Published snapshots, oldest first (at most `history`).
    pub fn history(&self) -> Vec<Arc<Snapshot>> {
        self.inner.lock().history.iter().cloned().collect()
    }

    /// A snapshot in the history, by version.
    pub fn get(&self, version: &str) -> Option<Arc<Snapshot>> {
        self.inner
            .lock()
            .history
            .iter()
            .find(|s| s.version() == version)
            .cloned()
    }

    /// What changed from snapshot `from` to snapshot `to`, both in the history.
    pub fn diff(&self, from: &str, to: &str) -> Option<Diff> {
        let (from, to) = (self.get(from)?, self.get(to)?);
        Some(to.diff(&from))
    }

    /// A receiver of the current [`Targets`]; it sees every change, latest value wins.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Targets>> {
        self.targets.subscribe()
    }

    /// Where the rollout stands.
    pub fn rollout_status(&self) -> RolloutStatus {
        self.inner.lock().rollout.status(Instant::now())
    }

    /// Whether `node` is a canary under the configured selector.
    pub fn is_canary(&self, node: &Node) -> bool {
        self.config.canary.as_ref().is_some_and(|s| s.matches(node))
    }

    /// A copy of every known node's state, by node id.
    pub fn nodes(&self) -> Vec<NodeState> {
        self.inner
            .lock()
            .nodes
            .values()
            .map(|n| n.state.clone())
            .collect()
    }

    /// How many nodes hold `snapshot` on every stream. Cheap enough to poll under load:
    /// it copies nothing, unlike [`Store::nodes`] (the load tool's fan-out timer).
    pub fn synced_nodes(&self, snapshot: &str) -> usize {
        self.inner
            .lock()
            .nodes
            .values()
            .filter(|n| n.state.synced_snapshot.as_deref() == Some(snapshot))
            .count()
    }

    /// A copy of one node's state.
    pub fn node(&self, id: &str) -> Option<NodeState> {
        self.inner.lock().nodes.get(id).map(|n| n.state.clone())
    }

    /// How many nodes have an open stream, and how many streams are open; cheaper than
    /// [`Store::nodes`] for a metrics scrape.
    pub fn connection_counts(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        let mut nodes = 0;
        let mut streams = 0;
        for node in inner.nodes.values() {
            nodes += usize::from(!node.state.streams.is_empty());
            streams += node.state.streams.len();
        }
        (nodes, streams)
    }

    /// Notes when `snapshot` was published; as many are kept as the history holds.
    fn published_now(&self, inner: &mut Inner, snapshot: &Snapshot) {
        if self.config.metrics.is_none() {
            return;
        }
        // A version published again (a revert) counts from now, not from its first time.
        let version = snapshot.version();
        inner.published.retain(|(v, _)| v != version);
        inner
            .published
            .push_back((version.to_owned(), std::time::Instant::now()));
        while inner.published.len() > self.config.history.max(1) {
            inner.published.pop_front();
        }
    }

    /// Records a new stream of `node` and returns its handle.
    pub fn open_stream(self: &Arc<Self>, node: &Node, protocol: Protocol) -> StreamHandle {
        let canary = self.is_canary(node);
        let stream_id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner.lock();
        let entry = inner
            .nodes
            .entry(node.id.clone())
            .or_insert_with(|| NodeEntry::new(&node.id, &node.cluster, canary));
        entry.state.cluster.clone_from(&node.cluster);
        entry.state.canary = canary;
        entry.describe(node);
        entry.state.disconnected_at_ms = None;
        entry.state.streams.push(StreamInfo {
            id: stream_id,
            protocol,
            opened_at_ms: now_ms(),
            synced_snapshot: None,
        });
        entry.refresh_synced();
        // A new canary that is not yet in sync pauses a bake.
        self.rollout_input(&mut inner);
        tracing::info!(node.id = %node.id, stream = stream_id, ?protocol, canary, "stream opened");
        StreamHandle {
            store: self.clone(),
            node_id: node.id.clone(),
            stream_id,
            canary,
            opened: std::time::Instant::now(),
            sent: Mutex::new(BTreeMap::new()),
        }
    }

    /// Drives the canary bake: promotes a candidate when its bake ends. Runs until
    /// `shutdown`; [`crate::xds::serve`] runs it.
    ///
    /// # Cancellation
    ///
    /// Cancel-safe: stopping it only stops promotions.
    pub async fn run_rollout(&self, shutdown: CancellationToken) {
        let mut deadline = self.deadline.subscribe();
        loop {
            let next = *deadline.borrow_and_update();
            let sleep = async move {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                changed = deadline.changed() => if changed.is_err() { return },
                () = sleep => {
                    let step = {
                        let mut inner = self.inner.lock();
                        let step = inner.rollout.tick(Instant::now());
                        self.refresh(&inner);
                        step
                    };
                    if let Step::Promoted(s) = step {
                        tracing::info!(version = s.version(), "canary bake passed: snapshot promoted to every node");
                        self.persist(s).await;
                    }
                }
            }
        }
    }

    /// Feeds the rollout the canaries' sync status; persists on promotion.
    fn rollout_input(&self, inner: &mut Inner) {
        let synced = canaries_synced(inner);
        if let Step::Promoted(s) = inner.rollout.canaries_synced(synced, Instant::now()) {
            tracing::info!(version = s.version(), "snapshot promoted to every node");
            self.persist_in_background(s);
        }
        self.refresh(inner);
    }

    /// Publishes the rollout's targets and deadline when they changed.
    fn refresh(&self, inner: &Inner) {
        let targets = Targets {
            stable: inner.rollout.stable().cloned(),
            canary: inner.rollout.canary_target().cloned(),
        };
        self.targets.send_if_modified(|current| {
            if current.same(&targets) {
                return false;
            }
            *current = Arc::new(targets);
            true
        });
        let deadline = inner.rollout.deadline();
        self.deadline.send_if_modified(|d| {
            let changed = *d != deadline;
            *d = deadline;
            changed
        });
    }

    async fn persist(&self, snapshot: Arc<Snapshot>) {
        if let Some(task) = self.persist_in_background(snapshot) {
            let _ = task.await;
        }
    }

    /// Writes the state file off the async threads. Writes are serialised and a write
    /// older than the last one written is skipped, so the file always ends newest.
    fn persist_in_background(
        &self,
        snapshot: Arc<Snapshot>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let dir = self.config.state_dir.clone()?;
        let seq = self.persist_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let write = move |persisted: &Mutex<u64>| {
            let mut last = persisted.lock();
            if *last > seq {
                return;
            }
            match persist::write(&dir, &snapshot) {
                Ok(path) => {
                    *last = seq;
                    tracing::debug!(path = %path.display(), version = snapshot.version(), "snapshot persisted");
                }
                Err(error) => tracing::warn!(%error, "cannot persist last good snapshot"),
            }
        };
        let persisted = self.persisted.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => Some(rt.spawn_blocking(move || write(&persisted))),
            Err(_) => {
                write(&persisted);
                None
            }
        }
    }
}

fn push_history(history: &mut VecDeque<Arc<Snapshot>>, snapshot: Arc<Snapshot>, limit: usize) {
    if history
        .back()
        .is_some_and(|s| s.version() == snapshot.version())
    {
        return;
    }
    history.push_back(snapshot);
    while history.len() > limit.max(1) {
        history.pop_front();
    }
}

/// Whether every connected canary is in sync with the active candidate (vacuously true
/// with none connected, or with no active candidate).
fn canaries_synced(inner: &Inner) -> bool {
    let Some(candidate) = inner.rollout.active_candidate() else {
        return true;
    };
    inner
        .nodes
        .values()
        .filter(|n| n.state.canary && !n.state.streams.is_empty())
        .all(|n| n.state.synced_snapshot.as_deref() == Some(candidate))
}

// === impl StreamHandle ===

impl StreamHandle {
    /// The node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The process-unique id of this stream.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// Whether the node is a canary.
    pub fn is_canary(&self) -> bool {
        self.canary
    }

    fn with_node<T>(&self, f: impl FnOnce(&mut NodeEntry) -> T) -> Option<T> {
        self.store.inner.lock().nodes.get_mut(&self.node_id).map(f)
    }

    /// A response of content `version` from `snapshot` went out with `nonce`.
    pub fn sent(&self, kind: ResourceType, version: &str, snapshot: &str, nonce: &str) {
        let sent = Sent {
            version: version.to_owned(),
            snapshot: snapshot.to_owned(),
            nonce: nonce.to_owned(),
            at_ms: now_ms(),
        };
        self.with_node(|n| n.state.types.entry(kind).or_default().sent = Some(sent));
        if let Some(metrics) = &self.store.config.metrics {
            metrics.response_sent(kind);
            self.sent.lock().insert(kind, version.to_owned());
        }
    }

    /// The node ACKed the response of content `version` from `snapshot`.
    pub fn acked(&self, kind: ResourceType, version: &str, snapshot: &str) {
        let acked = Acked {
            version: version.to_owned(),
            snapshot: snapshot.to_owned(),
            at_ms: now_ms(),
        };
        // One lock for the node's record and the publish time: every ACK of every stream
        // takes this lock, so it is taken once.
        let published = {
            let mut inner = self.store.inner.lock();
            if let Some(n) = inner.nodes.get_mut(&self.node_id) {
                n.state.types.entry(kind).or_default().acked = Some(acked);
            }
            self.store.config.metrics.as_ref().map(|_| {
                inner
                    .published
                    .iter()
                    .find(|(v, _)| v == snapshot)
                    .map(|(_, at)| *at)
            })
        };
        if let (Some(metrics), Some(published)) = (&self.store.config.metrics, published) {
            if self.sent.lock().get(&kind).map(String::as_str) != Some(version) {
                return;
            }
            metrics.acked(kind, published.map(|at| at.max(self.opened).elapsed()));
        }
    }

    /// The node rejected the response of content `version` from `snapshot` with Envoy's
    /// `message`. That version is never to be sent to this node again; a canary's NACK of
    /// the rollout's candidate halts the rollout.
    pub fn nacked(&self, kind: ResourceType, version: &str, snapshot: &str, message: &str) {
        self.nacked_resources(kind, version, &[], snapshot, message);
    }

    /// Like [`StreamHandle::nacked`], for a delta response: besides the response's
    /// content `version`, each of its `resource_versions` is never sent to this node
    /// again (a delta client rejects resources, not whole states).
    pub fn nacked_resources(
        &self,
        kind: ResourceType,
        version: &str,
        resource_versions: &[String],
        snapshot: &str,
        message: &str,
    ) {
        let mut inner = self.store.inner.lock();
        let Some(node) = inner.nodes.get_mut(&self.node_id) else {
            return;
        };
        node.record_nack(
            NackRecord {
                kind,
                version: version.to_owned(),
                snapshot: snapshot.to_owned(),
                message: message.to_owned(),
                at_ms: now_ms(),
            },
            resource_versions,
        );
        tracing::warn!(node.id = %self.node_id, %kind, version, snapshot, message, "NACK");
        if let Some(metrics) = &self.store.config.metrics {
            metrics.nacked(kind);
        }
        if self.canary
            && inner.rollout.canary_nack(snapshot, &self.node_id, message) == Step::Halted
        {
            tracing::warn!(node.id = %self.node_id, snapshot, "canary rejected the candidate: rollout halted");
            self.store.refresh(&inner);
        }
    }

    /// Whether the node rejected a response of content `version` before.
    pub fn is_rejected(&self, kind: ResourceType, version: &str) -> bool {
        self.with_node(|n| n.is_rejected(kind, version))
            .unwrap_or(false)
    }

    /// This stream is fully in sync with `snapshot` (every type it subscribed to ACKed),
    /// or with none (`None`). Feeds the canary rollout.
    pub fn synced(&self, snapshot: Option<&str>) {
        let mut inner = self.store.inner.lock();
        let Some(node) = inner.nodes.get_mut(&self.node_id) else {
            return;
        };
        let Some(stream) = node
            .state
            .streams
            .iter_mut()
            .find(|s| s.id == self.stream_id)
        else {
            return;
        };
        if stream.synced_snapshot.as_deref() == snapshot {
            return;
        }
        stream.synced_snapshot = snapshot.map(str::to_owned);
        node.refresh_synced();
        if self.canary {
            self.store.rollout_input(&mut inner);
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        let mut inner = self.store.inner.lock();
        if let Some(node) = inner.nodes.get_mut(&self.node_id) {
            node.state.streams.retain(|s| s.id != self.stream_id);
            node.refresh_synced();
            if node.state.streams.is_empty() {
                node.state.disconnected_at_ms = Some(now_ms());
            }
        }
        let gone: Vec<(u64, String)> = inner
            .nodes
            .values()
            .filter_map(|n| n.state.disconnected_at_ms.map(|t| (t, n.state.id.clone())))
            .collect();
        if gone.len() > MAX_DISCONNECTED_NODES {
            let mut gone = gone;
            gone.sort();
            for (_, id) in gone.iter().take(gone.len() - MAX_DISCONNECTED_NODES) {
                inner.nodes.remove(id);
            }
        }
        if self.canary {
            self.store.rollout_input(&mut inner);
        }
        tracing::info!(node.id = %self.node_id, stream = self.stream_id, "stream closed");
    }
}
