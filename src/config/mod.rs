//! Configuration: YAML files -> validated [`Config`] plus diagnostics.
//!
//! Raw serde types (`raw`) mirror Emissary's YAML as closely as possible; `load`
//! turns them into the validated model (`model`) that `translate` consumes, reporting
//! every problem with file, line, column, kind/name and field path.

mod model;
pub mod yaml;

pub use model::*;
