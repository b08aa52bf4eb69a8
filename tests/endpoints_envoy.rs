//! Issue 5 end to end: a fake Kubernetes API server (reached through a kubeconfig), the
//! endpoint watcher, attache's snapshot store and ADS server, a real Envoy 1.40, and
//! test backends standing in for pods on loopback addresses (127.0.0.x sharing one port,
//! as pods of a Deployment share their container port).
//!
//! The revision side is what the pipeline does: translate once, then for every new
//! endpoints value `translate::assignments` + `Snapshot::with_assignments` + publish.
//! Envoy comes from `ENVOY` or `.venv/bin/envoy` (a failure under `CI` when missing).
//! Every wait is bounded.
mod kube_util;
mod util;
mod xds_util;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use attache::config::{self, Config, Options, SourceFile};
use attache::endpoints::{self, Discovery, Endpoints, KubeSource, Mode};
use attache::snapshot::{ResourceType, Snapshot, StoreConfig};
use attache::translate;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use kube_util::{Ep, FakeApi, Kind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use util::{Backend, EnvoyProcess};
use xds_util::{Server, WAIT};

/// Pods of one Service: backends on 127.0.0.`first`.. sharing one port.
struct Pods {
    port: u16,
    pods: Vec<Backend>,
}

impl Pods {
    /// `n` pods named `PREFIX-1`.. on 127.0.0.`first`.., all on one free port.
    fn start(prefix: &str, first: u8, n: u8) -> Pods {
        for _attempt in 0..20 {
            let Ok(head) = Backend::start_at(
                &format!("{prefix}-1"),
                SocketAddr::from(([127, 0, 0, first], 0)),
            ) else {
                continue;
            };
            let port = head.addr.port();
            let rest: Result<Vec<Backend>, _> = (1..n)
                .map(|i| {
                    Backend::start_at(
                        &format!("{prefix}-{}", i + 1),
                        SocketAddr::from(([127, 0, 0, first + i], port)),
                    )
                })
                .collect();
            if let Ok(rest) = rest {
                let mut pods = vec![head];
                pods.extend(rest);
                return Pods { port, pods };
            }
        }
        panic!("no port free on 127.0.0.{first}..+{n}");
    }

    fn ip(&self, pod: usize) -> String {
        self.pods[pod - 1].addr.ip().to_string()
    }

    /// Ready endpoints for pods (1-based).
    fn ready(&self, pods: &[usize]) -> Vec<Ep> {
        pods.iter().map(|p| Ep::ready(self.ip(*p))).collect()
    }

    fn hits(&self, pod: usize) -> u64 {
        self.pods[pod - 1].hits.load(Ordering::Relaxed)
    }
}

/// attache (watcher + store + ADS) and an Envoy, wired as `attache serve` wires them.
struct Gateway {
    api: FakeApi,
    listener: SocketAddr,
    envoy: EnvoyProcess,
    server: Server,
    config: Arc<Config>,
    endpoints: watch::Receiver<Arc<Endpoints>>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn mapping(name: &str, prefix: &str, service: &str) -> String {
    format!(
        "---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata: {{name: {name}, namespace: default}}
spec: {{hostname: '*', prefix: {prefix}, service: '{service}'}}
"
    )
}

fn load(port: u16, mappings: &str) -> Config {
    let yaml = format!(
        "apiVersion: getambassador.io/v3alpha1
kind: Listener
metadata: {{name: http, namespace: default}}
spec:
  port: {port}
  protocol: HTTP
  securityModel: XFP
  hostBinding: {{namespace: {{from: ALL}}}}
{mappings}"
    );
    let files = [SourceFile {
        path: "gateway.yaml".to_owned(),
        bytes: yaml.into_bytes(),
    }];
    let (config, _) = config::load_files(&files, &Options::default())
        .into_result()
        .expect("the test config is valid");
    config
}

impl Gateway {
    /// Starts everything on `api` (already holding the cluster's objects) with
    /// `mappings`, and waits until Envoy is connected. `None` when there is no Envoy.
    async fn start(api: FakeApi, mappings: &str, delta: bool) -> Option<Gateway> {
        let envoy_bin = util::envoy_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let shutdown = CancellationToken::new();
        let discovery = Discovery {
            mode: Mode::Kubernetes,
            kube: KubeSource::Kubeconfig(api.kubeconfig(dir.path())),
            sync_timeout: WAIT,
            ..Discovery::default()
        };
        let endpoints = endpoints::spawn(&discovery, shutdown.clone())
            .await
            .expect("the watcher starts");
        let port = util::free_port();
        let config = Arc::new(load(port, mappings));
        let server = Server::start(StoreConfig::default()).await;

        let mut resources = translate::translate(&config, &endpoints.borrow());
        // Translation binds 0.0.0.0, as a gateway does; tests stay on loopback.
        for l in &mut resources.listeners {
            if let Some(address::Address::SocketAddress(sa)) =
                l.address.as_mut().and_then(|a| a.address.as_mut())
            {
                sa.address = "127.0.0.1".to_owned();
                assert_eq!(
                    sa.port_specifier,
                    Some(socket_address::PortSpecifier::PortValue(u32::from(port)))
                );
            }
        }
        let generation = endpoints.borrow().generation;
        server
            .publish(Snapshot::new("rev-1", generation, &resources).expect("unique names"))
            .await;
        tokio::spawn(follow(
            server.store.clone(),
            config.clone(),
            endpoints.clone(),
            shutdown.clone(),
        ));
        let envoy = xds_util::start_envoy(
            &envoy_bin,
            dir.path(),
            "edge",
            BTreeMap::new(),
            server.addr,
            delta,
        );
        Some(Gateway {
            api,
            listener: SocketAddr::from(([127, 0, 0, 1], port)),
            envoy,
            server,
            config,
            endpoints,
            shutdown,
            _dir: dir,
        })
    }

    /// Which pod answered a GET of `path`, or the status when none did.
    fn get(&self, path: &str) -> String {
        routed(self.listener, path)
    }

    /// Polls (bounded) until `check` holds for a batch of `n` requests to `path`.
    fn until_spread(
        &self,
        path: &str,
        n: usize,
        what: &str,
        check: impl Fn(&BTreeMap<String, usize>) -> bool,
    ) -> BTreeMap<String, usize> {
        let mut last = BTreeMap::new();
        let ok = tokio::task::block_in_place(|| {
            self.envoy.eventually(WAIT, || {
                last = spread(self.listener, path, n);
                check(&last)
            })
        });
        assert!(ok, "{what}: last batch {last:?}\n{}", self.envoy.log());
        last
    }

    fn stat(&self, name: &str) -> u64 {
        tokio::task::block_in_place(|| self.envoy.stat(name)).unwrap_or(0)
    }

    /// Every snapshot after the first changed EDS and nothing else.
    fn assert_only_eds_changed(&self) {
        let history = self.server.store.history();
        assert!(history.len() >= 2, "some endpoint change was published");
        for pair in history.windows(2) {
            let diff = pair[1].diff(&pair[0]);
            let kinds: Vec<&ResourceType> = diff.types.keys().collect();
            assert_eq!(
                kinds,
                [&ResourceType::Endpoint],
                "{} -> {}",
                pair[0].version(),
                pair[1].version()
            );
        }
    }
}

/// What the pipeline does on every endpoints change: the EDS-only fast path.
async fn follow(
    store: Arc<attache::snapshot::Store>,
    config: Arc<Config>,
    mut endpoints: watch::Receiver<Arc<Endpoints>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            changed = endpoints.changed() => if changed.is_err() { return },
        }
        let current = endpoints.borrow_and_update().clone();
        let Some(latest) = store.latest() else {
            continue;
        };
        let assignments = translate::assignments(&config, &current);
        match latest.with_assignments(current.generation, &assignments) {
            Ok(Some(next)) => {
                store.publish(next).await.expect("a consistent snapshot");
            }
            Ok(None) => {}
            Err(e) => panic!("assignments with duplicate names: {e}"),
        }
    }
}

