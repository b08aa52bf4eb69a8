//! The `attache` command line: parse arguments, set up logging, run one subcommand.
//!
//! All the work lives in the library (`config`, `translate`, `render`) so tests can drive
//! it without a process; this file only turns arguments into calls and results into
//! output and exit codes. It is the one place that uses `anyhow`.
//!
//! Exit codes, stable because CI scripts branch on them: 0 the revision is accepted,
//! 1 it is rejected (or rendering failed), 2 the command could not run (bad arguments,
//! unreadable directory).
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use attache::config::{self, Diagnostic, Outcome, Policy, Severity};
use attache::endpoints::Endpoints;
use attache::render;
use attache::translate;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// Translation builds tens of thousands of small, short-lived allocations per revision
/// (prost messages, strings, maps); mimalloc makes `translate` of 10k Mappings about a
/// third faster than glibc's allocator (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LONG_ABOUT: &str = "\
attache is a GitOps control plane for Envoy. Gateway configuration lives as declarative
YAML (Emissary's getambassador.io/v3alpha1 Mapping, Host, Listener, TLSContext, ...) in a
git repository or a mounted ConfigMap; attache validates it, translates it into Envoy
resources and serves them to Envoy over xDS.

These commands work on a directory of YAML files, with no Envoy or cluster needed:

  validate  check a config directory, report every problem as file:line:col
  render    print the Envoy resources a config directory becomes
  diff      show what a change between two commits does to Envoy, route by route

These run the control plane:

  serve      serve a config directory or git repository to Envoy nodes over xDS
             (ADS, SotW and delta)
  bootstrap  print an Envoy bootstrap that points at attache

Examples:

  attache validate example-repo
  attache validate --format json deploy/gateway > report.json
  attache render example-repo --format json
  attache render example-repo --bootstrap --admin-port 9901 --secrets-dir /run/secrets > envoy.yaml
  envoy -c envoy.yaml

  attache serve --dir example-repo --xds-addr 127.0.0.1:18000 &
  attache bootstrap --node-id edge-1 --cluster edge --xds-address 127.0.0.1:18000 > envoy.yaml
  envoy -c envoy.yaml

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=attache=debug) to see more.";

const VALIDATE_ABOUT: &str = "\
Loads every *.yaml / *.yml file below DIR (recursively, skipping dot-entries), validates
every resource, and prints each problem rustc-style:

  mappings/users.yaml:12:5: error: Mapping \"users\": spec.prefix: must start with \"/\"

followed by a summary line. Every problem is reported, not just the first.

Exit status: 0 when the revision would be served (warnings allowed), 1 when it has errors
(or, with --allow-partial, never for invalid resources: they are left out instead), 2 when
DIR cannot be read or the arguments are wrong.

Certificates are not in the config repo: a Host's tlsSecret NAME is read from
SECRETS_DIR/NAME/{tls.crt,tls.key}, a TLSContext's ca_secret NAME from SECRETS_DIR/NAME/ca.crt
(else tls.crt). Without --secrets-dir they are not checked (a warning each), which suits
pull-request CI.

Examples:

  attache validate example-repo
  attache validate gateway/ --format json | jq '.diagnostics[] | select(.severity == \"error\")'
  attache validate gateway/ --secrets-dir /run/secrets";

