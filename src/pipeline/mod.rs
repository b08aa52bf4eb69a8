//! The revision pipeline: source -> config -> translate -> snapshot store.
//!
//! One task owns the pipeline and does one thing at a time, in the order things happened:
//! poll the source (on its interval, at once when woken by a file event or a webhook,
//! with backoff while it fails), and for each new revision parse and validate it,
//! translate it with the current endpoints, and publish the snapshot. An endpoints change
//! re-translates the applied config. Every revision attempt, accepted or not, is recorded
//! in [`Status`] for the admin API and logged as one line a person can follow.
//!
//! A revision that fails at any stage changes nothing that is served: the store keeps
//! the last good snapshot (DESIGN.md, "Rollback safety").

mod missing;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, Diagnostic};
use crate::endpoints::Endpoints;
use crate::snapshot::{Snapshot, Store};
use crate::source::{Poll, Revision, Source};
use crate::translate;

pub use status::{
    Attempt, HISTORY, Outcome, RevisionMeta, SourceError, StageTimings, Status, epoch_seconds,
};

/// The longest wait between two polls of a failing source.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The revision being served, kept to re-translate when endpoints change (its config is
/// [`Incremental::applied`]).
struct Applied {
    revision: String,
    /// The endpoints the latest snapshot of this revision was built with.
    endpoints: Arc<Endpoints>,
}

/// Turns revisions into published snapshots and remembers what became of each.
pub struct Pipeline {
    store: Arc<Store>,
    options: config::Options,
    status: watch::Sender<Arc<Status>>,
    endpoints: Option<watch::Receiver<Arc<Endpoints>>>,
    applied: Option<Applied>,
    /// Parse, validation and translation results kept between revisions. `None` only
    /// while a build has it (or after a build panicked, which starts it afresh).
    incremental: Option<Box<Incremental>>,
    /// First delay after a failed poll; doubles up to [`MAX_BACKOFF`].
    retry: Duration,
}

/// What one revision leaves for the next to reuse, so that a commit that changes one
/// file of a hundred costs about one file's work (issue 4): each file's parse and
/// Mapping validations ([`config::Cache`]) and each route's and cluster's encoding
/// ([`translate::Cache`]). Both are plain values the pipeline owns and passes in; the
/// result is always equal to a cold build of the same revision.
///
/// A revision that changes only Mappings, after one with no error, goes the steady-state
/// way: the last accepted config is edited in place ([`config::Cache::load_mappings`])
/// and only what the changed Mappings touch is translated again
/// ([`translate::Cache::translate_delta`]); anything else is loaded and translated
/// whole, with the memos above.
#[derive(Debug, Default)]
pub struct Incremental {
    config: config::Cache,
    translate: translate::Cache,
    /// The config of the last accepted build: what is served, and the base the next
    /// change of Mappings is applied to. Shared with [`Built`]; a build edits it in
    /// place, so the copy a [`Built`] hands out should be dropped before the next build
    /// (else that build copies it first).
    applied: Option<Arc<Config>>,
    /// The missing-Service warnings of `applied`.
    missing: Option<missing::Missing>,
}

/// What building one revision gave.
#[derive(Debug)]
pub struct Built {
    /// The config and the snapshot to publish, or why the revision is not served.
    pub result: Result<(Arc<Config>, Snapshot), Outcome>,
    /// Warnings (and, when rejected, every diagnostic that is not an error).
    pub warnings: Vec<Diagnostic>,
    /// Where the time went (`read` is the caller's).
    pub timings: StageTimings,
    /// Which way it was built.
    pub way: Way,
}

/// Which way [`Incremental::build`] built a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Loaded and translated whole (reusing unchanged files' parses and memoised
    /// routes and clusters).
    Whole,
    /// As a change of Mappings to the applied config. `translated_whole` when the
    /// translation still ran whole (other endpoints, a cluster name the change would
    /// make collide).
    Mappings { translated_whole: bool },
}

