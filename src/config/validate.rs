//! Validation: raw decoded resources -> the model `translate` consumes.
//!
//! Each resource is checked on its own first (values, regexes, references to services),
//! then across resources (duplicate names, Mappings no Host serves, TLS references).
//! Every problem becomes a [`Diagnostic`]; a resource with an error is left out of the
//! [`Config`], and the caller's [`Policy`](super::Policy) decides whether the rest is served.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;

use super::diag::{Diagnostic, ResourceRef, Severity};
use super::load::{Parsed, Spec};
use super::model::*;
use super::raw;
use super::yaml::At;

mod ca;
mod policy;
mod rate_limits;
mod services;
pub(super) mod shared_routes;
#[cfg(test)]
mod tests;
pub(super) mod tls_refs;

pub(super) use policy::MappingDefaults;

/// Emissary's default request timeout.
const DEFAULT_TIMEOUT_MS: u32 = 3_000;
/// Emissary's default upstream connect timeout.
const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 3_000;

/// Collects the diagnostics of one resource.
struct Check<'a> {
    origin: &'a Origin,
    resource: ResourceRef,
    base: &'static str,
    spec_at: (u32, u32),
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Check<'a> {
    /// A check of one parsed resource, with nothing found yet.
    fn of(p: &'a Parsed) -> Check<'a> {
        Check {
            origin: &p.origin,
            resource: ResourceRef::new(p.kind, &p.name),
            base: p.base,
            spec_at: p.spec_at,
            diagnostics: Vec::new(),
        }
    }

    fn at(&mut self, severity: Severity, line: u32, column: u32, field: &str, message: String) {
        let (line, column) = if line == 0 {
            (self.origin.line, self.origin.column)
        } else {
            (line, column)
        };
        self.diagnostics.push(Diagnostic {
            file: self.origin.file.clone(),
            line,
            column,
            severity,
            resource: Some(self.resource.clone()),
            field: if field.is_empty() {
                String::new()
            } else {
                format!("{}{field}", self.base)
            },
            message,
        });
    }

    fn error<T>(&mut self, at: &At<T>, field: &str, message: impl Into<String>) {
        self.at(Severity::Error, at.line, at.column, field, message.into());
    }

    /// An error about the spec as a whole, such as a missing field.
    fn error_here(&mut self, field: &str, message: impl Into<String>) {
        let (line, column) = self.spec_at;
        self.at(Severity::Error, line, column, field, message.into());
    }

    fn failed(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    fn regex(&mut self, at: &At<String>, field: &str) {
        if let Some(problem) = regex_problem(&at.value) {
            self.error(at, field, problem);
        }
    }
}

/// Why Envoy's RE2 would reject `pattern`, if it would. Rust's regex syntax is the RE2
/// family (no backreferences, no look-around), so its parser's verdict is ours. Only the
/// parser runs: compiling a matcher per pattern cost most of validation's time at 10k
/// Mappings, and Envoy compiles its own.
pub fn regex_problem(pattern: &str) -> Option<String> {
    let error = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .err()?;
    let text = error.to_string();
    let last = text.lines().last().unwrap_or("invalid regex").trim();
    Some(format!(
        "invalid regular expression {pattern:?}: {}",
        last.trim_start_matches("error: ")
    ))
}

/// One parsed resource to validate, with the slot that remembers its last validation.
pub struct Item<'a> {
    pub parsed: &'a Parsed,
    /// The outcome of validating this same `parsed` before (see `config::Cache`): reused
    /// when what else it depended on is unchanged, and refreshed otherwise. `None` when
    /// nothing is kept (a one-off load).
    pub memo: Option<&'a mut Option<MappingMemo>>,
}

/// A Mapping's validation and what it depended on besides the Mapping itself: the
/// Module's defaults and the RateLimitService's domain. Validation of a Mapping reads
/// nothing else, so equal inputs give an equal result (the cache's correctness argument).
#[derive(Debug)]
pub struct MappingMemo {
    defaults: MappingDefaults,
    mapping: Option<Mapping>,
    diagnostics: Vec<Diagnostic>,
}

impl MappingMemo {
    /// The valid Mapping, before its TLSContext reference is resolved; `None` when it
    /// has an error.
    pub fn mapping(&self) -> Option<&Mapping> {
        self.mapping.as_ref()
    }

    /// Its own problems (not those found across resources).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }
}

/// Validates one Mapping on its own, under the Module's `defaults`: everything but the
/// checks across resources.
pub(super) fn mapping_memo(
    p: &Parsed,
    spec: &raw::MappingSpec,
    defaults: &MappingDefaults,
) -> MappingMemo {
    let mut check = Check::of(p);
    let mapping = validated_mapping(p, spec, defaults, &mut check);
    MappingMemo {
        defaults: defaults.clone(),
        mapping,
        diagnostics: check.diagnostics,
    }
}