const RENDER_ABOUT: &str = "\
Validates DIR like `attache validate`, then prints the Envoy resources it translates to,
in the proto3 JSON mapping Envoy reads (Any as \"@type\" plus fields), as YAML or JSON.

By default the output lists the xDS resources by type (clusters, endpoints, listeners,
routes, secrets), as attache would serve them; private keys are redacted. With --bootstrap
it is instead one static Envoy bootstrap holding all of them (routes, endpoints and
secrets inline, private keys included), which Envoy can run or check directly:

  attache render gateway/ --bootstrap --secrets-dir /run/secrets > envoy.yaml
  envoy --mode validate -c envoy.yaml

Diagnostics go to stderr. When the revision is rejected nothing is printed to stdout and
the exit status is 1; 2 when DIR cannot be read.

Examples:

  attache render example-repo
  attache render example-repo --format json | jq '.routes[].virtual_hosts[].domains'
  attache render example-repo --bootstrap --admin-port 9901 > envoy.yaml";

const SERVE_ABOUT: &str = "\
Serves the configuration from a directory (--dir) or a git remote (--git) to Envoy nodes
over gRPC ADS (state of the world and delta), on --xds-addr.

At start the last good snapshot is loaded from --state-dir and served at once, so nodes
that reconnect keep their configuration even if the source is unavailable. Then the source
is read, validated and translated; a revision with errors is rejected whole (unless
--allow-partial) and the previous snapshot keeps serving. attache exits with an error only
when it has neither a usable first revision nor a persisted snapshot.

--dir is watched: any change (an edit, or kubelet swapping a ConfigMap's ..data link) is
read within ~100 ms, and the whole directory is re-read every 60 s as a safety net. The
revision id is the SHA-256 of the content, so identical content changes nothing.

--git is cloned (bare) into the state dir and polled every --interval: one small request
asks where the branch (or tag) points, and a fetch happens only when it moved. Files are
read from the commit itself. A rejected commit is not retried until the branch moves; a
force-push is followed. An unreachable remote keeps the last revision serving and is
retried with backoff. POST /webhook on the admin address (with --webhook-secret-file)
triggers a poll at once.

With --xds-tls-cert, --xds-tls-key and --xds-client-ca, ADS is served over TLS (ALPN h2)
and every client must present a certificate that chains to --xds-client-ca: the stream
carries private keys. The three files are read at start (a wrong one stops attache) and
again when they change, so a rotated certificate is used for new connections without a
restart; a broken rotation keeps the previous set. Refused handshakes are logged with the
peer address and counted in attache_xds_tls_handshake_failures_total{reason}.

With --canary, a new snapshot goes to the matching nodes first; once every connected
canary has ACKed it and --canary-bake has passed without a NACK, it goes to all nodes. A
canary NACK halts the rollout: the fleet stays on the previous version.

A Mapping's `service: users.shop:8080` reaches the ready pods of that Service. With
--endpoints kubernetes (chosen by `auto` when in-cluster credentials or a kubeconfig
reach an API server) attache watches Services and EndpointSlices (every namespace, or
each --namespace) and sends Envoy only the changed endpoints over EDS, bursts gathered
into one update within 50 ms. It needs get/list/watch on services and endpointslices
(deploy/base/rbac.yaml). With --endpoints dns (the `auto` choice without a cluster) Envoy
resolves name.namespace.svc.cluster.local itself.

Examples:

  attache serve --dir example-repo
  attache serve --git https://github.com/acme/gateway.git --branch main --git-path edge \\
      --https-token-file /run/secrets/git/token --interval 30s
  attache serve --git ssh://git@github.com/acme/gateway.git --ssh-key /run/secrets/git/key \\
      --known-hosts /run/secrets/git/known_hosts
  attache serve --dir /config --secrets-dir /run/secrets --xds-addr 0.0.0.0:18000 \\
      --canary metadata.canary=true --canary-bake 30s";

const DIFF_ABOUT: &str = "\
Translates the config of two commits and prints what changes in Envoy's configuration:
listeners, virtual hosts, routes (what each matches and where it goes), clusters,
endpoints and secrets, each added (+), removed (-) or changed (~), with the file:line it
comes from. For pull-request review:

  attache diff origin/main HEAD --git-path gateway

Only behaviour counts: a Mapping moved to another line or file is not a change.

Exit status: 0 when Envoy's configuration is the same, 1 when it differs, 2 when a
commit cannot be read or does not validate (its errors are printed).";

const BOOTSTRAP_ABOUT: &str = "\
Prints an Envoy bootstrap that gets listeners and clusters (and through them routes,
endpoints and secrets) from attache over ADS. Run Envoy on it:

  attache bootstrap --node-id edge-1 --cluster edge --xds-address 127.0.0.1:18000 \\
      --admin-port 9901 > envoy.yaml
  envoy -c envoy.yaml

--metadata KEY=VALUE sets node metadata, which `serve --canary metadata.KEY=VALUE` matches.

For an attache serving ADS over TLS (`serve --xds-tls-cert`), give Envoy a client
certificate signed by a CA in attache's --xds-client-ca, and the CA of attache's
certificate. Envoy reads the files itself (the key never enters the bootstrap) and checks
that attache's certificate names --xds-server-name (default: the host of --xds-address):

  attache bootstrap --node-id edge-1 --cluster edge --xds-address attache.gw.svc:18000 \\
      --xds-tls-cert /etc/envoy/xds/tls.crt --xds-tls-key /etc/envoy/xds/tls.key \\
      --xds-ca /etc/envoy/xds/ca.crt > envoy.yaml

Envoy reads those files once, at start. With --xds-tls-sds-dir DIR, attache also writes
two small file-based SDS configs into DIR that name them, and the bootstrap takes the
certificate through them: Envoy then watches the files and uses a renewed certificate,
key or CA for its next connection to attache, without a restart.";

#[derive(Debug, Parser)]
#[command(name = "attache", version, about = "A GitOps control plane for Envoy", long_about = LONG_ABOUT)]
struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config directory and report every problem as file:line:col.
    #[command(long_about = VALIDATE_ABOUT)]
    Validate(ValidateArgs),
    /// Print the Envoy resources (or a static Envoy bootstrap) a config directory becomes.
    #[command(long_about = RENDER_ABOUT)]
    Render(RenderArgs),
    /// Serve a config directory or git repository to Envoy nodes over xDS.
    #[command(long_about = SERVE_ABOUT)]
    Serve(Box<ServeArgs>),
    /// Print an Envoy bootstrap that points at attache.
    #[command(long_about = BOOTSTRAP_ABOUT)]
    Bootstrap(BootstrapArgs),
    /// Show what a change between two commits does to Envoy's configuration.
    #[command(long_about = DIFF_ABOUT)]
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// The old commit (any revision git understands: SHA, branch, tag, HEAD~1).
    #[arg(value_name = "A")]
    from: String,
    /// The new commit.
    #[arg(value_name = "B")]
    to: String,
    /// The repository (a checkout or a bare clone).
    #[arg(long, value_name = "PATH", default_value = ".")]
    repo: PathBuf,
    /// Only the files below this directory of the repository are config.
    #[arg(long, value_name = "SUBDIR")]
    git_path: Option<String>,
    /// Where TLS secrets are, as for validate.
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    #[command(flatten)]
    gateway: GatewayArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["dir", "git"])))]
