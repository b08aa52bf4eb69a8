//! Content-addressed xDS snapshots, their history, and what every Envoy node holds.
//!
//! This is the cache half of go-control-plane's cache/server split: [`Snapshot`] turns
//! one [`translate::Resources`] into encoded, hashed resources; [`Store`] keeps the
//! current one on a `watch` channel with a bounded history, persists the last good one,
//! runs the canary [`rollout`], and records per-node ACK/NACK state ([`NodeState`]).
//! The ADS server (`crate::xds`) sees only the [`Store`] API, never the translator.
//!
//! Why content addressing: every resource is encoded exactly once, when the snapshot is
//! built, and its version is the SHA-256 of those bytes. Two replicas, or a `git revert`,
//! yield identical versions for identical content, so a reconnecting Envoy gets no
//! needless push (DESIGN.md, "Rollback safety" point 4).
//!
//! Start reading at [`Snapshot::new`], then [`Store::publish`].

mod node;
mod persist;
pub mod rollout;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as FilterConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use prost::{Message, Name};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::translate::{EncodedResources, Resources};

pub use node::{NackRecord, NodeState, Protocol, StreamInfo, TypeState};
pub use rollout::{CanarySelector, RolloutStatus};
pub use store::{Store, StoreConfig, StreamHandle, Targets};

/// Errors of the snapshot stage.
///
/// [`Error::Inconsistent`] needs a configuration fix; [`Error::Io`] may be retried;
/// [`Error::Corrupt`] and [`Error::UnsupportedFormat`] mean the state file must be
/// removed (or attache upgraded) and are reported, never fatal when a source works.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener or cluster refers to a route configuration or load assignment that the
    /// snapshot does not hold.
    #[error("snapshot {version} is inconsistent: {kind} {name:?} is referenced but missing")]
    Inconsistent {
        /// The snapshot's version.
        version: String,
        /// What kind of resource is missing.
        kind: ResourceType,
        /// The missing resource's name.
        name: String,
    },
    /// Two resources of one type share a name.
    #[error("snapshot {version} holds two {kind} resources named {name:?}")]
    DuplicateName {
        /// The snapshot's version.
        version: String,
        /// The resource type.
        kind: ResourceType,
        /// The duplicated name.
        name: String,
    },
    /// Reading or writing the state file failed.
    #[error("cannot {action} snapshot state file {path}")]
    Io {
        /// What was being done ("read", "write", "rename", ...).
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is damaged: truncated, bad checksum, or undecodable resource.
    #[error("snapshot state file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The state file was written by a newer format this build cannot read.
    #[error("snapshot state file {path} has format version {found}, this build reads {supported}")]
    UnsupportedFormat {
        /// The file.
        path: std::path::PathBuf,
        /// Its format version.
        found: u32,
        /// The one this build reads.
        supported: u32,
    },
    /// A canary selector is not `metadata.KEY=VALUE` or `cluster=NAME`.
    #[error("invalid canary selector {0:?}: expected 'metadata.KEY=VALUE' or 'cluster=NAME'")]
    InvalidSelector(String),
}

/// The result type of the snapshot stage.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The xDS resource types attache serves, in make-before-break order (xDS protocol,
/// "Eventual consistency considerations"): clusters, then their endpoints, then
/// listeners, then the routes they name; secrets last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    /// `envoy.config.cluster.v3.Cluster` (CDS).
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
    Endpoint,
    /// `envoy.config.listener.v3.Listener` (LDS).
    Listener,
    /// `envoy.config.route.v3.RouteConfiguration` (RDS).
    Route,
    /// `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
    Secret,
}

/// A type's resources, by name.
pub type ResourceMap = BTreeMap<String, Resource>;

/// One encoded resource: its name, its bytes, and the SHA-256 of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The resource's name (`Listener.name`, `Cluster.name`, ...).
    pub name: String,
    /// Lower-case hex SHA-256 of [`Resource::body`].
    pub version: String,
    /// The protobuf encoding of the resource, shared by every stream that sends it.
    pub body: Bytes,
}

