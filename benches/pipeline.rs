//! The configuration pipeline at scale (issue 2's speed targets): parse + validate,
//! translate, and encode a generated repository of 1k, 10k and 100k Mappings, each stage
//! on its own and end to end.
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
use attache::translate::{self, Resources};

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
                let resources = translate::translate(&outcome.config, &endpoints);
                encode(&resources)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
