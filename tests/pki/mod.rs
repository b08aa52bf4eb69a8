//! Test certificates made with the `openssl` CLI (installed by .ci/run): CAs, and server
//! and client certificates signed by them, EC P-256, valid one day. Shared by the tests
//! that need a PKI (xDS over TLS, peer verification).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
";

/// Test certificates in one directory: `NAME.crt` and `NAME.key` (EC P-256, one day).
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// `None` (skip) when there is no `openssl` CLI outside CI; under CI its absence fails.
    pub fn new(dir: &Path) -> Option<Pki> {
        let found = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "no openssl CLI (apt-get install openssl)"
            );
            eprintln!("skipping: no openssl CLI");
            return None;
        }
        std::fs::create_dir_all(dir).expect("pki dir");
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).expect("write openssl.cnf");
        Some(Pki {
            dir: dir.to_owned(),
        })
    }

    pub fn crt(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// Makes `name`: a CA when `issuer` is `None`, else a `kind` (`server` or `client`)
    /// certificate signed by the CA `issuer`, with subject alternative names `sans`
    /// (`DNS:localhost,IP:127.0.0.1`).
    pub fn make(&self, name: &str, kind: &str, issuer: Option<&str>, sans: Option<&str>) {
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-config"])
            .arg(self.dir.join("openssl.cnf"))
            .args(["-extensions", kind])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-nodes", "-days", "1", "-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(self.key(name))
            .arg("-out")
            .arg(self.crt(name));
        if let Some(sans) = sans {
            cmd.args(["-addext", &format!("subjectAltName={sans}")]);
        }
        if let Some(ca) = issuer {
            cmd.arg("-CA")
                .arg(self.crt(ca))
                .arg("-CAkey")
                .arg(self.key(ca));
        }
        let output = cmd.output().expect("run openssl");
        assert!(
            output.status.success(),
            "openssl req for {name} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Copies `name`'s certificate into `secrets/SECRET/FILE`.
    pub fn install(&self, name: &str, secrets: &Path, secret: &str, file: &str) {
        let dir = secrets.join(secret);
        std::fs::create_dir_all(&dir).expect("secret dir");
        std::fs::copy(self.crt(name), dir.join(file)).expect("copy certificate");
    }

    /// `name`'s certificate and key as a Kubernetes TLS Secret `secrets/SECRET/`.
    pub fn install_pair(&self, name: &str, secrets: &Path, secret: &str) {
        self.install(name, secrets, secret, "tls.crt");
        std::fs::copy(self.key(name), secrets.join(secret).join("tls.key")).expect("copy key");
    }
}
