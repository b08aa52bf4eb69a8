//! References to TLSContexts by name: a Host's `tlsContext.name`, and the `tls: NAME` of
//! Mappings, the AuthService and the RateLimitService.
//!
//! Every one resolves by the same rule ([`Config::tls_context`]): the TLSContext of that
//! name in the referrer's namespace, else the only one of that name anywhere. A name that
//! matches nothing, or several TLSContexts in other namespaces, is an error naming them,
//! and the referrer is left out. Upstream references are rewritten to the namespace of
//! the TLSContext they resolved to, so translation finds exactly that one.

use std::collections::BTreeSet;

use super::{Diagnostic, diag_at, qualified};
use crate::config::diag::Severity;
use crate::config::model::{
    Action, Config, ContextLookup, ContextRef, Mapping, Meta, Target, TlsContext, UpstreamTls,
};

/// Resolves every TLSContext reference of `config`, leaving out the resources whose
/// reference does not resolve.
pub(super) fn resolve(config: &mut Config, diagnostics: &mut Vec<Diagnostic>) {
    let mut bad_hosts = BTreeSet::new();
    for h in &config.hosts {
        if let Some(name) = &h.tls_context
            && let Err(why) = lookup(config, name, &h.meta.namespace)
        {
            diagnostics.push(error(&h.meta, "tlsContext.name", why));
            bad_hosts.insert(qualified(&h.meta));
        }
    }
    config
        .hosts
        .retain(|h| !bad_hosts.contains(&qualified(&h.meta)));

    // Resolve first (reading the TLSContexts), then rewrite the references.
    let resolved = |target: &Target, meta: &Meta| match &target.tls {
        UpstreamTls::Context(r) => lookup(config, &r.name, &meta.namespace).map(Some),
        _ => Ok(None),
    };
    let mappings: Vec<Resolved> = config
        .mappings
        .iter()
        .map(|m| match &m.action {
            Action::Route(r) => resolved(&r.target, &m.meta),
            Action::Redirect(_) => Ok(None),
        })
        .collect();
    let auth = config
        .auth_service
        .as_ref()
        .map(|a| resolved(&a.target, &a.meta));
    let rls = config
        .rate_limit_service
        .as_ref()
        .map(|r| resolved(&r.target, &r.meta));

    let mut results = mappings.into_iter();
    config.mappings.retain_mut(|m| {
        let Action::Route(r) = &mut m.action else {
            results.next();
            return true;
        };
        match results.next() {
            Some(Ok(Some(context))) => {
                r.target.tls = UpstreamTls::Context(context);
                true
            }
            Some(Err(why)) => {
                diagnostics.push(error(&m.meta, "tls", why));
                false
            }
            Some(Ok(None)) | None => true,
        }
    });
    if let (Some(result), Some(a)) = (auth, config.auth_service.as_mut()) {
        match result {
            Ok(Some(context)) => a.target.tls = UpstreamTls::Context(context),
            Ok(None) => {}
            Err(why) => {
                diagnostics.push(error(&a.meta, "spec.tls", why));
                config.auth_service = None;
            }
        }
    }
    if let (Some(result), Some(r)) = (rls, config.rate_limit_service.as_mut()) {
        match result {
            Ok(Some(context)) => r.target.tls = UpstreamTls::Context(context),
            Ok(None) => {}
            Err(why) => {
                diagnostics.push(error(&r.meta, "spec.tls", why));
                config.rate_limit_service = None;
            }
        }
    }
}

/// A reference resolved: `None` for a target with no TLSContext, or why it resolves to
/// none.
type Resolved = Result<Option<ContextRef>, String>;

fn error(referrer: &Meta, field: &str, message: String) -> Diagnostic {
    diag_at(
        &referrer.origin,
        Severity::Error,
        referrer.kind,
        &referrer.name,
        field,
        message,
    )
}

