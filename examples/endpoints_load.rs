//! Endpoint churn load tool (issue 5, "Speed"): `--services` Services with
//! `--endpoints` endpoints each behind as many Mappings, then `--rate` EndpointSlice
//! updates per second for `--seconds`, through the fake Kubernetes API server of the
//! tests. Measures, for every update, the lag from the API event to the moment a delta
//! ADS client (standing in for Envoy) receives the ClusterLoadAssignment carrying it,
//! and attache's CPU and RSS over the run.
//!
//! attache runs in a child process (this binary with `--role server`, calling
//! `attache::serve::run` exactly as `attache serve --endpoints kubernetes` does, with a
//! state dir), so its CPU and RSS are its own; the fake API server, the update generator
//! and the ADS client run in the parent.
//!
//! Each update rewrites one Service's slice (round-robin over the Services) with a new
//! first address that encodes a per-Service sequence number, so the client can tell
//! which update an assignment it receives includes.
//!
//! ```sh
//! cargo run --release --example endpoints_load -- --services 1000 --endpoints 10 --rate 1000 --seconds 10
//! ```

#[path = "../tests/kube_util/mod.rs"]
mod kube_util;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attache::endpoints::{Discovery, KubeSource, Mode};
use attache::serve::{ServeConfig, SourceConfig};
use attache::xds::type_url;
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::config::core::v3::{Node, address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use kube_util::{Ep, FakeApi};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// The binary's allocator, so RSS figures match `attache serve`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    Driver,
    Server,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum, default_value_t = Role::Driver)]
    role: Role,
    /// Services, each with one Mapping and one EndpointSlice.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Slice updates per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long updates are sent.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    // --- server role ---
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long)]
    state_dir: Option<PathBuf>,
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[arg(long)]
    xds_addr: Option<SocketAddr>,
}

fn main() {
    let args = Args::parse();
    match args.role {
        Role::Server => server(&args),
        Role::Driver => driver(&args),
    }
}

/// `attache serve --endpoints kubernetes --dir DIR` as a library call.
fn server(args: &Args) {
    let (Some(dir), Some(state_dir), Some(kubeconfig), Some(xds_addr)) = (
        args.dir.clone(),
        args.state_dir.clone(),
        args.kubeconfig.clone(),
        args.xds_addr,
    ) else {
        eprintln!("--role server needs --dir, --state-dir, --kubeconfig and --xds-addr");
        std::process::exit(2);
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("attache=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = ServeConfig {
        source: SourceConfig::Dir(dir),
        xds_addr,
        xds_tls: None,
        state_dir,
        canary: None,
        canary_bake: Duration::from_secs(10),
        load: attache::config::Options::default(),
        retry: Duration::from_secs(1),
        webhook_secret: None,
        admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        endpoints: Discovery {
            mode: Mode::Kubernetes,
            kube: KubeSource::Kubeconfig(kubeconfig),
            ..Discovery::default()
        },
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    if let Err(e) = runtime.block_on(attache::serve::run(config, CancellationToken::new())) {
        eprintln!("server: {e}");
        std::process::exit(1);
    }
}

fn namespace(service: usize) -> String {
    format!("ns-{}", service % 10)
}

fn name(service: usize) -> String {
    format!("svc-{service}")
}

/// The endpoints of `service` at its update number `seq`: the first address encodes
/// `seq`, the others stay.
fn endpoints(service: usize, seq: u64, count: usize) -> Vec<Ep> {
    let mut out = vec![Ep::ready(format!("172.16.{}.{}", seq / 256, seq % 256))];
    out.extend(
        (1..count).map(|i| Ep::ready(format!("10.{}.{}.{i}", service / 256, service % 256))),
    );
    out
}

/// By Service, the updates sent and not yet seen by the client: (sequence, sent at).
type Pending = HashMap<usize, VecDeque<(u64, Instant)>>;

/// Which service and update a ClusterLoadAssignment shows.
fn decode(cla: &ClusterLoadAssignment) -> Option<(usize, u64)> {
    let service: usize = cla
        .cluster_name
        .strip_prefix("k8s/")?
        .split('/')
        .nth(1)?
        .strip_prefix("svc-")?
        .split(':')
        .next()?
        .parse()
        .ok()?;
    let seq = cla
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                match ep.address.as_ref()?.address.as_ref()? {
                    address::Address::SocketAddress(sa) => Some(sa.address.clone()),
                    _ => None,
                }
            }
            _ => None,
        })
        .find_map(|ip| {
            let rest = ip.strip_prefix("172.16.")?;
            let (hi, lo) = rest.split_once('.')?;
            Some(hi.parse::<u64>().ok()? * 256 + lo.parse::<u64>().ok()?)
        })?;
    Some((service, seq))
}

