//! The Kubernetes endpoint watcher: Services and `discovery.k8s.io/v1` EndpointSlices,
//! watched with `kube`'s runtime watcher, merged into [`Endpoints`] and published on a
//! `watch` channel, one value per coalesced burst.
//!
//! Failure handling is the watcher's own (kube-runtime): a dropped connection resumes
//! the watch from the last resource version seen; a `410 Gone` (watch or list) and any
//! other error re-list, with jittered exponential backoff (0.8 s doubling to 30 s, reset
//! after 2 min of quiet). What this module adds is that a re-list never drops an
//! endpoint from Envoy: the listed objects are buffered and replace the old ones only
//! once the listing is complete (`InitDone`), and only the difference is published.
//!
//! Start reading at [`spawn_watcher`].

pub mod convert;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event};
use ::kube::{Api, Client};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::coalesce::Coalescer;
use super::state::{Scope, ServicePorts, ServiceRef, Slice, State};
use super::{Endpoints, ServiceKey};

/// What to watch and how fast to publish.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Namespaces to watch; empty watches all (which needs a ClusterRole).
    pub namespaces: Vec<String>,
    /// How long a burst of events is gathered before one publish; at most
    /// [`super::coalesce::MAX_WINDOW`].
    pub window: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            namespaces: Vec::new(),
            window: Duration::from_millis(20),
        }
    }
}

/// An object from one of the watch streams.
enum Object {
    Service(Box<Service>),
    Slice(Box<EndpointSlice>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Services,
    Slices,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Services => "Services",
            Kind::Slices => "EndpointSlices",
        }
    }
}

type Tagged = (usize, Result<Event<Object>, watcher::Error>);
type Streams = futures::stream::SelectAll<Pin<Box<dyn Stream<Item = Tagged> + Send>>>;

/// One watch stream's identity and listing progress.
struct Source {
    kind: Kind,
    scope: Scope,
    /// Objects of a listing in progress; applied at its `InitDone`.
    listing: Option<Listing>,
    /// Whether a listing ever completed.
    listed: bool,
}

enum Listing {
    Services(Vec<(ServiceRef, ServicePorts)>),
    Slices(Vec<(String, String, Slice)>),
}

/// Starts watching and returns the receiver of the endpoints.
///
/// The receiver holds generation 0 (no endpoints) until every watch has listed once;
/// from then on each new value is one coalesced change with the generation bumped. Only
/// a change of some Service's endpoints publishes; a re-list that finds what was known
/// publishes nothing.
///
/// # Cancellation
///
/// The watcher stops when `shutdown` is cancelled or every receiver is dropped.
pub fn spawn_watcher(
    client: Client,
    config: WatchConfig,
    shutdown: CancellationToken,
) -> watch::Receiver<Arc<Endpoints>> {
    let (tx, rx) = watch::channel(Arc::new(Endpoints::default()));
    let scopes: Vec<Scope> = if config.namespaces.is_empty() {
        vec![Scope::All]
    } else {
        let mut ns = config.namespaces.clone();
        ns.sort();
        ns.dedup();
        ns.into_iter().map(Scope::Namespace).collect()
    };
    let mut sources = Vec::new();
    let mut streams: Streams = futures::stream::SelectAll::new();
    for scope in scopes {
        for kind in [Kind::Services, Kind::Slices] {
            let id = sources.len();
            streams.push(open(&client, kind, &scope, id));
            sources.push(Source {
                kind,
                scope: scope.clone(),
                listing: None,
                listed: false,
            });
        }
    }
    let task = Watcher {
        state: State::default(),
        sources,
        coalescer: Coalescer::new(config.window),
        current: Endpoints::default(),
        tx,
    };
    tokio::spawn(task.run(streams, shutdown));
    rx
}

fn open(
    client: &Client,
    kind: Kind,
    scope: &Scope,
    id: usize,
) -> Pin<Box<dyn Stream<Item = Tagged> + Send>> {
    match kind {
        Kind::Services => {
            let api: Api<Service> = match scope {
                Scope::All => Api::all(client.clone()),
                Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
            };
            watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .map(move |r| (id, r.map(|e| tag(e, |o| Object::Service(Box::new(o))))))
                .boxed()
        }
        Kind::Slices => {
            let api: Api<EndpointSlice> = match scope {
                Scope::All => Api::all(client.clone()),
                Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
            };
            // Only slices that belong to a Service.
            let config = watcher::Config::default().labels(convert::SERVICE_NAME_LABEL);
            watcher::watcher(api, config)
                .default_backoff()
                .map(move |r| (id, r.map(|e| tag(e, |o| Object::Slice(Box::new(o))))))
                .boxed()
        }
    }
}

