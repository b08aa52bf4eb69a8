//! Peer verification (`ca_secret`, `cert_required`, `sni`) -> validation contexts: the CA
//! by SDS under its own name, the SAN an upstream must carry, client certificates on a
//! Host's filter chain, and the CA Secret sent only when something uses it.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::transport_socket;
use envoy_types::pb::envoy::config::listener::v3::FilterChain;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, DownstreamTlsContext, UpstreamTlsContext,
    common_tls_context::ValidationContextType, secret, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use prost::Message;

use super::run;
use crate::config::*;
use crate::translate::Resources;
use crate::translate::testing::*;

fn verifying(name: &str, ca: &str) -> TlsContext {
    TlsContext {
        peer_validation: Some(PeerValidation {
            ca_secret: ca.into(),
            cert_required: false,
        }),
        ..tls_context(name)
    }
}

/// One Mapping per target, each to `target` with `tls: CONTEXT`.
fn upstream_config(targets: &[(&str, Target, &str)], contexts: Vec<TlsContext>) -> Config {
    let mappings = targets
        .iter()
        .map(|(name, target, context)| {
            let mut m = mapping(name, &format!("/{name}/"), "unused");
            settings(&mut m).target = Target {
                tls: UpstreamTls::Context((*context).into()),
                ..target.clone()
            };
            m
        })
        .collect();
    let mut config = with_ca(config(mappings, Vec::new()), "internal-ca");
    config.tls_contexts = contexts;
    sort(&mut config);
    config
}

fn upstream_of(resources: &Resources, name: &str) -> UpstreamTlsContext {
    let c: &Cluster = resources
        .clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name}"));
    match c
        .transport_socket
        .as_ref()
        .and_then(|s| s.config_type.as_ref())
    {
        Some(transport_socket::ConfigType::TypedConfig(any)) => {
            UpstreamTlsContext::decode(any.value.as_slice()).expect("an UpstreamTlsContext")
        }
        other => panic!("{name}: no TLS socket: {other:?}"),
    }
}

/// (CA secret name, SANs as (type, exact, ignore_case)) of an upstream context.
fn checks(tls: &UpstreamTlsContext) -> (String, Vec<(SanType, String, bool)>) {
    let common = tls.common_tls_context.as_ref().expect("a common context");
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        &common.validation_context_type
    else {
        panic!("no combined validation context: {common:?}");
    };
    let ca = combined
        .validation_context_sds_secret_config
        .as_ref()
        .expect("the CA by SDS");
    assert!(ca.sds_config.is_some(), "the CA comes over ADS");
    let default = combined
        .default_validation_context
        .as_ref()
        .expect("the SAN check");
    assert!(
        default.trusted_ca.is_none(),
        "the CA travels only in its Secret"
    );
    let sans = default
        .match_typed_subject_alt_names
        .iter()
        .map(|m| {
            let matcher = m.matcher.as_ref().expect("a matcher");
            let Some(MatchPattern::Exact(exact)) = &matcher.match_pattern else {
                panic!("not exact: {matcher:?}");
            };
            (
                SanType::try_from(m.san_type).expect("a SAN type"),
                exact.clone(),
                matcher.ignore_case,
            )
        })
        .collect();
    (ca.name.clone(), sans)
}

#[test]
fn an_upstream_is_checked_by_its_dns_name_its_ip_or_the_sni() {
    let named = TlsContext {
        sni: Some("api.internal.example.com".into()),
        ..verifying("named", "internal-ca")
    };
    let config = upstream_config(
        &[
            ("dns", address("api.example.com", 443), "verify"),
            ("ip", address("10.0.0.5", 8443), "verify"),
            ("ip6", address("[2001:db8::5]", 8443), "verify"),
            ("kube", kube("users"), "verify"),
            ("sni", address("10.0.0.5", 8443), "named"),
        ],
        vec![verifying("verify", "internal-ca"), named],
    );
    let resources = run(&config);
    let ca = "ca/internal-ca".to_owned();
    for (cluster, sni, san) in [
        (
            "cluster_api_example_com_443_tls_verify",
            "api.example.com",
            (SanType::Dns, "api.example.com", true),
        ),
        (
            "cluster_10_0_0_5_8443_tls_verify",
            "",
            (SanType::IpAddress, "10.0.0.5", false),
        ),
        (
            "cluster__2001_db8__5__8443_tls_verify",
            "",
            (SanType::IpAddress, "2001:db8::5", false),
        ),
        (
            "cluster_users_default_80_tls_verify",
            "users.default",
            (SanType::Dns, "users.default", true),
        ),
        (
            "cluster_10_0_0_5_8443_tls_named",
            "api.internal.example.com",
            (SanType::Dns, "api.internal.example.com", true),
        ),
    ] {
        let tls = upstream_of(&resources, cluster);
        assert_eq!(tls.sni, sni, "{cluster}");
        assert_eq!(
            checks(&tls),
            (ca.clone(), vec![(san.0, san.1.to_owned(), san.2)]),
            "{cluster}"
        );
    }
}

