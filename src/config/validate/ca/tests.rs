//! `ca_secret`, `cert_required` and `sni` from YAML through `load_files`, with a real
//! secrets directory: where the CA is read from, each error at its file, line and field,
//! and that nothing which relied on an unreadable CA is served unverified.

use std::path::Path;

use crate::config::{
    Action, Cache, Config, Diagnostic, Options, Outcome, PeerValidation, Policy, Severity,
    SourceFile, UpstreamTls, load_files,
};

const CERT: &str = include_str!("../../../../tests/fixtures/certs/example.com.crt");
const OTHER: &str = include_str!("../../../../tests/fixtures/certs/other.example.crt");
const KEY: &str = include_str!("../../../../tests/fixtures/certs/example.com.key");

fn files(yaml: &str) -> [SourceFile; 1] {
    [SourceFile {
        path: "test.yaml".to_owned(),
        bytes: yaml.as_bytes().to_vec(),
    }]
}

fn options(secrets: Option<&Path>, policy: Policy) -> Options {
    Options {
        secrets_dir: secrets.map(Path::to_path_buf),
        policy,
        ..Options::default()
    }
}

fn load(yaml: &str, secrets: Option<&Path>) -> Outcome {
    load_files(&files(yaml), &options(secrets, Policy::RejectRevision))
}

fn partial(yaml: &str, secrets: &Path) -> Outcome {
    load_files(&files(yaml), &options(Some(secrets), Policy::SkipInvalid))
}

fn errors(outcome: &Outcome) -> Vec<String> {
    outcome.errors().map(Diagnostic::to_string).collect()
}

fn clean(outcome: Outcome) -> Config {
    assert!(errors(&outcome).is_empty(), "{:#?}", errors(&outcome));
    outcome.config
}

/// A secrets dir; `files` are `(secret/file, content)`.
fn secrets(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("secret dir");
        std::fs::write(path, content).expect("write secret file");
    }
    dir
}

fn context(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: getambassador.io/v3alpha1\nkind: TLSContext\nmetadata:\n  name: {name}\n\
         spec:\n{spec}"
    )
}

const UPSTREAM: &str = "---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\n\
                        metadata:\n  name: api\nspec:\n  prefix: /api/\n  \
                        service: https://api.example.com\n  tls: verify\n";

#[test]
fn the_ca_is_read_from_ca_crt_before_tls_crt() {
    let dir = secrets(&[
        ("both/ca.crt", CERT),
        ("both/tls.crt", OTHER),
        ("emissary/tls.crt", OTHER),
    ]);
    let yaml = context("a", "  ca_secret: both\n") + &context("b", "  ca_secret: emissary\n");
    let config = clean(load(&yaml, Some(dir.path())));
    assert_eq!(config.ca_bundles["both"].pem, CERT);
    assert_eq!(config.ca_bundles["emissary"].pem, OTHER);
    // A CA needs no key: `tls.key` is not read for it.
    assert!(config.secrets.is_empty());
}

#[test]
fn ca_secret_and_cert_required_make_a_peer_validation() {
    let dir = secrets(&[("clients/ca.crt", CERT)]);
    let yaml = context(
        "mtls",
        "  ca_secret: clients\n  cert_required: true\n  sni: API.Internal.example.com\n",
    ) + &context("loose", "  ca_secret: clients\n  cert_required: false\n");
    let config = clean(load(&yaml, Some(dir.path())));
    let by_name = |name: &str| {
        config
            .tls_contexts
            .iter()
            .find(|c| c.meta.name == name)
            .expect("the TLSContext")
    };
    assert_eq!(
        by_name("mtls").peer_validation,
        Some(PeerValidation {
            ca_secret: "clients".into(),
            cert_required: true
        })
    );
    assert_eq!(
        by_name("mtls").sni.as_deref(),
        Some("api.internal.example.com")
    );
    assert_eq!(
        by_name("loose")
            .peer_validation
            .as_ref()
            .map(|v| v.cert_required),
        Some(false)
    );
}

#[test]
fn a_missing_ca_is_an_error_at_the_tls_context_naming_both_files() {
    let dir = secrets(&[]);
    let outcome = load(
        &context("verify", "  ca_secret: nowhere\n"),
        Some(dir.path()),
    );
    let errors = errors(&outcome);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = &errors[0];
    assert!(
        error.starts_with("test.yaml:2:1: error: TLSContext \"verify\": ca_secret: ")
            && error.contains("no ca.crt")
            && error.contains("nowhere/tls.crt"),
        "{error}"
    );
    assert!(!outcome.is_accepted());
}

#[test]
fn a_ca_that_is_not_pem_or_holds_no_certificate_is_an_error() {
    let dir = secrets(&[
        ("garbage/ca.crt", "not a certificate\n"),
        ("key-only/ca.crt", KEY),
        (
            "broken/ca.crt",
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
        ),
    ]);
    for (secret, expected) in [
        ("garbage", "holds no PEM certificate"),
        ("key-only", "holds no PEM certificate"),
        ("broken", "is not PEM"),
    ] {
        let outcome = load(
            &context("verify", &format!("  ca_secret: {secret}\n")),
            Some(dir.path()),
        );
        let errors = errors(&outcome);
        assert_eq!(errors.len(), 1, "{secret}: {errors:#?}");
        assert!(
            errors[0].contains("ca_secret: CA secret")
                && errors[0].contains(&format!("{secret}/ca.crt"))
                && errors[0].contains(expected),
            "{secret}: {}",
            errors[0]
        );
    }
}