/// A full, immutable set of resources for Envoy, built from one configuration revision
/// and one endpoints generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    version: String,
    revision: String,
    endpoints_generation: u64,
    /// Shared between snapshots that differ in other types only (see
    /// [`Snapshot::with_assignments`]).
    types: BTreeMap<ResourceType, Arc<ResourceMap>>,
    type_versions: BTreeMap<ResourceType, String>,
    /// What listeners and clusters name, found once when the snapshot is built (it
    /// takes decoding them) and shared with the snapshots [`Snapshot::with_assignments`]
    /// derives, whose listeners and clusters are the same.
    references: Arc<References>,
}

/// The route configurations listeners fetch over RDS, and the load assignments EDS
/// clusters fetch.
#[derive(Debug, Default, PartialEq, Eq)]
struct References {
    routes: BTreeSet<String>,
    endpoints: BTreeSet<String>,
    /// The load assignment each EDS cluster fetches, by cluster name: what lets the next
    /// snapshot decode only the clusters whose bytes changed.
    by_cluster: BTreeMap<String, String>,
}

/// What changed between two snapshots, by type: names only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// Per type, the names added, removed and changed. Types without change are absent.
    pub types: BTreeMap<ResourceType, TypeDiff>,
}

/// The change of one resource type between two snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeDiff {
    /// Names only in the newer snapshot.
    pub added: Vec<String>,
    /// Names only in the older snapshot.
    pub removed: Vec<String>,
    /// Names in both with different content.
    pub changed: Vec<String>,
}

static ENCODED: AtomicU64 = AtomicU64::new(0);

/// How many resources this process has encoded into snapshots so far.
///
/// Streams never encode resources themselves, so this counts only snapshot building; the
/// load tool and tests use it to prove resources are encoded once however many streams.
pub fn encoded_resources() -> u64 {
    ENCODED.load(Ordering::Relaxed)
}

/// Lower-case hex SHA-256 of `data`.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

// === impl ResourceType ===

impl ResourceType {
    /// Every type, in make-before-break order.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// True for the types whose SotW responses must carry the full state (LDS and CDS,
    /// xDS protocol "Grouping resources into responses"); the others carry only the
    /// names a client asked for.
    pub fn is_full_state(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    fn index(self) -> u8 {
        match self {
            ResourceType::Cluster => 0,
            ResourceType::Endpoint => 1,
            ResourceType::Listener => 2,
            ResourceType::Route => 3,
            ResourceType::Secret => 4,
        }
    }

    fn from_index(i: u8) -> Option<ResourceType> {
        ResourceType::ALL.get(usize::from(i)).copied()
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceType::Cluster => "cluster",
            ResourceType::Endpoint => "endpoint",
            ResourceType::Listener => "listener",
            ResourceType::Route => "route",
            ResourceType::Secret => "secret",
        })
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// Encodes every resource once and hashes it. The version is
    /// `REVISION+eGENERATION`: it names the configuration revision and the endpoints
    /// generation the snapshot came from.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateName`] when two resources of one type share a name.
    pub fn new(
        revision: &str,
        endpoints_generation: u64,
        resources: &Resources,
    ) -> Result<Snapshot> {
        let version = format!("{revision}+e{endpoints_generation}");
        let mut types = BTreeMap::new();
        let named = |kind, items: Vec<(String, Vec<u8>)>| (kind, items);
        let lists = [
            named(
                ResourceType::Cluster,
                resources
                    .clusters
                    .iter()
                    .map(|r| (r.name.clone(), r.encode_to_vec()))
                    .collect(),
            ),
            named(
                ResourceType::Endpoint,
                resources
                    .endpoints
                    .iter()
                    .map(|r| (r.cluster_name.clone(), r.encode_to_vec()))
                    .collect(),
            ),
            named(
                ResourceType::Listener,
                resources
                    .listeners
                    .iter()
                    .map(|r| (r.name.clone(), r.encode_to_vec()))
                    .collect(),
            ),
            named(
                ResourceType::Route,
                resources
                    .routes
                    .iter()
                    .map(|r| (r.name.clone(), r.encode_to_vec()))
                    .collect(),
            ),
            named(
                ResourceType::Secret,
                resources
                    .secrets
                    .iter()
                    .map(|r| (r.name.clone(), r.encode_to_vec()))
                    .collect(),
            ),
        ];
        for (kind, items) in lists {
            ENCODED.fetch_add(items.len() as u64, Ordering::Relaxed);
            let mut map = ResourceMap::new();
            for (name, body) in items {
                let resource = Resource::new(name, Bytes::from(body));
                if let Some(dup) = map.insert(resource.name.clone(), resource) {
                    return Err(Error::DuplicateName {
                        version,
                        kind,
                        name: dup.name,
                    });
                }
            }
            types.insert(kind, map);
        }
        Ok(Snapshot::from_parts(
            version,
            revision.to_owned(),
            endpoints_generation,
            types,
        ))
    }

