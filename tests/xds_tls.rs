//! Issue 8 item 3, secure xDS, against a real Envoy 1.40 on loopback: attache serves ADS
//! over TLS and requires a client certificate from its client CA. An Envoy with such a
//! certificate (bootstrap from `attache bootstrap --xds-tls-*`) connects, ACKs and
//! routes; one without a certificate, one with a certificate from another CA and a
//! plaintext gRPC client are refused, counted, and disturb nobody; a rotated server
//! certificate is used for new connections; `attache serve` with a wrong TLS file stops
//! at start and names it.
//!
//! Certificates are made at test time with the `openssl` CLI (installed by .ci/run);
//! without it, or without Envoy, these tests skip, and fail under `CI`.
mod pki;
mod util;
mod xds_util;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use attache::metrics::Metrics;
use attache::snapshot::{Store, StoreConfig};
use attache::xds;
use attache::xds::bootstrap::{BootstrapConfig, ClientTls, ads_bootstrap_with_tls};
use attache::xds::tls::{Acceptor, TlsFiles};
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3::transport_socket;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use envoy_types::util::pack_any;
use pki::Pki;
use prost::Message;
use util::{Backend, EnvoyProcess};
use xds_util::{Server, WAIT, expect_route, gateway, snapshot};

/// The name in attache's certificate, which Envoy checks.
const SERVER_NAME: &str = "attache-xds";

// --- certificates -----------------------------------------------------------------

/// attache's certificate names: what Envoy checks (`SERVER_NAME`) and the address.
const SERVER_SANS: &str = "DNS:attache-xds,IP:127.0.0.1";

/// The PKI every test here starts from: a CA `ca`, attache's certificate `server` and
/// Envoy's client certificate `edge`, both from `ca`. `None` (a skip) without openssl.
fn attache_pki(dir: &Path) -> Option<Pki> {
    let pki = Pki::new(dir)?;
    pki.make("ca", "ca", None, None);
    pki.make("server", "server", Some("ca"), Some(SERVER_SANS));
    pki.make("edge", "client", Some("ca"), None);
    Some(pki)
}

/// attache's files: the certificate `server`, trusting client certificates of `client_ca`.
fn server_files(pki: &Pki, server: &str, client_ca: &str) -> TlsFiles {
    TlsFiles {
        cert: pki.crt(server),
        key: pki.key(server),
        client_ca: pki.crt(client_ca),
    }
}

// --- attache and Envoy ------------------------------------------------------------

/// attache's ADS server over TLS, with metrics.
async fn tls_server(files: TlsFiles) -> (Server, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::new(StoreConfig {
        metrics: Some(metrics.clone()),
        ..StoreConfig::default()
    }));
    let acceptor = Acceptor::load(files, Some(metrics.clone())).expect("test certificates load");
    let config = xds::Config {
        tls: Some(acceptor),
        ..xds::Config::default()
    };
    (Server::start_with(store, config).await, metrics)
}

