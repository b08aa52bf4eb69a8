//! Issue 5 through the binary: `attache serve --endpoints kubernetes` reaching a fake API
//! server through `KUBECONFIG`, as in a cluster, with a real Envoy 1.40 and loopback
//! pods; and the errors a user sees when the cluster cannot be used.
mod kube_util;
mod util;
mod xds_util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube_util::{Ep, FakeApi};
use util::Backend;

const ATTACHE: &str = env!("CARGO_BIN_EXE_attache");

/// An `attache serve` child, killed on drop; its stderr goes to a file.
struct Serve {
    child: Child,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(dir: &Path, state: &Path, xds: SocketAddr, kubeconfig: &Path, log: &Path) -> Serve {
        let child = Command::new(ATTACHE)
            .args([
                "serve",
                "--endpoints",
                "kubernetes",
                "--namespace",
                "shop",
                "--dir",
            ])
            .arg(dir)
            .arg("--state-dir")
            .arg(state)
            .args(["--xds-addr", &xds.to_string()])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "attache=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("spawn attache serve");
        Serve {
            child,
            log: log.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(listener: u16) -> String {
    format!(
        "apiVersion: getambassador.io/v3alpha1
kind: Listener
metadata: {{name: http, namespace: default}}
spec:
  port: {listener}
  protocol: HTTP
  securityModel: XFP
  hostBinding: {{namespace: {{from: ALL}}}}
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata: {{name: users, namespace: shop}}
spec: {{hostname: '*', prefix: /users/, service: 'users:http'}}
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata: {{name: ghost, namespace: shop}}
spec: {{hostname: '*', prefix: /ghost/, service: ghost.shop:80}}
"
    )
}

fn routed(listener: SocketAddr, path: &str) -> String {
    match util::http_get(listener, "example.com", path, &[]) {
        Ok(resp) => resp
            .header("x-backend")
            .map_or_else(|| resp.status.to_string(), str::to_owned),
        Err(e) => format!("error: {e}"),
    }
}

/// Issue 5: the daemon follows a Service's pods as they scale, and warns about a
/// Mapping whose Service has no EndpointSlice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_follows_endpoint_slices_through_kubeconfig() {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let pod1 = Backend::start_at("pod-1", SocketAddr::from(([127, 0, 0, 61], 0))).expect("bind");
    let port = pod1.addr.port();
    let pod2 = Backend::start_at("pod-2", SocketAddr::from(([127, 0, 0, 62], port)))
        .expect("the same port on the next loopback address");
    let api = FakeApi::start().await;
    api.apply_service("shop", "users", &[("http", 80, port)]);
    api.apply_slice(
        "shop",
        "users-1",
        "users",
        &[("http", port)],
        &[Ep::ready("127.0.0.61")],
    );
    // In another namespace: not watched, so never seen.
    api.apply_service("other", "users", &[("http", 80, port)]);

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("config");
    std::fs::create_dir(&dir).expect("config dir");
    let listener_port = util::free_port();
    std::fs::write(dir.join("gateway.yaml"), config(listener_port)).expect("write config");
    let xds = SocketAddr::from(([127, 0, 0, 1], util::free_port()));
    let serve = Serve::start(
        &dir,
        &tmp.path().join("state"),
        xds,
        &api.kubeconfig(tmp.path()),
        &tmp.path().join("attache.log"),
    );
    // The ADS port answers once the first revision is published.
    let up = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(xds).is_ok()
    });
    assert!(up, "attache never listened:\n{}", serve.log());
    let envoy = xds_util::start_envoy(&envoy_bin, tmp.path(), "edge", BTreeMap::new(), xds, true);
    let listener = SocketAddr::from(([127, 0, 0, 1], listener_port));

    let mut last = String::new();
    let ok = tokio::task::block_in_place(|| {
        envoy.eventually(xds_util::WAIT, || {
            last = routed(listener, "/users/");
            last == "pod-1"
        })
    });
    assert!(ok, "got {last}\n{}\n{}", serve.log(), envoy.log());
    assert_eq!(routed(listener, "/ghost/"), "503");

    api.apply_slice(
        "shop",
        "users-1",
        "users",
        &[("http", port)],
        &[Ep::ready("127.0.0.61"), Ep::ready("127.0.0.62")],
    );
    let ok = tokio::task::block_in_place(|| {
        envoy.eventually(xds_util::WAIT, || {
            routed(listener, "/users/");
            pod2.hits.load(std::sync::atomic::Ordering::Relaxed) > 0
        })
    });
    assert!(ok, "pod-2 never got traffic\n{}", serve.log());
    let log = serve.log();
    assert!(
        log.contains("Service shop/ghost has no EndpointSlice for port 80"),
        "the missing Service is a warning:\n{log}"
    );
    assert!(!log.contains("ERROR"), "{log}");
}

/// `--endpoints kubernetes` with nothing to connect to is an error that names the
/// cause, before anything is served.
#[test]
fn serve_with_endpoints_kubernetes_and_no_cluster_fails_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let output = Command::new(ATTACHE)
        .args([
            "serve",
            "--endpoints",
            "kubernetes",
            "--xds-addr",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(tmp.path())
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .env("KUBECONFIG", tmp.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run attache serve");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--endpoints kubernetes: no Kubernetes configuration"),
        "{stderr}"
    );
}
