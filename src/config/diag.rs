//! Diagnostics: what is wrong (or suspicious) in a revision, and exactly where.
//!
//! Rendered rustc-style, one line each, so editors and CI logs can jump to the place:
//! `mappings/users.yaml:12:5: error: Mapping "users": spec.prefix: must start with "/"`.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::model::Kind;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The resource is invalid; by default the whole revision is rejected.
    Error,
    /// Valid but probably not what was meant; the revision is still served.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// The resource a diagnostic is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceRef {
    /// As written in YAML (`Mapping`, `TLSContext`, or an unknown kind's own spelling).
    pub kind: String,
    pub name: String,
}

impl ResourceRef {
    /// A reference to a resource of a known kind.
    pub fn new(kind: Kind, name: &str) -> Self {
        ResourceRef {
            kind: kind.as_str().to_owned(),
            name: name.to_owned(),
        }
    }
}

/// One problem found in a revision.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Diagnostic {
    /// Path relative to the config root.
    pub file: Arc<str>,
    /// 1-based; 0 when the problem is about the file as a whole.
    pub line: u32,
    pub column: u32,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    /// Field path such as `spec.headers[0].name`; empty when not about one field.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
    pub message: String,
}

impl Diagnostic {
    /// Whether this diagnostic makes its resource invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}: ", self.severity)?;
        if let Some(r) = &self.resource {
            write!(f, "{} {:?}: ", r.kind, r.name)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}
