//! The ADS server: Envoy nodes get their configuration only from here.
//!
//! This is the server half of go-control-plane's cache/server split: it sees only the
//! [`Store`] API (targets on a `watch` channel, a [`crate::snapshot::StreamHandle`] per
//! stream to report what was sent, ACKed and rejected), never the translator.
//!
//! Both ADS variants are served, following the xDS protocol (envoyproxy api-docs,
//! `xds_protocol.rst`):
//! - [`sotw`]: `StreamAggregatedResources`, state of the world;
//! - [`delta`]: `DeltaAggregatedResources`, incremental.
//!
//! Each is a synchronous, I/O-free state machine per stream; `server` runs one task per
//! stream around it. Rollback safety (DESIGN.md) lives in the machines: a version a node
//! rejected is never sent to it again, and removals wait until every type is ACKed, so
//! a node that NACKs keeps what it routes with.
//!
//! Responses leave without a per-stream copy of the resources: `wire` frames them,
//! `cache` shares SotW bodies across streams, `transport` hands the bytes to HTTP/2;
//! `names` shares subscribed name sets and their versions (issue 3: 10k streams within
//! 1 GB).
//!
//! Start reading at [`serve`], then `server::run_stream`, then `sotw.rs`.

pub mod bootstrap;
mod cache;
mod delta;
mod names;
mod server;
mod sotw;
mod subscription;
pub mod tls;
mod transport;
pub mod type_url;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::google::protobuf::Any;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::snapshot::{Resource, ResourceType, Store};

pub use cache::encoded_responses;
pub use transport::sent_bytes;

/// Errors of the xDS stage.
///
/// [`Error::Transport`] may be retried (restart the server); [`Error::InvalidAddress`]
/// and [`Error::InvalidServerName`] need a fix from the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gRPC server stopped on a transport failure.
    #[error("xds server on {addr} failed")]
    Transport {
        /// The address it listened on (`?` when unknown).
        addr: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// An xDS server address is not `HOST:PORT`.
    #[error("invalid xds address {0:?}: expected HOST:PORT")]
    InvalidAddress(String),
    /// The name attache's TLS certificate must carry is empty or holds blanks.
    #[error("invalid xds server name {0:?}: expected a DNS name or an IP address")]
    InvalidServerName(String),
}

/// The result type of the xDS stage.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the ADS server treats its streams.
#[derive(Debug, Clone)]
pub struct Config {
    /// Responses buffered per stream before the stream waits for the node to read
    /// (default 4, at least 1). Bounds the memory a node that never reads can pin.
    pub send_buffer: usize,
    /// Most resource names one request may list (default 100,000); more ends the stream
    /// with `INVALID_ARGUMENT`.
    pub max_names: usize,
    /// Longest resource name accepted, in bytes (default 4096).
    pub max_name_len: usize,
    /// Largest request message accepted, in bytes (default 4 MiB).
    pub max_request_bytes: usize,
    /// How long a new stream may wait before its first request (default 60 s).
    pub first_request_timeout: Duration,
    /// Most responses in flight across all streams: sent, not yet answered by an ACK or
    /// NACK (default 512). SotW replies share their bodies, but a delta reply and a body
    /// not kept in the response cache are each stream's own until written; with this
    /// bound that memory follows the limit, not the fleet size, and nodes are served in
    /// turn (as Istio's push throttle does).
    pub max_in_flight: usize,
    /// Bytes of encoded SotW responses kept to share across streams (default 64 MiB).
    /// Streams sent the same set send the same bytes; a set that is not kept (evicted,
    /// or larger than this) is encoded for the one response and freed once sent. 0
    /// disables sharing.
    pub response_cache_bytes: usize,
    /// TLS with client-certificate verification (`--xds-tls-cert`, `--xds-tls-key`,
    /// `--xds-client-ca`); `None` serves plaintext HTTP/2 (default).
    pub tls: Option<tls::Acceptor>,
}

/// The per-request limits the protocol machines check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_names: usize,
    pub(crate) max_name_len: usize,
}

// === impl Config ===

impl Default for Config {
    fn default() -> Self {
        Config {
            send_buffer: 4,
            max_names: 100_000,
            max_name_len: 4096,
            max_request_bytes: 4 * 1024 * 1024,
            first_request_timeout: Duration::from_secs(60),
            max_in_flight: 512,
            response_cache_bytes: 64 * 1024 * 1024,
            tls: None,
        }
    }
}