/// Turns parsed resources into a [`Config`], pushing every problem onto `diagnostics`.
/// Invalid resources are left out. Also returns the defaults every Mapping was
/// validated under (what a later revision that changes only Mappings validates with).
pub fn validate(
    items: Vec<Item<'_>>,
    secrets_dir: Option<&Path>,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Config, MappingDefaults) {
    let mut config = Config::default();
    let mut seen: HashMap<(Kind, &str, &str), &Origin> = HashMap::with_capacity(items.len());
    let mut defaults = MappingDefaults::default();
    // The Module and the RateLimitService go first: Mappings take their defaults from the
    // one and check their `labels` against the other's domain.
    let (early, late): (Vec<Item<'_>>, Vec<Item<'_>>) = items
        .into_iter()
        .partition(|i| matches!(i.parsed.kind, Kind::Module | Kind::RateLimitService));
    let mut local_limits = Vec::new();
    config.mappings.reserve(
        late.iter()
            .filter(|i| matches!(i.parsed.spec, Spec::Mapping(_)))
            .count(),
    );
    // Two rounds: the early resources set the defaults that every Mapping of the late
    // round is validated under, on every core at once (`validate_mappings`); the round
    // itself then runs in order, so duplicates and diagnostics come out as they would
    // one by one.
    let mut round = early;
    let mut next_round = Some(late);
    loop {
        let mut prevalidated = validate_mappings(&round, &defaults).into_iter();
        for item in round {
            let prevalidated = prevalidated.next().flatten();
            let p = item.parsed;
            let key = (p.kind, p.namespace.as_str(), p.name.as_str());
            if let Some(first) = seen.get(&key) {
                diagnostics.push(Diagnostic {
                    file: p.origin.file.clone(),
                    line: p.origin.line,
                    column: p.origin.column,
                    severity: Severity::Error,
                    resource: Some(ResourceRef::new(p.kind, &p.name)),
                    field: String::new(),
                    message: format!(
                        "duplicate {} name {:?} in namespace {:?}; first declared at {first}",
                        p.kind, p.name, p.namespace
                    ),
                });
                continue;
            }
            seen.insert(key, &p.origin);
            let meta = || Meta {
                kind: p.kind,
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                origin: p.origin.clone(),
            };
            // A Mapping validated before with the same defaults: its result stands. The
            // common case of a revision that changed a few files, so it allocates nothing.
            if let Some(memo) = item
                .memo
                .as_deref()
                .and_then(Option::as_ref)
                .filter(|m| m.defaults == defaults)
            {
                config.mappings.extend(memo.mapping.iter().cloned());
                diagnostics.extend(memo.diagnostics.iter().cloned());
                continue;
            }
            let mut check = Check::of(p);
            match &p.spec {
                Spec::Mapping(spec) => {
                    let m = match prevalidated {
                        Some((m, diagnostics)) => {
                            check.diagnostics = diagnostics;
                            m
                        }
                        None => validated_mapping(p, spec, &defaults, &mut check),
                    };
                    if let Some(slot) = item.memo {
                        *slot = Some(MappingMemo {
                            defaults: defaults.clone(),
                            mapping: m.clone(),
                            diagnostics: check.diagnostics.clone(),
                        });
                    }
                    config.mappings.extend(m);
                }
                Spec::Host(spec) => {
                    let h = host(meta(), spec.clone(), p.labels.clone(), &mut check);
                    if !check.failed() {
                        config.hosts.extend(h);
                    }
                }
                Spec::Listener(spec) => {
                    let l = listener(meta(), spec.clone(), &mut check);
                    if !check.failed() {
                        config.listeners.extend(l);
                    }
                }
                Spec::TlsContext(spec) => {
                    let t = tls_context(meta(), spec.clone(), &mut check);
                    if !check.failed() {
                        config.tls_contexts.extend(t);
                    }
                }
                Spec::Module(spec) => {
                    if p.name != "ambassador" {
                        check.error_here("", "the only Module attache reads is named `ambassador`");
                    } else if let Some(first) = &config.module.meta {
                        check.error_here(
                            "",
                            format!(
                                "only one `ambassador` Module may be served; one is at {}",
                                first.origin
                            ),
                        );
                    } else {
                        let (module, module_defaults) = services::module(meta(), spec, &mut check);
                        if !check.failed() {
                            config.module = module;
                            defaults = MappingDefaults {
                                rate_limit_domain: defaults.rate_limit_domain.take(),
                                ..module_defaults
                            };
                        }
                    }
                }
                Spec::AuthService(spec) => {
                    let a = services::auth_service(meta(), spec, &mut check);
                    only_one(&mut config.auth_service, a, |a| &a.meta, &mut check);
                }
                Spec::RateLimitService(spec) => {
                    let r = services::rate_limit_service(meta(), spec, &mut check);
                    only_one(&mut config.rate_limit_service, r, |r| &r.meta, &mut check);
                    defaults.rate_limit_domain =
                        config.rate_limit_service.as_ref().map(|r| r.domain.clone());
                }
                Spec::TracingService(spec) => {
                    let t = services::tracing_service(meta(), spec, &mut check);
                    only_one(&mut config.tracing_service, t, |t| &t.meta, &mut check);
                }
                Spec::LogService(spec) => {
                    let l = services::log_service(meta(), spec, &mut check);
                    if !check.failed() {
                        config.log_services.extend(l);
                    }
                }
                Spec::LocalRateLimit(spec) => {
                    if let Some((bucket, mappings)) = rate_limits::token_bucket(spec, &mut check)
                        && !check.failed()
                    {
                        local_limits.push(PendingLimit::new(
                            LocalRateLimit {
                                meta: meta(),
                                mappings,
                                bucket,
                            },
                            spec,
                            p.base,
                        ));
                    }
                }
            }
            diagnostics.append(&mut check.diagnostics);
        }
        match next_round.take() {
            Some(late) => round = late,
            None => break,
        }
    }
    cross_check(&mut config, diagnostics);
    let limited_by = apply_local_rate_limits(&mut config, local_limits, diagnostics);
    shared_routes::check(&mut config, &limited_by, diagnostics);
    load_secrets(&mut config, secrets_dir, diagnostics);
    sort(&mut config);
    (config, defaults)
}

/// Below this many Mappings per thread, one thread validates them faster than two.
const PARALLEL_FROM_MAPPINGS: usize = 2_048;

/// The validation of every Mapping of `items` that has no memo to reuse under `defaults`,
/// by item (`None` for the others), computed on every core when there are many: a
/// Mapping's validation reads only the Mapping and `defaults`, so the results are the
/// ones [`validate`] would compute one by one.
fn validate_mappings(
    items: &[Item<'_>],
    defaults: &MappingDefaults,
) -> Vec<Option<(Option<Mapping>, Vec<Diagnostic>)>> {
    let one = |item: &Item<'_>| {
        let Spec::Mapping(spec) = &item.parsed.spec else {
            return None;
        };
        let memo = item.memo.as_deref().and_then(Option::as_ref);
        if memo.is_some_and(|m| m.defaults == *defaults) {
            return None;
        }
        let p = item.parsed;
        let mut check = Check::of(p);
        let m = validated_mapping(p, spec, defaults, &mut check);
        Some((m, check.diagnostics))
    };
    crate::parallel::map(items, PARALLEL_FROM_MAPPINGS, one)
}

/// A Mapping validated on its own under `defaults`; `None` when it has an error.
fn validated_mapping(
    p: &Parsed,
    spec: &raw::MappingSpec,
    defaults: &MappingDefaults,
    check: &mut Check<'_>,
) -> Option<Mapping> {
    let meta = Meta {
        kind: p.kind,
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        origin: p.origin.clone(),
    };
    let m = mapping(meta, spec, p.default_service.as_deref(), defaults, check);
    if check.failed() { None } else { m }
}

fn sort(config: &mut Config) {
    sort_by_meta(&mut config.mappings, |m| &m.meta);
    sort_by_meta(&mut config.hosts, |h| &h.meta);
    sort_by_meta(&mut config.listeners, |l| &l.meta);
    sort_by_meta(&mut config.tls_contexts, |t| &t.meta);
    sort_by_meta(&mut config.log_services, |l| &l.meta);
    sort_by_meta(&mut config.local_rate_limits, |l| &l.meta);
}

