//! Issue 6, the browser test: `attache serve --git` on a local repository with a real
//! Envoy 1.40 connected, and `/diag` loaded in Debian's chromium (headless, driven by
//! playwright-core, tests/browser/diag.mjs). The page must show the node, the routes with
//! their file:line and, after a bad commit, the rejection with its message; commit
//! messages holding markup must show as text. The screenshot is kept in
//! tests/artifacts/diag.png.
//!
//! Needs `chromium` (or $CHROMIUM), `node` and `npm ci` in tests/browser (`.ci/run`
//! installs all three); without them it skips, and under CI it fails.
mod util;
mod xds_util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::{Backend, http_get};

const ATTACHE: &str = env!("CARGO_BIN_EXE_attache");

/// The browser, node and the installed playwright-core, or why the test cannot run.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let script = root.join("tests/browser/diag.mjs");
    let playwright = root.join("tests/browser/node_modules/playwright-core");
    let node = Command::new("node").arg("--version").output();
    let missing = if !chromium.is_file() {
        Some(format!("no chromium at {}", chromium.display()))
    } else if !node.is_ok_and(|o| o.status.success()) {
        Some("no `node` on PATH".to_owned())
    } else if !playwright.is_dir() {
        Some(format!(
            "playwright-core is not installed in {} (run `npm ci` there)",
            root.join("tests/browser").display()
        ))
    } else {
        None
    };
    match missing {
        None => Some((chromium, script)),
        Some(why) if std::env::var_os("CI").is_some() => panic!("{why}"),
        Some(why) => {
            eprintln!("skipping: {why}");
            None
        }
    }
}

fn git(repo: &Path, args: &[&str]) {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=Dana Ops",
            "-c",
            "user.email=dana@example.com",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn commit(repo: &Path, yaml: &str, message: &str) {
    std::fs::write(repo.join("gateway.yaml"), yaml).expect("write config");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
}

fn config(listener_port: u16, backend: SocketAddr, prefix: &str) -> String {
    util::gateway_yaml(listener_port, prefix, &backend.to_string())
}

/// `attache serve`, killed on drop; its log (JSON lines) goes to a file.
struct Serve {
    child: Child,
    log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Polls `check` every 100 ms for at most 30 s.
fn eventually(what: &str, serve: &Serve, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; attache's log:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let response = http_get(addr, "localhost", path, &[]).ok()?;
    (response.status == 200)
        .then(|| serde_json::from_slice(&response.body).ok())
        .flatten()
}

#[test]
fn diag_in_chromium_shows_node_routes_and_the_rejected_commit() {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let Some((chromium, script)) = browser() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = tmp.path().join("gateway");
    std::fs::create_dir_all(&repo).expect("repo dir");
    git(&repo, &["init", "-q", "-b", "main"]);
    let backend = Backend::start("echo-backend");
    let port = util::free_port();
    let good_message = "add echo route <script>window.__attache_pwned=1</script>";
    commit(&repo, &config(port, backend.addr, "/echo/"), good_message);

    let (xds, admin) = (
        SocketAddr::from(([127, 0, 0, 1], util::free_port())),
        SocketAddr::from(([127, 0, 0, 1], util::free_port())),
    );
    let log = tmp.path().join("attache.log");
    let child = Command::new(ATTACHE)
        .arg("--log-format=json")
        .arg("serve")
        .arg(format!("--git=file://{}", repo.display()))
        .args(["--branch", "main", "--interval", "1s"])
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .args(["--xds-addr", &xds.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn attache serve");
    let serve = Serve { child, log };
    eventually("/readyz", &serve, || {
        http_get(admin, "localhost", "/readyz", &[]).is_ok_and(|r| r.status == 200)
    });

    let envoy = xds_util::start_envoy(
        &envoy_bin,
        tmp.path(),
        "edge-browser",
        BTreeMap::from([("zone".to_owned(), "z1".to_owned())]),
        xds,
        false,
    );
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let routes = || {
        http_get(listener, "example.com", "/echo/x", &[])
            .is_ok_and(|r| r.status == 200 && r.body_text().starts_with("echo-backend"))
    };
    eventually("traffic through Envoy", &serve, routes);
    eventually("edge-browser in sync", &serve, || {
        json(admin, "/api/v1/nodes/edge-browser").is_some_and(|n| n["synced_snapshot"].is_string())
    });

    // A bad commit: validation rejects it, Envoy keeps the good one.
    let bad_message = "break it <img src=x onerror=\"window.__attache_pwned=2\">";
    commit(&repo, &config(port, backend.addr, "echo/"), bad_message);
    eventually("the bad commit rejected", &serve, || {
        json(admin, "/api/v1/status").is_some_and(|s| s["newer_rejected"] == true)
    });
    assert!(routes(), "Envoy still routes with the good commit");

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let screenshot = artifacts.join("diag.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = Command::new("node")
        .arg(&script)
        .arg(format!("http://{admin}/diag"))
        .arg(&screenshot)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "diag.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let page: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();

    assert_eq!(page["status"], 200, "{page}");
    assert_eq!(page["title"], "attache diagnostics");
    // The node, with its ACKs.
    let nodes = page["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{page}");
    let node = nodes[0].to_string();
    assert!(
        node.contains("edge-browser") && node.contains("ACK"),
        "{node}"
    );
    assert!(node.contains("connected"), "{node}");
    // The route, with its file and line.
    let routes_rows = page["routes"].as_array().expect("routes");
    let echo = routes_rows
        .iter()
        .find(|r| r[1].as_str().is_some_and(|m| m.contains("/echo/")))
        .unwrap_or_else(|| panic!("no /echo/ route in {page}"));
    assert!(text(&echo[2]).starts_with("cluster_127_0_0_1_"), "{echo}");
    assert!(text(&echo[3]).starts_with("gateway.yaml:13"), "{echo}");
    let cluster = page["clusters"][0].to_string();
    assert!(cluster.contains("1 / 1"), "{cluster}");
    // The serving commit, its message shown as text.
    let serving = text(&page["serving"]);
    assert!(serving.contains("Dana Ops"), "{serving}");
    assert!(serving.contains(good_message), "{serving}");
    // The rejected commit in its banner, with the error and its place.
    let rejected = text(&page["rejected"]);
    assert!(rejected.contains(bad_message), "{rejected}");
    assert!(rejected.contains("must start with \"/\""), "{rejected}");
    assert!(rejected.contains("gateway.yaml:18"), "{rejected}");
    let messages = page["commitMessages"].to_string();
    assert!(
        messages.contains("<script>window.__attache_pwned=1</script>"),
        "{messages}"
    );
    // Nothing the commits held ran or became an element.
    assert_eq!(page["pwned"], serde_json::Value::Null, "{page}");
    assert_eq!(page["injected"], serde_json::json!([]), "{page}");
    assert_eq!(page["dialogs"], serde_json::json!([]), "{page}");
    assert_eq!(page["pageErrors"], serde_json::json!([]), "{page}");
    assert_eq!(page["scripts"], 1, "only the page's own refresh toggle");
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");

    // The log alone tells the story: one JSON line per revision, with outcome and timings.
    let log = serve.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let said = |message: &str| {
        lines
            .iter()
            .filter(|l| l["fields"]["message"].as_str() == Some(message))
            .collect::<Vec<_>>()
    };
    let accepted = said("revision accepted");
    assert_eq!(accepted.len(), 1, "{log}");
    assert!(accepted[0]["fields"]["translate_ms"].is_string(), "{log}");
    let rejected = said("revision rejected; still serving the last good revision");
    assert_eq!(rejected.len(), 1, "{log}");
    drop(envoy);
}