fn routed(listener: SocketAddr, path: &str) -> String {
    match util::http_get(listener, "example.com", path, &[]) {
        Ok(resp) => match resp.header("x-backend") {
            Some(name) => name.to_owned(),
            None => resp.status.to_string(),
        },
        Err(e) => format!("error: {e}"),
    }
}

/// `n` GETs of `path`: how many each pod (or status) got.
fn spread(listener: SocketAddr, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        *out.entry(routed(listener, path)).or_insert(0) += 1;
    }
    out
}

fn only(names: &[&str]) -> impl Fn(&BTreeMap<String, usize>) -> bool {
    let want: BTreeSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
    move |got| got.keys().cloned().collect::<BTreeSet<_>>() == want
}

fn users_service(api: &FakeApi, pods: &Pods) {
    api.apply_service("shop", "users", &[("http", 80, pods.port)]);
}

fn users_slice(api: &FakeApi, pods: &Pods, ready: &[usize]) {
    api.apply_slice(
        "shop",
        "users-abc",
        "users",
        &[("http", pods.port)],
        &pods.ready(ready),
    );
}

/// Issue 5: a Service scaled 1 -> 3 -> 0 -> 2 pods: traffic spreads over the ready
/// pods, 503 at zero, back at two; only EDS changes (delta xDS, no CDS or LDS update).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_follows_a_service_scaled_1_3_0_2() {
    let pods = Pods::start("pod", 11, 5);
    let api = FakeApi::start().await;
    users_service(&api, &pods);
    users_slice(&api, &pods, &[1]);
    let Some(gw) = Gateway::start(api, &mapping("users", "/users/", "users.shop:80"), true).await
    else {
        return;
    };
    gw.until_spread("/users/", 10, "one pod", only(&["pod-1"]));
    let cds = gw.stat("cluster_manager.cds.update_success");
    let lds = gw.stat("listener_manager.lds.update_success");

    users_slice(&gw.api, &pods, &[1, 2, 3]);
    // A batch sent wholly after Envoy took the update: every pod gets a fair share
    // (round robin; the first batch may straddle the update).
    gw.until_spread("/users/", 30, "traffic spread over three pods", |got| {
        only(&["pod-1", "pod-2", "pod-3"])(got) && got.values().all(|n| *n >= 5)
    });

    users_slice(&gw.api, &pods, &[]);
    gw.until_spread("/users/", 5, "no pod: 503", only(&["503"]));

    users_slice(&gw.api, &pods, &[4, 5]);
    gw.until_spread("/users/", 20, "two new pods", only(&["pod-4", "pod-5"]));

    assert_eq!(
        gw.stat("cluster_manager.cds.update_success"),
        cds,
        "no CDS push"
    );
    assert_eq!(
        gw.stat("listener_manager.lds.update_success"),
        lds,
        "no LDS push"
    );
    assert!(
        gw.stat("cluster.cluster_users_shop_80.update_success") >= 4,
        "EDS updates reached the cluster"
    );
    gw.assert_only_eds_changed();
}

