//! Raw shapes of the traffic-policy fields (issue 7): the Mapping fields for retries,
//! circuit breakers, outlier detection, CORS, load balancing, keepalive and rate-limit
//! labels, and the specs of AuthService, RateLimitService, TracingService, LogService, the
//! `ambassador` Module and attache's own `LocalRateLimit`.
//!
//! As in the parent module, every struct denies unknown fields, and values are kept with
//! their positions (`At`) where validation may need to point at them.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, Visitor};

use super::{CommaList, OneOrMany};
use crate::config::yaml::At;

/// A scalar written as a string or a number (`max_age: "86400"` or `86400`,
/// `per_try_timeout: 1s`), kept as its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `retry_policy` (Mapping and Module).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicySpec {
    pub retry_on: Option<At<String>>,
    pub num_retries: Option<At<u32>>,
    /// A duration: `500ms`, `1s`, `1.5s`.
    pub per_try_timeout: Option<At<Scalar>>,
}

/// One entry of `circuit_breakers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerSpec {
    pub priority: Option<At<String>>,
    pub max_connections: Option<At<u32>>,
    pub max_pending_requests: Option<At<u32>>,
    pub max_requests: Option<At<u32>>,
    pub max_retries: Option<At<u32>>,
}

/// `outlier_detection` (an attache extension of the Mapping; Envoy's names with `_ms`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetectionSpec {
    pub consecutive_5xx: Option<At<u32>>,
    pub consecutive_gateway_failure: Option<At<u32>>,
    pub interval_ms: Option<At<u32>>,
    pub base_ejection_time_ms: Option<At<u32>>,
    pub max_ejection_percent: Option<At<u32>>,
}

/// `cors` (Mapping and Module). Lists may be comma-separated strings, as in Emissary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSpec {
    pub origins: Option<At<OneOrMany>>,
    pub methods: Option<At<CommaList>>,
    pub headers: Option<At<CommaList>>,
    pub exposed_headers: Option<At<CommaList>>,
    pub credentials: Option<bool>,
    pub max_age: Option<At<Scalar>>,
}

/// `load_balancer` (Mapping and Module).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    pub policy: Option<At<String>>,
    pub header: Option<At<String>>,
    pub cookie: Option<At<CookieSpec>>,
    pub source_ip: Option<At<bool>>,
}

/// `load_balancer.cookie`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieSpec {
    pub name: String,
    pub path: Option<String>,
    /// A duration: Envoy generates the cookie when the client has none.
    pub ttl: Option<Scalar>,
}

/// `keepalive`: TCP keepalive on upstream connections, in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveSpec {
    pub time: Option<At<u32>>,
    pub interval: Option<At<u32>>,
    pub probes: Option<At<u32>>,
}

/// `labels`: domain -> list of single-key maps `{group name: [label, ...]}`.
pub type LabelsSpec = BTreeMap<String, At<Vec<BTreeMap<String, Vec<At<RawLabel>>>>>>;

/// One rate-limit label: a bare string (a generic key), or a single-key map naming the
/// kind (`generic_key`, `request_headers`, `remote_address`, `source_cluster`,
/// `destination_cluster`) or, in Emissary's short form, the descriptor key with a
/// `header` to read.
#[derive(Debug, Clone, PartialEq)]
pub enum RawLabel {
    Generic(String),
    Map(BTreeMap<String, LabelBody>),
}

/// The body of a label map entry: every field any label kind takes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelBody {
    pub key: Option<String>,
    pub value: Option<String>,
    pub header_name: Option<String>,
    pub header: Option<String>,
    pub omit_if_not_present: Option<bool>,
}

impl<'de> Deserialize<'de> for RawLabel {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawLabel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a label string, or a map such as `generic_key: {value: ...}`")
            }
            fn visit_str<E>(self, v: &str) -> Result<RawLabel, E> {
                Ok(RawLabel::Generic(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawLabel, A::Error> {
                // `remote_address:` with no body is null: accept it as an empty body.
                let entries: BTreeMap<String, Option<LabelBody>> =
                    Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawLabel::Map(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k, v.unwrap_or_default()))
                        .collect(),
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// `AuthService` spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthServiceSpec {
    pub ambassador_id: Option<IgnoredAny>,
    pub auth_service: Option<At<String>>,
    pub path_prefix: Option<At<String>>,
    pub proto: Option<At<String>>,
    pub protocol_version: Option<At<String>>,
    pub timeout_ms: Option<At<u32>>,
    pub allowed_request_headers: Option<Vec<At<String>>>,
    pub allowed_authorization_headers: Option<Vec<At<String>>>,
    pub include_body: Option<At<IncludeBodySpec>>,
    pub failure_mode_allow: Option<bool>,
    pub status_on_error: Option<StatusOnErrorSpec>,
    pub tls: Option<At<super::TlsSetting>>,
}

/// `include_body`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncludeBodySpec {
    pub max_bytes: u32,
    #[serde(default)]
    pub allow_partial: bool,
}

/// `status_on_error`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusOnErrorSpec {
    pub code: At<u16>,
}

