//! TLS with client-certificate verification on the ADS listener (issue 8).
//!
//! The ADS stream carries private keys (SDS secrets of every TLS Host), so a TLS mode
//! without client authentication would hand them to anyone who can reach the port:
//! there is none. [`TlsFiles`] names the server certificate, its key and the CA bundle
//! client certificates must chain to; [`Acceptor`] loads them at start (so a wrong file
//! stops `attache serve` with an error naming it) and runs the handshakes.
//!
//! Certificates rotate (cert-manager renews them well before expiry), so the files are
//! checked again on each new connection: when one changed (modification time, size or
//! inode; Kubernetes swaps a Secret volume's files by symlink), the whole set is loaded
//! again. A set that does not load (say the certificate was replaced and the key not
//! yet) is reported and the previous one keeps serving; the next change is tried again.
//! Streams already open keep the session they were established with.
//!
//! A failed handshake only ends that connection: it is logged with the peer address and
//! counted in `attache_xds_tls_handshake_failures_total{reason}`. Handshakes run on
//! their own tasks, bounded in number and in time, so a slow or hostile client holds up
//! nobody else's.
//!
//! Start reading at [`Acceptor::load`], then [`incoming`].

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::Metrics;

/// How long a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// Established connections waiting for the HTTP/2 server to take them.
const ACCEPTED_BUFFER: usize = 16;

/// The files of the ADS listener's TLS (`--xds-tls-cert`, `--xds-tls-key`,
/// `--xds-client-ca`), all PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates a client certificate must chain to.
    pub client_ca: PathBuf,
}

/// Why the TLS files cannot be used. Every variant needs a fix from the user (or, during
/// a rotation, the rest of the new files); none is retried by itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read (missing, no permission).
    #[error("cannot read the xds TLS {what} file {}", path.display())]
    Read {
        /// `certificate`, `private key` or `client CA`.
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("the xds TLS {what} file {} is not valid PEM", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file holds no `CERTIFICATE` block.
    #[error("the xds TLS {what} file {} holds no PEM certificate", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    /// The key file holds no private key block.
    #[error("the xds TLS private key file {} holds no PEM private key", path.display())]
    NoKey { path: PathBuf },
    /// The key is of a kind (or an encoding) that cannot sign.
    #[error("the xds TLS private key in {} cannot be used", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The first certificate of the chain cannot be parsed.
    #[error("the xds TLS certificate in {} cannot be parsed", path.display())]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The key does not belong to the leaf certificate.
    #[error(
        "the xds TLS private key {} does not match the certificate {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    /// A client CA certificate cannot be used as a trust anchor.
    #[error("the xds client CA file {} holds a certificate that cannot be a trust anchor", path.display())]
    BadClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built from the CA bundle.
    #[error("cannot verify client certificates with the CA file {}", path.display())]
    Verifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The protocol versions could not be set up (a rustls build without TLS 1.2/1.3).
    #[error("cannot set up TLS for xds")]
    Protocol(#[source] rustls::Error),
}

/// Loads the TLS files and runs handshakes; cheap to clone.
#[derive(Clone)]
pub struct Acceptor {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    metrics: Option<Arc<Metrics>>,
    current: Mutex<Loaded>,
}

/// The server config in use and the state of the files it was last loaded from (or
/// tried: a set that failed is not tried again until a file changes).
struct Loaded {
    stamps: [Option<Stamp>; 3],
    config: Arc<ServerConfig>,
}

/// What tells that a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// Why a handshake failed, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The client sent no certificate.
    NoClientCertificate,
    /// The client's certificate does not chain to the client CA (or is expired, or not
    /// for client authentication).
    ClientCertificateRejected,
    /// The client refused the server (an alert: it does not trust attache's certificate,
    /// or has no protocol in common).
    PeerAlert,
    /// The bytes were not TLS (a plaintext gRPC client, say).
    NotTls,
    /// No handshake within [`HANDSHAKE_TIMEOUT`].
    Timeout,
    /// Anything else: the peer went away, or another TLS error.
    Other,
}

// === impl Failure ===

impl Failure {
    /// Every reason, to show zero series before the first failure.
    pub(crate) const ALL: [Failure; 6] = [
        Failure::NoClientCertificate,
        Failure::ClientCertificateRejected,
        Failure::PeerAlert,
        Failure::NotTls,
        Failure::Timeout,
        Failure::Other,
    ];

    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Failure::NoClientCertificate => "no_client_certificate",
            Failure::ClientCertificateRejected => "client_certificate_rejected",
            Failure::PeerAlert => "peer_alert",
            Failure::NotTls => "not_tls",
            Failure::Timeout => "timeout",
            Failure::Other => "other",
        }
    }

    fn of(error: &io::Error) -> Failure {
        let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return Failure::Other;
        };
        match tls {
            rustls::Error::NoCertificatesPresented => Failure::NoClientCertificate,
            rustls::Error::InvalidCertificate(_) => Failure::ClientCertificateRejected,
            rustls::Error::AlertReceived(_) => Failure::PeerAlert,
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                Failure::NotTls
            }
            _ => Failure::Other,
        }
    }
}

