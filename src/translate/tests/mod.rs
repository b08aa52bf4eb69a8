//! Translation tests, by topic.
//!
//! - `routes`: every Mapping field -> RouteMatch / RouteAction / RedirectAction, and
//!   Emissary's route order;
//! - `clusters`: service forms -> EDS / STRICT_DNS / STATIC clusters, grpc, upstream TLS,
//!   connect timeouts, EDS assignments;
//! - `hosts`: Hosts -> virtual hosts, TLS filter chains, insecure actions, TLSContexts;
//! - `listeners`: explicit Listeners and Emissary's defaults;
//! - `policies`: Mapping policies, gateway services' filters, the Module's defaults;
//! - `determinism`: same input (in any order) -> byte-identical encodings, provenance;
//! - `golden`: YAML fixture repos -> a reviewable text rendering, checked in;
//! - `envoy`: every fixture and the example repo pass `envoy --mode validate`.
//!
//! Most tests build model values with [`super::testing`] so each shows only the field it
//! is about; a few go from YAML through `config::load_files`, which is how users reach
//! translation.

mod clusters;
mod determinism;
mod envoy;
mod golden;
mod hosts;
mod listeners;
mod policies;
mod routes;
mod verify;

use std::path::{Path, PathBuf};

use super::{Resources, translate};
use crate::config::{self, Config, Options, SourceFile};
use crate::endpoints::Endpoints;

/// Translates with no known endpoints.
fn run(config: &Config) -> Resources {
    translate(config, &Endpoints::default())
}

/// A secrets directory holding the test certificate under each of `names`.
fn secrets_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    for name in names {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).expect("create secret dir");
        std::fs::write(sub.join("tls.crt"), super::testing::CERT).expect("write tls.crt");
        std::fs::write(sub.join("tls.key"), super::testing::KEY).expect("write tls.key");
    }
    dir
}

/// Loads one YAML file (with secrets `secrets` available) and insists it is clean of
/// errors: a test about translation must not pass because validation dropped something.
fn load_yaml(yaml: &str, secrets: &[&str]) -> Config {
    let dir = secrets_dir(secrets);
    let options = Options {
        secrets_dir: Some(dir.path().to_path_buf()),
        ..Options::default()
    };
    let files = [SourceFile {
        path: "test.yaml".to_owned(),
        bytes: yaml.as_bytes().to_vec(),
    }];
    accept(config::load_files(&files, &options))
}

/// Loads a config directory, with secrets `secrets` available.
fn load_dir(root: &Path, secrets: &[&str]) -> Config {
    let dir = secrets_dir(secrets);
    let options = Options {
        secrets_dir: Some(dir.path().to_path_buf()),
        ..Options::default()
    };
    let outcome = config::load_dir(root, &options)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()));
    accept(outcome)
}

fn accept(outcome: config::Outcome) -> Config {
    let errors: Vec<String> = outcome.errors().map(ToString::to_string).collect();
    assert!(
        errors.is_empty(),
        "config has errors:\n{}",
        errors.join("\n")
    );
    outcome.config
}

/// The crate root, where `tests/fixtures` and `example-repo` live.
fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture repos under `tests/fixtures/translate`, sorted by name.
fn fixture_repos() -> Vec<PathBuf> {
    let root = crate_root().join("tests/fixtures/translate");
    let mut repos: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    repos.sort();
    assert!(!repos.is_empty(), "no fixture repos in {}", root.display());
    repos
}

/// The secret names fixture repos refer to (all hold the test certificate).
const FIXTURE_SECRETS: &[&str] = &[
    "example-cert",
    "other-cert",
    "client-cert",
    "api-example-cert",
];
