//! Validation of the traffic-policy fields a Mapping (or the `ambassador` Module, as
//! defaults) carries: retries, circuit breakers, outlier detection, CORS, load balancing
//! and keepalive (rate-limit labels and buckets are in `rate_limits`). Each function reports problems on `check` at the
//! field's own position and returns what it could make of the value.

use std::collections::BTreeMap;

use super::{Check, is_token};
use crate::config::model::*;
use crate::config::raw;
use crate::config::yaml::At;

/// Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` conditions (router filter docs),
/// less `retriable-status-codes` and `retriable-headers`, which need lists the Mapping
/// cannot give and would retry nothing.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Longest duration attache accepts anywhere: a day, far beyond any sane timeout, and
/// well inside `u32` milliseconds.
const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;

/// Mapping settings the `ambassador` Module sets for every Mapping that does not set its
/// own, and what Mapping validation needs to know about other resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub(in crate::config) struct MappingDefaults {
    /// `cluster_request_timeout_ms`; `None` is Emissary's 3000 ms.
    pub timeout_ms: Option<u32>,
    pub idle_timeout_ms: Option<u32>,
    pub retry: Option<RetryPolicy>,
    pub circuit_breakers: Vec<CircuitBreaker>,
    pub load_balancer: Option<(LbPolicy, Option<HashOn>)>,
    pub cors: Option<Cors>,
    /// The RateLimitService's domain, when there is one: `labels` under it take effect.
    pub rate_limit_domain: Option<String>,
}

/// `500ms`, `1s`, `1.5s`, `2m`, `1h` (Go's forms, as Emissary writes durations), or a bare
/// number of seconds. Returns whole milliseconds.
///
/// # Errors
///
/// A message naming the problem: not a duration, negative, or longer than a day.
pub fn parse_duration_ms(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let (number, unit_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (t, 1000.0)
    };
    let bad = || format!("{text:?} is not a duration such as 500ms, 1s or 1.5s");
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let ms = (value * unit_ms).round();
    if ms > MAX_DURATION_MS as f64 {
        return Err(format!("{text:?} is longer than a day"));
    }
    Ok(ms as u32)
}

pub(super) fn duration<T>(
    at: &At<T>,
    text: &str,
    field: &str,
    check: &mut Check<'_>,
) -> Option<u32> {
    match parse_duration_ms(text) {
        Ok(ms) => Some(ms),
        Err(why) => {
            check.error(at, field, why);
            None
        }
    }
}

pub(super) fn retry_policy(
    spec: &At<raw::RetryPolicySpec>,
    field: &str,
    check: &mut Check<'_>,
) -> Option<RetryPolicy> {
    let retry_on = match &spec.value.retry_on {
        None => {
            check.error(
                spec,
                &format!("{field}.retry_on"),
                "missing required field `retry_on` (e.g. `5xx`, `gateway-error`, `connect-failure`)",
            );
            return None;
        }
        Some(on) => {
            let conditions: Vec<&str> = on.value.split(',').map(str::trim).collect();
            for c in &conditions {
                if !RETRY_ON.contains(c) {
                    check.error(
                        on,
                        &format!("{field}.retry_on"),
                        format!(
                            "{c:?} is not a retry condition; use one of {}",
                            RETRY_ON.join(", ")
                        ),
                    );
                }
            }
            conditions.join(",")
        }
    };
    let num_retries = spec.value.num_retries.as_ref().map(|n| {
        if n.value > 100 {
            check.error(
                n,
                &format!("{field}.num_retries"),
                format!("{} retries is more than 100", n.value),
            );
        }
        n.value
    });
    let per_try_timeout_ms = spec.value.per_try_timeout.as_ref().and_then(|t| {
        let ms = duration(t, &t.value.0, &format!("{field}.per_try_timeout"), check)?;
        if ms == 0 {
            check.error(
                t,
                &format!("{field}.per_try_timeout"),
                "must be above 0 (leave it out for no per-try timeout)",
            );
        }
        Some(ms)
    });
    Some(RetryPolicy {
        retry_on,
        num_retries,
        per_try_timeout_ms,
    })
}

