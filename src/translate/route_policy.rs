//! A Mapping's [`RoutePolicy`] on its Envoy route: retries, hashing, mirrors (shadow
//! Mappings), global rate-limit actions, and the per-route configs of the CORS, ext_authz
//! and local rate limit filters (see `filters` for the filters themselves).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::{
    RateLimit, RetryPolicy as EnvoyRetryPolicy, rate_limit, route_action,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    ExtAuthzPerRoute, ext_authz_per_route,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{
    FractionalPercent, TokenBucket as EnvoyTokenBucket, fractional_percent,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use envoy_types::util::pack_any;

use super::filters;
use super::route::{duration_ms, regex};
use crate::config::{
    Cors, HashOn, Mapping, OriginMatch, RateLimitAction, RateLimitGroup, RetryPolicy, RoutePolicy,
    TokenBucket,
};

pub(super) fn retry_policy(r: &RetryPolicy) -> EnvoyRetryPolicy {
    EnvoyRetryPolicy {
        retry_on: r.retry_on.clone(),
        num_retries: r.num_retries.map(|value| UInt32Value { value }),
        per_try_timeout: r.per_try_timeout_ms.map(duration_ms),
        ..Default::default()
    }
}

pub(super) fn hash_policy(hash: &HashOn) -> route_action::HashPolicy {
    use route_action::hash_policy::{self, PolicySpecifier};
    let specifier = match hash {
        HashOn::Header(name) => PolicySpecifier::Header(hash_policy::Header {
            header_name: name.clone(),
            ..Default::default()
        }),
        HashOn::Cookie { name, path, ttl_ms } => PolicySpecifier::Cookie(hash_policy::Cookie {
            name: name.clone(),
            path: path.clone().unwrap_or_default(),
            ttl: ttl_ms.map(duration_ms),
            ..Default::default()
        }),
        HashOn::SourceIp => {
            PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
                source_ip: true,
            })
        }
    };
    route_action::HashPolicy {
        policy_specifier: Some(specifier),
        ..Default::default()
    }
}

