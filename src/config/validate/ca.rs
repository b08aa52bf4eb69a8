//! CA bundles for TLSContexts' `ca_secret`: read from `--secrets-dir/NAME/ca.crt`, else
//! `NAME/tls.crt`, into [`Config::ca_bundles`].
//!
//! `ca.crt` first because cert-manager writes the issuing CA there (next to the leaf in
//! `tls.crt`); `tls.crt` is where Emissary reads the CA of a `ca_secret`, so a Secret made
//! for Emissary works unchanged. Each bundle must hold at least one PEM certificate: an
//! empty or garbled bundle would make Envoy refuse every peer (or NACK), which is better
//! reported here with the TLSContext's file and line.

use std::collections::BTreeMap;
use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{Diagnostic, diag_at};
use crate::config::diag::Severity;
use crate::config::model::{CaBundle, Config, Kind, Origin};

/// The first TLSContext that names each CA secret: where a problem with it is reported.
fn wanted(config: &Config) -> BTreeMap<String, (Origin, String)> {
    let mut wanted = BTreeMap::new();
    for t in &config.tls_contexts {
        if let Some(v) = &t.peer_validation {
            wanted
                .entry(v.ca_secret.clone())
                .or_insert_with(|| (t.meta.origin.clone(), t.meta.name.clone()));
        }
    }
    wanted
}

/// Reads every CA bundle that a TLSContext of `config` names into `config.ca_bundles`.
/// Without `secrets_dir` each gets a warning and none is read (as certificates are):
/// `validate` in CI has no secrets, and upstream clusters then refuse to connect until a
/// CA arrives rather than connect unverified.
pub(super) fn load(config: &mut Config, secrets_dir: Option<&Path>, out: &mut Vec<Diagnostic>) {
    let wanted = wanted(config);
    for (secret, (origin, name)) in wanted {
        let Some(dir) = secrets_dir else {
            out.push(diag_at(
                &origin,
                Severity::Warning,
                Kind::TlsContext,
                &name,
                "ca_secret",
                format!("CA secret {secret:?} not checked: no --secrets-dir given"),
            ));
            continue;
        };
        match read(&dir.join(&secret)) {
            Ok(pem) => {
                config
                    .ca_bundles
                    .insert(secret.clone(), CaBundle { name: secret, pem });
            }
            Err(why) => out.push(diag_at(
                &origin,
                Severity::Error,
                Kind::TlsContext,
                &name,
                "ca_secret",
                format!("CA secret {secret:?}: {why}"),
            )),
        }
    }
}

/// The PEM bundle in `dir`: `ca.crt` when it exists, else `tls.crt`.
fn read(dir: &Path) -> Result<String, String> {
    let ca = dir.join("ca.crt");
    let path = match std::fs::symlink_metadata(&ca) {
        Ok(_) => ca,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => dir.join("tls.crt"),
        Err(e) => return Err(format!("cannot read {}: {e}", ca.display())),
    };
    let pem = std::fs::read_to_string(&path).map_err(|e| {
        if path.ends_with("tls.crt") {
            format!("no ca.crt, and cannot read {}: {e}", path.display())
        } else {
            format!("cannot read {}: {e}", path.display())
        }
    })?;
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests;
