//! `attache serve`: one config directory, served over ADS.
//!
//! The order of events at start is what keeps a gateway up through a restart:
//! 1. the last good snapshot in the state dir is loaded and served before anything else,
//!    so Envoy nodes that reconnect get exactly what they had, even if the config source
//!    is gone;
//! 2. the directory is read, validated and translated; a clean revision is published;
//! 3. while the directory is missing, unreadable or rejected, the persisted snapshot keeps
//!    serving and the directory is retried with a bounded backoff.
//!
//! attache only refuses to start when it has nothing to serve at all: no usable directory
//! and no persisted snapshot. Live watching and git come with the sources (issue 4); this
//! module reads the directory until it has one good revision.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, SourceFile};
use crate::endpoints::Endpoints;
use crate::snapshot::{CanarySelector, Snapshot, Store, StoreConfig};
use crate::translate::{self, Resources};
use crate::xds;

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The config directory (a checkout, or a mounted ConfigMap).
    pub dir: PathBuf,
    /// Where the ADS server listens.
    pub xds_addr: SocketAddr,
    /// Where the last good snapshot is kept.
    pub state_dir: PathBuf,
    /// Which nodes get new snapshots first.
    pub canary: Option<CanarySelector>,
    /// How long canaries hold a snapshot without a NACK before the fleet gets it.
    pub canary_bake: Duration,
    /// Policy, secrets dir and YAML limits for loading the directory.
    pub load: config::Options,
    /// First delay before re-reading a directory that could not be served; doubles up to
    /// [`MAX_RETRY`].
    pub retry: Duration,
}