#[test]
fn without_a_ca_nothing_is_verified_and_sni_still_applies() {
    let sni_only = TlsContext {
        sni: Some("front.example.com".into()),
        ..tls_context("sni-only")
    };
    let config = upstream_config(
        &[("plain", address("10.0.0.5", 443), "sni-only")],
        vec![sni_only],
    );
    let resources = run(&config);
    let tls = upstream_of(&resources, "cluster_10_0_0_5_443_tls_sni_only");
    assert_eq!(tls.sni, "front.example.com");
    let common = tls.common_tls_context.expect("a common context");
    assert_eq!(common.validation_context_type, None);
    // The CA nobody uses is not sent.
    assert!(resources.secrets.is_empty(), "{:?}", resources.secrets);
}

#[test]
fn the_ca_secret_is_a_validation_context_sent_once_for_all_its_users() {
    let config = upstream_config(
        &[
            ("a", address("a.example.com", 443), "verify"),
            ("b", address("b.example.com", 443), "verify"),
        ],
        vec![verifying("verify", "internal-ca")],
    );
    let resources = run(&config);
    let names: Vec<&str> = resources.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ca/internal-ca"]);
    let Some(secret::Type::ValidationContext(CertificateValidationContext {
        trusted_ca: Some(ca),
        ..
    })) = &resources.secrets[0].r#type
    else {
        panic!("not a validation context: {:?}", resources.secrets[0]);
    };
    assert_eq!(
        ca.specifier,
        Some(
            envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                CERT.to_owned()
            )
        )
    );
}

fn downstream_of(chain: &FilterChain) -> DownstreamTlsContext {
    match chain
        .transport_socket
        .as_ref()
        .and_then(|s| s.config_type.as_ref())
    {
        Some(transport_socket::ConfigType::TypedConfig(any)) => {
            DownstreamTlsContext::decode(any.value.as_slice()).expect("a DownstreamTlsContext")
        }
        other => panic!("{}: no TLS socket: {other:?}", chain.name),
    }
}

#[test]
fn a_host_asks_for_client_certificates_and_requires_them_with_cert_required() {
    let hosts = vec![
        Host {
            tls_context: Some("partners-mtls".into()),
            ..tls_host("partners", "partners.example.com", "example-cert")
        },
        tls_host("portal", "portal.example.com", "example-cert"),
        tls_host("public", "public.example.com", "example-cert"),
    ];
    let mut config = with_ca(
        with_secret(config(Vec::new(), hosts), "example-cert"),
        "clients",
    );
    config.tls_contexts = vec![
        TlsContext {
            peer_validation: Some(PeerValidation {
                ca_secret: "clients".into(),
                cert_required: true,
            }),
            ..tls_context("partners-mtls")
        },
        TlsContext {
            hosts: vec!["portal.example.com".into()],
            ..verifying("portal-clients", "clients")
        },
    ];
    sort(&mut config);
    let resources = run(&config);
    let listener = listener_named(&resources, "listener_8443");
    let chain = |name: &str| {
        listener
            .filter_chains
            .iter()
            .find(|c| c.name == name)
            .map(downstream_of)
            .unwrap_or_else(|| panic!("no chain {name}"))
    };
    let ca = |tls: &DownstreamTlsContext| match &tls
        .common_tls_context
        .as_ref()
        .expect("common")
        .validation_context_type
    {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => {
            Some(sds.name.clone())
        }
        None => None,
        other => panic!("unexpected validation: {other:?}"),
    };
    let partners = chain("default/partners");
    assert_eq!(ca(&partners), Some("ca/clients".into()));
    assert_eq!(
        partners.require_client_certificate.map(|b| b.value),
        Some(true)
    );
    let portal = chain("default/portal");
    assert_eq!(ca(&portal), Some("ca/clients".into()));
    assert_eq!(portal.require_client_certificate, None);
    let public = chain("default/public");
    assert_eq!(ca(&public), None);
    assert_eq!(public.require_client_certificate, None);

    let names: Vec<&str> = resources.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ca/clients", "example-cert"]);
}