#[test]
fn without_a_secrets_dir_a_ca_is_a_warning_for_ci() {
    let outcome = load(&context("verify", "  ca_secret: clients\n"), None);
    assert!(errors(&outcome).is_empty(), "{:#?}", errors(&outcome));
    let warning = outcome
        .diagnostics
        .iter()
        .find(|d| d.severity == Severity::Warning && d.field == "ca_secret")
        .expect("a warning at ca_secret");
    assert!(warning.message.contains("no --secrets-dir"), "{warning}");
}

#[test]
fn bad_fields_are_errors_where_they_are_written() {
    let dir = secrets(&[("clients/ca.crt", CERT)]);
    for (spec, expected) in [
        (
            "  cert_required: true\n",
            "test.yaml:7:18: error: TLSContext \"t\": spec.cert_required: needs `ca_secret`",
        ),
        (
            "  ca_secret: ../etc\n",
            "test.yaml:7:14: error: TLSContext \"t\": spec.ca_secret: \"../etc\" is not a valid \
             Secret name",
        ),
        (
            "  ca_secret: clients\n  sni: 10.0.0.1\n",
            "test.yaml:8:8: error: TLSContext \"t\": spec.sni: \"10.0.0.1\" is not a DNS host name",
        ),
        // Still not supported: file paths are not read.
        ("  cacert_chain_file: /etc/ca.pem\n", "cacert_chain_file"),
    ] {
        let outcome = load(&context("t", spec), Some(dir.path()));
        let errors = errors(&outcome);
        assert!(
            errors.len() == 1 && errors[0].contains(expected),
            "{spec}: {errors:#?}"
        );
    }
}

const BY_NAME: &str = "---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  \
                       name: partners\nspec:\n  hostname: partners.example.com\n  tlsSecret:\n    \
                       name: cert\n  tlsContext:\n    name: verify\n";
const BY_LIST: &str = "---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  \
                       name: listed\nspec:\n  hostname: listed.example.com\n  tlsSecret:\n    \
                       name: cert\n";
const OPEN: &str = "---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  \
                    name: open\nspec:\n  hostname: open.example.com\n  tlsSecret:\n    \
                    name: cert\n";

/// Under `--allow-partial` a TLSContext with an unreadable CA is left out; what used it
/// to verify peers must not be served without the check: a Host would take clients
/// without certificates and a cluster would trust any server.
#[test]
fn what_relied_on_an_unreadable_ca_is_left_out_not_served_unverified() {
    let dir = secrets(&[("cert/tls.crt", CERT), ("cert/tls.key", KEY)]);
    let yaml = context(
        "verify",
        "  hosts: [listed.example.com]\n  ca_secret: missing\n  cert_required: true\n",
    ) + BY_NAME
        + BY_LIST
        + OPEN
        + UPSTREAM;
    let outcome = partial(&yaml, dir.path());
    assert!(outcome.is_accepted(), "{:#?}", errors(&outcome));
    let hosts: Vec<&str> = outcome
        .config
        .hosts
        .iter()
        .map(|h| h.meta.name.as_str())
        .collect();
    assert_eq!(hosts, ["open"]);
    assert!(outcome.config.mappings.is_empty());
    assert!(outcome.config.tls_contexts.is_empty());
    let errors = errors(&outcome);
    for expected in [
        "TLSContext \"verify\": ca_secret: CA secret \"missing\"",
        "Host \"partners\": tlsContext.name: TLSContext \"verify\" (at test.yaml:2:1) verifies \
         client certificates but is left out",
        "Host \"listed\": hostname: TLSContext \"verify\"",
        "Mapping \"api\": tls: TLSContext \"verify\" (at test.yaml:2:1) verifies server \
         certificates",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "no {expected:?} in {errors:#?}"
        );
    }

    // An AuthService that would call its server unverified rejects the revision.
    let auth = "---\napiVersion: getambassador.io/v3alpha1\nkind: AuthService\nmetadata:\n  \
                name: auth\nspec:\n  auth_service: https://auth.example.com\n  tls: verify\n";
    let outcome = partial(
        &(context("verify", "  ca_secret: missing\n") + auth),
        dir.path(),
    );
    assert!(!outcome.is_accepted(), "{:#?}", outcome.diagnostics);
}

#[test]
fn a_context_with_a_readable_ca_keeps_its_users() {
    let dir = secrets(&[("ca/ca.crt", CERT)]);
    let config = clean(load(
        &(context("verify", "  ca_secret: ca\n") + UPSTREAM),
        Some(dir.path()),
    ));
    let Action::Route(route) = &config.mappings[0].action else {
        panic!("a route");
    };
    assert!(matches!(&route.target.tls, UpstreamTls::Context(c) if c.name == "verify"));
}

/// A CA rotated on disk under an unchanged revision is read again, also when only
/// Mappings changed and the cache edits the last config instead of loading it whole.
#[test]
fn a_rotated_ca_is_read_again_by_an_incremental_load() {
    let dir = secrets(&[("ca/ca.crt", CERT)]);
    let options = options(Some(dir.path()), Policy::RejectRevision);
    let mut cache = Cache::new();
    let base = context("verify", "  ca_secret: ca\n") + UPSTREAM;
    let (first, _) = cache.load(&files(&base), &options);
    assert_eq!(clean(first).ca_bundles["ca"].pem, CERT);

    std::fs::write(dir.path().join("ca/ca.crt"), OTHER).expect("rotate");
    let changed = base.replace("prefix: /api/", "prefix: /api/v2/");
    let (second, _) = cache.load(&files(&changed), &options);
    assert_eq!(clean(second).ca_bundles["ca"].pem, OTHER);

    std::fs::remove_file(dir.path().join("ca/ca.crt")).expect("remove");
    let (third, _) = cache.load(&files(&base), &options);
    assert!(
        errors(&third)
            .iter()
            .any(|e| e.contains("CA secret \"ca\"")),
        "{:#?}",
        errors(&third)
    );
}