#[command(group(clap::ArgGroup::new("git_ref").args(["branch", "tag", "rev"])))]
struct ServeArgs {
    /// A config directory to watch (a checkout of the gateway repo, or a mounted ConfigMap).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// A git remote to poll: https://, ssh://, git@host:path, git:// or file://.
    #[arg(long, value_name = "URL")]
    git: Option<String>,
    /// The branch to follow (default: main).
    #[arg(long, value_name = "NAME", requires = "git")]
    branch: Option<String>,
    /// A tag to serve instead of a branch (followed if it is moved).
    #[arg(long, value_name = "NAME", requires = "git")]
    tag: Option<String>,
    /// A commit to serve, pinned: fetched once, never polled again.
    #[arg(long, value_name = "SHA", requires = "git")]
    rev: Option<String>,
    /// Only the files below this directory of the repository are config.
    #[arg(long, value_name = "SUBDIR", requires = "git")]
    git_path: Option<String>,
    /// How often the remote is asked whether the branch moved.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    interval: std::time::Duration,
    /// SSH private key for an SSH remote (requires --known-hosts).
    #[arg(long, value_name = "FILE", requires = "known_hosts")]
    ssh_key: Option<PathBuf>,
    /// OpenSSH known_hosts file the SSH server's host key must be listed in.
    #[arg(long, value_name = "FILE")]
    known_hosts: Option<PathBuf>,
    /// A file holding an HTTPS access token; re-read on every fetch.
    #[arg(long, value_name = "FILE")]
    https_token_file: Option<PathBuf>,
    /// The shared secret that POST /webhook requests are signed with (GitHub
    /// X-Hub-Signature-256 or GitLab X-Gitlab-Token).
    #[arg(long, value_name = "FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// Where the ADS server listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:18000")]
    xds_addr: SocketAddr,
    /// Serve ADS over TLS with this certificate chain (PEM, leaf first). Requires
    /// --xds-tls-key and --xds-client-ca; the files are re-read when they change.
    #[arg(long, value_name = "FILE", requires_all = ["xds_tls_key", "xds_client_ca"])]
    xds_tls_cert: Option<PathBuf>,
    /// The private key of --xds-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["xds_tls_cert", "xds_client_ca"])]
    xds_tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that Envoy's client certificates must chain to; a client
    /// without one is refused (the ADS stream carries private keys).
    #[arg(long, value_name = "FILE", requires_all = ["xds_tls_cert", "xds_tls_key"])]
    xds_client_ca: Option<PathBuf>,
    /// Where the admin server listens: /healthz, /readyz, /metrics, /diag, /api/v1/,
    /// POST /webhook. Loopback by default; it shows the whole configuration, so bind a
    /// public address only on purpose.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8877")]
    admin_addr: SocketAddr,
    /// Where the last good snapshot is kept across restarts.
    #[arg(long, value_name = "DIR", default_value = ".attache-state")]
    state_dir: PathBuf,
    /// Nodes that get new snapshots first: `metadata.KEY=VALUE` or `cluster=NAME`.
    #[arg(long, value_name = "SELECTOR", value_parser = parse_canary)]
    canary: Option<attache::snapshot::CanarySelector>,
    /// How long canaries must hold a new snapshot without a NACK before all nodes get it.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    canary_bake: std::time::Duration,
    /// Where TLS secrets are: NAME/tls.crt and NAME/tls.key for each secret NAME, and
    /// NAME/ca.crt for a CA (`ca_secret`).
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// Leave out invalid resources instead of rejecting the whole revision.
    #[arg(long)]
    allow_partial: bool,
    #[command(flatten)]
    gateway: GatewayArg,
    /// Where endpoints come from: EndpointSlices (kubernetes), the cluster DNS names
    /// (dns), or kubernetes when an API server is reachable (auto).
    #[arg(long, value_enum, default_value_t = EndpointsMode::Auto)]
    endpoints: EndpointsMode,
    /// A namespace to watch EndpointSlices in (repeat for several); default: all.
    #[arg(long = "namespace", value_name = "NAMESPACE", value_parser = attache::endpoints::parse_namespace)]
    namespaces: Vec<String>,
    /// The cluster DNS domain --endpoints dns appends after `.svc.`.
    #[arg(long, value_name = "DOMAIN", default_value = attache::endpoints::DEFAULT_CLUSTER_DOMAIN,
          value_parser = attache::endpoints::parse_cluster_domain)]
    cluster_domain: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EndpointsMode {
    Kubernetes,
    Dns,
    Auto,
}

