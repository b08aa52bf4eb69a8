//! ADS messages as gRPC bytes on the wire, built so that a response costs a stream next
//! to nothing once it is sent.
//!
//! Why not tonic's codec: its server encodes every message into one `BytesMut` per
//! stream and hands out `split_to` views of it, so each stream keeps an allocation as
//! large as its largest response alive for as long as it lives (issue 3: ~650 KB per idle
//! stream at 1k routes, 6 GB at 10k streams). Here a response is a [`Reply`] of two
//! `Bytes` that the HTTP/2 layer sends as they are and drops once written.
//!
//! A state-of-the-world response is split so that all but a few bytes are shared by
//! every stream sent the same resources ([`sotw_body`], cached in [`super::cache`]): the
//! only per-stream field is the nonce. Protobuf lets fields of a message come in any
//! order (protobuf encoding spec, "Field Order"), so the nonce goes first, right after the
//! gRPC length prefix, and the shared body follows unchanged.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;

use super::type_url;
use crate::snapshot::{Resource, ResourceType};

/// The gRPC message prefix: a compressed flag and a big-endian `u32` length.
const GRPC_HEADER: usize = 5;

/// `DiscoveryResponse` field numbers (envoy `discovery.proto`).
mod field {
    pub(super) const VERSION_INFO: u32 = 1;
    pub(super) const RESOURCES: u32 = 2;
    pub(super) const TYPE_URL: u32 = 4;
    pub(super) const NONCE: u32 = 5;
    /// `google.protobuf.Any`.
    pub(super) const ANY_TYPE_URL: u32 = 1;
    pub(super) const ANY_VALUE: u32 = 2;
}

/// One gRPC message ready to send: `head` then `body`, each sent as its own HTTP/2 data
/// chunk without copying.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    head: Bytes,
    body: Bytes,
}

// === impl Reply ===

impl Reply {
    /// A SotW response: the nonce field in front of a body from [`sotw_body`].
    pub(crate) fn sotw(body: Bytes, nonce: &str) -> Reply {
        let nonce_len = len_field_len(field::NONCE, nonce.len());
        let mut head = Vec::with_capacity(GRPC_HEADER + nonce_len);
        put_grpc_header(&mut head, nonce_len + body.len());
        put_len_field(&mut head, field::NONCE, nonce.as_bytes());
        Reply {
            head: Bytes::from(head),
            body,
        }
    }

    /// Any message, encoded into a buffer of exactly its size that is freed once sent.
    pub(crate) fn message(message: &impl prost::Message) -> Reply {
        let body = message.encode_to_vec();
        let mut head = Vec::with_capacity(GRPC_HEADER);
        put_grpc_header(&mut head, body.len());
        Reply {
            head: Bytes::from(head),
            body: Bytes::from(body),
        }
    }

    /// Its two chunks, in sending order.
    pub(crate) fn into_chunks(self) -> (Bytes, Bytes) {
        (self.head, self.body)
    }

    /// Its length on the wire, gRPC prefix included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

/// The encoded `DiscoveryResponse` fields every stream shares for one response set:
/// `version_info`, `resources` (each an `Any` around the snapshot's encoded body) and
/// `type_url`; everything but the nonce. Copies each body once, into one allocation of
/// exactly the right size.
pub(crate) fn sotw_body(kind: ResourceType, version: &str, resources: &[&Resource]) -> Bytes {
    let type_url = type_url::of(kind).as_bytes();
    let any_len = |r: &Resource| {
        len_field_len(field::ANY_TYPE_URL, type_url.len())
            + len_field_len(field::ANY_VALUE, r.body.len())
    };
    let len = len_field_len(field::VERSION_INFO, version.len())
        + resources
            .iter()
            .map(|r| message_field_len(field::RESOURCES, any_len(r)))
            .sum::<usize>()
        + len_field_len(field::TYPE_URL, type_url.len());
    let mut buf = Vec::with_capacity(len);
    put_len_field(&mut buf, field::VERSION_INFO, version.as_bytes());
    for r in resources {
        // A message field is always written, even when empty; a proto3 string or bytes
        // field is left out when empty, as prost does.
        encode_key(field::RESOURCES, WireType::LengthDelimited, &mut buf);
        encode_varint(any_len(r) as u64, &mut buf);
        put_len_field(&mut buf, field::ANY_TYPE_URL, type_url);
        put_len_field(&mut buf, field::ANY_VALUE, &r.body);
    }
    put_len_field(&mut buf, field::TYPE_URL, type_url);
    debug_assert_eq!(buf.len(), len, "sotw body length computed ahead");
    Bytes::from(buf)
}

/// Bytes of a length-delimited field holding `len` bytes; 0 when empty (left out).
fn len_field_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        message_field_len(tag, len)
    }
}