/// A stable sort of `items` by (namespace, name). The keys are borrowed (a key function
/// that clones would allocate twice per comparison, some 300k times for 10k Mappings)
/// and the sort moves indices: a merge sort moves every element about log2(n) times,
/// which for 100k Mappings of 400 bytes each was 700 MB of copying; here each one moves
/// twice.
fn sort_by_meta<T>(items: &mut Vec<T>, meta: impl Fn(&T) -> &Meta) {
    fn order(a: &Meta, b: &Meta) -> std::cmp::Ordering {
        (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
    }
    if items.is_sorted_by(|a, b| order(meta(a), meta(b)).is_le()) {
        return;
    }
    let mut by_key: Vec<usize> = (0..items.len()).collect();
    by_key.sort_by(|&a, &b| order(meta(&items[a]), meta(&items[b])));
    let mut slots: Vec<Option<T>> = std::mem::take(items).into_iter().map(Some).collect();
    items.reserve_exact(slots.len());
    // `by_key` is a permutation, so every slot is taken exactly once.
    items.extend(by_key.into_iter().filter_map(|i| slots[i].take()));
}

/// Keeps `new` in `slot` when the slot is empty and the resource validated; a second
/// resource of a kind the gateway has one of is an error naming the first.
fn only_one<T>(
    slot: &mut Option<T>,
    new: Option<T>,
    meta: impl Fn(&T) -> &Meta,
    check: &mut Check<'_>,
) {
    if let Some(first) = slot.as_ref() {
        let first = meta(first);
        check.error_here(
            "",
            format!(
                "only one {} may be served; {:?} at {} already is",
                first.kind, first.name, first.origin
            ),
        );
        return;
    }
    if !check.failed() {
        *slot = new;
    }
}

/// A validated LocalRateLimit, with where its `mappings` entries are written so that the
/// problems found across resources point at the entry at fault.
struct PendingLimit {
    limit: LocalRateLimit,
    /// `spec.mappings` (CRD form) or `mappings` (flat form).
    field: String,
    /// Where the `mappings` list starts.
    list_at: (u32, u32),
    /// Where each named Mapping is written (the first time, if twice).
    entries: BTreeMap<String, (u32, u32)>,
}

impl PendingLimit {
    fn new(limit: LocalRateLimit, spec: &raw::LocalRateLimitSpec, base: &str) -> Self {
        let mut entries = BTreeMap::new();
        let mut list_at = (limit.meta.origin.line, limit.meta.origin.column);
        if let Some(list) = &spec.mappings {
            list_at = (list.line, list.column);
            for m in &list.value {
                entries.entry(m.value.clone()).or_insert((m.line, m.column));
            }
        }
        PendingLimit {
            limit,
            field: format!("{base}mappings"),
            list_at,
            entries,
        }
    }

    /// An error about the entry naming `mapping` (or the list, if it names none).
    fn error(&self, mapping: &str, message: String) -> Diagnostic {
        let (line, column) = self.entries.get(mapping).copied().unwrap_or(self.list_at);
        Diagnostic {
            file: self.limit.meta.origin.file.clone(),
            line,
            column,
            severity: Severity::Error,
            resource: Some(ResourceRef::new(
                Kind::LocalRateLimit,
                &self.limit.meta.name,
            )),
            field: self.field.clone(),
            message,
        }
    }
}

/// The LocalRateLimit limiting a Mapping, by the Mapping's (namespace, name), with where
/// it names the Mapping.
type LimitedBy = BTreeMap<(String, String), Diagnostic>;

/// Gives each Mapping a LocalRateLimit names its token bucket. A LocalRateLimit naming a
/// Mapping that does not exist (or is not valid, or redirects), or a Mapping another one
/// already limits, is an error, and the LocalRateLimit is left out whole.
///
/// Returns, for each limited Mapping, a template of an error at the entry that names it
/// (see [`shared_routes`]).
fn apply_local_rate_limits(
    config: &mut Config,
    limits: Vec<PendingLimit>,
    diagnostics: &mut Vec<Diagnostic>,
) -> LimitedBy {
    let mut limited_by = LimitedBy::new();
    if limits.is_empty() {
        return limited_by;
    }
    // Mapping index by (namespace, name): a limit names a few Mappings out of thousands.
    let index: BTreeMap<(String, String), usize> = config
        .mappings
        .iter()
        .enumerate()
        .map(|(i, m)| (qualified(&m.meta), i))
        .collect();
    let mut limited: BTreeMap<(String, String), Origin> = BTreeMap::new();
    for pending in limits {
        let limit = &pending.limit;
        let mut problems = Vec::new();
        for name in &limit.mappings {
            let key = (limit.meta.namespace.clone(), name.clone());
            let problem = match index.get(&key).map(|&i| &config.mappings[i].action) {
                None => Some(format!(
                    "no valid Mapping {name:?} in namespace {:?}",
                    limit.meta.namespace
                )),
                Some(Action::Redirect(_)) => Some(format!(
                    "Mapping {name:?} redirects; there is nothing to limit"
                )),
                Some(Action::Route(r)) if r.shadow => Some(format!(
                    "Mapping {name:?} is a shadow: it has no route of its own to limit"
                )),
                Some(Action::Route(_)) => limited.get(&key).map(|first| {
                    format!("Mapping {name:?} is already limited by the LocalRateLimit at {first}")
                }),
            };
            problems.extend(problem.map(|p| pending.error(name, p)));
        }
        if !problems.is_empty() {
            diagnostics.append(&mut problems);
            continue;
        }
        for name in &limit.mappings {
            let key = (limit.meta.namespace.clone(), name.clone());
            if let Some(&i) = index.get(&key)
                && let Action::Route(route) = &mut config.mappings[i].action
            {
                route.policy.local_rate_limit = Some(limit.bucket);
            }
            limited.insert(key.clone(), limit.meta.origin.clone());
            limited_by.insert(key, pending.error(name, String::new()));
        }
        config.local_rate_limits.push(pending.limit);
    }
    limited_by
}

// === Mapping ===

fn mapping(
    meta: Meta,
    spec: &raw::MappingSpec,
    default_service: Option<&str>,
    defaults: &MappingDefaults,
    check: &mut Check<'_>,
) -> Option<Mapping> {
    let hostname = match (&spec.hostname, &spec.host) {
        (Some(_), Some(host)) => {
            check.error(
                host,
                "host",
                "give `hostname` or `host`, not both (`host` is the v2 spelling)",
            );
            HostPattern::Any
        }
        (Some(h), None) => host_pattern(h, "hostname", check),
        (None, Some(h)) => host_pattern(h, "host", check),
        (None, None) => HostPattern::Any,
    };
    let path = path_match(spec, check);
    let headers = matches(
        &spec.headers,
        &spec.regex_headers,
        ("headers", "regex_headers"),
        NameCase::Insensitive,
        check,
    );
    let query_parameters = matches(
        &spec.query_parameters,
        &spec.regex_query_parameters,
        ("query_parameters", "regex_query_parameters"),
        NameCase::Sensitive,
        check,
    );
    let method = spec.method.as_ref().map(|m| {
        if !is_token(&m.value) {
            check.error(m, "method", format!("{:?} is not an HTTP method", m.value));
        }
        m.value.to_ascii_uppercase()
    });
    let action = if spec.host_redirect == Some(true) {
        routing_only_fields(spec, check);
        redirect(spec, check).map(Action::Redirect)
    } else {
        for (field, value) in [
            ("path_redirect", &spec.path_redirect),
            ("prefix_redirect", &spec.prefix_redirect),
        ] {
            if let Some(v) = value {
                check.error(v, field, "only takes effect with `host_redirect: true`");
            }
        }
        if let Some(code) = &spec.redirect_response_code {
            check.error(
                code,
                "redirect_response_code",
                "only takes effect with `host_redirect: true`",
            );
        }
        shadow_route_fields(spec, check);
        route(spec, &meta, default_service, defaults, check).map(|r| Action::Route(Box::new(r)))
    };
    if let Some(w) = &spec.weight
        && w.value > 100
    {
        check.error(
            w,
            "weight",
            format!("{} is over 100; weights are percentages", w.value),
        );
    }
    let add_request_headers =
        headers_to_add(&spec.add_request_headers, "add_request_headers", check);
    let add_response_headers =
        headers_to_add(&spec.add_response_headers, "add_response_headers", check);
    let remove_request_headers = headers_to_remove(
        &spec.remove_request_headers,
        "remove_request_headers",
        check,
    );
    let remove_response_headers = headers_to_remove(
        &spec.remove_response_headers,
        "remove_response_headers",
        check,
    );
    Some(Mapping {
        meta,
        hostname,
        path: path?,
        case_sensitive: spec.case_sensitive.unwrap_or(true),
        method,
        headers,
        query_parameters,
        action: action?,
        weight: spec.weight.as_ref().map(|w| w.value),
        precedence: spec.precedence.unwrap_or(0),
        add_request_headers,
        remove_request_headers,
        add_response_headers,
        remove_response_headers,
        bypass_auth: spec.bypass_auth.unwrap_or(false),
    })
}

/// A redirect never reaches an upstream: the fields that shape forwarding are mistakes.
fn routing_only_fields(spec: &raw::MappingSpec, check: &mut Check<'_>) {
    let set = [
        ("retry_policy", spec.retry_policy.is_some()),
        ("circuit_breakers", spec.circuit_breakers.is_some()),
        ("outlier_detection", spec.outlier_detection.is_some()),
        ("cors", spec.cors.is_some()),
        ("shadow", spec.shadow.is_some()),
        ("load_balancer", spec.load_balancer.is_some()),
        ("labels", !spec.labels.is_empty()),
        ("keepalive", spec.keepalive.is_some()),
        (
            "cluster_idle_timeout_ms",
            spec.cluster_idle_timeout_ms.is_some(),
        ),
    ];
    for (field, _) in set.iter().filter(|(_, set)| *set) {
        check.error_here(field, "does not apply to a `host_redirect` Mapping");
    }
}

/// A shadow's requests are copies whose answers are dropped: the route settings of the
/// Mappings it mirrors apply, never its own. Its cluster settings (breakers, outlier
/// detection, keepalive) do apply, to the mirror's cluster.
fn shadow_route_fields(spec: &raw::MappingSpec, check: &mut Check<'_>) {
    if spec.shadow != Some(true) {
        return;
    }
    let set = [
        ("retry_policy", spec.retry_policy.is_some()),
        ("cors", spec.cors.is_some()),
        ("labels", !spec.labels.is_empty()),
        ("bypass_auth", spec.bypass_auth.is_some()),
        ("timeout_ms", spec.timeout_ms.is_some()),
    ];
    for (field, _) in set.iter().filter(|(_, set)| *set) {
        let (line, column) = check.spec_at;
        check.at(
            Severity::Warning,
            line,
            column,
            field,
            "has no effect on a `shadow` Mapping: the mirrored Mappings' route settings apply"
                .to_owned(),
        );
    }
}

fn path_match(spec: &raw::MappingSpec, check: &mut Check<'_>) -> Option<PathMatch> {
    let Some(prefix) = &spec.prefix else {
        check.error_here("prefix", "missing required field `prefix`");
        return None;
    };
    let regex = spec.prefix_regex.unwrap_or(false);
    let exact = spec.prefix_exact.unwrap_or(false);
    if regex && exact {
        check.error(
            prefix,
            "prefix_exact",
            "`prefix_regex` and `prefix_exact` exclude each other",
        );
        return None;
    }
    if regex {
        check.regex(prefix, "prefix");
        return Some(PathMatch::Regex(prefix.value.clone()));
    }
    if !prefix.value.starts_with('/') {
        check.error(prefix, "prefix", "must start with \"/\"");
        return None;
    }
    if prefix
        .value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        check.error(
            prefix,
            "prefix",
            "must not contain whitespace or control characters",
        );
        return None;
    }
    Some(if exact {
        PathMatch::Exact(prefix.value.clone())
    } else {
        PathMatch::Prefix(prefix.value.clone())
    })
}

