//! Loading a revision with what the previous one already worked out (issue 4).
//!
//! A commit usually changes one file out of many. [`Cache`] keeps, per file path, the
//! file's bytes, what they parsed into (resources *and* diagnostics, so a rejected
//! revision still reports the problems of the files it did not touch) and each Mapping's
//! last validation. The next revision parses only the files whose bytes differ and
//! re-validates only the Mappings whose inputs differ; every cross-resource check
//! (duplicate names, Hosts that serve nothing, same-match warnings, TLS references)
//! still runs over the whole revision.
//!
//! The key is (path, content): the path because diagnostics and provenance name it, the
//! content compared byte for byte rather than by a hash, so there is no collision to
//! reason about, and it works the same for git blobs and directory files. The cache
//! holds the files of the last revision only: a file that is gone is dropped.

use std::collections::HashMap;

use super::load::{self, FileParse, SourceFile};
use super::validate::{self, Item, MappingMemo};
use super::yaml::Limits;
use super::{Options, Outcome};

/// Parse and validation results of the last revision's files, by path.
#[derive(Debug, Default)]
pub struct Cache {
    files: HashMap<String, Entry>,
    /// The limits the entries were parsed under: what parses depends on them.
    limits: Option<Limits>,
}

#[derive(Debug)]
struct Entry {
    bytes: Vec<u8>,
    parse: FileParse,
    /// One per `parse.parsed`, same index.
    memos: Vec<Option<MappingMemo>>,
}

/// How much of a revision [`Cache::load`] could reuse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reuse {
    /// Files parsed again (new or changed).
    pub parsed: usize,
    /// Files whose earlier parse was reused.
    pub reused: usize,
}

impl Cache {
    /// An empty cache: the first [`Cache::load`] parses everything.
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Loads and validates `files` like [`super::load_files`], parsing only the files
    /// whose bytes differ from the last call's and validating again only the Mappings
    /// whose file or Module defaults changed. The outcome is equal to
    /// `load_files(files, options)`.
    pub fn load(&mut self, files: &[SourceFile], options: &Options) -> (Outcome, Reuse) {
        let mut old = std::mem::take(&mut self.files);
        if self.limits.as_ref() != Some(&options.limits) {
            old.clear();
            self.limits = Some(options.limits);
        }
        let mut entries: Vec<Option<Entry>> = files
            .iter()
            .map(|f| old.remove(&f.path).filter(|e| e.bytes == f.bytes))
            .collect();
        // What is left are files this revision no longer has.
        drop(old);
        let missing: Vec<&SourceFile> = files
            .iter()
            .zip(&entries)
            .filter(|(_, e)| e.is_none())
            .map(|(f, _)| f)
            .collect();
        let reuse = Reuse {
            parsed: missing.len(),
            reused: files.len() - missing.len(),
        };
        let mut fresh = load::parse_each(&missing, &options.limits).into_iter();
        for (file, slot) in files.iter().zip(&mut entries) {
            if slot.is_none() {
                let parse = fresh.next().unwrap_or_default();
                *slot = Some(Entry {
                    bytes: file.bytes.clone(),
                    memos: parse.parsed.iter().map(|_| None).collect(),
                    parse,
                });
            }
        }
        let mut entries: Vec<Entry> = entries.into_iter().flatten().collect();
        let outcome = validate_entries(&mut entries, options);
        self.files = files.iter().map(|f| f.path.clone()).zip(entries).collect();
        (outcome, reuse)
    }

    /// How many files it holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Validates the parsed resources of `entries`, in file order, updating their memos.
fn validate_entries(entries: &mut [Entry], options: &Options) -> Outcome {
    let mut diagnostics = Vec::new();
    for entry in entries.iter() {
        diagnostics.extend(entry.parse.diagnostics.iter().cloned());
    }
    let items: Vec<Item<'_>> = entries
        .iter_mut()
        .flat_map(|e| e.parse.parsed.iter().zip(e.memos.iter_mut()))
        .map(|(parsed, memo)| Item {
            parsed,
            memo: Some(memo),
        })
        .collect();
    let config = validate::validate(items, options.secrets_dir.as_deref(), &mut diagnostics);
    super::finish(config, diagnostics, options.policy)
}

/// Loads `files` once, with nothing kept (the cold path of [`super::load_files`]).
pub(super) fn load_once(files: &[SourceFile], options: &Options) -> Outcome {
    let refs: Vec<&SourceFile> = files.iter().collect();
    let parses = load::parse_each(&refs, &options.limits);
    let mut diagnostics = Vec::new();
    for parse in &parses {
        diagnostics.extend(parse.diagnostics.iter().cloned());
    }
    let items = parses
        .iter()
        .flat_map(|p| &p.parsed)
        .map(|parsed| Item { parsed, memo: None })
        .collect();
    let config = validate::validate(items, options.secrets_dir.as_deref(), &mut diagnostics);
    super::finish(config, diagnostics, options.policy)
}
