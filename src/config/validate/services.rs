//! Validation of the gateway-wide resources: AuthService, RateLimitService,
//! TracingService, LogService and the `ambassador` Module (whose Mapping defaults go to
//! [`MappingDefaults`]).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::r#type::v3::StatusCode;

use super::policy::{self, MappingDefaults};
use super::{Check, DEFAULT_CONNECT_TIMEOUT_MS, Severity, is_token, parse_service};
use crate::config::model::*;
use crate::config::raw;
use crate::config::yaml::At;

/// Emissary's default AuthService timeout.
const DEFAULT_AUTH_TIMEOUT_MS: u32 = 5_000;
/// Emissary's default rate limit domain.
pub(super) const DEFAULT_RATE_LIMIT_DOMAIN: &str = "ambassador";

/// The cluster target of a gateway service's `service` value.
fn target(
    service: Option<&At<String>>,
    field: &str,
    tls: Option<&At<raw::TlsSetting>>,
    http2: bool,
    namespace: &str,
    check: &mut Check<'_>,
) -> Option<Target> {
    let Some(service) = service else {
        check.error_here(field, format!("missing required field `{field}`"));
        return None;
    };
    let parsed = match parse_service(&service.value, namespace) {
        Ok(p) => p,
        Err(why) => {
            check.error(service, field, why);
            return None;
        }
    };
    let tls = match (tls.map(|t| &t.value), parsed.scheme_tls) {
        (Some(raw::TlsSetting::Enabled(false)), Some(true)) => {
            check.error(
                service,
                "tls",
                "`tls: false` contradicts the `https://` service",
            );
            UpstreamTls::Plain
        }
        (Some(raw::TlsSetting::Enabled(true) | raw::TlsSetting::Context(_)), Some(false)) => {
            check.error(
                service,
                "tls",
                "`tls` contradicts the `http://` service: use `https://` (or drop the scheme)",
            );
            UpstreamTls::Plain
        }
        (Some(raw::TlsSetting::Enabled(true)), _) | (None, Some(true)) => UpstreamTls::Tls,
        // Resolved to the TLSContext's own namespace once all are known (`tls_refs`).
        (Some(raw::TlsSetting::Context(name)), _) => UpstreamTls::Context(ContextRef {
            namespace: namespace.to_owned(),
            name: name.clone(),
        }),
        _ => UpstreamTls::Plain,
    };
    Some(Target {
        service: parsed.service,
        tls,
        http2,
        connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
        policy: UpstreamPolicy::default(),
    })
}

fn v3_only(version: &Option<At<String>>, check: &mut Check<'_>) {
    if let Some(v) = version
        && v.value != "v3"
    {
        check.error(
            v,
            "protocol_version",
            format!("{:?}: Envoy 1.40 speaks v3 only", v.value),
        );
    }
}