/// Whether Envoy compares a match's names regardless of case.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NameCase {
    /// Header names (HTTP/2 and Envoy lower-case them): stored lower-case.
    Insensitive,
    /// Query parameter names: Envoy compares them as written, so `userId` must stay
    /// `userId` or it never matches `?userId=42`.
    Sensitive,
}

fn matches(
    exact: &BTreeMap<String, At<raw::MatchValue>>,
    regexes: &BTreeMap<String, At<String>>,
    (exact_field, regex_field): (&str, &str),
    case: NameCase,
    check: &mut Check<'_>,
) -> Vec<KeyValueMatch> {
    let name_of = |name: &str| match case {
        NameCase::Insensitive => name.to_ascii_lowercase(),
        NameCase::Sensitive => name.to_owned(),
    };
    let mut out = Vec::new();
    for (name, value) in exact {
        if !is_token(name) {
            check.error(value, exact_field, format!("{name:?} is not a valid name"));
        }
        out.push(KeyValueMatch {
            name: name_of(name),
            value: match &value.value {
                raw::MatchValue::Present => ValueMatch::Present,
                raw::MatchValue::Exact(s) => ValueMatch::Exact(s.clone()),
            },
        });
    }
    for (name, value) in regexes {
        if !is_token(name) {
            check.error(value, regex_field, format!("{name:?} is not a valid name"));
        }
        if exact.contains_key(name) {
            check.error(
                value,
                regex_field,
                format!("{name:?} is matched in `{exact_field}` too"),
            );
        }
        check.regex(value, &format!("{regex_field}.{name}"));
        out.push(KeyValueMatch {
            name: name_of(name),
            value: ValueMatch::Regex(value.value.clone()),
        });
    }
    out.sort();
    out
}

fn route(
    spec: &raw::MappingSpec,
    meta: &Meta,
    default_service: Option<&str>,
    defaults: &MappingDefaults,
    check: &mut Check<'_>,
) -> Option<Route> {
    let service_text = match (&spec.service, default_service) {
        (Some(s), _) => s.clone(),
        (None, Some(default)) => At {
            value: default.to_owned(),
            line: 0,
            column: 0,
        },
        (None, None) => {
            check.error_here("service", "missing required field `service`");
            return None;
        }
    };
    let parsed = match parse_service(&service_text.value, &meta.namespace) {
        Ok(s) => s,
        Err(why) => {
            check.error(&service_text, "service", why);
            return None;
        }
    };
    let tls = match (&spec.tls, parsed.scheme_tls) {
        (
            Some(At {
                value: raw::TlsSetting::Enabled(false),
                ..
            }),
            Some(true),
        ) => {
            check.error(
                &service_text,
                "tls",
                "`tls: false` contradicts the `https://` service",
            );
            UpstreamTls::Plain
        }
        (
            Some(At {
                value: raw::TlsSetting::Enabled(true) | raw::TlsSetting::Context(_),
                ..
            }),
            Some(false),
        ) => {
            check.error(
                &service_text,
                "tls",
                "`tls` contradicts the `http://` service: use `https://` (or drop the scheme)",
            );
            UpstreamTls::Plain
        }
        (
            Some(At {
                value: raw::TlsSetting::Enabled(true),
                ..
            }),
            _,
        )
        | (None, Some(true)) => UpstreamTls::Tls,
        (
            Some(At {
                value: raw::TlsSetting::Context(name),
                ..
            }),
            _,
        ) => UpstreamTls::Context(ContextRef {
            // Resolved to the TLSContext's own namespace once all are known (`tls_refs`).
            namespace: meta.namespace.clone(),
            name: name.clone(),
        }),
        _ => UpstreamTls::Plain,
    };
    let connect_timeout_ms = match &spec.connect_timeout_ms {
        Some(t) if t.value == 0 => {
            check.error(t, "connect_timeout_ms", "must be above 0");
            DEFAULT_CONNECT_TIMEOUT_MS
        }
        Some(t) => t.value,
        None => DEFAULT_CONNECT_TIMEOUT_MS,
    };
    let rewrite = match (&spec.rewrite, &spec.regex_rewrite) {
        (Some(r), Some(_)) => {
            check.error(r, "rewrite", "give `rewrite` or `regex_rewrite`, not both");
            Rewrite::Keep
        }
        (_, Some(rr)) => {
            let pattern = At {
                value: rr.value.pattern.clone(),
                line: rr.line,
                column: rr.column,
            };
            check.regex(&pattern, "regex_rewrite.pattern");
            Rewrite::Regex {
                pattern: rr.value.pattern.clone(),
                substitution: rr.value.substitution.clone(),
            }
        }
        (Some(r), None) if r.value.is_empty() => Rewrite::Keep,
        (Some(r), None) => {
            if !r.value.starts_with('/') {
                check.error(
                    r,
                    "rewrite",
                    "must start with \"/\" (or be \"\" to keep the path)",
                );
            }
            Rewrite::Prefix(r.value.clone())
        }
        (None, None) => Rewrite::Prefix("/".to_owned()),
    };
    let mut upgrades: Vec<String> = spec
        .allow_upgrade
        .iter()
        .flatten()
        .map(|u| {
            if !is_token(&u.value) {
                check.error(
                    u,
                    "allow_upgrade",
                    format!("{:?} is not an upgrade protocol name", u.value),
                );
            }
            u.value.to_ascii_lowercase()
        })
        .collect();
    if spec.use_websocket == Some(true) {
        upgrades.push("websocket".to_owned());
    }
    upgrades.sort();
    upgrades.dedup();
    if let Some(h) = &spec.host_rewrite
        && (h.value.is_empty() || h.value.contains(char::is_whitespace))
    {
        check.error(h, "host_rewrite", "must be a host name");
    }
    let (upstream, policy) = mapping_policies(spec, defaults, check);
    Some(Route {
        target: Target {
            service: parsed.service,
            tls,
            http2: spec.grpc.unwrap_or(false),
            connect_timeout_ms,
            policy: upstream,
        },
        rewrite,
        timeout_ms: spec
            .timeout_ms
            .or(defaults.timeout_ms)
            .unwrap_or(DEFAULT_TIMEOUT_MS),
        idle_timeout_ms: spec.idle_timeout_ms,
        upgrades,
        host_rewrite: spec.host_rewrite.as_ref().map(|h| h.value.clone()),
        shadow: spec.shadow.unwrap_or(false),
        policy,
    })
}

