//! The configuration pipeline at scale (issue 2's speed targets): parse + validate,
//! translate, and encode a generated repository of 1k, 10k and 100k Mappings, each stage
//! on its own and end to end.
//!
//! `end_to_end` is what `attache serve` does with a revision it has nothing cached for
//! (its first one): load and validate every file, then translate and encode every
//! resource through [`translate::Cache`] starting empty, which encodes each route as it
//! builds it and assembles the RouteConfigurations from those bytes. `translate` and
//! `encode` are the other way to the same bytes, the one `attache render` takes: every
//! resource built as a prost struct first ([`translate::translate`]), then encoded;
//! `structs_end_to_end` is that way whole, for comparison.
//!
//! The `incremental` group is issue 4's steady state: a running pipeline that built
//! revision A gets revision B, where one of 100 files differs, and turns it into a
//! published snapshot (parse + validate, translate, encode + hash, `Store::publish`),
//! reusing what A left behind. Iterations alternate A and B, so each one is a one-file
//! change.
//!
//! `cargo bench --bench pipeline`; figures go in BENCHMARKS.md.

// The allocator the `attache` binary uses, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use std::hint::black_box;

use attache::config::{self, Options, SourceFile};
use attache::endpoints::Endpoints;
use attache::pipeline::{Incremental, RevisionMeta};
use attache::snapshot::{Snapshot, Store, StoreConfig};
use attache::source::Revision;
use attache::translate::{self, EncodedResources, Resources};

#[path = "support/generate.rs"]
mod generate;

fn files(mappings: usize) -> Vec<SourceFile> {
    generate::repo(mappings)
        .into_iter()
        .map(|(path, text)| SourceFile {
            path,
            bytes: text.into_bytes(),
        })
        .collect()
}

/// Every resource encoded as it goes on the wire; the sum keeps the work observable.
fn encode(resources: &Resources) -> usize {
    resources
        .clusters
        .iter()
        .map(|r| r.encode_to_vec().len())
        .sum::<usize>()
        + resources
            .endpoints
            .iter()
            .map(|r| r.encode_to_vec().len())
            .sum::<usize>()
        + resources
            .listeners
            .iter()
            .map(|r| r.encode_to_vec().len())
            .sum::<usize>()
        + resources
            .routes
            .iter()
            .map(|r| r.encode_to_vec().len())
            .sum::<usize>()
        + resources
            .secrets
            .iter()
            .map(|r| r.encode_to_vec().len())
            .sum::<usize>()
}

/// The size of every encoded resource; the sum keeps the work observable.
fn encoded_len(encoded: &EncodedResources) -> usize {
    [
        &encoded.clusters,
        &encoded.endpoints,
        &encoded.listeners,
        &encoded.routes,
        &encoded.secrets,
    ]
    .into_iter()
    .flatten()
    .map(|(_, bytes)| bytes.len())
    .sum()
}

fn pipeline(c: &mut Criterion) {
    let options = Options::default();
    let endpoints = Endpoints::default();
    for &n in &[1_000usize, 10_000, 100_000] {
        let input = files(n);
        let outcome = config::load_files(&input, &options);
        assert!(
            outcome.is_accepted(),
            "generated repo must be valid: {:?}",
            outcome.errors().next()
        );
        let resources = translate::translate(&outcome.config, &endpoints);
        // Both ways give the same bytes, so the figures compare like with like.
        assert_eq!(
            encoded_len(
                &translate::Cache::new()
                    .translate(&outcome.config, &endpoints)
                    .0
            ),
            encode(&resources)
        );

        let mut group = c.benchmark_group("pipeline");
        group.throughput(Throughput::Elements(n as u64));
        if n >= 100_000 {
            group.sample_size(10);
        } else if n >= 10_000 {
            group.sample_size(20);
        }
        group.bench_with_input(BenchmarkId::new("load_validate", n), &input, |b, input| {
            b.iter(|| config::load_files(black_box(input), &options))
        });
        group.bench_with_input(
            BenchmarkId::new("translate", n),
            &outcome.config,
            |b, config| b.iter(|| translate::translate(black_box(config), &endpoints)),
        );
        group.bench_with_input(BenchmarkId::new("encode", n), &resources, |b, r| {
            b.iter(|| encode(black_box(r)))
        });
        group.bench_with_input(BenchmarkId::new("end_to_end", n), &input, |b, input| {
            b.iter(|| {
                let outcome = config::load_files(black_box(input), &options);
                let (encoded, _) = translate::Cache::new().translate(&outcome.config, &endpoints);
                encoded_len(&encoded)
            })
        });
        group.bench_with_input(
            BenchmarkId::new("structs_end_to_end", n),
            &input,
            |b, input| {
                b.iter(|| {
                    let outcome = config::load_files(black_box(input), &options);
                    let resources = translate::translate(&outcome.config, &endpoints);
                    encode(&resources)
                })
            },
        );
        group.finish();
    }
}

