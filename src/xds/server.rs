//! The ADS streams: one task per stream, driving a [`Sotw`] or [`Delta`] machine
//! (`transport` hands them the decoded requests and sends what they reply).
//!
//! Each stream's task selects over the shutdown token, the stream's send buffer, the
//! node's requests and the store's [`Targets`] channel. It computes a response only
//! once the bounded send buffer has a free slot, so a node that never reads holds at
//! most `send_buffer` responses and stalls nobody else; when it reads again it gets the
//! state of that moment, not a backlog.

use std::collections::VecDeque;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::Instrument;

use super::Config;
use super::cache::ResponseCache;
use super::delta::Delta;
use super::names::NameSets;
use super::sotw::Sotw;
use super::wire::{Reply, Requests};
use crate::snapshot::{Protocol, Snapshot, Store, StreamHandle, Targets};

/// The ADS service over a [`Store`].
#[derive(Debug, Clone)]
pub(crate) struct AdsService {
    pub(crate) store: Arc<Store>,
    pub(crate) config: Config,
    pub(crate) shutdown: CancellationToken,
    /// Fleet-wide slots for responses in flight ([`Config::max_in_flight`]).
    pub(crate) in_flight: Arc<Semaphore>,
    /// SotW response bodies shared across streams.
    pub(crate) cache: Arc<ResponseCache>,
    /// SotW subscription name sets shared across streams.
    pub(crate) name_sets: Arc<NameSets>,
}

/// What the stream loop needs of a protocol machine.
trait Machine: Send + 'static {
    type Request: Send + 'static;
    fn handle(&self) -> &StreamHandle;
    fn set_target(&mut self, target: Option<Arc<Snapshot>>);
    fn on_request(&mut self, req: Self::Request) -> Result<(), Status>;
    fn next_response(&mut self) -> Option<Reply>;
    fn report_sync(&mut self);
    /// Whether the request answers a response (carries its nonce): an ACK or a NACK.
    fn answers(req: &Self::Request) -> bool;
}

impl Machine for Sotw {
    type Request = DiscoveryRequest;
    fn handle(&self) -> &StreamHandle {
        Sotw::handle(self)
    }
    fn set_target(&mut self, target: Option<Arc<Snapshot>>) {
        Sotw::set_target(self, target);
    }
    fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), Status> {
        Sotw::on_request(self, req)
    }
    fn next_response(&mut self) -> Option<Reply> {
        Sotw::next_response(self)
    }
    fn report_sync(&mut self) {
        Sotw::report_sync(self);
    }
    fn answers(req: &DiscoveryRequest) -> bool {
        !req.response_nonce.is_empty()
    }
}

impl Machine for Delta {
    type Request = DeltaDiscoveryRequest;
    fn handle(&self) -> &StreamHandle {
        Delta::handle(self)
    }
    fn set_target(&mut self, target: Option<Arc<Snapshot>>) {
        Delta::set_target(self, target);
    }
    fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Status> {
        Delta::on_request(self, req)
    }
    fn next_response(&mut self) -> Option<Reply> {
        Delta::next_response(self).map(|response| Reply::message(&response))
    }
    fn report_sync(&mut self) {
        Delta::report_sync(self);
    }
    fn answers(req: &DeltaDiscoveryRequest) -> bool {
        !req.response_nonce.is_empty()
    }
}

// === impl AdsService ===

/// A stream's send buffer, read by the response body.
pub(crate) type Replies = mpsc::Receiver<Result<Reply, Status>>;

impl AdsService {
    /// Starts a `StreamAggregatedResources` stream over the request body.
    pub(crate) fn open_sotw(&self, body: tonic::body::Body) -> Replies {
        let limits = self.config.limits();
        let (cache, name_sets) = (self.cache.clone(), self.name_sets.clone());
        self.spawn_stream(
            self.inbound(body),
            Protocol::Sotw,
            |req: &DiscoveryRequest| req.node.clone(),
            move |handle| Sotw::new(handle, limits, cache, name_sets),
        )
    }

    /// Starts a `DeltaAggregatedResources` stream over the request body.
    pub(crate) fn open_delta(&self, body: tonic::body::Body) -> Replies {
        let limits = self.config.limits();
        self.spawn_stream(
            self.inbound(body),
            Protocol::Delta,
            |req: &DeltaDiscoveryRequest| req.node.clone(),
            move |handle| Delta::new(handle, limits),
        )
    }

