//! Peer verification through a real Envoy: a TLSContext's `ca_secret` makes Envoy check an
//! upstream server's chain and name, and (with `cert_required`) a downstream client's
//! certificate. Like e2e_tls_ws.rs: the test writes a config, `attache render --bootstrap`
//! renders it, Envoy runs on the bootstrap, traffic goes to loopback backends.
//!
//! Certificates are made at test time with the `openssl` CLI (installed by .ci/run): two
//! CAs, a server certificate for `localhost` and 127.0.0.1 signed by the first, client
//! certificates from each.

mod pki;
mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pki::Pki;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use util::{Backend, EnvoyProcess, RenderedGateway};

// --- an HTTPS backend -------------------------------------------------------------

/// An HTTPS/1.1 backend on 127.0.0.1 presenting `cert`: answers every request `200` with
/// body `NAME PATH\n`, then closes. Runs on a thread until dropped.
struct TlsBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Requests answered: a refused handshake never gets here.
    hits: Arc<AtomicU64>,
}

impl TlsBackend {
    fn start(name: &str, cert: &Path, key: &Path) -> TlsBackend {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("read certificate")
            .collect::<Result<_, _>>()
            .expect("PEM certificate");
        let key = PrivateKeyDer::from_pem_file(key).expect("PEM key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let (stop2, hits2, name) = (stop.clone(), hits.clone(), name.to_owned());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (config, hits, name) = (config.clone(), hits2.clone(), name.clone());
                        std::thread::spawn(move || serve_tls(stream, config, &name, &hits));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TlsBackend { addr, stop, hits }
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_tls(
    stream: std::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    name: &str,
    hits: &AtomicU64,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("?");
    let body = format!("{name} {path}\n");
    hits.fetch_add(1, Ordering::Relaxed);
    let _ = write!(
        tls,
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

// --- the gateway ------------------------------------------------------------------

fn mapping(name: &str, service: &str, tls: &str) -> String {
    format!(
        "---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: {name}
spec:
  prefix: /{name}/
  service: {service}
  tls: {tls}
"
    )
}

fn tls_context(name: &str, extra: &str) -> String {
    format!(
        "---
apiVersion: getambassador.io/v3alpha1
kind: TLSContext
metadata:
  name: {name}
spec:
{extra}"
    )
}

/// The PKI the upstream tests start from: CAs `ca1` and `ca2`, and a server certificate
/// `server` for localhost and 127.0.0.1 from `ca1`. `None` (a skip) without openssl.
fn two_cas(dir: &Path) -> Option<Pki> {
    let pki = Pki::new(dir)?;
    pki.make("ca1", "ca", None, None);
    pki.make("ca2", "ca", None, None);
    pki.make(
        "server",
        "server",
        Some("ca1"),
        Some("DNS:localhost,IP:127.0.0.1"),
    );
    Some(pki)
}

#[test]
fn upstream_tls_with_a_ca_secret_verifies_the_servers_chain_and_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(pki) = two_cas(&tmp.path().join("pki")) else {
        return;
    };
    let secrets = tmp.path().join("secrets");
    // Emissary's layout (the CA in tls.crt) for one, cert-manager's (ca.crt) for the other.
    pki.install("ca1", &secrets, "ca1", "tls.crt");
    pki.install("ca2", &secrets, "ca2", "ca.crt");
    pki.make(
        "wildcard",
        "server",
        Some("ca1"),
        Some("DNS:*.wild.example"),
    );
    let backend = TlsBackend::start("secure", &pki.crt("server"), &pki.key("server"));
    let port = backend.addr.port();
    let wild = TlsBackend::start("secure", &pki.crt("wildcard"), &pki.key("wildcard"));

    let mut config = String::new();
    config += &tls_context(
        "ca1-wild",
        "  ca_secret: ca1
  sni: API.wild.example
",
    );
    config += &tls_context("by-ca1", "  ca_secret: ca1\n");
    config += &tls_context("by-ca2", "  ca_secret: ca2\n");
    config += &tls_context("ca1-wrong-name", "  ca_secret: ca1\n  sni: other.example\n");
    config += &tls_context("ca1-named", "  ca_secret: ca1\n  sni: localhost\n");
    for (name, service, tls) in [
        // Chain to CA1 and DNS SAN `localhost`.
        ("good", format!("localhost:{port}"), "by-ca1"),
        // An IP service: the certificate's IP SAN is checked.
        ("ip", format!("127.0.0.1:{port}"), "by-ca1"),
        // An IP service with `sni`: that name is sent and checked.
        ("named", format!("127.0.0.1:{port}"), "ca1-named"),
        // A wildcard certificate covers the name, in any case.
        ("wild", wild.addr.to_string(), "ca1-wild"),
        // Without a CA nothing is verified (unchanged behaviour).
        ("unverified", format!("localhost:{port}"), "true"),
        ("wrong-ca", format!("localhost:{port}"), "by-ca2"),
        ("wrong-name", format!("localhost:{port}"), "ca1-wrong-name"),
    ] {
        config += &mapping(name, &service, tls);
    }
    let Some(gateway) = RenderedGateway::start(tmp.path(), "HTTP", &config, Some(&secrets)) else {
        return;
    };
    let get = |path: &str| {
        util::http_get(gateway.addr, "gw.example.com", path, &[])
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };
    for name in ["good", "ip", "named", "wild", "unverified"] {
        let path = format!("/{name}/");
        let resp = get(&path);
        assert_eq!(
            (resp.status, resp.body_text()),
            (200, "secure /\n".to_owned()),
            "{path} should reach the backend\n{}",
            gateway.envoy.log()
        );
    }
    let served = backend.hits.load(Ordering::Relaxed);
    for (name, cluster_stat) in [
        (
            "wrong-ca",
            format!("cluster.cluster_localhost_{port}_tls_by_ca2.ssl.fail_verify_error"),
        ),
        (
            "wrong-name",
            format!("cluster.cluster_localhost_{port}_tls_ca1_wrong_name.ssl.fail_verify_san"),
        ),
    ] {
        let path = format!("/{name}/");
        let resp = get(&path);
        assert_eq!(
            resp.status,
            503,
            "{path} must be refused: {}\n{}",
            resp.body_text(),
            gateway.envoy.log()
        );
        // Refused for the reason the test means, not some other connect failure.
        let failures = gateway.envoy.stat(&cluster_stat);
        assert!(
            failures.is_some_and(|n| n > 0),
            "{cluster_stat} = {failures:?}"
        );
    }
    assert_eq!(
        backend.hits.load(Ordering::Relaxed),
        served,
        "a refused upstream must never see a request"
    );
}

/// `curl` over HTTPS to `name` at the gateway, trusting `ca`, presenting `client` (a
/// name in `pki`) when given.
fn curl(gateway: &RenderedGateway, name: &str, ca: &Path, client: Option<(&Pki, &str)>) -> Output {
    let port = gateway.addr.port();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "--resolve"])
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca);
    if let Some((pki, client)) = client {
        cmd.arg("--cert")
            .arg(pki.crt(client))
            .arg("--key")
            .arg(pki.key(client));
    }
    cmd.arg(format!("https://{name}:{port}/who/"))
        .output()
        .expect("run curl")
}

fn curl_available() -> bool {
    let found = Command::new("curl").arg("--version").output().is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "curl is required under CI"
    );
    if !found {
        eprintln!("skipping: no curl");
    }
    found
}

