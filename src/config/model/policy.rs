//! The validated traffic policies (issue 7): what a Mapping asks of its upstream cluster
//! and of its route, and the gateway-wide services and settings (AuthService,
//! RateLimitService, TracingService, LogService, the `ambassador` Module).
//!
//! Cluster-level settings live in [`UpstreamPolicy`], part of the [`Target`] key: two
//! Mappings to one service with different circuit breakers need two clusters, the same
//! settings share one. Route-level settings live in [`RoutePolicy`].

use std::collections::BTreeMap;

use super::{Meta, Target};

/// Upstream cluster settings. The default is Envoy's (round robin, no breaker overrides,
/// no outlier detection, no keepalive, Envoy's idle timeout).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UpstreamPolicy {
    /// At most one per priority, sorted by priority.
    pub circuit_breakers: Vec<CircuitBreaker>,
    pub outlier_detection: Option<OutlierDetection>,
    pub lb_policy: LbPolicy,
    pub keepalive: Option<Keepalive>,
    /// How long an upstream connection may sit idle before Envoy closes it, in ms.
    pub idle_timeout_ms: Option<u32>,
}

impl UpstreamPolicy {
    /// Whether every setting is Envoy's default (cluster names carry no policy suffix).
    pub fn is_default(&self) -> bool {
        *self == UpstreamPolicy::default()
    }
}

/// Envoy's routing priorities; circuit breakers apply per priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    #[default]
    Default,
    High,
}

/// Thresholds of one priority; `None` keeps Envoy's default (1024 each, 3 retries).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CircuitBreaker {
    pub priority: Priority,
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

/// Passive health checking; `None` fields keep Envoy's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutlierDetection {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_failure: Option<u32>,
    pub interval_ms: Option<u32>,
    pub base_ejection_time_ms: Option<u32>,
    /// 0-100.
    pub max_ejection_percent: Option<u32>,
}

/// How a cluster picks an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    LeastRequest,
    /// Consistent hashing on the route's [`HashOn`].
    RingHash,
    /// Consistent hashing on the route's [`HashOn`].
    Maglev,
}

impl LbPolicy {
    /// Whether the policy hashes requests (and so needs a [`HashOn`] on the route).
    pub fn hashes(self) -> bool {
        matches!(self, LbPolicy::RingHash | LbPolicy::Maglev)
    }
}

/// TCP keepalive on upstream connections; `None` fields keep the OS defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Keepalive {
    /// Seconds of idleness before the first probe.
    pub time_s: Option<u32>,
    /// Seconds between probes.
    pub interval_s: Option<u32>,
    pub probes: Option<u32>,
}

/// Route-level settings of a routing Mapping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutePolicy {
    pub retry: Option<RetryPolicy>,
    pub cors: Option<Cors>,
    /// What a hashing load balancer hashes on; set exactly when the target's policy
    /// hashes.
    pub hash: Option<HashOn>,
    /// Global rate-limit descriptors, from `labels` in the RateLimitService's domain.
    pub rate_limits: Vec<RateLimitGroup>,
    /// From a `LocalRateLimit` naming this Mapping.
    pub local_rate_limit: Option<TokenBucket>,
}

/// `retry_policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Envoy's `retry_on` conditions, comma-separated, each one checked.
    pub retry_on: String,
    /// `None`: Envoy's default (1).
    pub num_retries: Option<u32>,
    pub per_try_timeout_ms: Option<u32>,
}

/// `cors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub origins: Vec<OriginMatch>,
    pub methods: Vec<String>,
    pub headers: Vec<String>,
    pub exposed_headers: Vec<String>,
    pub credentials: Option<bool>,
    pub max_age_s: Option<u32>,
}

/// A CORS origin: `*`, an exact origin, or (written with a leading `^`) an RE2 regex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginMatch {
    Any,
    Exact(String),
    Regex(String),
}

/// What a hashing load balancer hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header (lower-case).
    Header(String),
    /// A cookie; with a TTL, Envoy sets it when the client has none.
    Cookie {
        name: String,
        path: Option<String>,
        ttl_ms: Option<u32>,
    },
    /// The client's IP address.
    SourceIp,
}

/// One `labels` group: the actions of one Envoy `rate_limits` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitGroup {
    pub name: String,
    pub actions: Vec<RateLimitAction>,
}

/// One descriptor entry of a rate-limit group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitAction {
    /// A constant: key `key` (Envoy's `generic_key` when `None`), value `value`.
    GenericKey {
        key: Option<String>,
        value: String,
    },
    /// The value of a request header under descriptor key `key`; a request without the
    /// header skips the whole group when `skip_if_absent`, else gets no descriptor.
    RequestHeader {
        header: String,
        key: String,
        skip_if_absent: bool,
    },
    RemoteAddress,
    SourceCluster,
    DestinationCluster,
}

