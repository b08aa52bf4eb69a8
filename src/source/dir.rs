//! A directory source: a mounted ConfigMap, or a plain directory edited in place.
//!
//! kubelet updates a ConfigMap volume atomically: it writes the new files into a fresh
//! `..TIMESTAMP` directory, points a `..data_tmp` symlink at it, renames that over
//! `..data`, then deletes the old directory. The visible files are symlinks into
//! `..data/`. Reading them one by one during a swap could mix two versions, so a read
//! resolves `..data` once and reads the directory it names, and reads again if `..data`
//! moved meanwhile. A plain directory (no `..data`) is read as it is.
//!
//! The directory itself is watched (with `notify`), not the files: any event marks it
//! dirty, the pipeline debounces and reads the whole tree, and an unchanged content hash
//! means nothing happens. The watcher is a hint; the pipeline also re-reads on an interval
//! in case an event was lost (inotify queues overflow, network file systems).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::{Poll, Revision, Schedule, Source};
use crate::config::{self, Diagnostic, SourceFile, yaml::Limits};
use crate::pipeline::{RevisionMeta, epoch_seconds};

/// How often a watched directory is re-read even without events.
pub const SAFETY_NET: Duration = Duration::from_secs(60);
/// How long events must stop before the directory is read.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Reading the directory failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Read(#[from] config::Error),
    /// `..data` kept moving while we read; kubelet is mid-update.
    #[error("{path}: the `..data` link changed during {attempts} reads in a row", path = path.display())]
    Unsettled { path: PathBuf, attempts: u32 },
}

/// Watches and reads one directory.
pub struct DirSource {
    root: PathBuf,
    limits: Limits,
    wake: Arc<Notify>,
    /// `None` until the directory exists; retried on every poll.
    watcher: Option<RecommendedWatcher>,
    last_id: Option<String>,
}

impl DirSource {
    /// A source for `root`. File events wake `wake`; the pipeline waits on it.
    pub fn new(root: PathBuf, limits: Limits, wake: Arc<Notify>) -> DirSource {
        let mut source = DirSource {
            root,
            limits,
            wake,
            watcher: None,
            last_id: None,
        };
        source.ensure_watcher();
        source
    }

    fn ensure_watcher(&mut self) {
        if self.watcher.is_some() {
            return;
        }
        let wake = self.wake.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Every event (and every watcher error, such as a queue overflow) means "look
            // again"; what changed is decided by the content hash.
            match &event {
                Err(e) => tracing::debug!("directory watcher: {e}"),
                // Reads (our own included) change nothing; waking on them made every
                // read of the directory trigger the next one, 100 ms apart, forever.
                Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => return,
                Ok(_) => {}
            }
            wake.notify_one();
        });
        let result = watcher.and_then(|mut w| {
            w.watch(&self.root, RecursiveMode::Recursive)?;
            Ok(w)
        });
        match result {
            Ok(w) => {
                tracing::debug!(dir = %self.root.display(), "watching");
                self.watcher = Some(w);
            }
            // A missing directory is reported by the read; a watcher that cannot start
            // leaves the interval re-read, which is slower but correct.
            Err(e) if self.root.exists() => {
                tracing::warn!(dir = %self.root.display(), "cannot watch, re-reading on an interval only: {e}");
            }
            Err(_) => {}
        }
    }
}

impl Source for DirSource {
    fn describe(&self) -> String {
        format!("dir {}", self.root.display())
    }

    fn poll(&mut self) -> Result<Poll, super::Error> {
        self.ensure_watcher();
        let (files, problems) = read_consistent(&self.root, &self.limits)?;
        let id = revision_id(&files);
        if self.last_id.as_deref() == Some(id.as_str()) {
            return Ok(Poll::Unchanged);
        }
        self.last_id = Some(id.clone());
        Ok(Poll::Changed(Box::new(Revision {
            meta: RevisionMeta {
                id,
                author: None,
                message: None,
                time: epoch_seconds(SystemTime::now()),
                source: self.describe(),
            },
            files,
            problems,
        })))
    }

    fn schedule(&self) -> Schedule {
        Schedule {
            interval: SAFETY_NET,
            debounce: DEBOUNCE,
        }
    }
}

