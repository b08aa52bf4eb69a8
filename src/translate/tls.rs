//! TLS: which certificate and settings a Host terminates with, the downstream and upstream
//! TLS contexts built from them, and the SDS secrets they name.
//!
//! Certificates never sit inline in listeners or clusters: TLS contexts name a secret and
//! fetch it over SDS from the same ADS stream, so a certificate rotation updates one Secret
//! resource instead of every listener that uses it (and Envoy need not drain connections).

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, config_source, data_source,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    secret,
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::BoolValue;

use super::names;
use crate::config::{
    CaBundle, Config, ContextLookup, ContextRef, Host, PeerValidation, TlsContext, TlsSecret,
    TlsVersion,
};

/// The name an upstream is known by: what SNI carries by default, and what its
/// certificate must name when a TLSContext verifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PeerName {
    /// A DNS name (a Kubernetes Service is `name.namespace`): sent as SNI, checked as a
    /// DNS SAN.
    Dns(String),
    /// An IP literal: no SNI (RFC 6066 forbids it), checked as an IP SAN.
    Ip(IpAddr),
}

/// How one Host terminates TLS: the secret holding its certificate and the TLSContext
/// whose protocol settings apply, if any.
#[derive(Debug, Clone, Copy)]
pub(super) struct HostTls<'a> {
    pub secret: &'a str,
    pub context: Option<&'a TlsContext>,
}

/// The TLS settings of `host`, or `None` when it serves cleartext only.
///
/// The TLSContext is the one the Host names (resolved as validation does, see
/// [`Config::tls_context`]), else the first whose `hosts` lists the Host's hostname. The
/// certificate is the Host's `tlsSecret`, else that TLSContext's `secret`. A secret that
/// `config.secrets` does not hold leaves the Host without TLS: validation reports it, and
/// a listener that waited for a secret that never comes would never warm, taking every
/// other Host down with it.
pub(super) fn host_tls<'a>(config: &'a Config, host: &'a Host) -> Option<HostTls<'a>> {
    let context = config.host_context(host);
    let secret = host
        .tls_secret
        .as_deref()
        .or_else(|| context.and_then(|c| c.secret.as_deref()))?;
    // Likewise a CA that is not there (validation left out the Hosts that relied on it;
    // without --secrets-dir no certificate is there either).
    let ca_present = context
        .and_then(|c| c.peer_validation.as_ref())
        .is_none_or(|v| config.ca_bundles.contains_key(&v.ca_secret));
    (config.secrets.contains_key(secret) && ca_present).then_some(HostTls { secret, context })
}

/// Whether `host` terminates TLS with a TLSContext that requires client certificates
/// (`cert_required`).
pub(super) fn requires_client_certificate(config: &Config, host: &Host) -> bool {
    host_tls(config, host)
        .and_then(|t| t.context)
        .and_then(|c| c.peer_validation.as_ref())
        .is_some_and(|v| v.cert_required)
}

/// The TLSContext an upstream reference names. Validation resolved it to the context's
/// own namespace, so this finds exactly that one.
pub(super) fn upstream_context<'a>(config: &'a Config, r: &ContextRef) -> Option<&'a TlsContext> {
    match config.tls_context(&r.name, &r.namespace) {
        ContextLookup::Found(c) => Some(c),
        ContextLookup::Missing | ContextLookup::Ambiguous(..) => None,
    }
}

/// The DownstreamTlsContext of a TLS Host: its certificate by SDS, its TLSContext's
/// protocol versions, ciphers and ALPN. With a `ca_secret`, Envoy asks every client for a
/// certificate and verifies one that is sent against the CA; `cert_required` refuses the
/// handshake of a client that sends none.
pub(super) fn downstream(host: &HostTls<'_>) -> DownstreamTlsContext {
    let validation = host.context.and_then(|c| c.peer_validation.as_ref());
    let mut common = common(Some(host.secret), host.context, &[]);
    common.validation_context_type = validation.map(|v| validation_context(v, None));
    DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: validation
            .filter(|v| v.cert_required)
            .map(|_| BoolValue { value: true }),
        ..Default::default()
    }
}