#[derive(Debug, Args)]
struct BootstrapArgs {
    /// The node id Envoy reports (unique per Envoy).
    #[arg(long, value_name = "ID")]
    node_id: String,
    /// The node's cluster (the fleet it belongs to).
    #[arg(long, value_name = "NAME")]
    cluster: String,
    /// attache's xDS address, HOST:PORT (a name is resolved by Envoy with DNS).
    #[arg(long, value_name = "HOST:PORT")]
    xds_address: String,
    /// Use incremental (delta) xDS instead of state of the world.
    #[arg(long)]
    delta: bool,
    /// Envoy's admin interface port, on 127.0.0.1.
    #[arg(long, value_name = "PORT", default_value_t = 9901)]
    admin_port: u16,
    /// Node metadata, KEY=VALUE (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    metadata: Vec<(String, String)>,
    /// Connect to attache over TLS with this client certificate (PEM, a path Envoy
    /// reads). Requires --xds-tls-key and --xds-ca.
    #[arg(long, value_name = "FILE", requires_all = ["xds_tls_key", "xds_ca"])]
    xds_tls_cert: Option<String>,
    /// The private key of --xds-tls-cert (PEM, a path Envoy reads; never inlined).
    #[arg(long, value_name = "FILE", requires_all = ["xds_tls_cert", "xds_ca"])]
    xds_tls_key: Option<String>,
    /// CA certificates (PEM, a path Envoy reads) that attache's certificate must chain to.
    #[arg(long, value_name = "FILE", requires_all = ["xds_tls_cert", "xds_tls_key"])]
    xds_ca: Option<String>,
    /// The name attache's certificate must carry (SAN) and the SNI sent; default: the
    /// host of --xds-address.
    #[arg(long, value_name = "NAME", requires = "xds_ca")]
    xds_server_name: Option<String>,
    /// Write two file-based SDS configs naming the three files into DIR (created if
    /// missing) and point the bootstrap at them, so Envoy reloads its certificate, key
    /// and CA when they are renewed; without it Envoy reads them once, at start.
    #[arg(long, value_name = "DIR", requires = "xds_ca")]
    xds_tls_sds_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Yaml)]
    format: OutputFormat,
}

