//! Helpers for the xDS tests: hand-built Envoy resources, an attache ADS server on a
//! loopback port, a tonic ADS client that sees every response, and an Envoy started on
//! an `xds::bootstrap` bootstrap.
//!
//! Every wait is bounded; a hang fails the test with what was (not) received.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use attache::snapshot::{Snapshot, Store, StoreConfig};
use attache::translate::Resources;
use attache::xds;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, Node, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use envoy_types::util::pack_any;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

/// How long any single wait for a response may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

// --- resources --------------------------------------------------------------------

/// A gateway: listener `http` on 127.0.0.1:`port` with HCM over RDS `main`; route
/// configuration `main` routing each `(prefix, cluster)`; a STATIC cluster per backend.
pub fn gateway(port: u16, routes: &[(&str, &str)], clusters: &[(&str, SocketAddr)]) -> Resources {
    Resources {
        clusters: clusters
            .iter()
            .map(|(n, a)| static_cluster(n, *a))
            .collect(),
        endpoints: vec![],
        listeners: vec![listener("http", port, "main")],
        routes: vec![route_config("main", routes)],
        secrets: vec![],
    }
}

pub fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub fn socket(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

pub fn listener(name: &str, port: u16, route: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: route.into(),
            config_source: Some(ads()),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: Some(socket("127.0.0.1", port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A listener Envoy rejects: its filter names a config type no extension implements.
pub fn rejected_listener(name: &str, port: u16) -> Listener {
    let mut l = listener(name, port, "main");
    l.filter_chains[0].filters.insert(
        0,
        Filter {
            name: "attache.test.bogus".into(),
            config_type: Some(filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/attache.test.DoesNotExist".into(),
                value: vec![],
            })),
        },
    );
    l
}

pub fn route_config(name: &str, routes: &[(&str, &str)]) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: routes
                .iter()
                .map(|(prefix, cluster)| Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Prefix((*prefix).into())),
                        ..Default::default()
                    }),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            (*cluster).into(),
                        )),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn static_cluster(name: &str, addr: SocketAddr) -> Cluster {
    Cluster {
        name: name.into(),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(&addr.ip().to_string(), addr.port())),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn snapshot(rev: &str, resources: &Resources) -> Snapshot {
    Snapshot::new(rev, 0, resources).expect("test resources have unique names")
}

// --- server -----------------------------------------------------------------------

/// attache's ADS server on 127.0.0.1:0, stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<xds::Result<()>>,
}

impl Server {
    pub async fn start(config: StoreConfig) -> Server {
        Server::start_with(Arc::new(Store::new(config)), xds::Config::default()).await
    }

    pub async fn start_with(store: Arc<Store>, config: xds::Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(xds::serve_with(
            listener,
            store.clone(),
            config,
            shutdown.clone(),
        ));
        Server {
            addr,
            store,
            shutdown,
            task,
        }
    }

    /// Stops the server and waits (bounded) for it to return.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(WAIT, &mut self.task).await;
    }

    pub async fn publish(&self, snapshot: Snapshot) {
        self.store
            .publish(snapshot)
            .await
            .expect("consistent snapshot");
    }

    /// Polls the store (every 20 ms, at most `WAIT`) until `check` holds.
    pub async fn until(&self, what: &str, mut check: impl FnMut(&Store) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !check(&self.store) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        cluster: "test".into(),
        ..Default::default()
    }
}

// --- clients ----------------------------------------------------------------------

/// A SotW ADS stream driven by hand.
pub struct SotwClient {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    node: Node,
    sent_node: bool,
}

impl SotwClient {
    pub async fn connect(addr: SocketAddr, node: Node) -> SotwClient {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to attache");
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("open ADS stream")
            .into_inner();
        SotwClient {
            tx,
            rx,
            node,
            sent_node: false,
        }
    }

    /// Sends a request; the node goes on the first one only, as Envoy does.
    pub async fn send(&mut self, mut req: DiscoveryRequest) {
        if !self.sent_node {
            req.node = Some(self.node.clone());
            self.sent_node = true;
        }
        self.tx.send(req).await.expect("stream open");
    }

