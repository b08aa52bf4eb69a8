//! `attache serve` and `attache bootstrap` as a user runs them: the built binary, a real
//! Envoy 1.40 on the printed bootstrap, traffic to a loopback backend. Issue 3, parts 5-6:
//! a restart with the config source gone serves the persisted snapshot.
mod util;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use util::{Backend, EnvoyProcess, http_get};

const ATTACHE: &str = env!("CARGO_BIN_EXE_attache");

/// An `attache serve` child process, killed on drop.
struct Serve {
    child: Child,
}

impl Serve {
    fn start(dir: &Path, state: &Path, xds: SocketAddr) -> Serve {
        let child = Command::new(ATTACHE)
            .args(["serve", "--dir"])
            .arg(dir)
            .arg("--state-dir")
            .arg(state)
            .args(["--xds-addr", &xds.to_string()])
            // Port 0: tests run in parallel, and the default 8877 is one port.
            .args(["--admin-addr", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn attache serve");
        Serve { child }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, listener_port: u16, backend: SocketAddr) {
    std::fs::create_dir_all(dir).expect("config dir");
    std::fs::write(
        dir.join("gateway.yaml"),
        util::gateway_yaml(listener_port, "/echo/", &backend.to_string()),
    )
    .expect("write config");
}

fn bootstrap(path: &Path, xds: SocketAddr, admin_port: u16, delta: bool) {
    let mut command = Command::new(ATTACHE);
    command.args([
        "bootstrap",
        "--node-id",
        "edge-1",
        "--cluster",
        "edge",
        "--xds-address",
        &xds.to_string(),
        "--admin-port",
        &admin_port.to_string(),
        "--metadata",
        "zone=test",
    ]);
    if delta {
        command.arg("--delta");
    }
    let output = command.output().expect("run attache bootstrap");
    assert!(
        output.status.success(),
        "bootstrap failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(path, &output.stdout).expect("write bootstrap");
}

/// The Envoy listener answers through the backend.
fn routes_to(envoy: &EnvoyProcess, listener: SocketAddr, backend: &Backend) -> bool {
    envoy.eventually(Duration::from_secs(15), || {
        http_get(listener, "anything.example", "/echo/hi", &[])
            .is_ok_and(|r| r.status == 200 && r.body_text().starts_with(&backend.name))
    })
}

fn restart_with_the_source_gone(delta: bool) {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (config, state) = (tmp.path().join("config"), tmp.path().join("state"));
    let backend = Backend::start("echo");
    let listener = SocketAddr::from(([127, 0, 0, 1], util::free_port()));
    let xds = SocketAddr::from(([127, 0, 0, 1], util::free_port()));
    let admin_port = util::free_port();
    write_config(&config, listener.port(), backend.addr);
    let bootstrap_path = tmp.path().join("envoy.yaml");
    bootstrap(&bootstrap_path, xds, admin_port, delta);

    let attache = Serve::start(&config, &state, xds);
    let envoy = EnvoyProcess::start(&envoy_bin, &bootstrap_path, admin_port);
    assert!(routes_to(&envoy, listener, &backend), "{}", envoy.log());
    assert_eq!(envoy.stat("control_plane.connected_state"), Some(1));

    // attache goes away: Envoy keeps its configuration and keeps routing.
    drop(attache);
    assert!(
        envoy.eventually(Duration::from_secs(15), || envoy
            .stat("control_plane.connected_state")
            == Some(0)),
        "Envoy never noticed attache stopped"
    );
    assert!(routes_to(&envoy, listener, &backend));

    // attache comes back with the config source gone: it serves the persisted snapshot.
    std::fs::remove_dir_all(&config).expect("remove config");
    let lds_updates = envoy.stat("listener_manager.lds.update_success");
    let _attache = Serve::start(&config, &state, xds);
    assert!(
        envoy.eventually(Duration::from_secs(20), || envoy
            .stat("control_plane.connected_state")
            == Some(1)),
        "Envoy did not reconnect:\n{}",
        envoy.log()
    );
    assert!(routes_to(&envoy, listener, &backend));
    let cds_rejected = envoy
        .stat("cluster_manager.cds.update_rejected")
        .unwrap_or(0);
    let lds_rejected = envoy
        .stat("listener_manager.lds.update_rejected")
        .unwrap_or(0);
    assert_eq!((cds_rejected, lds_rejected), (0, 0), "{}", envoy.log());
    if delta {
        // Identical versions on reconnect: nothing new for the listener manager to apply.
        assert_eq!(
            envoy.stat("listener_manager.lds.update_success"),
            lds_updates,
            "a needless LDS push after restart"
        );
    }
}

#[test]
fn sotw_restart_with_the_config_dir_gone_serves_the_persisted_snapshot() {
    restart_with_the_source_gone(false);
}

#[test]
fn delta_restart_with_the_config_dir_gone_serves_the_persisted_snapshot() {
    restart_with_the_source_gone(true);
}

#[test]
fn serve_with_nothing_to_serve_exits_with_an_error_naming_the_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("no-such-config");
    let output = Command::new(ATTACHE)
        .args([
            "serve",
            "--xds-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(&missing)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .output()
        .expect("run attache serve");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nothing to serve") && stderr.contains(&*missing.to_string_lossy()),
        "{stderr}"
    );
}

#[test]
fn serve_rejects_a_bad_canary_selector_as_a_usage_error() {
    let output = Command::new(ATTACHE)
        .args(["serve", "--dir", ".", "--canary", "zone"])
        .output()
        .expect("run attache serve");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn bootstraps_pass_envoy_validate() {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    for delta in [false, true] {
        let path = tmp.path().join(format!("bootstrap-{delta}.yaml"));
        bootstrap(
            &path,
            SocketAddr::from(([127, 0, 0, 1], 18000)),
            9901,
            delta,
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("zone: test") || text.contains("zone: \"test\""),
            "{text}"
        );
        assert_eq!(text.contains("DELTA_GRPC"), delta, "{text}");
        util::envoy_validate(&envoy_bin, &path).expect("envoy accepts the bootstrap");
    }
}