impl Config {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_names: self.max_names,
            max_name_len: self.max_name_len,
        }
    }
}

/// Serves ADS (SotW and delta) for `store` on `listener` with the default [`Config`],
/// and drives the store's canary rollout, until `shutdown` is cancelled.
///
/// # Errors
///
/// [`Error::Transport`] when the gRPC server fails.
///
/// # Cancellation
///
/// Cancelling `shutdown` ends every stream and returns once connections closed.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    shutdown: CancellationToken,
) -> Result<()> {
    serve_with(listener, store, Config::default(), shutdown).await
}

/// [`serve`] with an explicit [`Config`].
///
/// # Errors
///
/// [`Error::Transport`] when the gRPC server fails.
pub async fn serve_with(
    listener: TcpListener,
    store: Arc<Store>,
    config: Config,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    tracing::info!(%addr, tls = config.tls.is_some(), "xds server listening");
    let rollout = {
        let (store, token) = (store.clone(), shutdown.clone());
        tokio::spawn(async move { store.run_rollout(token).await })
    };
    let service = transport::AdsRouter::new(server::AdsService {
        store,
        config: config.clone(),
        shutdown: shutdown.clone(),
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
        cache: Arc::new(cache::ResponseCache::new(config.response_cache_bytes)),
        name_sets: Arc::default(),
    });
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(service);
    let result = match config.tls {
        // Handshakes happen off the accept path (`tls::incoming`), so a client that
        // stalls or fails one keeps nobody else from connecting.
        Some(acceptor) => {
            router
                .serve_with_incoming_shutdown(
                    tls::incoming(listener, acceptor, shutdown.clone()),
                    shutdown.clone().cancelled_owned(),
                )
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    shutdown.clone().cancelled_owned(),
                )
                .await
        }
    };
    rollout.abort();
    result.map_err(|source| Error::Transport { addr, source })
}

/// A resource as the `Any` a delta response carries. The body was encoded once, when
/// the snapshot was built; this only copies its bytes.
pub(crate) fn to_any(kind: ResourceType, r: &Resource) -> Any {
    Any {
        type_url: type_url::of(kind).to_owned(),
        value: r.body.to_vec(),
    }
}

/// Envoy's NACK message, capped so a node cannot make the store hold megabytes.
pub(crate) fn nack_message(status: &envoy_types::pb::google::rpc::Status) -> String {
    const MAX: usize = 4096;
    let message = &status.message;
    if message.len() <= MAX {
        return message.clone();
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// The resource type a request asks for: `None` (ignored, and warned about once per type
/// URL, at most 16 per stream) for a type attache does not serve, so that one
/// unsupported type does not end a stream serving the others.
///
/// # Errors
///
/// A status ending the stream when the request has no type URL, which ADS requires.
pub(crate) fn requested_type(
    type_url: &str,
    request: &str,
    unknown_types: &mut std::collections::BTreeSet<String>,
    node_id: &str,
) -> std::result::Result<Option<ResourceType>, Status> {
    if type_url.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{request} carries no type_url (required on ADS)"
        )));
    }
    let kind = type_url::parse(type_url);
    if kind.is_none() && unknown_types.len() < 16 && unknown_types.insert(type_url.to_owned()) {
        tracing::warn!(node.id = %node_id, type_url = %type_url, "ignoring request for a type attache does not serve");
    }
    Ok(kind)
}

/// Rejects absurd resource name lists.
pub(crate) fn check_names(
    limits: &Limits,
    type_url: &str,
    names: &[String],
) -> std::result::Result<(), Status> {
    if names.len() > limits.max_names {
        return Err(Status::invalid_argument(format!(
            "request for {type_url} lists {} resource names, more than the limit of {}",
            names.len(),
            limits.max_names
        )));
    }
    if let Some(long) = names.iter().find(|n| n.len() > limits.max_name_len) {
        return Err(Status::invalid_argument(format!(
            "request for {type_url} names a resource of {} bytes, more than the limit of {} (starts {:?})",
            long.len(),
            limits.max_name_len,
            long.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}
