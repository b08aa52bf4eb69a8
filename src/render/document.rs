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
/// [`resources_document`] + [`to_text`], without holding all of it in memory. Route
/// configurations go one virtual host and one route at a time: at 10k Mappings a single
/// RouteConfiguration as a dynamic message took more memory than everything else
/// `render` does.
///
/// # Errors
///
/// [`Error::Write`] when `out` fails; the transcoding errors of [`to_json`].
pub fn write_resources(
    resources: &Resources,
    format: Format,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let mut emit = Emitter { out, format };
    emit.raw(if format == Format::Json { "{" } else { "" })?;
    emit.list("clusters", 0, true, &resources.clusters, |e, m, i| {
        e.whole(m, i)
    })?;
    emit.list("endpoints", 0, false, &resources.endpoints, |e, m, i| {
        e.whole(m, i)
    })?;
    emit.list("listeners", 0, false, &resources.listeners, |e, m, i| {
        e.whole(m, i)
    })?;
    emit.list("routes", 0, false, &resources.routes, |e, config, item| {
        // RouteConfiguration.virtual_hosts is field 2, VirtualHost.routes field 3.
        e.split(
            config,
            2,
            "virtual_hosts",
            &config.virtual_hosts,
            item,
            |e, vhost, item| {
                e.split(vhost, 3, "routes", &vhost.routes, item, |e, route, item| {
                    e.whole(route, item)
                })
            },
        )
    })?;
    emit.list("secrets", 0, false, &resources.secrets, |e, m, i| {
        e.whole(m, i)
    })?;
    emit.raw(if format == Format::Json { "\n}\n" } else { "" })?;
    emit.out.flush().map_err(|source| Error::Write { source })
}

/// Where a list item goes: its depth (in list levels) and whether it is its list's first.
#[derive(Clone, Copy)]
struct Item {
    depth: usize,
    first: bool,
}

/// Writes nested lists of resources as indented YAML or pretty JSON text, one small
/// [`Value`] at a time.
struct Emitter<'w, W> {
    out: &'w mut W,
    format: Format,
}

