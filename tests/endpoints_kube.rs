//! Issue 5, the watcher against a fake API server (no Envoy): what attache learns from
//! Services and EndpointSlices, through a kubeconfig as in a cluster, and how it rides
//! out dropped watches, 410 Gone and re-lists. Every wait is bounded.
mod kube_util;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use attache::endpoints::{
    self, Discovery, EndpointHealth, Endpoints, KubeSource, Mode, Resolution, ServiceKey,
};
use kube_util::{Ep, FakeApi, Kind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

fn key(namespace: &str, name: &str, port: &str) -> ServiceKey {
    ServiceKey {
        namespace: namespace.into(),
        name: name.into(),
        port: port.into(),
    }
}

fn discovery(kubeconfig: std::path::PathBuf, namespaces: &[&str]) -> Discovery {
    Discovery {
        mode: Mode::Kubernetes,
        kube: KubeSource::Kubeconfig(kubeconfig),
        namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
        sync_timeout: WAIT,
        ..Discovery::default()
    }
}

/// (address, port, health) of a Service port's endpoints.
fn seen(e: &Endpoints, key: &ServiceKey) -> Vec<(String, u16, EndpointHealth)> {
    e.get(key)
        .iter()
        .map(|e| (e.ip.to_string(), e.port, e.health))
        .collect()
}

/// Waits (bounded) until the published endpoints satisfy `check`.
async fn until(
    rx: &mut watch::Receiver<Arc<Endpoints>>,
    what: &str,
    check: impl Fn(&Endpoints) -> bool,
) -> Arc<Endpoints> {
    let found = match tokio::time::timeout(WAIT, rx.wait_for(|e| check(e))).await {
        Ok(Ok(e)) => Some(e.clone()),
        Ok(Err(_)) => panic!("watcher stopped while waiting for {what}"),
        Err(_) => None,
    };
    found.unwrap_or_else(|| {
        panic!(
            "timed out waiting for {what}; last: {:?}",
            rx.borrow().services
        )
    })
}

struct Setup {
    api: FakeApi,
    _dir: tempfile::TempDir,
    rx: watch::Receiver<Arc<Endpoints>>,
    shutdown: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(api: FakeApi, namespaces: &[&str]) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let shutdown = CancellationToken::new();
    let rx = endpoints::spawn(
        &discovery(api.kubeconfig(dir.path()), namespaces),
        shutdown.clone(),
    )
    .await
    .expect("discovery starts");
    assert!(
        rx.borrow().generation > 0,
        "spawn returns after the first listing"
    );
    Setup {
        api,
        _dir: dir,
        rx,
        shutdown,
    }
}

/// Named ports, two ports on one Service, `targetPort` differing from `port`: a Mapping
/// names the Service's port (number or name) and gets the pods' port.
#[tokio::test]
async fn service_ports_map_by_name_to_the_slices_ports() {
    let api = FakeApi::start().await;
    api.apply_service("shop", "users", &[("http", 80, 8080), ("grpc", 81, 9000)]);
    api.apply_slice(
        "shop",
        "users-abc",
        "users",
        &[("http", 8080), ("grpc", 9000)],
        &[
            Ep::ready("10.0.0.1"),
            Ep::terminating("10.0.0.2"),
            Ep::not_ready("10.0.0.3"),
        ],
    );
    let s = start(api, &[]).await;
    let e = s.rx.borrow().clone();
    let http = vec![
        ("10.0.0.1".to_owned(), 8080, EndpointHealth::Healthy),
        ("10.0.0.2".to_owned(), 8080, EndpointHealth::Draining),
        ("10.0.0.3".to_owned(), 8080, EndpointHealth::Unhealthy),
    ];
    assert_eq!(seen(&e, &key("shop", "users", "80")), http);
    assert_eq!(seen(&e, &key("shop", "users", "http")), http);
    assert_eq!(seen(&e, &key("shop", "users", "")), http, "the first port");
    let grpc: Vec<u16> = seen(&e, &key("shop", "users", "grpc"))
        .iter()
        .map(|x| x.1)
        .collect();
    assert_eq!(grpc, [9000, 9000, 9000]);
    assert_eq!(seen(&e, &key("shop", "users", "81")).len(), 3);
    assert!(
        e.get(&key("shop", "users", "8080")).is_empty(),
        "not a Service port"
    );
    assert_eq!(e.resolution, Resolution::Eds);
}

/// Same Service name in two namespaces stays apart; `--namespace` limits what is seen.
#[tokio::test]
async fn namespaces_keep_same_named_services_apart_and_scope_the_watch() {
    let api = FakeApi::start().await;
    for (ns, ip) in [("a", "10.1.0.1"), ("b", "10.2.0.1"), ("c", "10.3.0.1")] {
        api.apply_service(ns, "web", &[("", 80, 8080)]);
        api.apply_slice(ns, "web-1", "web", &[("", 8080)], &[Ep::ready(ip)]);
    }
    let mut s = start(api, &["a", "b"]).await;
    let e = s.rx.borrow().clone();
    assert_eq!(seen(&e, &key("a", "web", "80"))[0].0, "10.1.0.1");
    assert_eq!(seen(&e, &key("b", "web", "80"))[0].0, "10.2.0.1");
    assert!(
        !e.services.contains_key(&key("c", "web", "80")),
        "c is not watched"
    );
    // Changes in b do not disturb a.
    s.api
        .apply_slice("b", "web-1", "web", &[("", 8080)], &[Ep::ready("10.2.0.9")]);
    let e = until(&mut s.rx, "b's new pod", |e| {
        seen(e, &key("b", "web", "80"))
            .first()
            .map(|x| x.0.as_str())
            == Some("10.2.0.9")
    })
    .await;
    assert_eq!(seen(&e, &key("a", "web", "80"))[0].0, "10.1.0.1");
}

/// A slice split in two (the controller's 100-endpoint limit, or a move) merges back
/// into one set; an address listed by both counts once.
#[tokio::test]
async fn slices_of_one_service_merge() {
    let api = FakeApi::start().await;
    api.apply_service("shop", "users", &[("http", 80, 8080)]);
    api.apply_slice(
        "shop",
        "users-1",
        "users",
        &[("http", 8080)],
        &[Ep::ready("10.0.0.1"), Ep::ready("10.0.0.2")],
    );
    let mut s = start(api, &[]).await;
    s.api.apply_slice(
        "shop",
        "users-2",
        "users",
        &[("http", 8080)],
        &[Ep::ready("10.0.0.2"), Ep::ready("10.0.0.3")],
    );
    let e = until(&mut s.rx, "three endpoints", |e| {
        e.get(&key("shop", "users", "80")).len() == 3
    })
    .await;
    let ips: Vec<String> = seen(&e, &key("shop", "users", "80"))
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(ips, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    s.api.delete(Kind::EndpointSlice, "shop", "users-1");
    until(&mut s.rx, "only users-2's endpoints", |e| {
        seen(e, &key("shop", "users", "80"))
            .iter()
            .map(|x| x.0.as_str())
            .collect::<Vec<_>>()
            == ["10.0.0.2", "10.0.0.3"]
    })
    .await;
    // IPv6 slices of the same Service join in.
    s.api.apply_slice(
        "shop",
        "users-v6",
        "users",
        &[("http", 8080)],
        &[Ep::ready("fd00::7")],
    );
    until(&mut s.rx, "the IPv6 endpoint", |e| {
        seen(e, &key("shop", "users", "http"))
            .iter()
            .any(|x| x.0 == "fd00::7")
    })
    .await;
}

/// Issue 5: a burst of slice events is one publish, within the coalescing window.
#[tokio::test]
async fn a_burst_of_events_is_coalesced() {
    let api = FakeApi::start().await;
    api.apply_service("shop", "users", &[("http", 80, 8080)]);
    api.apply_slice(
        "shop",
        "users-1",
        "users",
        &[("http", 8080)],
        &[Ep::ready("10.0.0.1")],
    );
    let mut s = start(api, &[]).await;
    let before = s.rx.borrow().generation;
    for i in 2..=101u32 {
        let ip = format!("10.0.{}.{}", i / 250, i % 250);
        s.api.apply_slice(
            "shop",
            "users-1",
            "users",
            &[("http", 8080)],
            &[Ep::ready(ip)],
        );
    }
    let last = "10.0.0.101";
    let e = until(&mut s.rx, "the last of the burst", |e| {
        seen(e, &key("shop", "users", "80"))
            .first()
            .map(|x| x.0.as_str())
            == Some(last)
    })
    .await;
    let publishes = e.generation - before;
    eprintln!("100 slice events -> {publishes} publishes");
    assert!(
        (1..=10).contains(&publishes),
        "100 events became {publishes} publishes"
    );
}

/// Issue 5: a watch dropped mid-event resumes from the last version seen (no re-list)
/// and misses nothing; a 410 Gone re-lists, and the re-list publishes only what changed.
#[tokio::test]
async fn dropped_watches_resume_and_410_relists_without_losing_endpoints() {
    let api = FakeApi::start().await;
    api.apply_service("shop", "users", &[("http", 80, 8080)]);
    api.apply_slice(
        "shop",
        "users-1",
        "users",
        &[("http", 8080)],
        &[Ep::ready("10.0.0.1"), Ep::ready("10.0.0.2")],
    );
    let mut s = start(api, &[]).await;
    let users = key("shop", "users", "80");
    // Record every published value: none may lose a ready endpoint.
    let mut recorder = s.rx.clone();
    let history = tokio::spawn(async move {
        let mut values = Vec::new();
        while recorder.changed().await.is_ok() {
            values.push(recorder.borrow_and_update().clone());
        }
        values
    });
    let lists_before = s.api.counters().lists[Kind::EndpointSlice as usize].load(Ordering::Relaxed);
    let watches_before =
        s.api.counters().watches[Kind::EndpointSlice as usize].load(Ordering::Relaxed);
    s.api.drop_watches();
    // A change made while the watcher reconnects arrives through history replay.
    s.api.apply_slice(
        "shop",
        "users-1",
        "users",
        &[("http", 8080)],
        &[
            Ep::ready("10.0.0.1"),
            Ep::ready("10.0.0.2"),
            Ep::ready("10.0.0.3"),
        ],
    );
    until(&mut s.rx, "10.0.0.3 after the drop", |e| {
        e.get(&users).len() == 3
    })
    .await;
    assert_eq!(
        s.api.counters().lists[Kind::EndpointSlice as usize].load(Ordering::Relaxed),
        lists_before,
        "a dropped watch resumes without a re-list"
    );
    assert!(
        s.api.counters().watches[Kind::EndpointSlice as usize].load(Ordering::Relaxed)
            > watches_before,
        "the watch was re-opened"
    );
    let gen_before_expiry = s.rx.borrow().generation;
    s.api.expire_watches();
    let relisted = tokio::time::timeout(WAIT, async {
        while s.api.counters().lists[Kind::EndpointSlice as usize].load(Ordering::Relaxed)
            == lists_before
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(relisted.is_ok(), "a 410 makes the watcher re-list");
    assert!(s.api.counters().gone.load(Ordering::Relaxed) >= 1);
    // After the re-list the watch works again.
    s.api.apply_slice(
        "shop",
        "users-1",
        "users",
        &[("http", 8080)],
        &[Ep::ready("10.0.0.1"), Ep::ready("10.0.0.3")],
    );
    let e = until(&mut s.rx, "10.0.0.2 gone after the re-list", |e| {
        e.get(&users).len() == 2
    })
    .await;
    assert_eq!(
        e.generation,
        gen_before_expiry + 1,
        "the re-list itself published nothing: it found what was known"
    );
    s.shutdown.cancel();
    let values = tokio::time::timeout(WAIT, history)
        .await
        .expect("recorder ends")
        .expect("recorder");
    assert!(!values.is_empty());
    for v in &values {
        let ips: Vec<String> = seen(v, &users).into_iter().map(|x| x.0).collect();
        assert!(
            ips.contains(&"10.0.0.1".to_owned()),
            "generation {} lost the ready endpoint 10.0.0.1: {ips:?}",
            v.generation
        );
    }
}

/// A Service deleted together with its slices disappears; one that never had slices is
/// absent, which `missing_services` turns into a warning.
#[tokio::test]
async fn deleted_services_disappear() {
    let api = FakeApi::start().await;
    api.apply_service("shop", "users", &[("", 80, 8080)]);
    api.apply_service("shop", "empty", &[("", 80, 8080)]);
    api.apply_slice(
        "shop",
        "users-1",
        "users",
        &[("", 8080)],
        &[Ep::ready("10.0.0.1")],
    );
    let mut s = start(api, &[]).await;
    assert!(
        !s.rx
            .borrow()
            .services
            .contains_key(&key("shop", "empty", "80"))
    );
    s.api.delete(Kind::EndpointSlice, "shop", "users-1");
    s.api.delete(Kind::Service, "shop", "users");
    until(&mut s.rx, "users gone", |e| e.services.is_empty()).await;
}

/// `auto` uses the cluster when its API answers, DNS otherwise; `kubernetes` with a bad
/// kubeconfig is an error naming the file.
#[tokio::test]
async fn auto_chooses_kubernetes_when_reachable_and_dns_otherwise() {
    let api = FakeApi::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let shutdown = CancellationToken::new();
    let mut d = discovery(api.kubeconfig(dir.path()), &[]);
    d.mode = Mode::Auto;
    let rx = endpoints::spawn(&d, shutdown.clone()).await.expect("auto");
    assert_eq!(rx.borrow().resolution, Resolution::Eds);

    // A kubeconfig pointing at a port that refuses connections: bound, never listening,
    // so no other test can be handed it meanwhile.
    let closed = tokio::net::TcpSocket::new_v4().expect("socket");
    closed
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let port = closed.local_addr().expect("addr").port();
    let other = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(api.kubeconfig(other.path())).expect("read");
    let path = other.path().join("kubeconfig");
    std::fs::write(
        &path,
        text.replace(&api.addr.port().to_string(), &port.to_string()),
    )
    .expect("write");
    d.kube = KubeSource::Kubeconfig(path);
    let rx = endpoints::spawn(&d, shutdown.clone()).await.expect("auto");
    assert_eq!(
        rx.borrow().resolution,
        Resolution::Dns {
            cluster_domain: "cluster.local".into()
        }
    );

    d.mode = Mode::Kubernetes;
    d.kube = KubeSource::Kubeconfig(dir.path().join("missing"));
    let err = endpoints::spawn(&d, shutdown.clone())
        .await
        .expect_err("no kubeconfig");
    assert!(err.to_string().contains("missing"), "{err}");
    shutdown.cancel();
}

/// The fake answers a list at a compacted version with 410 Gone, as the API does.
#[tokio::test]
async fn the_fake_api_answers_410_for_lists_at_expired_versions() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let api = FakeApi::start().await;
    api.apply_slice("shop", "s", "users", &[("", 80)], &[Ep::ready("10.0.0.1")]);
    let old = api.resource_version();
    api.expire_watches();
    api.apply_slice("shop", "s", "users", &[("", 80)], &[Ep::ready("10.0.0.2")]);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = kube::config::Kubeconfig::read_from(api.kubeconfig(dir.path())).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let slices: kube::Api<EndpointSlice> = kube::Api::all(client);
    let params = kube::api::ListParams::default()
        .at(&(old - 1).to_string())
        .matching(kube::api::VersionMatch::Exact);
    let err = slices.list(&params).await.expect_err("expired");
    assert!(
        err.to_string().contains("410") || err.to_string().contains("Expired"),
        "{err}"
    );
    let fresh = slices
        .list(&Default::default())
        .await
        .expect("a list at the latest version");
    assert_eq!(fresh.items.len(), 1);
    let labels: BTreeMap<String, String> =
        fresh.items[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("kubernetes.io/service-name").map(String::as_str),
        Some("users")
    );
}

/// Issue 5: deploy/'s RBAC grants exactly what the watcher uses, read-only: get, list
/// and watch on Services and EndpointSlices, bound to the `attache` ServiceAccount.
#[test]
fn deploy_rbac_grants_only_reads_of_services_and_endpointslices() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/base/rbac.yaml");
    let docs: Vec<serde_json::Value> = text
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).expect("a YAML document"))
        .collect();
    let of_kind = |kind: &str| -> &serde_json::Value {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {}", path.display()))
    };
    let mut rules: Vec<(String, String, Vec<String>)> = Vec::new();
    for rule in of_kind("ClusterRole")["rules"].as_array().expect("rules") {
        let strings = |field: &str| -> Vec<String> {
            rule[field]
                .as_array()
                .expect("a list")
                .iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                let mut verbs = strings("verbs");
                verbs.sort();
                rules.push((group.clone(), resource, verbs));
            }
        }
    }
    rules.sort();
    let reads = vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()];
    assert_eq!(
        rules,
        [
            (String::new(), "services".to_owned(), reads.clone()),
            (
                "discovery.k8s.io".to_owned(),
                "endpointslices".to_owned(),
                reads
            ),
        ]
    );
    let account = of_kind("ServiceAccount");
    assert_eq!(
        (
            &account["metadata"]["name"],
            &account["metadata"]["namespace"]
        ),
        (&serde_json::json!("attache"), &serde_json::json!("attache"))
    );
    let binding = of_kind("ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"]["name"],
        of_kind("ClusterRole")["metadata"]["name"]
    );
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "attache", "namespace": "attache"}])
    );
}