/// Reads `root` as one consistent version: through `..data` when it is a mounted
/// ConfigMap, again if `..data` moved during the read.
///
/// # Errors
///
/// When the directory cannot be listed, or `..data` never held still for a whole read.
pub fn read_consistent(
    root: &Path,
    limits: &Limits,
) -> Result<(Vec<SourceFile>, Vec<Diagnostic>), Error> {
    const ATTEMPTS: u32 = 5;
    let data = root.join("..data");
    for _ in 0..ATTEMPTS {
        let Ok(target) = std::fs::canonicalize(&data) else {
            return Ok(config::read_dir(root, limits)?);
        };
        let read = config::read_dir(&target, limits);
        // The old directory is deleted right after the swap: a read that failed or saw
        // vanished files because of it is retried against the new one.
        if std::fs::canonicalize(&data).ok().as_ref() == Some(&target) {
            return Ok(read?);
        }
    }
    Err(Error::Unsettled {
        path: data,
        attempts: ATTEMPTS,
    })
}

/// The revision id of a directory's config files: the SHA-256 of every file's path and
/// bytes in path order, as 16 hex digits. Content-addressed, so the same content (a
/// ConfigMap remounted, a file written back) gives the same id on any replica.
pub fn revision_id(files: &[SourceFile]) -> String {
    let mut sorted: Vec<&SourceFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hash = Sha256::new();
    for file in sorted {
        // Lengths first, so no two different file sets hash the same bytes.
        hash.update((file.path.len() as u64).to_be_bytes());
        hash.update(file.path.as_bytes());
        hash.update((file.bytes.len() as u64).to_be_bytes());
        hash.update(&file.bytes);
    }
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, bytes: &str) -> SourceFile {
        SourceFile {
            path: path.to_owned(),
            bytes: bytes.as_bytes().to_vec(),
        }
    }

    #[test]
    fn revision_ids_follow_content_not_order() {
        let a = [file("a.yaml", "x: 1"), file("b.yaml", "y: 2")];
        let b = [file("b.yaml", "y: 2"), file("a.yaml", "x: 1")];
        assert_eq!(revision_id(&a), revision_id(&b));
        assert_eq!(revision_id(&a).len(), 16);
        let changed = [file("a.yaml", "x: 1"), file("b.yaml", "y: 3")];
        assert_ne!(revision_id(&a), revision_id(&changed));
        // Moving bytes between path and content is a different revision.
        let shifted = [file("a.yamlx", ": 1"), file("b.yaml", "y: 2")];
        assert_ne!(revision_id(&a), revision_id(&shifted));
    }

    fn source(root: &Path) -> DirSource {
        DirSource::new(
            root.to_path_buf(),
            Limits::default(),
            Arc::new(Notify::new()),
        )
    }

    #[test]
    fn an_unchanged_directory_is_not_a_new_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.yaml"), "x: 1").expect("write");
        let mut s = source(dir.path());
        let Poll::Changed(first) = s.poll().expect("poll") else {
            panic!("the first read is a revision");
        };
        assert_eq!(first.files.len(), 1);
        assert!(matches!(s.poll().expect("poll"), Poll::Unchanged));
        std::fs::write(dir.path().join("a.yaml"), "x: 2").expect("write");
        let Poll::Changed(second) = s.poll().expect("poll") else {
            panic!("an edit is a revision");
        };
        assert_ne!(first.meta.id, second.meta.id);
        // Writing the same bytes back is no change.
        std::fs::write(dir.path().join("a.yaml"), "x: 2").expect("write");
        assert!(matches!(s.poll().expect("poll"), Poll::Unchanged));
    }

    #[test]
    fn a_configmap_is_read_through_data() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let v1 = root.join("..2026_11_30_00_00_00.1");
        std::fs::create_dir(&v1).expect("mkdir");
        std::fs::write(v1.join("a.yaml"), "v: 1").expect("write");
        symlink("..2026_11_30_00_00_00.1", root.join("..data")).expect("link");
        symlink("..data/a.yaml", root.join("a.yaml")).expect("link");
        let (files, problems) = read_consistent(root, &Limits::default()).expect("read");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(files, vec![file("a.yaml", "v: 1")]);
    }

    #[test]
    fn a_missing_directory_is_an_error_that_names_it() {
        let mut s = source(Path::new("/nonexistent/attache"));
        let err = s.poll().expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/attache"), "{err}");
    }
}
