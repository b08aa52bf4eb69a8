//! The validated configuration: what `translate` consumes.
//!
//! Everything here has already been checked by `config::load`: paths start with `/`,
//! regexes compile, ports are in range, names are unique. `translate` can therefore be a
//! total function over these types and never has to report an error of its own.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

mod policy;
pub use policy::*;

/// Where a resource was written: the file relative to the config root, 1-based line and
/// column of the document (or annotation) that declared it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// Path relative to the config root, `/`-separated.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// The resource kinds attache understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Mapping,
    Host,
    Listener,
    TlsContext,
    Module,
    AuthService,
    RateLimitService,
    TracingService,
    LogService,
    LocalRateLimit,
}

impl Kind {
    /// The kind as written in YAML (`TLSContext`, not `TlsContext`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mapping => "Mapping",
            Kind::Host => "Host",
            Kind::Listener => "Listener",
            Kind::TlsContext => "TLSContext",
            Kind::Module => "Module",
            Kind::AuthService => "AuthService",
            Kind::RateLimitService => "RateLimitService",
            Kind::TracingService => "TracingService",
            Kind::LogService => "LogService",
            Kind::LocalRateLimit => "LocalRateLimit",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity and provenance shared by every resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub name: String,
    /// The Kubernetes namespace the resource lives in (`default` when not given).
    pub namespace: String,
    pub origin: Origin,
}

/// A whole validated revision of the gateway configuration.
///
/// Every list is sorted by (namespace, name) so that translation is deterministic no
/// matter in which order files were read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub mappings: Vec<Mapping>,
    pub hosts: Vec<Host>,
    /// Explicit listeners. Empty means Emissary's defaults (HTTP 8080, HTTPS 8443 when a
    /// Host terminates TLS); `translate` applies them.
    pub listeners: Vec<Listener>,
    pub tls_contexts: Vec<TlsContext>,
    /// Certificates referenced by Hosts and TLSContexts, read from `--secrets-dir`, keyed
    /// by secret name.
    pub secrets: BTreeMap<String, TlsSecret>,
    /// CA bundles that TLSContexts' `ca_secret` names, read from `--secrets-dir`, keyed by
    /// secret name.
    pub ca_bundles: BTreeMap<String, CaBundle>,
    /// The AuthService, when there is one (at most one is valid).
    pub auth_service: Option<AuthService>,
    /// The RateLimitService, when there is one (at most one is valid).
    pub rate_limit_service: Option<RateLimitService>,
    /// The TracingService, when there is one (at most one is valid).
    pub tracing_service: Option<TracingService>,
    /// gRPC access log services, sorted by (namespace, name).
    pub log_services: Vec<LogService>,
    /// attache.io/v1 LocalRateLimits (already applied to their Mappings' routes), sorted.
    pub local_rate_limits: Vec<LocalRateLimit>,
    /// The `ambassador` Module's gateway-wide settings.
    pub module: GatewayModule,
}

/// A certificate and key read from `--secrets-dir/NAME/{tls.crt,tls.key}`.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsSecret {
    pub name: String,
    pub certificate_chain: String,
    pub private_key: String,
}

impl fmt::Debug for TlsSecret {
    // Never print key material, not even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSecret")
            .field("name", &self.name)
            .field(
                "certificate_chain",
                &format_args!("<{} bytes>", self.certificate_chain.len()),
            )
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// A CA bundle read from `--secrets-dir/NAME/ca.crt` (else `tls.crt`): PEM, at least one
/// certificate. Public material, so it prints whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub name: String,
    pub pem: String,
}

/// A hostname to match: `*` (any), an exact name, or a `*.example.com` suffix wildcard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    Any,
    Exact(String),
    /// The part after `*`, including the leading dot: `.example.com`.
    Suffix(String),
}

impl HostPattern {
    /// The form Envoy uses in `VirtualHost.domains`.
    pub fn as_domain(&self) -> String {
        match self {
            HostPattern::Any => "*".to_owned(),
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Suffix(s) => format!("*{s}"),
        }
    }

    /// Whether a request for `host` (without port) would be matched by this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Suffix(s) => {
                host.len() > s.len() && host.to_ascii_lowercase().ends_with(&s.to_ascii_lowercase())
            }
        }
    }
}

impl HostPattern {
    /// Whether some host name is matched by both patterns: a Mapping for `other` can be
    /// served by a Host for `self`.
    pub fn overlaps(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Any, _) | (_, HostPattern::Any) => true,
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a.eq_ignore_ascii_case(b),
            (HostPattern::Exact(host), suffix @ HostPattern::Suffix(_))
            | (suffix @ HostPattern::Suffix(_), HostPattern::Exact(host)) => suffix.matches(host),
            (HostPattern::Suffix(a), HostPattern::Suffix(b)) => {
                a.ends_with(b.as_str()) || b.ends_with(a.as_str())
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_domain())
    }
}

