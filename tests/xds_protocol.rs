//! Issue 3, protocol edge cases: attache's ADS server driven by a tonic client.
//!
//! "Nothing was sent" is never proved by waiting: the server answers a stream's requests
//! in order, so each test sends a *probe* (a request that must be answered) and checks
//! that the probe's answer is the next response.
mod util;
mod xds_util;

use std::net::SocketAddr;

use attache::snapshot::{Snapshot, StoreConfig};
use attache::translate::Resources;
use attache::xds::type_url::{CLUSTER, LISTENER, ROUTE};
use xds_util::{
    DeltaClient, Server, SotwClient, gateway, names, node, rejected_listener, resource_name,
    route_config, snapshot, static_cluster,
};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn base(rev: &str) -> Snapshot {
    snapshot(
        rev,
        &gateway(10_000, &[("/", "a")], &[("a", addr(1)), ("b", addr(2))]),
    )
}

#[tokio::test]
async fn sotw_ack_then_a_new_snapshot_is_pushed() {
    let server = Server::start(StoreConfig::default()).await;
    server.publish(base("r1")).await;
    let mut c = SotwClient::connect(server.addr, node("n1")).await;
    c.request(CLUSTER, &[], "", "").await;
    let r1 = c.recv().await;
    assert_eq!(names(&r1), ["a", "b"]);
    c.ack(&r1, &[]).await;
    server
        .until("the ACK recorded", |s| {
            s.node("n1").is_some_and(|n| {
                n.types.values().any(|t| {
                    t.acked
                        .as_ref()
                        .is_some_and(|a| a.version == r1.version_info)
                })
            })
        })
        .await;

    let next = gateway(
        10_000,
        &[("/", "a")],
        &[("a", addr(1)), ("b", addr(2)), ("c", addr(3))],
    );
    server.publish(snapshot("r2", &next)).await;
    let r2 = c.recv().await;
    assert_eq!(names(&r2), ["a", "b", "c"]);
    assert_ne!(r2.version_info, r1.version_info);
    assert_ne!(r2.nonce, r1.nonce);
}

#[tokio::test]
async fn sotw_stale_nonce_is_ignored() {
    let server = Server::start(StoreConfig::default()).await;
    let mut res = gateway(10_000, &[("/", "a")], &[("a", addr(1))]);
    res.routes.push(route_config("other", &[("/", "a")]));
    server.publish(snapshot("r1", &res)).await;
    let mut c = SotwClient::connect(server.addr, node("n1")).await;
    c.request(ROUTE, &["main"], "", "").await;
    let r1 = c.recv().await;
    assert_eq!(names(&r1), ["main"]);
    // A request with a nonce that is not the latest: ignored whole, even its new names.
    c.request(ROUTE, &["main", "other"], "", "not-a-nonce")
        .await;
    // Probe: a first CDS request must be answered next.
    c.request(CLUSTER, &[], "", "").await;
    let probe = c.recv().await;
    assert_eq!(probe.type_url, CLUSTER, "the stale request got a reply");
    // The same change with the latest nonce is honoured.
    c.request(ROUTE, &["main", "other"], &r1.version_info, &r1.nonce)
        .await;
    let r2 = c.recv().await;
    assert_eq!(r2.type_url, ROUTE);
    assert_eq!(names(&r2), ["main", "other"]);
}

#[tokio::test]
async fn unknown_type_url_is_ignored_and_missing_type_url_or_node_ends_the_stream() {
    let server = Server::start(StoreConfig::default()).await;
    server.publish(base("r1")).await;
    let mut c = SotwClient::connect(server.addr, node("n1")).await;
    c.request(
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        &[],
        "",
        "",
    )
    .await;
    c.request(CLUSTER, &[], "", "").await;
    assert_eq!(c.recv().await.type_url, CLUSTER);
    c.request("", &[], "", "").await;
    let status = c.status().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("type_url"), "{status}");

    let mut anonymous = SotwClient::connect(server.addr, node("")).await;
    anonymous.request(CLUSTER, &[], "", "").await;
    let status = anonymous.status().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("node"), "{status}");

    let mut absurd = SotwClient::connect(server.addr, node("n2")).await;
    let many: Vec<String> = (0..100_001).map(|i| format!("r{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    absurd.request(ROUTE, &many, "", "").await;
    let status = absurd.status().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("100001 resource names"),
        "{status}"
    );

    // The first stream's server is still fine for others.
    let mut other = SotwClient::connect(server.addr, node("n3")).await;
    other.request(CLUSTER, &[], "", "").await;
    assert_eq!(names(&other.recv().await), ["a", "b"]);
}