// === impl Acceptor ===

impl Acceptor {
    /// Loads `files`; handshake failures are counted in `metrics` when given.
    ///
    /// # Errors
    ///
    /// When a file cannot be read or used: see [`Error`]; each names the file.
    pub fn load(files: TlsFiles, metrics: Option<Arc<Metrics>>) -> Result<Acceptor, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = stamps(&files);
        let config = server_config(&files, &provider)?;
        Ok(Acceptor {
            inner: Arc::new(Inner {
                files,
                provider,
                metrics,
                current: Mutex::new(Loaded { stamps, config }),
            }),
        })
    }

    /// The server config for a new connection: loaded again first if a file changed.
    fn config(&self) -> Arc<ServerConfig> {
        let inner = &self.inner;
        let now = stamps(&inner.files);
        let mut current = inner.current.lock();
        if current.stamps == now {
            return current.config.clone();
        }
        // Remember the attempt either way: a broken set is reported once, not on every
        // connection, and tried again when a file changes.
        current.stamps = now;
        match server_config(&inner.files, &inner.provider) {
            Ok(config) => {
                tracing::info!(
                    cert = %inner.files.cert.display(),
                    "reloaded the xds TLS certificate, key and client CA"
                );
                current.config = config;
            }
            Err(e) => tracing::warn!("keeping the previous xds TLS certificate: {}", chain(&e)),
        }
        current.config.clone()
    }

    fn failed(&self, peer: SocketAddr, failure: Failure, error: &dyn std::fmt::Display) {
        if let Some(metrics) = &self.inner.metrics {
            metrics.xds_tls_handshake_failed(failure.label());
        }
        match failure {
            // A TCP probe (a load balancer's health check) connects and closes.
            Failure::Other => {
                tracing::debug!(%peer, reason = failure.label(), "xds TLS handshake failed: {error}")
            }
            _ => {
                tracing::warn!(%peer, reason = failure.label(), "xds TLS handshake failed: {error}")
            }
        }
    }

    /// Runs the handshake on `tcp`.
    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Option<TlsConn> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Some(TlsConn(stream)),
            Ok(Err(e)) => {
                self.failed(peer, Failure::of(&e), &e);
                None
            }
            Err(_) => {
                self.failed(
                    peer,
                    Failure::Timeout,
                    &format_args!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
                );
                None
            }
        }
    }
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

/// The connections of `listener` that completed a TLS handshake with `acceptor`, for
/// the HTTP/2 server. Accepting stops when the stream is dropped or `shutdown` is
/// cancelled; the listener is closed then.
pub(crate) fn incoming(
    listener: TcpListener,
    acceptor: Acceptor,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<TlsConn, Infallible>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_BUFFER);
    tokio::spawn(accept_loop(listener, acceptor, tx, shutdown));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Acceptor,
    tx: mpsc::Sender<Result<TlsConn, Infallible>>,
    shutdown: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tx.closed() => return,
            permit = handshakes.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!("accepting an xds connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small ADS requests (ACKs) must not wait for Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
        }
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let conn = acceptor.handshake(tcp, peer).await;
            drop(permit);
            if let Some(conn) = conn {
                tracing::debug!(%peer, "xds TLS connection established");
                // The server is gone when this fails; the connection closes with it.
                let _ = tx.send(Ok(conn)).await;
            }
        });
    }
}

/// A TLS connection for tonic's server.
pub(crate) struct TlsConn(TlsStream<TcpStream>);

// === impl TlsConn ===

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        let (tcp, _) = self.0.get_ref();
        tcp.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

// === loading ===

fn stamps(files: &TlsFiles) -> [Option<Stamp>; 3] {
    [&files.cert, &files.key, &files.client_ca].map(|path| stamp(path))
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    // `metadata` follows symlinks: a Secret volume's `..data` swap changes the inode.
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// The rustls server config of `files`: client certificates required, ALPN `h2`.
fn server_config(
    files: &TlsFiles,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, Error> {
    let chain = certificates("certificate", &files.cert)?;
    let key = private_key(&files.key)?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => Error::KeyMismatch {
            key: files.key.clone(),
            cert: files.cert.clone(),
        },
        rustls::Error::InvalidCertificate(_) => Error::BadCertificate {
            path: files.cert.clone(),
            source: e,
        },
        other => Error::BadKey {
            path: files.key.clone(),
            source: other,
        },
    })?;
    let mut roots = RootCertStore::empty();
    for ca in certificates("client CA", &files.client_ca)? {
        roots.add(ca).map_err(|source| Error::BadClientCa {
            path: files.client_ca.clone(),
            source,
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|source| Error::Verifier {
            path: files.client_ca.clone(),
            source,
        })?;
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(Error::Protocol)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // gRPC runs over HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read("private key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => Error::NoKey {
            path: path.to_owned(),
        },
        source => Error::Pem {
            what: "private key",
            path: path.to_owned(),
            source,
        },
    })
}

/// `e` and its causes, `: `-separated, for a log line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
