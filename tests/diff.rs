//! `attache diff` (issue 4): two commits of a fixture repository, compared with golden
//! output in text and JSON, and its exit statuses.
//!
//! `UPDATE_GOLDEN=1 cargo test --test diff` rewrites the expected files; review the
//! change like code.

use std::path::{Path, PathBuf};
use std::process::Command;

const ATTACHE: &str = env!("CARGO_BIN_EXE_attache");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff")
}

/// Runs git in `dir` with a fixed identity and clock, so commits are reproducible.
fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .env("GIT_AUTHOR_DATE", "2026-11-30T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-11-30T00:00:00Z")
        .status()
        .expect("run git");
    assert!(status.success(), "git {args:?} failed");
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// A repository whose `gateway/` directory holds `old/`, then `new/` in the next commit;
/// a README outside it changes too and must not matter.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    let gateway = root.join("gateway");
    std::fs::create_dir_all(&gateway).expect("mkdir");
    copy_tree(&fixtures().join("old"), &gateway);
    std::fs::write(root.join("README.md"), "v1").expect("write");
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "old"]);
    std::fs::remove_dir_all(&gateway).expect("rm");
    std::fs::create_dir_all(&gateway).expect("mkdir");
    copy_tree(&fixtures().join("new"), &gateway);
    std::fs::write(root.join("README.md"), "v2").expect("write");
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "new"]);
    dir
}

fn diff(repo: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(ATTACHE)
        .arg("diff")
        .args(args)
        .arg("--repo")
        .arg(repo)
        .output()
        .expect("run attache diff");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn golden(name: &str, actual: &str) {
    let path = fixtures().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (UPDATE_GOLDEN=1 creates it)",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "{name} differs (UPDATE_GOLDEN=1 rewrites it)"
    );
}

#[test]
fn two_commits_compared_route_by_route() {
    let repo = repository();
    let (code, text, stderr) = diff(repo.path(), &["HEAD~1", "HEAD", "--git-path", "gateway"]);
    assert_eq!(code, 1, "different configurations exit 1: {stderr}");
    golden("expected.txt", &text);
    let (code, json, stderr) = diff(
        repo.path(),
        &[
            "HEAD~1",
            "HEAD",
            "--git-path",
            "gateway",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    golden("expected.json", &json);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed["equal"], false);
}

#[test]
fn equal_configurations_exit_zero() {
    let repo = repository();
    let (code, text, stderr) = diff(repo.path(), &["HEAD", "HEAD", "--git-path", "gateway"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(text, "no changes to Envoy's configuration\n");
    let (code, _, stderr) = diff(
        repo.path(),
        &["HEAD~1", "HEAD", "--git-path", "gateway/mappings/none"],
    );
    assert_eq!(code, 2, "a missing --git-path is an error: {stderr}");
    assert!(stderr.contains("no directory"), "{stderr}");
}

#[test]
fn errors_exit_two_and_say_why() {
    let repo = repository();
    let (code, _, stderr) = diff(repo.path(), &["HEAD~1", "no-such-branch"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no-such-branch"), "{stderr}");

    // A commit that does not validate: its errors, with file:line.
    std::fs::write(
        repo.path().join("gateway/mappings/bad.yaml"),
        "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: bad\nspec:\n  prefix: nope\n  service: x:80\n",
    )
    .expect("write");
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "bad"]);
    let (code, _, stderr) = diff(repo.path(), &["HEAD~1", "HEAD", "--git-path", "gateway"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("mappings/bad.yaml:6:"), "{stderr}");

    let not_a_repo = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = diff(not_a_repo.path(), &["A", "B"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a git repository"), "{stderr}");
}