/// A token bucket: `max_tokens` burst, `tokens_per_fill` added each `fill_interval_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenBucket {
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    pub fill_interval_ms: u32,
}

/// attache.io/v1 `LocalRateLimit`: the bucket every named Mapping gets.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRateLimit {
    pub meta: Meta,
    /// Mapping names in `meta.namespace`, sorted.
    pub mappings: Vec<String>,
    pub bucket: TokenBucket,
}

/// `AuthService`: external authorization of every request (but `bypass_auth` Mappings).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthService {
    pub meta: Meta,
    /// The auth server's cluster (HTTP/2 for gRPC).
    pub target: Target,
    pub protocol: AuthProtocol,
    pub timeout_ms: u32,
    /// Lower-case request headers sent to the auth server, beyond Envoy's own.
    pub allowed_request_headers: Vec<String>,
    /// Lower-case headers of the auth server's answer copied to the upstream request
    /// (when allowed) or the client's response (when denied).
    pub allowed_authorization_headers: Vec<String>,
    pub include_body: Option<IncludeBody>,
    /// Let requests through when the auth server cannot be reached.
    pub failure_mode_allow: bool,
    /// The status sent when the auth server fails (Envoy's default: 403).
    pub status_on_error: Option<u16>,
}

/// How attache talks to the auth server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthProtocol {
    /// The request (headers, no body unless asked) goes to `path_prefix` + its path.
    Http { path_prefix: String },
    /// `envoy.service.auth.v3.Authorization/Check`.
    Grpc,
}

/// `include_body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncludeBody {
    pub max_bytes: u32,
    pub allow_partial: bool,
}

/// `RateLimitService`: the gRPC rate limit service every labelled route asks.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitService {
    pub meta: Meta,
    pub target: Target,
    /// `ambassador` unless given; `labels` under other domains are ignored.
    pub domain: String,
    pub timeout_ms: Option<u32>,
    /// Refuse requests (500) when the service cannot be reached; Envoy's default lets them
    /// through.
    pub failure_mode_deny: bool,
}

/// `TracingService`.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingService {
    pub meta: Meta,
    pub target: Target,
    pub driver: TracingDriver,
    /// Percent of requests traced, 0-100 (Envoy's default 100).
    pub sampling_percent: Option<u32>,
    pub service_name: String,
}

/// The tracer Envoy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TracingDriver {
    Zipkin {
        collector_endpoint: String,
        /// `HTTP_JSON` or `HTTP_PROTO`.
        json: bool,
        shared_span_context: bool,
    },
    OpenTelemetry,
}

/// `LogService`: Emissary's gRPC access log service.
#[derive(Debug, Clone, PartialEq)]
pub struct LogService {
    pub meta: Meta,
    pub target: Target,
    /// `http` (HTTP request logs) or `tcp` (connection logs).
    pub http: bool,
    pub flush_interval_s: Option<u32>,
    pub buffer_size_bytes: Option<u32>,
}

/// The `ambassador` Module's gateway-wide settings. The Mapping defaults it carries
/// (timeouts, retries, breakers, load balancer, CORS) are applied to the Mappings by
/// validation and do not appear here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayModule {
    /// Where the Module was declared, when it was.
    pub meta: Option<Meta>,
    /// `None` keeps Envoy's default (false): the peer address is not trusted as the client.
    pub use_remote_address: Option<bool>,
    pub xff_num_trusted_hops: Option<u32>,
    pub server_name: Option<String>,
    pub enable_grpc_web: bool,
    pub enable_http10: bool,
    /// Per-connection buffer limit of listeners and clusters.
    pub buffer_limit_bytes: Option<u32>,
    /// `buffer.max_request_bytes`: request bodies are buffered whole before going
    /// upstream, and larger ones get 413.
    pub max_request_bytes: Option<u32>,
    pub max_request_headers_kb: Option<u32>,
    pub merge_slashes: bool,
    pub access_log: Option<AccessLog>,
}

/// Envoy's own access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// A file path; `None` is Envoy's stdout.
    pub path: Option<String>,
    pub format: AccessLogFormat,
}

/// How each access log line is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// Envoy's default text format.
    Default,
    /// A command-operator format string.
    Text(String),
    /// A JSON object of keys to command operators (Emissary's defaults when empty).
    Json(BTreeMap<String, String>),
}