    pub async fn request(&mut self, type_url: &str, names: &[&str], version: &str, nonce: &str) {
        self.send(DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        })
        .await;
    }

    /// ACKs `resp`, keeping the subscription `names`.
    pub async fn ack(&mut self, resp: &DiscoveryResponse, names: &[&str]) {
        self.request(&resp.type_url, names, &resp.version_info, &resp.nonce)
            .await;
    }

    /// NACKs `resp` with `message`, claiming to hold `held_version`.
    pub async fn nack(
        &mut self,
        resp: &DiscoveryResponse,
        names: &[&str],
        held_version: &str,
        message: &str,
    ) {
        self.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            version_info: held_version.into(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(envoy_types::pb::google::rpc::Status {
                code: 3,
                message: message.into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    /// The next response; fails the test after `WAIT`.
    pub async fn recv(&mut self) -> DiscoveryResponse {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(resp))) => resp,
            Ok(Ok(None)) => panic!("stream ended while a response was expected"),
            Ok(Err(status)) => panic!("stream failed: {status}"),
            Err(_) => panic!("no response within {WAIT:?}"),
        }
    }

    /// The status the stream ends with.
    pub async fn status(&mut self) -> tonic::Status {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Err(status)) => status,
            Ok(Ok(other)) => panic!("expected the stream to fail, got {other:?}"),
            Err(_) => panic!("stream neither failed nor answered within {WAIT:?}"),
        }
    }
}

/// A delta ADS stream driven by hand.
pub struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    node: Node,
    sent_node: bool,
}

impl DeltaClient {
    pub async fn connect(addr: SocketAddr, node: Node) -> DeltaClient {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to attache");
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("open delta ADS stream")
            .into_inner();
        DeltaClient {
            tx,
            rx,
            node,
            sent_node: false,
        }
    }

    pub async fn send(&mut self, mut req: DeltaDiscoveryRequest) {
        if !self.sent_node {
            req.node = Some(self.node.clone());
            self.sent_node = true;
        }
        self.tx.send(req).await.expect("stream open");
    }

    pub async fn subscribe(
        &mut self,
        type_url: &str,
        subscribe: &[&str],
        unsubscribe: &[&str],
        nonce: &str,
    ) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: subscribe.iter().map(|n| (*n).to_owned()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|n| (*n).to_owned()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        })
        .await;
    }

    pub async fn ack(&mut self, resp: &DeltaDiscoveryResponse) {
        self.subscribe(&resp.type_url, &[], &[], &resp.nonce).await;
    }

    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(resp))) => resp,
            Ok(Ok(None)) => panic!("stream ended while a response was expected"),
            Ok(Err(status)) => panic!("stream failed: {status}"),
            Err(_) => panic!("no response within {WAIT:?}"),
        }
    }
}

/// Names of a SotW response's resources, decoded for their `name` field.
pub fn names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|any| resource_name(&resp.type_url, &any.value))
        .collect()
}

pub fn resource_name(type_url: &str, body: &[u8]) -> String {
    use attache::xds::type_url as t;
    match type_url {
        t::CLUSTER => Cluster::decode(body).map(|c| c.name),
        t::LISTENER => Listener::decode(body).map(|l| l.name),
        t::ROUTE => RouteConfiguration::decode(body).map(|r| r.name),
        t::ENDPOINT => ClusterLoadAssignment::decode(body).map(|c| c.cluster_name),
        other => panic!("unexpected type {other}"),
    }
    .expect("decodable resource")
}

// --- Envoy ------------------------------------------------------------------------

/// Writes a binary bootstrap for `node_id` (delta or SotW) at `dir/NAME.pb` and starts
/// Envoy on it.
pub fn start_envoy(
    envoy: &Path,
    dir: &Path,
    node_id: &str,
    metadata: BTreeMap<String, String>,
    xds: SocketAddr,
    delta: bool,
) -> crate::util::EnvoyProcess {
    let admin_port = crate::util::free_port();
    let bootstrap = xds::bootstrap::ads_bootstrap(&xds::bootstrap::BootstrapConfig {
        node_id: node_id.into(),
        cluster: "gateway".into(),
        metadata,
        xds_address: xds.to_string(),
        delta,
        admin_port,
    })
    .expect("loopback address is valid");
    let path = dir.join(format!("{node_id}.pb"));
    std::fs::write(&path, bootstrap.encode_to_vec()).expect("write bootstrap");
    crate::util::EnvoyProcess::start(envoy, &path, admin_port)
}

/// Where a GET of `path` through Envoy's listener went: the backend's name, or the
/// status for a response no backend gave.
pub fn routed_to(port: u16, path: &str) -> String {
    match super::util::http_get(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "example.com",
        path,
        &[],
    ) {
        Ok(resp) => match resp.header("x-backend") {
            Some(name) => name.to_owned(),
            None => resp.status.to_string(),
        },
        Err(e) => format!("error: {e}"),
    }
}

/// Polls (blocking, bounded) until `path` is routed to `expected`.
pub fn expect_route(envoy: &super::util::EnvoyProcess, port: u16, path: &str, expected: &str) {
    let mut last = String::new();
    let ok = tokio::task::block_in_place(|| {
        envoy.eventually(WAIT, || {
            last = routed_to(port, path);
            last == expected
        })
    });
    assert!(
        ok,
        "{path} went to {last:?}, not {expected:?}\n{}",
        envoy.log()
    );
}
