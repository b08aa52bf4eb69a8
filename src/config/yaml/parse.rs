//! Text -> [`Node`] trees, from the YAML parser's event stream.
//!
//! We build the tree from granit-parser's events (the parser under serde-saphyr) rather
//! than through serde-saphyr's `Spanned` deserializer: the event path is about three times
//! faster (7 µs against 22 µs per Mapping document), which is most of what loading a
//! 10k-Mapping repository costs, and it lets us enforce our limits where they bite: depth
//! as collections open, alias expansion as aliases are resolved, before any copy is made.
//!
//! Scalars resolve by the YAML 1.2 core schema, with two deliberate narrowings a gateway
//! config wants: booleans are only `true`/`false` (never `yes`, `on`, `y`), and a quoted
//! or block scalar is always a string.

use std::collections::HashMap;
use std::collections::HashSet;

use granit_parser::{Event, Options, Parser, ScalarStyle, ScanError, Span};

use super::{Limits, Node, SyntaxError, Value};

/// Parses every document of `text` into a tree; empty documents come back as
/// [`Value::Null`] roots and are left for the caller to drop.
pub(super) fn documents(text: &str, limits: &Limits) -> Result<Vec<Node>, SyntaxError> {
    let mut options = Options::default();
    options.set_emit_comments(false);
    // Our own depth check fires first, with our message; these only bound the parser's stack.
    options.flow_nesting_limit = limits.max_depth.saturating_add(1);
    options.block_nesting_limit = limits.max_depth.saturating_add(1);
    let mut builder = Builder {
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        aliases: 0,
        nodes: 0,
        documents: Vec::new(),
    };
    for item in Parser::new_from_str_with_options(text, options) {
        let (event, span) = item.map_err(|e| scan_error(&e, limits))?;
        builder.event(event, span)?;
    }
    Ok(builder.documents)
}

fn scan_error(e: &ScanError, limits: &Limits) -> SyntaxError {
    let mark = e.marker();
    let mut message = e.info();
    // The scanner tokenizes ahead of the events, so its own nesting limit can fire before
    // our depth check sees the collection open; say it the same way.
    if message.starts_with("recursion limit exceeded") {
        message = format!("nested deeper than {} levels", limits.max_depth);
    }
    SyntaxError {
        line: clamp(mark.line()),
        column: clamp(mark.col() + 1),
        message,
    }
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

fn position(span: &Span) -> (u32, u32) {
    (clamp(span.start.line()), clamp(span.start.col() + 1))
}

/// A collection being built.
struct Frame {
    line: u32,
    column: u32,
    anchor: usize,
    /// `nodes` when the collection opened: its size is the difference when it closes.
    nodes_before: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        /// Scalar keys seen, kept once the mapping is big enough that scanning
        /// `entries` for duplicates would cost more than hashing.
        seen: Option<HashSet<String>>,
    },
}

/// Mappings up to this size check duplicate keys by scanning their entries.
const SCAN_KEYS_UP_TO: usize = 16;

struct Builder<'l> {
    limits: &'l Limits,
    stack: Vec<Frame>,
    /// Anchored nodes with their size in nodes, for aliases to copy and count.
    anchors: HashMap<usize, (Node, usize)>,
    aliases: usize,
    /// Nodes made so far, alias expansions included.
    nodes: usize,
    documents: Vec<Node>,
}

impl Builder<'_> {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        let (line, column) = position(&span);
        match event {
            Event::DocumentStart(..) => {
                // Anchors are scoped to their document.
                self.anchors.clear();
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, line, column)?;
                let is_str_tag = tag
                    .as_deref()
                    .is_some_and(|t| t.is_yaml_core_schema_tag("str"));
                let value = if style == ScalarStyle::Plain && !is_str_tag {
                    resolve_plain(&text)
                } else {
                    Value::Str(text.into_owned())
                };
                self.finish(
                    Node {
                        value,
                        line,
                        column,
                    },
                    anchor,
                    1,
                )?;
            }
            Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _) => {
                if self.stack.len() >= self.limits.max_depth {
                    return Err(SyntaxError {
                        line,
                        column,
                        message: format!("nested deeper than {} levels", self.limits.max_depth),
                    });
                }
                self.count(1, line, column)?;
                let kind = if matches!(event, Event::SequenceStart(..)) {
                    FrameKind::Seq(Vec::new())
                } else {
                    FrameKind::Map {
                        entries: Vec::new(),
                        key: None,
                        seen: None,
                    }
                };
                self.stack.push(Frame {
                    line,
                    column,
                    anchor,
                    nodes_before: self.nodes - 1,
                    kind,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Err(SyntaxError {
                        line,
                        column,
                        message: "unbalanced collection end".to_owned(),
                    });
                };
                let value = match frame.kind {
                    FrameKind::Seq(items) => Value::Seq(items),
                    FrameKind::Map { entries, .. } => Value::Map(entries),
                };
                let size = self.nodes - frame.nodes_before;
                let node = Node {
                    value,
                    line: frame.line,
                    column: frame.column,
                };
                self.finish(node, frame.anchor, size)?;
            }
            Event::Alias(id) => {
                self.aliases += 1;
                if self.aliases > self.limits.max_aliases {
                    return Err(self.bomb(line, column));
                }
                let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
                    return Err(SyntaxError {
                        line,
                        column,
                        message: "alias to an unknown anchor".to_owned(),
                    });
                };
                // Count before copying: the copy is what an alias bomb makes expensive.
                if self.count(size, line, column).is_err() {
                    return Err(self.bomb(line, column));
                }
                let Some((node, _)) = self.anchors.get(&id) else {
                    return Ok(());
                };
                let mut copy = node.clone();
                copy.line = line;
                copy.column = column;
                self.finish(copy, 0, size)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn count(&mut self, n: usize, line: u32, column: u32) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            return Err(SyntaxError {
                line,
                column,
                message: format!(
                    "more than {} YAML nodes in one file; split it",
                    self.limits.max_nodes
                ),
            });
        }
        Ok(())
    }

    fn bomb(&self, line: u32, column: u32) -> SyntaxError {
        SyntaxError {
            line,
            column,
            message: format!(
                "YAML expands beyond attache's limits for one file (at most {} aliases and {} \
                 nodes after alias expansion); is this an alias bomb?",
                self.limits.max_aliases, self.limits.max_nodes
            ),
        }
    }

    /// A complete node: remember it if anchored, then hand it to its parent.
    fn finish(&mut self, node: Node, anchor: usize, size: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        let Some(parent) = self.stack.last_mut() else {
            self.documents.push(node);
            return Ok(());
        };
        match &mut parent.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map { entries, key, seen } => match key.take() {
                Some(k) => entries.push((k, node)),
                None => {
                    if let Some(name) = scalar_key(&node.value) {
                        let duplicate = match seen {
                            Some(set) => !set.insert(name.clone()),
                            None => {
                                let dup = entries
                                    .iter()
                                    .any(|(k, _)| scalar_key(&k.value).as_ref() == Some(&name));
                                if entries.len() >= SCAN_KEYS_UP_TO {
                                    let mut set: HashSet<String> = entries
                                        .iter()
                                        .filter_map(|(k, _)| scalar_key(&k.value))
                                        .collect();
                                    set.insert(name.clone());
                                    *seen = Some(set);
                                }
                                dup
                            }
                        };
                        if duplicate {
                            return Err(SyntaxError {
                                line: node.line,
                                column: node.column,
                                message: format!(
                                    "duplicate key `{name}`: YAML keeps only one of them, so \
                                     this is refused"
                                ),
                            });
                        }
                    }
                    *key = Some(node);
                }
            },
        }
        Ok(())
    }
}