#[tokio::test]
async fn a_resource_asked_for_before_it_exists_is_sent_when_it_appears() {
    let server = Server::start(StoreConfig::default()).await;
    server.publish(base("r1")).await;
    let mut c = SotwClient::connect(server.addr, node("n1")).await;
    c.request(ROUTE, &["later"], "", "").await;
    c.request(CLUSTER, &[], "", "").await;
    let probe = c.recv().await;
    assert_eq!(
        probe.type_url, CLUSTER,
        "nothing to send for a missing route"
    );
    c.ack(&probe, &[]).await;

    let mut res = gateway(10_000, &[("/", "a")], &[("a", addr(1)), ("b", addr(2))]);
    res.routes.push(route_config("later", &[("/", "b")]));
    server.publish(snapshot("r2", &res)).await;
    let r = c.recv().await;
    assert_eq!(r.type_url, ROUTE);
    assert_eq!(names(&r), ["later"], "only the name asked for, once");
}

#[tokio::test]
async fn sotw_unsubscribe_stops_updates_for_that_name() {
    let server = Server::start(StoreConfig::default()).await;
    let two = |rev: &str, other_prefix: &str| {
        let mut res = gateway(10_000, &[("/", "a")], &[("a", addr(1))]);
        res.routes
            .push(route_config("other", &[(other_prefix, "a")]));
        snapshot(rev, &res)
    };
    server.publish(two("r1", "/x")).await;
    let mut c = SotwClient::connect(server.addr, node("n1")).await;
    c.request(ROUTE, &["main", "other"], "", "").await;
    let r1 = c.recv().await;
    assert_eq!(names(&r1), ["main", "other"]);
    c.ack(&r1, &["main"]).await;
    let r2 = c.recv().await;
    assert_eq!(names(&r2), ["main"]);
    c.ack(&r2, &["main"]).await;
    server.publish(two("r2", "/y")).await; // only "other" changes
    c.request(CLUSTER, &[], "", "").await;
    assert_eq!(
        c.recv().await.type_url,
        CLUSTER,
        "an unsubscribed change was pushed"
    );
}

#[tokio::test]
async fn a_nacked_version_is_never_resent_and_removals_wait() {
    let server = Server::start(StoreConfig::default()).await;
    server.publish(base("r1")).await;
    let mut c = SotwClient::connect(server.addr, node("n1")).await;
    c.request(CLUSTER, &[], "", "").await;
    let cds = c.recv().await;
    c.ack(&cds, &[]).await;
    c.request(LISTENER, &[], "", "").await;
    let lds1 = c.recv().await;
    c.ack(&lds1, &[]).await;

    // r2: a listener the node rejects.
    let mut bad = gateway(10_000, &[("/", "a")], &[("a", addr(1)), ("b", addr(2))]);
    bad.listeners = vec![rejected_listener("http", 10_000)];
    server.publish(snapshot("r2", &bad)).await;
    let lds2 = c.recv().await;
    assert_eq!(lds2.type_url, LISTENER);
    c.nack(&lds2, &[], &lds1.version_info, "bogus filter").await;
    server
        .until("the NACK recorded", |s| {
            s.node("n1")
                .is_some_and(|n| n.nacks.iter().any(|k| k.message == "bogus filter"))
        })
        .await;
    let nack = &server.store.node("n1").expect("node").nacks[0];
    assert_eq!(
        (nack.version.as_str(), nack.snapshot.as_str()),
        (lds2.version_info.as_str(), "r2+e0")
    );

    // r3: the same rejected listener, cluster "b" removed and "c" added. CDS goes out
    // keeping "b" (the node still routes with its old listener); LDS is not resent.
    let mut r3 = bad.clone();
    r3.clusters = vec![static_cluster("a", addr(1)), static_cluster("c", addr(3))];
    server.publish(snapshot("r3", &r3)).await;
    let cds3 = c.recv().await;
    assert_eq!(cds3.type_url, CLUSTER);
    assert_eq!(names(&cds3), ["a", "b", "c"], "make before break: b kept");
    c.ack(&cds3, &[]).await;
    c.request(ROUTE, &["main"], "", "").await;
    let probe = c.recv().await;
    assert_eq!(
        probe.type_url, ROUTE,
        "the rejected listener or a removal was sent"
    );
    c.ack(&probe, &["main"]).await;

    // r4: a good listener again: sent, and once ACKed the removal of "b" follows.
    let mut good = r3.clone();
    good.listeners = vec![xds_util::listener("http", 10_001, "main")];
    server.publish(snapshot("r4", &good)).await;
    let lds4 = c.recv().await;
    assert_eq!(lds4.type_url, LISTENER);
    assert_ne!(lds4.version_info, lds2.version_info);
    c.ack(&lds4, &[]).await;
    let cds4 = c.recv().await;
    assert_eq!(cds4.type_url, CLUSTER);
    assert_eq!(names(&cds4), ["a", "c"]);
}

