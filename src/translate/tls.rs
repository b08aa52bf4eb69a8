//! TLS: which certificate and settings a Host terminates with, the downstream and upstream
//! TLS contexts built from them, and the SDS secrets they name.
//!
//! Certificates never sit inline in listeners or clusters: TLS contexts name a secret and
//! fetch it over SDS from the same ADS stream, so a certificate rotation updates one Secret
//! resource instead of every listener that uses it (and Envoy need not drain connections).

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, config_source, data_source,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, TlsCertificate, TlsParameters,
    UpstreamTlsContext, secret, tls_parameters::TlsProtocol,
};

use crate::config::{Config, ContextLookup, ContextRef, Host, TlsContext, TlsSecret, TlsVersion};

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
    let context = match &host.tls_context {
        Some(name) => match config.tls_context(name, &host.meta.namespace) {
            ContextLookup::Found(c) => Some(c),
            ContextLookup::Missing | ContextLookup::Ambiguous(..) => None,
        },
        None => {
            let domain = host.hostname.as_domain();
            config
                .tls_contexts
                .iter()
                .find(|c| c.hosts.iter().any(|h| h.eq_ignore_ascii_case(&domain)))
        }
    };
    let secret = host
        .tls_secret
        .as_deref()
        .or_else(|| context.and_then(|c| c.secret.as_deref()))?;
    config
        .secrets
        .contains_key(secret)
        .then_some(HostTls { secret, context })
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
/// protocol versions, ciphers and ALPN.
pub(super) fn downstream(host: &HostTls<'_>) -> DownstreamTlsContext {
    DownstreamTlsContext {
        common_tls_context: Some(common(Some(host.secret), host.context, &[])),
        ..Default::default()
    }
}

/// The UpstreamTlsContext of a cluster: SNI (left out for IP literals, which RFC 6066
/// forbids in SNI), and the TLSContext's client certificate and settings. HTTP/2 clusters
/// offer ALPN `h2` unless the TLSContext says otherwise, since many gRPC servers refuse
/// TLS connections that do not negotiate it.
pub(super) fn upstream(
    sni: Option<&str>,
    context: Option<&TlsContext>,
    config: &Config,
    http2: bool,
) -> UpstreamTlsContext {
    let secret = context
        .and_then(|c| c.secret.as_deref())
        .filter(|s| config.secrets.contains_key(*s));
    let default_alpn: &[&str] = if http2 { &["h2"] } else { &[] };
    UpstreamTlsContext {
        common_tls_context: Some(common(secret, context, default_alpn)),
        sni: sni.unwrap_or_default().to_owned(),
        ..Default::default()
    }
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