/// Issue 5: a pod turning not-ready stops getting requests; a terminating one that
/// still serves (draining) gets no new requests while a ready pod exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_and_terminating_pods_get_no_new_requests() {
    let pods = Pods::start("pod", 21, 3);
    let api = FakeApi::start().await;
    users_service(&api, &pods);
    users_slice(&api, &pods, &[1, 2, 3]);
    let Some(gw) =
        Gateway::start(api, &mapping("users", "/users/", "users.shop:http"), false).await
    else {
        return;
    };
    gw.until_spread(
        "/users/",
        30,
        "three pods",
        only(&["pod-1", "pod-2", "pod-3"]),
    );

    let mut endpoints = pods.ready(&[1, 3]);
    endpoints.insert(1, Ep::not_ready(pods.ip(2)));
    gw.api.apply_slice(
        "shop",
        "users-abc",
        "users",
        &[("http", pods.port)],
        &endpoints,
    );
    gw.until_spread("/users/", 20, "pod-2 not ready", only(&["pod-1", "pod-3"]));
    let pod2 = pods.hits(2);
    gw.until_spread(
        "/users/",
        30,
        "still without pod-2",
        only(&["pod-1", "pod-3"]),
    );
    assert_eq!(pods.hits(2), pod2, "a not-ready pod got a request");

    endpoints[2] = Ep::terminating(pods.ip(3));
    gw.api.apply_slice(
        "shop",
        "users-abc",
        "users",
        &[("http", pods.port)],
        &endpoints,
    );
    gw.until_spread("/users/", 20, "pod-3 draining", only(&["pod-1"]));
    let pod3 = pods.hits(3);
    gw.until_spread("/users/", 30, "only the ready pod", only(&["pod-1"]));
    assert_eq!(pods.hits(3), pod3, "a draining pod got a new request");
}

