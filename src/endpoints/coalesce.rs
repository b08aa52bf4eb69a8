//! Turns a burst of EndpointSlice events into one publish.
//!
//! A rolling update of a 100-pod Deployment is hundreds of slice events within a second;
//! publishing each would rebuild and push a snapshot per pod. Instead the first event
//! after a quiet period opens a window, events inside it only mark their Service dirty,
//! and the window's end publishes every dirty Service at once. The window starts at the
//! first event (it is not a debounce that a steady stream could postpone forever), so
//! no change waits longer than one window.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::state::ServiceRef;

/// The longest window the issue allows: a change reaches Envoy's control plane within
/// 50 ms of its event.
pub const MAX_WINDOW: Duration = Duration::from_millis(50);

/// Dirty Services and the deadline by which they must be published.
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    deadline: Option<Instant>,
    dirty: BTreeSet<ServiceRef>,
}

impl Coalescer {
    /// A coalescer with `window` (capped at [`MAX_WINDOW`]).
    pub fn new(window: Duration) -> Coalescer {
        Coalescer {
            window: window.min(MAX_WINDOW),
            deadline: None,
            dirty: BTreeSet::new(),
        }
    }

    /// Marks Services changed at `now`; the first mark of a window sets its deadline.
    pub fn mark(&mut self, services: impl IntoIterator<Item = ServiceRef>, now: Instant) {
        let before = self.dirty.len();
        self.dirty.extend(services);
        if self.dirty.len() > before && self.deadline.is_none() {
            self.deadline = Some(now + self.window);
        }
    }

    /// When the open window ends, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether some Service waits to be published.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Closes the window: the dirty Services, to publish now.
    pub fn take(&mut self) -> BTreeSet<ServiceRef> {
        self.deadline = None;
        std::mem::take(&mut self.dirty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> ServiceRef {
        ServiceRef {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_window_that_starts_at_its_first_event() {
        let mut c = Coalescer::new(Duration::from_millis(20));
        let start = Instant::now();
        assert_eq!(c.deadline(), None);
        c.mark([svc("a")], Instant::now());
        for name in ["b", "a", "c"] {
            tokio::time::advance(Duration::from_millis(5)).await;
            c.mark([svc(name)], Instant::now());
        }
        // Later events do not push the deadline back.
        assert_eq!(c.deadline(), Some(start + Duration::from_millis(20)));
        let taken: Vec<String> = c.take().into_iter().map(|s| s.name).collect();
        assert_eq!(taken, ["a", "b", "c"]);
        assert!(!c.is_dirty());
        assert_eq!(c.deadline(), None);
        tokio::time::advance(Duration::from_millis(100)).await;
        c.mark([svc("d")], Instant::now());
        assert_eq!(c.deadline(), Some(start + Duration::from_millis(135)));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_marked_opens_no_window_and_the_window_is_capped() {
        let mut c = Coalescer::new(Duration::from_secs(5));
        c.mark([], Instant::now());
        assert_eq!(c.deadline(), None);
        c.mark([svc("a")], Instant::now());
        assert_eq!(c.deadline(), Some(Instant::now() + MAX_WINDOW));
    }
}
