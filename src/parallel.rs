//! Order-preserving parallel maps for the pipeline's big loops (validating Mappings,
//! building routes and clusters).
//!
//! Validation and translation stay pure functions: every item is mapped independently and
//! the results are joined in input order, so the output is the same on one core or many.
//! Threads only pay off past a few thousand items (10k Mappings build 20k routes of ~2 KB
//! each); below `min_per_thread` items per thread everything runs on the caller's thread.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

/// For cheap items (one route, one cluster): fewer than this per thread are not worth one.
pub(crate) const SMALL_ITEMS: usize = 512;
/// Beyond a few threads the work is memory-bound.
const MAX_THREADS: usize = 8;

/// `items.iter().map(f).collect()`, on several threads when `items` is large.
pub(crate) fn map<T: Sync, U: Send>(
    items: &[T],
    min_per_thread: usize,
    f: impl Fn(&T) -> U + Sync,
) -> Vec<U> {
    let threads = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_THREADS)
        .min(items.len() / min_per_thread.max(1));
    if threads < 2 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<U>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for handle in handles {
            match handle.join() {
                Ok(mut part) => out.append(&mut part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// `items.iter().map(f).collect()` for a few items of uneven size (virtual hosts: the
/// `*` one holds every route, the others a share each): each thread takes the next item
/// when it is done with one, so one large item does not leave the other cores idle the
/// way contiguous chunks would.
pub(crate) fn map_uneven<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(MAX_THREADS)
        .min(items.len());
    if threads < 2 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(index) else {
                return done;
            };
            done.push((index, f(item)));
        }
    };
    let mut all: Vec<(usize, U)> = std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut all = work();
        for handle in handles {
            match handle.join() {
                Ok(mut part) => all.append(&mut part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    all.sort_unstable_by_key(|(index, _)| *index);
    all.into_iter().map(|(_, u)| u).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_input_order_at_every_size() {
        for n in [0, 1, 511, 1024, 5000] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = super::map(&items, super::SMALL_ITEMS, |i| i * 2);
            assert_eq!(super::map_uneven(&items, |i| i * 2), doubled);
            assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }
}
