//! The configuration pipeline with traffic policies on every Mapping (issue 7): parse +
//! validate and translate the policy-laden repository of `support/policies.rs` next to
//! the plain one of `support/generate.rs`, at 10k Mappings, so the cost of policies is
//! the difference between the two.
//!
//! `cargo bench --bench policies`; figures go in BENCHMARKS.md.

// The allocator the `attache` binary uses, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use attache::config::{self, Options, SourceFile};
use attache::endpoints::Endpoints;
use attache::translate;

#[path = "support/generate.rs"]
mod generate;
#[path = "support/policies.rs"]
mod policies;

fn source(files: Vec<(String, String)>) -> Vec<SourceFile> {
    files
        .into_iter()
        .map(|(path, text)| SourceFile {
            path,
            bytes: text.into_bytes(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    const MAPPINGS: usize = 10_000;
    let inputs = [
        ("plain", source(generate::repo(MAPPINGS))),
        ("policies", source(policies::repo(MAPPINGS))),
    ];
    let mut group = c.benchmark_group("policies");
    for (name, files) in &inputs {
        let outcome = config::load_files(files, &Options::default());
        let errors: Vec<String> = outcome.errors().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let config = outcome.config;
        group.bench_with_input(BenchmarkId::new("load_validate", name), files, |b, f| {
            b.iter(|| config::load_files(black_box(f), &Options::default()))
        });
        group.bench_with_input(BenchmarkId::new("translate", name), &config, |b, c| {
            b.iter(|| translate::translate(black_box(c), &Endpoints::default()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
