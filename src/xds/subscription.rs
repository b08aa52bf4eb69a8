//! Which resources of one type a stream subscribed to: wildcard, named, or both.
//!
//! The rules are the xDS protocol's ("How the client specifies what resources to
//! return"): a first request with no names is a *legacy* wildcard subscription; `*` is
//! an explicit wildcard; in state-of-the-world each request replaces the set, in delta
//! the client subscribes and unsubscribes names. Both protocols share this type so they
//! cannot drift apart.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::names::{NameSet, NameSets};
use crate::snapshot::{Resource, ResourceMap};

/// The explicit wildcard name.
pub(crate) const WILDCARD: &str = "*";

/// One type's subscription on one stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct Subscription {
    wildcard: bool,
    /// The wildcard came from an empty first request, not from `*`; in SotW a later
    /// empty request keeps it, a later named one ends it.
    legacy: bool,
    /// Shared with every SotW stream subscribed to the same names; a delta stream's set
    /// is its own (copied on its first change).
    names: Arc<NameSet>,
    /// Bumped whenever what the subscription selects changes, so callers can keep
    /// what they derived from it until then.
    generation: u64,
}

// === impl Subscription ===

impl Subscription {
    /// Applies a state-of-the-world request's `resource_names`; `first` says it is the
    /// stream's first request of this type. A changed name set is interned in `sets`.
    /// An ACK repeats the whole list (hundreds of EDS names): when it is unchanged this
    /// allocates nothing.
    pub(crate) fn sotw_update(&mut self, first: bool, names: Vec<String>, sets: &NameSets) {
        let wildcard_before = self.wildcard;
        if names.is_empty() {
            if first || self.legacy {
                self.wildcard = true;
                self.legacy = true;
            } else {
                // An empty list after named ones unsubscribes from everything.
                self.wildcard = false;
            }
            if !self.names.names().is_empty() {
                self.names = Arc::default();
                self.generation += 1;
            }
        } else {
            self.legacy = false;
            self.wildcard = names.iter().any(|n| n == WILDCARD);
            if !same_names(&names, self.names.names()) {
                self.names = sets.intern(names.into_iter().filter(|n| n != WILDCARD).collect());
                self.generation += 1;
            }
        }
        if self.wildcard != wildcard_before {
            self.generation += 1;
        }
    }

    /// Applies a delta request's subscribe and unsubscribe lists.
    pub(crate) fn delta_update(
        &mut self,
        first: bool,
        subscribe: &[String],
        unsubscribe: &[String],
    ) {
        if first || !subscribe.is_empty() || !unsubscribe.is_empty() {
            self.generation += 1;
        }
        if first && subscribe.is_empty() {
            self.wildcard = true;
            self.legacy = true;
        }
        for name in subscribe {
            if name == WILDCARD {
                self.wildcard = true;
            } else {
                Arc::make_mut(&mut self.names)
                    .names_mut()
                    .insert(name.clone());
            }
        }
        for name in unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
                self.legacy = false;
            } else {
                if self.names.names().contains(name) {
                    Arc::make_mut(&mut self.names).names_mut().remove(name);
                }
            }
        }
    }

    /// Changes whenever what [`Subscription::select`] yields for a given map may change.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the stream wants every resource of the type.
    pub(crate) fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Whether the stream wants the resource `name`.
    pub(crate) fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.names().contains(name)
    }

    /// The names subscribed explicitly.
    pub(crate) fn names(&self) -> &BTreeSet<String> {
        self.names.names()
    }

    /// The shared set of names subscribed explicitly, with its computed versions.
    pub(crate) fn name_set(&self) -> &NameSet {
        &self.names
    }

    /// The resources of `map` the stream wants, each once, in name order.
    pub(crate) fn select<'a>(
        &'a self,
        map: &'a ResourceMap,
    ) -> Box<dyn Iterator<Item = &'a Resource> + 'a> {
        if self.wildcard {
            Box::new(map.values())
        } else {
            Box::new(self.names.names().iter().filter_map(|n| map.get(n)))
        }
    }
}

