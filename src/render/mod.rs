//! Rendering: Envoy resources as the proto3 JSON (or YAML) that Envoy itself reads.
//!
//! prost encodes protobuf but has no JSON mapping, and hand-writing JSON per message would
//! drift from the API. So `build.rs` compiles envoy-types' own `.proto` files into a
//! descriptor set, and [`json`] transcodes any envoy-types message through prost-reflect's
//! [`DynamicMessage`](prost_reflect::DynamicMessage): the JSON follows the canonical
//! mapping (`Any` as `"@type"` plus fields, durations as `"5s"`) with proto field names,
//! exactly what `envoy -c file.json` or `.yaml` parses.
//!
//! The parts:
//! - [`json`]: one message <-> JSON value, through the [`descriptor_pool`];
//! - [`bootstrap`]: every resource of a revision in one static Envoy bootstrap (RDS, EDS
//!   and SDS references resolved inline), so Envoy can run or `--mode validate` a
//!   translation without an xDS server;
//! - [`document`]: what `attache render` prints, resources by type with private keys
//!   redacted, or the bootstrap, as JSON or YAML.

pub mod bootstrap;
pub mod document;
pub mod json;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::LazyLock;

use prost_reflect::DescriptorPool;

pub use bootstrap::static_bootstrap;
pub use document::{Format, bootstrap_document, resources_document, to_text, write_resources};
pub use json::{from_json, to_json, to_json_without};

/// Rendering failed. None of these is retryable: each means the descriptor set and the
/// messages disagree (a build problem: a `.proto` file missing from `build.rs`) or the
/// input JSON does not fit the message type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The descriptor set has no message of this name; add its `.proto` root in `build.rs`.
    #[error("message type {type_name} is not in the compiled descriptor set")]
    UnknownType {
        /// The full protobuf name, e.g. `envoy.config.cluster.v3.Cluster`.
        type_name: String,
    },
    /// The message's bytes did not decode against its descriptor.
    #[error("cannot decode {type_name} against its descriptor")]
    Decode {
        /// The full protobuf name of the message.
        type_name: String,
        /// What prost reported.
        #[source]
        source: prost::DecodeError,
    },
    /// The message's encoding could not be walked field by field.
    #[error("malformed encoding of {type_name}: {reason}")]
    Malformed {
        /// The full protobuf name of the message.
        type_name: String,
        /// What was wrong.
        reason: String,
    },
    /// Transcoding to or from JSON failed, for instance on an `Any` whose type URL names a
    /// type the descriptor set lacks, or JSON that does not fit the message.
    #[error("cannot transcode {type_name} to or from JSON")]
    Json {
        /// The full protobuf name of the message.
        type_name: String,
        /// What serde_json (and prost-reflect through it) reported.
        #[source]
        source: serde_json::Error,
    },
    /// Writing the rendered text failed (a closed pipe, a full disk).
    #[error("cannot write the rendered document")]
    Write {
        /// What the writer reported.
        #[source]
        source: std::io::Error,
    },
    /// The JSON value could not be written as YAML.
    #[error("cannot write the rendered document as YAML")]
    Yaml {
        /// What serde-saphyr reported.
        #[source]
        source: serde_saphyr::SerializeError,
    },
}

/// The result type of rendering.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The FileDescriptorSet `build.rs` compiled from envoy-types' `.proto` files.
static DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// The descriptors of every Envoy message attache renders (and everything they import),
/// decoded once on first use.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
        DescriptorPool::decode(DESCRIPTOR_SET)
            .expect("build.rs wrote this descriptor set with protox, which only emits valid ones")
    });
    &POOL
}