/// utime + stime of a process, and its RSS in KiB.
fn cpu_and_rss(pid: u32) -> Option<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (1-based), after the command: indexes 11 and 12.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // USER_HZ is 100 on Linux.
    Some((Duration::from_millis(ticks * 10), rss))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn driver(args: &Args) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(drive(args));
}

async fn drive(args: &Args) {
    let api = Arc::new(FakeApi::start().await);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("config");
    std::fs::create_dir(&dir).expect("config dir");
    let mut yaml = String::from(
        "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata: {name: http, namespace: default}\n\
         spec: {port: 8080, protocol: HTTP, securityModel: XFP, hostBinding: {namespace: {from: ALL}}}\n",
    );
    for s in 0..args.services {
        let (ns, n) = (namespace(s), name(s));
        api.apply_service(&ns, &n, &[("http", 80, 8080)]);
        api.apply_slice(
            &ns,
            &format!("{n}-abc"),
            &n,
            &[("http", 8080)],
            &endpoints(s, 0, args.endpoints),
        );
        yaml.push_str(&format!(
            "---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata: {{name: {n}, namespace: {ns}}}\n\
             spec: {{hostname: '*', prefix: /{n}/, service: '{n}:80'}}\n"
        ));
    }
    std::fs::write(dir.join("gateway.yaml"), yaml).expect("write config");
    let xds = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["--role", "server", "--dir"])
        .arg(&dir)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--kubeconfig")
        .arg(api.kubeconfig(tmp.path()))
        .args(["--xds-addr", &xds.to_string()])
        .spawn()
        .expect("start the server");
    let pid = child.id();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(xds).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let startup = started.elapsed();

    // A delta ADS client subscribed to every assignment, ACKing each response.
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
        .await
        .expect("connect")
        .max_decoding_message_size(256 << 20);
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    let names: Vec<String> = (0..args.services)
        .map(|s| format!("k8s/{}/{}:80", namespace(s), name(s)))
        .collect();
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: "load".into(),
            cluster: "load".into(),
            ..Default::default()
        }),
        type_url: type_url::ENDPOINT.into(),
        resource_names_subscribe: names,
        ..Default::default()
    })
    .await
    .expect("send");
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("open delta stream")
        .into_inner();

    let pending: Arc<Mutex<Pending>> = Arc::default();
    let lags: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let responses = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let initial = Arc::new(tokio::sync::Notify::new());
    let reader = {
        let (pending, lags, responses, initial) = (
            pending.clone(),
            lags.clone(),
            responses.clone(),
            initial.clone(),
        );
        let services = args.services;
        tokio::spawn(async move {
            let mut known = 0usize;
            while let Ok(Some(resp)) = stream.message().await {
                let now = Instant::now();
                responses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for r in &resp.resources {
                    let Some(any) = &r.resource else { continue };
                    let Ok(cla) = ClusterLoadAssignment::decode(any.value.as_slice()) else {
                        continue;
                    };
                    let Some((service, seq)) = decode(&cla) else {
                        continue;
                    };
                    let mut pending = pending.lock();
                    if let Some(queue) = pending.get_mut(&service) {
                        while queue.front().is_some_and(|(s, _)| *s <= seq) {
                            if let Some((_, at)) = queue.pop_front() {
                                lags.lock().push(now - at);
                            }
                        }
                    }
                }
                if known < services {
                    known += resp.resources.len();
                    if known >= services {
                        initial.notify_one();
                    }
                }
                let ack = DeltaDiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce.clone(),
                    ..Default::default()
                };
                if tx.send(ack).await.is_err() {
                    return;
                }
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(60), initial.notified())
        .await
        .expect("every assignment within 60 s");
    let ready = started.elapsed();

    // Samples of attache's CPU and RSS every 500 ms.
    let samples: Arc<Mutex<Vec<(Duration, Duration, u64)>>> = Arc::default();
    let sampler = {
        let samples = samples.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            loop {
                if let Some((cpu, rss)) = cpu_and_rss(pid) {
                    samples.lock().push((t0.elapsed(), cpu, rss));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // The updates, paced on a thread of their own.
    let total = args.rate * args.seconds;
    let generator = {
        let (api, pending) = (api.clone(), pending.clone());
        let (services, count, rate) = (args.services, args.endpoints, args.rate);
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut seqs = vec![0u64; services];
            for i in 0..total {
                let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let s = (i as usize) % services;
                seqs[s] += 1;
                let seq = seqs[s];
                let n = name(s);
                pending
                    .lock()
                    .entry(s)
                    .or_default()
                    .push_back((seq, Instant::now()));
                api.apply_slice(
                    &namespace(s),
                    &format!("{n}-abc"),
                    &n,
                    &[("http", 8080)],
                    &endpoints(s, seq, count),
                );
            }
            start.elapsed()
        })
    };
    let sent_for = tokio::task::spawn_blocking(move || generator.join().expect("generator"))
        .await
        .expect("join");
    // Let the last updates arrive (bounded).
    let drain = Instant::now();
    while pending.lock().values().any(|q| !q.is_empty()) && drain.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    sampler.abort();
    reader.abort();
    let _ = child.kill();
    let _ = child.wait();

    let mut lags = lags.lock().clone();
    lags.sort();
    let unseen: usize = pending.lock().values().map(VecDeque::len).sum();
    let samples = samples.lock().clone();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "services {} x {} endpoints; {} updates in {:.2} s ({:.0}/s)",
        args.services,
        args.endpoints,
        total,
        sent_for.as_secs_f64(),
        total as f64 / sent_for.as_secs_f64()
    );
    println!(
        "startup: xDS listening after {}, every assignment at the client after {}",
        ms(startup),
        ms(ready)
    );
    println!(
        "lag event -> assignment at the ADS client: p50 {}  p90 {}  p99 {}  max {}  ({} seen, {} never seen)",
        ms(percentile(&lags, 0.50)),
        ms(percentile(&lags, 0.90)),
        ms(percentile(&lags, 0.99)),
        ms(lags.last().copied().unwrap_or_default()),
        lags.len(),
        unseen
    );
    println!(
        "delta responses: {} ({:.1} updates per response)",
        responses.load(std::sync::atomic::Ordering::Relaxed),
        total as f64 / responses.load(std::sync::atomic::Ordering::Relaxed).max(1) as f64
    );
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let wall = last.0 - first.0;
        let cpu = last.1 - first.1;
        println!(
            "attache CPU over the run: {:.0}% of one core ({:.2} s CPU in {:.2} s)",
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
            cpu.as_secs_f64(),
            wall.as_secs_f64()
        );
        let peak = samples.iter().map(|s| s.2).max().unwrap_or(0);
        let series: Vec<String> = samples
            .iter()
            .step_by(4)
            .map(|s| format!("{:.0}s:{}", s.0.as_secs_f64(), s.2 / 1024))
            .collect();
        println!(
            "attache RSS: start {} MiB, peak {} MiB, end {} MiB; every 2 s (MiB): {}",
            first.2 / 1024,
            peak / 1024,
            last.2 / 1024,
            series.join(" ")
        );
    }
}