#[tokio::test]
async fn make_before_break_order_on_a_change() {
    let server = Server::start(StoreConfig::default()).await;
    server.publish(base("r1")).await;
    let mut c = SotwClient::connect(server.addr, node("n1")).await;
    for (url, subscribed) in [(CLUSTER, vec![]), (LISTENER, vec![]), (ROUTE, vec!["main"])] {
        c.request(url, &subscribed, "", "").await;
        let r = c.recv().await;
        c.ack(&r, &subscribed).await;
    }
    // Everything changes: cluster "c" comes, "a" goes away.
    let next = gateway(10_001, &[("/", "c")], &[("b", addr(2)), ("c", addr(3))]);
    server.publish(snapshot("r2", &next)).await;
    let mut order = Vec::new();
    for _ in 0..4 {
        let r = c.recv().await;
        order.push((r.type_url.clone(), names(&r)));
        let subscribed: &[&str] = if r.type_url == ROUTE { &["main"] } else { &[] };
        c.ack(&r, subscribed).await;
    }
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        order,
        vec![
            (CLUSTER.to_owned(), s(&["a", "b", "c"])),
            (LISTENER.to_owned(), s(&["http"])),
            (ROUTE.to_owned(), s(&["main"])),
            (CLUSTER.to_owned(), s(&["b", "c"])),
        ]
    );
}

#[tokio::test]
async fn delta_updates_removals_missing_names_and_unsubscribe() {
    let server = Server::start(StoreConfig::default()).await;
    server.publish(base("r1")).await;
    let mut c = DeltaClient::connect(server.addr, node("d1")).await;
    c.subscribe(CLUSTER, &[], &[], "").await;
    let r1 = c.recv().await;
    let got: Vec<String> = r1.resources.iter().map(|r| r.name.clone()).collect();
    assert_eq!(got, ["a", "b"]);
    c.ack(&r1).await;

    c.subscribe(ROUTE, &["main", "nope"], &[], "").await;
    let rds = c.recv().await;
    assert_eq!(
        rds.resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["main"]
    );
    assert_eq!(
        rds.removed_resources,
        ["nope"],
        "a missing name is reported once"
    );
    c.ack(&rds).await;
    // Unsubscribed with a stale nonce: still honoured.
    c.subscribe(ROUTE, &[], &["main"], "stale").await;
    // Probe, so the unsubscribe is in before the publish.
    c.subscribe(LISTENER, &[], &[], "").await;
    let lds = c.recv().await;
    assert_eq!(lds.type_url, LISTENER, "an unsubscribe got a reply");
    c.ack(&lds).await;

    // r2: cluster b removed, route main changed, "nope" appears.
    let mut next = gateway(10_000, &[("/x", "a")], &[("a", addr(1))]);
    next.routes.push(route_config("nope", &[("/", "a")]));
    server.publish(snapshot("r2", &next)).await;
    let rds2 = c.recv().await;
    assert_eq!(rds2.type_url, ROUTE);
    assert_eq!(
        rds2.resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["nope"]
    );
    assert!(rds2.removed_resources.is_empty());
    c.ack(&rds2).await;
    let cds2 = c.recv().await;
    assert_eq!(cds2.type_url, CLUSTER);
    assert!(cds2.resources.is_empty());
    assert_eq!(cds2.removed_resources, ["b"]);
}

