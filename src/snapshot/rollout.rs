//! The canary rollout: which snapshot each node should get.
//!
//! A pure state machine (no clock, no I/O): every input carries the `Instant` it
//! happened at, and [`Rollout::deadline`] says when [`Rollout::tick`] must next be
//! called. The [`super::Store`] feeds it and turns its [`Step`]s into channel updates and
//! persistence; unit tests drive it with explicit instants.
//!
//! Rules (issue 3, "Rollout"): with no canary selector a new snapshot goes to every node
//! at once. With one, it goes to canary nodes first; once every connected canary is in
//! sync with it (every type ACKed) the bake starts, and when the bake passes without a
//! canary NACK it is promoted to every node. A canary NACK halts the rollout: the fleet
//! stays on the previous snapshot, and only the next publish starts a new rollout.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Error, Result, Snapshot};

/// Which nodes are canaries: `metadata.KEY=VALUE` or `cluster=NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanarySelector {
    /// `node.metadata[KEY]` is the string `VALUE` (or a bool/number that prints so).
    Metadata {
        /// The metadata key.
        key: String,
        /// The value it must have.
        value: String,
    },
    /// `node.cluster` is `NAME`.
    Cluster(String),
}

/// What the state machine did in response to an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing a node should see changed.
    Unchanged,
    /// The canaries' target changed (a new rollout started); the fleet's did not.
    CanaryTargetChanged,
    /// The snapshot became the fleet's: every node should get it, and it is the new last
    /// good snapshot to persist.
    Promoted(Arc<Snapshot>),
    /// A canary rejected the candidate; the fleet stays where it is.
    Halted,
}

/// Where the rollout stands, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RolloutStatus {
    /// Every node targets the stable snapshot.
    Idle {
        /// The fleet's snapshot version, if any.
        stable: Option<String>,
    },
    /// Waiting for every connected canary to ACK the candidate.
    AwaitingCanaries {
        /// The fleet's snapshot version.
        stable: Option<String>,
        /// The canaries' snapshot version.
        candidate: String,
    },
    /// Canaries ACKed; promoted when the bake ends.
    Baking {
        /// The fleet's snapshot version.
        stable: Option<String>,
        /// The canaries' snapshot version.
        candidate: String,
        /// Time left, in ms.
        remaining_ms: u64,
    },
    /// A canary NACKed the candidate; the next publish starts over.
    Halted {
        /// The fleet's snapshot version.
        stable: Option<String>,
        /// The rejected candidate.
        candidate: String,
        /// The canary node that rejected it.
        node: String,
        /// Envoy's message.
        message: String,
    },
}

#[derive(Debug, Clone)]
enum Phase {
    AwaitingCanaries,
    Baking { until: Instant },
    Halted { node: String, message: String },
}

#[derive(Debug, Clone)]
struct Candidate {
    snapshot: Arc<Snapshot>,
    phase: Phase,
}

/// The rollout state machine.
#[derive(Debug, Clone)]
pub struct Rollout {
    canaries: bool,
    bake: Duration,
    stable: Option<Arc<Snapshot>>,
    candidate: Option<Candidate>,
}

// === impl CanarySelector ===

impl CanarySelector {
    /// Parses `metadata.KEY=VALUE` or `cluster=NAME`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSelector`] for anything else, or an empty key or name.
    pub fn try_new(text: &str) -> Result<CanarySelector> {
        let bad = || Error::InvalidSelector(text.to_owned());
        let (lhs, rhs) = text.split_once('=').ok_or_else(bad)?;
        let lhs = lhs.trim();
        if let Some(key) = lhs.strip_prefix("metadata.") {
            if key.is_empty() {
                return Err(bad());
            }
            return Ok(CanarySelector::Metadata {
                key: key.to_owned(),
                value: rhs.trim().to_owned(),
            });
        }
        if lhs == "cluster" && !rhs.trim().is_empty() {
            return Ok(CanarySelector::Cluster(rhs.trim().to_owned()));
        }
        Err(bad())
    }