    /// A snapshot with no resources, for a store that has nothing to serve yet.
    pub fn empty() -> Snapshot {
        let types = ResourceType::ALL
            .iter()
            .map(|t| (*t, ResourceMap::new()))
            .collect();
        Snapshot::from_parts(String::new(), String::new(), 0, types)
    }

    /// Like [`Snapshot::new`] for resources already encoded (by
    /// `translate::Cache::translate`), hashing only what `previous` does not hold with
    /// the same name and bytes: an unchanged resource keeps its `Bytes` and version, and
    /// an unchanged type its type version, so a revision that changes a few routes and
    /// clusters hashes those and the RouteConfigurations around them, not 8k clusters.
    /// Equal to `Snapshot::new` of the same resources.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateName`] when two resources of one type share a name.
    pub fn from_encoded(
        revision: &str,
        endpoints_generation: u64,
        resources: EncodedResources,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot> {
        let version = format!("{revision}+e{endpoints_generation}");
        let lists = [
            (ResourceType::Cluster, resources.clusters),
            (ResourceType::Endpoint, resources.endpoints),
            (ResourceType::Listener, resources.listeners),
            (ResourceType::Route, resources.routes),
            (ResourceType::Secret, resources.secrets),
        ];
        let mut types = BTreeMap::new();
        for (kind, items) in lists {
            let old = previous.and_then(|p| p.types.get(&kind));
            // Every resource the same buffer as before (nothing of this type changed):
            // share the previous map whole, allocating nothing.
            if let Some(old) = old
                && old.len() == items.len()
                && old.iter().zip(&items).all(|((name, r), (new_name, body))| {
                    name == new_name && same_bytes(&r.body, body)
                })
            {
                types.insert(kind, old.clone());
                continue;
            }
            let old = old.map(Arc::as_ref);
            let mut map = ResourceMap::new();
            let mut hashed = 0;
            for (name, body) in items {
                let resource = match old.and_then(|o| o.get(&name)) {
                    Some(r) if same_bytes(&r.body, &body) => r.clone(),
                    _ => {
                        hashed += 1;
                        Resource::new(name, body)
                    }
                };
                if let Some(dup) = map.insert(resource.name.clone(), resource) {
                    return Err(Error::DuplicateName {
                        version,
                        kind,
                        name: dup.name,
                    });
                }
            }
            ENCODED.fetch_add(hashed, Ordering::Relaxed);
            types.insert(kind, Arc::new(map));
        }
        Ok(Snapshot::from_parts_after(
            version,
            revision.to_owned(),
            endpoints_generation,
            types,
            previous,
        ))
    }

    fn from_parts(
        version: String,
        revision: String,
        endpoints_generation: u64,
        types: BTreeMap<ResourceType, ResourceMap>,
    ) -> Snapshot {
        let types = types.into_iter().map(|(k, m)| (k, Arc::new(m))).collect();
        Snapshot::from_parts_after(version, revision, endpoints_generation, types, None)
    }

    /// Assembles a snapshot; what it shares with `previous` (equal types, equal
    /// clusters) is taken from it instead of being worked out again.
    fn from_parts_after(
        version: String,
        revision: String,
        endpoints_generation: u64,
        types: BTreeMap<ResourceType, Arc<ResourceMap>>,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let mut types: BTreeMap<ResourceType, Arc<ResourceMap>> = types
            .into_iter()
            .map(|(kind, map)| {
                // An unchanged type shares its map, and so its version, with `previous`.
                match previous.and_then(|p| p.types.get(&kind)) {
                    Some(old) if Arc::ptr_eq(old, &map) || same_resources(old, &map) => {
                        (kind, old.clone())
                    }
                    _ => (kind, map),
                }
            })
            .collect();
        for kind in ResourceType::ALL {
            types.entry(kind).or_default();
        }
        let type_versions = types
            .iter()
            .map(|(kind, map)| {
                let kept = previous
                    .filter(|p| p.types.get(kind).is_some_and(|old| Arc::ptr_eq(old, map)))
                    .map(|p| p.type_version(*kind).to_owned());
                let version = kept.unwrap_or_else(|| {
                    content_version(map.values().map(|r| (r.name.as_str(), r.version.as_str())))
                });
                (*kind, version)
            })
            .collect();
        // The same listeners and clusters as `previous` reference the same resources.
        let same_as_previous = |kind: ResourceType| {
            previous.is_some_and(|p| {
                p.types
                    .get(&kind)
                    .zip(types.get(&kind))
                    .is_some_and(|(old, new)| Arc::ptr_eq(old, new))
            })
        };
        let references = match previous {
            Some(p)
                if same_as_previous(ResourceType::Cluster)
                    && same_as_previous(ResourceType::Listener) =>
            {
                p.references.clone()
            }
            _ => {
                let by_cluster = referenced_endpoints(
                    types.get(&ResourceType::Cluster).map(Arc::as_ref),
                    previous,
                );
                Arc::new(References {
                    routes: referenced_routes(types.get(&ResourceType::Listener).map(Arc::as_ref)),
                    endpoints: by_cluster.values().cloned().collect(),
                    by_cluster,
                })
            }
        };
        Snapshot {
            version,
            revision,
            endpoints_generation,
            types,
            type_versions,
            references,
        }
    }

    /// This snapshot with its ClusterLoadAssignments replaced by `assignments` (the
    /// fast path for an endpoints-only change, see `translate::assignments`): every
    /// other type is shared with `self`, not re-encoded, so its type version stays and
    /// only EDS goes out again; a delta stream sends only the assignments whose bytes
    /// changed. The version becomes `REVISION+eGENERATION`.
    ///
    /// Returns `None` when no assignment changed: publishing would only churn versions.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateName`] when two assignments share a name.
    pub fn with_assignments(
        &self,
        endpoints_generation: u64,
        assignments: &[ClusterLoadAssignment],
    ) -> Result<Option<Snapshot>> {
        self.replace_assignments(endpoints_generation, assignments, ResourceMap::new())
    }

    /// Like [`Snapshot::with_assignments`], replacing only the assignments in `changed`
    /// (by name) and keeping the others, as `translate::changed_assignments` gives them.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateName`] when two assignments share a name.
    pub fn with_changed_assignments(
        &self,
        endpoints_generation: u64,
        changed: &[ClusterLoadAssignment],
    ) -> Result<Option<Snapshot>> {
        let mut kept = self.resources(ResourceType::Endpoint).clone();
        for cla in changed {
            kept.remove(&cla.cluster_name);
        }
        self.replace_assignments(endpoints_generation, changed, kept)
    }

    /// `kept` plus `assignments` as the EDS resources; `None` when that is what `self`
    /// already holds.
    fn replace_assignments(
        &self,
        endpoints_generation: u64,
        assignments: &[ClusterLoadAssignment],
        kept: ResourceMap,
    ) -> Result<Option<Snapshot>> {
        let version = format!("{}+e{endpoints_generation}", self.revision);
        let old = self.resources(ResourceType::Endpoint);
        let mut map = kept;
        let mut encoded = 0;
        for cla in assignments {
            let body = cla.encode_to_vec();
            // Unchanged bytes keep the old resource, hash included.
            let resource = match old.get(&cla.cluster_name) {
                Some(r) if r.body.as_ref() == body.as_slice() => r.clone(),
                _ => {
                    encoded += 1;
                    Resource::new(cla.cluster_name.clone(), Bytes::from(body))
                }
            };
            if let Some(dup) = map.insert(resource.name.clone(), resource) {
                return Err(Error::DuplicateName {
                    version,
                    kind: ResourceType::Endpoint,
                    name: dup.name,
                });
            }
        }
        ENCODED.fetch_add(encoded, Ordering::Relaxed);
        if encoded == 0 && map.len() == old.len() && map.keys().eq(old.keys()) {
            return Ok(None);
        }
        let type_version =
            content_version(map.values().map(|r| (r.name.as_str(), r.version.as_str())));
        let mut types = self.types.clone();
        types.insert(ResourceType::Endpoint, Arc::new(map));
        let mut type_versions = self.type_versions.clone();
        type_versions.insert(ResourceType::Endpoint, type_version);
        Ok(Some(Snapshot {
            version,
            revision: self.revision.clone(),
            endpoints_generation,
            types,
            type_versions,
            references: self.references.clone(),
        }))
    }

    /// `REVISION+eGENERATION`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The configuration revision (commit SHA or directory hash) it was built from.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The endpoints generation it was built from.
    pub fn endpoints_generation(&self) -> u64 {
        self.endpoints_generation
    }

    /// The resources of one type, by name.
    pub fn resources(&self, kind: ResourceType) -> &ResourceMap {
        // from_parts fills every type, so the index always hits; the fallback keeps
        // this total without a panic path.
        static EMPTY: ResourceMap = BTreeMap::new();
        self.types.get(&kind).map(Arc::as_ref).unwrap_or(&EMPTY)
    }

    /// A hash of one type's names and versions: equal content, equal version.
    pub fn type_version(&self, kind: ResourceType) -> &str {
        self.type_versions
            .get(&kind)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// How many resources it holds, all types together.
    pub fn len(&self) -> usize {
        self.types.values().map(|m| m.len()).sum()
    }

    /// True when it holds no resource at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that every route configuration a listener names over RDS, and every load
    /// assignment an EDS cluster names, is in the snapshot (go-control-plane's
    /// `Consistent`). Envoy would otherwise wait for them and never finish warming.
    ///
    /// # Errors
    ///
    /// [`Error::Inconsistent`] naming the first missing resource.
    pub fn consistent(&self) -> Result<()> {
        for (kind, names) in [
            (ResourceType::Route, &self.references.routes),
            (ResourceType::Endpoint, &self.references.endpoints),
        ] {
            let have = self.resources(kind);
            if let Some(missing) = names.iter().find(|n| !have.contains_key(*n)) {
                return Err(Error::Inconsistent {
                    version: self.version.clone(),
                    kind,
                    name: missing.clone(),
                });
            }
        }
        Ok(())
    }

    /// Route configuration names listeners fetch over RDS.
    pub fn referenced_routes(&self) -> BTreeSet<String> {
        self.references.routes.clone()
    }

    /// Load assignment names EDS clusters fetch.
    pub fn referenced_endpoints(&self) -> BTreeSet<String> {
        self.references.endpoints.clone()
    }

    /// What changed from `older` to `self`, by type.
    pub fn diff(&self, older: &Snapshot) -> Diff {
        let mut diff = Diff::default();
        for kind in ResourceType::ALL {
            let (new, old) = (self.resources(kind), older.resources(kind));
            let mut td = TypeDiff::default();
            for (name, r) in new {
                match old.get(name) {
                    None => td.added.push(name.clone()),
                    Some(o) if o.version != r.version => td.changed.push(name.clone()),
                    Some(_) => {}
                }
            }
            td.removed = old
                .keys()
                .filter(|n| !new.contains_key(*n))
                .cloned()
                .collect();
            if !(td.added.is_empty() && td.removed.is_empty() && td.changed.is_empty()) {
                diff.types.insert(kind, td);
            }
        }
        diff
    }
}

// === impl Resource ===

impl Resource {
    /// Wraps already-encoded bytes, hashing them for the version.
    pub fn new(name: String, body: Bytes) -> Resource {
        Resource {
            version: sha256_hex(&body),
            name,
            body,
        }
    }
}

// === impl Diff ===

impl Diff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

/// Route configuration names the listeners in `listeners` fetch over RDS.
fn referenced_routes(listeners: Option<&ResourceMap>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in listeners.into_iter().flat_map(|m| m.values()) {
        let Ok(listener) = Listener::decode(r.body.as_ref()) else {
            continue;
        };
        let chains = listener
            .filter_chains
            .iter()
            .chain(listener.default_filter_chain.iter());
        for filter in chains.flat_map(|c| c.filters.iter()) {
            let Some(FilterConfigType::TypedConfig(any)) = &filter.config_type else {
                continue;
            };
            if any.type_url != HttpConnectionManager::type_url() {
                continue;
            }
            let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                continue;
            };
            if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                out.insert(rds.route_config_name);
            }
        }
    }
    out
}

