//! Provenance: which config file and resource each Envoy resource came from.
//!
//! Every Listener, RouteConfiguration, VirtualHost, Route, filter chain and Cluster carries
//! `metadata.filter_metadata["attache"]`, a `google.protobuf.Struct` with one key,
//! `source`, whose value is a list of strings:
//!
//! ```text
//! ["mappings/users.yaml:12", "Mapping", "shop", "users"]
//! ["mappings/users.yaml:12", "Mapping", "shop", "users", "shop/users", "shop/users-canary"]
//! ```
//!
//! that is `FILE:LINE` (empty for built-in defaults), kind, namespace and name, and, where
//! several Mappings share one resource (clusters, weighted routes), the `namespace/name`
//! of each of them. Envoy shows it in `/config_dump`, and the admin `/diag` page and
//! `attache diff` read it back with [`Provenance::from_metadata`].
//!
//! Why this shape: every route carries it, so it is a large share of the bytes each node
//! receives (a 1k-route RouteConfiguration goes to every node on every route change).
//! One key keeps the encoding deterministic even though prost holds `Struct.fields` in a
//! `HashMap` (a map of one entry has one order), and a list of strings costs a few bytes
//! per item where a Struct of named fields, or an `Any` with its type URL, costs tens.
//! Each part is its own string, so names and paths holding spaces, `/` or `:` read back
//! exactly.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::value::Kind as ValueKind;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value};

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
        let location = if self.file.is_empty() && self.line == 0 {
            String::new()
        } else {
            format!("{}:{}", self.file, self.line)
        };
        let mut values = Vec::with_capacity(4 + self.mappings.len());
        values.push(string(location));
        values.push(string(self.kind.clone()));
        values.push(string(self.namespace.clone()));
        values.push(string(self.name.clone()));
        values.extend(self.mappings.iter().map(|m| string(m.clone())));
        let source = Value {
            kind: Some(ValueKind::ListValue(ListValue { values })),
        };
        Metadata {
            filter_metadata: HashMap::from([(
                METADATA_NAMESPACE.to_owned(),
                Struct {
                    fields: HashMap::from([(SOURCE_KEY.to_owned(), source)]),
                },
            )]),
            typed_filter_metadata: HashMap::new(),
        }
    }

    /// Reads back what [`Provenance::to_metadata`] wrote; `None` when the metadata holds
    /// no attache provenance or it is not in that shape.
    pub fn from_metadata(metadata: &Metadata) -> Option<Provenance> {
        let source = metadata
            .filter_metadata
            .get(METADATA_NAMESPACE)?
            .fields
            .get(SOURCE_KEY)?;
        let Some(ValueKind::ListValue(list)) = source.kind.as_ref() else {
            return None;
        };
        let mut parts = list.values.iter().map(|v| match v.kind.as_ref() {
            Some(ValueKind::StringValue(s)) => Some(s.as_str()),
            _ => None,
        });
        let location = parts.next()??;
        let (file, line) = if location.is_empty() {
            ("", 0)
        } else {
            let (file, line) = location.rsplit_once(':')?;
            (file, line.parse().ok()?)
        };
        let kind = parts.next()??.to_owned();
        let namespace = parts.next()??.to_owned();
        let name = parts.next()??.to_owned();
        let mappings = parts
            .map(|m| m.map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(Provenance {
            file: file.to_owned(),
            line,
            kind,
            namespace,
            name,
            mappings,
        })
    }
}

/// The one key of the `attache` Struct.
const SOURCE_KEY: &str = "source";

fn string(s: String) -> Value {
    Value {
        kind: Some(ValueKind::StringValue(s)),
    }
}
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

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
    fn is_one_list_of_strings_under_source() {
        let metadata = Provenance::of(&meta("users", 7)).to_metadata();
        assert!(metadata.typed_filter_metadata.is_empty());
        let fields = &metadata.filter_metadata[METADATA_NAMESPACE].fields;
        assert_eq!(fields.len(), 1);
        let Some(ValueKind::ListValue(list)) = fields[SOURCE_KEY].kind.as_ref() else {
            panic!("source is not a list: {fields:?}");
        };
        let parts: Vec<&str> = list
            .values
            .iter()
            .map(|v| match v.kind.as_ref() {
                Some(ValueKind::StringValue(s)) => s.as_str(),
                other => panic!("not a string: {other:?}"),
            })
            .collect();
        assert_eq!(parts, ["mappings/users.yaml:7", "Mapping", "shop", "users"]);
    }

    #[test]
    fn awkward_names_and_paths_read_back_exactly() {
        let mut m = meta("a name/with: spaces", 3);
        m.namespace = "ns:odd/one".into();
        m.origin.file = Arc::from("dir with space/x:1.yaml");
        let p = Provenance::of(&m);
        assert_eq!(Provenance::from_metadata(&p.to_metadata()), Some(p));
        let builtin = Provenance::builtin("Listener", "default-http");
        assert_eq!(
            Provenance::from_metadata(&builtin.to_metadata()),
            Some(builtin)
        );
    }

    #[test]
    fn a_shape_it_did_not_write_reads_as_none() {
        let with = |values: Vec<Value>| Metadata {
            filter_metadata: HashMap::from([(
                METADATA_NAMESPACE.to_owned(),
                Struct {
                    fields: HashMap::from([(
                        SOURCE_KEY.to_owned(),
                        Value {
                            kind: Some(ValueKind::ListValue(ListValue { values })),
                        },
                    )]),
                },
            )]),
            typed_filter_metadata: HashMap::new(),
        };
        let s = |text: &str| string(text.to_owned());
        // Too short, a line that is not a number, a part that is not a string.
        let bad = [
            vec![s("a.yaml:1"), s("Mapping"), s("ns")],
            vec![s("a.yaml:one"), s("Mapping"), s("ns"), s("x")],
            vec![
                s("a.yaml:1"),
                s("Mapping"),
                s("ns"),
                Value {
                    kind: Some(ValueKind::NumberValue(1.0)),
                },
            ],
        ];
        for values in bad {
            assert_eq!(
                Provenance::from_metadata(&with(values.clone())),
                None,
                "{values:?}"
            );
        }
        let good = with(vec![s("a.yaml:1"), s("Mapping"), s("ns"), s("x")]);
        assert_eq!(
            Provenance::from_metadata(&good).map(|p| (p.file, p.line)),
            Some(("a.yaml".to_owned(), 1))
        );
    }

    #[test]
    fn foreign_metadata_reads_as_none() {
        assert_eq!(Provenance::from_metadata(&Metadata::default()), None);
    }
}
