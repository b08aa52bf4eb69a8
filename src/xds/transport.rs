//! The ADS gRPC service as a plain HTTP/2 service: requests decoded from the body as
//! they arrive ([`super::wire::Requests`]), responses sent as the [`Reply`] chunks the
//! stream tasks build.
//!
//! tonic's generated server would encode every response again into a per-stream buffer
//! that stays as large as the stream's largest response ([`super::wire`] says why that
//! matters). Here the response body hands HTTP/2 the chunks as they are: for SotW a
//! small per-stream head and a body shared by every stream. The rest of the gRPC
//! contract is kept: `application/grpc`, the status in trailers, `UNIMPLEMENTED` for
//! unknown methods and for compressed requests (attache accepts none, as before).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

use super::server::AdsService;
use super::wire::Reply;

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

static SENT: AtomicU64 = AtomicU64::new(0);

/// Bytes of ADS responses this process has handed to HTTP/2 so far (gRPC framing
/// included), all servers together. SotW resends a changed type's full state to every
/// node, so this, not encoding, is what a publish to a large fleet costs.
pub fn sent_bytes() -> u64 {
    SENT.load(Ordering::Relaxed)
}

/// The ADS service for tonic's router.
#[derive(Debug, Clone)]
pub(crate) struct AdsRouter {
    service: AdsService,
}

// === impl AdsRouter ===

impl AdsRouter {
    pub(crate) fn new(service: AdsService) -> AdsRouter {
        AdsRouter { service }
    }

    fn respond(&self, request: Request<Body>) -> Response<Body> {
        let path = request.uri().path();
        if path != SOTW_PATH && path != DELTA_PATH {
            return Status::unimplemented(format!("attache serves no gRPC method {path}"))
                .into_http();
        }
        if let Some(encoding) = request.headers().get("grpc-encoding")
            && encoding != "identity"
        {
            return Status::unimplemented(format!(
                "request compression {encoding:?} is not supported; send uncompressed messages"
            ))
            .into_http();
        }
        let rx = if path == SOTW_PATH {
            self.service.open_sotw(request.into_body())
        } else {
            self.service.open_delta(request.into_body())
        };
        let mut response = Response::new(Body::new(ReplyBody::new(rx)));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        response
    }
}

impl NamedService for AdsRouter {
    const NAME: &'static str = SERVICE;
}

impl tower_service::Service<Request<Body>> for AdsRouter {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        std::future::ready(Ok(self.respond(request)))
    }
}

/// A response body over a stream's send buffer: each [`Reply`] as two data chunks, then
/// the stream's status as trailers (OK when the stream task ends without one).
#[derive(Debug)]
struct ReplyBody {
    rx: mpsc::Receiver<Result<Reply, Status>>,
    /// The second chunk of the reply whose first chunk went out last.
    next: Option<Bytes>,
    ended: bool,
}

// === impl ReplyBody ===

impl ReplyBody {
    fn new(rx: mpsc::Receiver<Result<Reply, Status>>) -> ReplyBody {
        ReplyBody {
            rx,
            next: None,
            ended: false,
        }
    }
}

impl http_body::Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.next.take() {
            SENT.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let status = match self.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(reply))) => {
                let (head, body) = reply.into_chunks();
                SENT.fetch_add(head.len() as u64, Ordering::Relaxed);
                if !body.is_empty() {
                    self.next = Some(body);
                }
                return Poll::Ready(Some(Ok(Frame::data(head))));
            }
            Poll::Ready(Some(Err(status))) => status,
            Poll::Ready(None) => Status::ok(""),
        };
        self.ended = true;
        self.rx.close();
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.next.is_none()
    }
}

/// `grpc-status` and `grpc-message` for `status`.
fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        // Only metadata that is no valid header gets here; the code still goes out.
        map.clear();
        let _ = Status::new(status.code(), "").add_header(&mut map);
    }
    map
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    /// Polls a body to its end without an HTTP stack: its data chunks and trailers.
    async fn collect(mut body: ReplyBody) -> (Vec<Bytes>, Option<HeaderMap>) {
        use http_body::Body as _;
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let Ok(frame) = frame;
            match frame.into_data() {
                Ok(chunk) => data.push(chunk),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        (data, trailers)
    }

    #[tokio::test]
    async fn replies_go_out_as_their_chunks_then_ok_trailers() {
        let (tx, rx) = mpsc::channel(4);
        let shared = Bytes::from_static(b"shared body");
        tx.send(Ok(Reply::sotw(shared.clone(), "1"))).await.unwrap();
        tx.send(Ok(Reply::sotw(shared.clone(), "2"))).await.unwrap();
        drop(tx);
        let (data, trailers) = collect(ReplyBody::new(rx)).await;
        assert_eq!(data.len(), 4);
        assert_eq!(data[1].as_ptr(), shared.as_ptr(), "sent without a copy");
        assert_eq!(data[3].as_ptr(), shared.as_ptr());
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[tokio::test]
    async fn an_error_ends_the_body_with_its_status() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Err(Status::invalid_argument(
            "no node in the first request",
        )))
        .await
        .unwrap();
        // Anything after the status is not sent.
        tx.send(Ok(Reply::sotw(Bytes::from_static(b"x"), "1")))
            .await
            .unwrap();
        let (data, trailers) = collect(ReplyBody::new(rx)).await;
        assert!(data.is_empty());
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "3");
        assert_eq!(
            trailers["grpc-message"],
            "no%20node%20in%20the%20first%20request"
        );
    }
}