/// Revision A of the 10k repository in 100 files, and B: A with one Mapping's prefix
/// changed in one file.
fn one_file_revisions(mappings: usize) -> (Revision, Revision) {
    let files: Vec<SourceFile> = generate::repo_in(mappings, 100)
        .into_iter()
        .map(|(path, text)| SourceFile {
            path,
            bytes: text.into_bytes(),
        })
        .collect();
    let mut changed = files.clone();
    let middle = changed.len() / 2;
    let text = String::from_utf8(changed[middle].bytes.clone()).expect("generated text");
    changed[middle].bytes = text.replacen("/api/", "/api-v2/", 1).into_bytes();
    assert_ne!(changed[middle].bytes, files[middle].bytes);
    let revision = |id: &str, files: Vec<SourceFile>| Revision {
        meta: RevisionMeta {
            id: id.to_owned(),
            ..Default::default()
        },
        files,
        problems: Vec::new(),
    };
    (revision("a", files), revision("b", changed))
}

fn incremental(c: &mut Criterion) {
    let options = Options::default();
    let endpoints = Endpoints::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for &n in &[10_000usize] {
        let (a, b) = one_file_revisions(n);
        let store = Store::new(StoreConfig::default());
        let mut state = Incremental::default();
        let publish = |state: &mut Incremental, revision: &Revision| {
            let previous = store.latest();
            let built = state.build(revision.clone(), &options, &endpoints, previous.as_deref());
            let Ok((_, snapshot)) = built.result else {
                panic!(
                    "the generated repository must build: {:?}",
                    built.result.err()
                );
            };
            runtime
                .block_on(store.publish(snapshot))
                .expect("published")
        };
        publish(&mut state, &a);
        let mut group = c.benchmark_group("incremental");
        group.sample_size(20);
        let mut next_is_b = true;
        group.bench_function(BenchmarkId::new("one_file", n), |bench| {
            bench.iter_batched(
                || {
                    let revision = if next_is_b { b.clone() } else { a.clone() };
                    next_is_b = !next_is_b;
                    revision
                },
                |revision| publish(&mut state, &revision),
                criterion::BatchSize::PerIteration,
            )
        });
        group.finish();
        // The snapshot it ends on equals a cold build of the same revision.
        let last = store.latest().expect("published");
        let cold_outcome = config::load_files(&a.files, &options);
        let cold_b = config::load_files(&b.files, &options);
        let cold = if last.revision() == "a" {
            cold_outcome
        } else {
            cold_b
        };
        let resources = translate::translate(&cold.config, &endpoints);
        let cold = Snapshot::new(last.revision(), 0, &resources).expect("cold");
        for kind in attache::snapshot::ResourceType::ALL {
            assert_eq!(last.type_version(kind), cold.type_version(kind), "{kind}");
        }
    }
}

criterion_group!(benches, pipeline, incremental);
criterion_main!(benches);