/// The cluster and route policies of a routing Mapping: its own fields, else the
/// Module's defaults.
fn mapping_policies(
    spec: &raw::MappingSpec,
    defaults: &MappingDefaults,
    check: &mut Check<'_>,
) -> (UpstreamPolicy, RoutePolicy) {
    let retry = match &spec.retry_policy {
        Some(r) => policy::retry_policy(r, "retry_policy", check),
        None => defaults.retry.clone(),
    };
    let circuit_breakers = match &spec.circuit_breakers {
        Some(b) => policy::circuit_breakers(b, "circuit_breakers", check),
        None => defaults.circuit_breakers.clone(),
    };
    let load_balancer = match &spec.load_balancer {
        Some(l) => policy::load_balancer(l, "load_balancer", check),
        None => defaults.load_balancer.clone(),
    };
    let (lb_policy, hash) = load_balancer.unwrap_or_default();
    let cors = match &spec.cors {
        Some(c) => Some(policy::cors(c, "cors", check)),
        None => defaults.cors.clone(),
    };
    let idle_timeout_ms = match &spec.cluster_idle_timeout_ms {
        Some(t) if t.value == 0 => {
            check.error(t, "cluster_idle_timeout_ms", "must be above 0");
            None
        }
        Some(t) => Some(t.value),
        None => defaults.idle_timeout_ms,
    };
    let upstream = UpstreamPolicy {
        circuit_breakers,
        outlier_detection: spec
            .outlier_detection
            .as_ref()
            .map(|o| policy::outlier_detection(o, "outlier_detection", check)),
        lb_policy,
        keepalive: spec.keepalive.as_ref().map(|k| policy::keepalive(k, check)),
        idle_timeout_ms,
    };
    let rate_limits =
        rate_limits::labels(&spec.labels, defaults.rate_limit_domain.as_deref(), check);
    let route = RoutePolicy {
        retry,
        cors,
        hash,
        rate_limits,
        local_rate_limit: None,
    };
    (upstream, route)
}

fn redirect(spec: &raw::MappingSpec, check: &mut Check<'_>) -> Option<Redirect> {
    let host = spec.service.as_ref().map(|s| {
        let host = s
            .value
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        if host.is_empty() || host.contains(['/', ' ']) {
            check.error(
                s,
                "service",
                "with `host_redirect: true`, `service` is the host to redirect to",
            );
        }
        host.to_owned()
    });
    if let (Some(p), Some(_)) = (&spec.path_redirect, &spec.prefix_redirect) {
        check.error(
            p,
            "path_redirect",
            "give `path_redirect` or `prefix_redirect`, not both",
        );
    }
    for (field, value) in [
        ("path_redirect", &spec.path_redirect),
        ("prefix_redirect", &spec.prefix_redirect),
    ] {
        if let Some(v) = value
            && !v.value.starts_with('/')
        {
            check.error(v, field, "must start with \"/\"");
        }
    }
    let response_code = match &spec.redirect_response_code {
        Some(c) if ![301, 302, 303, 307, 308].contains(&c.value) => {
            check.error(
                c,
                "redirect_response_code",
                format!(
                    "{} is not a redirect; use 301, 302, 303, 307 or 308",
                    c.value
                ),
            );
            301
        }
        Some(c) => c.value,
        None => 301,
    };
    Some(Redirect {
        host,
        path: spec.path_redirect.as_ref().map(|p| p.value.clone()),
        prefix: spec.prefix_redirect.as_ref().map(|p| p.value.clone()),
        response_code,
    })
}

fn headers_to_add(
    map: &BTreeMap<String, At<raw::HeaderValue>>,
    field: &str,
    check: &mut Check<'_>,
) -> Vec<HeaderToAdd> {
    map.iter()
        .map(|(name, v)| {
            if !is_token(name) || name.starts_with(':') {
                check.error(
                    v,
                    field,
                    format!("{name:?} is not a header name that can be set"),
                );
            }
            if v.value.value.contains(['\r', '\n', '\0']) {
                check.error(
                    v,
                    field,
                    format!("the value of {name:?} contains a line break or NUL"),
                );
            }
            HeaderToAdd {
                name: name.to_ascii_lowercase(),
                value: v.value.value.clone(),
                append: v.value.append,
            }
        })
        .collect()
}

fn headers_to_remove(
    list: &Option<At<raw::OneOrMany>>,
    field: &str,
    check: &mut Check<'_>,
) -> Vec<String> {
    let Some(list) = list else {
        return Vec::new();
    };
    let mut out: Vec<String> = list
        .value
        .0
        .iter()
        .map(|name| {
            if !is_token(name) || name.starts_with(':') {
                check.error(
                    list,
                    field,
                    format!("{name:?} is not a header name that can be removed"),
                );
            }
            name.to_ascii_lowercase()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// An RFC 9110 token: header names, methods, upgrade protocols.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

// === Services ===

/// A parsed `service` value.
#[derive(Debug, PartialEq)]
pub struct ParsedService {
    pub service: Service,
    /// `Some(true)` for `https://`, `Some(false)` for `http://`.
    pub scheme_tls: Option<bool>,
}

/// Parses Emissary's `service` forms: `name`, `name.namespace`, `name[.namespace]:port`
/// (a number or a port name), `host:port`, `http(s)://host:port`.
///
/// Which names are Kubernetes Services: a name with at most one dot, or one ending in
/// `.svc` / `.svc.cluster.local`. IP addresses, `localhost` and names with two or more
/// dots are reached directly (STATIC or STRICT_DNS clusters).
///
/// # Errors
///
/// A message saying what is wrong with the value.
pub fn parse_service(text: &str, namespace: &str) -> Result<ParsedService, String> {
    let (rest, scheme_tls) = if let Some(r) = text.strip_prefix("https://") {
        (r, Some(true))
    } else if let Some(r) = text.strip_prefix("http://") {
        (r, Some(false))
    } else if text.contains("://") {
        return Err(format!(
            "{text:?}: only http:// and https:// services are supported"
        ));
    } else {
        (text, None)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err("must name a service".to_owned());
    }
    if rest.contains(['/', ' ', '?', '#', '@']) {
        return Err(format!(
            "{text:?} is not `host[:port]`: paths and credentials do not belong in `service`"
        ));
    }
    // `[v6]:port`, `host:port`, or a bare host.
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (addr, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: unclosed `[`"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("{text:?}: expected `:port` after `]`")),
        };
        (addr, port)
    } else if rest.matches(':').count() > 1 {
        (rest, None) // a bare IPv6 address
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port_number = |p: &str| -> Result<u16, String> {
        match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(format!("port {n} is out of range 1-65535")),
            Err(_) => Err(format!("{p:?} is not a port number")),
        }
    };
    let default_port = if scheme_tls == Some(true) { 443 } else { 80 };
    if let Ok(ip) = host.parse::<IpAddr>() {
        let port = port.map(port_number).transpose()?.unwrap_or(default_port);
        return Ok(ParsedService {
            service: Service::Address {
                host: ip.to_string(),
                port,
            },
            scheme_tls,
        });
    }
    if !valid_dns_name(host) {
        return Err(format!("{host:?} is not a valid host name"));
    }
    let host = host.to_ascii_lowercase();
    let kube_name = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(&host);
    let is_kube = host != "localhost" && (kube_name != host || host.matches('.').count() <= 1);
    if is_kube {
        let (name, ns) = match kube_name.split_once('.') {
            Some((n, ns)) => (n, ns),
            None => (kube_name, namespace),
        };
        if name.contains('.') || ns.contains('.') {
            return Err(format!("{host:?} is not `name.namespace`"));
        }
        let port = match port {
            None => None,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(ServicePort::Number(port_number(p)?))
            }
            Some(p) if valid_dns_label(p) => Some(ServicePort::Name(p.to_owned())),
            Some(p) => return Err(format!("{p:?} is neither a port number nor a port name")),
        };
        return Ok(ParsedService {
            service: Service::Kubernetes {
                name: name.to_owned(),
                namespace: ns.to_owned(),
                port,
            },
            scheme_tls,
        });
    }
    let port = port.map(port_number).transpose()?.unwrap_or(default_port);
    Ok(ParsedService {
        service: Service::Address { host, port },
        scheme_tls,
    })
}

fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn valid_dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(valid_dns_label)
}