/// The UpstreamTlsContext of a cluster: SNI (the TLSContext's `sni`, else the upstream's
/// DNS name; none for IP literals, which RFC 6066 forbids in SNI), and the TLSContext's
/// client certificate and settings. HTTP/2 clusters offer ALPN `h2` unless the
/// TLSContext says otherwise, since many gRPC servers refuse TLS connections that do not
/// negotiate it.
///
/// With a `ca_secret` the server's chain must lead to that CA and its certificate must
/// name the server: the `sni` when set (that is the name asked for), else `peer`. Without
/// one, nothing is verified (Emissary's behaviour for `tls: true`).
pub(super) fn upstream(
    peer: &PeerName,
    context: Option<&TlsContext>,
    config: &Config,
    http2: bool,
) -> UpstreamTlsContext {
    let secret = context
        .and_then(|c| c.secret.as_deref())
        .filter(|s| config.secrets.contains_key(*s));
    let default_alpn: &[&str] = if http2 { &["h2"] } else { &[] };
    let mut common = common(secret, context, default_alpn);
    let explicit_sni = context.and_then(|c| c.sni.as_deref());
    if let Some(validation) = context.and_then(|c| c.peer_validation.as_ref()) {
        let name = match explicit_sni {
            Some(sni) => &PeerName::Dns(sni.to_owned()),
            None => peer,
        };
        common.validation_context_type = Some(validation_context(validation, Some(name)));
    }
    let sni = match (explicit_sni, peer) {
        (Some(sni), _) => sni,
        (None, PeerName::Dns(host)) => host,
        (None, PeerName::Ip(_)) => "",
    };
    UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: sni.to_owned(),
        ..Default::default()
    }
}

/// Verification against the CA of `validation`, fetched over SDS as its own Secret so a
/// CA rotation is one SDS update, and, for an upstream, the name its certificate must
/// carry. The CA travels in `validation_context_sds_secret_config` alone: the SAN check
/// sits next to it in a combined context, since a validation Secret is shared by every
/// cluster that trusts the CA while each checks another name.
fn validation_context(
    validation: &PeerValidation,
    name: Option<&PeerName>,
) -> ValidationContextType {
    let ca = sds(&names::ca_secret(&validation.ca_secret));
    let Some(name) = name else {
        return ValidationContextType::ValidationContextSdsSecretConfig(ca);
    };
    let (san_type, pattern) = match name {
        // DNS names compare case-insensitively (RFC 4343); Envoy's exact DNS matcher
        // honours a wildcard certificate (`*.example.com`) as RFC 6125 says.
        PeerName::Dns(host) => (SanType::Dns, host.clone()),
        PeerName::Ip(ip) => (SanType::IpAddress, ip.to_string()),
    };
    ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
        default_validation_context: Some(CertificateValidationContext {
            match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                san_type: san_type as i32,
                matcher: Some(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(pattern)),
                    ignore_case: san_type == SanType::Dns,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        validation_context_sds_secret_config: Some(ca),
        ..Default::default()
    })
}

fn common(
    secret: Option<&str>,
    context: Option<&TlsContext>,
    default_alpn: &[&str],
) -> CommonTlsContext {
    let alpn_protocols = match context {
        Some(c) if !c.alpn_protocols.is_empty() => c.alpn_protocols.clone(),
        _ => default_alpn.iter().map(|p| (*p).to_owned()).collect(),
    };
    CommonTlsContext {
        tls_params: context.and_then(params),
        tls_certificate_sds_secret_configs: secret.map(sds).into_iter().collect(),
        alpn_protocols,
        ..Default::default()
    }
}

/// The TLSContext's protocol settings, or `None` when it sets none (Envoy's defaults).
fn params(context: &TlsContext) -> Option<TlsParameters> {
    if context.min_tls_version.is_none()
        && context.max_tls_version.is_none()
        && context.cipher_suites.is_empty()
    {
        return None;
    }
    let version = |v: Option<TlsVersion>| v.map_or(TlsProtocol::TlsAuto, protocol) as i32;
    Some(TlsParameters {
        tls_minimum_protocol_version: version(context.min_tls_version),
        tls_maximum_protocol_version: version(context.max_tls_version),
        cipher_suites: context.cipher_suites.clone(),
        ..Default::default()
    })
}

fn protocol(version: TlsVersion) -> TlsProtocol {
    match version {
        TlsVersion::V1_0 => TlsProtocol::TlSv10,
        TlsVersion::V1_1 => TlsProtocol::TlSv11,
        TlsVersion::V1_2 => TlsProtocol::TlSv12,
        TlsVersion::V1_3 => TlsProtocol::TlSv13,
    }
}

/// A reference to secret `name`, fetched over ADS.
pub(super) fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ads()),
    }
}

/// "Fetch it on the ADS stream", the config source of every RDS, EDS and SDS reference.
pub(super) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// The SDS Secret resource for a CA bundle, PEM inline: a validation context holding
/// only `trusted_ca`, under [`names::ca_secret`].
pub(super) fn ca_secret(ca: &CaBundle) -> Secret {
    Secret {
        name: names::ca_secret(&ca.name),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(ca.pem.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
    }
}

/// The SDS Secret resource for a certificate, PEM inline.
pub(super) fn secret(tls: &TlsSecret) -> Secret {
    let inline = |pem: &str| DataSource {
        specifier: Some(data_source::Specifier::InlineString(pem.to_owned())),
        ..Default::default()
    };
    Secret {
        name: tls.name.clone(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(&tls.certificate_chain)),
            private_key: Some(inline(&tls.private_key)),
            ..Default::default()
        })),
    }
}
