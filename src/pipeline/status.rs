//! What the pipeline did with every revision it saw, for `/diag`, the JSON API and logs.
//!
//! As in Flux, two revisions matter to an operator: the one being **applied** (served) and
//! the **last attempted** one, which may have been rejected. Both are kept, with a bounded
//! history of attempts in between.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Diagnostic;

/// How many attempts [`Status::history`] keeps.
pub const HISTORY: usize = 50;

/// Who made a revision and why, as its source knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RevisionMeta {
    /// The commit SHA (git) or the content hash (directory).
    pub id: String,
    /// `Name <email>` of the commit's author; `None` for a directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The commit message; `None` for a directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Commit time (git) or the time the directory was read, in seconds since the epoch.
    pub time: i64,
    /// Where it came from: `git URL@REF` or `dir PATH`.
    pub source: String,
}

/// What became of one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Validated, translated and published as this snapshot version.
    Accepted { snapshot: String },
    /// Failed validation: nothing of it reached a node.
    Rejected { errors: Vec<Diagnostic> },
    /// Validated but could not become a snapshot (an internal inconsistency; logged).
    Failed { reason: String },
}

impl Outcome {
    /// Whether the revision reached the snapshot store.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Outcome::Accepted { .. })
    }
}

/// How long each stage of one revision took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StageTimings {
    /// Fetching or reading the files.
    #[serde(with = "millis")]
    pub read: Duration,
    /// Parsing and validating.
    #[serde(with = "millis")]
    pub parse: Duration,
    #[serde(with = "millis")]
    pub translate: Duration,
    /// Encoding the snapshot and handing it to the store.
    #[serde(with = "millis")]
    pub publish: Duration,
}

/// One revision the pipeline processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub revision: RevisionMeta,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Warnings of an accepted revision (and of a rejected one, beside its errors).
    pub warnings: Vec<Diagnostic>,
    pub timings: StageTimings,
    /// When processing finished, in seconds since the epoch.
    pub at: i64,
}

/// A source that currently cannot be read (remote down, directory missing, bad auth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceError {
    pub message: String,
    /// When the first failure of this run of failures happened (seconds since the epoch).
    pub since: i64,
    /// Failures in a row.
    pub failures: u64,
}

/// The pipeline's state as the admin API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The revision being served (the last accepted one).
    pub applied: Option<Attempt>,
    /// The newest revision processed, accepted or not.
    pub last_attempted: Option<Attempt>,
    /// Newest first, at most [`HISTORY`].
    pub history: VecDeque<Attempt>,
    /// Set while the source fails; cleared by the next successful read.
    pub source_error: Option<SourceError>,
    pub accepted_total: u64,
    pub rejected_total: u64,
}

impl Status {
    /// Records an attempt as the newest.
    pub fn record(&mut self, attempt: Attempt) {
        match attempt.outcome {
            Outcome::Accepted { .. } => {
                self.accepted_total += 1;
                self.applied = Some(attempt.clone());
            }
            Outcome::Rejected { .. } | Outcome::Failed { .. } => self.rejected_total += 1,
        }
        self.last_attempted = Some(attempt.clone());
        self.history.push_front(attempt);
        self.history.truncate(HISTORY);
    }

    /// Records a failed read of the source.
    pub fn source_failed(&mut self, message: String, now: SystemTime) {
        match &mut self.source_error {
            Some(error) => {
                error.message = message;
                error.failures += 1;
            }
            None => {
                self.source_error = Some(SourceError {
                    message,
                    since: epoch_seconds(now),
                    failures: 1,
                });
            }
        }
    }

    /// Records a successful read of the source.
    pub fn source_ok(&mut self) {
        self.source_error = None;
    }
}

/// Seconds since the Unix epoch (0 for a clock before it).
pub fn epoch_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}