/// Every TLS Host of a listener shares its routes, so the check that a Host requires
/// client certificates is on its routes too: each matches the header that the listener
/// sets from a verified certificate (stripping clients' own), and a 403 catches the rest.
#[test]
fn routes_of_a_host_requiring_client_certificates_need_a_verified_one() {
    use envoy_types::pb::envoy::config::route::v3::route;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::ForwardClientCertDetails;

    let hosts = vec![
        Host {
            tls_context: Some("mtls".into()),
            ..tls_host("partners", "partners.example.com", "example-cert")
        },
        tls_host("public", "public.example.com", "example-cert"),
    ];
    let mut config = with_ca(
        with_secret(
            config(vec![mapping("api", "/api/", "api")], hosts),
            "example-cert",
        ),
        "clients",
    );
    config.tls_contexts = vec![TlsContext {
        peer_validation: Some(PeerValidation {
            ca_secret: "clients".into(),
            cert_required: true,
        }),
        ..tls_context("mtls")
    }];
    let resources = run(&config);
    for port in [8080, 8443] {
        let listener = listener_named(&resources, &format!("listener_{port}"));
        assert_eq!(
            hcm(listener).forward_client_cert_details,
            ForwardClientCertDetails::SanitizeSet as i32,
            "{port}"
        );
        let rc = route_config(&resources, &format!("routes_{port}"));
        let partners = vhost(rc, "default/partners");
        assert_eq!(
            route_names(partners),
            ["default/api", "client-certificate-required"]
        );
        let xfcc = |r: &envoy_types::pb::envoy::config::route::v3::Route| {
            r.r#match
                .as_ref()
                .and_then(|m| {
                    m.headers
                        .iter()
                        .find(|h| h.name == "x-forwarded-client-cert")
                })
                .map(|h| h.invert_match)
        };
        assert_eq!(xfcc(&partners.routes[0]), Some(false));
        assert_eq!(xfcc(&partners.routes[1]), Some(true));
        let Some(route::Action::DirectResponse(direct)) = &partners.routes[1].action else {
            panic!("not a direct response: {:?}", partners.routes[1]);
        };
        assert_eq!(direct.status, 403);
        let public = vhost(rc, "default/public");
        assert_eq!(route_names(public), ["default/api"]);
        assert_eq!(xfcc(&public.routes[0]), None);
    }

    // Without cert_required nothing is added: clients without a certificate are served.
    config.tls_contexts[0].peer_validation = Some(PeerValidation {
        ca_secret: "clients".into(),
        cert_required: false,
    });
    let resources = run(&config);
    let listener = listener_named(&resources, "listener_8443");
    assert_eq!(hcm(listener).forward_client_cert_details, 0);
    let rc = route_config(&resources, "routes_8443");
    assert_eq!(route_names(vhost(rc, "default/partners")), ["default/api"]);
}

/// A Host whose TLSContext's CA is not loaded is treated like one whose certificate is
/// not: it terminates no TLS, rather than terminating it without the client check it was
/// configured with. Validation reports it and leaves such a Host out; only without
/// `--secrets-dir`, where no certificate is loaded either, does translation see one.
#[test]
fn a_host_whose_ca_is_missing_does_not_terminate_tls_unverified() {
    let host = Host {
        tls_context: Some("mtls".into()),
        ..tls_host("partners", "partners.example.com", "example-cert")
    };
    let mut config = with_secret(config(Vec::new(), vec![host]), "example-cert");
    config.tls_contexts = vec![verifying("mtls", "absent")];
    let resources = run(&config);
    assert!(
        resources
            .listeners
            .iter()
            .all(|l| l.filter_chains.iter().all(|c| c.transport_socket.is_none())),
        "{:?}",
        resources.listeners
    );
}
