//! Configuration: YAML files -> validated [`Config`] plus [`Diagnostic`]s.
//!
//! The stages, in the order data flows through them:
//! - [`yaml`]: bytes -> positioned node trees (bounded: size, depth, aliases);
//! - `load`: documents -> typed raw resources (Emissary's CRD and flat forms, and
//!   resources inside a Service's `getambassador.io/config` annotation);
//! - `validate`: raw resources -> the [`model`](Config) `translate` consumes, with every
//!   problem reported as file:line:column, kind/name and field path.
//!
//! Start at [`load_dir`] (a directory) or [`load_files`] (files already in memory, as the
//! git source has them).

mod cache;
mod delta;
mod diag;
mod load;
mod model;
mod raw;
mod validate;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use cache::{Cache, Reuse};
pub use delta::MappingDelta;
pub use diag::{Diagnostic, ResourceRef, Severity};
pub use load::{CONFIG_ANNOTATION, Error, SourceFile, read_dir};
pub use model::*;
pub use validate::{ParsedService, parse_host_pattern, parse_service, regex_problem};

/// What to do with a revision in which some resources are invalid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Policy {
    /// Reject the whole revision: the last good one keeps serving (GitOps safety; the
    /// default).
    #[default]
    RejectRevision,
    /// Serve the valid resources and leave out the invalid ones (`--allow-partial`).
    SkipInvalid,
}

/// How to load a revision.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub policy: Policy,
    /// Where `tlsSecret` / `secret` names are looked up, as `DIR/NAME/{tls.crt,tls.key}`.
    /// `None` skips reading certificates (with a warning per secret), which suits
    /// `attache validate` in pull-request CI where secrets are not available.
    pub secrets_dir: Option<PathBuf>,
    pub limits: yaml::Limits,
    /// Which gateway's resources to load when several share the repository.
    pub ambassador_id: AmbassadorId,
}

/// The gateway this attache serves, as Emissary's `AMBASSADOR_ID`.
///
/// Emissary lets several gateways share one set of resources: a resource whose
/// `ambassador_id` (a string or a list) does not name this gateway belongs to another
/// one and is left out before it is decoded, as Emissary leaves it out. A resource
/// without `ambassador_id`, or with an empty list, belongs to `default`. Loading every
/// resource regardless would serve one gateway's internal routes on another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AmbassadorId(String);

impl AmbassadorId {
    /// The id of resources that name none.
    pub const DEFAULT: &str = "default";

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a resource whose `ambassador_id` lists `declared` is for this gateway.
    pub fn is_named_by(&self, declared: &[&str]) -> bool {
        if declared.is_empty() {
            self.0 == Self::DEFAULT
        } else {
            declared.contains(&self.0.as_str())
        }
    }
}

impl Default for AmbassadorId {
    fn default() -> Self {
        AmbassadorId(Self::DEFAULT.to_owned())
    }
}

impl std::fmt::Display for AmbassadorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AmbassadorId {
    type Err = String;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{id:?} is not an ambassador_id: it must be non-empty, without spaces"
            ));
        }
        Ok(AmbassadorId(id.to_owned()))
    }
}

/// The result of loading a revision: the valid resources, and every diagnostic.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The resources that validated (all of them when there is no error).
    pub config: Config,
    /// Errors and warnings, sorted by file, line and column.
    pub diagnostics: Vec<Diagnostic>,
    pub policy: Policy,
}

impl Outcome {
    /// The diagnostics that are errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// Whether the revision may be served under its policy.
    ///
    /// An error in a resource that enforces something (an AuthService, a
    /// RateLimitService, a LocalRateLimit, or an unsupported TCPMapping, Filter,
    /// FilterPolicy or ExternalFilter) rejects the revision even under
    /// [`Policy::SkipInvalid`]: leaving it out would silently open the gateway it was
    /// meant to guard.
    pub fn is_accepted(&self) -> bool {
        let enforcing = |d: &Diagnostic| {
            d.resource
                .as_ref()
                .is_some_and(|r| load::is_enforcing(&r.kind))
        };
        match self.policy {
            Policy::SkipInvalid => !self.errors().any(enforcing),
            Policy::RejectRevision => self.errors().next().is_none(),
        }
    }

    /// The config to serve, or the errors that reject the revision.
    ///
    /// # Errors
    ///
    /// [`Rejected`] with every error, when the policy is [`Policy::RejectRevision`] and
    /// any resource is invalid.
    pub fn into_result(self) -> Result<(Config, Vec<Diagnostic>), Rejected> {
        if self.is_accepted() {
            Ok((self.config, self.diagnostics))
        } else {
            Err(Rejected {
                diagnostics: self.diagnostics,
            })
        }
    }
}

/// A revision rejected because some of its resources are invalid.
#[derive(Debug, Clone, thiserror::Error)]
#[error("revision rejected: {} error(s), first: {}", self.error_count(), self.first_error())]
pub struct Rejected {
    /// Every diagnostic, errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
}

impl Rejected {
    fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    fn first_error(&self) -> String {
        self.diagnostics
            .iter()
            .find(|d| d.is_error())
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

/// Loads and validates files already in memory.
///
/// A long-running caller that loads one revision after another should keep a [`Cache`]:
/// it gives the same outcome and parses only the files that changed.
pub fn load_files(files: &[SourceFile], options: &Options) -> Outcome {
    cache::load_once(files, options)
}

/// Reads every config file below `root` and loads it.
///
/// # Errors
///
/// [`Error::ReadDir`] when the directory cannot be listed; bad files are diagnostics.
pub fn load_dir(root: &Path, options: &Options) -> Result<Outcome, Error> {
    let (files, mut read_problems) = read_dir(root, &options.limits)?;
    let mut outcome = load_files(&files, options);
    read_problems.append(&mut outcome.diagnostics);
    Ok(finish(outcome.config, read_problems, options.policy))
}

fn finish(config: Config, mut diagnostics: Vec<Diagnostic>, policy: Policy) -> Outcome {
    diagnostics.sort();
    diagnostics.dedup();
    Outcome {
        config,
        diagnostics,
        policy,
    }
}