impl Pipeline {
    /// A pipeline that publishes into `store`. `endpoints` carries endpoint updates
    /// (`None`: the endpoints never change, as with DNS-resolved clusters).
    pub fn new(
        store: Arc<Store>,
        options: config::Options,
        endpoints: Option<watch::Receiver<Arc<Endpoints>>>,
        retry: Duration,
    ) -> Pipeline {
        Pipeline {
            store,
            options,
            status: watch::Sender::new(Arc::new(Status::default())),
            endpoints,
            applied: None,
            incremental: Some(Box::default()),
            retry,
        }
    }

    /// What the pipeline has done so far; updated after every attempt.
    pub fn status(&self) -> watch::Receiver<Arc<Status>> {
        self.status.subscribe()
    }

    /// Whether some revision has been published by this pipeline.
    pub fn has_applied(&self) -> bool {
        self.applied.is_some()
    }

    /// Polls `source` once and applies what it found.
    ///
    /// # Errors
    ///
    /// The source's error, as text (also recorded in the status).
    pub async fn poll<S: Source + ?Sized>(&mut self, source: Box<S>) -> (Box<S>, Result<(), String>)
    where
        Box<S>: Send + 'static,
    {
        let started = Instant::now();
        let polled = tokio::task::spawn_blocking(move || {
            let mut source = source;
            let result = source.poll();
            (source, result)
        })
        .await;
        let (source, result) = match polled {
            Ok(done) => done,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        let read = started.elapsed();
        match result {
            Ok(Poll::Unchanged) => {
                self.status.send_modify(|s| Arc::make_mut(s).source_ok());
                (source, Ok(()))
            }
            Ok(Poll::Changed(revision)) => {
                self.status.send_modify(|s| Arc::make_mut(s).source_ok());
                self.apply(*revision, read).await;
                (source, Ok(()))
            }
            Err(e) => {
                let message = error_chain(&e);
                self.status.send_modify(|s| {
                    Arc::make_mut(s).source_failed(message.clone(), SystemTime::now());
                });
                (source, Err(message))
            }
        }
    }

    /// Parses, validates, translates and publishes one revision; records the attempt.
    pub async fn apply(&mut self, revision: Revision, read: Duration) -> Attempt {
        let endpoints = self.current_endpoints();
        let used = endpoints.clone();
        let options = self.options.clone();
        let meta = revision.meta.clone();
        let mut incremental = self.incremental.take().unwrap_or_default();
        let previous = self.store.latest();
        let (built, incremental) = tokio::task::spawn_blocking(move || {
            let built = incremental.build(revision, &options, &endpoints, previous.as_deref());
            (built, incremental)
        })
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
        self.incremental = Some(incremental);
        let mut timings = built.timings;
        timings.read = read;
        let outcome = match built.result {
            Err(outcome) => outcome,
            Ok((config, snapshot)) => {
                // The incremental state keeps the config; a second reference here would
                // make the next build copy it.
                drop(config);
                let started = Instant::now();
                let published = self.store.publish(snapshot).await;
                timings.publish += started.elapsed();
                match published {
                    Ok(snapshot) => {
                        self.applied = Some(Applied {
                            revision: meta.id.clone(),
                            endpoints: used,
                        });
                        Outcome::Accepted {
                            snapshot: snapshot.version().to_owned(),
                        }
                    }
                    Err(e) => {
                        // What the incremental state holds is not what is served.
                        if let Some(incremental) = &mut self.incremental {
                            incremental.forget();
                        }
                        Outcome::Failed {
                            reason: format!("the snapshot store refused it: {e}"),
                        }
                    }
                }
            }
        };
        let attempt = Attempt {
            revision: meta,
            outcome,
            warnings: built.warnings,
            timings,
            at: epoch_seconds(SystemTime::now()),
        };
        log_attempt(&attempt);
        self.status
            .send_modify(|s| Arc::make_mut(s).record(attempt.clone()));
        attempt
    }

    /// Publishes the applied config with the current endpoints. Only the
    /// ClusterLoadAssignments are rebuilt (issue 5): every other resource of the latest
    /// snapshot is reused as encoded, so Envoy gets an EDS update and no CDS, LDS or RDS
    /// churn; nothing is published when no assignment changed.
    pub async fn endpoints_changed(&mut self) {
        let Some(applied) = &self.applied else {
            return;
        };
        let Some(config) = self.incremental.as_ref().and_then(|i| i.applied()) else {
            return;
        };
        let endpoints = self.current_endpoints();
        let revision = applied.revision.clone();
        let since = applied.endpoints.clone();
        let latest = self
            .store
            .latest()
            .filter(|s| s.revision() == applied.revision);
        let used = endpoints.clone();
        let snapshot = tokio::task::spawn_blocking(move || match latest {
            Some(latest) => {
                let changed = translate::changed_assignments(&config, &since, &endpoints);
                latest.with_changed_assignments(endpoints.generation, &changed)
            }
            // The store serves something else (a persisted snapshot): build it whole.
            None => {
                let resources = translate::translate(&config, &endpoints);
                Snapshot::new(&revision, endpoints.generation, &resources).map(Some)
            }
        })
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
        let published = match snapshot {
            Ok(Some(snapshot)) => match self.store.publish(snapshot).await {
                Ok(s) => {
                    tracing::debug!(version = s.version(), "endpoints published");
                    true
                }
                Err(e) => {
                    tracing::error!("endpoints not published: {e}");
                    false
                }
            },
            Ok(None) => true,
            Err(e) => {
                tracing::error!("cannot build a snapshot for new endpoints: {e}");
                false
            }
        };
        if published && let Some(applied) = &mut self.applied {
            applied.endpoints = used;
        }
    }

    fn current_endpoints(&self) -> Arc<Endpoints> {
        self.endpoints
            .as_ref()
            .map_or_else(Arc::default, |rx| rx.borrow().clone())
    }

    /// Polls `source` until `shutdown`: on its interval, when `wake` fires (debounced),
    /// and with jittered exponential backoff while it fails. Endpoint changes are applied
    /// as they come.
    pub async fn run<S: Source + ?Sized>(
        mut self,
        mut source: Box<S>,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) where
        Box<S>: Send + 'static,
    {
        let schedule = source.schedule();
        let mut failures = 0u32;
        let mut next_poll = tokio::time::Instant::now() + schedule.interval;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                changed = endpoints_changed(&mut self.endpoints) => {
                    if changed {
                        self.endpoints_changed().await;
                    } else {
                        self.endpoints = None;
                    }
                    continue;
                }
                () = wake.notified() => debounce(&wake, schedule.debounce).await,
                () = tokio::time::sleep_until(next_poll) => {}
            }
            let (returned, result) = self.poll(source).await;
            source = returned;
            let delay = match result {
                Ok(()) => {
                    failures = 0;
                    schedule.interval
                }
                Err(message) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(self.retry, failures, schedule.interval);
                    tracing::warn!(
                        source = source.describe(),
                        failures,
                        "{message}; still serving the last good revision, retrying in {delay:?}"
                    );
                    delay
                }
            };
            next_poll = tokio::time::Instant::now() + delay;
        }
    }
}