/// `attache_xds_tls_handshake_failures_total{reason}` now.
fn failures(server: &Server, metrics: &Metrics, reason: &str) -> u64 {
    let text = metrics.encode(&server.store).expect("metrics encode");
    let label = format!("reason=\"{reason}\"");
    attache::metrics::samples(&text, "attache_xds_tls_handshake_failures_total")
        .find(|line| line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Polls until the failure count of `reason` exceeds `before`.
async fn until_refused(server: &Server, metrics: &Metrics, reason: &str, before: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while failures(server, metrics, reason) <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason} handshake failure counted within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bootstrap `attache bootstrap` prints for these flags (YAML), written to `path`
/// and checked with `envoy --mode validate`.
fn cli_bootstrap(envoy: &Path, path: &Path, args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_attache"))
        .arg("bootstrap")
        .args(args)
        .output()
        .expect("run attache bootstrap");
    assert!(
        output.status.success(),
        "attache bootstrap failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8 bootstrap");
    assert!(
        !text.contains("PRIVATE KEY"),
        "the key stays in its file:\n{text}"
    );
    std::fs::write(path, &text).expect("write bootstrap");
    util::envoy_validate(envoy, path).expect("envoy accepts the TLS bootstrap");
}

/// A binary bootstrap with TLS for `node_id`, edited by `edit`, that gives up waiting for
/// its first configuration after a second (so a refused Envoy is ready quickly).
fn start_refused_envoy(
    envoy: &Path,
    dir: &Path,
    node_id: &str,
    xds: SocketAddr,
    tls: &ClientTls,
    edit: impl FnOnce(&mut UpstreamTlsContext),
) -> EnvoyProcess {
    let admin_port = util::free_port();
    let mut bootstrap = ads_bootstrap_with_tls(
        &BootstrapConfig {
            node_id: node_id.into(),
            cluster: "gateway".into(),
            metadata: Default::default(),
            xds_address: xds.to_string(),
            delta: false,
            admin_port,
        },
        Some(tls),
    )
    .expect("valid bootstrap");
    edit_tls(&mut bootstrap, edit);
    let dynamic = bootstrap.dynamic_resources.as_mut().expect("dynamic");
    for source in [dynamic.lds_config.as_mut(), dynamic.cds_config.as_mut()] {
        source.expect("ads source").initial_fetch_timeout = Some(PbDuration {
            seconds: 1,
            nanos: 0,
        });
    }
    let path = dir.join(format!("{node_id}.pb"));
    std::fs::write(&path, bootstrap.encode_to_vec()).expect("write bootstrap");
    EnvoyProcess::start(envoy, &path, admin_port)
}

fn edit_tls(bootstrap: &mut Bootstrap, edit: impl FnOnce(&mut UpstreamTlsContext)) {
    let cluster = &mut bootstrap
        .static_resources
        .as_mut()
        .expect("static")
        .clusters[0];
    let socket = cluster.transport_socket.as_mut().expect("tls socket");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &mut socket.config_type else {
        panic!("typed config");
    };
    let mut context = UpstreamTlsContext::decode(any.value.as_slice()).expect("decodes");
    edit(&mut context);
    *any = pack_any(context);
}

fn client_tls(pki: &Pki, client: &str, ca: &str) -> ClientTls {
    ClientTls {
        cert: pki.crt(client).display().to_string(),
        key: pki.key(client).display().to_string(),
        ca: pki.crt(ca).display().to_string(),
        server_name: Some(SERVER_NAME.into()),
        sds_dir: None,
    }
}

fn stat(envoy: &EnvoyProcess, name: &str) -> u64 {
    tokio::task::block_in_place(|| envoy.stat(name)).unwrap_or(0)
}

/// What a refused Envoy shows: it got no configuration and attache never saw its node.
fn assert_refused(envoy: &EnvoyProcess, server: &Server, node_id: &str) {
    for name in [
        "cluster_manager.cds.update_success",
        "listener_manager.lds.update_success",
    ] {
        assert_eq!(stat(envoy, name), 0, "{name} of {node_id}\n{}", envoy.log());
    }
    // Envoy flags the stream connected while it opens it, and clears the flag when the
    // connection fails: between retries it reads 0.
    let disconnected = tokio::task::block_in_place(|| {
        envoy.eventually(WAIT, || {
            envoy.stat("control_plane.connected_state") == Some(0)
        })
    });
    assert!(
        disconnected,
        "{node_id} shows no connection\n{}",
        envoy.log()
    );
    assert!(
        server.store.node(node_id).is_none(),
        "attache opened no stream for {node_id}"
    );
}

// --- tests ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_envoys_with_a_client_certificate_from_the_ca_get_configuration() {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(pki) = attache_pki(dir.path()) else {
        return;
    };
    pki.make("rogue-ca", "ca", None, None);
    pki.make("rogue", "client", Some("rogue-ca"), None);

    let (server, metrics) = tls_server(server_files(&pki, "server", "ca")).await;
    let (alpha, beta) = (Backend::start("alpha"), Backend::start("beta"));
    let port = util::free_port();
    server
        .publish(snapshot(
            "r1",
            &gateway(port, &[("/", "alpha")], &[("alpha", alpha.addr)]),
        ))
        .await;

    // The right certificate, bootstrap from the CLI: connects, ACKs, routes.
    let admin_port = util::free_port();
    let bootstrap = dir.path().join("edge-ok.yaml");
    let (cert, key, ca) = (pki.crt("edge"), pki.key("edge"), pki.crt("ca"));
    cli_bootstrap(
        &envoy_bin,
        &bootstrap,
        &[
            "--node-id",
            "edge-ok",
            "--cluster",
            "gateway",
            "--xds-address",
            &server.addr.to_string(),
            "--admin-port",
            &admin_port.to_string(),
            "--xds-tls-cert",
            &cert.display().to_string(),
            "--xds-tls-key",
            &key.display().to_string(),
            "--xds-ca",
            &ca.display().to_string(),
            "--xds-server-name",
            SERVER_NAME,
        ],
    );
    let good =
        tokio::task::block_in_place(|| EnvoyProcess::start(&envoy_bin, &bootstrap, admin_port));
    expect_route(&good, port, "/", "alpha");
    server
        .until("edge-ok in sync with r1", |s| {
            s.node("edge-ok")
                .and_then(|n| n.synced_snapshot)
                .is_some_and(|v| v.starts_with("r1"))
        })
        .await;
    assert!(stat(&good, "cluster.xds_cluster.ssl.handshake") >= 1);

    // No client certificate: refused.
    let before = failures(&server, &metrics, "no_client_certificate");
    let nocert = tokio::task::block_in_place(|| {
        start_refused_envoy(
            &envoy_bin,
            dir.path(),
            "edge-nocert",
            server.addr,
            &client_tls(&pki, "edge", "ca"),
            |context| {
                context
                    .common_tls_context
                    .as_mut()
                    .expect("common")
                    .tls_certificates
                    .clear()
            },
        )
    });
    until_refused(&server, &metrics, "no_client_certificate", before).await;

    // A certificate from another CA: refused.
    let before = failures(&server, &metrics, "client_certificate_rejected");
    let rogue = tokio::task::block_in_place(|| {
        start_refused_envoy(
            &envoy_bin,
            dir.path(),
            "edge-rogue",
            server.addr,
            &client_tls(&pki, "rogue", "ca"),
            |_| {},
        )
    });
    until_refused(&server, &metrics, "client_certificate_rejected", before).await;

    // A plaintext gRPC client (h2c): no response, counted as not TLS.
    let before = failures(&server, &metrics, "not_tls");
    let plaintext = tokio::time::timeout(Duration::from_secs(5), async {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.addr)).await?;
        let request = DiscoveryRequest {
            node: Some(xds_util::node("plaintext")),
            type_url: xds::type_url::CLUSTER.into(),
            ..Default::default()
        };
        let mut stream = client
            .stream_aggregated_resources(tokio_stream::iter([request]))
            .await?
            .into_inner();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(stream.message().await?)
    })
    .await;
    assert!(
        !matches!(plaintext, Ok(Ok(Some(_)))),
        "a plaintext client got a response: {plaintext:?}"
    );
    until_refused(&server, &metrics, "not_tls", before).await;
    assert!(server.store.node("plaintext").is_none());

    // Give the refused Envoys a few retries, then check what they show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_refused(&nocert, &server, "edge-nocert");
    assert_refused(&rogue, &server, "edge-rogue");
    assert!(
        stat(&rogue, "cluster.xds_cluster.upstream_cx_total") >= 2,
        "the rogue Envoy keeps retrying\n{}",
        rogue.log()
    );

    // The good stream was not disturbed: it gets the next snapshot.
    server
        .publish(snapshot(
            "r2",
            &gateway(
                port,
                &[("/beta", "beta"), ("/", "alpha")],
                &[("alpha", alpha.addr), ("beta", beta.addr)],
            ),
        ))
        .await;
    expect_route(&good, port, "/beta", "beta");
    assert_eq!(
        stat(&good, "cluster.xds_cluster.upstream_cx_total"),
        1,
        "one connection all along\n{}",
        good.log()
    );
    assert_eq!(stat(&good, "control_plane.connected_state"), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_server_certificate_serves_new_connections_without_a_restart() {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(pki) = attache_pki(dir.path()) else {
        return;
    };
    pki.make("ca2", "ca", None, None);
    pki.make("server2", "server", Some("ca2"), Some(SERVER_SANS));
    // attache reads its files from a directory of its own, rotated in place.
    let live = dir.path().join("live");
    std::fs::create_dir(&live).expect("mkdir");
    let install = |from: &Path, to: &str| {
        let tmp = live.join(format!("{to}.new"));
        std::fs::copy(from, &tmp).expect("copy");
        std::fs::rename(&tmp, live.join(to)).expect("rename");
    };
    install(&pki.crt("server"), "tls.crt");
    install(&pki.key("server"), "tls.key");
    install(&pki.crt("ca"), "ca.crt");
    let (server, _metrics) = tls_server(TlsFiles {
        cert: live.join("tls.crt"),
        key: live.join("tls.key"),
        client_ca: live.join("ca.crt"),
    })
    .await;
    let alpha = Backend::start("alpha");
    let port = util::free_port();
    server
        .publish(snapshot(
            "r1",
            &gateway(port, &[("/", "alpha")], &[("alpha", alpha.addr)]),
        ))
        .await;
    let start = |node_id: &str, server_ca: &str| {
        let admin_port = util::free_port();
        let bootstrap = ads_bootstrap_with_tls(
            &BootstrapConfig {
                node_id: node_id.into(),
                cluster: "gateway".into(),
                metadata: Default::default(),
                xds_address: server.addr.to_string(),
                delta: true,
                admin_port,
            },
            Some(&client_tls(&pki, "edge", server_ca)),
        )
        .expect("valid");
        let path = dir.path().join(format!("{node_id}.pb"));
        std::fs::write(&path, bootstrap.encode_to_vec()).expect("write");
        tokio::task::block_in_place(|| EnvoyProcess::start(&envoy_bin, &path, admin_port))
    };
    let first = start("edge-1", "ca");
    expect_route(&first, port, "/", "alpha");

    // cert-manager renews: a certificate from the new CA, key first, then the chain.
    install(&pki.key("server2"), "tls.key");
    install(&pki.crt("server2"), "tls.crt");
    let second = start("edge-2", "ca2");
    server
        .until("edge-2 in sync", |s| {
            s.node("edge-2")
                .is_some_and(|n| n.synced_snapshot.is_some())
        })
        .await;
    assert!(stat(&second, "cluster.xds_cluster.ssl.handshake") >= 1);
    // The first stream stays up on the session it has.
    assert!(
        server
            .store
            .node("edge-1")
            .is_some_and(|n| n.disconnected_at_ms.is_none())
    );
    assert_eq!(stat(&first, "cluster.xds_cluster.upstream_cx_total"), 1);
    server.stop().await;
}

/// Envoy's own certificate is renewed on disk the way kubelet renews a Secret volume
/// (a new `..TIMESTAMP` directory, `..data` swapped by a rename). With the bootstrap
/// from `attache bootstrap --xds-tls-sds-dir`, Envoy takes its certificate through
/// file-based SDS, reloads it, and its next connection to attache uses it: an Envoy
/// refused for a stale certificate gets its configuration without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_envoy_client_certificate_is_used_without_a_restart() {
    let Some(envoy_bin) = util::envoy_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(pki) = attache_pki(dir.path()) else {
        return;
    };
    pki.make("old-ca", "ca", None, None);
    pki.make("stale", "client", Some("old-ca"), None);

    // Envoy's Secret volume: tls.crt, tls.key and ca.crt are symlinks through `..data`.
    let volume = dir.path().join("envoy-tls");
    std::fs::create_dir(&volume).expect("mkdir");
    let publish_volume = |version: &str, client: &str| {
        let data = volume.join(format!("..{version}"));
        std::fs::create_dir(&data).expect("mkdir version");
        std::fs::copy(pki.crt(client), data.join("tls.crt")).expect("copy cert");
        std::fs::copy(pki.key(client), data.join("tls.key")).expect("copy key");
        std::fs::copy(pki.crt("ca"), data.join("ca.crt")).expect("copy ca");
        let tmp = volume.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
        std::fs::rename(&tmp, volume.join("..data")).expect("swap ..data");
        for file in ["tls.crt", "tls.key", "ca.crt"] {
            let link = volume.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{file}"), &link).expect("link");
            }
        }
    };
    publish_volume("v1", "stale");

    let (server, metrics) = tls_server(server_files(&pki, "server", "ca")).await;
    let alpha = Backend::start("alpha");
    let port = util::free_port();
    server
        .publish(snapshot(
            "r1",
            &gateway(port, &[("/", "alpha")], &[("alpha", alpha.addr)]),
        ))
        .await;
    let admin_port = util::free_port();
    let bootstrap = dir.path().join("edge.yaml");
    let sds_dir = dir.path().join("sds");
    let file = |name: &str| volume.join(name).display().to_string();
    cli_bootstrap(
        &envoy_bin,
        &bootstrap,
        &[
            "--node-id",
            "edge",
            "--cluster",
            "gateway",
            "--xds-address",
            &server.addr.to_string(),
            "--admin-port",
            &admin_port.to_string(),
            "--xds-tls-cert",
            &file("tls.crt"),
            "--xds-tls-key",
            &file("tls.key"),
            "--xds-ca",
            &file("ca.crt"),
            "--xds-server-name",
            SERVER_NAME,
            "--xds-tls-sds-dir",
            &sds_dir.display().to_string(),
        ],
    );
    for name in [
        attache::xds::bootstrap::CLIENT_CERT_SDS_FILE,
        attache::xds::bootstrap::SERVER_CA_SDS_FILE,
    ] {
        let text = std::fs::read_to_string(sds_dir.join(name)).expect("SDS file written");
        assert!(
            !text.contains("PRIVATE KEY"),
            "{name} names files only:\n{text}"
        );
    }

    // The stale certificate is refused, and Envoy keeps retrying.
    let before = failures(&server, &metrics, "client_certificate_rejected");
    let starting = tokio::task::spawn_blocking({
        let (envoy_bin, bootstrap) = (envoy_bin.clone(), bootstrap.clone());
        move || EnvoyProcess::start(&envoy_bin, &bootstrap, admin_port)
    });
    until_refused(&server, &metrics, "client_certificate_rejected", before).await;
    assert!(server.store.node("edge").is_none());

    // Renewed: Envoy's next attempt presents the new certificate and is let in.
    publish_volume("v2", "edge");
    let envoy = starting.await.expect("envoy starts");
    expect_route(&envoy, port, "/", "alpha");
    server
        .until("edge in sync with r1", |s| {
            s.node("edge")
                .and_then(|n| n.synced_snapshot)
                .is_some_and(|v| v.starts_with("r1"))
        })
        .await;
    assert!(
        stat(&envoy, "cluster.xds_cluster.upstream_cx_total") >= 2,
        "refused first, then connected\n{}",
        envoy.log()
    );
    server.stop().await;
}

