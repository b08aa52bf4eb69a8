//! Every config the test suite keeps, rendered by the binary as a static bootstrap, is a
//! config a real Envoy 1.40 accepts (`envoy --mode validate`), and every bad input is
//! refused by `attache validate` with exit status 1, never a panic (issue 2).
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

const ATTACHE: &str = env!("CARGO_BIN_EXE_attache");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A secrets dir holding the test certificate under every name the fixtures use.
fn secrets(dir: &Path) -> PathBuf {
    let secrets = dir.join("secrets");
    let certs = root().join("tests/fixtures/certs");
    for name in [
        "api-example-cert",
        "example-cert",
        "other-cert",
        "client-cert",
    ] {
        let secret = secrets.join(name);
        std::fs::create_dir_all(&secret).expect("secret dir");
        std::fs::copy(certs.join("example.com.crt"), secret.join("tls.crt")).expect("crt");
        std::fs::copy(certs.join("example.com.key"), secret.join("tls.key")).expect("key");
    }
    secrets
}

fn config_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("example-repo")];
    let fixtures = root().join("tests/fixtures/translate");
    let mut translate: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("translate fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    translate.sort();
    assert!(translate.len() >= 3, "translate fixtures went missing");
    dirs.extend(translate);
    dirs
}

#[test]
fn every_fixture_renders_to_a_bootstrap_envoy_accepts() {
    let Some(envoy) = util::envoy_binary() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let secrets = secrets(tmp.path());
    let mut failures = Vec::new();
    for dir in config_dirs() {
        for format in ["yaml", "json"] {
            let output = Command::new(ATTACHE)
                .args([
                    "render",
                    "--bootstrap",
                    "--admin-port",
                    "9901",
                    "--format",
                    format,
                ])
                .arg("--secrets-dir")
                .arg(&secrets)
                .arg(&dir)
                .output()
                .expect("run attache render");
            if !output.status.success() {
                failures.push(format!(
                    "{}: render failed: {}",
                    dir.display(),
                    String::from_utf8_lossy(&output.stderr)
                ));
                continue;
            }
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            let path = tmp.path().join(format!("{name}.{format}"));
            std::fs::write(&path, &output.stdout).expect("write bootstrap");
            if let Err(e) = util::envoy_validate(&envoy, &path) {
                failures.push(format!("{} ({format}): {e}", dir.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_bad_input_is_refused_with_status_1() {
    let bad = root().join("tests/fixtures/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&bad)
        .expect("bad corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for file in files {
        let expects_error = std::fs::read(&file)
            .map(|b| String::from_utf8_lossy(&b).contains(" error: "))
            .unwrap_or(true);
        let tmp = tempfile::tempdir().expect("tempdir");
        let name = file.file_name().expect("file name");
        std::fs::copy(&file, tmp.path().join(name)).expect("copy");
        let output = Command::new(ATTACHE)
            .arg("validate")
            .arg(tmp.path())
            .output()
            .expect("run attache validate");
        let expected = if expects_error { 1 } else { 0 };
        if output.status.code() != Some(expected) {
            failures.push(format!(
                "{}: exit {:?}, expected {expected}\n{}",
                name.to_string_lossy(),
                output.status.code(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        if expects_error && !stdout.contains(&*name.to_string_lossy()) {
            failures.push(format!(
                "{}: the report does not name the file:\n{stdout}",
                name.to_string_lossy()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