/// The load assignment each EDS cluster in `clusters` fetches, by cluster name. A
/// cluster `previous` holds with the same version is not decoded again.
fn referenced_endpoints(
    clusters: Option<&ResourceMap>,
    previous: Option<&Snapshot>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let old = previous.map(|p| (p.resources(ResourceType::Cluster), &p.references.by_cluster));
    for r in clusters.into_iter().flat_map(|m| m.values()) {
        if let Some((old_clusters, old_refs)) = old
            && old_clusters
                .get(&r.name)
                .is_some_and(|o| o.version == r.version)
        {
            if let Some(eds) = old_refs.get(&r.name) {
                out.insert(r.name.clone(), eds.clone());
            }
            continue;
        }
        let Ok(cluster) = Cluster::decode(r.body.as_ref()) else {
            continue;
        };
        let eds = matches!(cluster.cluster_discovery_type, Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32);
        if eds {
            let service = cluster
                .eds_cluster_config
                .map(|c| c.service_name)
                .unwrap_or_default();
            out.insert(
                r.name.clone(),
                if service.is_empty() {
                    cluster.name
                } else {
                    service
                },
            );
        }
    }
    out
}

/// Whether two bodies hold the same bytes; the pointer test first, since bodies the
/// translation cache kept are the very same buffer.
fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// Whether two maps hold the same names with the same versions.
fn same_resources(a: &ResourceMap, b: &ResourceMap) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((an, ar), (bn, br))| an == bn && ar.version == br.version)
}

/// A version for a set of `(name, version)` pairs: the first 16 bytes of the SHA-256 of
/// their sorted concatenation. Equal sets give equal versions on every replica.
pub fn content_version<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<_> = pairs.into_iter().collect();
    pairs.sort_unstable();
    let mut h = Sha256::new();
    for (name, version) in pairs {
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update(version.as_bytes());
    }
    hex(&h.finalize()[..16])
}

#[cfg(test)]
mod tests;