fn message_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_len_field(buf: &mut Vec<u8>, tag: u32, value: &[u8]) {
    if value.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
}

fn put_grpc_header(buf: &mut Vec<u8>, len: usize) {
    // The send path never builds a message near 4 GiB: resources come from a snapshot
    // that was itself encoded in memory; saturate rather than wrap if it ever did.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    buf.put_u8(0);
    buf.put_u32(len);
}

/// The requests of one stream, decoded from its HTTP/2 body.
///
/// Not tonic's `Streaming`: that keeps a buffer as large as the stream's largest request
/// for the stream's life, and an EDS ACK repeats every subscribed name (13 KB at 400
/// clusters), a third of what an idle stream cost at 10k streams. Here bytes are held
/// only while a message is incomplete, and freed once it is decoded.
#[derive(Debug)]
pub(crate) struct Requests<T> {
    body: tonic::body::Body,
    /// Received bytes not yet decoded; unallocated between messages.
    pending: BytesMut,
    max_len: usize,
    ended: bool,
    message: PhantomData<fn() -> T>,
}

// === impl Requests ===

impl<T: prost::Message + Default> Requests<T> {
    /// Requests from `body`, each at most `max_len` bytes.
    pub(crate) fn new(body: tonic::body::Body, max_len: usize) -> Requests<T> {
        Requests {
            body,
            pending: BytesMut::new(),
            max_len,
            ended: false,
            message: PhantomData,
        }
    }

    /// The next whole message in `pending`, if there is one.
    fn decode_next(&mut self) -> Option<Result<T, Status>> {
        let header = self.pending.get(..GRPC_HEADER)?;
        let compressed = header[0] != 0;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if compressed {
            self.ended = true;
            return Some(Err(Status::unimplemented(
                "compressed request message: attache accepts uncompressed messages only",
            )));
        }
        if len > self.max_len {
            self.ended = true;
            return Some(Err(Status::out_of_range(format!(
                "request message of {len} bytes is larger than the limit of {} bytes",
                self.max_len
            ))));
        }
        let Some(missing) = (GRPC_HEADER + len).checked_sub(self.pending.len()) else {
            return Some(self.take(len));
        };
        if missing == 0 {
            return Some(self.take(len));
        }
        self.pending.reserve(missing);
        None
    }

    fn take(&mut self, len: usize) -> Result<T, Status> {
        let message = self.pending.split_to(GRPC_HEADER + len);
        if self.pending.is_empty() {
            // Drop our share of the allocation; `message` frees it after decoding.
            self.pending = BytesMut::new();
        }
        T::decode(&message[GRPC_HEADER..]).map_err(|e| {
            Status::invalid_argument(format!(
                "undecodable {}: {e}",
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("request")
            ))
        })
    }
}

