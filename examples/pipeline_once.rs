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

// The allocator the `attache` binary uses, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use attache::config::{self, Options, SourceFile};
use attache::endpoints::Endpoints;
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
    let (Some(count), "encoded" | "structs") = (count, mode.as_str()) else {
        eprintln!("usage: pipeline_once MAPPINGS [encoded|structs] [RUNS]");
        std::process::exit(2);
    };
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
