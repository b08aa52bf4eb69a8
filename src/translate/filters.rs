//! The HTTP filter chain and gateway-wide settings of every HttpConnectionManager: which
//! filters run (from the AuthService, the RateLimitService, Mappings that use CORS or a
//! local rate limit, and the Module's gRPC-Web switch), the Module's connection settings,
//! access logs (the Module's file/stdout log and each LogService) and tracing.
//!
//! Filters are added only when something uses them, so a config without policies keeps
//! the bare router chain. Order matters: gRPC-Web first (it turns a gRPC-Web request into
//! gRPC for everything after it), CORS before authorization (a preflight carries no
//! credentials and must be answered, not denied), then ext_authz, the global and the
//! local rate limits, the buffer (after every filter that may refuse the request, so a
//! refused body is never buffered), and the router last.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog as EnvoyAccessLog, access_log};
use envoy_types::pb::envoy::config::core::v3::{
    ApiVersion, DataSource, GrpcService, HeaderValue, HeaderValueOption, Http1ProtocolOptions,
    HttpUri, RuntimeFractionalPercent, SubstitutionFormatString, data_source, grpc_service,
    header_value_option::HeaderAppendAction, http_uri, substitution_format_string,
};
use envoy_types::pb::envoy::config::ratelimit::v3::RateLimitServiceConfig;
use envoy_types::pb::envoy::config::trace::v3::{
    OpenTelemetryConfig, ZipkinConfig, tracing, zipkin_config,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3::{
    CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig, TcpGrpcAccessLogConfig,
};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StdoutAccessLog, stdout_access_log,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    LocalRateLimitDescriptor, XRateLimitHeadersRfcVersion, rate_limit_descriptor,
};
use envoy_types::pb::envoy::extensions::filters::http::buffer::v3::Buffer;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    AuthorizationResponse, BufferSettings, ExtAuthz, HttpService, ext_authz,
};
use envoy_types::pb::envoy::extensions::filters::http::grpc_web::v3::GrpcWeb;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::RateLimit;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListStringMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{
    FractionalPercent, HttpStatus, Percent, fractional_percent,
};
use envoy_types::pb::google::protobuf::{
    Any, BoolValue, Struct, UInt32Value, Value, value::Kind as ValueKind,
};
use envoy_types::util::pack_any;
use prost::{Message, Name};

use super::route::duration_ms;
use super::route_policy;
use crate::config::{
    AccessLogFormat, Action, AuthProtocol, Config, LogService, Target, TracingDriver,
};

/// Filter names: the HCM's chain and routes' `typed_per_filter_config` must agree.
pub(super) const CORS: &str = "envoy.filters.http.cors";
pub(super) const EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";
pub(super) const RATE_LIMIT: &str = "envoy.filters.http.ratelimit";
pub(super) const LOCAL_RATE_LIMIT: &str = "envoy.filters.http.local_ratelimit";
pub(super) const GRPC_WEB: &str = "envoy.filters.http.grpc_web";
pub(super) const BUFFER: &str = "envoy.filters.http.buffer";
pub(super) const ROUTER: &str = "envoy.filters.http.router";

/// Envoy's stat prefix for the local rate limit filter (`<prefix>.http_local_rate_limit.*`).
const LOCAL_RATE_LIMIT_STATS: &str = "local_rate_limit";

/// Emissary's request headers every auth server sees, besides Envoy's own (Host, Method,
/// Path, Content-Length, Authorization).
const AUTH_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "from",
    "proxy-authorization",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Emissary's auth response headers passed on, besides the configured ones.
const AUTH_RESPONSE_HEADERS: &[&str] = &[
    "authorization",
    "location",
    "proxy-authenticate",
    "set-cookie",
    "www-authenticate",
];

