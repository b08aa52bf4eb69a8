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
/// Writes the resources document to `out` one resource at a time: the same document as
/// [`resources_document`] + [`to_text`], without holding all of it in memory. At 10k
/// Mappings the whole JSON tree took more memory than everything else `render` does.
///
/// # Errors
///
/// [`Error::Write`] when `out` fails; the transcoding errors of [`to_json`].
pub fn write_resources(
    resources: &Resources,
    format: Format,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let write = |e| Error::Write { source: e };
    if format == Format::Json {
        out.write_all(b"{").map_err(write)?;
    }
    write_list(out, format, "clusters", &resources.clusters, true)?;
    write_list(out, format, "endpoints", &resources.endpoints, false)?;
    write_list(out, format, "listeners", &resources.listeners, false)?;
    write_list(out, format, "routes", &resources.routes, false)?;
    write_list(out, format, "secrets", &resources.secrets, false)?;
    if format == Format::Json {
        out.write_all(b"\n}\n").map_err(write)?;
    }
    out.flush().map_err(write)
}

fn write_list<M: prost::Name + prost::Message>(
    out: &mut impl std::io::Write,
    format: Format,
    key: &str,
    messages: &[M],
    first: bool,
) -> Result<()> {
    let write = |e| Error::Write { source: e };
    match format {
        Format::Json => {
            let separator = if first { "" } else { "," };
            write!(out, "{separator}\n  \"{key}\": [").map_err(write)?;
        }
        Format::Yaml if messages.is_empty() => {
            return writeln!(out, "{key}: []").map_err(write);
        }
        Format::Yaml => writeln!(out, "{key}:").map_err(write)?,
    }
    for (i, message) in messages.iter().enumerate() {
        let mut value = to_json(message)?;
        redact(&mut value);
        whole_numbers(&mut value);
        let text = to_text(&value, format)?;
        // Nest the item's own text under its list: JSON four spaces in, YAML as a `- ` item.
        let (first_prefix, rest_prefix) = match format {
            Format::Json => {
                let comma = if i == 0 { "" } else { "," };
                writeln!(out, "{comma}").map_err(write)?;
                ("    ", "    ")
            }
            Format::Yaml => ("- ", "  "),
        };
        let lines: Vec<&str> = text.trim_end_matches('\n').lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let prefix = if n == 0 { first_prefix } else { rest_prefix };
            let last = n + 1 == lines.len();
            match format {
                Format::Json if last => write!(out, "{prefix}{line}"),
                Format::Json => writeln!(out, "{prefix}{line}"),
                // Blank lines inside block scalars stay blank (no trailing spaces).
                Format::Yaml if line.is_empty() => writeln!(out),
                Format::Yaml => writeln!(out, "{prefix}{line}"),
            }
            .map_err(write)?;
        }
    }
    if format == Format::Json {
        if messages.is_empty() {
            out.write_all(b"]").map_err(write)?;
        } else {
            out.write_all(b"\n  ]").map_err(write)?;
        }
    }
    Ok(())
}

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
