use std::path::Path;

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/certs")
        .join(name)
}

/// `example.com`'s pair, trusting itself as the client CA.
fn files() -> TlsFiles {
    TlsFiles {
        cert: fixture("example.com.crt"),
        key: fixture("example.com.key"),
        client_ca: fixture("example.com.crt"),
    }
}

fn error(files: TlsFiles) -> Error {
    Acceptor::load(files, None).expect_err("the files are wrong")
}

#[test]
fn a_matching_pair_loads_with_h2_and_client_auth() {
    let acceptor = Acceptor::load(files(), None).expect("fixture pair loads");
    let config = acceptor.config();
    assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    // A client without a certificate is refused once it has seen the server's.
    let (served, refused) = handshake(&config);
    assert!(served.is_some());
    assert_eq!(refused, Some(rustls::Error::NoCertificatesPresented));
}

#[test]
fn a_missing_file_is_named() {
    let missing = fixture("no-such.crt");
    let err = error(TlsFiles {
        cert: missing.clone(),
        ..files()
    });
    assert!(
        matches!(
            err,
            Error::Read {
                what: "certificate",
                ..
            }
        ),
        "{err:?}"
    );
    let text = chain(&err);
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("No such file"), "{text}");

    let err = error(TlsFiles {
        client_ca: missing.clone(),
        ..files()
    });
    assert!(err.to_string().contains("client CA"), "{err}");
}

#[test]
fn a_file_without_the_block_it_needs_is_named() {
    // A key where the certificate belongs, and the other way round.
    let err = error(TlsFiles {
        cert: fixture("example.com.key"),
        ..files()
    });
    assert!(matches!(err, Error::NoCertificate { .. }), "{err:?}");
    assert!(err.to_string().contains("example.com.key"), "{err}");
    let err = error(TlsFiles {
        key: fixture("example.com.crt"),
        ..files()
    });
    assert!(matches!(err, Error::NoKey { .. }), "{err:?}");
    assert!(
        err.to_string().contains("holds no PEM private key"),
        "{err}"
    );
    let err = error(TlsFiles {
        client_ca: fixture("example.com.key"),
        ..files()
    });
    assert!(
        err.to_string().contains("client CA file")
            && err.to_string().contains("no PEM certificate"),
        "{err}"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let err = error(TlsFiles {
        key: fixture("other.example.key"),
        ..files()
    });
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("other.example.key") && text.contains("example.com.crt"),
        "{text}"
    );
}

#[test]
fn broken_pem_and_garbage_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let truncated = dir.path().join("truncated.crt");
    std::fs::write(&truncated, "-----BEGIN CERTIFICATE-----\nMIIB\n").expect("write");
    let err = error(TlsFiles {
        cert: truncated,
        ..files()
    });
    assert!(matches!(err, Error::Pem { .. }), "{err:?}");
    assert!(chain(&err).contains("truncated.crt"), "{}", chain(&err));

    // Well-formed PEM whose content is no certificate.
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let err = error(TlsFiles {
        cert: garbage.clone(),
        ..files()
    });
    assert!(matches!(err, Error::BadCertificate { .. }), "{err:?}");
    let err = error(TlsFiles {
        client_ca: garbage,
        ..files()
    });
    assert!(matches!(err, Error::BadClientCa { .. }), "{err:?}");
}

#[test]
fn changed_files_are_loaded_again_and_a_broken_change_keeps_the_old_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let at = |name: &str| dir.path().join(name);
    let copy = |from: &str, to: &str| {
        // Write a new file and rename it over, as a Secret volume update does.
        let tmp = at(&format!("{to}.tmp"));
        std::fs::copy(fixture(from), &tmp).expect("copy fixture");
        std::fs::rename(&tmp, at(to)).expect("rename");
    };
    copy("example.com.crt", "tls.crt");
    copy("example.com.key", "tls.key");
    copy("example.com.crt", "ca.crt");
    let acceptor = Acceptor::load(
        TlsFiles {
            cert: at("tls.crt"),
            key: at("tls.key"),
            client_ca: at("ca.crt"),
        },
        None,
    )
    .expect("loads");
    let first = acceptor.config();
    assert!(Arc::ptr_eq(&first, &acceptor.config()), "unchanged files");

    // Half a rotation: the new certificate with the old key does not load.
    copy("other.example.crt", "tls.crt");
    let during = acceptor.config();
    assert!(
        Arc::ptr_eq(&first, &during),
        "the previous set keeps serving"
    );

    copy("other.example.key", "tls.key");
    let rotated = acceptor.config();
    assert!(
        !Arc::ptr_eq(&first, &rotated),
        "the completed rotation is loaded"
    );
    let other = certificates("certificate", &fixture("other.example.crt")).expect("fixture");
    assert_eq!(served_certificate(&rotated), other[0]);
    let example = certificates("certificate", &fixture("example.com.crt")).expect("fixture");
    assert_eq!(served_certificate(&first), example[0]);

    // A file that disappears keeps the last good set too.
    std::fs::remove_file(at("tls.key")).expect("remove");
    assert!(Arc::ptr_eq(&rotated, &acceptor.config()));
}

fn served_certificate(config: &Arc<ServerConfig>) -> CertificateDer<'static> {
    handshake(config)
        .0
        .expect("the server presented a certificate")
}

/// A handshake in memory with a client that sends no certificate: the leaf certificate
/// `config` presents, and the server's error. The client records the certificate and
/// accepts it (the fixtures are self-signed CA certificates, which a real verifier
/// would refuse as a leaf).
fn handshake(
    config: &Arc<ServerConfig>,
) -> (Option<CertificateDer<'static>>, Option<rustls::Error>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        seen: Mutex::new(None),
        provider: provider.clone(),
    });
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("example.com").expect("a dns name");
    let mut client = rustls::ClientConnection::new(Arc::new(client), name).expect("client");
    let mut server = rustls::ServerConnection::new(config.clone()).expect("server");
    for _ in 0..8 {
        let mut bytes = Vec::new();
        let _ = client.write_tls(&mut bytes);
        let _ = server.read_tls(&mut bytes.as_slice());
        if let Err(e) = server.process_new_packets() {
            return (recorder.seen.lock().clone(), Some(e));
        }
        bytes.clear();
        let _ = server.write_tls(&mut bytes);
        let _ = client.read_tls(&mut bytes.as_slice());
        let _ = client.process_new_packets();
    }
    let seen = recorder.seen.lock().clone();
    (seen, None)
}

#[derive(Debug)]
struct Recorder {
    seen: Mutex<Option<CertificateDer<'static>>>,
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.seen.lock() = Some(end_entity.clone().into_owned());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