fn parse_canary(text: &str) -> Result<attache::snapshot::CanarySelector, String> {
    attache::snapshot::CanarySelector::try_new(text).map_err(|e| e.to_string())
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// `500ms`, `10s`, `2m`, or a plain number of seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 10s, 500ms or 2m, got {text:?}"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("unknown unit {unit:?} in {text:?}: use ms, s or m")),
    }
}

/// What `validate` and `render` share: where the config is and how to load it.
#[derive(Debug, Args)]
struct LoadArgs {
    /// The config directory (a checkout of the gateway repo, or a mounted ConfigMap).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Where TLS secrets are: NAME/tls.crt and NAME/tls.key for each secret NAME, and
    /// NAME/ca.crt for a CA (`ca_secret`).
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// Leave out invalid resources instead of rejecting the whole revision.
    #[arg(long)]
    allow_partial: bool,
    #[command(flatten)]
    gateway: GatewayArg,
}

/// Which gateway's resources to load (`validate`, `render`, `serve`, `diff`).
#[derive(Debug, Args)]
struct GatewayArg {
    /// Load only this gateway's resources when several share the config: those whose
    /// `ambassador_id` names ID, or names nothing when ID is `default` (Emissary's
    /// AMBASSADOR_ID).
    #[arg(
        long,
        value_name = "ID",
        env = "AMBASSADOR_ID",
        default_value = "default"
    )]
    ambassador_id: config::AmbassadorId,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Output format: rustc-style lines, or one JSON object.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
}

#[derive(Debug, Args)]
struct RenderArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Yaml)]
    format: OutputFormat,
    /// Print one static Envoy bootstrap holding every resource (keys included) instead.
    #[arg(long)]
    bootstrap: bool,
    /// Give the bootstrap an admin interface on 127.0.0.1:PORT.
    #[arg(long, value_name = "PORT", requires = "bootstrap")]
    admin_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Yaml,
    Json,
}

/// The exit statuses (see the module docs).
const ACCEPTED: u8 = 0;
const REJECTED: u8 = 1;
const CANNOT_RUN: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A daemon says what it is doing; one-shot commands only what went wrong.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    init_tracing(cli.log_format, default_level);
    let result = match &cli.command {
        Command::Validate(args) => validate(args),
        Command::Render(args) => render(args),
        Command::Serve(args) => serve(args),
        Command::Bootstrap(args) => bootstrap(args),
        Command::Diff(args) => diff(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(REJECTED)
        }
    }
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only where a person reads them, not in files and log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A loaded revision and how many files it came from.
struct Loaded {
    outcome: Outcome,
    files: usize,
}

