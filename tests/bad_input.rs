//! The bad-input corpus: every file under `tests/fixtures/bad/` is a config revision a
//! user could commit by mistake. Each names, in `# expect:` comments, the diagnostics it
//! must produce:
//!
//! ```text
//! # expect: 6:3 error: Mapping "users": spec.prefx: unknown field
//! ```
//!
//! `LINE` or `LINE:COL`, then the severity, then a piece of the message that must appear
//! in the rendered diagnostic. Every file must also be rejected as a revision (unless it
//! expects only warnings), and nothing may panic. Inputs too big to commit (a 10 MB file)
//! are generated here.

use std::fs;
use std::path::{Path, PathBuf};

use attache::config::{self, Diagnostic, Options, Severity, SourceFile};

struct Expectation {
    line: u32,
    column: Option<u32>,
    severity: Severity,
    text: String,
}

fn parse_expectations(path: &Path, bytes: &[u8]) -> Vec<Expectation> {
    let text = String::from_utf8_lossy(bytes);
    let mut expectations = Vec::new();
    for comment in text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("# expect: "))
    {
        let (position, rest) = comment
            .split_once(' ')
            .unwrap_or_else(|| panic!("{}: malformed expectation {comment:?}", path.display()));
        let (line, column) = match position.split_once(':') {
            Some((line, column)) => (line, Some(column.parse().expect("column"))),
            None => (position, None),
        };
        let (severity, text) = if let Some(text) = rest.strip_prefix("error: ") {
            (Severity::Error, text)
        } else if let Some(text) = rest.strip_prefix("warning: ") {
            (Severity::Warning, text)
        } else {
            panic!(
                "{}: expectation needs error/warning: {comment:?}",
                path.display()
            )
        };
        expectations.push(Expectation {
            line: line.parse().expect("line number"),
            column,
            severity,
            text: text.to_owned(),
        });
    }
    expectations
}