/// The text a scalar key compares by, for duplicate detection.
fn scalar_key(value: &Value) -> Option<String> {
    match value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Null => Some("null".to_owned()),
        Value::Seq(_) | Value::Map(_) => None,
    }
}

/// A plain scalar by the YAML 1.2 core schema, booleans narrowed to `true`/`false`.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let bytes = text.as_bytes();
    // Cheap reject: every number starts with a digit, a sign or a dot.
    if !matches!(bytes[0], b'0'..=b'9' | b'-' | b'+' | b'.') {
        return Value::Str(text.to_owned());
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(n) = i128::from_str_radix(hex, 16)
    {
        return Value::Int(n);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(n) = i128::from_str_radix(oct, 8)
    {
        return Value::Int(n);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<i128>() {
            return Value::Int(n);
        }
        // Too long for an integer: a string, never a silently rounded number.
        return Value::Str(text.to_owned());
    }
    if is_core_float(digits)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_owned())
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`, sign already removed.
fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (mantissa, None),
    };
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(frac) => all_digits(int) && all_digits(frac) && (!int.is_empty() || !frac.is_empty()),
        None => !int.is_empty() && all_digits(int),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_resolve_by_the_core_schema() {
        assert_eq!(resolve_plain("42"), Value::Int(42));
        assert_eq!(resolve_plain("-7"), Value::Int(-7));
        assert_eq!(resolve_plain("0x1f"), Value::Int(31));
        assert_eq!(resolve_plain("1.5"), Value::Float(1.5));
        assert_eq!(resolve_plain("1e3"), Value::Float(1000.0));
        assert_eq!(resolve_plain("true"), Value::Bool(true));
        assert_eq!(resolve_plain("~"), Value::Null);
        // Narrowed: YAML 1.1 booleans and odd number-likes stay strings.
        for s in [
            "yes",
            "on",
            "y",
            "no",
            "1.2.3",
            "1_000",
            "127.0.0.1",
            "inf",
            "nan",
            "-",
            ".",
        ] {
            assert_eq!(resolve_plain(s), Value::Str(s.to_owned()), "{s}");
        }
        let huge = "9".repeat(60);
        assert_eq!(resolve_plain(&huge), Value::Str(huge.clone()));
    }

    #[test]
    fn quoted_scalars_are_strings_and_positions_are_one_based() {
        let docs = documents("a: \"42\"\nb: 42\nc: !!str 43\n", &Limits::default()).unwrap();
        let root = &docs[0];
        assert_eq!(root.get("a").unwrap().value, Value::Str("42".into()));
        assert_eq!(root.get("b").unwrap().value, Value::Int(42));
        assert_eq!(root.get("c").unwrap().value, Value::Str("43".into()));
        let b = root.get("b").unwrap();
        assert_eq!((b.line, b.column), (2, 4));
    }

    #[test]
    fn aliases_copy_their_anchor_and_duplicates_are_refused() {
        let docs = documents("a: &x [1, 2]\nb: *x\n", &Limits::default()).unwrap();
        assert_eq!(
            docs[0].get("a").unwrap().value,
            docs[0].get("b").unwrap().value
        );
        let err = documents("a: 1\nb: 2\na: 3\n", &Limits::default()).unwrap_err();
        assert_eq!((err.line, err.column), (3, 1));
        assert!(err.message.contains("duplicate key `a`"), "{err}");
        // Past the scan threshold the hashed path finds it too.
        let mut big: String = (0..40).map(|i| format!("k{i}: {i}\n")).collect();
        big.push_str("k3: again\n");
        let err = documents(&big, &Limits::default()).unwrap_err();
        assert_eq!(err.line, 41);
    }
}
