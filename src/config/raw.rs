//! Raw resource shapes: Emissary's `getambassador.io/v3alpha1` specs exactly as written in
//! YAML, before any checking beyond types.
//!
//! Every struct denies unknown fields, so a typo is an error with a position rather than a
//! setting that silently does nothing. Fields that accept more than one YAML type in
//! Emissary (`tls: true` or `tls: context-name`) get small visitors of their own instead
//! of untagged enums, so a wrong value still says what was expected.
//!
//! Some fields are decoded only so that they are accepted (Emissary YAML carries them)
//! without taking effect; they are never read, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, Visitor};

use super::yaml::At;

mod policy;
pub use policy::*;

/// Kubernetes object metadata: the fields we use, and the ones a `kubectl get -o yaml`
/// export carries that we accept and ignore.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: Option<At<String>>,
    pub namespace: Option<At<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, At<String>>,
    pub uid: Option<IgnoredAny>,
    pub resource_version: Option<IgnoredAny>,
    pub generation: Option<IgnoredAny>,
    pub creation_timestamp: Option<IgnoredAny>,
    pub managed_fields: Option<IgnoredAny>,
    pub finalizers: Option<IgnoredAny>,
    pub owner_references: Option<IgnoredAny>,
    pub generate_name: Option<IgnoredAny>,
    pub self_link: Option<IgnoredAny>,
    pub deletion_timestamp: Option<IgnoredAny>,
    pub deletion_grace_period_seconds: Option<IgnoredAny>,
}

/// `Mapping` spec (v3alpha1; the v2 spellings `host` and `use_websocket` are accepted).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    pub ambassador_id: Option<IgnoredAny>,
    pub hostname: Option<At<String>>,
    pub host: Option<At<String>>,
    pub prefix: Option<At<String>>,
    pub prefix_regex: Option<bool>,
    pub prefix_exact: Option<bool>,
    pub case_sensitive: Option<bool>,
    pub method: Option<At<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, At<MatchValue>>,
    #[serde(default)]
    pub regex_headers: BTreeMap<String, At<String>>,
    #[serde(default)]
    pub query_parameters: BTreeMap<String, At<MatchValue>>,
    #[serde(default)]
    pub regex_query_parameters: BTreeMap<String, At<String>>,
    pub rewrite: Option<At<String>>,
    pub regex_rewrite: Option<At<RegexRewrite>>,
    pub service: Option<At<String>>,
    pub weight: Option<At<u32>>,
    pub precedence: Option<i32>,
    pub timeout_ms: Option<u32>,
    pub idle_timeout_ms: Option<u32>,
    pub connect_timeout_ms: Option<At<u32>>,
    pub allow_upgrade: Option<Vec<At<String>>>,
    pub use_websocket: Option<bool>,
    pub grpc: Option<bool>,
    pub tls: Option<At<TlsSetting>>,
    #[serde(default)]
    pub add_request_headers: BTreeMap<String, At<HeaderValue>>,
    pub remove_request_headers: Option<At<OneOrMany>>,
    #[serde(default)]
    pub add_response_headers: BTreeMap<String, At<HeaderValue>>,
    pub remove_response_headers: Option<At<OneOrMany>>,
    pub host_rewrite: Option<At<String>>,
    pub host_redirect: Option<bool>,
    pub path_redirect: Option<At<String>>,
    pub prefix_redirect: Option<At<String>>,
    pub redirect_response_code: Option<At<u16>>,
    pub retry_policy: Option<At<RetryPolicySpec>>,
    pub circuit_breakers: Option<Vec<At<CircuitBreakerSpec>>>,
    pub outlier_detection: Option<At<OutlierDetectionSpec>>,
    pub cors: Option<At<CorsSpec>>,
    pub shadow: Option<bool>,
    pub load_balancer: Option<At<LoadBalancerSpec>>,
    pub bypass_auth: Option<bool>,
    #[serde(default)]
    pub labels: LabelsSpec,
    pub keepalive: Option<At<KeepaliveSpec>>,
    pub cluster_idle_timeout_ms: Option<At<u32>>,
    /// Emissary's developer-portal hints: no effect on routing.
    pub docs: Option<IgnoredAny>,
}

/// `regex_rewrite: {pattern, substitution}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    pub pattern: String,
    pub substitution: String,
}

/// A header / query match value: a string to equal, or `true` for "present".
#[derive(Debug, Clone, PartialEq)]
pub enum MatchValue {
    Present,
    Exact(String),
}