fn load(name: &str, bytes: Vec<u8>) -> config::Outcome {
    let files = [SourceFile {
        path: name.to_owned(),
        bytes,
    }];
    config::load_files(&files, &Options::default())
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("tests/fixtures/bad")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn matches(d: &Diagnostic, e: &Expectation) -> bool {
    d.line == e.line
        && e.column.is_none_or(|c| d.column == c)
        && d.severity == e.severity
        && d.to_string().contains(&e.text)
}

#[test]
fn corpus_is_big_enough() {
    // The issue asks for at least 25 committed bad inputs; keep the corpus from shrinking.
    assert!(corpus().len() >= 25, "only {} bad inputs", corpus().len());
}

#[test]
fn every_bad_input_reports_its_expected_diagnostics() {
    let mut failures = Vec::new();
    for path in corpus() {
        let bytes = fs::read(&path).expect("readable fixture");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let expectations = parse_expectations(&path, &bytes);
        assert!(
            !expectations.is_empty(),
            "{name}: has no `# expect:` comment"
        );
        let outcome = load(&name, bytes);
        let rendered: Vec<String> = outcome.diagnostics.iter().map(|d| d.to_string()).collect();
        for e in &expectations {
            if !outcome.diagnostics.iter().any(|d| matches(d, e)) {
                failures.push(format!(
                    "{name}: expected {}:{} {:?} containing {:?}; got:\n    {}",
                    e.line,
                    e.column.map_or("*".into(), |c| c.to_string()),
                    e.severity,
                    e.text,
                    rendered.join("\n    ")
                ));
            }
        }
        let expects_error = expectations.iter().any(|e| e.severity == Severity::Error);
        if expects_error == outcome.is_accepted() {
            failures.push(format!(
                "{name}: accepted={} but expects errors={expects_error}",
                outcome.is_accepted()
            ));
        }
        // Every diagnostic names the file it is about.
        for d in &outcome.diagnostics {
            if &*d.file != name.as_str() {
                failures.push(format!("{name}: diagnostic names another file: {d}"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_bad_file_does_not_hide_the_good_ones_under_allow_partial() {
    let good = "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: ok\n\
                spec:\n  prefix: /ok/\n  service: ok\n";
    let mut files = vec![SourceFile {
        path: "good.yaml".into(),
        bytes: good.as_bytes().to_vec(),
    }];
    for path in corpus() {
        let bytes = fs::read(&path).unwrap();
        // Invalid enforcing resources reject even a partial revision: see the next test.
        if ENFORCING.iter().any(|k| contains(&bytes, k)) {
            continue;
        }
        files.push(SourceFile {
            path: path.file_name().unwrap().to_string_lossy().into_owned(),
            bytes,
        });
    }
    let options = Options {
        policy: config::Policy::SkipInvalid,
        ..Options::default()
    };
    let outcome = config::load_files(&files, &options);
    assert!(outcome.is_accepted());
    assert!(outcome.config.mappings.iter().any(|m| m.meta.name == "ok"));
    assert!(outcome.errors().count() >= 25);

    let strict = config::load_files(&files, &Options::default());
    assert!(!strict.is_accepted(), "one bad file rejects the revision");
}

/// Kinds whose absence would let through traffic they exist to stop.
const ENFORCING: &[&str] = &[
    "kind: AuthService",
    "kind: RateLimitService",
    "kind: LocalRateLimit",
    "kind: TCPMapping",
    "kind: Filter",
    "kind: FilterPolicy",
    "kind: ExternalFilter",
];

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Issue 7: leaving out an invalid AuthService would serve every route unauthenticated,
/// so `--allow-partial` must not: the revision is rejected and the last good one serves.
#[test]
fn an_invalid_enforcing_resource_rejects_even_a_partial_revision() {
    for path in corpus() {
        let bytes = fs::read(&path).unwrap();
        if !ENFORCING.iter().any(|k| contains(&bytes, k)) {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let files = [SourceFile {
            path: name.clone(),
            bytes,
        }];
        let options = Options {
            policy: config::Policy::SkipInvalid,
            ..Options::default()
        };
        let outcome = config::load_files(&files, &options);
        let enforcing_error = outcome.errors().any(|d| {
            d.resource.as_ref().is_some_and(|r| {
                ENFORCING
                    .iter()
                    .any(|k| k.strip_prefix("kind: ") == Some(r.kind.as_str()))
            })
        });
        assert_eq!(
            outcome.is_accepted(),
            !enforcing_error,
            "{name}: {:?}",
            outcome.diagnostics
        );
    }
    // A broken file that mentions an AuthService may have held one.
    let files = [SourceFile {
        path: "broken.yaml".into(),
        bytes: b"kind: AuthService\nspec: [unclosed\n".to_vec(),
    }];
    let options = Options {
        policy: config::Policy::SkipInvalid,
        ..Options::default()
    };
    assert!(!config::load_files(&files, &options).is_accepted());
    // A bad Mapping beside a good AuthService is still skipped under --allow-partial.
    let yaml = "apiVersion: getambassador.io/v3alpha1\nkind: AuthService\nmetadata:\n  name: auth\n\
                spec:\n  auth_service: auth:3000\n---\napiVersion: getambassador.io/v3alpha1\n\
                kind: Mapping\nmetadata:\n  name: bad\nspec:\n  prefix: nope\n  service: x\n";
    let files = [SourceFile {
        path: "mixed.yaml".into(),
        bytes: yaml.as_bytes().to_vec(),
    }];
    let options = Options {
        policy: config::Policy::SkipInvalid,
        ..Options::default()
    };
    let outcome = config::load_files(&files, &options);
    assert!(outcome.is_accepted(), "{:?}", outcome.diagnostics);
    assert!(outcome.config.auth_service.is_some());
    assert!(outcome.config.mappings.is_empty());
}

#[test]
fn a_ten_megabyte_file_is_refused_without_being_parsed() {
    let mut bytes =
        b"apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: big\n\
spec:\n  prefix: /big/\n  service: big\n  add_request_headers:\n"
            .to_vec();
    let mut n = 0;
    while bytes.len() < 10 * 1024 * 1024 {
        bytes.extend_from_slice(format!("    x-filler-{n}: \"{}\"\n", "y".repeat(64)).as_bytes());
        n += 1;
    }
    let outcome = load("big.yaml", bytes);
    assert!(!outcome.is_accepted());
    let errors: Vec<String> = outcome.errors().map(|d| d.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("big.yaml:") && errors[0].contains("larger than the limit"),
        "{errors:?}"
    );
}

#[test]
fn a_ten_megabyte_file_is_refused_when_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("big.yaml"), vec![b'#'; 10 * 1024 * 1024]).unwrap();
    let outcome = config::load_dir(dir.path(), &Options::default()).unwrap();
    let errors: Vec<String> = outcome.errors().map(|d| d.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("big.yaml") && errors[0].contains("larger than the limit"),
        "{errors:?}"
    );
}

#[test]
fn a_missing_directory_is_an_error_naming_it() {
    let err = config::load_dir(
        Path::new("/nonexistent/attache-config"),
        &Options::default(),
    )
    .expect_err("missing dir");
    assert!(
        err.to_string().contains("/nonexistent/attache-config"),
        "{err}"
    );
}