fn host_pattern(at: &At<String>, field: &str, check: &mut Check<'_>) -> HostPattern {
    match parse_host_pattern(&at.value) {
        Ok(p) => p,
        Err(why) => {
            check.error(at, field, why);
            HostPattern::Any
        }
    }
}

/// `*`, `*.example.com` or an exact host name (a `:port` is not part of it).
///
/// # Errors
///
/// A message saying what is wrong.
pub fn parse_host_pattern(text: &str) -> Result<HostPattern, String> {
    if text == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(suffix) = text.strip_prefix("*.") {
        return if valid_dns_name(suffix) {
            Ok(HostPattern::Suffix(format!(
                ".{}",
                suffix.to_ascii_lowercase()
            )))
        } else {
            Err(format!(
                "{text:?} is not a valid wildcard host (`*.example.com`)"
            ))
        };
    }
    if text.contains('*') {
        return Err(format!(
            "{text:?}: `*` is only allowed alone or as the first label (`*.example.com`)"
        ));
    }
    if text.contains(':') {
        return Err(format!("{text:?}: give the host name without a port"));
    }
    if valid_dns_name(text) || text.parse::<IpAddr>().is_ok() {
        Ok(HostPattern::Exact(text.to_ascii_lowercase()))
    } else {
        Err(format!("{text:?} is not a valid host name"))
    }
}

// === Host, Listener, TLSContext ===

fn host(
    meta: Meta,
    spec: raw::HostSpec,
    labels: BTreeMap<String, String>,
    check: &mut Check<'_>,
) -> Option<Host> {
    let hostname = match &spec.hostname {
        Some(h) => host_pattern(h, "hostname", check),
        None => HostPattern::Any,
    };
    if let Some(acme) = &spec.acme_provider
        && !acme.value.authority.eq_ignore_ascii_case("none")
    {
        check.error(
            acme,
            "acmeProvider.authority",
            "attache does not run ACME; set `authority: none` and give a `tlsSecret`",
        );
    }
    let tls_secret = spec.tls_secret.as_ref().map(|s| {
        check_secret_name(&s.value.name, s, "tlsSecret.name", check);
        s.value.name.clone()
    });
    let action = spec
        .request_policy
        .as_ref()
        .and_then(|p| p.insecure.as_ref())
        .and_then(|i| i.action.as_ref());
    let insecure_action = match action {
        // Emissary's default. It only matters for a Host that terminates TLS (a cleartext
        // one serves everything), and whether it does is known only once TLSContexts are
        // (one may list its hostname), so it cannot depend on `tlsSecret` here.
        None => InsecureAction::Redirect,
        Some(a) => match a.value.as_str() {
            "Redirect" => InsecureAction::Redirect,
            "Route" => InsecureAction::Route,
            "Reject" => InsecureAction::Reject,
            other => {
                check.error(
                    a,
                    "requestPolicy.insecure.action",
                    format!("{other:?} is not one of Redirect, Route, Reject"),
                );
                InsecureAction::Redirect
            }
        },
    };
    Some(Host {
        meta,
        hostname,
        tls_secret,
        tls_context: spec.tls_context.map(|c| c.value.name),
        insecure_action,
        labels,
    })
}

fn check_secret_name<T>(name: &str, at: &At<T>, field: &str, check: &mut Check<'_>) {
    // Secret names become directory names under --secrets-dir: no path tricks.
    if !valid_dns_name(name) {
        check.error(at, field, format!("{name:?} is not a valid Secret name"));
    }
}

fn listener(meta: Meta, spec: raw::ListenerSpec, check: &mut Check<'_>) -> Option<Listener> {
    let port = match &spec.port {
        None => {
            check.error_here("port", "missing required field `port`");
            return None;
        }
        Some(p) if !(1..=65535).contains(&p.value) => {
            check.error(
                p,
                "port",
                format!("port {} is out of range 1-65535", p.value),
            );
            return None;
        }
        Some(p) => p.value as u16,
    };
    let protocol = match &spec.protocol {
        None => {
            check.error_here(
                "protocol",
                "missing required field `protocol` (HTTP, HTTPS or HTTPSPROXY)",
            );
            return None;
        }
        Some(p) => match p.value.as_str() {
            "HTTP" => Protocol::Http,
            "HTTPS" => Protocol::Https,
            "HTTPSPROXY" => Protocol::HttpsProxy,
            "HTTPPROXY" | "TCP" | "TLS" | "UDP" => {
                check.error(
                    p,
                    "protocol",
                    format!("{} listeners are not supported by attache yet", p.value),
                );
                return None;
            }
            other => {
                check.error(
                    p,
                    "protocol",
                    format!("{other:?} is not one of HTTP, HTTPS, HTTPSPROXY"),
                );
                return None;
            }
        },
    };
    let security_model = match &spec.security_model {
        None => SecurityModel::Xfp,
        Some(s) => match s.value.as_str() {
            "XFP" => SecurityModel::Xfp,
            "SECURE" => SecurityModel::Secure,
            "INSECURE" => SecurityModel::Insecure,
            other => {
                check.error(
                    s,
                    "securityModel",
                    format!("{other:?} is not one of XFP, SECURE, INSECURE"),
                );
                return None;
            }
        },
    };
    let host_binding = match &spec.host_binding {
        None => HostBinding::All,
        Some(b) => match (&b.namespace, &b.selector) {
            (Some(_), Some(_)) => {
                check.error_here("hostBinding", "give `namespace` or `selector`, not both");
                return None;
            }
            (Some(ns), None) => match ns.from.value.as_str() {
                "ALL" => HostBinding::All,
                "SELF" => HostBinding::SameNamespace,
                other => {
                    check.error(
                        &ns.from,
                        "hostBinding.namespace.from",
                        format!("{other:?} is not one of ALL, SELF"),
                    );
                    return None;
                }
            },
            (None, Some(sel)) => HostBinding::Labels(sel.match_labels.clone()),
            (None, None) => HostBinding::All,
        },
    };
    Some(Listener {
        meta,
        port,
        protocol,
        security_model,
        host_binding,
    })
}

