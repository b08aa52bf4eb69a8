//! Per-node xDS state: what every Envoy node was sent, ACKed and rejected.
//!
//! The ADS server writes it through [`super::StreamHandle`]; the admin API reads a copy
//! with [`super::Store::nodes`]. It lives in the snapshot stage (not in `xds`) because it
//! outlives streams: a node that reconnects must still never get a version it rejected
//! (DESIGN.md, "Rollback safety" point 2), and the rollout needs every canary's ACKs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
use envoy_types::pb::google::protobuf::Value;
use envoy_types::pb::google::protobuf::value::Kind;
use serde::{Deserialize, Serialize};

use super::ResourceType;

/// How many NACKs a node keeps (oldest dropped first), so a node that rejects in a loop
/// cannot grow memory without bound.
pub(crate) const MAX_NACKS: usize = 64;
/// How many rejected versions a node remembers per type.
pub(crate) const MAX_REJECTED: usize = 256;

/// The ADS variant a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `StreamAggregatedResources`, state of the world.
    Sotw,
    /// `DeltaAggregatedResources`, incremental.
    Delta,
}

/// A copy of one node's state, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// `node.id`.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
    /// Whether the canary selector matches this node.
    pub canary: bool,
    /// `node.metadata` as JSON (what `--canary metadata.KEY=VALUE` matches), as the node
    /// last sent it.
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// `user_agent_name/version`, e.g. `envoy/1.40.0`; empty when the node sent none.
    #[serde(default)]
    pub user_agent: String,
    /// Open streams (more than one when a node reconnects before the old stream closed).
    pub streams: Vec<StreamInfo>,
    /// Per resource type, the last response sent and the last one ACKed.
    pub types: BTreeMap<ResourceType, TypeState>,
    /// Every NACK, oldest first (the last 64).
    pub nacks: Vec<NackRecord>,
    /// The snapshot version every open stream is fully in sync with, if any.
    pub synced_snapshot: Option<String>,
    /// When the last stream closed, in ms since the Unix epoch; `None` while connected.
    pub disconnected_at_ms: Option<u64>,
}

/// One open ADS stream of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Process-unique stream id.
    pub id: u64,
    /// SotW or delta.
    pub protocol: Protocol,
    /// When it opened, in ms since the Unix epoch.
    pub opened_at_ms: u64,
    /// The snapshot version this stream is fully in sync with, if any.
    pub synced_snapshot: Option<String>,
}

/// What one node holds of one resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeState {
    /// The last response sent.
    pub sent: Option<Sent>,
    /// The last response ACKed.
    pub acked: Option<Acked>,
}

/// A response sent to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The response's content version (`version_info` in SotW).
    pub version: String,
    /// The snapshot it came from.
    pub snapshot: String,
    /// Its nonce.
    pub nonce: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// A response a node ACKed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acked {
    /// The response's content version.
    pub version: String,
    /// The snapshot it came from.
    pub snapshot: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// A response a node rejected, with Envoy's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NackRecord {
    /// The resource type.
    pub kind: ResourceType,
    /// The rejected response's content version; never sent to this node again.
    pub version: String,
    /// The snapshot it came from.
    pub snapshot: String,
    /// `error_detail.message` as Envoy sent it.
    pub message: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// The store's private per-node record.
#[derive(Debug)]
pub(crate) struct NodeEntry {
    pub(crate) state: NodeState,
    pub(crate) rejected: BTreeMap<ResourceType, VecDeque<String>>,
}

/// How deep node metadata is converted; deeper values show as `"..."`, so a hostile
/// node cannot make the conversion recurse without bound.
const MAX_METADATA_DEPTH: usize = 8;

fn json(value: &Value, depth: usize) -> serde_json::Value {
    if depth >= MAX_METADATA_DEPTH {
        return serde_json::Value::String("...".into());
    }
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(|v| json(v, depth + 1)).collect())
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), json(v, depth + 1)))
                .collect(),
        ),
    }
}

fn user_agent(node: &Node) -> String {
    let version = match &node.user_agent_version_type {
        Some(UserAgentVersionType::UserAgentVersion(v)) => v.clone(),
        Some(UserAgentVersionType::UserAgentBuildVersion(b)) => b
            .version
            .as_ref()
            .map(|v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
            .unwrap_or_default(),
        None => String::new(),
    };
    match (node.user_agent_name.is_empty(), version.is_empty()) {
        (true, _) => version,
        (false, true) => node.user_agent_name.clone(),
        (false, false) => format!("{}/{version}", node.user_agent_name),
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// === impl NodeEntry ===

impl NodeEntry {
    pub(crate) fn new(id: &str, cluster: &str, canary: bool) -> NodeEntry {
        NodeEntry {
            state: NodeState {
                id: id.to_owned(),
                cluster: cluster.to_owned(),
                canary,
                metadata: BTreeMap::new(),
                user_agent: String::new(),
                streams: Vec::new(),
                types: BTreeMap::new(),
                nacks: Vec::new(),
                synced_snapshot: None,
                disconnected_at_ms: None,
            },
            rejected: BTreeMap::new(),
        }
    }

    /// Records a NACK; `also_rejected` are further versions (a delta response's
    /// per-resource versions) never to be sent to this node again.
    pub(crate) fn record_nack(&mut self, nack: NackRecord, also_rejected: &[String]) {
        let rejected = self.rejected.entry(nack.kind).or_default();
        for version in std::iter::once(&nack.version).chain(also_rejected) {
            if !rejected.contains(version) {
                if rejected.len() >= MAX_REJECTED {
                    rejected.pop_front();
                }
                rejected.push_back(version.clone());
            }
        }
        if self.state.nacks.len() >= MAX_NACKS {
            self.state.nacks.remove(0);
        }
        self.state.nacks.push(nack);
    }

    /// Takes what the node says about itself on a new stream.
    pub(crate) fn describe(&mut self, node: &Node) {
        self.state.metadata = node
            .metadata
            .as_ref()
            .map(|m| {
                m.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), json(v, 0)))
                    .collect()
            })
            .unwrap_or_default();
        self.state.user_agent = user_agent(node);
    }

    pub(crate) fn is_rejected(&self, kind: ResourceType, version: &str) -> bool {
        self.rejected
            .get(&kind)
            .is_some_and(|r| r.iter().any(|v| v == version))
    }

    /// Recomputes `synced_snapshot`: the version every stream agrees on.
    pub(crate) fn refresh_synced(&mut self) {
        let versions: BTreeSet<Option<&String>> = self
            .state
            .streams
            .iter()
            .map(|s| s.synced_snapshot.as_ref())
            .collect();
        self.state.synced_snapshot = match versions.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(v)] => Some((*v).clone()),
            _ => None,
        };
    }
}