/// Loads `args.dir`, or prints why it cannot be read (the caller exits [`CANNOT_RUN`]).
fn load(args: &LoadArgs) -> Option<Loaded> {
    let options = config::Options {
        policy: if args.allow_partial {
            Policy::SkipInvalid
        } else {
            Policy::RejectRevision
        },
        secrets_dir: args.secrets_dir.clone(),
        ambassador_id: args.gateway.ambassador_id.clone(),
        ..Default::default()
    };
    // `read_dir` + `load_files` rather than `load_dir`, to know the file count.
    let (files, read_problems) = match config::read_dir(&args.dir, &options.limits) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return None;
        }
    };
    let mut outcome = config::load_files(&files, &options);
    outcome.diagnostics.extend(read_problems);
    outcome.diagnostics.sort();
    outcome.diagnostics.dedup();
    tracing::debug!(
        dir = %args.dir.display(),
        files = files.len(),
        diagnostics = outcome.diagnostics.len(),
        "loaded"
    );
    Some(Loaded {
        outcome,
        files: files.len(),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// === validate ===

/// The `--format json` report of `attache validate`.
#[derive(Serialize)]
struct Report<'a> {
    accepted: bool,
    policy: &'static str,
    files: usize,
    errors: usize,
    warnings: usize,
    diagnostics: &'a [Diagnostic],
}

fn validate(args: &ValidateArgs) -> anyhow::Result<u8> {
    let Some(loaded) = load(&args.load) else {
        return Ok(CANNOT_RUN);
    };
    let outcome = &loaded.outcome;
    let mut out = String::new();
    match args.format {
        ReportFormat::Text => {
            for d in &outcome.diagnostics {
                out.push_str(&format!("{d}\n"));
            }
            out.push_str(&summary(&loaded));
            out.push('\n');
        }
        ReportFormat::Json => {
            let (errors, warnings) = counts(outcome);
            let report = Report {
                accepted: outcome.is_accepted(),
                policy: match outcome.policy {
                    Policy::RejectRevision => "reject-revision",
                    Policy::SkipInvalid => "skip-invalid",
                },
                files: loaded.files,
                errors,
                warnings,
                diagnostics: &outcome.diagnostics,
            };
            out = serde_json::to_string_pretty(&report).context("serializing the report")?;
            out.push('\n');
        }
    }
    print_stdout(&out)?;
    Ok(if outcome.is_accepted() {
        ACCEPTED
    } else {
        REJECTED
    })
}

fn counts(outcome: &Outcome) -> (usize, usize) {
    let errors = outcome.errors().count();
    let warnings = outcome
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count();
    (errors, warnings)
}

/// `error: 2 errors, 1 warning in 14 files`, with a verdict in front.
fn summary(loaded: &Loaded) -> String {
    let (errors, warnings) = counts(&loaded.outcome);
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let counted = format!(
        "{}, {} in {}",
        plural(errors, "error"),
        plural(warnings, "warning"),
        plural(loaded.files, "file")
    );
    if !loaded.outcome.is_accepted() {
        format!("error: revision rejected: {counted}")
    } else if errors > 0 {
        format!("warning: invalid resources left out (--allow-partial): {counted}")
    } else if warnings > 0 {
        format!("warning: revision accepted: {counted}")
    } else {
        format!("ok: revision accepted: {counted}")
    }
}

// === serve ===

fn serve(args: &ServeArgs) -> anyhow::Result<u8> {
    use attache::source::git::{Auth, GitConfig, Reference};
    let limits = config::yaml::Limits::default();
    let source = match (&args.dir, &args.git) {
        (Some(dir), _) => attache::serve::SourceConfig::Dir(dir.clone()),
        (None, Some(url)) => attache::serve::SourceConfig::Git(GitConfig {
            url: url.clone(),
            reference: match (&args.tag, &args.rev, &args.branch) {
                (Some(tag), _, _) => Reference::Tag(tag.clone()),
                (_, Some(rev), _) => Reference::Rev(rev.clone()),
                (_, _, branch) => {
                    Reference::Branch(branch.clone().unwrap_or_else(|| "main".to_owned()))
                }
            },
            subdir: args.git_path.clone(),
            state_dir: args.state_dir.clone(),
            interval: args.interval,
            auth: Auth {
                ssh_key: args.ssh_key.clone(),
                known_hosts: args.known_hosts.clone(),
                https_token_file: args.https_token_file.clone(),
            },
            limits,
        }),
        (None, None) => unreachable!("clap requires --dir or --git"),
    };
    let xds_tls = match (&args.xds_tls_cert, &args.xds_tls_key, &args.xds_client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(attache::xds::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: client_ca.clone(),
        }),
        _ => None,
    };
    let config = attache::serve::ServeConfig {
        source,
        xds_addr: args.xds_addr,
        xds_tls,
        state_dir: args.state_dir.clone(),
        canary: args.canary.clone(),
        canary_bake: args.canary_bake,
        load: config::Options {
            policy: if args.allow_partial {
                Policy::SkipInvalid
            } else {
                Policy::RejectRevision
            },
            secrets_dir: args.secrets_dir.clone(),
            limits,
            ambassador_id: args.gateway.ambassador_id.clone(),
        },
        retry: std::time::Duration::from_secs(1),
        webhook_secret: args.webhook_secret_file.clone(),
        admin_addr: args.admin_addr,
        endpoints: attache::endpoints::Discovery {
            mode: match args.endpoints {
                EndpointsMode::Kubernetes => attache::endpoints::Mode::Kubernetes,
                EndpointsMode::Dns => attache::endpoints::Mode::Dns,
                EndpointsMode::Auto => attache::endpoints::Mode::Auto,
            },
            namespaces: args.namespaces.clone(),
            cluster_domain: args.cluster_domain.clone(),
            ..attache::endpoints::Discovery::default()
        },
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            signals.cancel();
        });
        attache::serve::run(config, shutdown).await
    })?;
    Ok(ACCEPTED)
}

