//! What `attache render` prints: the resources by type, or the static bootstrap, as JSON
//! or YAML.
//!
//! The resources document is for people (review a change, diff two renders), so it never
//! shows private keys: CI logs and pull-request comments are where it ends up. The
//! bootstrap is for Envoy, which needs the keys to serve TLS, so it keeps them; it is only
//! printed when asked for with `--bootstrap`.

use std::net::SocketAddr;

use serde_json::{Map, Value};

use super::{Error, Result, json::to_json, static_bootstrap};
use crate::translate::Resources;

/// The output syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// YAML (the default: what people write Envoy config in).
    #[default]
    Yaml,
    /// Pretty-printed JSON.
    Json,
}

/// Replaces every secret value in the resources document.
const REDACTED: &str = "[redacted]";

/// Field names (proto spelling) whose values are secret wherever they appear: a
/// TlsCertificate's `private_key`, `password` and `pkcs12` (which bundles the key), a
/// DownstreamTlsContext's or Secret's `session_ticket_keys`, a Secret's `generic_secret`.
const SECRET_FIELDS: &[&str] = &[
    "private_key",
    "password",
    "pkcs12",
    "session_ticket_keys",
    "generic_secret",
];

/// The resources by xDS type: `{clusters, endpoints, listeners, routes, secrets}`, each a
/// list in translation's (name) order, with every secret value replaced by
/// `"[redacted]"`.
///
/// # Errors
///
/// [`Error`] when a resource does not transcode (a type missing from the descriptor set).
pub fn resources_document(resources: &Resources) -> Result<Value> {
    let mut doc = Map::new();
    doc.insert("clusters".into(), list(&resources.clusters)?);
    doc.insert("endpoints".into(), list(&resources.endpoints)?);
    doc.insert("listeners".into(), list(&resources.listeners)?);
    doc.insert("routes".into(), list(&resources.routes)?);
    doc.insert("secrets".into(), list(&resources.secrets)?);
    let mut doc = Value::Object(doc);
    // Translation only puts keys in Secrets, but one inlined anywhere else must not leak
    // either, so the whole document is scanned.
    redact(&mut doc);
    whole_numbers(&mut doc);
    Ok(doc)
}

/// The static bootstrap of `resources` ([`static_bootstrap`]), private keys included.
///
/// # Errors
///
/// [`Error`] when a resource does not transcode (a type missing from the descriptor set).
pub fn bootstrap_document(resources: &Resources, admin: Option<SocketAddr>) -> Result<Value> {
    let mut doc = to_json(&static_bootstrap(resources, admin))?;
    whole_numbers(&mut doc);
    Ok(doc)
}

/// `value` as text in `format`, ending in a newline.
///
/// # Errors
///
/// [`Error::Yaml`] or [`Error::Json`] when the serializer fails, which a JSON value from
/// this module does not cause in practice.
pub fn to_text(value: &Value, format: Format) -> Result<String> {
    let mut text = match format {
        Format::Json => serde_json::to_string_pretty(value).map_err(|source| Error::Json {
            type_name: "render document".to_owned(),
            source,
        })?,
        Format::Yaml => serde_saphyr::to_string(value).map_err(|source| Error::Yaml { source })?,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

fn list<M: prost::Name + prost::Message>(messages: &[M]) -> Result<Value> {
    messages
        .iter()
        .map(to_json)
        .collect::<Result<Vec<_>>>()
        .map(Value::Array)
}

/// Writes whole `double`s as integers: `google.protobuf.Struct` holds every number as a
/// double, so provenance would otherwise read `line: 59.0`. The proto3 JSON parsers
/// (Envoy's included) read `59` into a double field just the same. Only values a double
/// holds exactly (below 2^53) are changed.
fn whole_numbers(value: &mut Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < EXACT) {
                // Exact by the filter above: a whole number below 2^53 fits an i64.
                let whole = f as i64;
                *value = Value::from(whole);
            }
        }
        Value::Object(map) => map.values_mut().for_each(whole_numbers),
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// Replaces the value of every [`SECRET_FIELDS`] key, at any depth, by [`REDACTED`].
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if SECRET_FIELDS.contains(&key.as_str()) {
                    *field = Value::String(REDACTED.to_owned());
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
