//! The `attache` binary: exit codes, output formats, and renders Envoy accepts.
mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const CERT: &str = include_str!("fixtures/certs/example.com.crt");
const KEY: &str = include_str!("fixtures/certs/example.com.key");

fn attache(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("AMBASSADOR_ID")
        .output()
        .expect("run attache")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn example_repo() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("example-repo")
        .display()
        .to_string()
}

/// A secrets dir holding `api-example-cert`, the secret example-repo's TLS Host names.
fn secrets_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("api-example-cert");
    std::fs::create_dir(&cert).expect("create secret dir");
    std::fs::write(cert.join("tls.crt"), CERT).expect("write cert");
    std::fs::write(cert.join("tls.key"), KEY).expect("write key");
    dir
}

/// A config dir with two invalid Mappings (two errors, in two files) and a valid one.
fn bad_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).expect("write config file");
    };
    write(
        "typo.yaml",
        "apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: users
spec:
  prefix: /users/
  service: users
  sevrice: typo
",
    );
    write(
        "mixed.yaml",
        "apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: good
spec:
  prefix: /good/
  service: 127.0.0.1:9000
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: relative
spec:
  prefix: relative/
  service: 127.0.0.1:9000
",
    );
    dir
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn validate_example_repo_exits_0_with_a_summary() {
    let output = attache(&["validate", &example_repo()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    // Without --secrets-dir the TLS Host's certificate is not checked: a warning.
    assert!(
        text.contains("hosts/hosts.yaml:") && text.contains("warning: Host \"api\""),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("warning: revision accepted: 0 errors, 1 warning in 4 files"),
        "{text}"
    );

    let secrets = secrets_dir();
    let output = attache(&[
        "validate",
        &example_repo(),
        "--secrets-dir",
        path_str(secrets.path()),
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output),
        "ok: revision accepted: 0 errors, 0 warnings in 4 files\n"
    );
}

#[test]
fn validate_reports_every_error_rustc_style_and_exits_1() {
    let repo = bad_repo();
    let output = attache(&["validate", path_str(repo.path())]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("mixed.yaml:14:11: error: Mapping \"relative\": spec.prefix: "),
        "{text}"
    );
    assert!(
        lines[1].starts_with("typo.yaml:8:3: error: Mapping \"users\": spec.sevrice: "),
        "{text}"
    );
    assert_eq!(
        lines[2],
        "error: revision rejected: 2 errors, 0 warnings in 2 files"
    );
}

#[test]
fn validate_json_is_one_parseable_report() {
    let repo = bad_repo();
    let output = attache(&["validate", path_str(repo.path()), "--format", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(report["accepted"], false);
    assert_eq!(report["errors"], 2);
    assert_eq!(report["warnings"], 0);
    assert_eq!(report["files"], 2);
    let diagnostics = report["diagnostics"].as_array().expect("a list");
    assert_eq!(diagnostics.len(), 2);
    assert_eq!(diagnostics[1]["file"], "typo.yaml");
    assert_eq!(diagnostics[1]["line"], 8);
    assert_eq!(diagnostics[1]["column"], 3);
    assert_eq!(diagnostics[1]["severity"], "error");
    assert_eq!(diagnostics[1]["resource"]["kind"], "Mapping");
    assert_eq!(diagnostics[1]["resource"]["name"], "users");
    assert_eq!(diagnostics[1]["field"], "spec.sevrice");
}

#[test]
fn validate_allow_partial_accepts_and_says_what_was_left_out() {
    let repo = bad_repo();
    let output = attache(&["validate", path_str(repo.path()), "--allow-partial"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.contains("warning: invalid resources left out (--allow-partial): 2 errors"),
        "{text}"
    );

    let output = attache(&[
        "validate",
        path_str(repo.path()),
        "--allow-partial",
        "--format=json",
    ]);
    let report: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(report["accepted"], true);
    assert_eq!(report["policy"], "skip-invalid");
}

#[test]
fn unreadable_dir_and_bad_arguments_exit_2() {
    let missing = tempfile::tempdir().expect("temp dir");
    let missing: PathBuf = missing.path().join("no-such-dir");
    for command in ["validate", "render"] {
        let output = attache(&[command, path_str(&missing)]);
        assert_eq!(output.status.code(), Some(2), "{command}");
        assert!(output.stdout.is_empty(), "{command}");
        assert!(
            stderr(&output).contains("no-such-dir"),
            "{command}: {}",
            stderr(&output)
        );
    }
    let usage = [
        &["validate"][..],
        &["validate", "x", "--format", "yaml"],
        &["render", "x", "--admin-port", "9901"],
        &["render", "x", "--bootstrap", "--admin-port", "not-a-port"],
        &["frobnicate"],
    ];
    for args in usage {
        let output = attache(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn render_of_a_rejected_revision_prints_nothing_and_exits_1() {
    let repo = bad_repo();
    for extra in [&[][..], &["--bootstrap"]] {
        let mut args = vec!["render", path_str(repo.path())];
        args.extend_from_slice(extra);
        let output = attache(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}: {}", stdout(&output));
        let errors = stderr(&output);
        assert!(errors.contains("typo.yaml:8:3: error:"), "{errors}");
        assert!(
            errors.contains("error: revision rejected: 2 errors"),
            "{errors}"
        );
    }
}

/// Two gateways in one repository: `--ambassador-id` (or AMBASSADOR_ID, as in Emissary)
/// picks which one's resources are rendered.
#[test]
fn render_takes_only_the_resources_of_the_gateway_it_is_for() {
    let repo = tempfile::tempdir().expect("temp dir");
    let mapping = |name: &str, id: &str| {
        format!(
            "---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {name}\n\
             spec:\n  ambassador_id: [{id}]\n  prefix: /{name}/\n  service: {name}:80\n"
        )
    };
    std::fs::write(
        repo.path().join("mappings.yaml"),
        mapping("shop", "default") + &mapping("admin", "internal"),
    )
    .expect("write");
    let routes = |output: &Output| {
        assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
        let doc: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
        doc["routes"].to_string()
    };
    let dir = path_str(repo.path());
    let public = routes(&attache(&["render", dir, "--format", "json"]));
    assert!(
        public.contains("/shop/") && !public.contains("/admin/"),
        "{public}"
    );
    let internal = routes(&attache(&[
        "render",
        dir,
        "--format",
        "json",
        "--ambassador-id",
        "internal",
    ]));
    assert!(
        internal.contains("/admin/") && !internal.contains("/shop/"),
        "{internal}"
    );
    let from_env = Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["render", dir, "--format", "json"])
        .env("AMBASSADOR_ID", "internal")
        .output()
        .expect("run attache");
    assert_eq!(routes(&from_env), internal);
    let bad = attache(&["validate", dir, "--ambassador-id", ""]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("ambassador_id"), "{}", stderr(&bad));
}

#[test]
fn render_allow_partial_renders_the_valid_resources() {
    let repo = bad_repo();
    let output = attache(&[
        "render",
        path_str(repo.path()),
        "--allow-partial",
        "--format",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let doc: Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    let text = doc["routes"].to_string();
    assert!(text.contains("/good/"), "{text}");
    assert!(!text.contains("relative/"), "{text}");
}

#[test]
fn render_example_repo_lists_resources_and_hides_the_key() {
    let secrets = secrets_dir();
    let key_line = KEY.lines().nth(1).expect("a PEM key has a base64 line");
    let mut docs = Vec::new();
    for format in ["yaml", "json"] {
        let output = attache(&[
            "render",
            &example_repo(),
            "--format",
            format,
            "--secrets-dir",
            path_str(secrets.path()),
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        // Clean revision: nothing on stderr.
        assert_eq!(stderr(&output), "");
        let text = stdout(&output);
        assert!(
            !text.contains(key_line),
            "{format} render leaks the private key"
        );
        let doc: Value = match format {
            "json" => serde_json::from_str(&text).expect("stdout is JSON"),
            _ => serde_saphyr::from_str(&text).expect("stdout is YAML"),
        };
        docs.push(doc);
    }
    assert_eq!(docs[0], docs[1], "YAML and JSON say the same");
    let doc = &docs[0];
    for key in ["clusters", "endpoints", "listeners", "routes", "secrets"] {
        assert!(
            doc[key].as_array().is_some_and(|a| !a.is_empty()),
            "{key} missing or empty"
        );
    }
    let hcm = &doc["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(
        hcm["@type"],
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    assert!(hcm["rds"]["route_config_name"].is_string(), "{hcm}");
    assert_eq!(doc["secrets"][0]["name"], "api-example-cert");
}

#[test]
fn render_bootstrap_of_example_repo_passes_envoy_validate() {
    let Some(envoy) = util::envoy_binary() else {
        return;
    };
    let secrets = secrets_dir();
    let out = tempfile::tempdir().expect("temp dir");
    let admin_port = util::free_port().to_string();
    for format in ["yaml", "json"] {
        let output = attache(&[
            "render",
            &example_repo(),
            "--bootstrap",
            "--admin-port",
            &admin_port,
            "--format",
            format,
            "--secrets-dir",
            path_str(secrets.path()),
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let path = out.path().join(format!("envoy.{format}"));
        std::fs::write(&path, &output.stdout).expect("write bootstrap");
        util::envoy_validate(&envoy, &path).unwrap_or_else(|e| panic!("{e}"));
    }
}
