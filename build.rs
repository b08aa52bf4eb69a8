//! Compiles the descriptor set `render` uses to print Envoy resources as JSON.
//!
//! prost generates encode/decode but no JSON, and Envoy reads the proto3 JSON mapping
//! (`Any` as `"@type"` plus fields). prost-reflect provides that mapping over a runtime
//! descriptor pool, so this script compiles the `.proto` files envoy-types itself was
//! generated from (shipped in its `proto/` directory) with protox, in pure Rust, and writes
//! the FileDescriptorSet to `OUT_DIR/envoy_descriptors.bin` for `include_bytes!`. Using
//! envoy-types' own files guarantees the descriptors match the Rust types field for field.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The envoy-types version pinned in Cargo.toml (`=0.7.7`); the fallback search uses it.
const ENVOY_TYPES_VERSION: &str = "0.7.7";

/// Include roots inside envoy-types' `proto/`, as its own build used them: every import in
/// the Envoy API resolves against one of these.
const INCLUDES: &[&str] = &[
    "data-plane-api",
    "xds",
    "protoc-gen-validate",
    "googleapis",
    "cel-spec/proto",
    "opentelemetry-proto",
    "client_model",
    "ratelimit/api",
];

/// The root files: the bootstrap pulls in listeners, clusters, routes, endpoints and core;
/// the rest are the extensions attache packs into `Any` fields (now, or in the issues that
/// add auth, rate limits, CORS, access logs and gRPC-Web). A type missing here renders as
/// an error naming its type URL, so add its file when translation starts emitting it.
const ROOTS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/filters/http/ratelimit/v3/rate_limit.proto",
    "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/grpc_web/v3/grpc_web.proto",
    "envoy/extensions/filters/http/buffer/v3/buffer.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/extensions/access_loggers/grpc/v3/als.proto",
    "envoy/config/trace/v3/zipkin.proto",
    "envoy/config/trace/v3/opentelemetry.proto",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let proto = envoy_types_proto_dir();
    let includes: Vec<PathBuf> = INCLUDES.iter().map(|i| proto.join(i)).collect();
    let mut compiler = protox::Compiler::new(&includes)
        .unwrap_or_else(|e| panic!("protox include paths under {}: {e}", proto.display()));
    compiler.include_imports(true).include_source_info(false);
    compiler
        .open_files(ROOTS)
        .unwrap_or_else(|e| panic!("compiling envoy-types protos from {}: {e}", proto.display()));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let path = out.join("envoy_descriptors.bin");
    std::fs::write(&path, compiler.encode_file_descriptor_set())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The `proto/` directory of the envoy-types package this crate builds against.
///
/// envoy-types declares no `links` key, so cargo passes no `DEP_*` variable that would
/// point at it. `cargo metadata` is the one answer that is right wherever the package
/// lives: the registry cache, a vendored directory, a `[patch]` path or a git checkout.
/// It runs `--offline` (everything this target needs is downloaded before a build script
/// runs). If it fails, the registry sources under `CARGO_HOME` are searched for the pinned
/// version.
fn envoy_types_proto_dir() -> PathBuf {
    if let Some(dir) = from_cargo_metadata() {
        return dir;
    }
    if let Some(dir) = from_cargo_home() {
        return dir;
    }
    panic!(
        "cannot find envoy-types {ENVOY_TYPES_VERSION}'s proto/ directory: \
         `cargo metadata` failed and it is not under $CARGO_HOME/registry/src"
    );
}

fn from_cargo_metadata() -> Option<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let mut command = Command::new(cargo);
    command
        .args(["metadata", "--offline", "--format-version", "1"])
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"));
    // Only this target's packages: a plain `cargo build` downloads no others, and
    // without the filter `--offline` would fail on, say, a Windows-only dependency.
    if let Some(target) = std::env::var_os("TARGET") {
        command.arg("--filter-platform").arg(target);
    }
    let output = command.output().ok()?;
    if !output.status.success() {
        println!(
            "cargo:warning=cargo metadata failed, searching CARGO_HOME for envoy-types: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return None;
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    metadata["packages"]
        .as_array()?
        .iter()
        .filter(|p| p["name"] == "envoy-types")
        .filter_map(|p| p["manifest_path"].as_str())
        .map(|m| Path::new(m).with_file_name("proto"))
        .find(|dir| dir.is_dir())
}

fn from_cargo_home() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let registries = std::fs::read_dir(home.join("registry/src")).ok()?;
    registries
        .filter_map(Result::ok)
        .map(|r| {
            r.path()
                .join(format!("envoy-types-{ENVOY_TYPES_VERSION}"))
                .join("proto")
        })
        .find(|dir| dir.is_dir())
}