impl<W: std::io::Write> Emitter<'_, W> {
    fn raw(&mut self, text: &str) -> Result<()> {
        self.out
            .write_all(text.as_bytes())
            .map_err(|source| Error::Write { source })
    }

    /// Indentation of the fields of an item at `depth`.
    fn field_indent(&self, depth: usize) -> String {
        match self.format {
            // Top-level lists sit at 0; each nested list's items two deeper than its key.
            Format::Yaml => " ".repeat(depth * 4 + 2),
            // `{"key": [` at 2, items at 4, their fields at 6; nested lists likewise.
            Format::Json => " ".repeat(depth * 4 + 6),
        }
    }

    /// `key: [items]` at `depth` (0 for the document's own keys, otherwise inside the
    /// object an item at `depth - 1` opened).
    fn list<T>(
        &mut self,
        key: &str,
        depth: usize,
        first: bool,
        items: &[T],
        mut each: impl FnMut(&mut Self, &T, Item) -> Result<()>,
    ) -> Result<()> {
        let indent = if depth == 0 {
            match self.format {
                Format::Yaml => String::new(),
                Format::Json => "  ".to_owned(),
            }
        } else {
            self.field_indent(depth - 1)
        };
        match self.format {
            Format::Json => {
                let separator = if first { "" } else { "," };
                self.raw(&format!("{separator}\n{indent}\"{key}\": ["))?;
            }
            Format::Yaml if items.is_empty() => {
                return self.raw(&format!("{indent}{key}: []\n"));
            }
            Format::Yaml => self.raw(&format!("{indent}{key}:\n"))?,
        }
        self.items(depth, items, &mut each)?;
        if self.format == Format::Json {
            if items.is_empty() {
                self.raw("]")?;
            } else {
                self.raw(&format!("\n{indent}]"))?;
            }
        }
        Ok(())
    }

    /// One message, whole, as a list item.
    fn whole<M: prost::Name + prost::Message>(&mut self, message: &M, at: Item) -> Result<()> {
        let value = prepared(to_json(message)?);
        self.item_lines(&value, at, false)
    }

    /// One message as a list item, with its big repeated field `field` (JSON name `key`)
    /// written item by item after the rest.
    fn split<M: prost::Name + prost::Message, T>(
        &mut self,
        message: &M,
        field: u32,
        key: &str,
        items: &[T],
        at: Item,
        each: impl FnMut(&mut Self, &T, Item) -> Result<()>,
    ) -> Result<()> {
        let shell = prepared(super::json::to_json_without(message, field)?);
        if items.is_empty() {
            // As in the in-memory document: an empty repeated field is not printed.
            return self.item_lines(&shell, at, false);
        }
        let has_fields = shell.as_object().is_some_and(|o| !o.is_empty());
        self.item_lines(&shell, at, true)?;
        if self.format == Format::Yaml && !has_fields {
            // The item has no other field: the list's key starts the item itself.
            let dash = format!("{}- ", " ".repeat(at.depth * 4));
            self.raw(&dash)?;
            return self.list_after_dash(key, at, items, each);
        }
        self.list(key, at.depth + 1, !has_fields, items, each)?;
        if self.format == Format::Json {
            let close = format!("\n{}}}", " ".repeat(at.depth * 4 + 4));
            self.raw(&close)?;
        }
        Ok(())
    }

    /// Writes each of `items` as a list item at `depth`.
    fn items<T>(
        &mut self,
        depth: usize,
        items: &[T],
        each: &mut impl FnMut(&mut Self, &T, Item) -> Result<()>,
    ) -> Result<()> {
        for (i, item) in items.iter().enumerate() {
            each(
                self,
                item,
                Item {
                    depth,
                    first: i == 0,
                },
            )?;
        }
        Ok(())
    }

    /// YAML only: `- key:` with the list items below, for an item whose only field is the list.
    fn list_after_dash<T>(
        &mut self,
        key: &str,
        at: Item,
        items: &[T],
        mut each: impl FnMut(&mut Self, &T, Item) -> Result<()>,
    ) -> Result<()> {
        if items.is_empty() {
            return self.raw(&format!("{key}: []\n"));
        }
        self.raw(&format!("{key}:\n"))?;
        let depth = at.depth + 1;
        self.items(depth, items, &mut each)?;
        Ok(())
    }

    /// `value` as list item `at`. With `open`, a JSON object is left open (no closing
    /// brace, so fields can follow) and an empty YAML object writes nothing.
    fn item_lines(&mut self, value: &Value, at: Item, open: bool) -> Result<()> {
        let text = to_text(value, self.format)?;
        let mut lines: Vec<&str> = text.trim_end_matches('\n').lines().collect();
        match self.format {
            Format::Json => {
                let item_indent = " ".repeat(at.depth * 4 + 4);
                self.raw(if at.first { "\n" } else { ",\n" })?;
                if open {
                    // Drop the closing brace; `{}` becomes a bare `{`.
                    if lines.len() == 1 {
                        lines = vec!["{"];
                    } else {
                        lines.pop();
                    }
                }
                for (n, line) in lines.iter().enumerate() {
                    let newline = if n + 1 < lines.len() { "\n" } else { "" };
                    self.raw(&format!("{item_indent}{line}{newline}"))?;
                }
            }
            Format::Yaml => {
                if open && value.as_object().is_some_and(|o| o.is_empty()) {
                    return Ok(());
                }
                let dash = format!("{}- ", " ".repeat(at.depth * 4));
                let rest = " ".repeat(at.depth * 4 + 2);
                for (n, line) in lines.iter().enumerate() {
                    let prefix = if n == 0 { dash.as_str() } else { rest.as_str() };
                    if line.is_empty() {
                        // Blank lines inside block scalars stay blank (no trailing spaces).
                        self.raw("\n")?;
                    } else {
                        self.raw(&format!("{prefix}{line}\n"))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A resource as people read it: no private keys, whole numbers without `.0`.
fn prepared(mut value: Value) -> Value {
    redact(&mut value);
    whole_numbers(&mut value);
    value
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
/// double, so a whole number in one (an access log's JSON format) would otherwise read
/// `59.0`. The proto3 JSON parsers (Envoy's included) read `59` into a double field just
/// the same. Only values a double holds exactly (below 2^53) are changed.
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