fn tls_version(at: &Option<At<String>>, field: &str, check: &mut Check<'_>) -> Option<TlsVersion> {
    let at = at.as_ref()?;
    match at.value.as_str() {
        "v1.0" => Some(TlsVersion::V1_0),
        "v1.1" => Some(TlsVersion::V1_1),
        "v1.2" => Some(TlsVersion::V1_2),
        "v1.3" => Some(TlsVersion::V1_3),
        other => {
            check.error(
                at,
                field,
                format!("{other:?} is not one of v1.0, v1.1, v1.2, v1.3"),
            );
            None
        }
    }
}

fn tls_context(meta: Meta, spec: raw::TlsContextSpec, check: &mut Check<'_>) -> Option<TlsContext> {
    let min = tls_version(&spec.min_tls_version, "min_tls_version", check);
    let max = tls_version(&spec.max_tls_version, "max_tls_version", check);
    if let (Some(lo), Some(hi), Some(at)) = (min, max, &spec.min_tls_version)
        && lo > hi
    {
        check.error(at, "min_tls_version", "is above max_tls_version");
    }
    let hosts = spec
        .hosts
        .iter()
        .map(|h| {
            if parse_host_pattern(&h.value).is_err() {
                check.error(
                    h,
                    "hosts",
                    format!("{:?} is not a valid host name", h.value),
                );
            }
            h.value.to_ascii_lowercase()
        })
        .collect();
    if let Some(s) = &spec.secret {
        check_secret_name(&s.value, s, "secret", check);
    }
    for c in &spec.cipher_suites {
        if c.value.is_empty() || c.value.contains(char::is_whitespace) {
            check.error(
                c,
                "cipher_suites",
                format!("{:?} is not a cipher suite name", c.value),
            );
        }
    }
    let peer_validation = peer_validation(&spec, check);
    let sni = spec.sni.as_ref().map(|s| {
        // RFC 6066 section 3: SNI holds a DNS host name, never an IP literal; an IP
        // service is checked against its IP SAN without any `sni`.
        if !valid_dns_name(&s.value) || s.value.parse::<IpAddr>().is_ok() {
            check.error(
                s,
                "sni",
                format!(
                    "{:?} is not a DNS host name (SNI cannot carry an IP address)",
                    s.value
                ),
            );
        }
        s.value.to_ascii_lowercase()
    });
    Some(TlsContext {
        meta,
        hosts,
        secret: spec.secret.map(|s| s.value),
        min_tls_version: min,
        max_tls_version: max,
        alpn_protocols: spec.alpn_protocols.map(|a| a.value.0).unwrap_or_default(),
        cipher_suites: spec.cipher_suites.into_iter().map(|c| c.value).collect(),
        peer_validation,
        sni,
    })
}

/// `ca_secret` and `cert_required`: a CA to verify peers against, and whether clients
/// must present a certificate. Requiring one with nothing to verify it against would
/// let any certificate through, so that is an error rather than a silent no-op.
fn peer_validation(spec: &raw::TlsContextSpec, check: &mut Check<'_>) -> Option<PeerValidation> {
    let cert_required = spec.cert_required.as_ref().is_some_and(|c| c.value);
    match (&spec.ca_secret, &spec.cert_required) {
        (Some(ca), _) => {
            check_secret_name(&ca.value, ca, "ca_secret", check);
            Some(PeerValidation {
                ca_secret: ca.value.clone(),
                cert_required,
            })
        }
        (None, Some(required)) if required.value => {
            check.error(
                required,
                "cert_required",
                "needs `ca_secret`: client certificates cannot be required without a CA to \
                 verify them against",
            );
            None
        }
        (None, _) => None,
    }
}

// === Across resources ===

fn diag_at(
    origin: &Origin,
    severity: Severity,
    kind: Kind,
    name: &str,
    field: &str,
    message: String,
) -> Diagnostic {
    Diagnostic {
        file: origin.file.clone(),
        line: origin.line,
        column: origin.column,
        severity,
        resource: Some(ResourceRef::new(kind, name)),
        field: field.to_owned(),
        message,
    }
}

fn cross_check(config: &mut Config, diagnostics: &mut Vec<Diagnostic>) {
    tls_refs::resolve(config, diagnostics);
    let mut bad_hosts = BTreeSet::new();
    let mut bad_mappings = BTreeSet::new();
    // bypass_auth with nothing to bypass: harmless, but likely a missing AuthService.
    if config.auth_service.is_none() {
        for m in config.mappings.iter().filter(|m| m.bypass_auth) {
            diagnostics.push(bypass_without_auth(m));
        }
    }
    // Listeners on one port.
    let mut ports: BTreeMap<u16, &Listener> = BTreeMap::new();
    let mut bad_listeners = BTreeSet::new();
    for l in &config.listeners {
        if let Some(first) = ports.insert(l.port, l) {
            diagnostics.push(diag_at(
                &l.meta.origin,
                Severity::Error,
                Kind::Listener,
                &l.meta.name,
                "port",
                format!(
                    "port {} is already used by Listener {:?} at {}",
                    l.port, first.meta.name, first.meta.origin
                ),
            ));
            bad_listeners.insert(qualified(&l.meta));
        }
    }
    // Hosts with the same hostname would make two virtual hosts with one domain.
    let mut hostnames: BTreeMap<&HostPattern, &Host> = BTreeMap::new();
    for h in &config.hosts {
        if let Some(first) = hostnames.insert(&h.hostname, h) {
            diagnostics.push(diag_at(
                &h.meta.origin,
                Severity::Error,
                Kind::Host,
                &h.meta.name,
                "hostname",
                format!(
                    "hostname {} is already served by Host {:?} at {}",
                    h.hostname, first.meta.name, first.meta.origin
                ),
            ));
            bad_hosts.insert(qualified(&h.meta));
        }
    }
    // Mappings that no Host serves never receive traffic: almost always a typo.
    if !config.hosts.is_empty() {
        for m in &config.mappings {
            if !served(config, m) {
                let served: Vec<String> = config
                    .hosts
                    .iter()
                    .map(|h| h.hostname.to_string())
                    .collect();
                diagnostics.push(diag_at(
                    &m.meta.origin,
                    Severity::Error,
                    Kind::Mapping,
                    &m.meta.name,
                    "hostname",
                    format!(
                        "no Host serves {}; Hosts serve {}",
                        m.hostname,
                        served.join(", ")
                    ),
                ));
                bad_mappings.insert(qualified(&m.meta));
            }
        }
    }
    same_match(config.mappings.iter(), diagnostics, &mut bad_mappings);
    config
        .hosts
        .retain(|h| !bad_hosts.contains(&qualified(&h.meta)));
    config
        .listeners
        .retain(|l| !bad_listeners.contains(&qualified(&l.meta)));
    if !bad_mappings.is_empty() {
        config
            .mappings
            .retain(|m| !bad_mappings.contains(&qualified(&m.meta)));
    }
}