/// Issue 5: a Service whose endpoints are split over two slices (and an IPv6 slice)
/// gets traffic on all of them; removing one slice removes just its pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_split_over_slices_serves_every_pod() {
    let pods = Pods::start("pod", 31, 3);
    let api = FakeApi::start().await;
    api.apply_service("shop", "web", &[("", 80, pods.port)]);
    api.apply_slice(
        "shop",
        "web-a",
        "web",
        &[("", pods.port)],
        &pods.ready(&[1, 2]),
    );
    api.apply_slice(
        "shop",
        "web-b",
        "web",
        &[("", pods.port)],
        &pods.ready(&[3]),
    );
    let Some(gw) = Gateway::start(api, &mapping("web", "/web/", "web.shop"), true).await else {
        return;
    };
    gw.until_spread(
        "/web/",
        30,
        "both slices",
        only(&["pod-1", "pod-2", "pod-3"]),
    );

    // An IPv6 pod on ::1, where the machine has IPv6 loopback.
    let v6 = Backend::start_at(
        "pod-v6",
        SocketAddr::from((IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), pods.port)),
    );
    let mut expected = vec!["pod-3"];
    match &v6 {
        Ok(_) => {
            gw.api.apply_slice(
                "shop",
                "web-v6",
                "web",
                &[("", pods.port)],
                &[Ep::ready("::1")],
            );
            expected.push("pod-v6");
            gw.until_spread(
                "/web/",
                40,
                "the IPv6 slice too",
                only(&["pod-1", "pod-2", "pod-3", "pod-v6"]),
            );
        }
        Err(e) => eprintln!("IPv6 part not run: cannot bind [::1]:{}: {e}", pods.port),
    }
    gw.api.delete(Kind::EndpointSlice, "shop", "web-a");
    gw.until_spread("/web/", 20, "web-a's pods gone", only(&expected));
}