impl<'de> Deserialize<'de> for MatchValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MatchValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string to match, or `true` to require presence")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<MatchValue, E> {
                if v {
                    Ok(MatchValue::Present)
                } else {
                    Err(E::custom(
                        "`false` is not a match; leave the header out instead",
                    ))
                }
            }
            fn visit_str<E>(self, v: &str) -> Result<MatchValue, E> {
                Ok(MatchValue::Exact(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<MatchValue, E> {
                Ok(MatchValue::Exact(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<MatchValue, E> {
                Ok(MatchValue::Exact(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `tls: true | false | CONTEXT_NAME`.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsSetting {
    Enabled(bool),
    Context(String),
}

impl<'de> Deserialize<'de> for TlsSetting {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TlsSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`true`, `false` or the name of a TLSContext")
            }
            fn visit_bool<E>(self, v: bool) -> Result<TlsSetting, E> {
                Ok(TlsSetting::Enabled(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<TlsSetting, E> {
                Ok(TlsSetting::Context(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `add_request_headers` values: `"value"` or `{value, append}`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderValue {
    pub value: String,
    pub append: bool,
}

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            value: String,
            #[serde(default = "yes")]
            append: bool,
        }
        fn yes() -> bool {
            true
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header value, or a mapping with `value` and `append`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderValue, E> {
                Ok(HeaderValue {
                    value: v.to_owned(),
                    append: true,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HeaderValue, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HeaderValue, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<HeaderValue, E> {
                self.visit_str(if v { "true" } else { "false" })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<HeaderValue, A::Error> {
                let long = Long::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(HeaderValue {
                    value: long.value,
                    append: long.append,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a list of strings (`remove_request_headers: x-a` or `[x-a, x-b]`).
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `Host` spec (v3alpha1; camelCase as in Emissary).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostSpec {
    #[serde(rename = "ambassador_id")]
    pub ambassador_id: Option<IgnoredAny>,
    pub hostname: Option<At<String>>,
    pub tls_secret: Option<At<SecretRef>>,
    pub tls_context: Option<At<NameRef>>,
    pub request_policy: Option<RequestPolicy>,
    /// Emissary enables ACME when this is absent; attache never does, and only accepts
    /// `authority: none` so that an exported Emissary Host still loads.
    pub acme_provider: Option<At<AcmeProvider>>,
}

/// `tlsSecret: {name, namespace}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    pub namespace: Option<String>,
}

/// `{name: ...}` references.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRef {
    pub name: String,
}

/// `acmeProvider`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeProvider {
    pub authority: String,
}

/// `requestPolicy`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestPolicy {
    pub insecure: Option<InsecurePolicy>,
}

/// `requestPolicy.insecure`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InsecurePolicy {
    pub action: Option<At<String>>,
    pub additional_port: Option<IgnoredAny>,
}

/// `Listener` spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerSpec {
    #[serde(rename = "ambassador_id")]
    pub ambassador_id: Option<IgnoredAny>,
    pub port: Option<At<u32>>,
    pub protocol: Option<At<String>>,
    pub security_model: Option<At<String>>,
    pub host_binding: Option<HostBindingSpec>,
    pub stats_prefix: Option<String>,
    pub l7_depth: Option<IgnoredAny>,
}

/// `hostBinding`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostBindingSpec {
    pub namespace: Option<NamespaceBinding>,
    pub selector: Option<LabelSelector>,
}

/// `hostBinding.namespace`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceBinding {
    pub from: At<String>,
}

/// `hostBinding.selector`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `TLSContext` spec (snake_case as in Emissary).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsContextSpec {
    pub ambassador_id: Option<IgnoredAny>,
    #[serde(default)]
    pub hosts: Vec<At<String>>,
    pub secret: Option<At<String>>,
    pub min_tls_version: Option<At<String>>,
    pub max_tls_version: Option<At<String>>,
    /// Emissary takes a comma-separated string; a list is accepted too.
    pub alpn_protocols: Option<At<CommaList>>,
    #[serde(default)]
    pub cipher_suites: Vec<At<String>>,
    pub secret_namespacing: Option<bool>,
    /// The Secret whose `ca.crt` (else `tls.crt`) holds the CA that peers must chain to.
    pub ca_secret: Option<At<String>>,
    /// Downstream: refuse clients without a certificate (needs `ca_secret`).
    pub cert_required: Option<At<bool>>,
    /// Upstream: the SNI sent, and the name the server's certificate must carry.
    pub sni: Option<At<String>>,
}

/// `"h2,http/1.1"` or `[h2, http/1.1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommaList(pub Vec<String>);

impl<'de> Deserialize<'de> for CommaList {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let OneOrMany(items) = OneOrMany::deserialize(d)?;
        Ok(CommaList(
            items
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        ))
    }
}

/// `Module` spec: only the `ambassador` Module exists; its settings are in
/// [`ModuleConfig`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    pub ambassador_id: Option<IgnoredAny>,
    pub config: Option<ModuleConfig>,
}
