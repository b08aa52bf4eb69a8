//! `attache serve`: a config source served over ADS.
//!
//! The order of events at start is what keeps a gateway up through a restart:
//! 1. the last good snapshot in the state dir is loaded and served before anything else,
//!    so Envoy nodes that reconnect get exactly what they had, even if the config source
//!    is gone;
//! 2. the source (a directory or a git remote) is read once, validated and translated; a
//!    clean revision is published;
//! 3. from then on the pipeline follows the source (see [`crate::pipeline`]); while it is
//!    missing, unreachable or rejected, what was served keeps serving.
//!
//! attache only refuses to start when it has nothing to serve at all: no usable first
//! revision and no persisted snapshot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::config;
use crate::metrics::{self, Metrics};
use crate::pipeline::Pipeline;
use crate::snapshot::{CanarySelector, Store, StoreConfig};
use crate::source::Source;
use crate::source::dir::DirSource;
use crate::source::git::{GitConfig, GitSource};
use crate::source::webhook::{self, Webhook};
use crate::xds;

/// Where revisions come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A directory (a mounted ConfigMap, or a checkout), watched for changes.
    Dir(PathBuf),
    /// A git remote, polled (and fetched at once on a webhook).
    Git(GitConfig),
}

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub source: SourceConfig,
    /// Where the ADS server listens.
    pub xds_addr: SocketAddr,
    /// TLS with client certificates on the ADS port; `None` serves plaintext.
    pub xds_tls: Option<xds::tls::TlsFiles>,
    /// Where the last good snapshot (and the git clone) is kept.
    pub state_dir: PathBuf,
    /// Which nodes get new snapshots first.
    pub canary: Option<CanarySelector>,
    /// How long canaries hold a snapshot without a NACK before the fleet gets it.
    pub canary_bake: Duration,
    /// Policy, secrets dir and YAML limits for loading revisions.
    pub load: config::Options,
    /// First delay before polling a source that failed again; doubles up to
    /// [`crate::pipeline::MAX_BACKOFF`].
    pub retry: Duration,
    /// The shared secret of `POST /webhook` (GitHub HMAC or GitLab token).
    pub webhook_secret: Option<PathBuf>,
    /// Where the admin server (health, metrics, `/diag`, API, webhook) listens.
    pub admin_addr: SocketAddr,
    /// Where endpoints come from: EndpointSlices, or DNS outside Kubernetes.
    pub endpoints: crate::endpoints::Discovery,
}