/// The TLSContext `name` that a resource in `namespace` means, or why there is none.
fn lookup(config: &Config, name: &str, namespace: &str) -> Result<ContextRef, String> {
    match config.tls_context(name, namespace) {
        ContextLookup::Found(c) => Ok(ContextRef {
            namespace: c.meta.namespace.clone(),
            name: c.meta.name.clone(),
        }),
        ContextLookup::Missing => Err(format!("no TLSContext named {name:?}")),
        ContextLookup::Ambiguous(a, b) => Err(format!(
            "no TLSContext named {name:?} in namespace {namespace:?}, and several in others: \
             in {:?} at {} and in {:?} at {}; create one in {namespace:?} or give the others \
             distinct names",
            a.meta.namespace, a.meta.origin, b.meta.namespace, b.meta.origin,
        )),
    }
}

/// Resolves the TLSContext reference of one Mapping as [`resolve`] does; `false` (and
/// `m` unchanged) when it does not resolve.
pub(in crate::config) fn resolve_mapping(config: &Config, m: &mut Mapping) -> bool {
    let Action::Route(r) = &mut m.action else {
        return true;
    };
    let UpstreamTls::Context(reference) = &r.target.tls else {
        return true;
    };
    match lookup(config, &reference.name, &m.meta.namespace) {
        Ok(context) => {
            r.target.tls = UpstreamTls::Context(context);
            true
        }
        Err(_) => false,
    }
}

/// Leaves out what relies on a TLSContext that verifies peers (`ca_secret`) when that
/// TLSContext is itself left out (`left_out`, by namespace and name: its CA or its
/// certificate could not be read). Without it a Host would terminate TLS without asking
/// for client certificates, and an upstream cluster would connect without checking the
/// server's: both would silently open what the TLSContext was written to guard, so each
/// is an error and left out (an AuthService or RateLimitService so left out rejects the
/// revision, as any error in one does).
///
/// Runs while `config.tls_contexts` still holds the left-out ones, so references resolve
/// exactly as they did before.
pub(super) fn leave_out_unverified(
    config: &mut Config,
    left_out: &BTreeSet<(String, String)>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let guarded =
        |c: &TlsContext| c.peer_validation.is_some() && left_out.contains(&qualified(&c.meta));
    let why = |c: &TlsContext, what: &str| {
        format!(
            "TLSContext {:?} (at {}) verifies {what} certificates but is left out (see its \
             error); left out too rather than served unverified",
            c.meta.name, c.meta.origin
        )
    };
    let mut bad_hosts = BTreeSet::new();
    for h in &config.hosts {
        if let Some(c) = config.host_context(h).filter(|c| guarded(c)) {
            let field = if h.tls_context.is_some() {
                "tlsContext.name"
            } else {
                "hostname"
            };
            diagnostics.push(error(&h.meta, field, why(c, "client")));
            bad_hosts.insert(qualified(&h.meta));
        }
    }
    if !bad_hosts.is_empty() {
        config
            .hosts
            .retain(|h| !bad_hosts.contains(&qualified(&h.meta)));
    }

    let unverified = |target: &Target| match &target.tls {
        UpstreamTls::Context(r) => config
            .tls_contexts
            .iter()
            .find(|c| c.meta.namespace == r.namespace && c.meta.name == r.name)
            .filter(|c| guarded(c))
            .map(|c| why(c, "server")),
        UpstreamTls::Plain | UpstreamTls::Tls => None,
    };
    let mappings: Vec<Option<String>> = config
        .mappings
        .iter()
        .map(|m| match &m.action {
            Action::Route(r) => unverified(&r.target),
            Action::Redirect(_) => None,
        })
        .collect();
    let auth = config
        .auth_service
        .as_ref()
        .and_then(|a| unverified(&a.target));
    let rls = config
        .rate_limit_service
        .as_ref()
        .and_then(|r| unverified(&r.target));

    let mut reasons = mappings.into_iter();
    config.mappings.retain(|m| match reasons.next().flatten() {
        Some(why) => {
            diagnostics.push(error(&m.meta, "tls", why));
            false
        }
        None => true,
    });
    if let (Some(why), Some(a)) = (auth, &config.auth_service) {
        diagnostics.push(error(&a.meta, "spec.tls", why));
        config.auth_service = None;
    }
    if let (Some(why), Some(r)) = (rls, &config.rate_limit_service) {
        diagnostics.push(error(&r.meta, "spec.tls", why));
        config.rate_limit_service = None;
    }
}