impl<T: prost::Message + Default> futures::Stream for Requests<T> {
    type Item = Result<T, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<T, Status>>> {
        use http_body::Body as _;
        use std::task::Poll;
        loop {
            if !self.ended
                && let Some(result) = self.decode_next()
            {
                return Poll::Ready(Some(result));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers carry nothing a request needs.
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(status))) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    if !self.pending.is_empty() {
                        return Poll::Ready(Some(Err(Status::invalid_argument(format!(
                            "request stream ended inside a message ({} bytes of it received)",
                            self.pending.len()
                        )))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
    use prost::Message;

    use super::*;
    use crate::xds::to_any;

    fn resource(name: &str, body: &[u8]) -> Resource {
        Resource::new(name.to_owned(), Bytes::copy_from_slice(body))
    }

    fn decode(reply: Reply) -> DiscoveryResponse {
        let (head, body) = reply.into_chunks();
        let mut wire = head.to_vec();
        wire.extend_from_slice(&body);
        assert_eq!(wire[0], 0, "uncompressed");
        let len = u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]) as usize;
        assert_eq!(len, wire.len() - GRPC_HEADER, "length prefix");
        DiscoveryResponse::decode(&wire[GRPC_HEADER..]).expect("decodes")
    }

    #[test]
    fn a_sotw_reply_decodes_as_the_response_prost_would_build() {
        let big = vec![7u8; 300];
        let resources = [
            resource("a", b"\x0a\x01a"),
            resource("empty", b""),
            resource("big", &big),
        ];
        let set: Vec<&Resource> = resources.iter().collect();
        for kind in ResourceType::ALL {
            let body = sotw_body(kind, "v1", &set);
            let reply = Reply::sotw(body.clone(), "42");
            let len = reply.len();
            let expected = DiscoveryResponse {
                version_info: "v1".to_owned(),
                resources: set.iter().map(|r| to_any(kind, r)).collect(),
                type_url: type_url::of(kind).to_owned(),
                nonce: "42".to_owned(),
                ..Default::default()
            };
            assert_eq!(len, GRPC_HEADER + expected.encoded_len());
            assert_eq!(decode(reply), expected);
        }
    }

    #[test]
    fn replies_share_the_body_and_differ_only_in_the_nonce() {
        let r = resource("a", b"\x0a\x01a");
        let body = sotw_body(ResourceType::Cluster, "v", &[&r]);
        let (head1, body1) = Reply::sotw(body.clone(), "1").into_chunks();
        let (head2, body2) = Reply::sotw(body.clone(), "1000").into_chunks();
        assert_eq!(body1.as_ptr(), body.as_ptr(), "no copy of the shared body");
        assert_eq!(body2.as_ptr(), body.as_ptr());
        assert_ne!(head1, head2);
    }

    #[test]
    fn an_empty_set_is_a_valid_response() {
        let reply = Reply::sotw(sotw_body(ResourceType::Route, "v0", &[]), "1");
        let decoded = decode(reply);
        assert!(decoded.resources.is_empty());
        assert_eq!(decoded.version_info, "v0");
        assert_eq!(decoded.nonce, "1");
    }

    /// A body of the given chunks, as HTTP/2 would deliver them.
    fn body(chunks: Vec<Vec<u8>>) -> tonic::body::Body {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Status>(http_body::Frame::data(Bytes::from(c))));
        tonic::body::Body::new(frames_body(frames))
    }

    /// A body over an iterator of frames.
    fn frames_body(
        frames: impl Iterator<Item = Result<http_body::Frame<Bytes>, Status>> + Send + 'static,
    ) -> impl http_body::Body<Data = Bytes, Error = Status> + Send + 'static {
        struct Frames<I>(I);
        impl<I: Iterator<Item = Result<http_body::Frame<Bytes>, Status>> + Unpin> http_body::Body
            for Frames<I>
        {
            type Data = Bytes;
            type Error = Status;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
                std::task::Poll::Ready(self.0.next())
            }
        }
        Frames(frames.collect::<Vec<_>>().into_iter())
    }

    fn framed(message: &impl prost::Message) -> Vec<u8> {
        let (head, body) = Reply::message(message).into_chunks();
        [head.to_vec(), body.to_vec()].concat()
    }

    async fn all(requests: Requests<DiscoveryRequest>) -> Vec<Result<DiscoveryRequest, Status>> {
        use futures::StreamExt;
        requests.collect().await
    }

    #[tokio::test]
    async fn requests_split_and_joined_across_chunks_decode_in_order() {
        let a = DiscoveryRequest {
            type_url: "a".into(),
            resource_names: (0..100).map(|i| format!("name-{i}")).collect(),
            ..Default::default()
        };
        let b = DiscoveryRequest {
            type_url: "b".into(),
            ..Default::default()
        };
        let wire = [framed(&a), framed(&b)].concat();
        // One byte at a time, then all at once.
        let chunks = wire.iter().map(|b| vec![*b]).collect();
        for body in [body(chunks), body(vec![wire.clone()])] {
            let got: Vec<_> = all(Requests::new(body, 1 << 20))
                .await
                .into_iter()
                .map(|r| r.expect("decodes"))
                .collect();
            assert_eq!(got, [a.clone(), b.clone()]);
        }
    }

    #[tokio::test]
    async fn bad_requests_end_the_stream_with_a_status_naming_the_problem() {
        let cases: [(Vec<u8>, tonic::Code, &str); 4] = [
            (
                vec![0, 0, 0, 0, 3, 0xff, 0xff, 0xff],
                tonic::Code::InvalidArgument,
                "DiscoveryRequest",
            ),
            (
                vec![1, 0, 0, 0, 1, 0],
                tonic::Code::Unimplemented,
                "compressed",
            ),
            (vec![0, 0, 0, 4, 1], tonic::Code::OutOfRange, "1025 bytes"),
            (
                vec![0, 0, 0, 0, 9, 1, 2],
                tonic::Code::InvalidArgument,
                "ended inside",
            ),
        ];
        for (wire, code, says) in cases {
            let got = all(Requests::new(body(vec![wire]), 1024)).await;
            assert_eq!(got.len(), 1, "one error, then the end");
            let status = got[0].as_ref().expect_err("an error");
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(says), "{status:?}");
        }
    }

    #[test]
    fn any_message_is_framed_whole() {
        let response = DiscoveryResponse {
            version_info: "x".to_owned(),
            nonce: "9".to_owned(),
            ..Default::default()
        };
        assert_eq!(decode(Reply::message(&response)), response);
    }
}