/// Issue 5: a watch dropped mid-stream and a 410 Gone while traffic flows: no request
/// to a ready endpoint fails while the watcher recovers, and changes keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watch_and_410_fail_no_request() {
    let pods = Pods::start("pod", 41, 4);
    let api = FakeApi::start().await;
    users_service(&api, &pods);
    users_slice(&api, &pods, &[1, 2]);
    let Some(gw) = Gateway::start(api, &mapping("users", "/users/", "users.shop:80"), true).await
    else {
        return;
    };
    gw.until_spread("/users/", 20, "two pods", only(&["pod-1", "pod-2"]));

    // Steady traffic on a thread, bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (stop, failures, sent, listener) =
            (stop.clone(), failures.clone(), sent.clone(), gw.listener);
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(60)
                && sent.load(Ordering::Relaxed) < 20_000
            {
                let got = routed(listener, "/users/");
                sent.fetch_add(1, Ordering::Relaxed);
                if !got.starts_with("pod-") {
                    failures.fetch_add(1, Ordering::Relaxed);
                    bad.push(got);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            bad
        })
    };
    let until_hit = |pod: usize, what: &str| {
        let ok = tokio::task::block_in_place(|| gw.envoy.eventually(WAIT, || pods.hits(pod) > 0));
        assert!(ok, "{what}\n{}", gw.envoy.log());
    };

    // Traffic keeps flowing through each phase of the recovery, not just around it.
    let more_traffic = |n: u64| {
        let target = sent.load(Ordering::Relaxed) + n;
        let ok = tokio::task::block_in_place(|| {
            gw.envoy
                .eventually(WAIT, || sent.load(Ordering::Relaxed) >= target)
        });
        assert!(ok, "traffic stalled");
    };

    gw.api.drop_watches();
    more_traffic(20);
    users_slice(&gw.api, &pods, &[1, 2, 3]);
    until_hit(3, "pod-3 added across a dropped watch");
    more_traffic(20);

    gw.api.expire_watches();
    more_traffic(20);
    users_slice(&gw.api, &pods, &[1, 2, 3, 4]);
    until_hit(4, "pod-4 added across a 410 Gone and re-list");
    assert!(gw.api.counters().gone.load(Ordering::Relaxed) >= 1);
    more_traffic(20);

    stop.store(true, Ordering::Relaxed);
    let bad = traffic.join().expect("traffic thread");
    let total = sent.load(Ordering::Relaxed);
    assert!(total >= 80, "too little traffic to tell: {total}");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed requests out of {total}: {bad:?}"
    );
    gw.assert_only_eds_changed();
}

/// Issue 5: named ports, two ports on one Service, the first port by default, the same
/// Service name in two namespaces; a Service with no slices is a 503 and a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_by_number_and_name_and_namespaces_route_apart() {
    let web = Pods::start("web", 51, 2); // web-1 is web.a, web-2 is web.b
    let multi_http = Pods::start("multi", 53, 1);
    let multi_admin =
        Backend::start_at("admin", SocketAddr::from(([127, 0, 0, 53], 0))).expect("bind admin");
    let admin_port = multi_admin.addr.port();
    let api = FakeApi::start().await;
    for (ns, pod) in [("a", 1), ("b", 2)] {
        api.apply_service(ns, "web", &[("http", 80, web.port)]);
        api.apply_slice(
            ns,
            "web-x",
            "web",
            &[("http", web.port)],
            &web.ready(&[pod]),
        );
    }
    api.apply_service(
        "a",
        "multi",
        &[("http", 80, multi_http.port), ("admin", 9000, admin_port)],
    );
    api.apply_slice(
        "a",
        "multi-x",
        "multi",
        &[("http", multi_http.port), ("admin", admin_port)],
        &[Ep::ready("127.0.0.53")],
    );
    let mappings = [
        mapping("a", "/a/", "web.a:80"),
        mapping("b", "/b/", "web.b:http"),
        mapping("multi", "/multi/", "multi.a"),
        mapping("admin", "/admin/", "multi.a:9000"),
        mapping("admin-named", "/admin-named/", "multi.a:admin"),
        mapping("ghost", "/ghost/", "ghost.a:80"),
    ]
    .concat();
    let Some(gw) = Gateway::start(api, &mappings, false).await else {
        return;
    };
    for (path, want) in [
        ("/a/", "web-1"),
        ("/b/", "web-2"),
        ("/multi/", "multi-1"),
        ("/admin/", "admin"),
        ("/admin-named/", "admin"),
        ("/ghost/", "503"),
    ] {
        let ok = tokio::task::block_in_place(|| gw.envoy.eventually(WAIT, || gw.get(path) == want));
        assert!(
            ok,
            "{path} went to {}, not {want}\n{}",
            gw.get(path),
            gw.envoy.log()
        );
    }
    let warnings = endpoints::missing_services(&gw.config, &gw.endpoints.borrow());
    let named: Vec<&str> = warnings
        .iter()
        .filter_map(|w| w.resource.as_ref().map(|r| r.name.as_str()))
        .collect();
    assert_eq!(named, ["ghost"], "{warnings:?}");
}
