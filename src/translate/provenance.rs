//! Provenance: which config file and resource each Envoy resource came from.
//!
//! Every Listener, RouteConfiguration, VirtualHost, Route, filter chain and Cluster carries
//! `metadata.typed_filter_metadata["attache"]`: a `google.protobuf.Struct` with `file`,
//! `line`, `kind`, `namespace`, `name` and, where several Mappings share one resource
//! (clusters, weighted routes), `mappings`. Envoy shows it in `/config_dump`, and the
//! admin `/diag` page reads it back with [`Provenance::from_metadata`].
//!
//! Why the typed map and not `filter_metadata`: prost holds `Struct.fields` in a
//! `HashMap`, and encodes it in hash order, which differs between two maps with the same
//! content. A multi-field Struct would make the encoded bytes, and so the snapshot
//! versions, differ between two translations of the same commit. Here the Struct is
//! encoded by hand in key order (one single-entry Struct per field, concatenated, which
//! protobuf's map merge reads as one Struct) and carried as an `Any`, whose bytes prost
//! copies as they are. Envoy and any proto3 JSON printer read it as a plain Struct.

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::value::Kind as ValueKind;
use envoy_types::pb::google::protobuf::{Any, ListValue, Struct, Value};
use prost::{Message, Name};

use super::names::METADATA_NAMESPACE;
use crate::config::Meta;

/// Where an Envoy resource came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Provenance {
    /// The config file, relative to the config root; empty for built-in defaults.
    pub file: String,
    /// 1-based line of the declaring document; 0 for built-in defaults.
    pub line: u32,
    /// `Mapping`, `Host`, `Listener`, `TLSContext`.
    pub kind: String,
    /// The resource's Kubernetes namespace.
    pub namespace: String,
    /// The resource's name.
    pub name: String,
    /// `namespace/name` of every Mapping that shares this resource, when several can
    /// (clusters, weighted routes); empty otherwise.
    pub mappings: Vec<String>,
}

// === impl Provenance ===

impl Provenance {
    /// The provenance of one config resource.
    pub fn of(meta: &Meta) -> Provenance {
        Provenance {
            file: meta.origin.file.to_string(),
            line: meta.origin.line,
            kind: meta.kind.as_str().to_owned(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            mappings: Vec::new(),
        }
    }

    /// The provenance of something attache made up itself (Emissary's default listeners).
    pub fn builtin(kind: &str, name: &str) -> Provenance {
        Provenance {
            file: String::new(),
            line: 0,
            kind: kind.to_owned(),
            namespace: String::new(),
            name: name.to_owned(),
            mappings: Vec::new(),
        }
    }

    /// The provenance of the first of `metas`, listing all of them as `mappings`.
    /// `None` when `metas` is empty.
    pub fn shared<'a>(metas: impl IntoIterator<Item = &'a Meta>) -> Option<Provenance> {
        let metas: Vec<&Meta> = metas.into_iter().collect();
        let mut provenance = Provenance::of(metas.first()?);
        provenance.mappings = metas
            .iter()
            .map(|m| super::names::qualified(&m.namespace, &m.name))
            .collect();
        Some(provenance)
    }

    /// Envoy metadata holding this provenance under `attache`, encoded deterministically.
    pub fn to_metadata(&self) -> Metadata {
        let mut fields = BTreeMap::new();
        fields.insert("file", string(&self.file));
        fields.insert("line", number(f64::from(self.line)));
        fields.insert("kind", string(&self.kind));
        fields.insert("namespace", string(&self.namespace));
        fields.insert("name", string(&self.name));
        if !self.mappings.is_empty() {
            let values = self.mappings.iter().map(|m| string(m)).collect();
            fields.insert(
                "mappings",
                Value {
                    kind: Some(ValueKind::ListValue(ListValue { values })),
                },
            );
        }
        let mut value = Vec::new();
        for (key, field) in fields {
            let single = Struct {
                fields: HashMap::from([(key.to_owned(), field)]),
            };
            single
                .encode(&mut value)
                .expect("a Vec grows as needed, so encoding cannot run out of room");
        }
        Metadata {
            filter_metadata: HashMap::new(),
            typed_filter_metadata: HashMap::from([(
                METADATA_NAMESPACE.to_owned(),
                Any {
                    type_url: Struct::type_url(),
                    value,
                },
            )]),
        }
    }

    /// Reads back what [`Provenance::to_metadata`] wrote; `None` when the metadata holds
    /// no attache provenance or it cannot be decoded.
    pub fn from_metadata(metadata: &Metadata) -> Option<Provenance> {
        let any = metadata.typed_filter_metadata.get(METADATA_NAMESPACE)?;
        if any.type_url != Struct::type_url() {
            return None;
        }
        let decoded = Struct::decode(any.value.as_slice()).ok()?;
        let text = |key: &str| match decoded.fields.get(key)?.kind.as_ref()? {
            ValueKind::StringValue(s) => Some(s.clone()),
            _ => None,
        };
        let line = match decoded.fields.get("line")?.kind.as_ref()? {
            ValueKind::NumberValue(n)
                if n.is_finite() && *n >= 0.0 && *n <= f64::from(u32::MAX) =>
            {
                *n as u32
            }
            _ => return None,
        };
        let mappings = match decoded.fields.get("mappings").and_then(|v| v.kind.as_ref()) {
            Some(ValueKind::ListValue(list)) => list
                .values
                .iter()
                .filter_map(|v| match v.kind.as_ref() {
                    Some(ValueKind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(Provenance {
            file: text("file")?,
            line,
            kind: text("kind")?,
            namespace: text("namespace")?,
            name: text("name")?,
            mappings,
        })
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(ValueKind::StringValue(s.to_owned())),
    }
}

fn number(n: f64) -> Value {
    Value {
        kind: Some(ValueKind::NumberValue(n)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{Kind, Origin};

    fn meta(name: &str, line: u32) -> Meta {
        Meta {
            kind: Kind::Mapping,
            name: name.into(),
            namespace: "shop".into(),
            origin: Origin {
                file: Arc::from("mappings/users.yaml"),
                line,
                column: 1,
            },
        }
    }

    #[test]
    fn round_trips_through_metadata() {
        let p =
            Provenance::shared([&meta("users", 12), &meta("users-canary", 30)]).expect("two metas");
        let back = Provenance::from_metadata(&p.to_metadata()).expect("decodes");
        assert_eq!(back, p);
        assert_eq!(back.file, "mappings/users.yaml");
        assert_eq!(back.line, 12);
        assert_eq!(back.kind, "Mapping");
        assert_eq!(back.name, "users");
        assert_eq!(back.mappings, ["shop/users", "shop/users-canary"]);
    }

    #[test]
    fn encoding_is_byte_identical_across_builds() {
        // Each HashMap gets its own random hash seed; encode many times to be sure that
        // no map order leaks into the bytes.
        let p = Provenance::of(&meta("users", 12));
        let first = p.to_metadata().encode_to_vec();
        for _ in 0..50 {
            assert_eq!(p.to_metadata().encode_to_vec(), first);
        }
    }

    #[test]
    fn decodes_as_an_ordinary_struct() {
        let metadata = Provenance::of(&meta("users", 7)).to_metadata();
        let any = &metadata.typed_filter_metadata[METADATA_NAMESPACE];
        let decoded = Struct::decode(any.value.as_slice()).expect("a Struct");
        let keys: std::collections::BTreeSet<&str> =
            decoded.fields.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["file", "kind", "line", "name", "namespace"]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn foreign_metadata_reads_as_none() {
        assert_eq!(Provenance::from_metadata(&Metadata::default()), None);
    }
}
