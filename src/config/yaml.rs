//! YAML with positions: a small node tree that remembers the line and column of every
//! value, and a serde [`Decoder`] over it that turns nodes into typed structs while
//! recording *where* each error happened (line, column and field path).
//!
//! Why a tree first rather than deserialising straight into the typed structs: one file
//! holds several documents, each document may be in Emissary's CRD form or its flat form,
//! and an annotation may hold YAML of its own. Looking at `apiVersion` and `kind` before
//! choosing a type, and reporting one bad document without losing the others, needs the
//! document in hand. `parse` builds the tree from the YAML parser's events, bounding
//! depth, aliases and size as it goes; everything after that is ours.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// One YAML value and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: u32,
    pub column: u32,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; keys are nodes too so their positions survive.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What the value is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The entry of a mapping node with that string key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, when this node is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Limits on what one file may make the parser do. The defaults are far above any real
/// gateway config and far below what would hurt the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read, in bytes.
    pub max_file_bytes: usize,
    /// Deepest nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most aliases (`*name`) in one file; alias bombs need many.
    pub max_aliases: usize,
    /// Most nodes in one file, counting every alias expansion.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 8 * 1024 * 1024,
            max_depth: 64,
            max_aliases: 1_000,
            max_nodes: 2_000_000,
        }
    }
}

/// A file that is not YAML we accept: syntax, encoding or limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Parses every document of `bytes`. Empty documents are left out.
///
/// # Errors
///
/// Non-UTF-8 bytes (with the position of the first bad one), a file over
/// [`Limits::max_file_bytes`], a YAML syntax error, or a document that breaks the limits
/// (depth, aliases, nodes).
pub fn parse_documents(bytes: &[u8], limits: &Limits) -> Result<Vec<Node>, SyntaxError> {
    if bytes.len() > limits.max_file_bytes {
        return Err(SyntaxError {
            line: 1,
            column: 1,
            // read_dir stops reading one byte past the limit, so the size we know may be
            // a lower bound: say "larger than", not a byte count.
            message: format!(
                "file is larger than the limit of {} bytes for one config file; split it",
                limits.max_file_bytes
            ),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = position_of(bytes, e.valid_up_to());
        SyntaxError {
            line,
            column,
            message: "file is not valid UTF-8".to_owned(),
        }
    })?;
    let docs = parse::documents(text, limits)?;
    Ok(docs
        .into_iter()
        .filter(|n| n.value != Value::Null)
        .collect())
}

/// 1-based line and column of byte `offset`.
pub fn position_of(bytes: &[u8], offset: usize) -> (u32, u32) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

// === Decoding nodes into typed structs ===

/// The field path to a node, built on the stack while decoding and rendered only when an
/// error needs it (`spec.headers[0].name`).
#[derive(Clone, Copy)]
pub enum Path<'p> {
    /// The root, with a prefix such as `spec` (or empty for the flat form).
    Root(&'p str),
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root(prefix) => f.write_str(prefix),
            Path::Key(parent, key) => {
                let rendered = parent.to_string();
                if rendered.is_empty() {
                    f.write_str(key)
                } else {
                    write!(f, "{rendered}.{key}")
                }
            }
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// An error found while decoding a node: what, and where (line, column, field path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub message: String,
    pub line: u32,
    pub column: u32,
    pub path: String,
    located: bool,
}

impl DecodeError {
    /// Fills in the position of the innermost node that saw the error; outer nodes leave
    /// it alone.
    fn at(mut self, node: &Node, path: &Path<'_>) -> Self {
        if !self.located {
            self.line = node.line;
            self.column = node.column;
            self.path = path.to_string();
            self.located = true;
        }
        self
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError {
            message: msg.to_string(),
            line: 0,
            column: 0,
            path: String::new(),
            located: false,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let message = match closest(field, expected) {
            Some(near) => format!("unknown field `{field}`; did you mean `{near}`?"),
            None => format!("unknown field `{field}`"),
        };
        Self::custom(message)
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format!("missing required field `{field}`"))
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format!("expected {exp}, found {unexp}"))
    }
}

/// The expected name nearest to a typo, if it is near enough to be a likely typo.
fn closest<'a>(field: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|e| (edit_distance(field, e), *e))
        .filter(|(d, e)| *d <= 2.max(e.len() / 4))
        .min()
        .map(|(_, e)| e)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Decodes `node` into `T`, naming fields from `root` (e.g. `spec`) in errors.
///
/// # Errors
///
/// The first type error, unknown field or missing field, with its position and path.
pub fn decode<'a, T: Deserialize<'a>>(node: &'a Node, root: &str) -> Result<T, DecodeError> {
    T::deserialize(Decoder {
        node,
        path: &Path::Root(root),
        skip: &[],
    })
}

/// Like [`decode`], but the top-level keys in `skip` are left out (the flat form keeps
/// `apiVersion`, `kind` and `name` beside the spec fields).
///
/// # Errors
///
/// As [`decode`].
pub fn decode_skipping<'a, T: Deserialize<'a>>(
    node: &'a Node,
    root: &str,
    skip: &[&str],
) -> Result<T, DecodeError> {
    T::deserialize(Decoder {
        node,
        path: &Path::Root(root),
        skip,
    })
}

/// The newtype name through which [`At`] asks the decoder for the node's position.
const AT_MARKER: &str = "__attache_at";

