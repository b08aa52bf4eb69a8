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
use std::path::PathBuf;
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

Examples:

  attache validate example-repo
  attache validate --format json deploy/gateway > report.json
  attache render example-repo --format json
  attache render example-repo --bootstrap --admin-port 9901 --secrets-dir /run/secrets > envoy.yaml
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
SECRETS_DIR/NAME/{tls.crt,tls.key}. Without --secrets-dir they are not checked (a warning
each), which suits pull-request CI.

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
}

/// What `validate` and `render` share: where the config is and how to load it.
#[derive(Debug, Args)]
struct LoadArgs {
    /// The config directory (a checkout of the gateway repo, or a mounted ConfigMap).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Where TLS secrets are: NAME/tls.crt and NAME/tls.key for each secret NAME.
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// Leave out invalid resources instead of rejecting the whole revision.
    #[arg(long)]
    allow_partial: bool,
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
    init_tracing(cli.log_format);
    let result = match &cli.command {
        Command::Validate(args) => validate(args),
        Command::Render(args) => render(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(REJECTED)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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