/// Mappings with the same match: a shadow with nothing to mirror, routing Mappings that
/// split traffic evenly because none has a weight (both warnings), weights over 100 (an
/// error: those Mappings go in `bad`). `mappings` in the order they were validated
/// (file, then document), which decides the "first" a warning names. Every diagnostic
/// is about one match group, so a revision that changes a few Mappings can run this over
/// their groups alone (`config::Cache`).
pub(super) fn same_match<'m>(
    mappings: impl Iterator<Item = &'m Mapping> + Clone,
    diagnostics: &mut Vec<Diagnostic>,
    bad: &mut BTreeSet<(String, String)>,
) {
    // Same match, no weights: traffic is split evenly, which is rarely what was meant.
    // Shadows do not compete: they mirror what the others serve.
    let is_shadow = |m: &Mapping| matches!(&m.action, Action::Route(r) if r.shadow);
    let mut groups: BTreeMap<MatchKey, Vec<&Mapping>> = BTreeMap::new();
    for m in mappings.clone().filter(|m| !is_shadow(m)) {
        groups.entry(MatchKey::of(m)).or_default().push(m);
    }
    for m in mappings.filter(|m| is_shadow(m)) {
        let served = groups
            .get(&MatchKey::of(m))
            .is_some_and(|g| g.iter().any(|o| matches!(o.action, Action::Route(_))));
        if !served {
            diagnostics.push(diag_at(
                &m.meta.origin,
                Severity::Warning,
                Kind::Mapping,
                &m.meta.name,
                "shadow",
                "no routing Mapping has this Mapping's match: there is nothing to mirror"
                    .to_owned(),
            ));
        }
    }
    for group in groups.values().filter(|g| g.len() > 1) {
        if group.iter().all(|m| m.weight.is_none()) {
            let first = group[0];
            for other in &group[1..] {
                diagnostics.push(diag_at(&other.meta.origin, Severity::Warning, Kind::Mapping, &other.meta.name, "", format!("same match as Mapping {:?} at {} and neither has a `weight`: traffic is split evenly between them", first.meta.name, first.meta.origin)));
            }
        } else {
            let total: u32 = group.iter().filter_map(|m| m.weight).sum();
            if total > 100 {
                let first = group[0];
                diagnostics.push(diag_at(
                    &first.meta.origin,
                    Severity::Error,
                    Kind::Mapping,
                    &first.meta.name,
                    "weight",
                    format!(
                        "weights of the {} Mappings with this match add up to {total}, over 100",
                        group.len()
                    ),
                ));
                for m in group {
                    bad.insert(qualified(&m.meta));
                }
            }
        }
    }
}

/// The warning for a Mapping with `bypass_auth` in a gateway with no AuthService.
pub(super) fn bypass_without_auth(m: &Mapping) -> Diagnostic {
    diag_at(
        &m.meta.origin,
        Severity::Warning,
        Kind::Mapping,
        &m.meta.name,
        "bypass_auth",
        "there is no AuthService: bypass_auth has no effect".to_owned(),
    )
}

/// Whether some Host of `config` serves `m` (with no Host at all, every Mapping is).
pub(super) fn served(config: &Config, m: &Mapping) -> bool {
    config.hosts.is_empty()
        || config
            .hosts
            .iter()
            .any(|h| h.hostname.overlaps(&m.hostname))
}

/// Whether `a` and `b` compete for the same requests (one match group).
pub(super) fn same_match_key(a: &Mapping, b: &Mapping) -> bool {
    MatchKey::of(a) == MatchKey::of(b)
}

/// Whether reading the secrets `config` holds again gives exactly what it holds: the
/// certificates are files outside the revision, so a revision that changes only
/// Mappings still reads them, as a whole load would.
pub(super) fn secrets_unchanged(config: &Config, secrets_dir: Option<&Path>) -> bool {
    if secrets_dir.is_none() {
        return config.secrets.is_empty() && config.ca_bundles.is_empty();
    }
    let mut reread = Config {
        hosts: config.hosts.clone(),
        tls_contexts: config.tls_contexts.clone(),
        ..Config::default()
    };
    let mut diagnostics = Vec::new();
    load_secrets(&mut reread, secrets_dir, &mut diagnostics);
    !diagnostics.iter().any(Diagnostic::is_error)
        && reread.secrets == config.secrets
        && reread.ca_bundles == config.ca_bundles
}

/// A resource's identity among those of its kind: names are unique per namespace only, so
/// leaving out a bad one by name alone would take its namesakes in other namespaces too.
fn qualified(meta: &Meta) -> (String, String) {
    (meta.namespace.clone(), meta.name.clone())
}

/// What makes two Mappings compete for the same requests. Borrowed: one is made per
/// Mapping, and copying every match of 10k Mappings cost more than comparing them.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct MatchKey<'m> {
    hostname: &'m HostPattern,
    path: &'m PathMatch,
    case_sensitive: bool,
    method: Option<&'m str>,
    headers: &'m [KeyValueMatch],
    query: &'m [KeyValueMatch],
    precedence: i32,
}

impl<'m> MatchKey<'m> {
    fn of(m: &'m Mapping) -> Self {
        MatchKey {
            hostname: &m.hostname,
            path: &m.path,
            case_sensitive: m.case_sensitive,
            method: m.method.as_deref(),
            headers: &m.headers,
            query: &m.query_parameters,
            precedence: m.precedence,
        }
    }
}

/// Reads the certificates that Hosts and TLSContexts name from `secrets_dir`.
fn load_secrets(
    config: &mut Config,
    secrets_dir: Option<&Path>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let mut wanted: BTreeMap<String, (Origin, Kind, String, &'static str)> = BTreeMap::new();
    for h in &config.hosts {
        if let Some(s) = &h.tls_secret {
            wanted.entry(s.clone()).or_insert((
                h.meta.origin.clone(),
                Kind::Host,
                h.meta.name.clone(),
                "tlsSecret.name",
            ));
        }
    }
    for t in &config.tls_contexts {
        if let Some(s) = &t.secret {
            wanted.entry(s.clone()).or_insert((
                t.meta.origin.clone(),
                Kind::TlsContext,
                t.meta.name.clone(),
                "secret",
            ));
        }
    }
    ca::load(config, secrets_dir, diagnostics);
    let Some(dir) = secrets_dir else {
        for (secret, (origin, kind, name, field)) in wanted {
            diagnostics.push(diag_at(
                &origin,
                Severity::Warning,
                kind,
                &name,
                field,
                format!("secret {secret:?} not checked: no --secrets-dir given"),
            ));
        }
        return;
    };
    for (secret, (origin, kind, name, field)) in wanted {
        let read = |file: &str| std::fs::read_to_string(dir.join(&secret).join(file));
        match (read("tls.crt"), read("tls.key")) {
            (Ok(cert), Ok(key)) if cert.contains("-----BEGIN") && key.contains("-----BEGIN") => {
                config.secrets.insert(
                    secret.clone(),
                    TlsSecret {
                        name: secret,
                        certificate_chain: cert,
                        private_key: key,
                    },
                );
            }
            (Ok(_), Ok(_)) => diagnostics.push(diag_at(
                &origin,
                Severity::Error,
                kind,
                &name,
                field,
                format!("secret {secret:?}: tls.crt and tls.key must be PEM"),
            )),
            (Err(e), _) | (_, Err(e)) => diagnostics.push(diag_at(
                &origin,
                Severity::Error,
                kind,
                &name,
                field,
                format!(
                    "secret {secret:?}: cannot read {}/{{tls.crt,tls.key}}: {e}",
                    dir.join(&secret).display()
                ),
            )),
        }
    }
    // A Host whose certificate is missing cannot terminate TLS: leave it out.
    let present: BTreeSet<String> = config.secrets.keys().cloned().collect();
    config
        .hosts
        .retain(|h| h.tls_secret.as_ref().is_none_or(|s| present.contains(s)));
    // A TLSContext is left out when its certificate or its CA is missing; whatever relied
    // on it to verify peers goes too (see `tls_refs::leave_out_unverified`).
    let left_out: BTreeSet<(String, String)> = config
        .tls_contexts
        .iter()
        .filter(|t| {
            t.secret.as_ref().is_some_and(|s| !present.contains(s))
                || t.peer_validation
                    .as_ref()
                    .is_some_and(|v| !config.ca_bundles.contains_key(&v.ca_secret))
        })
        .map(|t| qualified(&t.meta))
        .collect();
    tls_refs::leave_out_unverified(config, &left_out, diagnostics);
    config
        .tls_contexts
        .retain(|t| !left_out.contains(&qualified(&t.meta)));
}