fn header_names(list: &Option<Vec<At<String>>>, field: &str, check: &mut Check<'_>) -> Vec<String> {
    let mut out: Vec<String> = list
        .iter()
        .flatten()
        .map(|h| {
            if !is_token(&h.value) {
                check.error(h, field, format!("{:?} is not a header name", h.value));
            }
            h.value.to_ascii_lowercase()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

pub(super) fn auth_service(
    meta: Meta,
    spec: &raw::AuthServiceSpec,
    check: &mut Check<'_>,
) -> Option<AuthService> {
    v3_only(&spec.protocol_version, check);
    let grpc = match spec.proto.as_ref().map(|p| (p, p.value.as_str())) {
        None | Some((_, "http")) => false,
        Some((_, "grpc")) => true,
        Some((at, other)) => {
            check.error(at, "proto", format!("{other:?} is not one of http, grpc"));
            return None;
        }
    };
    let target = target(
        spec.auth_service.as_ref(),
        "auth_service",
        spec.tls.as_ref(),
        grpc,
        &meta.namespace,
        check,
    )?;
    let protocol = if grpc {
        if let Some(p) = &spec.path_prefix {
            check.error(p, "path_prefix", "only applies to `proto: http`");
        }
        AuthProtocol::Grpc
    } else {
        let path_prefix = spec.path_prefix.as_ref().map_or(String::new(), |p| {
            if !p.value.is_empty() && !p.value.starts_with('/') {
                check.error(p, "path_prefix", "must start with \"/\"");
            }
            p.value.trim_end_matches('/').to_owned()
        });
        AuthProtocol::Http { path_prefix }
    };
    let timeout_ms = match &spec.timeout_ms {
        Some(t) if t.value == 0 => {
            check.error(t, "timeout_ms", "must be above 0");
            DEFAULT_AUTH_TIMEOUT_MS
        }
        Some(t) => t.value,
        None => DEFAULT_AUTH_TIMEOUT_MS,
    };
    let include_body = spec.include_body.as_ref().map(|b| {
        if b.value.max_bytes == 0 {
            check.error(b, "include_body.max_bytes", "must be above 0");
        }
        IncludeBody {
            max_bytes: b.value.max_bytes,
            allow_partial: b.value.allow_partial,
        }
    });
    let status_on_error = spec.status_on_error.as_ref().map(|s| {
        // Envoy takes only the statuses its StatusCode enum names (a NACK otherwise).
        if StatusCode::try_from(i32::from(s.code.value)).is_err() || s.code.value < 100 {
            check.error(
                &s.code,
                "status_on_error.code",
                format!("{} is not an HTTP status Envoy knows", s.code.value),
            );
        }
        s.code.value
    });
    Some(AuthService {
        allowed_request_headers: header_names(
            &spec.allowed_request_headers,
            "allowed_request_headers",
            check,
        ),
        allowed_authorization_headers: header_names(
            &spec.allowed_authorization_headers,
            "allowed_authorization_headers",
            check,
        ),
        meta,
        target,
        protocol,
        timeout_ms,
        include_body,
        failure_mode_allow: spec.failure_mode_allow.unwrap_or(false),
        status_on_error,
    })
}

pub(super) fn rate_limit_service(
    meta: Meta,
    spec: &raw::RateLimitServiceSpec,
    check: &mut Check<'_>,
) -> Option<RateLimitService> {
    v3_only(&spec.protocol_version, check);
    let target = target(
        spec.service.as_ref(),
        "service",
        spec.tls.as_ref(),
        true,
        &meta.namespace,
        check,
    )?;
    let domain = match &spec.domain {
        Some(d) if d.value.is_empty() || d.value.contains(char::is_whitespace) => {
            check.error(d, "domain", "must be a non-empty word");
            return None;
        }
        Some(d) => d.value.clone(),
        None => DEFAULT_RATE_LIMIT_DOMAIN.to_owned(),
    };
    let timeout_ms = spec.timeout_ms.as_ref().map(|t| {
        if t.value == 0 {
            check.error(t, "timeout_ms", "must be above 0");
        }
        t.value
    });
    Some(RateLimitService {
        meta,
        target,
        domain,
        timeout_ms,
        failure_mode_deny: spec.failure_mode_deny.unwrap_or(false),
    })
}

pub(super) fn tracing_service(
    meta: Meta,
    spec: &raw::TracingServiceSpec,
    check: &mut Check<'_>,
) -> Option<TracingService> {
    let opentelemetry = match spec.driver.as_ref().map(|d| (d, d.value.as_str())) {
        Some((_, "zipkin")) => false,
        Some((_, "opentelemetry")) => true,
        None => {
            check.error_here(
                "driver",
                "missing required field `driver` (zipkin or opentelemetry)",
            );
            return None;
        }
        Some((at, other)) => {
            check.error(
                at,
                "driver",
                format!("{other:?} is not supported; use zipkin or opentelemetry"),
            );
            return None;
        }
    };
    let target = target(
        spec.service.as_ref(),
        "service",
        None,
        opentelemetry,
        &meta.namespace,
        check,
    )?;
    let config = spec.config.as_ref();
    let driver = if opentelemetry {
        if let Some(c) = config {
            for (name, set) in [
                ("collector_endpoint", c.collector_endpoint.is_some()),
                (
                    "collector_endpoint_version",
                    c.collector_endpoint_version.is_some(),
                ),
                ("shared_span_context", c.shared_span_context.is_some()),
            ] {
                if set {
                    check.error_here(
                        &format!("config.{name}"),
                        "only applies to the zipkin driver",
                    );
                }
            }
        }
        TracingDriver::OpenTelemetry
    } else {
        let collector_endpoint = config
            .and_then(|c| c.collector_endpoint.as_ref())
            .map_or_else(
                || "/api/v2/spans".to_owned(),
                |e| {
                    if !e.value.starts_with('/') {
                        check.error(e, "config.collector_endpoint", "must start with \"/\"");
                    }
                    e.value.clone()
                },
            );
        let json = match config
            .and_then(|c| c.collector_endpoint_version.as_ref())
            .map(|v| (v, v.value.as_str()))
        {
            None | Some((_, "HTTP_JSON")) => true,
            Some((_, "HTTP_PROTO")) => false,
            Some((at, other)) => {
                check.error(
                    at,
                    "config.collector_endpoint_version",
                    format!("{other:?} is not one of HTTP_JSON, HTTP_PROTO"),
                );
                true
            }
        };
        TracingDriver::Zipkin {
            collector_endpoint,
            json,
            shared_span_context: config.and_then(|c| c.shared_span_context).unwrap_or(false),
        }
    };
    let sampling_percent = spec.sampling.as_ref().and_then(|s| {
        for (name, value) in [("client", &s.client), ("random", &s.random)] {
            if let Some(v) = value {
                check.error(
                    v,
                    &format!("sampling.{name}"),
                    "only `sampling.overall` is supported",
                );
            }
        }
        s.overall.as_ref().map(|o| {
            if o.value > 100 {
                check.error(o, "sampling.overall", format!("{} is over 100", o.value));
            }
            o.value
        })
    });
    let service_name = config
        .and_then(|c| c.service_name.as_ref())
        .map_or_else(|| "attache".to_owned(), |s| s.value.clone());
    Some(TracingService {
        meta,
        target,
        driver,
        sampling_percent,
        service_name,
    })
}

pub(super) fn log_service(
    meta: Meta,
    spec: &raw::LogServiceSpec,
    check: &mut Check<'_>,
) -> Option<LogService> {
    v3_only(&spec.protocol_version, check);
    let http = match spec.driver.as_ref().map(|d| (d, d.value.as_str())) {
        None | Some((_, "http")) => true,
        Some((_, "tcp")) => false,
        Some((at, other)) => {
            check.error(at, "driver", format!("{other:?} is not one of http, tcp"));
            return None;
        }
    };
    if spec.grpc == Some(false) {
        check.error_here(
            "grpc",
            "LogService is gRPC access logging; `grpc: false` is not supported",
        );
    }
    let target = target(
        spec.service.as_ref(),
        "service",
        None,
        true,
        &meta.namespace,
        check,
    )?;
    Some(LogService {
        meta,
        target,
        http,
        flush_interval_s: spec.flush_interval_time.as_ref().map(|f| f.value),
        buffer_size_bytes: spec.flush_interval_byte_size.as_ref().map(|f| f.value),
    })
}

/// The `ambassador` Module: its gateway settings and the defaults it gives Mappings.
pub(super) fn module(
    meta: Meta,
    spec: &raw::ModuleSpec,
    check: &mut Check<'_>,
) -> (GatewayModule, MappingDefaults) {
    let mut module = GatewayModule {
        meta: Some(meta),
        ..Default::default()
    };
    let mut defaults = MappingDefaults::default();
    let Some(c) = &spec.config else {
        return (module, defaults);
    };
    module.use_remote_address = c.use_remote_address;
    module.xff_num_trusted_hops = c.xff_num_trusted_hops.as_ref().map(|n| n.value);
    module.server_name = c.server_name.as_ref().map(|s| {
        if s.value.is_empty() || s.value.contains(['\r', '\n', '\0']) {
            check.error(s, "config.server_name", "must be a non-empty header value");
        }
        s.value.clone()
    });
    module.enable_grpc_web = c.enable_grpc_web.unwrap_or(false);
    module.enable_http10 = c.enable_http10.unwrap_or(false);
    module.buffer_limit_bytes = c.buffer_limit_bytes.as_ref().map(|b| {
        if b.value < 1024 {
            check.error(b, "config.buffer_limit_bytes", "must be at least 1024");
        }
        b.value
    });
    module.max_request_bytes = c.buffer.as_ref().map(|b| {
        if b.value.max_request_bytes == 0 {
            check.error(b, "config.buffer.max_request_bytes", "must be above 0");
        }
        b.value.max_request_bytes
    });
    module.max_request_headers_kb = c.max_request_headers_kb.as_ref().map(|k| {
        // Envoy's bounds (http_connection_manager.proto: 1 to 8192 KiB).
        if !(1..=8192).contains(&k.value) {
            check.error(k, "config.max_request_headers_kb", "must be 1 to 8192");
        }
        k.value
    });
    if let Some(s) = &c.strip_matching_host_port {
        // attache always strips any port before routing (see translate::listener): it is
        // what lets `*.example.com` match `a.example.com:8080`.
        check.at(
            Severity::Warning,
            s.line,
            s.column,
            "config.strip_matching_host_port",
            "attache always strips the port from the Host header before routing; this setting changes nothing".to_owned(),
        );
    }
    module.merge_slashes = c.merge_slashes.unwrap_or(false);
    defaults.timeout_ms = c.cluster_request_timeout_ms.as_ref().map(|t| t.value);
    defaults.idle_timeout_ms = c.cluster_idle_timeout_ms.as_ref().map(|t| {
        if t.value == 0 {
            check.error(t, "config.cluster_idle_timeout_ms", "must be above 0");
        }
        t.value
    });
    defaults.retry = c
        .retry_policy
        .as_ref()
        .and_then(|r| policy::retry_policy(r, "config.retry_policy", check));
    defaults.circuit_breakers = c
        .circuit_breakers
        .as_deref()
        .map(|b| policy::circuit_breakers(b, "config.circuit_breakers", check))
        .unwrap_or_default();
    defaults.load_balancer = c
        .load_balancer
        .as_ref()
        .and_then(|l| policy::load_balancer(l, "config.load_balancer", check));
    defaults.cors = c
        .cors
        .as_ref()
        .map(|x| policy::cors(x, "config.cors", check));
    module.access_log = access_log(c, check);
    (module, defaults)
}

/// Emissary's default JSON access log fields.
fn default_json_format() -> BTreeMap<String, String> {
    [
        ("start_time", "%START_TIME%"),
        ("method", "%REQ(:METHOD)%"),
        ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
        ("protocol", "%PROTOCOL%"),
        ("response_code", "%RESPONSE_CODE%"),
        ("response_flags", "%RESPONSE_FLAGS%"),
        ("bytes_received", "%BYTES_RECEIVED%"),
        ("bytes_sent", "%BYTES_SENT%"),
        ("duration", "%DURATION%"),
        (
            "upstream_service_time",
            "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        ),
        ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
        ("user_agent", "%REQ(USER-AGENT)%"),
        ("request_id", "%REQ(X-REQUEST-ID)%"),
        ("authority", "%REQ(:AUTHORITY)%"),
        ("upstream_host", "%UPSTREAM_HOST%"),
        ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn access_log(c: &raw::ModuleConfig, check: &mut Check<'_>) -> Option<AccessLog> {
    if c.envoy_log_path.is_none() && c.envoy_log_type.is_none() && c.envoy_log_format.is_none() {
        return None;
    }
    let path = c.envoy_log_path.as_ref().and_then(|p| {
        if p.value == "/dev/fd/1" || p.value == "/dev/stdout" {
            None
        } else {
            if !p.value.starts_with('/') {
                check.error(p, "config.envoy_log_path", "must be an absolute path");
            }
            Some(p.value.clone())
        }
    });
    let json = match c.envoy_log_type.as_ref().map(|t| (t, t.value.as_str())) {
        None | Some((_, "text")) => false,
        Some((_, "json")) => true,
        Some((at, other)) => {
            check.error(
                at,
                "config.envoy_log_type",
                format!("{other:?} is not one of text, json"),
            );
            false
        }
    };
    let format = match (json, c.envoy_log_format.as_ref().map(|f| (f, &f.value))) {
        (false, None) => AccessLogFormat::Default,
        (true, None) => AccessLogFormat::Json(default_json_format()),
        (false, Some((_, raw::LogFormatSpec::Text(t)))) => AccessLogFormat::Text(t.clone()),
        (true, Some((_, raw::LogFormatSpec::Json(m)))) if !m.is_empty() => {
            AccessLogFormat::Json(m.clone())
        }
        (true, Some((at, _))) => {
            check.error(
                at,
                "config.envoy_log_format",
                "with `envoy_log_type: json`, give a non-empty map of keys to format strings",
            );
            return None;
        }
        (false, Some((at, _))) => {
            check.error(
                at,
                "config.envoy_log_format",
                "a map of keys needs `envoy_log_type: json`",
            );
            return None;
        }
    };
    Some(AccessLog { path, format })
}