    /// Whether `node` is a canary.
    pub fn matches(&self, node: &Node) -> bool {
        match self {
            CanarySelector::Cluster(name) => node.cluster == *name,
            CanarySelector::Metadata { key, value } => {
                let field = node.metadata.as_ref().and_then(|m| m.fields.get(key));
                match field.and_then(|v| v.kind.as_ref()) {
                    Some(Kind::StringValue(s)) => s == value,
                    Some(Kind::BoolValue(b)) => b.to_string() == *value,
                    Some(Kind::NumberValue(n)) => n.to_string() == *value,
                    _ => false,
                }
            }
        }
    }
}

impl std::str::FromStr for CanarySelector {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        CanarySelector::try_new(s)
    }
}

// === impl Rollout ===

impl Rollout {
    /// A rollout serving `stable` to every node. `canaries` says whether a canary
    /// selector is configured; `bake` is how long canaries must hold a candidate.
    pub fn new(canaries: bool, bake: Duration, stable: Option<Arc<Snapshot>>) -> Rollout {
        Rollout {
            canaries,
            bake,
            stable,
            candidate: None,
        }
    }

    /// The fleet's snapshot.
    pub fn stable(&self) -> Option<&Arc<Snapshot>> {
        self.stable.as_ref()
    }

    /// The canaries' snapshot: the candidate while a rollout is under way (halted or
    /// not), else the stable one.
    pub fn canary_target(&self) -> Option<&Arc<Snapshot>> {
        self.candidate
            .as_ref()
            .map(|c| &c.snapshot)
            .or(self.stable.as_ref())
    }

    /// The candidate's version while a rollout is under way and not halted.
    pub fn active_candidate(&self) -> Option<&str> {
        match &self.candidate {
            Some(Candidate {
                snapshot,
                phase: Phase::AwaitingCanaries | Phase::Baking { .. },
            }) => Some(snapshot.version()),
            _ => None,
        }
    }

    /// A new snapshot was published at `now`.
    pub fn publish(&mut self, snapshot: Arc<Snapshot>, _now: Instant) -> Step {
        if !self.canaries {
            self.candidate = None;
            self.stable = Some(snapshot.clone());
            return Step::Promoted(snapshot);
        }
        if self
            .stable
            .as_ref()
            .is_some_and(|s| s.version() == snapshot.version())
        {
            // Back to what the fleet already runs (a revert): drop the rollout.
            let had = self.candidate.take().is_some();
            return if had {
                Step::CanaryTargetChanged
            } else {
                Step::Unchanged
            };
        }
        if self
            .candidate
            .as_ref()
            .is_some_and(|c| c.snapshot.version() == snapshot.version())
        {
            return Step::Unchanged;
        }
        if self.stable.is_none() {
            // Nothing to protect yet: a first snapshot goes to everyone.
            self.stable = Some(snapshot.clone());
            self.candidate = None;
            return Step::Promoted(snapshot);
        }
        self.candidate = Some(Candidate {
            snapshot,
            phase: Phase::AwaitingCanaries,
        });
        Step::CanaryTargetChanged
    }

    /// Whether every connected canary is in sync with the candidate (vacuously true with
    /// none connected), as of `now`. Starts the bake, or stops it when a canary falls
    /// out of sync (for example a new canary connected).
    pub fn canaries_synced(&mut self, all_synced: bool, now: Instant) -> Step {
        let bake = self.bake;
        let Some(candidate) = &mut self.candidate else {
            return Step::Unchanged;
        };
        match (&candidate.phase, all_synced) {
            (Phase::AwaitingCanaries, true) => {
                candidate.phase = Phase::Baking { until: now + bake }
            }
            (Phase::Baking { .. }, false) => candidate.phase = Phase::AwaitingCanaries,
            _ => {}
        }
        self.tick(now)
    }

    /// A canary NACKed snapshot `version`. Halts the rollout when that is the candidate.
    pub fn canary_nack(&mut self, version: &str, node: &str, message: &str) -> Step {
        let Some(candidate) = &mut self.candidate else {
            return Step::Unchanged;
        };
        if candidate.snapshot.version() != version
            || matches!(candidate.phase, Phase::Halted { .. })
        {
            return Step::Unchanged;
        }
        candidate.phase = Phase::Halted {
            node: node.to_owned(),
            message: message.to_owned(),
        };
        Step::Halted
    }

