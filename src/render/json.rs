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
    encoded_to_json(&descriptor::<M>()?, &msg.encode_to_vec())
}

/// [`to_json`] of `msg` with field number `field` left out.
///
/// A RouteConfiguration of 20k routes decodes into a dynamic message many times its own
/// size; rendering its virtual hosts (and their routes) one at a time, next to the message
/// without them, keeps `attache render` within its memory budget. The field is removed at
/// the wire level, so this works for any message without listing its other fields.
///
/// # Errors
///
/// As [`to_json`]; [`Error::Decode`] if the encoding cannot be walked (it always can for
/// bytes prost produced).
pub fn to_json_without<M: prost::Name + prost::Message>(
    msg: &M,
    field: u32,
) -> Result<serde_json::Value> {
    let descriptor = descriptor::<M>()?;
    let shell = without_field(&msg.encode_to_vec(), field).map_err(|reason| Error::Malformed {
        type_name: M::full_name(),
        reason,
    })?;
    encoded_to_json(&descriptor, &shell)
}

fn encoded_to_json(descriptor: &MessageDescriptor, bytes: &[u8]) -> Result<serde_json::Value> {
    let type_name = || descriptor.full_name().to_owned();
    let dynamic =
        DynamicMessage::decode(descriptor.clone(), bytes).map_err(|source| Error::Decode {
            type_name: type_name(),
            source,
        })?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| Error::Json {
            type_name: type_name(),
            source,
        })
}

/// The top-level records of an encoded message, minus those of field `field`.
fn without_field(bytes: &[u8], field: u32) -> Result<Vec<u8>, String> {
    use prost::bytes::Buf;
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while rest.has_remaining() {
        let start = bytes.len() - rest.len();
        let (tag, wire_type) = decode_key(&mut rest).map_err(|e| e.to_string())?;
        let skip = match wire_type {
            WireType::Varint => {
                decode_varint(&mut rest).map_err(|e| e.to_string())?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut rest).map_err(|e| e.to_string())?;
                usize::try_from(len).map_err(|_| format!("length {len} does not fit in memory"))?
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err("groups are not used by proto3".to_owned());
            }
        };
        if rest.remaining() < skip {
            return Err("a field runs past the end of the message".to_owned());
        }
        rest.advance(skip);
        if tag != field {
            out.extend_from_slice(&bytes[start..bytes.len() - rest.len()]);
        }
    }
    Ok(out)
}

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