#[tokio::test]
async fn delta_reconnect_with_identical_versions_gets_no_push() {
    let server = Server::start(StoreConfig::default()).await;
    server.publish(base("r1")).await;
    let held = {
        let mut c = DeltaClient::connect(server.addr, node("d1")).await;
        c.subscribe(CLUSTER, &[], &[], "").await;
        let r = c.recv().await;
        c.ack(&r).await;
        r.resources
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let mut c = DeltaClient::connect(server.addr, node("d1")).await;
    c.send(
        envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest {
            type_url: CLUSTER.into(),
            initial_resource_versions: held,
            ..Default::default()
        },
    )
    .await;
    c.subscribe(ROUTE, &["main"], &[], "").await;
    let first = c.recv().await;
    assert_eq!(
        first.type_url, ROUTE,
        "identical clusters were pushed again"
    );
}

#[tokio::test]
async fn duplicate_streams_of_one_node_are_both_served() {
    let server = Server::start(StoreConfig::default()).await;
    server.publish(base("r1")).await;
    let mut one = SotwClient::connect(server.addr, node("same")).await;
    let mut two = SotwClient::connect(server.addr, node("same")).await;
    one.request(CLUSTER, &[], "", "").await;
    two.request(CLUSTER, &[], "", "").await;
    assert_eq!(names(&one.recv().await), ["a", "b"]);
    assert_eq!(names(&two.recv().await), ["a", "b"]);
    server
        .until("two streams", |s| {
            s.node("same").is_some_and(|n| n.streams.len() == 2)
        })
        .await;
    drop(two);
    server
        .until("one stream left", |s| {
            s.node("same").is_some_and(|n| n.streams.len() == 1)
        })
        .await;
}

#[tokio::test]
async fn a_node_that_never_reads_does_not_stall_others() {
    let server = Server::start(StoreConfig::default()).await;
    // Big route configurations, so a non-reading stream fills its HTTP/2 window fast.
    let big = |rev: &str| {
        let prefixes: Vec<String> = (0..4000).map(|i| format!("/{rev}/path/{i:06}")).collect();
        let routes: Vec<(&str, &str)> = prefixes.iter().map(|p| (p.as_str(), "a")).collect();
        let res: Resources = gateway(10_000, &routes, &[("a", addr(1))]);
        snapshot(rev, &res)
    };
    server.publish(big("r0")).await;
    let mut lazy = SotwClient::connect(server.addr, node("lazy")).await;
    lazy.request(ROUTE, &["main"], "", "").await;
    let mut busy = SotwClient::connect(server.addr, node("busy")).await;
    busy.request(ROUTE, &["main"], "", "").await;
    let mut last = busy.recv().await;
    const PUBLISHES: usize = 40;
    for i in 1..=PUBLISHES {
        let rev = format!("r{i}");
        server.publish(big(&rev)).await;
        busy.ack(&last, &["main"]).await;
        last = busy.recv().await;
        let body = &last.resources[0].value;
        assert_eq!(resource_name(ROUTE, body), "main");
        assert!(!last.version_info.is_empty(), "a response for {rev}");
    }
    // The lazy stream still gets the latest state, not a backlog, once it reads.
    // It skips what it missed: fewer responses than publishes reach it.
    let mut received = 1;
    let mut newest = lazy.recv().await;
    while newest.version_info != last.version_info && received <= PUBLISHES {
        newest = lazy.recv().await;
        received += 1;
    }
    assert_eq!(newest.version_info, last.version_info);
    assert!(
        received < PUBLISHES,
        "{received} responses: a backlog, not the latest state"
    );
}

#[tokio::test]
async fn responses_in_flight_are_bounded_across_the_fleet() {
    // One slot for the whole server: B's response waits until A answers its own.
    let config = attache::xds::Config {
        max_in_flight: 1,
        ..attache::xds::Config::default()
    };
    let server = Server::start_with(
        std::sync::Arc::new(attache::snapshot::Store::new(StoreConfig::default())),
        config,
    )
    .await;
    server.publish(base("r1")).await;
    let mut a = SotwClient::connect(server.addr, node("a")).await;
    a.request(CLUSTER, &[], "", "").await;
    let ra = a.recv().await;

    let mut b = SotwClient::connect(server.addr, node("b")).await;
    b.request(CLUSTER, &[], "", "").await;
    server
        .until("b's stream opened", |s| s.node("b").is_some())
        .await;
    // Give b's stream every chance to (wrongly) send; bounded, and only ever a false pass.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let b_state = server.store.node("b").expect("b is known");
    assert!(
        b_state.types.values().all(|t| t.sent.is_none()),
        "b was sent a response while a's was unanswered: {b_state:?}"
    );

    a.ack(&ra, &[]).await;
    let rb = b.recv().await;
    assert_eq!(names(&rb), ["a", "b"]);
}

/// Sends and receives raw message bytes, to put on the wire what no well-behaved
/// client would.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        *self
    }
    fn decoder(&mut self) -> RawCodec {
        *self
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `path` with `messages` (and a `grpc-encoding` header, if given) and returns
/// the status the call ends with; fails if a message comes back instead.
async fn raw_call(
    addr: SocketAddr,
    path: &'static str,
    messages: Vec<Vec<u8>>,
    encoding: Option<&'static str>,
) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(tokio_stream::iter(messages));
    if let Some(encoding) = encoding {
        request.metadata_mut().insert(
            "grpc-encoding",
            tonic::metadata::MetadataValue::from_static(encoding),
        );
    }
    let call = grpc.streaming(
        request,
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    );
    let response = match tokio::time::timeout(xds_util::WAIT, call)
        .await
        .expect("an answer in time")
    {
        Err(status) => return status,
        Ok(response) => response,
    };
    let mut stream = response.into_inner();
    match tokio::time::timeout(xds_util::WAIT, stream.message())
        .await
        .expect("an answer in time")
    {
        Err(status) => status,
        Ok(message) => panic!("expected the call to fail, got {message:?}"),
    }
}

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