pub(super) fn circuit_breakers(
    specs: &[At<raw::CircuitBreakerSpec>],
    field: &str,
    check: &mut Check<'_>,
) -> Vec<CircuitBreaker> {
    let mut out: BTreeMap<Priority, CircuitBreaker> = BTreeMap::new();
    for spec in specs {
        let priority = match spec.value.priority.as_ref().map(|p| (p, p.value.as_str())) {
            None | Some((_, "default")) => Priority::Default,
            Some((_, "high")) => Priority::High,
            Some((at, other)) => {
                check.error(
                    at,
                    &format!("{field}.priority"),
                    format!("{other:?} is not one of default, high"),
                );
                continue;
            }
        };
        let v = &spec.value;
        let breaker = CircuitBreaker {
            priority,
            max_connections: v.max_connections.as_ref().map(|n| n.value),
            max_pending_requests: v.max_pending_requests.as_ref().map(|n| n.value),
            max_requests: v.max_requests.as_ref().map(|n| n.value),
            max_retries: v.max_retries.as_ref().map(|n| n.value),
        };
        if out.insert(priority, breaker).is_some() {
            check.error(
                spec,
                field,
                format!("a second entry for priority {priority:?}; give one per priority"),
            );
        }
    }
    out.into_values().collect()
}

pub(super) fn outlier_detection(
    spec: &At<raw::OutlierDetectionSpec>,
    field: &str,
    check: &mut Check<'_>,
) -> OutlierDetection {
    let v = &spec.value;
    if let Some(p) = &v.max_ejection_percent
        && p.value > 100
    {
        check.error(
            p,
            &format!("{field}.max_ejection_percent"),
            format!("{} is over 100", p.value),
        );
    }
    for (name, value) in [
        ("interval_ms", &v.interval_ms),
        ("base_ejection_time_ms", &v.base_ejection_time_ms),
        ("consecutive_5xx", &v.consecutive_5xx),
        (
            "consecutive_gateway_failure",
            &v.consecutive_gateway_failure,
        ),
    ] {
        if let Some(n) = value
            && n.value == 0
        {
            check.error(n, &format!("{field}.{name}"), "must be above 0");
        }
    }
    OutlierDetection {
        consecutive_5xx: v.consecutive_5xx.as_ref().map(|n| n.value),
        consecutive_gateway_failure: v.consecutive_gateway_failure.as_ref().map(|n| n.value),
        interval_ms: v.interval_ms.as_ref().map(|n| n.value),
        base_ejection_time_ms: v.base_ejection_time_ms.as_ref().map(|n| n.value),
        max_ejection_percent: v.max_ejection_percent.as_ref().map(|n| n.value),
    }
}

pub(super) fn cors(spec: &At<raw::CorsSpec>, field: &str, check: &mut Check<'_>) -> Cors {
    let v = &spec.value;
    let mut origins = Vec::new();
    if let Some(list) = &v.origins {
        for origin in list
            .value
            .0
            .iter()
            .flat_map(|o| o.split(','))
            .map(str::trim)
        {
            if origin == "*" {
                origins.push(OriginMatch::Any);
            } else if origin.starts_with('^') {
                let at = At {
                    value: origin.to_owned(),
                    line: list.line,
                    column: list.column,
                };
                check.regex(&at, &format!("{field}.origins"));
                origins.push(OriginMatch::Regex(origin.to_owned()));
            } else if origin.contains("://") && !origin.contains(char::is_whitespace) {
                origins.push(OriginMatch::Exact(origin.to_owned()));
            } else {
                check.error(
                    list,
                    &format!("{field}.origins"),
                    format!(
                        "{origin:?} is not an origin: give `scheme://host[:port]`, `*`, or a regex starting with `^`"
                    ),
                );
            }
        }
    }
    let tokens = |list: &Option<At<raw::CommaList>>, name: &str, check: &mut Check<'_>| {
        let Some(list) = list else {
            return Vec::new();
        };
        for item in &list.value.0 {
            if !is_token(item) {
                check.error(
                    list,
                    &format!("{field}.{name}"),
                    format!("{item:?} is not a valid name"),
                );
            }
        }
        list.value.0.clone()
    };
    let methods = tokens(&v.methods, "methods", check);
    let headers = tokens(&v.headers, "headers", check);
    let exposed_headers = tokens(&v.exposed_headers, "exposed_headers", check);
    let max_age_s = v
        .max_age
        .as_ref()
        .and_then(|a| match a.value.0.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                check.error(
                    a,
                    &format!("{field}.max_age"),
                    format!("{:?} is not a number of seconds", a.value.0),
                );
                None
            }
        });
    if origins.is_empty() {
        check.error(
            spec,
            &format!("{field}.origins"),
            "CORS needs at least one allowed origin",
        );
    }
    Cors {
        origins,
        methods,
        headers,
        exposed_headers,
        credentials: v.credentials,
        max_age_s,
    }
}

