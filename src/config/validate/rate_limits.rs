//! Validation of rate limiting: a Mapping's `labels` (global rate-limit descriptors for the
//! RateLimitService) and a LocalRateLimit's token bucket.

use super::policy::duration;
use super::{Check, is_token};
use crate::config::model::*;
use crate::config::raw;
use crate::config::yaml::At;

/// The label groups of the RateLimitService's `domain`; labels under other domains get a
/// warning (Emissary ignores them too), and so do labels with no RateLimitService.
pub(super) fn labels(
    spec: &raw::LabelsSpec,
    domain: Option<&str>,
    check: &mut Check<'_>,
) -> Vec<RateLimitGroup> {
    let mut out = Vec::new();
    for (label_domain, groups) in spec {
        let field = format!("labels.{label_domain}");
        let mut parsed = Vec::new();
        for group in &groups.value {
            if group.len() != 1 {
                check.error(
                    groups,
                    &field,
                    "each entry is a map with one key, the group's name, holding its labels",
                );
                continue;
            }
            for (name, labels) in group {
                let actions = labels
                    .iter()
                    .filter_map(|l| label(l, &format!("{field}.{name}"), check))
                    .collect::<Vec<_>>();
                if actions.is_empty() {
                    check.error(
                        groups,
                        &format!("{field}.{name}"),
                        "a label group needs at least one label",
                    );
                }
                parsed.push(RateLimitGroup {
                    name: name.clone(),
                    actions,
                });
            }
        }
        match domain {
            Some(d) if d == label_domain => out.extend(parsed),
            Some(d) => check.at(
                super::Severity::Warning,
                groups.line,
                groups.column,
                &field,
                format!("the RateLimitService's domain is {d:?}: labels under {label_domain:?} have no effect"),
            ),
            None => check.at(
                super::Severity::Warning,
                groups.line,
                groups.column,
                &field,
                "there is no RateLimitService: labels have no effect".to_owned(),
            ),
        }
    }
    out
}

fn label(at: &At<raw::RawLabel>, field: &str, check: &mut Check<'_>) -> Option<RateLimitAction> {
    let entries = match &at.value {
        raw::RawLabel::Generic(value) => {
            return Some(RateLimitAction::GenericKey {
                key: None,
                value: value.clone(),
            });
        }
        raw::RawLabel::Map(entries) => entries,
    };
    if entries.len() != 1 {
        check.error(at, field, "each label is a map with one key");
        return None;
    }
    let (kind, body) = entries.iter().next()?;
    let unused = |check: &mut Check<'_>, allowed: &[&str]| {
        let given = [
            ("key", body.key.is_some()),
            ("value", body.value.is_some()),
            ("header_name", body.header_name.is_some()),
            ("header", body.header.is_some()),
            ("omit_if_not_present", body.omit_if_not_present.is_some()),
        ];
        for (name, set) in given {
            if set && !allowed.contains(&name) {
                check.error(
                    at,
                    &format!("{field}.{kind}.{name}"),
                    format!("{kind} takes no `{name}`"),
                );
            }
        }
    };
    let header_action = |header: &str, key: String, check: &mut Check<'_>| {
        if !is_token(header.trim_start_matches(':')) {
            check.error(at, field, format!("{header:?} is not a header name"));
        }
        RateLimitAction::RequestHeader {
            header: header.to_ascii_lowercase(),
            key,
            skip_if_absent: body.omit_if_not_present.unwrap_or(false),
        }
    };
    Some(match kind.as_str() {
        "generic_key" => {
            unused(check, &["key", "value"]);
            let Some(value) = &body.value else {
                check.error(
                    at,
                    &format!("{field}.generic_key.value"),
                    "missing required field `value`",
                );
                return None;
            };
            RateLimitAction::GenericKey {
                key: body.key.clone(),
                value: value.clone(),
            }
        }
        "request_headers" => {
            unused(check, &["key", "header_name", "omit_if_not_present"]);
            let (Some(header), Some(key)) = (&body.header_name, &body.key) else {
                check.error(
                    at,
                    &format!("{field}.request_headers"),
                    "needs `header_name` and `key`",
                );
                return None;
            };
            header_action(header, key.clone(), check)
        }
        "remote_address" | "source_cluster" | "destination_cluster" => {
            unused(check, &["key"]);
            // Envoy sends these under a fixed descriptor key, their own name: any other
            // key would be silently ignored and the RLS's rules for it never match.
            if let Some(key) = &body.key
                && key != kind
            {
                check.error(
                    at,
                    &format!("{field}.{kind}.key"),
                    format!(
                        "Envoy always sends {kind} under the descriptor key {kind:?}, not \
                         {key:?}: remove `key` or set it to {kind:?}"
                    ),
                );
            }
            match kind.as_str() {
                "remote_address" => RateLimitAction::RemoteAddress,
                "source_cluster" => RateLimitAction::SourceCluster,
                _ => RateLimitAction::DestinationCluster,
            }
        }
        // Emissary's short form: the descriptor key, reading a header.
        key => {
            let Some(header) = &body.header else {
                check.error(
                    at,
                    &format!("{field}.{key}"),
                    format!("unknown label kind {key:?}: use generic_key, request_headers, remote_address, source_cluster, destination_cluster, or `{key}: {{header: NAME}}`"),
                );
                return None;
            };
            unused(check, &["header", "omit_if_not_present"]);
            header_action(header, key.to_owned(), check)
        }
    })
}

/// `LocalRateLimit.spec` -> its token bucket and Mapping names.
pub(super) fn token_bucket(
    spec: &raw::LocalRateLimitSpec,
    check: &mut Check<'_>,
) -> Option<(TokenBucket, Vec<String>)> {
    let Some(max) = &spec.max_tokens else {
        check.error_here("max_tokens", "missing required field `max_tokens`");
        return None;
    };
    if max.value == 0 {
        check.error(max, "max_tokens", "must be above 0");
    }
    let per_fill = match &spec.tokens_per_fill {
        Some(n) if n.value == 0 => {
            check.error(n, "tokens_per_fill", "must be above 0");
            1
        }
        Some(n) => n.value,
        None => max.value,
    };
    let fill_interval_ms = match &spec.fill_interval {
        None => {
            check.error_here(
                "fill_interval",
                "missing required field `fill_interval` (e.g. `1s`)",
            );
            return None;
        }
        Some(f) => {
            let ms = duration(f, &f.value.0, "fill_interval", check)?;
            // Envoy's minimum fill interval (local_rate_limit.proto).
            if ms < 50 {
                check.error(f, "fill_interval", "must be at least 50ms");
            }
            ms
        }
    };
    let Some(mappings) = &spec.mappings else {
        check.error_here(
            "mappings",
            "missing required field `mappings` (the Mapping names it limits)",
        );
        return None;
    };
    if mappings.value.is_empty() {
        check.error(mappings, "mappings", "names no Mapping");
    }
    let mut names: Vec<String> = mappings.value.iter().map(|m| m.value.clone()).collect();
    names.sort();
    names.dedup();
    Some((
        TokenBucket {
            max_tokens: max.value,
            tokens_per_fill: per_fill,
            fill_interval_ms,
        },
        names,
    ))
}
