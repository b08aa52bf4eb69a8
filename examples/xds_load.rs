//! ADS fan-out load tool (issue 3, "Speed"): N simulated Envoy nodes on one attache.
//!
//! The server runs in a child process (this binary with `--role server`), so its RSS is
//! attache's alone. The parent opens `--streams` state-of-the-world ADS streams over
//! `--streams / 100` HTTP/2 connections; each stream is one node that subscribes like
//! Envoy (CDS and LDS wildcard, then EDS and RDS for the names those name) and ACKs every
//! response. Once every node holds the first snapshot, the parent asks the server to
//! publish a changed one (one more Mapping: new cluster, assignment and routes); the
//! server times publish -> every node synced (all types ACKed at the new snapshot, from
//! its own per-node state, polled every 10 ms) and reports its RSS and how many resources
//! and response bodies it encoded.
//!
//! The simulated nodes share the machine with the server, so they work as little as an
//! ACKing Envoy allows: a response is decoded only as far as `version_info`, `type_url`
//! and `nonce`; the EDS and RDS names a CDS or LDS response implies are worked out once
//! per version for all nodes, not per node.
//!
//! ```sh
//! cargo run --release --example xds_load -- --streams 10000 --mappings 500
//! ```

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use attache::config::{self, SourceFile};
use attache::endpoints::Endpoints;
use attache::snapshot::{self, Snapshot, Store, StoreConfig};
use attache::translate;
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::bytes::Buf;
use prost::{Message, Name};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

#[path = "../benches/support/generate.rs"]
mod generate;

// The allocator the `attache` binary uses, so the server's RSS is the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum, default_value_t = Role::Driver)]
    role: Role,
    /// Simulated nodes, one ADS stream each.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Generated Mappings in the snapshot; each becomes two routes (its Host and `*`).
    #[arg(long, default_value_t = 500)]
    mappings: usize,
    /// Streams per HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    per_connection: usize,
    /// The server's fleet-wide bound on responses in flight (`xds::Config::max_in_flight`).
    #[arg(long, default_value_t = attache::xds::Config::default().max_in_flight)]
    max_in_flight: usize,
    /// What the measured publish changes: `mapping` adds one Mapping (the generator then
    /// renames many clusters, so CDS, EDS and RDS all change, and CDS goes out twice,
    /// make-before-break); `route` changes one Mapping's timeout (RDS only: the common
    /// commit).
    #[arg(long, value_enum, default_value_t = Change::Mapping)]
    change: Change,
    /// A command to run the server under (a profiler), split on whitespace.
    #[arg(long, default_value = "")]
    server_wrapper: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Change {
    Mapping,
    Route,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    Driver,
    Server,
}

/// mimalloc's option that delays returning freed memory to the OS, read at start.
const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if matches!(args.role, Role::Driver) && std::env::var_os(PURGE_DELAY).is_none() {
        // The simulated nodes receive gigabytes in buffers HTTP/2 allocates and frees;
        // with mimalloc returning freed pages at once, the kernel spent a quarter of
        // the run zeroing pages for the driver (perf: clear_page_erms). The driver
        // keeps its freed pages instead; the server runs with the binary's defaults.
        use std::os::unix::process::CommandExt;
        let error = Command::new(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(PURGE_DELAY, "-1")
            .exec();
        return Err(error.into());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    match args.role {
        Role::Server => runtime.block_on(server(args)),
        Role::Driver => runtime.block_on(driver(args)),
    }
}

// === server (child process) ===

fn snapshot_of(mappings: usize) -> Result<(Snapshot, usize), Box<dyn std::error::Error>> {
    snapshot_from(&format!("load-{mappings}"), generate::repo(mappings))
}

/// The generated repository of `mappings` with one Mapping's timeout changed: one route
/// differs, every cluster, assignment and listener stays as it was.
fn snapshot_with_one_route_changed(
    mappings: usize,
) -> Result<(Snapshot, usize), Box<dyn std::error::Error>> {
    let mut files = generate::repo(mappings);
    let changed = files
        .iter_mut()
        .find(|(_, text)| text.contains("timeout_ms: 5000"))
        .ok_or("the generated repository has no Mapping with a timeout to change")?;
    changed.1 = changed
        .1
        .replacen("timeout_ms: 5000", "timeout_ms: 6000", 1);
    snapshot_from(&format!("load-{mappings}-route"), files)
}

fn snapshot_from(
    version: &str,
    files: Vec<(String, String)>,
) -> Result<(Snapshot, usize), Box<dyn std::error::Error>> {
    let files: Vec<SourceFile> = files
        .into_iter()
        .map(|(path, text)| SourceFile {
            path,
            bytes: text.into_bytes(),
        })
        .collect();
    let (config, _) = config::load_files(&files, &config::Options::default()).into_result()?;
    let resources = translate::translate(&config, &Endpoints::default());
    let routes = resources
        .routes
        .iter()
        .flat_map(|r| &r.virtual_hosts)
        .map(|v| v.routes.len())
        .sum();
    Ok((Snapshot::new(version, 0, &resources)?, routes))
}

/// `(VmRSS, VmHWM)` in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time this process has used, user and system, in milliseconds. Wall times on a
/// shared machine follow its load; CPU time says what the work itself costs.
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and
    // 15th fields of the whole line, in clock ticks of 10 ms (USER_HZ on Linux).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) * 10
}

