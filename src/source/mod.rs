//! Sources: where revisions come from.
//!
//! A [`Source`] answers one question, "is there a new revision, and what is in it?", with
//! [`Source::poll`]. It does no parsing: a [`Revision`] is the raw files of one commit (or
//! one consistent read of a directory) plus who made it. When to ask is the pipeline's
//! business (`pipeline::run`): on an interval, at once on a webhook or a file event, and
//! with backoff while the source fails.
//!
//! - [`git`]: a remote repository, fetched into a bare clone in the state dir; files are
//!   read from the commit's tree, so a revision is atomic;
//! - [`dir`]: a directory (a mounted ConfigMap, or a plain one edited in place), watched
//!   with `notify`;
//! - [`webhook`]: verifying GitHub and GitLab push notifications that trigger a fetch.

pub mod dir;
pub mod git;
pub mod known_hosts;
pub mod webhook;

use std::time::Duration;

use crate::config::{Diagnostic, SourceFile};
use crate::pipeline::RevisionMeta;

/// The files of one revision, read consistently, with who made it.
#[derive(Debug, Clone)]
pub struct Revision {
    pub meta: RevisionMeta,
    /// Every `*.yaml` / `*.yml` file of the revision, sorted by path.
    pub files: Vec<SourceFile>,
    /// Problems found while reading (an oversized file, a symlink in a git tree): they
    /// reject the revision like any config error.
    pub problems: Vec<Diagnostic>,
}

/// What a poll found.
#[derive(Debug)]
pub enum Poll {
    /// Nothing changed since the last poll that returned a revision; nothing to parse.
    Unchanged,
    /// A new revision.
    Changed(Box<Revision>),
}

/// Why a source could not be read. The revision being served stays; the pipeline reports
/// the error and retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dir(#[from] dir::Error),
    #[error(transparent)]
    Git(#[from] git::Error),
}

/// A place revisions come from. `poll` blocks (file system or network I/O), so the
/// pipeline calls it on a blocking thread.
pub trait Source: Send + 'static {
    /// `dir PATH` or `git URL@REF`, for logs and the admin page.
    fn describe(&self) -> String;

    /// Reads the source and says whether it changed since the last revision it returned.
    ///
    /// # Errors
    ///
    /// When the source cannot be read at all (a missing directory, an unreachable
    /// remote, a failed authentication, a branch that does not exist).
    fn poll(&mut self) -> Result<Poll, Error>;

    /// How the pipeline should schedule polls of this source.
    fn schedule(&self) -> Schedule;
}

/// When a source is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Poll this often even when nothing woke the pipeline (git's polling interval, the
    /// directory watcher's safety net for lost events).
    pub interval: Duration,
    /// After a wake-up (file event, webhook), wait until this long passes without another
    /// one, so a burst of writes becomes one read.
    pub debounce: Duration,
}