/// How a Mapping matches the request path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathMatch {
    /// `prefix: /foo/` (Emissary's default).
    Prefix(String),
    /// `prefix: /foo` with `prefix_exact: true`.
    Exact(String),
    /// `prefix: ^/foo/[0-9]+` with `prefix_regex: true` (RE2, matched against the whole path).
    Regex(String),
}

impl PathMatch {
    /// The pattern text, whatever the kind of match.
    pub fn pattern(&self) -> &str {
        match self {
            PathMatch::Prefix(p) | PathMatch::Exact(p) | PathMatch::Regex(p) => p,
        }
    }
}

/// A string comparison used for header and query-parameter matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ValueMatch {
    /// The header / parameter only has to be present (`headers: {x-canary: true}`).
    Present,
    Exact(String),
    /// RE2, matched against the whole value.
    Regex(String),
}

/// A header or query-parameter match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyValueMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// Where a Mapping sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// A Kubernetes Service, `name[.namespace][:port]`. Endpoints come from EDS.
    Kubernetes {
        name: String,
        namespace: String,
        /// The Service's port: a number or a port name. `None` means the Service's only
        /// (or first) port, which is port 80 when the Service is unknown.
        port: Option<ServicePort>,
    },
    /// A host reachable directly: an IP address, `localhost`, or a fully qualified DNS name.
    /// IPs give STATIC clusters, names STRICT_DNS ones.
    Address { host: String, port: u16 },
}

/// A Kubernetes Service port, by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServicePort {
    Number(u16),
    Name(String),
}

/// Upstream TLS origination: `tls: true`, `service: https://...`, or `tls: CONTEXT_NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UpstreamTls {
    Plain,
    /// TLS with Envoy's defaults; SNI is the service host.
    Tls,
    /// TLS with the settings of the named TLSContext (its secret is the client certificate).
    Context(ContextRef),
}

/// A TLSContext, by namespace and name. Validation resolves a `tls: NAME` to the
/// TLSContext it means (see [`Config::tls_context`]), so the namespace here is the
/// TLSContext's own, not the referrer's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContextRef {
    pub namespace: String,
    pub name: String,
}

impl From<&str> for ContextRef {
    /// A TLSContext in the `default` namespace.
    fn from(name: &str) -> Self {
        ContextRef {
            namespace: "default".to_owned(),
            name: name.to_owned(),
        }
    }
}

/// What a reference to a TLSContext by name resolves to (see [`Config::tls_context`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ContextLookup<'a> {
    Found(&'a TlsContext),
    Missing,
    /// Not in the referrer's namespace, and in more than one other: the first two.
    Ambiguous(&'a TlsContext, &'a TlsContext),
}

// === impl Config ===

impl Config {
    /// The TLSContext that `name`, written in a resource in `namespace`, refers to: the
    /// one of that name in `namespace`, else the only one of that name in any namespace.
    /// TLSContext names are unique per namespace only, so picking "the first" of several
    /// would depend on which namespaces happen to exist.
    pub fn tls_context(&self, name: &str, namespace: &str) -> ContextLookup<'_> {
        let mut named = self.tls_contexts.iter().filter(|c| c.meta.name == name);
        if let Some(own) = named.clone().find(|c| c.meta.namespace == namespace) {
            return ContextLookup::Found(own);
        }
        match (named.next(), named.next()) {
            (None, _) => ContextLookup::Missing,
            (Some(only), None) => ContextLookup::Found(only),
            (Some(a), Some(b)) => ContextLookup::Ambiguous(a, b),
        }
    }

    /// The TLSContext whose settings `host` terminates with: the one it names (resolved
    /// by [`Config::tls_context`]), else the first whose `hosts` lists its hostname.
    pub fn host_context(&self, host: &Host) -> Option<&TlsContext> {
        match &host.tls_context {
            Some(name) => match self.tls_context(name, &host.meta.namespace) {
                ContextLookup::Found(c) => Some(c),
                ContextLookup::Missing | ContextLookup::Ambiguous(..) => None,
            },
            None => {
                let domain = host.hostname.as_domain();
                self.tls_contexts
                    .iter()
                    .find(|c| c.hosts.iter().any(|h| h.eq_ignore_ascii_case(&domain)))
            }
        }
    }
}

/// The upstream cluster a Mapping targets. Mappings with equal targets share one cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub service: Service,
    pub tls: UpstreamTls,
    /// HTTP/2 to the upstream (`grpc: true`).
    pub http2: bool,
    pub connect_timeout_ms: u32,
    /// Breakers, outlier detection, load balancing, keepalive, idle timeout.
    pub policy: UpstreamPolicy,
}

/// How a Mapping rewrites the path before forwarding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rewrite {
    /// `rewrite: ""`: the path is forwarded as it came.
    Keep,
    /// Replace the matched prefix (Emissary's default is `/`).
    Prefix(String),
    /// `regex_rewrite: {pattern, substitution}`.
    Regex {
        pattern: String,
        substitution: String,
    },
}

/// A Mapping that answers with a redirect instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Redirect {
    /// The host to redirect to (`service` when `host_redirect: true`).
    pub host: Option<String>,
    /// Replaces the whole path.
    pub path: Option<String>,
    /// Replaces the matched prefix.
    pub prefix: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    pub response_code: u16,
}