/// SIGINT (Ctrl-C) or SIGTERM (Kubernetes stopping the pod).
async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

// === diff ===

/// Exit status of `diff` when the configurations differ (0: equal, 2: cannot run).
const DIFFERENT: u8 = 1;

fn diff(args: &DiffArgs) -> anyhow::Result<u8> {
    let repo = match git2::Repository::discover(&args.repo) {
        Ok(repo) => repo,
        Err(e) => {
            eprintln!(
                "error: {} is not a git repository: {}",
                args.repo.display(),
                e.message()
            );
            return Ok(CANNOT_RUN);
        }
    };
    let options = config::Options {
        secrets_dir: args.secrets_dir.clone(),
        ambassador_id: args.gateway.ambassador_id.clone(),
        ..Default::default()
    };
    let mut translated = Vec::new();
    for rev in [&args.from, &args.to] {
        let oid = match repo.revparse_single(rev) {
            Ok(object) => object.id(),
            Err(e) => {
                eprintln!("error: {rev}: {}", e.message());
                return Ok(CANNOT_RUN);
            }
        };
        let revision = match attache::source::git::read_commit(
            &repo,
            oid,
            args.git_path.as_deref(),
            &options.limits,
            rev.clone(),
        ) {
            Ok(revision) => revision,
            Err(e) => {
                eprintln!("error: {rev}: {e}");
                return Ok(CANNOT_RUN);
            }
        };
        let mut outcome = config::load_files(&revision.files, &options);
        outcome.diagnostics.extend(revision.problems);
        outcome.diagnostics.sort();
        match outcome.into_result() {
            Ok((config, _)) => {
                translated.push(translate::translate(&config, &Endpoints::default()))
            }
            Err(rejected) => {
                for d in rejected.diagnostics.iter().filter(|d| d.is_error()) {
                    eprintln!("{d}");
                }
                eprintln!("error: {rev} ({}) does not validate", revision.meta.id);
                return Ok(CANNOT_RUN);
            }
        }
    }
    let changes = attache::diff::diff(&translated[0], &translated[1]);
    let text = match args.format {
        ReportFormat::Text => attache::diff::to_text(&changes),
        ReportFormat::Json => {
            let mut json = serde_json::to_string_pretty(&serde_json::json!({
                "from": args.from,
                "to": args.to,
                "equal": changes.is_empty(),
                "changes": changes,
            }))
            .context("serializing the diff")?;
            json.push('\n');
            json
        }
    };
    print_stdout(&text)?;
    Ok(if changes.is_empty() {
        ACCEPTED
    } else {
        DIFFERENT
    })
}