/// `RateLimitService` spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitServiceSpec {
    pub ambassador_id: Option<IgnoredAny>,
    pub service: Option<At<String>>,
    pub protocol_version: Option<At<String>>,
    pub domain: Option<At<String>>,
    pub timeout_ms: Option<At<u32>>,
    pub failure_mode_deny: Option<bool>,
    pub tls: Option<At<super::TlsSetting>>,
}

/// `TracingService` spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingServiceSpec {
    pub ambassador_id: Option<IgnoredAny>,
    pub service: Option<At<String>>,
    pub driver: Option<At<String>>,
    pub sampling: Option<SamplingSpec>,
    pub config: Option<TracingConfigSpec>,
}

/// `TracingService.sampling`: percentages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSpec {
    pub overall: Option<At<u32>>,
    pub client: Option<At<u32>>,
    pub random: Option<At<u32>>,
}

/// `TracingService.config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfigSpec {
    pub service_name: Option<At<String>>,
    pub collector_endpoint: Option<At<String>>,
    pub collector_endpoint_version: Option<At<String>>,
    pub shared_span_context: Option<bool>,
}

/// `LogService` spec: Emissary's gRPC access log service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogServiceSpec {
    pub ambassador_id: Option<IgnoredAny>,
    pub service: Option<At<String>>,
    pub driver: Option<At<String>>,
    pub driver_config: Option<IgnoredAny>,
    pub flush_interval_time: Option<At<u32>>,
    pub flush_interval_byte_size: Option<At<u32>>,
    pub grpc: Option<bool>,
    pub protocol_version: Option<At<String>>,
}

/// `LocalRateLimit` spec (`attache.io/v1`): a token bucket in Envoy for each named Mapping.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRateLimitSpec {
    /// Names of Mappings in the same namespace.
    pub mappings: Option<At<Vec<At<String>>>>,
    pub max_tokens: Option<At<u32>>,
    pub tokens_per_fill: Option<At<u32>>,
    /// A duration: `1s`, `500ms`, `1m`.
    pub fill_interval: Option<At<Scalar>>,
}

/// `Module.config` of the `ambassador` Module.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    pub use_remote_address: Option<bool>,
    pub xff_num_trusted_hops: Option<At<u32>>,
    pub server_name: Option<At<String>>,
    pub enable_grpc_web: Option<bool>,
    pub enable_http10: Option<bool>,
    pub buffer_limit_bytes: Option<At<u32>>,
    pub buffer: Option<At<BufferSpec>>,
    pub max_request_headers_kb: Option<At<u32>>,
    pub strip_matching_host_port: Option<At<bool>>,
    pub merge_slashes: Option<bool>,
    pub cluster_request_timeout_ms: Option<At<u32>>,
    pub cluster_idle_timeout_ms: Option<At<u32>>,
    pub retry_policy: Option<At<RetryPolicySpec>>,
    pub circuit_breakers: Option<Vec<At<CircuitBreakerSpec>>>,
    pub load_balancer: Option<At<LoadBalancerSpec>>,
    pub cors: Option<At<CorsSpec>>,
    pub envoy_log_path: Option<At<String>>,
    pub envoy_log_type: Option<At<String>>,
    pub envoy_log_format: Option<At<LogFormatSpec>>,
}

/// `Module.config.buffer`: Envoy buffers whole request bodies up to this size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferSpec {
    pub max_request_bytes: u32,
}

/// `envoy_log_format`: a format string (text) or a map of JSON keys to format strings.
#[derive(Debug, Clone, PartialEq)]
pub enum LogFormatSpec {
    Text(String),
    Json(BTreeMap<String, String>),
}

impl<'de> Deserialize<'de> for LogFormatSpec {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LogFormatSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a format string, or a map of JSON keys to format strings")
            }
            fn visit_str<E>(self, v: &str) -> Result<LogFormatSpec, E> {
                Ok(LogFormatSpec::Text(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<LogFormatSpec, A::Error> {
                Ok(LogFormatSpec::Json(Deserialize::deserialize(
                    de::value::MapAccessDeserializer::new(map),
                )?))
            }
        }
        d.deserialize_any(V)
    }
}