#[test]
fn a_host_with_a_ca_secret_verifies_client_certificates() {
    if !curl_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(pki) = Pki::new(&tmp.path().join("pki")) else {
        return;
    };
    pki.make("ca1", "ca", None, None);
    pki.make("ca2", "ca", None, None);
    pki.make(
        "gateway",
        "server",
        Some("ca1"),
        Some("DNS:required.example.com,DNS:optional.example.com"),
    );
    pki.make("trusted-client", "client", Some("ca1"), None);
    pki.make("stranger", "client", Some("ca2"), None);
    let secrets = tmp.path().join("secrets");
    pki.install_pair("gateway", &secrets, "gateway-cert");
    pki.install("ca1", &secrets, "clients-ca", "ca.crt");
    let backend = Backend::start("backend");

    let host = |name: &str, hostname: &str| {
        format!(
            "---
apiVersion: getambassador.io/v3alpha1
kind: Host
metadata:
  name: {name}
spec:
  hostname: {hostname}
  tlsSecret:
    name: gateway-cert
"
        )
    };
    let mut config = String::new();
    config += &host("required", "required.example.com");
    config += &host("optional", "optional.example.com");
    config += &tls_context(
        "mtls-required",
        "  hosts: [required.example.com]\n  ca_secret: clients-ca\n  cert_required: true\n",
    );
    config += &tls_context(
        "mtls-optional",
        "  hosts: [optional.example.com]\n  ca_secret: clients-ca\n",
    );
    config += &format!(
        "---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: who
spec:
  prefix: /who/
  service: {}
",
        backend.addr
    );
    let Some(gateway) = RenderedGateway::start(tmp.path(), "HTTPS", &config, Some(&secrets)) else {
        return;
    };
    let ca = pki.crt("ca1");
    let served = |out: &Output| {
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("backend /")
    };
    let show = |out: &Output| {
        format!(
            "exit {:?}\nstdout: {}\nstderr: {}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            gateway.envoy.log()
        )
    };
    for (host, client, expect_served) in [
        ("required.example.com", Some("trusted-client"), true),
        // Refused at the handshake: no certificate at all, or one from another CA.
        ("required.example.com", None, false),
        ("required.example.com", Some("stranger"), false),
        // Without cert_required a client without a certificate is still served, but one
        // that sends a certificate must send a good one.
        ("optional.example.com", None, true),
        ("optional.example.com", Some("trusted-client"), true),
        ("optional.example.com", Some("stranger"), false),
    ] {
        let out = curl(&gateway, host, &ca, client.map(|c| (&pki, c)));
        assert_eq!(
            served(&out),
            expect_served,
            "{host} with client certificate {client:?}:\n{}",
            show(&out)
        );
        if !expect_served {
            assert!(
                !out.status.success() && out.stdout.is_empty(),
                "{host} with {client:?} must fail the handshake, not answer:\n{}",
                show(&out)
            );
        }
    }

    // Both Hosts share the listener's routes: TLS under the optional Host's name without a
    // certificate, then `Host: required.example.com`, must not reach the required Host's
    // routes. Nor may a forged x-forwarded-client-cert stand in for a certificate.
    let hits = backend.hits.load(Ordering::Relaxed);
    let port = gateway.addr.port();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--resolve")
        .arg(format!("optional.example.com:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(&ca)
        .args(["-H", "Host: required.example.com"])
        .args(["-H", "X-Forwarded-Client-Cert: Hash=forged"])
        .arg(format!("https://optional.example.com:{port}/who/"))
        .output()
        .expect("run curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "403",
        "another Host's SNI must not open the required Host's routes:\n{}",
        show(&out)
    );
    assert_eq!(backend.hits.load(Ordering::Relaxed), hits);
}

// --- over ADS: a CA rotation is an SDS update -------------------------------------

/// An `attache serve` child process on `--dir config --secrets-dir secrets`, killed on
/// drop.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `attache serve` with its ADS on `xds`, and Envoy on `attache bootstrap`'s output.
fn serve(
    tmp: &Path,
    config: &Path,
    secrets: &Path,
    xds: SocketAddr,
) -> Option<(Serve, EnvoyProcess)> {
    let envoy_bin = util::envoy_binary()?;
    let admin_port = util::free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["bootstrap", "--node-id", "edge-1", "--cluster", "edge"])
        .args(["--xds-address", &xds.to_string()])
        .args(["--admin-port", &admin_port.to_string()])
        .output()
        .expect("run attache bootstrap");
    assert!(
        output.status.success(),
        "bootstrap failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bootstrap = tmp.join("envoy.yaml");
    std::fs::write(&bootstrap, &output.stdout).expect("write bootstrap");
    let child = Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(["serve", "--dir"])
        .arg(config)
        .arg("--secrets-dir")
        .arg(secrets)
        .arg("--state-dir")
        .arg(tmp.join("state"))
        .args(["--xds-addr", &xds.to_string()])
        .args(["--admin-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn attache serve");
    let attache = Serve(child);
    let envoy = EnvoyProcess::start(&envoy_bin, &bootstrap, admin_port);
    Some((attache, envoy))
}

#[test]
fn a_rotated_ca_reaches_envoy_over_sds_without_a_cluster_update() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(pki) = two_cas(&tmp.path().join("pki")) else {
        return;
    };
    // The gateway starts out trusting the wrong CA.
    let secrets = tmp.path().join("secrets");
    pki.install("ca2", &secrets, "upstream-ca", "ca.crt");
    let backend = TlsBackend::start("secure", &pki.crt("server"), &pki.key("server"));
    let listener = SocketAddr::from(([127, 0, 0, 1], util::free_port()));
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).expect("config dir");
    let yaml = util::listener_yaml(listener.port())
        + &tls_context("verify", "  ca_secret: upstream-ca\n")
        + &mapping(
            "api",
            &format!("localhost:{}", backend.addr.port()),
            "verify",
        );
    std::fs::write(config.join("gateway.yaml"), &yaml).expect("write config");
    let xds = SocketAddr::from(([127, 0, 0, 1], util::free_port()));
    let Some((_attache, envoy)) = serve(tmp.path(), &config, &secrets, xds) else {
        return;
    };
    let status = || {
        util::http_get(listener, "gw.example.com", "/api/", &[])
            .map(|r| r.status)
            .unwrap_or(0)
    };
    assert!(
        envoy.eventually(Duration::from_secs(20), || status() == 503),
        "the route never came up refusing the upstream:\n{}",
        envoy.log()
    );
    assert_eq!(backend.hits.load(Ordering::Relaxed), 0);
    let clusters_changed = envoy.stat("cluster_manager.cluster_modified");
    assert!(clusters_changed.is_some(), "no cluster_modified stat");
    let sds_updates = |stat: &str| {
        envoy
            .stat(&format!("sds.ca/upstream-ca.{stat}"))
            .unwrap_or(0)
    };
    let rotations = sds_updates("update_success");

    // Rotate the CA file; the next revision (any change to the config) reads it again.
    pki.install("ca1", &secrets, "upstream-ca", "ca.crt");
    std::fs::write(config.join("gateway.yaml"), yaml + "# rotated\n").expect("touch config");
    assert!(
        envoy.eventually(Duration::from_secs(20), || status() == 200),
        "the rotated CA never reached Envoy:\n{}",
        envoy.log()
    );
    assert!(
        sds_updates("update_success") > rotations,
        "not an SDS update"
    );
    assert_eq!(
        envoy.stat("cluster_manager.cluster_modified"),
        clusters_changed,
        "the cluster was rebuilt for a CA rotation"
    );
}