/// Sets the filters and gateway-wide settings of `hcm` from `config`; `clusters` names
/// the clusters of the gateway services' targets.
pub(super) fn apply(
    hcm: &mut HttpConnectionManager,
    config: &Config,
    clusters: &BTreeMap<Target, String>,
) {
    let cluster = |t: &Target| clusters.get(t).cloned().unwrap_or_default();
    let mut chain = Vec::new();
    if config.module.enable_grpc_web {
        chain.push(filter(GRPC_WEB, pack_any(GrpcWeb::default())));
    }
    let routes = || {
        config.mappings.iter().filter_map(|m| match &m.action {
            Action::Route(r) => Some(&r.policy),
            Action::Redirect(_) => None,
        })
    };
    if routes().any(|p| p.cors.is_some()) {
        chain.push(filter(CORS, pack_any(Cors::default())));
    }
    if let Some(auth) = &config.auth_service {
        chain.push(filter(
            EXT_AUTHZ,
            pack_any(ext_authz(auth, cluster(&auth.target))),
        ));
    }
    if let Some(rls) = &config.rate_limit_service {
        chain.push(filter(
            RATE_LIMIT,
            pack_any(RateLimit {
                domain: rls.domain.clone(),
                timeout: rls.timeout_ms.map(duration_ms),
                failure_mode_deny: rls.failure_mode_deny,
                rate_limit_service: Some(RateLimitServiceConfig {
                    grpc_service: Some(envoy_grpc(cluster(&rls.target), None)),
                    transport_api_version: ApiVersion::V3 as i32,
                }),
                ..Default::default()
            }),
        ));
    }
    if let Some(local) = local_rate_limit(config) {
        chain.push(filter(LOCAL_RATE_LIMIT, pack_any(local)));
    }
    if let Some(max) = config.module.max_request_bytes {
        chain.push(filter(
            BUFFER,
            pack_any(Buffer {
                max_request_bytes: Some(UInt32Value { value: max }),
            }),
        ));
    }
    chain.push(filter(ROUTER, pack_any(Router::default())));
    hcm.http_filters = chain;

    let module = &config.module;
    hcm.use_remote_address = module.use_remote_address.map(|value| BoolValue { value });
    hcm.xff_num_trusted_hops = module.xff_num_trusted_hops.unwrap_or(0);
    hcm.server_name = module.server_name.clone().unwrap_or_default();
    hcm.max_request_headers_kb = module
        .max_request_headers_kb
        .map(|value| UInt32Value { value });
    hcm.merge_slashes = module.merge_slashes;
    if module.enable_http10 {
        hcm.http_protocol_options = Some(Http1ProtocolOptions {
            accept_http_10: true,
            ..Default::default()
        });
    }
    hcm.access_log = access_logs(config, &cluster);
    hcm.tracing = config
        .tracing_service
        .as_ref()
        .map(|t| http_connection_manager::Tracing {
            random_sampling: t.sampling_percent.map(|p| Percent {
                value: f64::from(p),
            }),
            provider: Some(tracer(t, cluster(&t.target))),
            ..Default::default()
        });
}

/// One filter holding every limited Mapping's bucket as a descriptor, selected by the
/// `rate_limits` entry its route sends at the local stage (see `route_policy`). There is
/// no default bucket: requests of other routes match no descriptor and are not limited.
/// Limited requests get 429 with the draft-03 `x-ratelimit-*` headers and
/// `x-local-rate-limit: true`, so a client can tell Envoy's 429 from an upstream's.
fn local_rate_limit(config: &Config) -> Option<LocalRateLimit> {
    let descriptors: Vec<LocalRateLimitDescriptor> = config
        .mappings
        .iter()
        .filter_map(|m| match &m.action {
            Action::Route(r) => r.policy.local_rate_limit.map(|b| (m, b)),
            Action::Redirect(_) => None,
        })
        .map(|(m, bucket)| LocalRateLimitDescriptor {
            entries: vec![rate_limit_descriptor::Entry {
                key: route_policy::LOCAL_RATE_LIMIT_KEY.to_owned(),
                value: route_policy::local_rate_limit_value(m),
            }],
            token_bucket: Some(route_policy::token_bucket(&bucket)),
            ..Default::default()
        })
        .collect();
    if descriptors.is_empty() {
        return None;
    }
    let always = || RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 100,
            denominator: fractional_percent::DenominatorType::Hundred as i32,
        }),
        // Envoy requires a key; no runtime layer sets it, so the default always applies.
        runtime_key: "attache.local_rate_limit".to_owned(),
    };
    Some(LocalRateLimit {
        stat_prefix: LOCAL_RATE_LIMIT_STATS.to_owned(),
        descriptors,
        stage: route_policy::LOCAL_RATE_LIMIT_STAGE,
        filter_enabled: Some(always()),
        filter_enforced: Some(always()),
        response_headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: "x-local-rate-limit".to_owned(),
                value: "true".to_owned(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        }],
        enable_x_ratelimit_headers: XRateLimitHeadersRfcVersion::DraftVersion03 as i32,
        ..Default::default()
    })
}

