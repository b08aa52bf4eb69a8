//! Subscribed name sets, shared by every stream that subscribes to the same names.
//!
//! A fleet subscribes alike: at 1k routes every node asks EDS for the same 400 cluster
//! names. Held per stream, those names cost ~24 KB a stream, and the version of each
//! stream's EDS set (a hash over 400 names and resource versions) was computed per
//! stream on every publish, the top server cost in perf at 5k streams (issue 3). SotW
//! streams therefore intern their name sets ([`NameSets::intern`]): equal sets are one
//! [`NameSet`], and its set versions are computed once per snapshot for all of them.
//!
//! Interned sets live as long as a stream holds them; the interner keeps only weak
//! references and sweeps dead ones as it goes, so its size follows the live sets.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::snapshot::{ResourceType, Snapshot};

/// Set versions kept per name set: the current snapshot and a few before it, for
/// streams a publish has not reached yet and canaries on another target.
const VERSIONS_KEPT: usize = 8;

/// Sweep dead sets out of the interner after this many interns.
const SWEEP_EVERY: u64 = 1024;

/// A set of subscribed names and the set versions computed for it.
#[derive(Debug, Default)]
pub(crate) struct NameSet {
    names: BTreeSet<String>,
    /// `(target, kind, version)`, newest last.
    versions: Mutex<VecDeque<(Arc<Snapshot>, ResourceType, String)>>,
}

// === impl NameSet ===

impl NameSet {
    /// The names.
    pub(crate) fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// The names, to change them; forgets the versions computed for the old ones.
    pub(crate) fn names_mut(&mut self) -> &mut BTreeSet<String> {
        self.versions.get_mut().clear();
        &mut self.names
    }

    /// The version of this set's resources of `kind` in `target`, as `compute` gives
    /// it; computed once however many streams share the set.
    pub(crate) fn version(
        &self,
        kind: ResourceType,
        target: &Arc<Snapshot>,
        compute: impl FnOnce() -> String,
    ) -> String {
        let mut versions = self.versions.lock();
        if let Some((_, _, version)) = versions
            .iter()
            .find(|(t, k, _)| *k == kind && Arc::ptr_eq(t, target))
        {
            return version.clone();
        }
        let version = compute();
        if versions.len() >= VERSIONS_KEPT {
            versions.pop_front();
        }
        versions.push_back((target.clone(), kind, version.clone()));
        version
    }
}

impl Clone for NameSet {
    fn clone(&self) -> Self {
        NameSet {
            names: self.names.clone(),
            versions: Mutex::default(),
        }
    }
}

/// The interner: live name sets by a hash of their names.
#[derive(Debug, Default)]
pub(crate) struct NameSets {
    inner: Mutex<Inner>,
    hasher: std::hash::RandomState,
}

#[derive(Debug, Default)]
struct Inner {
    sets: HashMap<u64, Vec<Weak<NameSet>>>,
    interned: u64,
}

// === impl NameSets ===

impl NameSets {
    /// The shared set equal to `names`, made if no stream holds one.
    pub(crate) fn intern(&self, names: BTreeSet<String>) -> Arc<NameSet> {
        let hash = self.hasher.hash_one(&names);
        let mut inner = self.inner.lock();
        inner.interned += 1;
        if inner.interned.is_multiple_of(SWEEP_EVERY) {
            inner.sets.retain(|_, bucket| {
                bucket.retain(|w| w.strong_count() > 0);
                !bucket.is_empty()
            });
        }
        let bucket = inner.sets.entry(hash).or_default();
        bucket.retain(|w| w.strong_count() > 0);
        if let Some(set) = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.names == names)
        {
            return set;
        }
        let set = Arc::new(NameSet {
            names,
            versions: Mutex::default(),
        });
        bucket.push(Arc::downgrade(&set));
        set
    }

    /// How many interned sets are alive.
    #[cfg(test)]
    fn live(&self) -> usize {
        self.inner
            .lock()
            .sets
            .values()
            .flatten()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn equal_sets_are_one_and_die_with_their_holders() {
        let sets = NameSets::default();
        let a = sets.intern(set(&["x", "y"]));
        let b = sets.intern(set(&["y", "x"]));
        let c = sets.intern(set(&["x"]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(sets.live(), 2);
        drop((a, b));
        assert_eq!(sets.live(), 1);
        let again = sets.intern(set(&["x", "y"]));
        assert_eq!(again.names(), &set(&["x", "y"]));
    }

    #[test]
    fn a_version_is_computed_once_per_target_and_kind() {
        let sets = NameSets::default();
        let s = sets.intern(set(&["x"]));
        let (t1, t2) = (Arc::new(Snapshot::empty()), Arc::new(Snapshot::empty()));
        assert_eq!(s.version(ResourceType::Endpoint, &t1, || "v1".into()), "v1");
        let hit = s.version(ResourceType::Endpoint, &t1, || panic!("computed twice"));
        assert_eq!(hit, "v1");
        // Another snapshot (even an equal one) or another type is another entry.
        assert_eq!(s.version(ResourceType::Endpoint, &t2, || "v2".into()), "v2");
        assert_eq!(s.version(ResourceType::Route, &t1, || "r1".into()), "r1");
        // Changing the names forgets them.
        let mut own = (*s).clone();
        own.names_mut().insert("z".into());
        assert_eq!(
            own.version(ResourceType::Endpoint, &t1, || "v3".into()),
            "v3"
        );
    }
}
