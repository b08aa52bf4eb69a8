//! Change-to-ACK latency (issue 4): how long from a change of the config source until a
//! real Envoy has applied the new routes.
//!
//! ```sh
//! cargo build --release && cargo run --release --example change_to_ack -- --mode dir
//! cargo build --release && cargo run --release --example change_to_ack -- --mode git
//! ```
//!
//! It starts the release `attache serve` (next to this example's binary) and Envoy
//! (`$ENVOY` or `.venv/bin/envoy`) on `attache bootstrap`, then repeats (20 times by
//! default): change one Mapping's prefix, and wait until Envoy's RDS `update_success`
//! counter moves, which Envoy bumps when it has accepted the new routes (and ACKs).
//! - `dir`: the change is a file written into the watched directory;
//! - `git`: a commit pushed to a bare repository, then a signed `POST /webhook`.
//!
//! Prints every sample and p50 / p95 / max in milliseconds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(&format!("no free port: {e}")))
}

fn fail(message: &str) -> ! {
    eprintln!("change_to_ack: {message}");
    std::process::exit(1)
}

/// One HTTP/1.1 request on a fresh connection; the status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The sum of Envoy's RDS `update_success` counters.
fn rds_updates(admin: SocketAddr) -> u64 {
    http(
        admin,
        "GET",
        "/stats?filter=rds%5C..*%5C.update_success$",
        &[],
        b"",
    )
    .map(|(_, body)| {
        body.lines()
            .filter_map(|l| {
                l.rsplit_once(": ")
                    .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            })
            .sum()
    })
    .unwrap_or(0)
}

fn config(listener_port: u16, prefix: &str) -> [(&'static str, String); 2] {
    [
        (
            "listener.yaml",
            format!(
                "apiVersion: getambassador.io/v3alpha1\nkind: Listener\nmetadata:\n  name: http\nspec:\n  port: {listener_port}\n  protocol: HTTP\n  securityModel: XFP\n  hostBinding:\n    namespace:\n      from: ALL\n"
            ),
        ),
        (
            "mapping.yaml",
            format!(
                "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: moving\nspec:\n  prefix: /{prefix}/\n  service: 127.0.0.1:9\n"
            ),
        ),
    ]
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| fail(&format!("git: {e}")));
    if !status.success() {
        fail(&format!("git {args:?} failed"));
    }
}

fn main() {
    let mut mode = "dir".to_owned();
    let mut iterations = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mode" => mode = args.next().unwrap_or_default(),
            "--iterations" => {
                iterations = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| fail("--iterations N"))
            }
            other => fail(&format!(
                "unknown argument {other:?}; use --mode dir|git --iterations N"
            )),
        }
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(&e.to_string()));
    let attache = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("attache"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            fail("no attache binary next to the examples: run `cargo build --release` first")
        });
    let envoy = std::env::var_os("ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy"));
    let tmp = std::env::temp_dir().join(format!("attache-change-to-ack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| fail(&e.to_string()));

    let listener_port = free_port();
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let envoy_admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let secret = "bench-secret";
    std::fs::write(tmp.join("webhook-secret"), secret).unwrap_or_else(|e| fail(&e.to_string()));

    // The source, with its first revision.
    let (source_args, work) = match mode.as_str() {
        "dir" => {
            let dir = tmp.join("config");
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(&e.to_string()));
            for (name, text) in config(listener_port, "p0") {
                std::fs::write(dir.join(name), text).unwrap_or_else(|e| fail(&e.to_string()));
            }
            (vec!["--dir".to_owned(), dir.display().to_string()], dir)
        }
        "git" => {
            let remote = tmp.join("remote.git");
            let work = tmp.join("work");
            git(
                &tmp,
                &[
                    "init",
                    "-q",
                    "--bare",
                    "-b",
                    "main",
                    &remote.display().to_string(),
                ],
            );
            git(
                &tmp,
                &["init", "-q", "-b", "main", &work.display().to_string()],
            );
            for (name, text) in config(listener_port, "p0") {
                std::fs::write(work.join(name), text).unwrap_or_else(|e| fail(&e.to_string()));
            }
            git(&work, &["add", "-A"]);
            git(&work, &["commit", "-q", "-m", "p0"]);
            git(
                &work,
                &["push", "-q", &remote.display().to_string(), "HEAD:main"],
            );
            (
                vec![
                    "--git".to_owned(),
                    format!("file://{}", remote.display()),
                    // Polling is not what is measured: only the webhook wakes it in time.
                    "--interval".to_owned(),
                    "10m".to_owned(),
                    "--webhook-secret-file".to_owned(),
                    tmp.join("webhook-secret").display().to_string(),
                ],
                work,
            )
        }
        other => fail(&format!("--mode {other:?}: use dir or git")),
    };
    let _attache = Killed(
        Command::new(&attache)
            .arg("serve")
            .args(&source_args)
            .args([
                "--xds-addr",
                &xds.to_string(),
                "--admin-addr",
                &admin.to_string(),
            ])
            .arg("--state-dir")
            .arg(tmp.join("state"))
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("{}: {e}", attache.display()))),
    );
    let bootstrap = Command::new(&attache)
        .args(["bootstrap", "--node-id", "bench", "--cluster", "bench"])
        .args([
            "--xds-address",
            &xds.to_string(),
            "--admin-port",
            &envoy_admin.port().to_string(),
        ])
        .output()
        .unwrap_or_else(|e| fail(&e.to_string()));
    std::fs::write(tmp.join("envoy.yaml"), &bootstrap.stdout)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let _envoy = Killed(
        Command::new(&envoy)
            .arg("-c")
            .arg(tmp.join("envoy.yaml"))
            .args([
                "--base-id",
                &(std::process::id() % 100_000).to_string(),
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(&format!("{}: {e}", envoy.display()))),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while rds_updates(envoy_admin) == 0 {
        if Instant::now() > deadline {
            fail("Envoy never got its first routes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut samples = Vec::with_capacity(iterations);
    for i in 1..=iterations {
        let before = rds_updates(envoy_admin);
        let [_, (name, text)] = config(listener_port, &format!("p{i}"));
        let started = Instant::now();
        std::fs::write(work.join(name), text).unwrap_or_else(|e| fail(&e.to_string()));
        if mode == "git" {
            git(&work, &["commit", "-q", "-am", &format!("p{i}")]);
            git(
                &work,
                &[
                    "push",
                    "-q",
                    &tmp.join("remote.git").display().to_string(),
                    "HEAD:main",
                ],
            );
            let body = br#"{"ref":"refs/heads/main"}"#;
            let signature = attache::source::webhook::github_signature(secret.as_bytes(), body);
            let answer = http(
                admin,
                "POST",
                "/webhook",
                &[
                    ("x-hub-signature-256", &signature),
                    ("x-github-event", "push"),
                ],
                body,
            );
            if !matches!(answer, Some((200..=299, _))) {
                fail(&format!("webhook answered {answer:?}"));
            }
        }
        let deadline = started + Duration::from_secs(10);
        while rds_updates(envoy_admin) <= before {
            if Instant::now() > deadline {
                fail(&format!(
                    "iteration {i}: Envoy did not apply the change within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let elapsed = started.elapsed();
        println!("{i:3}: {:7.1} ms", elapsed.as_secs_f64() * 1000.0);
        samples.push(elapsed);
        // Let the debounce window of the previous change pass.
        std::thread::sleep(Duration::from_millis(300));
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "mode {mode}, {iterations} changes: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        ms(pick(0.5)),
        ms(pick(0.95)),
        ms(pick(1.0))
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