/// Why `serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither the source nor the state dir had anything to serve.
    #[error(
        "nothing to serve: {reason}, and no snapshot is persisted in {state_dir}",
        reason = reason,
        state_dir = state_dir.display()
    )]
    NothingToServe {
        /// The source, as `dir PATH` or `git URL (REF)`.
        source_name: String,
        /// Why the source could not be served.
        reason: String,
        /// The state dir that held no snapshot.
        state_dir: PathBuf,
    },
    /// The xDS address could not be bound.
    #[error("cannot listen for xDS on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The webhook secret could not be read.
    #[error(transparent)]
    Webhook(#[from] webhook::SecretError),
    /// `--endpoints kubernetes` without a usable cluster configuration.
    #[error(transparent)]
    Endpoints(#[from] crate::endpoints::Error),
    /// The ADS server failed.
    #[error(transparent)]
    Xds(#[from] xds::Error),
    /// The ADS port's TLS files cannot be used.
    #[error(transparent)]
    XdsTls(#[from] xds::tls::Error),
    /// The admin address could not be bound.
    #[error(transparent)]
    Admin(#[from] admin::Error),
}

/// Runs until `shutdown` is cancelled.
///
/// # Errors
///
/// [`Error::NothingToServe`] at start when neither the source nor the state dir has
/// anything to serve; [`Error::Bind`] when the xDS address is taken; [`Error::XdsTls`]
/// when a TLS file is wrong; [`Error::Xds`] when the server fails.
pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::new());
    // First: a wrong certificate is a mistake in the command line, found before a clone.
    let xds_tls = match &config.xds_tls {
        Some(files) => Some(xds::tls::Acceptor::load(
            files.clone(),
            Some(metrics.clone()),
        )?),
        None => None,
    };
    let store = Arc::new(Store::new(StoreConfig {
        state_dir: Some(config.state_dir.clone()),
        canary: config.canary.clone(),
        canary_bake: config.canary_bake,
        metrics: Some(metrics.clone()),
        ..StoreConfig::default()
    }));
    let persisted = match store.load_persisted() {
        Ok(snapshot) => snapshot,
        Err(e) => {
            tracing::warn!(
                state_dir = %config.state_dir.display(),
                "ignoring the persisted snapshot: {e}"
            );
            None
        }
    };
    let wake = Arc::new(Notify::new());
    let webhook = match &config.webhook_secret {
        Some(path) => Some(Webhook::from_file(path, wake.clone())?),
        None => None,
    };
    let source: Box<dyn Source> = match &config.source {
        SourceConfig::Dir(dir) => Box::new(DirSource::new(
            dir.clone(),
            config.load.limits,
            wake.clone(),
        )),
        SourceConfig::Git(git) => Box::new(GitSource::new(git.clone())),
    };
    let source_name = source.describe();
    // Before the first revision: translating it without the endpoints would send Envoy
    // empty assignments.
    let endpoints = crate::endpoints::spawn(&config.endpoints, shutdown.clone()).await?;
    let mut pipeline = Pipeline::new(
        store.clone(),
        config.load.clone(),
        Some(endpoints.clone()),
        config.retry,
    );
    // Up before the first poll (a clone can take a while): /healthz answers, /readyz says
    // whether the persisted snapshot is served. Stopped when `run` returns, error or not.
    let admin_stop = shutdown.child_token();
    let _admin_guard = admin_stop.clone().drop_guard();
    let admin_state = admin::State::new(
        store.clone(),
        pipeline.status(),
        metrics.clone(),
        webhook.map(admin_webhook),
    );
    let admin_listener = admin::bind(config.admin_addr).await?;
    tokio::spawn(admin::serve(
        admin_listener,
        admin_state,
        admin_stop.clone(),
    ));
    let git = matches!(config.source, SourceConfig::Git(_));
    tokio::spawn(metrics::follow_endpoints(
        endpoints,
        metrics.clone(),
        admin_stop.clone(),
    ));
    tokio::spawn(metrics::follow_status(
        pipeline.status(),
        metrics,
        git,
        admin_stop,
    ));
    let (source, first) = pipeline.poll(source).await;
    let first = first.and_then(
        |()| match pipeline.status().borrow().last_attempted.as_ref() {
            Some(attempt) if !attempt.outcome.is_accepted() => Err(format!(
                "revision {} was rejected (see the errors above)",
                attempt.revision.id
            )),
            _ => Ok(()),
        },
    );
    match (first, &persisted) {
        (Err(reason), None) => {
            return Err(Error::NothingToServe {
                source_name,
                reason,
                state_dir: config.state_dir.clone(),
            });
        }
        (Err(reason), Some(snapshot)) => tracing::warn!(
            version = snapshot.version(),
            source = source_name,
            "{reason}; serving the persisted snapshot"
        ),
        (Ok(()), _) => {}
    }

    let listener = TcpListener::bind(config.xds_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.xds_addr,
            source,
        })?;
    tracing::info!(
        addr = %config.xds_addr,
        source = source_name,
        ambassador_id = %config.load.ambassador_id,
        "serving xDS"
    );
    let xds_config = xds::Config {
        tls: xds_tls,
        ..xds::Config::default()
    };
    let server = tokio::spawn(xds::serve_with(
        listener,
        store.clone(),
        xds_config,
        shutdown.clone(),
    ));
    let follow = tokio::spawn(pipeline.run(source, wake, shutdown.clone()));
    let result = match server.await {
        Ok(result) => result.map_err(Error::from),
        Err(join) => {
            tracing::error!("xDS server task ended abnormally: {join}");
            Ok(())
        }
    };
    shutdown.cancel();
    if let Err(join) = follow.await {
        tracing::error!("the revision pipeline ended abnormally: {join}");
    }
    result
}

/// The source's webhook verifier as the admin server calls it.
fn admin_webhook(webhook: Webhook) -> admin::Webhook {
    Arc::new(move |headers, body| match webhook.receive(headers, body) {
        Ok(sender) => {
            tracing::info!(?sender, "webhook verified: polling the source now");
            admin::WebhookOutcome::Triggered
        }
        Err(rejection @ webhook::Rejection::TooLarge) => {
            admin::WebhookOutcome::TooLarge(rejection.to_string())
        }
        Err(rejection) => admin::WebhookOutcome::Unauthorized(rejection.to_string()),
    })
}