    fn inbound<T: prost::Message + Default + 'static>(
        &self,
        body: tonic::body::Body,
    ) -> Requests<T> {
        Requests::new(body, self.config.max_request_bytes)
    }

    /// Starts the stream's task and returns the receiving end of its send buffer.
    fn spawn_stream<M: Machine>(
        &self,
        inbound: Requests<M::Request>,
        protocol: Protocol,
        node_of: fn(&M::Request) -> Option<Node>,
        machine: impl FnOnce(StreamHandle) -> M + Send + 'static,
    ) -> Replies
    where
        M::Request: prost::Message + Default,
    {
        let (tx, rx) = mpsc::channel(self.config.send_buffer.max(1));
        let store = self.store.clone();
        let shutdown = self.shutdown.clone();
        let in_flight = self.in_flight.clone();
        let first_request_timeout = self.config.first_request_timeout;
        let span = tracing::info_span!("xds stream", ?protocol, node.id = tracing::field::Empty);
        tokio::spawn(
            async move {
                let mut inbound = inbound;
                let first = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    first = tokio::time::timeout(first_request_timeout, inbound.next()) => first,
                };
                let first = match first {
                    Ok(Some(Ok(req))) => req,
                    Ok(Some(Err(status))) => {
                        // An undecodable or oversized request: the node hears why (on a
                        // reset stream nobody reads it, which costs nothing).
                        tracing::debug!(%status, "stream failed before its first request");
                        let _ = tx.try_send(Err(status));
                        return;
                    }
                    Ok(None) => return,
                    Err(_) => {
                        let _ = tx.try_send(Err(Status::deadline_exceeded(format!(
                            "no discovery request within {first_request_timeout:?} of opening the stream"
                        ))));
                        return;
                    }
                };
                let node = match node_of(&first) {
                    Some(node) if !node.id.is_empty() => node,
                    Some(_) => {
                        let _ = tx.try_send(Err(Status::invalid_argument(
                            "the first request of the stream has a node with an empty id",
                        )));
                        return;
                    }
                    None => {
                        let _ = tx.try_send(Err(Status::invalid_argument(
                            "the first request of the stream carries no node",
                        )));
                        return;
                    }
                };
                tracing::Span::current().record("node.id", node.id.as_str());
                let handle = store.open_stream(&node, protocol);
                let targets = store.subscribe();
                run_stream(machine(handle), first, inbound, tx, targets, in_flight, shutdown)
                    .await;
            }
            .instrument(span),
        );
        rx
    }
}

/// Runs one stream until the node goes away, breaks the protocol, or shutdown.
async fn run_stream<M: Machine>(
    mut machine: M,
    first: M::Request,
    mut inbound: Requests<M::Request>,
    tx: mpsc::Sender<Result<Reply, Status>>,
    mut targets: watch::Receiver<Arc<Targets>>,
    in_flight: Arc<Semaphore>,
    shutdown: CancellationToken,
) where
    M::Request: prost::Message + Default,
{
    let canary = machine.handle().is_canary();
    machine.set_target(targets.borrow_and_update().for_node(canary).cloned());
    if let Err(status) = machine.on_request(first) {
        let _ = tx.try_send(Err(status));
        return;
    }
    // Nothing to send until a request or a new target says otherwise.
    let mut idle = false;
    // A fleet-wide slot for the next response, taken before it is built.
    let mut slot: Option<OwnedSemaphorePermit> = None;
    // Slots of responses sent and not yet answered, released as ACKs and NACKs arrive
    // (in order: the node answers each response once). Soft by design: a request that
    // changes a subscription also carries a nonce and frees one early.
    let mut unanswered: VecDeque<OwnedSemaphorePermit> = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            acquired = in_flight.clone().acquire_owned(), if !idle && slot.is_none() => {
                let Ok(acquired) = acquired else { break };
                slot = Some(acquired);
            }
            permit = tx.reserve(), if !idle && slot.is_some() => {
                let Ok(permit) = permit else { break };
                match machine.next_response() {
                    Some(response) => {
                        permit.send(Ok(response));
                        unanswered.extend(slot.take());
                    }
                    None => {
                        idle = true;
                        slot = None;
                        machine.report_sync();
                    }
                }
            }
            () = tx.closed(), if idle => break,
            msg = inbound.next() => match msg {
                Some(Ok(req)) => {
                    if M::answers(&req) {
                        unanswered.pop_front();
                    }
                    if let Err(status) = machine.on_request(req) {
                        tracing::info!(%status, "closing stream on a bad request");
                        let _ = tx.try_send(Err(status));
                        break;
                    }
                    idle = false;
                }
                Some(Err(status)) => {
                    tracing::debug!(%status, "stream failed");
                    let _ = tx.try_send(Err(status));
                    break;
                }
                None => break,
            },
            changed = targets.changed() => {
                if changed.is_err() {
                    break;
                }
                machine.set_target(targets.borrow_and_update().for_node(canary).cloned());
                idle = false;
            }
        }
    }
}