/// A mirror to `cluster` of `percent` of the requests (all when `None`).
pub(super) fn mirror(cluster: String, percent: Option<u32>) -> route_action::RequestMirrorPolicy {
    route_action::RequestMirrorPolicy {
        cluster,
        runtime_fraction: percent.map(|numerator| RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator,
                denominator: fractional_percent::DenominatorType::Hundred as i32,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Each label group is one `rate_limits` entry: Envoy sends the RLS one descriptor per
/// entry, made of the entry's actions in order.
pub(super) fn rate_limits(groups: &[RateLimitGroup]) -> Vec<RateLimit> {
    use rate_limit::action::{self, ActionSpecifier};
    groups
        .iter()
        .map(|g| RateLimit {
            actions: g
                .actions
                .iter()
                .map(|a| rate_limit::Action {
                    action_specifier: Some(match a {
                        RateLimitAction::GenericKey { key, value } => {
                            ActionSpecifier::GenericKey(action::GenericKey {
                                descriptor_value: value.clone(),
                                descriptor_key: key.clone().unwrap_or_default(),
                                ..Default::default()
                            })
                        }
                        RateLimitAction::RequestHeader {
                            header,
                            key,
                            skip_if_absent,
                        } => ActionSpecifier::RequestHeaders(action::RequestHeaders {
                            header_name: header.clone(),
                            descriptor_key: key.clone(),
                            skip_if_absent: *skip_if_absent,
                        }),
                        RateLimitAction::RemoteAddress => {
                            ActionSpecifier::RemoteAddress(action::RemoteAddress::default())
                        }
                        RateLimitAction::SourceCluster => {
                            ActionSpecifier::SourceCluster(action::SourceCluster::default())
                        }
                        RateLimitAction::DestinationCluster => ActionSpecifier::DestinationCluster(
                            action::DestinationCluster::default(),
                        ),
                    }),
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// Where a route's per-filter configs go.
///
/// prost encodes a protobuf map from a `HashMap`, in an order that differs between two
/// maps with equal content, so a `typed_per_filter_config` with two entries would make
/// two translations of one commit encode differently (see `provenance` for the same
/// problem). Every map here therefore holds at most one entry: the route's carries
/// ext_authz's (for `bypass_auth`) or else CORS; when a route needs both, CORS moves to
/// its weighted cluster entries, which Envoy consults before the route. Local rate limits
/// need no per-route config at all (see [`local_rate_limit_key`]).
#[derive(Debug, Default)]
pub(super) struct PerFilter {
    /// For `Route.typed_per_filter_config`.
    pub route: Option<(String, Any)>,
    /// For every `ClusterWeight.typed_per_filter_config` of the route.
    pub cluster_weight: Option<(String, Any)>,
}

impl PerFilter {
    /// A map holding `entry`, if any: never more than one entry (see [`PerFilter`]).
    pub(super) fn map(entry: &Option<(String, Any)>) -> HashMap<String, Any> {
        entry.iter().cloned().collect()
    }
}

/// The per-filter configs of a Mapping's route: ext_authz switched off for `bypass_auth`
/// (only when there is an AuthService, whose filter would otherwise not exist) and its
/// CORS policy.
pub(super) fn per_filter_config(
    mapping: &Mapping,
    policy: Option<&RoutePolicy>,
    auth_enabled: bool,
) -> PerFilter {
    let bypass = (auth_enabled && mapping.bypass_auth).then(|| {
        (
            filters::EXT_AUTHZ.to_owned(),
            pack_any(ExtAuthzPerRoute {
                r#override: Some(ext_authz_per_route::Override::Disabled(true)),
            }),
        )
    });
    let cors = policy
        .and_then(|p| p.cors.as_ref())
        .map(|c| (filters::CORS.to_owned(), pack_any(cors_policy(c))));
    match (bypass, cors) {
        (Some(b), cors) => PerFilter {
            route: Some(b),
            cluster_weight: cors,
        },
        (None, cors) => PerFilter {
            route: cors,
            cluster_weight: None,
        },
    }
}

/// The descriptor key under which a Mapping's local token bucket is found.
///
/// The local rate limit filter holds every Mapping's bucket as a descriptor (see
/// `filters`), and each limited route sends its own `namespace/name` under this key at
/// [`LOCAL_RATE_LIMIT_STAGE`], so no route needs a per-filter config of its own.
pub(super) const LOCAL_RATE_LIMIT_KEY: &str = "attache_local_rate_limit";

/// The rate-limit stage of local limits: the global filter reads stage 0 only.
pub(super) const LOCAL_RATE_LIMIT_STAGE: u32 = 1;

/// The descriptor value of a Mapping's local bucket.
pub(super) fn local_rate_limit_value(mapping: &Mapping) -> String {
    format!("{}/{}", mapping.meta.namespace, mapping.meta.name)
}

/// The route `rate_limits` entry that selects the Mapping's local bucket.
pub(super) fn local_rate_limit_action(mapping: &Mapping) -> RateLimit {
    use rate_limit::action::{self, ActionSpecifier};
    RateLimit {
        stage: Some(UInt32Value {
            value: LOCAL_RATE_LIMIT_STAGE,
        }),
        actions: vec![rate_limit::Action {
            action_specifier: Some(ActionSpecifier::GenericKey(action::GenericKey {
                descriptor_value: local_rate_limit_value(mapping),
                descriptor_key: LOCAL_RATE_LIMIT_KEY.to_owned(),
                ..Default::default()
            })),
        }],
        ..Default::default()
    }
}

/// A token bucket as Envoy's.
pub(super) fn token_bucket(bucket: &TokenBucket) -> EnvoyTokenBucket {
    EnvoyTokenBucket {
        max_tokens: bucket.max_tokens,
        tokens_per_fill: Some(UInt32Value {
            value: bucket.tokens_per_fill,
        }),
        fill_interval: Some(duration_ms(bucket.fill_interval_ms)),
    }
}

fn cors_policy(c: &Cors) -> CorsPolicy {
    let join = |items: &[String]| items.join(",");
    CorsPolicy {
        allow_origin_string_match: c
            .origins
            .iter()
            .map(|o| StringMatcher {
                match_pattern: Some(match o {
                    // Any origin: a regex that matches everything.
                    OriginMatch::Any => string_matcher::MatchPattern::SafeRegex(regex(".*")),
                    OriginMatch::Exact(e) => string_matcher::MatchPattern::Exact(e.clone()),
                    OriginMatch::Regex(r) => string_matcher::MatchPattern::SafeRegex(regex(r)),
                }),
                ..Default::default()
            })
            .collect(),
        allow_methods: join(&c.methods),
        allow_headers: join(&c.headers),
        expose_headers: join(&c.exposed_headers),
        max_age: c.max_age_s.map(|s| s.to_string()).unwrap_or_default(),
        allow_credentials: c.credentials.map(|value| BoolValue { value }),
        ..Default::default()
    }
}
