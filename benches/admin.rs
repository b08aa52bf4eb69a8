//! The admin server at scale: how long `/diag`, `/api/v1/routes`, `/api/v1/diff` and a
//! `/metrics` scrape take on a snapshot of a generated repository of 1k and 10k Mappings,
//! with 100 nodes known to the store.
//!
//! `/diag` and the API decode a snapshot once per version (the inventory cache), so a
//! request is measured both cold (first request after a publish: decode + render) and
//! warm (render only), as an operator refreshing the page sees it.
//!
//! `cargo bench --bench admin`; figures go in BENCHMARKS.md.

// The allocator the `attache` binary uses, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;

use attache::admin::{self, State};
use attache::config::{self, Options, SourceFile};
use attache::endpoints::Endpoints;
use attache::metrics::Metrics;
use attache::pipeline::Status;
use attache::snapshot::{Protocol, ResourceType, Snapshot, Store, StoreConfig};
use attache::translate;
use axum::body::Body;
use axum::http::Request;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::watch;
use tower::ServiceExt;

#[path = "support/generate.rs"]
mod generate;

fn snapshot(mappings: usize, revision: &str) -> Snapshot {
    let files: Vec<SourceFile> = generate::repo(mappings)
        .into_iter()
        .map(|(path, text)| SourceFile {
            path,
            bytes: text.into_bytes(),
        })
        .collect();
    let outcome = config::load_files(&files, &Options::default());
    assert!(outcome.is_accepted(), "generated repo must be valid");
    let resources = translate::translate(&outcome.config, &Endpoints::default());
    Snapshot::new(revision, 0, &resources).expect("unique names")
}

/// The response body's length, so the work cannot be optimised away.
async fn get(state: &State, uri: &str) -> usize {
    let response = admin::router(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert!(
        response.status().is_success(),
        "{uri}: {}",
        response.status()
    );
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body")
        .len()
}

fn admin_bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for &n in &[1_000usize, 10_000] {
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(Store::new(StoreConfig {
            metrics: Some(metrics.clone()),
            ..StoreConfig::default()
        }));
        // b adds 1% more Mappings, so the diff has routes and clusters to report.
        let (a, b) = (snapshot(n - n / 100, "rev-a"), snapshot(n, "rev-b"));
        let (a_version, b_version) = (a.version().to_owned(), b.version().to_owned());
        let mut streams = Vec::new();
        runtime.block_on(async {
            store.publish(a).await.expect("consistent");
            store.publish(b).await.expect("consistent");
            for i in 0..100 {
                let node = Node {
                    id: format!("edge-{i}"),
                    cluster: "gateway".into(),
                    ..Node::default()
                };
                let stream = store.open_stream(&node, Protocol::Sotw);
                for kind in [
                    ResourceType::Cluster,
                    ResourceType::Listener,
                    ResourceType::Route,
                ] {
                    stream.sent(kind, "v", &b_version, "1");
                    stream.acked(kind, "v", &b_version);
                }
                streams.push(stream);
            }
        });
        let (_status, rx) = watch::channel(Arc::new(Status::default()));
        let state = State::new(store.clone(), rx, metrics, None);
        let page = runtime.block_on(get(&state, "/diag"));

        let mut group = c.benchmark_group("admin");
        group.throughput(Throughput::Elements(n as u64));
        group.sample_size(if n >= 10_000 { 10 } else { 30 });
        group.bench_with_input(BenchmarkId::new("diag_warm", n), &n, |bench, _| {
            bench.iter(|| runtime.block_on(get(&state, "/diag")));
        });
        group.bench_with_input(BenchmarkId::new("diag_cold", n), &n, |bench, _| {
            // A fresh state has an empty inventory cache: decode, then render.
            bench.iter(|| {
                let cold = State::new(
                    store.clone(),
                    state.status.clone(),
                    state.metrics.clone(),
                    None,
                );
                runtime.block_on(get(&cold, "/diag"))
            });
        });
        group.bench_with_input(BenchmarkId::new("api_routes_warm", n), &n, |bench, _| {
            bench.iter(|| runtime.block_on(get(&state, "/api/v1/routes")));
        });
        let diff = format!("/api/v1/diff?from={a_version}&to={b_version}");
        group.bench_with_input(BenchmarkId::new("api_diff", n), &n, |bench, _| {
            bench.iter(|| runtime.block_on(get(&state, &diff)));
        });
        group.bench_with_input(BenchmarkId::new("metrics_scrape", n), &n, |bench, _| {
            bench.iter(|| runtime.block_on(get(&state, "/metrics")));
        });
        group.finish();
        eprintln!("admin/{n}: /diag is {} KiB", page / 1024);
        drop(streams);
    }
}

criterion_group!(benches, admin_bench);
criterion_main!(benches);