/// The longest wait between two reads of a directory that could not be served.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Why `serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither the directory nor the state dir had anything to serve.
    #[error(
        "nothing to serve: {reason}, and no snapshot is persisted in {state_dir}",
        reason = reason,
        state_dir = state_dir.display()
    )]
    NothingToServe {
        /// The config directory.
        dir: PathBuf,
        /// Why the directory could not be served.
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
    /// The ADS server failed.
    #[error(transparent)]
    Xds(#[from] xds::Error),
}

/// A revision read from the directory, ready to publish.
#[derive(Debug)]
pub struct Revision {
    /// SHA-256 of the directory's config content (see [`revision_id`]).
    pub id: String,
    /// The translated resources.
    pub resources: Resources,
}

/// The revision id of a directory's config files: the SHA-256 of every file's path and
/// bytes in path order, as 16 hex digits. Content-addressed, so the same content (a
/// `git revert`, a ConfigMap remounted) gives the same id on any replica.
pub fn revision_id(files: &[SourceFile]) -> String {
    let mut sorted: Vec<&SourceFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hash = Sha256::new();
    for file in sorted {
        // Lengths first, so no two different file sets hash the same bytes.
        hash.update((file.path.len() as u64).to_be_bytes());
        hash.update(file.path.as_bytes());
        hash.update((file.bytes.len() as u64).to_be_bytes());
        hash.update(&file.bytes);
    }
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads, validates and translates `dir`. Every diagnostic is logged with its file and
/// line; the error says why the revision cannot be served.
pub fn load_revision(dir: &Path, options: &config::Options) -> Result<Revision, String> {
    let (files, mut problems) =
        config::read_dir(dir, &options.limits).map_err(|e| format!("{e}: {}", error_chain(&e)))?;
    let id = revision_id(&files);
    let mut outcome = config::load_files(&files, options);
    problems.append(&mut outcome.diagnostics);
    problems.sort();
    for d in &problems {
        if d.is_error() {
            tracing::error!(revision = %id, "{d}");
        } else {
            tracing::warn!(revision = %id, "{d}");
        }
    }
    outcome.diagnostics = problems;
    let errors = outcome.errors().count();
    let (config, _) = outcome.into_result().map_err(|_| {
        format!(
            "revision {id} of {} rejected: {errors} error(s) (logged above)",
            dir.display()
        )
    })?;
    let resources = translate::translate(&config, &Endpoints::default());
    Ok(Revision { id, resources })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.join(": ")
}

/// Runs until `shutdown` is cancelled.
///
/// # Errors
///
/// [`Error::NothingToServe`] at start when neither the directory nor the state dir has
/// anything to serve; [`Error::Bind`] when the xDS address is taken; [`Error::Xds`] when
/// the server fails.
pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let store = Arc::new(Store::new(StoreConfig {
        state_dir: Some(config.state_dir.clone()),
        canary: config.canary.clone(),
        canary_bake: config.canary_bake,
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
    let first = read(&config).await;
    let mut served = match (&first, &persisted) {
        (Err(reason), None) => {
            return Err(Error::NothingToServe {
                dir: config.dir.clone(),
                reason: reason.clone(),
                state_dir: config.state_dir.clone(),
            });
        }
        (Err(reason), Some(snapshot)) => {
            tracing::warn!(
                version = snapshot.version(),
                "{reason}; serving the persisted snapshot and retrying"
            );
            false
        }
        (Ok(_), _) => true,
    };
    if let Ok(revision) = first {
        publish(&store, revision).await;
    }

    let listener = TcpListener::bind(config.xds_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.xds_addr,
            source,
        })?;
    tracing::info!(addr = %config.xds_addr, dir = %config.dir.display(), "serving xDS");
    let server = tokio::spawn(xds::serve(listener, store.clone(), shutdown.clone()));

    let mut delay = config.retry.max(Duration::from_millis(100));
    while !served {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
        match read(&config).await {
            Ok(revision) => {
                publish(&store, revision).await;
                served = true;
            }
            Err(reason) => {
                tracing::warn!(
                    "{reason}; retrying in {:?}",
                    delay.saturating_mul(2).min(MAX_RETRY)
                );
                delay = delay.saturating_mul(2).min(MAX_RETRY);
            }
        }
    }
    match server.await {
        Ok(result) => result.map_err(Error::from),
        Err(join) => {
            tracing::error!("xDS server task ended abnormally: {join}");
            Ok(())
        }
    }
}

async fn read(config: &ServeConfig) -> Result<Revision, String> {
    let dir = config.dir.clone();
    let options = config.load.clone();
    tokio::task::spawn_blocking(move || load_revision(&dir, &options))
        .await
        .unwrap_or_else(|join| Err(format!("loading the config directory failed: {join}")))
}

async fn publish(store: &Store, revision: Revision) {
    let snapshot = match Snapshot::new(&revision.id, 0, &revision.resources) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            tracing::error!(revision = %revision.id, "cannot build a snapshot: {e}");
            return;
        }
    };
    match store.publish(snapshot).await {
        Ok(s) => tracing::info!(version = s.version(), "revision published"),
        Err(e) => tracing::error!(revision = %revision.id, "snapshot not published: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, bytes: &str) -> SourceFile {
        SourceFile {
            path: path.to_owned(),
            bytes: bytes.as_bytes().to_vec(),
        }
    }

    #[test]
    fn revision_ids_follow_content_not_order() {
        let a = [file("a.yaml", "x: 1"), file("b.yaml", "y: 2")];
        let b = [file("b.yaml", "y: 2"), file("a.yaml", "x: 1")];
        assert_eq!(revision_id(&a), revision_id(&b));
        assert_eq!(revision_id(&a).len(), 16);
        let changed = [file("a.yaml", "x: 1"), file("b.yaml", "y: 3")];
        assert_ne!(revision_id(&a), revision_id(&changed));
        // Moving bytes between path and content is a different revision.
        let shifted = [file("a.yamlx", ": 1"), file("b.yaml", "y: 2")];
        assert_ne!(revision_id(&a), revision_id(&shifted));
    }

    #[test]
    fn a_missing_directory_says_which() {
        let err = load_revision(
            Path::new("/nonexistent/attache"),
            &config::Options::default(),
        )
        .expect_err("missing");
        assert!(err.contains("/nonexistent/attache"), "{err}");
    }
}
