//! A Mapping's [`RoutePolicy`] on its Envoy route: retries, hashing, mirrors (shadow
//! Mappings), global rate-limit actions, and the per-route configs of the CORS, ext_authz
//! and local rate limit filters (see `filters` for the filters themselves).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    RateLimit, RetryPolicy as EnvoyRetryPolicy, rate_limit, route_action,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::XRateLimitHeadersRfcVersion;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    ExtAuthzPerRoute, ext_authz_per_route,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
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

/// The per-route filter configs of a Mapping: CORS, the local token bucket, and ext_authz
/// switched off for `bypass_auth` (only when there is an AuthService, whose filter would
/// otherwise not exist).
pub(super) fn per_filter_config(
    mapping: &Mapping,
    policy: Option<&RoutePolicy>,
    auth_enabled: bool,
) -> HashMap<String, Any> {
    let mut out = HashMap::new();
    if auth_enabled && mapping.bypass_auth {
        out.insert(
            filters::EXT_AUTHZ.to_owned(),
            pack_any(ExtAuthzPerRoute {
                r#override: Some(ext_authz_per_route::Override::Disabled(true)),
            }),
        );
    }
    let Some(policy) = policy else {
        return out;
    };
    if let Some(cors) = &policy.cors {
        out.insert(filters::CORS.to_owned(), pack_any(cors_policy(cors)));
    }
    if let Some(bucket) = &policy.local_rate_limit {
        out.insert(
            filters::LOCAL_RATE_LIMIT.to_owned(),
            pack_any(local_rate_limit(bucket)),
        );
    }
    out
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

/// The route's token bucket, always on and enforced, with the draft-03 `x-ratelimit-*`
/// headers and `x-local-rate-limit: true` on the 429 so a client can tell it from an
/// upstream's.
fn local_rate_limit(bucket: &TokenBucket) -> LocalRateLimit {
    let always = || RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 100,
            denominator: fractional_percent::DenominatorType::Hundred as i32,
        }),
        runtime_key: String::new(),
    };
    LocalRateLimit {
        stat_prefix: "local_rate_limit".to_owned(),
        token_bucket: Some(EnvoyTokenBucket {
            max_tokens: bucket.max_tokens,
            tokens_per_fill: Some(UInt32Value {
                value: bucket.tokens_per_fill,
            }),
            fill_interval: Some(duration_ms(bucket.fill_interval_ms)),
        }),
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
    }
}