// === bootstrap ===

fn bootstrap(args: &BootstrapArgs) -> anyhow::Result<u8> {
    use attache::xds::bootstrap::{BootstrapConfig, ClientTls, ads_bootstrap_with_tls};
    let tls = match (&args.xds_tls_cert, &args.xds_tls_key, &args.xds_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(ClientTls {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            server_name: args.xds_server_name.clone(),
            sds_dir: args
                .xds_tls_sds_dir
                .as_ref()
                .map(|dir| dir.display().to_string()),
        }),
        _ => None,
    };
    let bootstrap = ads_bootstrap_with_tls(
        &BootstrapConfig {
            node_id: args.node_id.clone(),
            cluster: args.cluster.clone(),
            metadata: args.metadata.iter().cloned().collect(),
            xds_address: args.xds_address.clone(),
            delta: args.delta,
            admin_port: args.admin_port,
        },
        tls.as_ref(),
    )?;
    let format = match args.format {
        OutputFormat::Yaml => render::Format::Yaml,
        OutputFormat::Json => render::Format::Json,
    };
    if let (Some(tls), Some(dir)) = (&tls, &args.xds_tls_sds_dir) {
        write_sds_files(tls, dir)?;
    }
    let value = render::to_json(&bootstrap).context("rendering the bootstrap")?;
    let text = render::to_text(&value, format).context("serializing the bootstrap")?;
    print_stdout(&text)?;
    Ok(ACCEPTED)
}

/// Writes the file-based SDS configs of `tls` into `dir`, each by a rename: Envoy
/// watches `dir` for moves and must never read a half-written file.
fn write_sds_files(tls: &attache::xds::bootstrap::ClientTls, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, response) in attache::xds::bootstrap::sds_files(tls) {
        let value = render::to_json(&response).context("rendering an SDS config")?;
        let text =
            render::to_text(&value, render::Format::Json).context("serializing an SDS config")?;
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    }
    Ok(())
}

// === render ===

fn render(args: &RenderArgs) -> anyhow::Result<u8> {
    let Some(loaded) = load(&args.load) else {
        return Ok(CANNOT_RUN);
    };
    let mut stderr = std::io::stderr().lock();
    for d in &loaded.outcome.diagnostics {
        writeln!(stderr, "{d}").context("writing diagnostics to stderr")?;
    }
    let rejected = !loaded.outcome.is_accepted();
    if rejected || !loaded.outcome.diagnostics.is_empty() {
        writeln!(stderr, "{}", summary(&loaded)).context("writing diagnostics to stderr")?;
    }
    drop(stderr);
    let Ok((config, _)) = loaded.outcome.into_result() else {
        return Ok(REJECTED);
    };
    let resources = translate::translate(&config, &Endpoints::default());
    drop(config);
    let format = match args.format {
        OutputFormat::Yaml => render::Format::Yaml,
        OutputFormat::Json => render::Format::Json,
    };
    if !args.bootstrap {
        // Streamed resource by resource: the whole document of a 10k-Mapping repo would
        // otherwise be built in memory first.
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        return match render::write_resources(&resources, format, &mut stdout) {
            Err(render::Error::Write { source })
                if source.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                Ok(ACCEPTED)
            }
            Err(e) => Err(e).with_context(|| format!("rendering {}", args.load.dir.display())),
            Ok(()) => Ok(ACCEPTED),
        };
    }
    let admin = args
        .admin_port
        .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    let document = render::bootstrap_document(&resources, admin)
        .with_context(|| format!("rendering {}", args.load.dir.display()))?;
    let text = render::to_text(&document, format).context("serializing the rendered document")?;
    print_stdout(&text)?;
    Ok(ACCEPTED)
}

/// Writes `text` to stdout. A closed pipe (`attache render DIR | head`) is not an error:
/// the reader has what it wanted.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
