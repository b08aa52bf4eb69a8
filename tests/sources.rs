//! Sources end to end (issue 4): real git repositories and directories, the `attache
//! serve` binary, a real Envoy 1.40 on `attache bootstrap`, traffic to loopback backends.
//!
//! Each test follows one story a user lives through: commits reach Envoy; a bad commit
//! is rejected while the previous routes keep serving; `git revert` gives Envoy exactly
//! the old configuration back (same content hashes); force-pushes and a deleted branch;
//! a remote that goes down and comes back; a ConfigMap swapped the way kubelet does it.
mod util;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::{Backend, EnvoyProcess, free_port, http_get};

const ATTACHE: &str = env!("CARGO_BIN_EXE_attache");

/// An `attache serve` child process, killed on drop; its log goes to a file.
struct Serve {
    child: Child,
    log: PathBuf,
    /// The admin server (webhook, API).
    admin: SocketAddr,
}

impl Serve {
    fn start(source_args: &[&str], state: &Path, xds: SocketAddr, log: PathBuf) -> Serve {
        let file = std::fs::File::create(&log).expect("create attache log");
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(ATTACHE)
            .arg("serve")
            .args(source_args)
            .arg("--state-dir")
            .arg(state)
            .args(["--xds-addr", &xds.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .env("RUST_LOG", "attache=info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn attache serve");
        Serve { child, log, admin }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many log lines contain `needle`.
    fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits (at most `limit`) until the log has `n` lines with `needle`.
    fn wait_for(&self, needle: &str, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count(needle) < n {
            assert!(
                Instant::now() < deadline,
                "attache never logged {n} x {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway of one listener and one Mapping per `(prefix, backend)`.
fn gateway(listener_port: u16, mappings: &[(&str, &Backend)]) -> Vec<(String, String)> {
    let mut files = vec![(
        "listener.yaml".to_owned(),
        util::listener_yaml(listener_port),
    )];
    for (prefix, backend) in mappings {
        files.push((
            format!("mappings/{prefix}.yaml"),
            mapping(prefix, &backend.addr.to_string()),
        ));
    }
    files
}

fn mapping(prefix: &str, service: &str) -> String {
    format!(
        "apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: {prefix}
spec:
  prefix: /{prefix}/
  service: {service}
"
    )
}

fn bootstrap(dir: &Path, xds: SocketAddr, admin_port: u16) -> PathBuf {
    let output = Command::new(ATTACHE)
        .args(["bootstrap", "--node-id", "edge-1", "--cluster", "edge"])
        .args(["--xds-address", &xds.to_string()])
        .args(["--admin-port", &admin_port.to_string()])
        .output()
        .expect("run attache bootstrap");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, &output.stdout).expect("write bootstrap");
    path
}

/// The status code of `GET /{prefix}/x` through Envoy, and which backend answered.
fn get(listener: SocketAddr, prefix: &str) -> Option<(u16, String)> {
    http_get(listener, "gateway.example", &format!("/{prefix}/x"), &[])
        .ok()
        .map(|r| (r.status, r.body_text()))
}

/// Waits until `prefix` is routed to `backend` (`Some`) or answers 404 (`None`).
fn until_routed(
    envoy: &EnvoyProcess,
    listener: SocketAddr,
    prefix: &str,
    backend: Option<&Backend>,
    serve: &Serve,
) {
    let ok = envoy.eventually(Duration::from_secs(20), || {
        match (get(listener, prefix), backend) {
            (Some((200, body)), Some(b)) => body.starts_with(&b.name),
            (Some((404, _)), None) => true,
            _ => false,
        }
    });
    assert!(
        ok,
        "/{prefix}/ never {}; last answer {:?}\nattache log:\n{}\nenvoy log:\n{}",
        match backend {
            Some(b) => format!("reached {}", b.name),
            None => "answered 404".to_owned(),
        },
        get(listener, prefix),
        serve.log(),
        envoy.log()
    );
}

/// `version_info` of every dynamic resource Envoy holds, by resource name.
fn envoy_versions(envoy: &EnvoyProcess) -> Vec<(String, String)> {
    let resp = http_get(envoy.admin, "localhost", "/config_dump", &[]).expect("config_dump");
    let dump: serde_json::Value = serde_json::from_str(&resp.body_text()).expect("json");
    let mut versions = Vec::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        for (list, field) in [
            ("dynamic_active_clusters", "cluster"),
            ("dynamic_listeners", "active_state"),
            ("dynamic_route_configs", "route_config"),
        ] {
            for item in config[list].as_array().into_iter().flatten() {
                let (name, version) = if field == "active_state" {
                    (&item["name"], &item["active_state"]["version_info"])
                } else {
                    (&item[field]["name"], &item["version_info"])
                };
                versions.push((name.to_string(), version.to_string()));
            }
        }
    }
    versions.sort();
    versions
}

// === git ===

/// A bare "remote" and a working clone that pushes to it, with the `git` CLI.
struct Repo {
    remote: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new(root: &Path) -> Repo {
        let remote = root.join("remote.git");
        let work = root.join("work");
        git(
            root,
            &["init", "-q", "--bare", "-b", "main", path_str(&remote)],
        );
        // A hosting service lets a branch be deleted, as the test does.
        git(&remote, &["config", "receive.denyDeleteCurrent", "ignore"]);
        git(root, &["init", "-q", "-b", "main", path_str(&work)]);
        git(&work, &["remote", "add", "origin", path_str(&remote)]);
        Repo { remote, work }
    }

    fn url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    /// Writes `files` (and removes `remove`), commits with `message`, pushes; returns
    /// the commit SHA.
    fn commit(&self, files: &[(String, String)], remove: &[&str], message: &str) -> String {
        self.commit_and_push(files, remove, message, &[])
    }

    fn commit_and_push(
        &self,
        files: &[(String, String)],
        remove: &[&str],
        message: &str,
        push_flags: &[&str],
    ) -> String {
        for (path, text) in files {
            let path = self.work.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        for path in remove {
            git(&self.work, &["rm", "-q", path]);
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        let mut push = vec!["push", "-q"];
        push.extend_from_slice(push_flags);
        push.extend_from_slice(&["origin", "HEAD:main"]);
        git(&self.work, &push);
        self.head()
    }

    fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_owned()
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs git in `dir` with a fixed identity; panics with its output on failure.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn git_commits_reverts_and_force_pushes_reach_envoy() {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(tmp.path());
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let first = repo.commit(&gateway(listener.port(), &[("a", &a)]), &[], "route /a/");

    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let url = repo.url();
    let serve = Serve::start(
        &["--git", &url, "--interval", "200ms"],
        &tmp.path().join("state"),
        xds,
        tmp.path().join("attache.log"),
    );
    let admin = free_port();
    let envoy = EnvoyProcess::start(&envoy_bin, &bootstrap(tmp.path(), xds, admin), admin);
    until_routed(&envoy, listener, "a", Some(&a), &serve);
    assert!(serve.log().contains(&first), "the log names the commit");

    // A commit adds a Mapping.
    let before_b = envoy_versions(&envoy);
    let with_b = repo.commit(
        &gateway(listener.port(), &[("a", &a), ("b", &b)]),
        &[],
        "add /b/",
    );
    until_routed(&envoy, listener, "b", Some(&b), &serve);
    serve.wait_for("revision accepted", 2, Duration::from_secs(10));

    // A commit with an error is rejected with file:line; /a/ and /b/ keep serving.
    let bad = repo.commit(
        &[(
            "mappings/broken.yaml".to_owned(),
            "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: broken\nspec:\n  prefix: no-slash\n  service: x:80\n".to_owned(),
        )],
        &[],
        "a typo",
    );
    serve.wait_for("revision rejected", 1, Duration::from_secs(10));
    let log = serve.log();
    assert!(
        log.contains("mappings/broken.yaml:6:"),
        "file:line of the error:\n{log}"
    );
    assert!(log.contains(&bad), "the rejected commit is named:\n{log}");
    assert_eq!(get(listener, "a").map(|r| r.0), Some(200));
    assert_eq!(get(listener, "b").map(|r| r.0), Some(200));
    // Not retried while the branch stays put.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(serve.count("revision rejected"), 1, "{}", serve.log());

    // The next good commit is applied.
    repo.commit(&[], &["mappings/broken.yaml"], "fix the typo");
    serve.wait_for("revision accepted", 3, Duration::from_secs(10));

    // `git revert` of the commit that added /b/: /b/ is gone and every resource Envoy
    // holds carries the same content version as before /b/ existed.
    git(&repo.work, &["revert", "--no-edit", &with_b]);
    git(&repo.work, &["push", "-q", "origin", "HEAD:main"]);
    until_routed(&envoy, listener, "b", None, &serve);
    let ok = envoy.eventually(Duration::from_secs(10), || {
        envoy_versions(&envoy) == before_b
    });
    assert!(
        ok,
        "after the revert Envoy holds {:?}, before /b/ it held {before_b:?}",
        envoy_versions(&envoy)
    );

    // Force-push to an older history with /c/ instead.
    git(&repo.work, &["reset", "-q", "--hard", &first]);
    repo.commit_and_push(
        &gateway(listener.port(), &[("a", &a), ("c", &c)]),
        &[],
        "rewrite: /c/",
        &["--force"],
    );
    until_routed(&envoy, listener, "c", Some(&c), &serve);

    // The branch is deleted: reported, and what was served stays.
    git(&repo.work, &["push", "-q", "origin", "--delete", "main"]);
    serve.wait_for("has no branch main", 1, Duration::from_secs(10));
    assert_eq!(get(listener, "c").map(|r| r.0), Some(200));
    // Recreated with other content: followed.
    git(&repo.work, &["checkout", "-q", "--orphan", "again"]);
    git(&repo.work, &["rm", "-rqf", "."]);
    repo.commit(&gateway(listener.port(), &[("b", &b)]), &[], "recreated");
    until_routed(&envoy, listener, "b", Some(&b), &serve);
    until_routed(&envoy, listener, "c", None, &serve);
}

#[test]
fn git_path_tag_and_pinned_commit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(tmp.path());
    let a = Backend::start("a");
    let port = free_port();
    let mut files = gateway(port, &[("a", &a)]);
    for (path, _) in &mut files {
        *path = format!("edge/{path}");
    }
    // Outside --git-path: an invalid file that must not be read.
    files.push(("other/bad.yaml".to_owned(), "kind: Mapping\n: :".to_owned()));
    let first = repo.commit(&files, &[], "edge gateway");
    git(&repo.work, &["tag", "v1"]);
    git(&repo.work, &["push", "-q", "origin", "v1"]);
    let url = repo.url();
    for (name, args) in [
        ("branch", vec!["--git", &url, "--git-path", "edge"]),
        (
            "tag",
            vec!["--git", &url, "--git-path", "edge/", "--tag", "v1"],
        ),
        (
            "rev",
            vec!["--git", &url, "--git-path", "edge", "--rev", &first],
        ),
    ] {
        let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let serve = Serve::start(
            &args,
            &tmp.path().join(format!("state-{name}")),
            xds,
            tmp.path().join(format!("{name}.log")),
        );
        serve.wait_for("revision accepted", 1, Duration::from_secs(20));
        assert!(serve.log().contains(&first), "{name}: {}", serve.log());
    }
    // A subdirectory that does not exist is an error that names it.
    let output = Command::new(ATTACHE)
        .args(["serve", "--git", &url, "--git-path", "nope"])
        .arg("--state-dir")
        .arg(tmp.path().join("state-nope"))
        .args(["--xds-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-addr", "127.0.0.1:0"])
        .output()
        .expect("run attache");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no directory \"nope\""), "{stderr}");
}

/// `POST path` with `body` (of which only `send` bytes are sent, to test a refused
/// oversized body); the response status, or 0 when the connection broke first.
fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8], send: usize) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    // Written from another thread: a server that refuses a large body answers before it
    // has read all of it, and that answer must be read while the body is still going.
    let part = body[..send.min(body.len())].to_vec();
    let writer = stream.try_clone().ok().map(|mut w| {
        std::thread::spawn(move || {
            let _ = w.write_all(&part);
        })
    });
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    drop(stream);
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_signed_webhook_fetches_at_once_and_nothing_else_does() {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(tmp.path());
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    repo.commit(&gateway(listener.port(), &[("a", &a)]), &[], "route /a/");
    let secret = tmp.path().join("webhook-secret");
    std::fs::write(&secret, "s3cret\n").expect("write secret");
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let url = repo.url();
    // Polling alone would take ten minutes: only the webhook can make this test pass.
    let serve = Serve::start(
        &[
            "--git",
            &url,
            "--interval",
            "10m",
            "--webhook-secret-file",
            path_str(&secret),
        ],
        &tmp.path().join("state"),
        xds,
        tmp.path().join("attache.log"),
    );
    let admin = free_port();
    let envoy = EnvoyProcess::start(&envoy_bin, &bootstrap(tmp.path(), xds, admin), admin);
    until_routed(&envoy, listener, "a", Some(&a), &serve);

    repo.commit(
        &gateway(listener.port(), &[("a", &a), ("b", &b)]),
        &[],
        "add /b/",
    );
    let body = br#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;
    let good = attache::source::webhook::github_signature(b"s3cret", body);
    let wrong = attache::source::webhook::github_signature(b"guess", body);
    // Refused, and nothing fetched: a wrong signature, a missing one, a wrong GitLab
    // token, a body too large to be read.
    for (headers, status) in [
        (vec![("x-hub-signature-256", wrong.as_str())], 401),
        (vec![], 401),
        (vec![("x-gitlab-token", "s3cre")], 401),
    ] {
        assert_eq!(
            post(serve.admin, "/webhook", &headers, body, body.len()),
            status,
            "{headers:?}"
        );
    }
    let huge = vec![b' '; 6 * 1024 * 1024];
    let huge_signature = attache::source::webhook::github_signature(b"s3cret", &huge);
    assert_eq!(
        post(
            serve.admin,
            "/webhook",
            &[("x-hub-signature-256", &huge_signature)],
            &huge,
            huge.len()
        ),
        413
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        get(listener, "b").map(|r| r.0),
        Some(404),
        "{}",
        serve.log()
    );

    // A valid GitHub signature: fetched at once.
    assert_eq!(
        post(
            serve.admin,
            "/webhook",
            &[("x-hub-signature-256", &good)],
            body,
            body.len()
        ),
        202
    );
    until_routed(&envoy, listener, "b", Some(&b), &serve);
    // And a GitLab token.
    repo.commit(&gateway(listener.port(), &[("c", &c)]), &[], "only /c/");
    assert_eq!(
        post(
            serve.admin,
            "/webhook",
            &[("x-gitlab-token", "s3cret")],
            b"{}",
            2
        ),
        202
    );
    until_routed(&envoy, listener, "c", Some(&c), &serve);
}

/// `git daemon` serving `base` on `port`, killed on drop.
struct GitDaemon(Child);

impl GitDaemon {
    fn start(base: &Path, port: u16) -> GitDaemon {
        // `git daemon` forks `git-daemon` and killing the former leaves the latter
        // serving: start the real one.
        let exec_path = git(base, &["--exec-path"]);
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn git daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        GitDaemon(child)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_remote_that_goes_down_keeps_the_gateway_serving_and_is_caught_up_with() {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(tmp.path());
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    repo.commit(&gateway(listener.port(), &[("a", &a)]), &[], "route /a/");
    let daemon_port = free_port();
    let daemon = GitDaemon::start(tmp.path(), daemon_port);
    let url = format!("git://127.0.0.1:{daemon_port}/remote.git");

    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let serve = Serve::start(
        &["--git", &url, "--interval", "200ms"],
        &tmp.path().join("state"),
        xds,
        tmp.path().join("attache.log"),
    );
    let admin = free_port();
    let envoy = EnvoyProcess::start(&envoy_bin, &bootstrap(tmp.path(), xds, admin), admin);
    until_routed(&envoy, listener, "a", Some(&a), &serve);

    // The remote goes away: reported, and the gateway keeps routing.
    drop(daemon);
    serve.wait_for(
        "still serving the last good revision",
        2,
        Duration::from_secs(10),
    );
    assert!(serve.log().contains("cannot reach"), "{}", serve.log());
    repo.commit(
        &gateway(listener.port(), &[("a", &a), ("b", &b)]),
        &[],
        "add /b/",
    );
    assert_eq!(get(listener, "a").map(|r| r.0), Some(200));

    // It comes back: the commit pushed meanwhile is served.
    let _daemon = GitDaemon::start(tmp.path(), daemon_port);
    until_routed(&envoy, listener, "b", Some(&b), &serve);
}

// === directories ===

/// Writes `files` as kubelet writes a ConfigMap update: a new `..TIMESTAMP` directory, a
/// `..data_tmp` symlink renamed over `..data`, the top-level links, the old directory
/// removed.
fn kubelet_update(root: &Path, generation: u32, files: &[(String, String)]) {
    use std::os::unix::fs::symlink;
    let stamp = format!("..2026_11_30_00_00_{generation:02}.{generation}");
    let dir = root.join(&stamp);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, text) in files {
        // ConfigMap keys are flat file names.
        std::fs::write(dir.join(name.replace('/', "-")), text).expect("write");
    }
    let old = std::fs::read_link(root.join("..data")).ok();
    symlink(&stamp, root.join("..data_tmp")).expect("link");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    for (name, _) in files {
        let name = name.replace('/', "-");
        let link = root.join(&name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), link).expect("link");
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(root.join(old)).expect("remove the old version");
    }
}

#[test]
fn a_configmap_updated_like_kubelet_does_is_one_new_revision() {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("config");
    std::fs::create_dir(&root).expect("mkdir");
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    kubelet_update(&root, 1, &gateway(listener.port(), &[("a", &a)]));

    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let serve = Serve::start(
        &["--dir", path_str(&root)],
        &tmp.path().join("state"),
        xds,
        tmp.path().join("attache.log"),
    );
    let admin = free_port();
    let envoy = EnvoyProcess::start(&envoy_bin, &bootstrap(tmp.path(), xds, admin), admin);
    until_routed(&envoy, listener, "a", Some(&a), &serve);

    // /a/ moves to backend b and /b/ appears, in one update: a torn read would be seen
    // as a revision with only one of the two changes.
    let mut moved = gateway(listener.port(), &[("a", &b), ("b", &b)]);
    moved.push((
        "extra.yaml".to_owned(),
        mapping("extra", &b.addr.to_string()),
    ));
    kubelet_update(&root, 2, &moved);
    until_routed(&envoy, listener, "b", Some(&b), &serve);
    until_routed(&envoy, listener, "a", Some(&b), &serve);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(serve.count("revision accepted"), 2, "{}", serve.log());
    assert_eq!(serve.count("revision rejected"), 0, "{}", serve.log());

    // A plain edit in place, and a bad one: rejected with its file, the rest serves.
    std::fs::write(root.join("..data/mappings-b.yaml"), "kind: [").expect("write");
    serve.wait_for("revision rejected", 1, Duration::from_secs(10));
    assert!(
        serve.log().contains("mappings-b.yaml:1:"),
        "{}",
        serve.log()
    );
    assert_eq!(get(listener, "b").map(|r| r.0), Some(200));
}

#[test]
fn a_plain_directory_edited_in_place_is_followed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("config");
    let a = Backend::start("a");
    let port = free_port();
    for (path, text) in gateway(port, &[("a", &a)]) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let serve = Serve::start(
        &["--dir", path_str(&root)],
        &tmp.path().join("state"),
        xds,
        tmp.path().join("attache.log"),
    );
    serve.wait_for("revision accepted", 1, Duration::from_secs(20));
    // A new file in a new subdirectory.
    std::fs::create_dir_all(root.join("team/new")).expect("mkdir");
    std::fs::write(root.join("team/new/m.yaml"), mapping("n", "n:80")).expect("write");
    serve.wait_for("revision accepted", 2, Duration::from_secs(10));
    // Touching a file without changing it, and editor litter, change nothing.
    std::fs::write(root.join("team/new/m.yaml"), mapping("n", "n:80")).expect("write");
    std::fs::write(root.join("team/.m.yaml.swp"), "junk").expect("write");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(serve.count("revision accepted"), 2, "{}", serve.log());
}
