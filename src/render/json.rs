//! One envoy-types message <-> its proto3 JSON form.
//!
//! The message is encoded with prost, decoded as a
//! [`DynamicMessage`] against the descriptor of the same name, and serialized by
//! prost-reflect. The round trip through bytes is what lets a generated Rust type meet a
//! runtime descriptor; it also resolves every `Any` by its type URL, so packed filter
//! configs print with their `"@type"` and fields instead of base64.

use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

use super::{Error, Result, descriptor_pool};

/// `msg` in the proto3 JSON mapping: proto (snake_case) field names, which Envoy's docs
/// and examples use, and no fields at their default value.
///
/// # Errors
///
/// [`Error::UnknownType`] when the descriptor set lacks `M`, [`Error::Json`] when a nested
/// `Any` names a type it lacks.
pub fn to_json<M: prost::Name + prost::Message>(msg: &M) -> Result<serde_json::Value> {
    let descriptor = descriptor::<M>()?;
    let dynamic =
        DynamicMessage::decode(descriptor, msg.encode_to_vec().as_slice()).map_err(|source| {
            Error::Decode {
                type_name: M::full_name(),
                source,
            }
        })?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| Error::Json {
            type_name: M::full_name(),
            source,
        })
}

/// Parses `value` (proto3 JSON, either field-name spelling) into an `M`; the inverse of
/// [`to_json`]. Unknown fields are errors, as they are for Envoy.
///
/// # Errors
///
/// [`Error::UnknownType`] when the descriptor set lacks `M`; [`Error::Json`] when `value`
/// does not fit `M`; [`Error::Decode`] when the transcoded bytes do not decode as `M`.
pub fn from_json<M: prost::Name + prost::Message + Default>(
    value: &serde_json::Value,
) -> Result<M> {
    let descriptor = descriptor::<M>()?;
    let json_error = |source| Error::Json {
        type_name: M::full_name(),
        source,
    };
    let dynamic =
        DynamicMessage::deserialize_with_options(descriptor, value, &DeserializeOptions::new())
            .map_err(json_error)?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|source| Error::Decode {
        type_name: M::full_name(),
        source,
    })
}

fn descriptor<M: prost::Name>() -> Result<MessageDescriptor> {
    let type_name = M::full_name();
    descriptor_pool()
        .get_message_by_name(&type_name)
        .ok_or(Error::UnknownType { type_name })
}

#[cfg(test)]
mod tests;