    /// Time passed: promotes the candidate when its bake is over.
    pub fn tick(&mut self, now: Instant) -> Step {
        let due = matches!(&self.candidate, Some(Candidate { phase: Phase::Baking { until }, .. }) if now >= *until);
        if !due {
            return Step::Unchanged;
        }
        match self.candidate.take() {
            Some(c) => {
                self.stable = Some(c.snapshot.clone());
                Step::Promoted(c.snapshot)
            }
            None => Step::Unchanged,
        }
    }

    /// When [`Rollout::tick`] must next be called, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.candidate {
            Some(Candidate {
                phase: Phase::Baking { until },
                ..
            }) => Some(*until),
            _ => None,
        }
    }

    /// Where the rollout stands at `now`.
    pub fn status(&self, now: Instant) -> RolloutStatus {
        let stable = self.stable.as_ref().map(|s| s.version().to_owned());
        let Some(c) = &self.candidate else {
            return RolloutStatus::Idle { stable };
        };
        let candidate = c.snapshot.version().to_owned();
        match &c.phase {
            Phase::AwaitingCanaries => RolloutStatus::AwaitingCanaries { stable, candidate },
            Phase::Baking { until } => RolloutStatus::Baking {
                stable,
                candidate,
                remaining_ms: u64::try_from(until.saturating_duration_since(now).as_millis())
                    .unwrap_or(u64::MAX),
            },
            Phase::Halted { node, message } => RolloutStatus::Halted {
                stable,
                candidate,
                node: node.clone(),
                message: message.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::Resources;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    fn snap(rev: &str) -> Arc<Snapshot> {
        let resources = Resources {
            clusters: vec![Cluster {
                name: format!("c-{rev}"),
                ..Default::default()
            }],
            ..Default::default()
        };
        Arc::new(Snapshot::new(rev, 0, &resources).expect("unique names"))
    }

    const BAKE: Duration = Duration::from_secs(10);

    #[test]
    fn without_canaries_every_publish_is_promoted_at_once() {
        let t0 = Instant::now();
        let mut r = Rollout::new(false, BAKE, Some(snap("a")));
        let b = snap("b");
        assert_eq!(r.publish(b.clone(), t0), Step::Promoted(b.clone()));
        assert_eq!(r.stable().map(|s| s.version()), Some(b.version()));
        assert_eq!(r.canary_target().map(|s| s.version()), Some(b.version()));
    }

    #[test]
    fn first_snapshot_goes_to_everyone_even_with_canaries() {
        let mut r = Rollout::new(true, BAKE, None);
        let a = snap("a");
        assert_eq!(r.publish(a.clone(), Instant::now()), Step::Promoted(a));
    }

    #[test]
    fn candidate_goes_to_canaries_then_fleet_after_bake() {
        let t0 = Instant::now();
        let mut r = Rollout::new(true, BAKE, Some(snap("a")));
        let b = snap("b");
        assert_eq!(r.publish(b.clone(), t0), Step::CanaryTargetChanged);
        assert_eq!(r.stable().map(|s| s.revision()), Some("a"));
        assert_eq!(r.canary_target().map(|s| s.revision()), Some("b"));
        // Canaries not yet in sync: no bake, no deadline.
        assert_eq!(r.canaries_synced(false, t0), Step::Unchanged);
        assert_eq!(r.deadline(), None);
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(r.canaries_synced(true, t1), Step::Unchanged);
        assert_eq!(r.deadline(), Some(t1 + BAKE));
        assert_eq!(
            r.tick(t1 + BAKE - Duration::from_millis(1)),
            Step::Unchanged
        );
        assert_eq!(r.tick(t1 + BAKE), Step::Promoted(b));
        assert_eq!(r.stable().map(|s| s.revision()), Some("b"));
        assert!(matches!(r.status(t1 + BAKE), RolloutStatus::Idle { .. }));
    }

    #[test]
    fn canary_falling_out_of_sync_restarts_the_bake() {
        let t0 = Instant::now();
        let mut r = Rollout::new(true, BAKE, Some(snap("a")));
        r.publish(snap("b"), t0);
        r.canaries_synced(true, t0);
        r.canaries_synced(false, t0 + Duration::from_secs(5));
        assert_eq!(r.tick(t0 + BAKE), Step::Unchanged);
        let t2 = t0 + Duration::from_secs(6);
        r.canaries_synced(true, t2);
        assert_eq!(r.deadline(), Some(t2 + BAKE));
    }

    #[test]
    fn canary_nack_halts_and_next_publish_starts_over() {
        let t0 = Instant::now();
        let mut r = Rollout::new(true, BAKE, Some(snap("a")));
        let b = snap("b");
        r.publish(b.clone(), t0);
        assert_eq!(r.canary_nack("other", "n1", "x"), Step::Unchanged);
        assert_eq!(r.canary_nack(b.version(), "n1", "bad regex"), Step::Halted);
        // Halted: synced canaries and time do not promote it.
        assert_eq!(r.canaries_synced(true, t0), Step::Unchanged);
        assert_eq!(r.tick(t0 + BAKE * 10), Step::Unchanged);
        assert_eq!(r.stable().map(|s| s.revision()), Some("a"));
        assert_eq!(r.active_candidate(), None);
        match r.status(t0) {
            RolloutStatus::Halted { node, message, .. } => {
                assert_eq!((node.as_str(), message.as_str()), ("n1", "bad regex"))
            }
            other => panic!("expected halted, got {other:?}"),
        }
        assert_eq!(r.publish(snap("c"), t0), Step::CanaryTargetChanged);
        assert_eq!(r.active_candidate(), Some(snap("c").version()));
    }

    #[test]
    fn republishing_the_stable_snapshot_cancels_the_rollout() {
        let t0 = Instant::now();
        let a = snap("a");
        let mut r = Rollout::new(true, BAKE, Some(a.clone()));
        r.publish(snap("b"), t0);
        assert_eq!(r.publish(a.clone(), t0), Step::CanaryTargetChanged);
        assert_eq!(r.canary_target().map(|s| s.version()), Some(a.version()));
        assert_eq!(r.publish(a, t0), Step::Unchanged);
    }

    #[tokio::test(start_paused = true)]
    async fn bake_follows_tokio_time() {
        let mut r = Rollout::new(true, BAKE, Some(snap("a")));
        r.publish(snap("b"), Instant::now());
        r.canaries_synced(true, Instant::now());
        tokio::time::sleep(BAKE / 2).await;
        assert_eq!(r.tick(Instant::now()), Step::Unchanged);
        tokio::time::sleep_until(r.deadline().expect("baking")).await;
        assert!(matches!(r.tick(Instant::now()), Step::Promoted(_)));
    }

    #[test]
    fn selectors_parse_and_match() {
        let sel = CanarySelector::try_new("metadata.canary=true").expect("valid");
        let mut node = Node {
            id: "n".into(),
            cluster: "edge".into(),
            ..Default::default()
        };
        assert!(!sel.matches(&node));
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            "canary".to_owned(),
            Value {
                kind: Some(Kind::StringValue("true".into())),
            },
        );
        node.metadata = Some(Struct {
            fields: fields.clone().into_iter().collect(),
        });
        assert!(sel.matches(&node));
        fields.insert(
            "canary".to_owned(),
            Value {
                kind: Some(Kind::BoolValue(true)),
            },
        );
        node.metadata = Some(Struct {
            fields: fields.into_iter().collect(),
        });
        assert!(sel.matches(&node));
        assert!(
            CanarySelector::try_new("cluster=edge")
                .expect("valid")
                .matches(&node)
        );
        assert!(
            !CanarySelector::try_new("cluster=core")
                .expect("valid")
                .matches(&node)
        );
        for bad in ["", "canary=true", "metadata.=x", "cluster=", "metadata.k"] {
            assert!(
                CanarySelector::try_new(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