/// `attache serve` itself with the TLS flags: a client with a certificate from the CA
/// completes a handshake (ALPN h2) and reaches the HTTP/2 server; a plaintext client
/// does not, and `/metrics` counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_tls_takes_a_client_certificate_and_counts_a_plaintext_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(pki) = attache_pki(dir.path()) else {
        return;
    };
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("mkdir");
    std::fs::write(
        config.join("gateway.yaml"),
        util::gateway_yaml(8080, "/", "echo:80"),
    )
    .expect("write config");
    let (xds_port, admin_port) = (util::free_port(), util::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_attache"))
        .arg("serve")
        .arg("--dir")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--xds-addr", &format!("127.0.0.1:{xds_port}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
        .args(["--endpoints", "dns"])
        .arg("--xds-tls-cert")
        .arg(pki.crt("server"))
        .arg("--xds-tls-key")
        .arg(pki.key("server"))
        .arg("--xds-client-ca")
        .arg(pki.crt("ca"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn attache serve");
    let _serve = KillOnDrop(child);
    let xds = SocketAddr::from(([127, 0, 0, 1], xds_port));
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(xds).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "attache serve did not listen on {xds}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

    // With the certificate: TLS, h2, and the server's SETTINGS frame back.
    let connector = tokio_rustls::TlsConnector::from(rustls_client(&pki, "edge", "ca"));
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("name");
    let tcp = tokio::net::TcpStream::connect(xds).await.expect("connect");
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake with a client certificate");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(PREFACE).await.expect("preface");
    let mut frame = [0u8; 9];
    tokio::time::timeout(WAIT, tls.read_exact(&mut frame))
        .await
        .expect("SETTINGS in time")
        .expect("SETTINGS");
    assert_eq!(frame[3], 4, "an HTTP/2 SETTINGS frame");

    // Plaintext HTTP/2: at most a TLS alert (record type 21), never HTTP/2.
    let mut plain = tokio::net::TcpStream::connect(xds).await.expect("connect");
    plain.write_all(PREFACE).await.expect("preface");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut reply)).await;
    assert!(
        reply.is_empty() || reply[0] == 21,
        "a plaintext client got {reply:?}"
    );
    let mut counted = String::new();
    let ok = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
            if let Ok(resp) = util::http_get(admin, "localhost", "/metrics", &[]) {
                counted = resp.body_text();
                if counted
                    .contains("attache_xds_tls_handshake_failures_total{reason=\"not_tls\"} 1")
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    assert!(ok, "the plaintext client is not counted:\n{counted}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A rustls client presenting `client`'s certificate and trusting `ca`.
fn rustls_client(pki: &Pki, client: &str, ca: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.crt(ca)).expect("ca file") {
        roots.add(cert.expect("ca pem")).expect("ca");
    }
    let chain = CertificateDer::pem_file_iter(pki.crt(client))
        .expect("client cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("client pem");
    let key = PrivateKeyDer::from_pem_file(pki.key(client)).expect("client key");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// `attache serve` with a TLS file it cannot use stops at once and names the file.
#[test]
fn serve_with_a_wrong_tls_file_fails_at_start_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("mkdir");
    std::fs::write(
        config.join("gateway.yaml"),
        util::gateway_yaml(8080, "/", "echo:80"),
    )
    .expect("write config");
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certs");
    let serve = |cert: &Path, key: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_attache"))
            .arg("serve")
            .arg("--dir")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--xds-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(["--endpoints", "dns"])
            .arg("--xds-tls-cert")
            .arg(cert)
            .arg("--xds-tls-key")
            .arg(key)
            .arg("--xds-client-ca")
            .arg(certs.join("example.com.crt"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn attache serve");
        // Bounded: a serve that did not fail would run forever.
        for _ in 0..200 {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("attache serve kept running with a wrong TLS file");
        }
        let output = child.wait_with_output().expect("output");
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let missing = dir.path().join("missing.crt");
    let stderr = serve(&missing, &certs.join("example.com.key"));
    assert!(
        stderr.contains("cannot read the xds TLS certificate file")
            && stderr.contains(&missing.display().to_string()),
        "{stderr}"
    );
    let stderr = serve(
        &certs.join("example.com.crt"),
        &certs.join("other.example.key"),
    );
    assert!(
        stderr.contains("does not match the certificate") && stderr.contains("other.example.key"),
        "{stderr}"
    );
}

/// The three TLS flags go together.
#[test]
fn serve_tls_flags_are_all_or_none() {
    let output = Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["serve", "--dir", ".", "--xds-tls-cert", "tls.crt"])
        .output()
        .expect("run attache");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--xds-tls-key") && stderr.contains("--xds-client-ca"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["bootstrap", "--node-id", "n", "--cluster", "c"])
        .args(["--xds-address", "127.0.0.1:18000", "--xds-ca", "ca.crt"])
        .output()
        .expect("run attache");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--xds-tls-cert"), "{stderr}");
}