pub(super) fn load_balancer(
    spec: &At<raw::LoadBalancerSpec>,
    field: &str,
    check: &mut Check<'_>,
) -> Option<(LbPolicy, Option<HashOn>)> {
    let v = &spec.value;
    let policy = match v.policy.as_ref().map(|p| (p, p.value.as_str())) {
        None => {
            check.error(
                spec,
                &format!("{field}.policy"),
                "missing required field `policy` (round_robin, least_request, ring_hash or maglev)",
            );
            return None;
        }
        Some((_, "round_robin")) => LbPolicy::RoundRobin,
        Some((_, "least_request")) => LbPolicy::LeastRequest,
        Some((_, "ring_hash")) => LbPolicy::RingHash,
        Some((_, "maglev")) => LbPolicy::Maglev,
        Some((at, other)) => {
            check.error(
                at,
                &format!("{field}.policy"),
                format!("{other:?} is not one of round_robin, least_request, ring_hash, maglev"),
            );
            return None;
        }
    };
    let mut sources = Vec::new();
    if let Some(h) = &v.header {
        if !is_token(&h.value) {
            check.error(
                h,
                &format!("{field}.header"),
                format!("{:?} is not a header name", h.value),
            );
        }
        sources.push(HashOn::Header(h.value.to_ascii_lowercase()));
    }
    if let Some(c) = &v.cookie {
        let ttl_ms = c
            .value
            .ttl
            .as_ref()
            .and_then(|t| duration(c, &t.0, &format!("{field}.cookie.ttl"), check));
        if !is_token(&c.value.name) {
            check.error(
                c,
                &format!("{field}.cookie.name"),
                format!("{:?} is not a cookie name", c.value.name),
            );
        }
        sources.push(HashOn::Cookie {
            name: c.value.name.clone(),
            path: c.value.path.clone(),
            ttl_ms,
        });
    }
    if let Some(s) = &v.source_ip {
        if s.value {
            sources.push(HashOn::SourceIp);
        } else {
            check.error(
                s,
                &format!("{field}.source_ip"),
                "`false` is not a hash source; leave it out",
            );
        }
    }
    if sources.len() > 1 {
        check.error(
            spec,
            field,
            "give one of `header`, `cookie` or `source_ip`, not several",
        );
        return None;
    }
    let hash = sources.pop();
    match (policy.hashes(), &hash) {
        (true, None) => {
            check.error(
                spec,
                field,
                "ring_hash and maglev need `header`, `cookie` or `source_ip` to hash on",
            );
            None
        }
        (false, Some(_)) => {
            check.error(
                spec,
                field,
                "`header`, `cookie` and `source_ip` only take effect with ring_hash or maglev",
            );
            None
        }
        _ => Some((policy, hash)),
    }
}

pub(super) fn keepalive(spec: &At<raw::KeepaliveSpec>, check: &mut Check<'_>) -> Keepalive {
    let v = &spec.value;
    for (name, value) in [
        ("time", &v.time),
        ("interval", &v.interval),
        ("probes", &v.probes),
    ] {
        if let Some(n) = value
            && n.value == 0
        {
            check.error(n, &format!("keepalive.{name}"), "must be above 0");
        }
    }
    Keepalive {
        time_s: v.time.as_ref().map(|n| n.value),
        interval_s: v.interval.as_ref().map(|n| n.value),
        probes: v.probes.as_ref().map(|n| n.value),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations_in_go_forms() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("1s"), Ok(1000));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("3"), Ok(3000));
        assert!(parse_duration_ms("-1s").is_err());
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("").is_err());
        assert!(
            parse_duration_ms("48h")
                .unwrap_err()
                .contains("longer than a day")
        );
    }
}