/// One watch event with its object wrapped, so both kinds share one stream.
fn tag<K>(event: Event<K>, wrap: impl FnOnce(K) -> Object) -> Event<Object> {
    match event {
        Event::Apply(o) => Event::Apply(wrap(o)),
        Event::Delete(o) => Event::Delete(wrap(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(wrap(o)),
        Event::InitDone => Event::InitDone,
    }
}

/// The watcher task's state: the single writer of [`Endpoints`].
struct Watcher {
    state: State,
    sources: Vec<Source>,
    coalescer: Coalescer,
    current: Endpoints,
    tx: watch::Sender<Arc<Endpoints>>,
}

impl Watcher {
    async fn run(mut self, mut streams: Streams, shutdown: CancellationToken) {
        let mut synced = false;
        loop {
            // Far enough that the branch below is never taken without a deadline.
            let deadline = self
                .coalescer
                .deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = self.tx.closed() => return,
                () = tokio::time::sleep_until(deadline), if synced && self.coalescer.is_dirty() => {
                    self.publish();
                }
                item = streams.next() => {
                    let Some((id, result)) = item else {
                        tracing::error!("every Kubernetes watch ended; endpoints stay as they are");
                        return;
                    };
                    self.handle(id, result);
                    if !synced && self.sources.iter().all(|s| s.listed) {
                        synced = true;
                        let (services, slices) = self.state.len();
                        tracing::info!(services, slices, "Kubernetes endpoints listed");
                        self.publish();
                    }
                }
            }
        }
    }

    fn handle(&mut self, id: usize, result: Result<Event<Object>, watcher::Error>) {
        let Some(source) = self.sources.get_mut(id) else {
            return;
        };
        let event = match result {
            Ok(event) => event,
            Err(error) => {
                // The watcher retries by itself (after a backoff); what was known stays.
                tracing::warn!(
                    scope = ?source.scope,
                    "watching {} failed, retrying: {error}",
                    source.kind.as_str()
                );
                return;
            }
        };
        let now = Instant::now();
        match event {
            Event::Init => {
                source.listing = Some(match source.kind {
                    Kind::Services => Listing::Services(Vec::new()),
                    Kind::Slices => Listing::Slices(Vec::new()),
                });
            }
            Event::InitApply(object) => match (&mut source.listing, object) {
                (Some(Listing::Services(list)), Object::Service(o)) => {
                    list.extend(skip_logged(convert::service(&o)));
                }
                (Some(Listing::Slices(list)), Object::Slice(o)) => {
                    list.extend(skip_logged(convert::slice(&o)));
                }
                _ => {}
            },
            Event::InitDone => {
                source.listed = true;
                let touched = match source.listing.take() {
                    Some(Listing::Services(list)) => {
                        self.state.replace_services(&source.scope, list)
                    }
                    Some(Listing::Slices(list)) => self.state.replace_slices(&source.scope, list),
                    None => Default::default(),
                };
                tracing::debug!(
                    kind = source.kind.as_str(),
                    changed = touched.len(),
                    "listing complete"
                );
                self.coalescer.mark(touched, now);
            }
            Event::Apply(Object::Service(o)) => {
                if let Some((svc, ports)) = skip_logged(convert::service(&o)) {
                    let touched = self.state.apply_service(svc, ports);
                    self.coalescer.mark(touched, now);
                }
            }
            Event::Delete(Object::Service(o)) => {
                if let Some((svc, _)) = skip_logged(convert::service(&o)) {
                    let touched = self.state.delete_service(&svc);
                    self.coalescer.mark(touched, now);
                }
            }
            Event::Apply(Object::Slice(o)) => match convert::slice(&o) {
                Ok((ns, name, slice)) => {
                    let touched = self.state.apply_slice(&ns, &name, slice);
                    self.coalescer.mark(touched, now);
                }
                Err(skip) => {
                    tracing::warn!("{skip}; slice left out");
                    // A slice that turned bad stops counting.
                    if let (Some(ns), Some(name)) = (&o.metadata.namespace, &o.metadata.name) {
                        let touched = self.state.delete_slice(ns, name);
                        self.coalescer.mark(touched, now);
                    }
                }
            },
            Event::Delete(Object::Slice(o)) => {
                if let (Some(ns), Some(name)) = (&o.metadata.namespace, &o.metadata.name) {
                    let touched = self.state.delete_slice(ns, name);
                    self.coalescer.mark(touched, now);
                }
            }
        }
    }

    /// Re-resolves the dirty Services and publishes a new generation if anything changed
    /// (always for the first one, which marks the end of the initial listing).
    fn publish(&mut self) {
        let dirty = self.coalescer.take();
        let first = self.current.generation == 0;
        let mut changed = false;
        for service in &dirty {
            let fresh: BTreeMap<ServiceKey, Vec<super::Endpoint>> =
                self.state.resolve(service).into_iter().collect();
            let old_keys: Vec<ServiceKey> = keys_of(&self.current, service);
            for key in old_keys {
                if !fresh.contains_key(&key) {
                    self.current.services.remove(&key);
                    changed = true;
                }
            }
            for (key, endpoints) in fresh {
                if self.current.services.get(&key) != Some(&endpoints) {
                    self.current.services.insert(key, endpoints);
                    changed = true;
                }
            }
        }
        if !(changed || first) {
            return;
        }
        self.current.generation += 1;
        tracing::debug!(
            generation = self.current.generation,
            services = dirty.len(),
            "endpoints changed"
        );
        self.tx.send_replace(Arc::new(self.current.clone()));
    }
}

/// The keys `endpoints` holds for one Service (ServiceKey sorts by namespace, name, port).
fn keys_of(endpoints: &Endpoints, service: &ServiceRef) -> Vec<ServiceKey> {
    let from = ServiceKey {
        namespace: service.namespace.clone(),
        name: service.name.clone(),
        port: String::new(),
    };
    endpoints
        .services
        .range(from..)
        .map(|(k, _)| k)
        .take_while(|k| k.namespace == service.namespace && k.name == service.name)
        .cloned()
        .collect()
}

fn skip_logged<T>(result: Result<T, convert::Skip>) -> Option<T> {
    match result {
        Ok(t) => Some(t),
        Err(skip) => {
            tracing::warn!("{skip}; left out");
            None
        }
    }
}