/// Polls the store until `expect` nodes hold `version`; returns how long that took.
async fn wait_synced(
    store: &Store,
    version: &str,
    expect: usize,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let synced = store.synced_nodes(version);
        if synced >= expect {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn server(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(Store::new(StoreConfig::default()));
    let (first, routes) = snapshot_of(args.mappings)?;
    let first = store.publish(first).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let config = attache::xds::Config {
        max_in_flight: args.max_in_flight,
        ..attache::xds::Config::default()
    };
    tokio::spawn(attache::xds::serve_with(
        listener,
        store.clone(),
        config,
        shutdown.clone(),
    ));
    let bytes = |kind| -> usize { first.resources(kind).values().map(|r| r.body.len()).sum() };
    use attache::snapshot::ResourceType as T;
    println!(
        "port {port} routes {routes} resources {} bytes cds={} eds={} lds={} rds={}",
        first.len(),
        bytes(T::Cluster),
        bytes(T::Endpoint),
        bytes(T::Listener),
        bytes(T::Route)
    );

    let (tx, mut lines) = mpsc::channel::<String>(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let limit = Duration::from_secs(300);
    let mut current = first;
    while let Some(line) = lines.recv().await {
        match line.trim() {
            "wait" => {
                let took = wait_synced(&store, current.version(), args.streams, limit).await;
                let (rss, hwm) = memory();
                println!(
                    "synced ok={} ms={} server_cpu_ms={} rss_kb={rss} hwm_kb={hwm} \
                     response_bodies_encoded={}",
                    took.is_some(),
                    took.map_or(0, |d| d.as_millis()),
                    cpu_ms(),
                    attache::xds::encoded_responses()
                );
            }
            "publish" => {
                let (next, _) = match args.change {
                    Change::Mapping => snapshot_of(args.mappings + 1)?,
                    Change::Route => snapshot_with_one_route_changed(args.mappings)?,
                };
                let encoded_before = snapshot::encoded_resources();
                let responses_before = attache::xds::encoded_responses();
                let sent_before = attache::xds::sent_bytes();
                let resources = next.len() as u64;
                let cpu_before = cpu_ms();
                let start = Instant::now();
                current = store.publish(next).await?;
                let took = wait_synced(&store, current.version(), args.streams, limit).await;
                let elapsed = start.elapsed();
                let cpu = cpu_ms() - cpu_before;
                let (rss, hwm) = memory();
                println!(
                    "published ok={} ms={} server_cpu_ms={cpu} rss_kb={rss} hwm_kb={hwm} \
                     encoded_in_snapshot={resources} encoded_while_serving={} \
                     response_bodies_encoded={} sent_mb={}",
                    took.is_some(),
                    elapsed.as_millis(),
                    snapshot::encoded_resources() - encoded_before,
                    attache::xds::encoded_responses() - responses_before,
                    (attache::xds::sent_bytes() - sent_before) / 1_000_000
                );
            }
            _ => break,
        }
        std::io::stdout().flush()?;
    }
    shutdown.cancel();
    Ok(())
}

// === driver (parent process): the simulated nodes ===

async fn driver(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    // `--server-wrapper 'valgrind --tool=massif'` runs the server under a profiler.
    let mut wrapper = args.server_wrapper.split_whitespace();
    let mut child = match wrapper.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(wrapper).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    let mut child = child
        .env_remove(PURGE_DELAY)
        .args(["--role", "server", "--streams", &args.streams.to_string()])
        .args(["--mappings", &args.mappings.to_string()])
        .args(["--max-in-flight", &args.max_in_flight.to_string()])
        .args([
            "--change",
            match args.change {
                Change::Mapping => "mapping",
                Change::Route => "route",
            },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_server = child.stdin.take().ok_or("no stdin")?;
    let mut from_server = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    from_server.read_line(&mut line)?;
    let port: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("server said {line:?}"))?;
    eprintln!("server: {}", line.trim());

    let connections = args.streams.div_ceil(args.per_connection.max(1));
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await?;
        channels.push(channel);
    }
    let failures = Arc::new(AtomicUsize::new(0));
    // Set before the server is told to quit, so streams ending then are not failures.
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let names = Arc::new(NameCache::default());
    let connect_start = Instant::now();
    for i in 0..args.streams {
        let client = tonic::client::Grpc::new(channels[i % connections].clone())
            .max_decoding_message_size(64 * 1024 * 1024);
        let failures = failures.clone();
        let stopping = stopping.clone();
        let names = names.clone();
        tokio::spawn(async move {
            if let Err(e) = node(client, i, names).await
                && !stopping.load(Ordering::Relaxed)
                && failures.fetch_add(1, Ordering::Relaxed) < 5
            {
                eprintln!("node {i}: {e}");
            }
        });
    }
    let mut ask = |command: &str| -> Result<String, Box<dyn std::error::Error>> {
        writeln!(to_server, "{command}")?;
        to_server.flush()?;
        let mut reply = String::new();
        from_server.read_line(&mut reply)?;
        Ok(reply.trim().to_owned())
    };
    let synced = tokio::task::block_in_place(|| ask("wait"))?;
    println!(
        "streams={} connections={connections} initial sync ({} ms since connect): {synced}",
        args.streams,
        connect_start.elapsed().as_millis()
    );
    let cpu_before = cpu_ms();
    let received_before = received();
    let published = tokio::task::block_in_place(|| ask("publish"))?;
    let received_after = received();
    let per_type: Vec<usize> = (0..4)
        .map(|i| received_after[i] - received_before[i])
        .collect();
    println!(
        "streams={} publish: {published} client_cpu_ms={} responses(cds,eds,lds,rds)={per_type:?}",
        args.streams,
        cpu_ms() - cpu_before
    );
    println!("stream failures: {}", failures.load(Ordering::Relaxed));
    stopping.store(true, Ordering::Relaxed);
    let _ = tokio::task::block_in_place(|| ask("quit"));
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// What one simulated Envoy keeps per type: the last nonce and its subscription.
#[derive(Default)]
struct TypeState {
    nonce: String,
    version: String,
    names: Names,
}

/// Responses the nodes received, by type: CDS, EDS, LDS, RDS.
static RECEIVED: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

fn received() -> [usize; 4] {
    RECEIVED.each_ref().map(|c| c.load(Ordering::Relaxed))
}

/// The fields of a `DiscoveryResponse` an ACK needs; prost skips the resources.
#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHead {
    #[prost(string, tag = "1")]
    version_info: String,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

/// A response as a node sees it: the fields an ACK needs and, for CDS and LDS, the
/// EDS or RDS names it implies.
struct Seen {
    head: ResponseHead,
    names: Option<Names>,
}

/// Requests out as prost messages; responses decoded in place in tonic's buffer (so
/// the buffer is reused, not reallocated per response), only as far as a node needs.
#[derive(Clone)]
struct AdsCodec {
    names: Arc<NameCache>,
}

impl Codec for AdsCodec {
    type Encode = DiscoveryRequest;
    type Decode = Seen;
    type Encoder = AdsCodec;
    type Decoder = AdsCodec;
    fn encoder(&mut self) -> AdsCodec {
        self.clone()
    }
    fn decoder(&mut self) -> AdsCodec {
        self.clone()
    }
}

impl Encoder for AdsCodec {
    type Item = DiscoveryRequest;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: DiscoveryRequest,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Decoder for AdsCodec {
    type Item = Seen;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Seen>, Self::Error> {
        let len = src.remaining();
        let message = &src.chunk()[..len];
        let bad = |e: prost::DecodeError| tonic::Status::internal(e.to_string());
        let head = ResponseHead::decode(message).map_err(bad)?;
        let names = if head.type_url == Cluster::type_url() || head.type_url == Listener::type_url()
        {
            Some(self.names.get(&head, message).map_err(bad)?)
        } else {
            None
        };
        src.advance(len);
        Ok(Some(Seen { head, names }))
    }
}

/// The resource names a node subscribes to, shared by every node that does.
type Names = Arc<BTreeSet<String>>;

/// The EDS or RDS names a CDS or LDS response implies, by type URL and version: every
/// node gets the same responses, so only the first to see a version decodes it.
#[derive(Default)]
struct NameCache {
    names: parking_lot::Mutex<HashMap<(String, String), Names>>,
}

impl NameCache {
    fn get(&self, head: &ResponseHead, message: &[u8]) -> Result<Names, prost::DecodeError> {
        let key = (head.type_url.clone(), head.version_info.clone());
        if let Some(names) = self.names.lock().get(&key) {
            return Ok(names.clone());
        }
        let response = DiscoveryResponse::decode(message)?;
        let names = Arc::new(if head.type_url == Cluster::type_url() {
            eds_names(&response)
        } else {
            rds_names(&response)
        });
        self.names.lock().insert(key, names.clone());
        Ok(names)
    }
}

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

async fn node(
    mut client: tonic::client::Grpc<tonic::transport::Channel>,
    index: usize,
    names: Arc<NameCache>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let node = Node {
        id: format!("load-node-{index}"),
        cluster: "load".to_owned(),
        ..Default::default()
    };
    let (cds, lds) = (Cluster::type_url(), Listener::type_url());
    let (eds, rds) = (
        ClusterLoadAssignment::type_url(),
        RouteConfiguration::type_url(),
    );
    tx.send(DiscoveryRequest {
        node: Some(node),
        type_url: cds.clone(),
        ..Default::default()
    })
    .await?;
    tx.send(DiscoveryRequest {
        type_url: lds.clone(),
        ..Default::default()
    })
    .await?;
    client.ready().await?;
    let mut responses = client
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            tonic::codegen::http::uri::PathAndQuery::from_static(SOTW_PATH),
            AdsCodec { names },
        )
        .await?
        .into_inner();
    let mut eds_state = TypeState::default();
    let mut rds_state = TypeState::default();
    while let Some(Seen {
        head: response,
        names,
    }) = responses.message().await?
    {
        let ack = |names: &BTreeSet<String>, r: &ResponseHead| DiscoveryRequest {
            type_url: r.type_url.clone(),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            resource_names: names.iter().cloned().collect(),
            ..Default::default()
        };
        let t = response.type_url.as_str();
        let kind = [&cds, &eds, &lds, &rds].iter().position(|u| *u == t);
        if let Some(kind) = kind {
            RECEIVED[kind].fetch_add(1, Ordering::Relaxed);
        }
        if t == cds || t == lds {
            tx.send(ack(&BTreeSet::new(), &response)).await?;
            let names = names.unwrap_or_default();
            let (state, url) = if t == cds {
                (&mut eds_state, &eds)
            } else {
                (&mut rds_state, &rds)
            };
            if names != state.names {
                state.names = names;
                tx.send(DiscoveryRequest {
                    type_url: url.clone(),
                    version_info: state.version.clone(),
                    response_nonce: state.nonce.clone(),
                    resource_names: state.names.iter().cloned().collect(),
                    ..Default::default()
                })
                .await?;
            }
        } else {
            let state = if t == eds {
                &mut eds_state
            } else {
                &mut rds_state
            };
            state.nonce = response.nonce.clone();
            state.version = response.version_info.clone();
            tx.send(ack(&state.names, &response)).await?;
        }
    }
    Ok(())
}

/// The EDS names of a CDS response's EDS clusters.
fn eds_names(response: &DiscoveryResponse) -> BTreeSet<String> {
    response
        .resources
        .iter()
        .filter_map(|any| Cluster::decode(any.value.as_slice()).ok())
        .filter(|c| {
            c.cluster_discovery_type
                == Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Eds as i32,
                ))
        })
        .map(|c| match c.eds_cluster_config {
            Some(eds) if !eds.service_name.is_empty() => eds.service_name,
            _ => c.name,
        })
        .collect()
}

/// The RDS names the listeners of an LDS response use.
fn rds_names(response: &DiscoveryResponse) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for listener in response
        .resources
        .iter()
        .filter_map(|any| Listener::decode(any.value.as_slice()).ok())
    {
        for chain in listener
            .filter_chains
            .iter()
            .chain(&listener.default_filter_chain)
        {
            for f in &chain.filters {
                if let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type
                    && any.type_url == HttpConnectionManager::type_url()
                    && let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
                    && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
                {
                    names.insert(rds.route_config_name);
                }
            }
        }
    }
    names
}