#[tokio::test]
async fn bad_input_on_the_wire_gets_a_status_that_says_what_was_wrong() {
    let config = attache::xds::Config {
        max_request_bytes: 1024,
        ..attache::xds::Config::default()
    };
    let server = Server::start_with(
        std::sync::Arc::new(attache::snapshot::Store::new(StoreConfig::default())),
        config,
    )
    .await;
    server.publish(base("r1")).await;

    // Bytes that are no protobuf message.
    for (path, message) in [
        (SOTW_PATH, "DiscoveryRequest"),
        (DELTA_PATH, "DeltaDiscoveryRequest"),
    ] {
        let status = raw_call(server.addr, path, vec![vec![0xff, 0xff, 0xff]], None).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(message),
            "names the request type: {status:?}"
        );
    }

    // A request larger than the configured limit.
    let big = envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest {
        type_url: CLUSTER.to_owned(),
        resource_names: (0..200).map(|i| format!("cluster-{i}")).collect(),
        ..Default::default()
    };
    let status = raw_call(
        server.addr,
        SOTW_PATH,
        vec![prost::Message::encode_to_vec(&big)],
        None,
    )
    .await;
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("1024"),
        "names the limit: {status:?}"
    );

    // Compressed requests: attache accepts none.
    let status = raw_call(server.addr, SOTW_PATH, vec![vec![]], Some("gzip")).await;
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("gzip"), "{status:?}");

    // A method the ADS service does not have.
    let status = raw_call(
        server.addr,
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/NoSuchMethod",
        vec![vec![]],
        None,
    )
    .await;
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("NoSuchMethod"), "{status:?}");

    // The server still serves well-behaved nodes.
    let mut client = SotwClient::connect(server.addr, node("after")).await;
    client.request(CLUSTER, &[], "", "").await;
    assert_eq!(names(&client.recv().await), ["a", "b"]);
}