/// Resolves when `endpoints` changed (`true`) or its sender is gone (`false`); never
/// when there is no receiver.
async fn endpoints_changed(endpoints: &mut Option<watch::Receiver<Arc<Endpoints>>>) -> bool {
    match endpoints {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Waits until `quiet` passes with no further wake-up.
async fn debounce(wake: &Notify, quiet: Duration) {
    if quiet.is_zero() {
        return;
    }
    // Bounded, so a source that never stops firing is still read.
    for _ in 0..50 {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(quiet) => return,
        }
    }
}

/// The delay before retry number `failures` (1-based): `first * 2^(failures-1)`, capped
/// at [`MAX_BACKOFF`] (or the poll interval, when that is longer), then scaled by a
/// random factor in [0.5, 1) so replicas that failed together do not retry in lockstep.
pub fn backoff(first: Duration, failures: u32, interval: Duration) -> Duration {
    let cap = MAX_BACKOFF.max(interval);
    let exponential = first
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap);
    exponential.mul_f64(0.5 + 0.5 * jitter())
}

/// A number in [0, 1) that differs between calls and processes; not for cryptography.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

// === impl Incremental ===

impl Incremental {
    /// Parses, validates, translates and encodes `revision` into a snapshot, reusing
    /// what earlier calls worked out and, for the resources whose bytes are unchanged,
    /// `previous`'s hashes. The result equals a cold build of the same revision.
    pub fn build(
        &mut self,
        revision: Revision,
        options: &config::Options,
        endpoints: &Endpoints,
        previous: Option<&Snapshot>,
    ) -> Built {
        if revision.problems.is_empty()
            && let Some(built) =
                self.build_changed_mappings(&revision, options, endpoints, previous)
        {
            return built;
        }
        let mut timings = StageTimings::default();
        let started = Instant::now();
        let (mut outcome, reuse) = self.config.load(&revision.files, options);
        drop(revision.files);
        outcome.diagnostics.extend(revision.problems);
        outcome.diagnostics.sort();
        timings.parse = started.elapsed();
        tracing::debug!(
            revision = %revision.meta.id,
            parsed = reuse.parsed,
            reused = reuse.reused,
            "files parsed"
        );
        for d in &outcome.diagnostics {
            if d.is_error() {
                tracing::error!(revision = %revision.meta.id, "{d}");
            } else {
                tracing::warn!(revision = %revision.meta.id, "{d}");
            }
        }
        let (config, mut diagnostics) = match outcome.into_result() {
            Ok(accepted) => accepted,
            Err(rejected) => {
                let (errors, warnings) =
                    rejected.diagnostics.into_iter().partition(|d| d.is_error());
                return Built {
                    result: Err(Outcome::Rejected { errors }),
                    warnings,
                    timings,
                    way: Way::Whole,
                };
            }
        };
        // Mappings whose Service has no EndpointSlice: served, with a warning (issue 5).
        let missing = missing::Missing::new(&config, endpoints);
        for d in missing.diagnostics() {
            tracing::warn!(revision = %revision.meta.id, "{d}");
            diagnostics.push(d.clone());
        }
        let started = Instant::now();
        let (resources, reuse) = self.translate.translate(&config, endpoints);
        timings.translate = started.elapsed();
        tracing::debug!(
            revision = %revision.meta.id,
            routes_built = reuse.routes_built,
            clusters_built = reuse.clusters_built,
            "translated"
        );
        let started = Instant::now();
        let snapshot =
            Snapshot::from_encoded(&revision.meta.id, endpoints.generation, resources, previous);
        timings.publish = started.elapsed();
        let result = match snapshot {
            Ok(snapshot) => {
                let config = Arc::new(config);
                self.applied = Some(config.clone());
                self.missing = Some(missing);
                Ok((config, snapshot))
            }
            Err(e) => {
                // The caches moved on to a revision that is not served.
                self.forget();
                Err(Outcome::Failed {
                    reason: format!("cannot build a snapshot: {e}"),
                })
            }
        };
        Built {
            result,
            warnings: diagnostics,
            timings,
            way: Way::Whole,
        }
    }