fn filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

fn envoy_grpc(cluster_name: String, timeout_ms: Option<u32>) -> GrpcService {
    GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
            grpc_service::EnvoyGrpc {
                cluster_name,
                ..Default::default()
            },
        )),
        timeout: timeout_ms.map(duration_ms),
        ..Default::default()
    }
}

/// Exact, case-insensitive matchers for header names.
fn header_list(names: impl IntoIterator<Item = String>) -> ListStringMatcher {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    names.dedup();
    ListStringMatcher {
        patterns: names
            .into_iter()
            .map(|n| StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(n)),
                ignore_case: true,
            })
            .collect(),
    }
}

fn ext_authz(auth: &crate::config::AuthService, cluster: String) -> ExtAuthz {
    let request_headers = header_list(
        AUTH_REQUEST_HEADERS
            .iter()
            .map(|h| (*h).to_owned())
            .chain(auth.allowed_request_headers.iter().cloned()),
    );
    let response_headers = || {
        header_list(
            AUTH_RESPONSE_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .chain(auth.allowed_authorization_headers.iter().cloned()),
        )
    };
    let services = match &auth.protocol {
        AuthProtocol::Http { path_prefix } => ext_authz::Services::HttpService(HttpService {
            server_uri: Some(HttpUri {
                // Only the cluster is dialled; the URI names it for Envoy's logs.
                uri: format!("http://{cluster}"),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster)),
                timeout: Some(duration_ms(auth.timeout_ms)),
            }),
            path_prefix: path_prefix.clone(),
            authorization_response: Some(AuthorizationResponse {
                allowed_upstream_headers: Some(response_headers()),
                allowed_client_headers: Some(response_headers()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        AuthProtocol::Grpc => {
            ext_authz::Services::GrpcService(envoy_grpc(cluster, Some(auth.timeout_ms)))
        }
    };
    ExtAuthz {
        services: Some(services),
        transport_api_version: ApiVersion::V3 as i32,
        failure_mode_allow: auth.failure_mode_allow,
        with_request_body: auth.include_body.map(|b| BufferSettings {
            max_request_bytes: b.max_bytes,
            allow_partial_message: b.allow_partial,
            ..Default::default()
        }),
        status_on_error: auth.status_on_error.map(|code| HttpStatus {
            code: i32::from(code),
        }),
        allowed_headers: Some(request_headers),
        ..Default::default()
    }
}

fn access_logs(config: &Config, cluster: &dyn Fn(&Target) -> String) -> Vec<EnvoyAccessLog> {
    let mut logs = Vec::new();
    if let Some(log) = &config.module.access_log {
        let format = |fields: Option<&BTreeMap<String, String>>| {
            let format = match (&log.format, fields) {
                (AccessLogFormat::Default, _) => return None,
                (AccessLogFormat::Text(text), _) => {
                    substitution_format_string::Format::TextFormatSource(DataSource {
                        // Envoy writes the format as is: each entry needs its own line end.
                        specifier: Some(data_source::Specifier::InlineString(
                            if text.ends_with('\n') {
                                text.clone()
                            } else {
                                format!("{text}\n")
                            },
                        )),
                        ..Default::default()
                    })
                }
                (AccessLogFormat::Json(all), only) => {
                    substitution_format_string::Format::JsonFormat(json_struct(only.unwrap_or(all)))
                }
            };
            Some(SubstitutionFormatString {
                format: Some(format),
                ..Default::default()
            })
        };
        let (name, logger) = match &log.path {
            Some(path) => (
                "envoy.access_loggers.file",
                pack_per_field(&log.format, |fields| FileAccessLog {
                    path: path.clone(),
                    access_log_format: format(fields)
                        .map(file_access_log::AccessLogFormat::LogFormat),
                }),
            ),
            None => (
                "envoy.access_loggers.stdout",
                pack_per_field(&log.format, |fields| StdoutAccessLog {
                    access_log_format: format(fields)
                        .map(stdout_access_log::AccessLogFormat::LogFormat),
                }),
            ),
        };
        logs.push(access_log(name, logger));
    }
    for service in &config.log_services {
        logs.push(grpc_access_log(service, cluster(&service.target)));
    }
    logs
}

/// Packs a logger. A JSON format is a `Struct`, whose fields prost keeps in a `HashMap`
/// and encodes in an order that differs between equal maps; so the logger is encoded once
/// per JSON field, with that field alone, and the encodings are concatenated: protobuf
/// merges repeated messages, so Envoy reads one logger with every field, and the bytes
/// follow the fields' sorted order (as `provenance` does for metadata).
fn pack_per_field<M: Message + Name>(
    format: &AccessLogFormat,
    make: impl Fn(Option<&BTreeMap<String, String>>) -> M,
) -> Any {
    let AccessLogFormat::Json(fields) = format else {
        return pack_any(make(None));
    };
    let mut value = Vec::new();
    for (key, operator) in fields {
        let one = BTreeMap::from([(key.clone(), operator.clone())]);
        value.extend(make(Some(&one)).encode_to_vec());
    }
    Any {
        type_url: M::type_url(),
        value,
    }
}

fn access_log(name: &str, config: Any) -> EnvoyAccessLog {
    EnvoyAccessLog {
        name: name.to_owned(),
        config_type: Some(access_log::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

fn grpc_access_log(service: &LogService, cluster: String) -> EnvoyAccessLog {
    let common = CommonGrpcAccessLogConfig {
        log_name: format!("{}/{}", service.meta.namespace, service.meta.name),
        grpc_service: Some(envoy_grpc(cluster, None)),
        transport_api_version: ApiVersion::V3 as i32,
        buffer_flush_interval: service
            .flush_interval_s
            .map(|s| duration_ms(s.saturating_mul(1000))),
        buffer_size_bytes: service.buffer_size_bytes.map(|value| UInt32Value { value }),
        ..Default::default()
    };
    if service.http {
        access_log(
            "envoy.access_loggers.http_grpc",
            pack_any(HttpGrpcAccessLogConfig {
                common_config: Some(common),
                ..Default::default()
            }),
        )
    } else {
        access_log(
            "envoy.access_loggers.tcp_grpc",
            pack_any(TcpGrpcAccessLogConfig {
                common_config: Some(common),
            }),
        )
    }
}

fn json_struct(fields: &BTreeMap<String, String>) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value {
                        kind: Some(ValueKind::StringValue(v.clone())),
                    },
                )
            })
            .collect(),
    }
}

fn tracer(t: &crate::config::TracingService, cluster: String) -> tracing::Http {
    let (name, config) = match &t.driver {
        TracingDriver::Zipkin {
            collector_endpoint,
            json,
            shared_span_context,
        } => (
            "envoy.tracers.zipkin",
            pack_any(ZipkinConfig {
                collector_cluster: cluster,
                collector_endpoint: collector_endpoint.clone(),
                collector_endpoint_version: if *json {
                    zipkin_config::CollectorEndpointVersion::HttpJson
                } else {
                    zipkin_config::CollectorEndpointVersion::HttpProto
                } as i32,
                shared_span_context: Some(BoolValue {
                    value: *shared_span_context,
                }),
                trace_id_128bit: true,
                ..Default::default()
            }),
        ),
        TracingDriver::OpenTelemetry => (
            "envoy.tracers.opentelemetry",
            pack_any(OpenTelemetryConfig {
                grpc_service: Some(envoy_grpc(cluster, None)),
                service_name: t.service_name.clone(),
                ..Default::default()
            }),
        ),
    };
    tracing::Http {
        name: name.to_owned(),
        config_type: Some(tracing::http::ConfigType::TypedConfig(config)),
    }
}
