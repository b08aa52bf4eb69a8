//! Behaviour through a real Envoy that needs more than plain HTTP (issue 2, "Tests that
//! must exist"): HTTPS where SNI picks between two certificates, and a websocket upgrade.
//! Like e2e_static.rs: the test writes a config, `attache render --bootstrap` renders it,
//! Envoy runs on the bootstrap, traffic goes to loopback backends.
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use util::{Backend, EnvoyProcess, RenderedGateway};

struct Gateway {
    addr: SocketAddr,
    envoy: EnvoyProcess,
    dir: tempfile::TempDir,
}

/// Renders `config` plus a Listener on a free port (`protocol`) and starts Envoy on it.
/// `prepare` writes secrets as `NAME/{tls.crt,tls.key}` into the directory it is given,
/// the one `--secrets-dir` names.
fn start(protocol: &str, config: &str, prepare: impl FnOnce(&Path)) -> Option<Gateway> {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    prepare(dir.path());
    let RenderedGateway { addr, envoy } =
        RenderedGateway::start(dir.path(), protocol, config, Some(&secrets))?;
    Some(Gateway { addr, envoy, dir })
}

/// A tool the test needs; under CI its absence is a failure, elsewhere a skip.
fn tool(name: &str) -> bool {
    let found = Command::new(name).arg("--version").output().is_ok()
        || Command::new(name).arg("version").output().is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{name} is required under CI"
    );
    if !found {
        eprintln!("skipping: {name} not found");
    }
    found
}

/// A self-signed certificate for `name`, as a Kubernetes TLS Secret directory.
fn certificate(secrets: &Path, secret: &str, name: &str) {
    let dir = secrets.join(secret);
    std::fs::create_dir_all(&dir).expect("secret dir");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .arg("-keyout")
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl req failed");
}

/// `curl` over HTTPS to `name` at the gateway, trusting only `ca`: verification succeeds
/// only if Envoy presented the certificate for `name`.
fn curl_https(gateway: &Gateway, name: &str, ca: &Path) -> std::process::Output {
    let port = gateway.addr.port();
    Command::new("curl")
        .args(["-sS", "--max-time", "5", "--resolve"])
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://{name}:{port}/who/"))
        .output()
        .expect("run curl")
}

#[test]
fn https_sni_chooses_the_certificate_of_each_host() {
    if !tool("curl") || !tool("openssl") {
        return;
    }
    let a = Backend::start("alpha");
    let b = Backend::start("beta");
    let config = format!(
        "apiVersion: getambassador.io/v3alpha1
kind: Host
metadata:
  name: alpha
spec:
  hostname: a.example.com
  tlsSecret:
    name: alpha-cert
---
apiVersion: getambassador.io/v3alpha1
kind: Host
metadata:
  name: beta
spec:
  hostname: b.example.com
  tlsSecret:
    name: beta-cert
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: alpha
spec:
  hostname: a.example.com
  prefix: /who/
  service: {}
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: beta
spec:
  hostname: b.example.com
  prefix: /who/
  service: {}
",
        a.addr, b.addr
    );
    let Some(gateway) = start("HTTPS", &config, |dir| {
        certificate(&dir.join("secrets"), "alpha-cert", "a.example.com");
        certificate(&dir.join("secrets"), "beta-cert", "b.example.com");
    }) else {
        return;
    };
    let secrets = gateway.dir.path().join("secrets");
    let (ca_a, ca_b) = (
        secrets.join("alpha-cert/tls.crt"),
        secrets.join("beta-cert/tls.crt"),
    );
    for (name, ca, backend) in [
        ("a.example.com", &ca_a, "alpha"),
        ("b.example.com", &ca_b, "beta"),
    ] {
        let out = curl_https(&gateway, name, ca);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && body.starts_with(&format!("{backend} /")),
            "{name}: {}{body}\n{}",
            String::from_utf8_lossy(&out.stderr),
            gateway.envoy.log()
        );
    }
    // b.example.com is not served with a's certificate: trusting only a's fails.
    let wrong = curl_https(&gateway, "b.example.com", &ca_a);
    assert!(
        !wrong.status.success(),
        "b.example.com verified against a's certificate"
    );
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// A backend that accepts a websocket upgrade and then echoes raw bytes.
fn upgrade_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        // Two connections at most: the upgrade test and the refused one (which never
        // reaches here); the thread ends with the test process.
        for stream in listener.incoming().take(2).flatten() {
            std::thread::spawn(move || {
                let _ = echo_after_upgrade(stream);
            });
        }
    });
    addr
}

fn echo_after_upgrade(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut upgrade = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        upgrade |= line.to_ascii_lowercase().starts_with("upgrade: websocket");
    }
    if !upgrade {
        writer.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")?;
        return Ok(());
    }
    writer.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )?;
    let mut buf = [0u8; 256];
    for _ in 0..8 {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        writer.write_all(&buf[..n])?;
    }
    Ok(())
}

/// Sends an upgrade request for `path` through the gateway; returns the status line and
/// the connection.
fn upgrade(gateway: &Gateway, path: &str) -> (String, BufReader<TcpStream>) {
    let stream = TcpStream::connect(gateway.addr).expect("connect to Envoy");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    write!(
        writer,
        "GET {path} HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .expect("send upgrade");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    (status, reader)
}

#[test]
fn websocket_upgrade_only_where_allowed() {
    let backend = upgrade_backend();
    let config = format!(
        "apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: live
spec:
  prefix: /live/
  allow_upgrade: [websocket]
  service: {backend}
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: plain
spec:
  prefix: /plain/
  service: {backend}
"
    );
    let Some(gateway) = start("HTTP", &config, |_| {}) else {
        return;
    };
    let (status, mut conn) = upgrade(&gateway, "/live/feed");
    assert!(
        status.starts_with("HTTP/1.1 101"),
        "{status}\n{}",
        gateway.envoy.log()
    );
    conn.get_mut()
        .write_all(b"ping-frame")
        .expect("send after upgrade");
    let mut echoed = [0u8; 10];
    conn.read_exact(&mut echoed).expect("echo through Envoy");
    assert_eq!(&echoed, b"ping-frame");

    let (status, _) = upgrade(&gateway, "/plain/feed");
    assert!(
        !status.starts_with("HTTP/1.1 101"),
        "upgrade allowed on a plain Mapping: {status}"
    );
}