    /// The steady state (issue 4): `revision` as a change of Mappings to the applied
    /// config, when it is one and the last build had no error; `None` otherwise, having
    /// changed nothing but the parse cache.
    fn build_changed_mappings(
        &mut self,
        revision: &Revision,
        options: &config::Options,
        endpoints: &Endpoints,
        previous: Option<&Snapshot>,
    ) -> Option<Built> {
        let mut timings = StageTimings::default();
        let started = Instant::now();
        let applied = self.applied.as_mut()?;
        let config = Arc::make_mut(applied);
        let delta = self
            .config
            .load_mappings(&revision.files, options, config)?;
        timings.parse = started.elapsed();
        let id = &revision.meta.id;
        tracing::debug!(
            revision = %id,
            parsed = delta.reuse.parsed,
            reused = delta.reuse.reused,
            removed = delta.removed.len(),
            added = delta.added.len(),
            "files parsed; only Mappings changed"
        );
        let mut warnings = delta.diagnostics;
        for d in &warnings {
            tracing::warn!(revision = %id, "{d}");
        }
        let kept = self
            .missing
            .as_mut()
            .and_then(|m| m.update(&delta.removed, &delta.added, endpoints));
        if kept.is_none() {
            self.missing = Some(missing::Missing::new(config, endpoints));
        }
        for d in self.missing.iter().flat_map(missing::Missing::diagnostics) {
            tracing::warn!(revision = %id, "{d}");
            warnings.push(d.clone());
        }
        let started = Instant::now();
        let translated =
            self.translate
                .translate_delta(config, &delta.removed, &delta.added, endpoints);
        let translated_whole = translated.is_none();
        let (resources, reuse) =
            translated.unwrap_or_else(|| self.translate.translate(config, endpoints));
        timings.translate = started.elapsed();
        tracing::debug!(
            revision = %id,
            routes_built = reuse.routes_built,
            clusters_built = reuse.clusters_built,
            "translated"
        );
        let started = Instant::now();
        let snapshot = Snapshot::from_encoded(id, endpoints.generation, resources, previous);
        timings.publish = started.elapsed();
        let result = match snapshot {
            Ok(snapshot) => Ok((applied.clone(), snapshot)),
            Err(e) => {
                self.forget();
                Err(Outcome::Failed {
                    reason: format!("cannot build a snapshot: {e}"),
                })
            }
        };
        Some(Built {
            result,
            warnings,
            timings,
            way: Way::Mappings { translated_whole },
        })
    }