/// A value together with the line and column it was written at, so validation after
/// decoding can still point at the right place.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub line: u32,
    pub column: u32,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AtVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for AtVisitor<T> {
            type Value = At<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<At<T>, A::Error> {
                let line: u32 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("missing line"))?;
                let column: u32 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("missing column"))?;
                let value: T = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("missing value"))?;
                Ok(At {
                    value,
                    line,
                    column,
                })
            }
            fn visit_newtype_struct<D: de::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<At<T>, D::Error> {
                // A deserializer other than ours: no position to give.
                Ok(At {
                    value: T::deserialize(d)?,
                    line: 0,
                    column: 0,
                })
            }
        }
        d.deserialize_newtype_struct(AT_MARKER, AtVisitor(std::marker::PhantomData))
    }
}

/// A serde deserializer over a [`Node`]. Every error it or the visitor raises is given
/// the position of the innermost node involved.
struct Decoder<'a, 'p> {
    node: &'a Node,
    path: &'p Path<'p>,
    skip: &'p [&'p str],
}

impl<'a> Decoder<'a, '_> {
    fn fail(&self, message: String) -> DecodeError {
        de::Error::custom(message)
    }

    fn expected(&self, what: &str) -> DecodeError {
        self.fail(format!(
            "expected {what}, found {}",
            self.node.value.describe()
        ))
    }
}

macro_rules! forward_to_any {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
            self.deserialize_any(visitor)
        })*
    };
}

impl<'a> de::Deserializer<'a> for Decoder<'a, '_> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let (node, path) = (self.node, self.path);
        let result = match &node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(v), _) => visitor.visit_i64(v),
                (_, Ok(v)) => visitor.visit_u64(v),
                _ => visitor.visit_i128(*i),
            },
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDecoder {
                items: items.iter().enumerate(),
                path,
            }),
            Value::Map(entries) => visitor.visit_map(MapDecoder {
                entries: entries.iter(),
                path,
                skip: self.skip,
                pending: None,
            }),
        };
        result.map_err(|e| e.at(node, path))
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let (node, path) = (self.node, self.path);
        match node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.at(node, path))
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let (node, path) = (self.node, self.path);
        match node.value {
            // A missing field is reported by the struct's visitor with no position: it is
            // the struct's own, so point at the mapping that lacks it.
            Value::Map(_) => self.deserialize_any(visitor).map_err(|e| e.at(node, path)),
            _ => Err(self.expected("a mapping").at(node, path)),
        }
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Map(_) => self.deserialize_any(visitor),
            _ => Err(self.expected("a mapping").at(self.node, self.path)),
        }
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Seq(_) => self.deserialize_any(visitor),
            _ => Err(self.expected("a list").at(self.node, self.path)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let (node, path) = (self.node, self.path);
        if name == AT_MARKER {
            return visitor
                .visit_seq(AtAccess {
                    step: 0,
                    decoder: Some(self),
                })
                .map_err(|e| e.at(node, path));
        }
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.at(node, path))
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        let (node, path) = (self.node, self.path);
        match &node.value {
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            _ => Err(self.expected("a string")),
        }
        .map_err(|e| e.at(node, path))
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    forward_to_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple<V: Visitor<'a>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }
}

/// Hands [`At`] the line, the column, then the value.
struct AtAccess<'a, 'p> {
    step: u8,
    decoder: Option<Decoder<'a, 'p>>,
}

impl<'a> de::SeqAccess<'a> for AtAccess<'a, '_> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        self.step += 1;
        let Some(decoder) = self.decoder.take() else {
            return Ok(None);
        };
        let value = match self.step {
            1 => {
                let line = decoder.node.line;
                self.decoder = Some(decoder);
                seed.deserialize(line.into_deserializer())?
            }
            2 => {
                let column = decoder.node.column;
                self.decoder = Some(decoder);
                seed.deserialize(column.into_deserializer())?
            }
            _ => seed.deserialize(decoder)?,
        };
        Ok(Some(value))
    }
}

struct SeqDecoder<'a, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: &'p Path<'p>,
}

impl<'a> de::SeqAccess<'a> for SeqDecoder<'a, '_> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let path = Path::Index(self.path, i);
        seed.deserialize(Decoder {
            node,
            path: &path,
            skip: &[],
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDecoder<'a, 'p> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    path: &'p Path<'p>,
    skip: &'p [&'p str],
    pending: Option<(&'a str, &'a Node)>,
}

impl<'a> de::MapAccess<'a> for MapDecoder<'a, '_> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        for (key, value) in self.entries.by_ref() {
            let name = match &key.value {
                Value::Str(s) => s.as_str(),
                other => {
                    let err: DecodeError = de::Error::custom(format!(
                        "mapping keys must be strings, found {}",
                        other.describe()
                    ));
                    return Err(err.at(key, self.path));
                }
            };
            if self.skip.contains(&name) {
                continue;
            }
            self.pending = Some((name, value));
            let path = Path::Key(self.path, name);
            return seed
                .deserialize(Decoder {
                    node: key,
                    path: &path,
                    skip: &[],
                })
                .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        let (name, node) = self
            .pending
            .take()
            .ok_or_else(|| <DecodeError as de::Error>::custom("value without a key"))?;
        let path = Path::Key(self.path, name);
        seed.deserialize(Decoder {
            node,
            path: &path,
            skip: &[],
        })
    }
}

mod parse;

#[cfg(test)]
mod tests;
