//! What TLS on the ADS port costs a connection (issue 8 item 3): a full handshake with a
//! client certificate (EC P-256, TLS 1.3, no resumption: what every Envoy does when
//! attache restarts), through attache's real accept path on loopback, against a plain
//! TCP connect. Every new connection also checks whether the certificate files changed
//! (three `stat`s), which is included.
//!
//! Client and server share the machine, so a handshake's figure is both sides' CPU.
//! Certificates are made with the `openssl` CLI at start.
//!
//! `cargo bench --bench xds_tls`; figures go in BENCHMARKS.md.

// The allocator the `attache` binary uses, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use attache::snapshot::{Store, StoreConfig};
use attache::xds::{self, tls::Acceptor, tls::TlsFiles};
use criterion::{Criterion, criterion_group, criterion_main};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:attache-xds
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
";

fn make(dir: &Path, name: &str, kind: &str, issuer: Option<&str>) {
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-config"])
        .arg(dir.join("openssl.cnf"))
        .args(["-extensions", kind, "-newkey", "ec"])
        .args([
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")));
    if let Some(ca) = issuer {
        cmd.arg("-CA")
            .arg(dir.join(format!("{ca}.crt")))
            .arg("-CAkey")
            .arg(dir.join(format!("{ca}.key")));
    }
    let output = cmd.output().expect("the openssl CLI");
    assert!(output.status.success(), "openssl failed for {name}");
}

fn client_config(dir: &Path) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(dir.join("ca.crt")).expect("ca") {
        roots.add(ca.expect("ca pem")).expect("ca");
    }
    let chain = CertificateDer::pem_file_iter(dir.join("edge.crt"))
        .expect("client cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("client pem");
    let key = PrivateKeyDer::from_pem_file(dir.join("edge.key")).expect("client key");
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Every Envoy reconnecting to a restarted attache does a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// Sends the HTTP/2 client preface and an empty SETTINGS frame, and waits for the
/// server's first bytes: the server has then finished its side (for TLS: verified the
/// client certificate) and handed the connection to HTTP/2.
async fn first_http2_bytes(mut io: impl AsyncRead + AsyncWrite + Unpin) {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    io.write_all(PREFACE).await.expect("write preface");
    let mut first = [0u8; 9];
    io.read_exact(&mut first).await.expect("server SETTINGS");
    assert_eq!(first[3], 4, "a SETTINGS frame");
    io.shutdown().await.ok();
}

fn tls_bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("openssl.cnf"), OPENSSL_CNF).expect("write cnf");
    make(dir.path(), "ca", "ca", None);
    make(dir.path(), "server", "server", Some("ca"));
    make(dir.path(), "edge", "client", Some("ca"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let shutdown = CancellationToken::new();
    let serve = |tls: Option<Acceptor>| -> SocketAddr {
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let store = Arc::new(Store::new(StoreConfig::default()));
            let config = xds::Config {
                tls,
                ..xds::Config::default()
            };
            tokio::spawn(xds::serve_with(listener, store, config, shutdown.clone()));
            addr
        })
    };
    let acceptor = Acceptor::load(
        TlsFiles {
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            client_ca: dir.path().join("ca.crt"),
        },
        None,
    )
    .expect("bench certificates");
    let tls_addr = serve(Some(acceptor));
    let plain_addr = serve(None);
    let connector = tokio_rustls::TlsConnector::from(client_config(dir.path()));
    let name = ServerName::try_from("attache-xds").expect("name");

    let mut group = c.benchmark_group("xds_connect");
    group.bench_function("tcp_plaintext", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let tcp = tokio::net::TcpStream::connect(plain_addr)
                    .await
                    .expect("connect");
                first_http2_bytes(tcp).await;
            })
        });
    });
    group.bench_function("tls13_full_handshake_client_cert", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let tcp = tokio::net::TcpStream::connect(tls_addr)
                    .await
                    .expect("connect");
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .expect("handshake");
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                first_http2_bytes(tls).await;
            })
        });
    });
    group.finish();
    shutdown.cancel();
}

criterion_group!(benches, tls_bench);
criterion_main!(benches);