    /// The config of the last accepted build.
    pub fn applied(&self) -> Option<Arc<Config>> {
        self.applied.clone()
    }

    /// Forgets the applied config and what depends on it (the parse and translation
    /// memos stay, as they check their own inputs): the next build is a whole one.
    pub fn forget(&mut self) {
        self.applied = None;
        self.missing = None;
        self.config.forget_base();
        self.translate.forget_steady();
    }
}

/// One line per revision: what, from where, the outcome and where the time went.
fn log_attempt(attempt: &Attempt) {
    let t = &attempt.timings;
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let revision = &attempt.revision;
    let subject = revision
        .message
        .as_deref()
        .and_then(|m| m.lines().next())
        .unwrap_or_default();
    match &attempt.outcome {
        Outcome::Accepted { snapshot } => tracing::info!(
            revision = %revision.id,
            source = %revision.source,
            subject,
            snapshot = %snapshot,
            warnings = attempt.warnings.len(),
            read_ms = ms(t.read),
            parse_ms = ms(t.parse),
            translate_ms = ms(t.translate),
            publish_ms = ms(t.publish),
            "revision accepted"
        ),
        Outcome::Rejected { errors } => tracing::error!(
            revision = %revision.id,
            source = %revision.source,
            subject,
            errors = errors.len(),
            first = %errors.first().map(ToString::to_string).unwrap_or_default(),
            "revision rejected; still serving the last good revision"
        ),
        Outcome::Failed { reason } => tracing::error!(
            revision = %revision.id,
            source = %revision.source,
            subject,
            "revision failed: {reason}; still serving the last good revision"
        ),
    }
}

/// An error with its causes, `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // `#[error(transparent)]` repeats the inner message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below_the_nominal_delay() {
        let first = Duration::from_secs(1);
        let interval = Duration::from_secs(15);
        for failures in 1..=10u32 {
            let nominal = first.saturating_mul(1 << (failures - 1)).min(MAX_BACKOFF);
            let delay = backoff(first, failures, interval);
            assert!(
                delay >= nominal / 2 && delay < nominal,
                "{failures}: {delay:?}"
            );
        }
        assert!(backoff(first, u32::MAX, interval) <= MAX_BACKOFF);
        // A long interval is not cut short by the cap.
        let hourly = Duration::from_secs(3600);
        assert!(backoff(Duration::from_secs(3600), 3, hourly) >= hourly / 2);
    }
}
