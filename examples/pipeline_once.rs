//! One cold run of the config pipeline over the generated repository, stage by stage,
//! for profilers that want a single run rather than criterion's loop (`perf record`,
//! `valgrind --tool=callgrind`):
//!
//! ```sh
//! cargo build --release --example pipeline_once
//! target/release/examples/pipeline_once 100000 encoded 3
//! valgrind --tool=callgrind target/release/examples/pipeline_once 10000 encoded 1
//! ```
//!
//! `encoded` is the path `attache serve` and the `pipeline` bench take (resources encoded
//! as they are built, [`attache::translate::Cache`] starting empty); `structs` builds
//! every resource as a prost struct first ([`attache::translate::translate`], what
//! `attache render` prints) and encodes it afterwards.
//!
//! `steady` is issue 4's steady state: the repository in 100 files goes through
//! [`Incremental`] and a [`Store`], then RUNS revisions each change one Mapping's prefix
//! in another file (as `poll_cost` does). Each of them is one call of `steady_revision`,
//! which callgrind can count alone:
//!
//! ```sh
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*steady_revision*' \
//!   target/release/examples/pipeline_once 10000 steady 4
//! ```

// The allocator the `attache` binary uses, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use attache::config::{self, Options, SourceFile};
use attache::endpoints::Endpoints;
use attache::pipeline::{Incremental, RevisionMeta};
use attache::snapshot::{Store, StoreConfig};
use attache::source::Revision;
use attache::translate;
use prost::Message;

#[path = "../benches/support/generate.rs"]
mod generate;

fn main() {
    let mut args = std::env::args().skip(1);
    let count = args.next().and_then(|a| a.parse::<usize>().ok());
    let mode = args.next().unwrap_or_else(|| "encoded".to_owned());
    let runs = args
        .next()
        .and_then(|a| a.parse::<usize>().ok())
        .unwrap_or(1);
    let (Some(count), "encoded" | "structs" | "steady") = (count, mode.as_str()) else {
        eprintln!("usage: pipeline_once MAPPINGS [encoded|structs|steady] [RUNS]");
        std::process::exit(2);
    };
    if mode == "steady" {
        steady(count, runs);
        return;
    }
    let files: Vec<SourceFile> = generate::repo(count)
        .into_iter()
        .map(|(path, text)| SourceFile {
            path,
            bytes: text.into_bytes(),
        })
        .collect();
    let options = Options::default();
    let endpoints = Endpoints::default();
    for _ in 0..runs {
        let started = Instant::now();
        let outcome = config::load_files(&files, &options);
        assert!(outcome.is_accepted(), "{:?}", outcome.errors().next());
        let loaded = started.elapsed();
        let bytes = match mode.as_str() {
            "structs" => {
                let resources = translate::translate(&outcome.config, &endpoints);
                let translated = started.elapsed();
                let bytes: usize = resources
                    .routes
                    .iter()
                    .map(|r| r.encode_to_vec().len())
                    .chain(resources.clusters.iter().map(|r| r.encode_to_vec().len()))
                    .chain(resources.listeners.iter().map(|r| r.encode_to_vec().len()))
                    .chain(resources.endpoints.iter().map(|r| r.encode_to_vec().len()))
                    .chain(resources.secrets.iter().map(|r| r.encode_to_vec().len()))
                    .sum();
                eprint!("translate {:?} ", translated - loaded);
                bytes
            }
            _ => {
                let (encoded, _) = translate::Cache::new().translate(&outcome.config, &endpoints);
                [
                    &encoded.routes,
                    &encoded.clusters,
                    &encoded.listeners,
                    &encoded.endpoints,
                    &encoded.secrets,
                ]
                .iter()
                .flat_map(|list| list.iter())
                .map(|(_, b)| b.len())
                .sum()
            }
        };
        eprintln!(
            "load_validate {loaded:?} total {:?} ({bytes} bytes)",
            started.elapsed()
        );
    }
}

/// The steady state: revision 0 builds everything, each later one changes one file.
fn steady(count: usize, revisions: usize) {
    let mut files: Vec<SourceFile> = generate::repo_in(count, 100)
        .into_iter()
        .map(|(path, text)| SourceFile {
            path,
            bytes: text.into_bytes(),
        })
        .collect();
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => panic!("a runtime: {e}"),
    };
    let store = Store::new(StoreConfig::default());
    let mut state = Incremental::default();
    for i in 0..=revisions {
        if i > 0 {
            // Team files only (index 0 holds the Hosts), a different one each time;
            // toggling the prefix makes every revision a real one-line change.
            let index = 1 + (i * 7) % (files.len() - 1).max(1);
            let file = &mut files[index];
            let text = String::from_utf8_lossy(&file.bytes).into_owned();
            let changed = if text.contains("/api-v2/") {
                text.replacen("/api-v2/", "/api/", 1)
            } else {
                text.replacen("/api/", "/api-v2/", 1)
            };
            file.bytes = changed.into_bytes();
        }
        let revision = Revision {
            meta: RevisionMeta {
                id: format!("r{i}"),
                ..Default::default()
            },
            files: files.clone(),
            problems: Vec::new(),
        };
        let started = Instant::now();
        let way = steady_revision(&mut state, &store, &runtime, revision);
        eprintln!("revision {i}: {:?} ({way})", started.elapsed());
    }
}

/// One revision from read to published: what issue 4's target times.
#[inline(never)]
fn steady_revision(
    state: &mut Incremental,
    store: &Store,
    runtime: &tokio::runtime::Runtime,
    revision: Revision,
) -> String {
    let previous = store.latest();
    let built = state.build(
        revision,
        &Options::default(),
        &Endpoints::default(),
        previous.as_deref(),
    );
    let way = format!("{:?}", built.way);
    let Ok((_, snapshot)) = built.result else {
        panic!(
            "the generated repository must build: {:?}",
            built.result.err()
        );
    };
    if let Err(e) = runtime.block_on(store.publish(snapshot)) {
        panic!("published: {e}");
    }
    way
}