/// Whether a request's names (less `*`) are exactly `current`. Envoy sends them in
/// order, so this is usually one pass; otherwise it sorts references, never copies.
fn same_names(request: &[String], current: &BTreeSet<String>) -> bool {
    let named = || request.iter().filter(|n| *n != WILDCARD);
    let mut previous: Option<&String> = None;
    let ascending = named().all(|n| {
        let ok = previous.is_none_or(|p| p < n);
        previous = Some(n);
        ok
    });
    if ascending {
        return named().eq(current.iter());
    }
    let distinct: BTreeSet<&String> = named().collect();
    distinct.len() == current.len() && distinct.into_iter().eq(current.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn sotw_legacy_wildcard_survives_empty_requests_and_ends_with_names() {
        let sets = NameSets::default();
        let mut s = Subscription::default();
        s.sotw_update(true, vec![], &sets);
        assert!(s.is_wildcard());
        s.sotw_update(false, vec![], &sets);
        assert!(s.is_wildcard());
        s.sotw_update(false, names(&["a"]), &sets);
        assert!(!s.is_wildcard());
        assert!(s.wants("a") && !s.wants("b"));
        s.sotw_update(false, vec![], &sets);
        assert!(
            !s.is_wildcard() && !s.wants("a"),
            "empty after names unsubscribes all"
        );
        s.sotw_update(false, names(&["*", "x"]), &sets);
        assert!(s.is_wildcard() && s.names().contains("x"));
    }

    #[test]
    fn the_generation_moves_only_when_the_selection_changes() {
        let sets = NameSets::default();
        let mut s = Subscription::default();
        s.sotw_update(true, names(&["b", "a"]), &sets);
        let g = s.generation();
        // An ACK repeats the list, in any order.
        s.sotw_update(false, names(&["a", "b", "a"]), &sets);
        assert_eq!(s.generation(), g);
        s.sotw_update(false, names(&["a"]), &sets);
        assert_ne!(s.generation(), g);
        let g = s.generation();
        s.sotw_update(false, names(&["a", "*"]), &sets);
        assert_ne!(s.generation(), g, "wildcard added");
        let g = s.generation();
        s.sotw_update(false, vec![], &sets);
        assert_ne!(s.generation(), g, "everything unsubscribed");
    }

    #[test]
    fn equal_sotw_subscriptions_share_one_name_set() {
        let sets = NameSets::default();
        let (mut a, mut b) = (Subscription::default(), Subscription::default());
        a.sotw_update(true, names(&["x", "y"]), &sets);
        b.sotw_update(true, names(&["y", "x", "y"]), &sets);
        assert!(std::ptr::eq(a.name_set(), b.name_set()));
        b.sotw_update(false, names(&["x"]), &sets);
        assert!(!std::ptr::eq(a.name_set(), b.name_set()));
        assert_eq!(a.names().len(), 2, "a is unchanged");
    }

    #[test]
    fn same_names_ignores_order_duplicates_and_the_wildcard() {
        let current: BTreeSet<String> = names(&["a", "b"]).into_iter().collect();
        assert!(same_names(&names(&["a", "b"]), &current));
        assert!(same_names(&names(&["b", "a", "*"]), &current));
        assert!(same_names(&names(&["b", "a", "b"]), &current));
        assert!(!same_names(&names(&["a", "a"]), &current));
        assert!(!same_names(&names(&["a"]), &current));
        assert!(!same_names(&names(&["a", "b", "c"]), &current));
        assert!(!same_names(&names(&["c", "a"]), &current));
    }

    #[test]
    fn delta_subscribe_and_unsubscribe() {
        let mut s = Subscription::default();
        s.delta_update(true, &names(&["a", "b"]), &[]);
        assert!(!s.is_wildcard());
        s.delta_update(false, &[], &names(&["a"]));
        assert!(!s.wants("a") && s.wants("b"));
        s.delta_update(false, &names(&["*"]), &[]);
        assert!(s.wants("zzz"));
        s.delta_update(false, &[], &names(&["*"]));
        assert!(!s.wants("zzz") && s.wants("b"));

        let mut legacy = Subscription::default();
        legacy.delta_update(true, &[], &[]);
        assert!(legacy.is_wildcard());
    }
}
