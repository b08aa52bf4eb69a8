//! Encoded SotW response bodies, shared by every stream that is sent the same set.
//!
//! Most of a fleet subscribes alike (CDS and LDS wildcard, EDS and RDS for the names
//! those reference), so a publish sends the same few responses to every node. Each is
//! encoded once here ([`super::wire::sotw_body`]) and every stream sends the same
//! `Bytes` with its own nonce in front (issue 3: "resources encoded once however many
//! streams").
//!
//! The key is the response's type and `version_info`. That version is a content hash of
//! the set's names and resource versions (`snapshot::content_version`), so equal keys
//! mean byte-equal bodies, across snapshots too: an unchanged EDS set stays cached when
//! only routes change.
//!
//! The cache holds at most `budget` bytes and drops the oldest entries first; a body that
//! alone exceeds the budget is built per response and not kept. A fleet with many
//! distinct subscriptions then costs encoding time, never unbounded memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::snapshot::ResourceType;

static ENCODED: AtomicU64 = AtomicU64::new(0);

/// How many SotW response bodies this process has encoded so far, all servers together.
///
/// With the cache, this grows with the number of distinct response sets a snapshot
/// needs, not with the number of streams; the load tool reports it.
pub fn encoded_responses() -> u64 {
    ENCODED.load(Ordering::Relaxed)
}

/// Response bodies by type and version, within a byte budget.
#[derive(Debug)]
pub(crate) struct ResponseCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    bodies: BTreeMap<ResourceType, HashMap<String, Bytes>>,
    /// Insertion order, for eviction.
    order: VecDeque<(ResourceType, String)>,
    bytes: usize,
    /// Bodies this cache encoded (misses).
    encoded: u64,
}

// === impl ResponseCache ===

impl ResponseCache {
    /// A cache that keeps at most `budget` bytes of bodies (0 keeps none).
    pub(crate) fn new(budget: usize) -> ResponseCache {
        ResponseCache {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The body for `kind` at `version`, encoded by `encode` on a miss.
    ///
    /// `encode` runs under the cache's lock, so concurrent streams asking for the same
    /// body wait for one encoding instead of each doing it; an encoding is one copy of
    /// the set's bytes, microseconds to a millisecond.
    pub(crate) fn body(
        &self,
        kind: ResourceType,
        version: &str,
        encode: impl FnOnce() -> Bytes,
    ) -> Bytes {
        let mut inner = self.inner.lock();
        if let Some(body) = inner.bodies.get(&kind).and_then(|m| m.get(version)) {
            return body.clone();
        }
        let body = encode();
        ENCODED.fetch_add(1, Ordering::Relaxed);
        inner.encoded += 1;
        if body.len() > self.budget {
            return body;
        }
        while inner.bytes + body.len() > self.budget {
            let Some((k, v)) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.bodies.get_mut(&k).and_then(|m| m.remove(&v)) {
                inner.bytes -= old.len();
            }
        }
        inner.bytes += body.len();
        inner.order.push_back((kind, version.to_owned()));
        inner
            .bodies
            .entry(kind)
            .or_default()
            .insert(version.to_owned(), body.clone());
        body
    }

    /// Bodies this cache has encoded.
    #[cfg(test)]
    pub(crate) fn encoded(&self) -> u64 {
        self.inner.lock().encoded
    }

    /// Bytes of bodies it holds.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> impl FnOnce() -> Bytes {
        move || Bytes::from(vec![1u8; n])
    }

    #[test]
    fn a_body_is_encoded_once_and_shared() {
        let cache = ResponseCache::new(1024);
        let a = cache.body(ResourceType::Route, "v1", body(100));
        let b = cache.body(ResourceType::Route, "v1", || {
            panic!("a hit must not encode")
        });
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(cache.encoded(), 1);
        // Same version string, another type: another body.
        cache.body(ResourceType::Cluster, "v1", body(10));
        assert_eq!(cache.encoded(), 2);
    }

    #[test]
    fn the_oldest_bodies_go_first_when_the_budget_is_full() {
        let cache = ResponseCache::new(250);
        cache.body(ResourceType::Route, "a", body(100));
        cache.body(ResourceType::Route, "b", body(100));
        cache.body(ResourceType::Route, "c", body(100));
        assert!(cache.bytes() <= 250, "{} bytes held", cache.bytes());
        // "a" was evicted and is encoded again; "c" is still there.
        cache.body(ResourceType::Route, "c", || panic!("c is cached"));
        cache.body(ResourceType::Route, "a", body(100));
        assert_eq!(cache.encoded(), 4);
        assert!(cache.bytes() <= 250);
    }

    #[test]
    fn a_body_larger_than_the_budget_is_served_and_not_kept() {
        let cache = ResponseCache::new(50);
        cache.body(ResourceType::Route, "small", body(40));
        let big = cache.body(ResourceType::Route, "big", body(100));
        assert_eq!(big.len(), 100);
        assert_eq!(cache.bytes(), 40, "the small body stays");
        cache.body(ResourceType::Route, "big", body(100));
        assert_eq!(cache.encoded(), 3);
    }
}
