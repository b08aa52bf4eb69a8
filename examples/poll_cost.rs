//! What polling a git remote costs (issue 4), and what one changed file of a 10k-Mapping
//! repository costs to turn into a snapshot.
//!
//! ```sh
//! cargo run --release --example poll_cost -- 10000 100
//! ```
//!
//! It generates the `pipeline` benchmark's repository (N Mappings in F team files,
//! default 100), commits it to a bare repository served by `git daemon` on loopback, and
//! measures with attache's own `GitSource`:
//! - an unchanged poll (one ref advertisement, nothing fetched, nothing parsed), 50 times;
//! - a poll after a commit that changes one file (fetch plus reading the tree);
//! - the stages that follow for that revision, cold: parse + validate, translate,
//!   snapshot;
//! - the steady state of `attache serve` (issue 4): a pipeline that built the previous
//!   revision gets the next, one file changed, 40 commits in a row; from the revision
//!   read to the snapshot published in the store.

#[path = "../benches/support/generate.rs"]
mod generate;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attache::config::{self, yaml::Limits};
use attache::endpoints::Endpoints;
use attache::pipeline::Incremental;
use attache::snapshot::{Snapshot, Store, StoreConfig};
use attache::source::git::{Auth, GitConfig, GitSource, Reference};
use attache::source::{Poll, Source};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One-file commits of the steady state: twice the store's default history (20).
const COMMITS: usize = 40;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fail(message: &str) -> ! {
    eprintln!("poll_cost: {message}");
    std::process::exit(1)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .unwrap_or_else(|e| fail(&format!("git: {e}")));
    if !output.status.success() {
        fail(&format!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| fail("usage: poll_cost MAPPINGS"))
        })
        .unwrap_or(10_000);
    let file_count: usize = std::env::args()
        .nth(2)
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| fail("usage: poll_cost MAPPINGS [FILES]"))
        })
        .unwrap_or(100);
    let tmp = std::env::temp_dir().join(format!("attache-poll-cost-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (remote, work) = (tmp.join("remote.git"), tmp.join("work"));
    std::fs::create_dir_all(&work).unwrap_or_else(|e| fail(&e.to_string()));
    git(&tmp, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
    git(&work, &["init", "-q", "-b", "main"]);
    let files = generate::repo_in(count, file_count);
    for (path, text) in &files {
        let path = work.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| fail(&e.to_string()));
        }
        std::fs::write(path, text).unwrap_or_else(|e| fail(&e.to_string()));
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "generated"]);
    git(
        &work,
        &["push", "-q", &remote.display().to_string(), "HEAD:main"],
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(&e.to_string()));
    let exec_path = git(&tmp, &["--exec-path"]);
    let _daemon = Killed(
        Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", tmp.display()))
            .arg(&tmp)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("git daemon: {e}"))),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            fail("git daemon did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut source = GitSource::new(GitConfig {
        url: format!("git://127.0.0.1:{port}/remote.git"),
        reference: Reference::Branch("main".to_owned()),
        subdir: None,
        state_dir: tmp.join("state"),
        interval: Duration::from_secs(15),
        auth: Auth::default(),
        limits: Limits::default(),
    });
    let started = Instant::now();
    let Ok(Poll::Changed(first)) = source.poll() else {
        fail("the first poll must clone and return the revision");
    };
    println!(
        "{count} Mappings in {} files: first poll (clone + read tree) {}",
        first.files.len(),
        ms(started.elapsed())
    );

    let mut unchanged = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        match source.poll() {
            Ok(Poll::Unchanged) => unchanged.push(started.elapsed()),
            other => fail(&format!(
                "an unchanged remote must poll as Unchanged, got {other:?}"
            )),
        }
    }
    unchanged.sort();
    println!(
        "unchanged poll, 50 times: p50 {}, max {} (ref advertisement only; nothing fetched or parsed)",
        ms(unchanged[unchanged.len() / 2]),
        ms(unchanged[unchanged.len() - 1])
    );

    // One file changes.
    let (path, text) = &files[files.len() / 2];
    std::fs::write(
        work.join(path),
        text.replacen("timeout_ms", "idle_timeout_ms", 1),
    )
    .unwrap_or_else(|e| fail(&e.to_string()));
    git(&work, &["commit", "-q", "-am", "one file"]);
    git(
        &work,
        &["push", "-q", &remote.display().to_string(), "HEAD:main"],
    );
    let started = Instant::now();
    let Ok(Poll::Changed(revision)) = source.poll() else {
        fail("a pushed commit must poll as Changed");
    };
    let read = started.elapsed();
    let started = Instant::now();
    let outcome = config::load_files(&revision.files, &config::Options::default());
    let parse = started.elapsed();
    let Ok((config, _)) = outcome.into_result() else {
        fail("the generated repository must validate");
    };
    let started = Instant::now();
    let resources = attache::translate::translate(&config, &Endpoints::default());
    let translate = started.elapsed();
    let started = Instant::now();
    let snapshot =
        Snapshot::new(&revision.meta.id, 0, &resources).unwrap_or_else(|e| fail(&e.to_string()));
    let encode = started.elapsed();
    println!(
        "one file changed: poll (fetch + read tree) {}, then parse+validate {}, translate {}, snapshot {} = {} after the read ({} resources)",
        ms(read),
        ms(parse),
        ms(translate),
        ms(encode),
        ms(parse + translate + encode),
        snapshot.len()
    );

    // The steady state: the pipeline's caches hold the revision before, the store
    // holds its snapshot. Each commit changes one Mapping's prefix in one file.
    let options = config::Options::default();
    let endpoints = Endpoints::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let store = Store::new(StoreConfig::default());
    let mut incremental = Incremental::default();
    let publish = |incremental: &mut Incremental, revision: attache::source::Revision| {
        let previous = store.latest();
        let built = incremental.build(revision, &options, &endpoints, previous.as_deref());
        let Ok((_, snapshot)) = built.result else {
            fail("the generated repository must validate");
        };
        runtime
            .block_on(store.publish(snapshot))
            .unwrap_or_else(|e| fail(&e.to_string()));
        (built.timings, built.way)
    };
    publish(&mut incremental, *revision);
    let mut totals = Vec::new();
    let mut stages = Vec::new();
    let mut reads = Vec::new();
    let mut ways = std::collections::BTreeMap::new();
    for i in 0..COMMITS {
        // Team files only (index 0 holds the Hosts), a different one each time.
        let (path, _) = &files[1 + (i * 7) % (files.len() - 1).max(1)];
        let text =
            std::fs::read_to_string(work.join(path)).unwrap_or_else(|e| fail(&e.to_string()));
        // Toggle one Mapping's prefix, so every commit is a real one-line change.
        let changed = if text.contains("/api-v2/") {
            text.replacen("/api-v2/", "/api/", 1)
        } else {
            text.replacen("/api/", "/api-v2/", 1)
        };
        std::fs::write(work.join(path), changed).unwrap_or_else(|e| fail(&e.to_string()));
        git(&work, &["commit", "-q", "-am", "one file"]);
        git(
            &work,
            &["push", "-q", &remote.display().to_string(), "HEAD:main"],
        );
        let started = Instant::now();
        let Ok(Poll::Changed(revision)) = source.poll() else {
            fail("a pushed commit must poll as Changed");
        };
        reads.push(started.elapsed());
        let started = Instant::now();
        let (timings, way) = publish(&mut incremental, *revision);
        totals.push(started.elapsed());
        *ways.entry(format!("{way:?}")).or_insert(0) += 1;
        stages.push((timings.parse, timings.translate, timings.publish));
    }
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    // The store keeps the last `history` snapshots (20): until it is full, every
    // revision's RouteConfiguration needs memory the process never had; after, the
    // buffer of the snapshot that left the history is written again.
    for (label, range) in [
        ("commits 1-20 (history filling)", 0..COMMITS / 2),
        ("commits 21-40 (history full)", COMMITS / 2..COMMITS),
    ] {
        let stages = &stages[range.clone()];
        let totals = &totals[range.clone()];
        println!(
            "steady state, one file changed, {label}: read p50 {}; revision read -> snapshot published p50 {} (max {}); parse+validate p50 {}, translate p50 {}, snapshot p50 {}",
            ms(median(&reads[range])),
            ms(median(totals)),
            ms(totals.iter().copied().max().unwrap_or_default()),
            ms(median(&stages.iter().map(|s| s.0).collect::<Vec<_>>())),
            ms(median(&stages.iter().map(|s| s.1).collect::<Vec<_>>())),
            ms(median(&stages.iter().map(|s| s.2).collect::<Vec<_>>())),
        );
    }
    println!("ways the {COMMITS} revisions were built: {ways:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}