/// What a Mapping does with a matched request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Boxed: with its policies a route is several times the size of a redirect.
    Route(Box<Route>),
    Redirect(Redirect),
}

/// Forwarding settings of a routing Mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub target: Target,
    pub rewrite: Rewrite,
    /// Request timeout; Emissary's default is 3000 ms. 0 disables it.
    pub timeout_ms: u32,
    /// Stream idle timeout, when set.
    pub idle_timeout_ms: Option<u32>,
    /// `allow_upgrade: [websocket]`.
    pub upgrades: Vec<String>,
    /// `host_rewrite`: the Host header sent upstream.
    pub host_rewrite: Option<String>,
    /// `shadow: true`: the Mapping mirrors the requests of the Mappings with its match to
    /// its own service (responses discarded) instead of serving them; its `weight` is the
    /// share mirrored.
    pub shadow: bool,
    /// Retries, CORS, hashing, rate limits.
    pub policy: RoutePolicy,
}

/// A header to add; `append: false` replaces an existing value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderToAdd {
    pub name: String,
    pub value: String,
    pub append: bool,
}

/// `getambassador.io/v3alpha1` Mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub meta: Meta,
    /// `hostname` (v3) or `host` (v2); `*` when absent.
    pub hostname: HostPattern,
    pub path: PathMatch,
    /// Path matching is case-sensitive unless `case_sensitive: false`.
    pub case_sensitive: bool,
    pub method: Option<String>,
    pub headers: Vec<KeyValueMatch>,
    pub query_parameters: Vec<KeyValueMatch>,
    pub action: Action,
    /// Traffic share among Mappings with the same match; `None` takes what is left.
    pub weight: Option<u32>,
    /// Higher first; ties are broken by match specificity (Emissary's order).
    pub precedence: i32,
    pub add_request_headers: Vec<HeaderToAdd>,
    pub remove_request_headers: Vec<String>,
    pub add_response_headers: Vec<HeaderToAdd>,
    pub remove_response_headers: Vec<String>,
    /// `bypass_auth: true`: the AuthService is not asked for this Mapping's requests.
    pub bypass_auth: bool,
}

/// What a Host does with plaintext requests when it terminates TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InsecureAction {
    /// 301 to https (Emissary's default for TLS Hosts).
    Redirect,
    /// Serve plaintext too.
    Route,
    /// Refuse plaintext.
    Reject,
}

/// `getambassador.io/v3alpha1` Host.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub meta: Meta,
    pub hostname: HostPattern,
    /// Name of the secret (under `--secrets-dir`) holding this Host's certificate.
    pub tls_secret: Option<String>,
    /// Name of a TLSContext whose protocol settings apply (`tlsContext.name`).
    pub tls_context: Option<String>,
    pub insecure_action: InsecureAction,
    /// Labels, matched by Listeners' `hostBinding.selector`.
    pub labels: BTreeMap<String, String>,
}

/// Listener protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Http,
    Https,
    /// HTTP and HTTPS on one port (TLS detected by the inspector).
    HttpsProxy,
    /// The proxy-protocol variants of the above are not supported yet; validation rejects them.
    Tcp,
}

/// How a Listener decides a request is secure (Emissary's `securityModel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecurityModel {
    Xfp,
    Secure,
    Insecure,
}

/// Which Hosts a Listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostBinding {
    /// `namespace.from: ALL` (and the default).
    All,
    /// `namespace.from: SELF`.
    SameNamespace,
    /// `selector.matchLabels`.
    Labels(BTreeMap<String, String>),
}

/// `getambassador.io/v3alpha1` Listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub meta: Meta,
    pub port: u16,
    pub protocol: Protocol,
    pub security_model: SecurityModel,
    pub host_binding: HostBinding,
}

/// TLS protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
}

/// `getambassador.io/v3alpha1` TLSContext.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsContext {
    pub meta: Meta,
    pub hosts: Vec<String>,
    pub secret: Option<String>,
    pub min_tls_version: Option<TlsVersion>,
    pub max_tls_version: Option<TlsVersion>,
    pub alpn_protocols: Vec<String>,
    pub cipher_suites: Vec<String>,
    /// `ca_secret` (and `cert_required`): peers' certificates are verified.
    pub peer_validation: Option<PeerValidation>,
    /// `sni`: sent upstream instead of the service host, and the name the upstream's
    /// certificate must carry when `peer_validation` is set.
    pub sni: Option<String>,
}

/// How a TLSContext verifies the other side's certificate. Only exists with a CA, so
/// `cert_required` without `ca_secret` cannot be represented.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerValidation {
    /// The secret (under `--secrets-dir`) whose CA bundle peers must chain to; a key of
    /// [`Config::ca_bundles`] once validated.
    pub ca_secret: String,
    /// Downstream: a client without a certificate is refused at the handshake. Without
    /// it, one is asked for and verified when sent, and a client without one is still
    /// served (Emissary's behaviour). Upstream it means nothing: servers always present one.
    pub cert_required: bool,
}
