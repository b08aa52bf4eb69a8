//! Choosing how endpoints are found (`--endpoints kubernetes|dns|auto`) and starting it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ::kube::Client;
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Endpoints;
use super::kube::{WatchConfig, spawn_watcher};

/// The DNS domain of a default cluster.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// How long `auto` waits for the API server to answer before choosing DNS.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where endpoints come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Watch EndpointSlices; fail when no cluster is configured.
    Kubernetes,
    /// Let Envoy resolve `name.namespace.svc.DOMAIN` (STRICT_DNS clusters).
    Dns,
    /// Kubernetes when a cluster is configured and its API server answers, else DNS.
    #[default]
    Auto,
}

/// How to reach the Kubernetes API.
#[derive(Clone, Default)]
pub enum KubeSource {
    /// In-cluster service account, else `KUBECONFIG` / `~/.kube/config` (kube's `infer`).
    #[default]
    Infer,
    /// This kubeconfig file, its current context.
    Kubeconfig(PathBuf),
    /// A client built by the caller.
    Client(Client),
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KubeSource::Infer => f.write_str("Infer"),
            KubeSource::Kubeconfig(p) => f.debug_tuple("Kubeconfig").field(p).finish(),
            KubeSource::Client(_) => f.write_str("Client(..)"),
        }
    }
}

/// Endpoint discovery settings.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub mode: Mode,
    pub kube: KubeSource,
    /// Namespaces to watch (`--namespace`, repeated); empty watches all.
    pub namespaces: Vec<String>,
    /// Coalescing window, at most 50 ms.
    pub window: Duration,
    /// How long [`spawn`] waits for the first full listing before it returns anyway.
    pub sync_timeout: Duration,
    /// The cluster DNS domain DNS mode appends after `.svc.`.
    pub cluster_domain: String,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            mode: Mode::Auto,
            kube: KubeSource::Infer,
            namespaces: Vec::new(),
            window: WatchConfig::default().window,
            sync_timeout: Duration::from_secs(30),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
        }
    }
}

/// Why endpoint discovery could not start. Each needs a fix from the operator (a
/// kubeconfig, RBAC, or `--endpoints dns`); none is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--endpoints kubernetes` but neither in-cluster credentials nor a kubeconfig.
    #[error("--endpoints kubernetes: no Kubernetes configuration (in-cluster or kubeconfig)")]
    NoCluster(#[source] ::kube::config::InferConfigError),
    /// The kubeconfig file given cannot be read or used.
    #[error("cannot use kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: ::kube::config::KubeconfigError,
    },
    /// A client could not be built from the configuration (bad certificate, URL).
    #[error("cannot build a Kubernetes client")]
    Client(#[source] ::kube::Error),
}

/// Starts endpoint discovery and returns the receiver of its values.
///
/// In Kubernetes mode it waits until Services and EndpointSlices have been listed once
/// (at most `sync_timeout`; after that it warns and returns a receiver still at
/// generation 0, which fills in when the API answers). The caller should wait for
/// `generation > 0` before replacing a persisted snapshot, or Envoy gets empty
/// assignments. In DNS mode the value is [`Endpoints::dns`] and never changes.
///
/// # Errors
///
/// [`Error`] when Kubernetes mode was asked for and no usable cluster configuration
/// exists. `auto` never fails: without a cluster it chooses DNS.
///
/// # Cancellation
///
/// The watcher stops when `shutdown` is cancelled.
pub async fn spawn(
    discovery: &Discovery,
    shutdown: CancellationToken,
) -> Result<watch::Receiver<Arc<Endpoints>>, Error> {
    let client = match discovery.mode {
        Mode::Dns => None,
        Mode::Kubernetes => Some(client(&discovery.kube).await?),
        Mode::Auto => match client(&discovery.kube).await {
            Ok(client) => match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version())
                .await
            {
                Ok(Ok(version)) => {
                    tracing::info!(version = %version.git_version, "Kubernetes API reachable: endpoints from EndpointSlices");
                    Some(client)
                }
                Ok(Err(e)) => {
                    tracing::info!("Kubernetes API not usable ({e}): endpoints by DNS");
                    None
                }
                Err(_) => {
                    tracing::info!("Kubernetes API silent for {PROBE_TIMEOUT:?}: endpoints by DNS");
                    None
                }
            },
            Err(e) => {
                tracing::info!("no Kubernetes configuration ({e}): endpoints by DNS");
                None
            }
        },
    };
    let Some(client) = client else {
        let (tx, rx) = watch::channel(Arc::new(Endpoints::dns(&discovery.cluster_domain)));
        // Held until shutdown so receivers see an open channel, not a finished source.
        tokio::spawn(async move {
            shutdown.cancelled().await;
            drop(tx);
        });
        return Ok(rx);
    };
    let mut rx = spawn_watcher(
        client,
        WatchConfig {
            namespaces: discovery.namespaces.clone(),
            window: discovery.window,
        },
        shutdown,
    );
    let synced = matches!(
        tokio::time::timeout(discovery.sync_timeout, rx.wait_for(|e| e.generation > 0)).await,
        Ok(Ok(_))
    );
    if !synced {
        tracing::warn!(
            "Services and EndpointSlices not listed within {:?} (see the errors above); \
             endpoints follow when they are",
            discovery.sync_timeout
        );
    }
    rx.mark_unchanged();
    Ok(rx)
}

/// Checks a `--namespace` value: a DNS-1123 label, as Kubernetes requires.
///
/// # Errors
///
/// A message naming the value and the rule it breaks.
pub fn parse_namespace(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a namespace name: 1-63 lower-case letters, digits and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

/// Checks a `--cluster-domain` value: a DNS name (`cluster.local`), without dots at
/// either end.
///
/// # Errors
///
/// A message naming the value.
pub fn parse_cluster_domain(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "{text:?} is not a DNS domain such as cluster.local"
        ))
    }
}

async fn client(source: &KubeSource) -> Result<Client, Error> {
    let config = match source {
        KubeSource::Client(client) => return Ok(client.clone()),
        KubeSource::Infer => ::kube::Config::infer().await.map_err(Error::NoCluster)?,
        KubeSource::Kubeconfig(path) => {
            let wrap = |source| Error::Kubeconfig {
                path: path.clone(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(wrap)?;
            ::kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(wrap)?
        }
    };
    Client::try_from(config).map_err(Error::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_domains_are_checked() {
        assert_eq!(parse_namespace("shop-2").as_deref(), Ok("shop-2"));
        for bad in ["", "Shop", "-a", "a-", "a.b", &"a".repeat(64)] {
            let err = parse_namespace(bad).expect_err(bad);
            assert!(err.contains("is not a namespace name"), "{err}");
        }
        assert_eq!(
            parse_cluster_domain("Cluster.Local").as_deref(),
            Ok("cluster.local")
        );
        for bad in ["", ".local", "cluster.", "a b", "a..b"] {
            assert!(parse_cluster_domain(bad).is_err(), "{bad}");
        }
    }
}
