//! Loading a revision with what the previous one already worked out (issue 4).
//!
//! A commit usually changes one file out of many. [`Cache`] keeps, per file path, the
//! file's bytes, what they parsed into (resources *and* diagnostics, so a rejected
//! revision still reports the problems of the files it did not touch) and each Mapping's
//! last validation. The next revision parses only the files whose bytes differ and
//! re-validates only the Mappings whose inputs differ; in [`Cache::load`] every
//! cross-resource check (duplicate names, Hosts that serve nothing, same-match
//! warnings, TLS references) still runs over the whole revision. A revision that
//! changes only Mappings can instead be loaded as a change (`Cache::load_mappings`, in
//! `config::delta`), which re-checks only what the change touches.
//!
//! The key is (path, content): the path because diagnostics and provenance name it, the
//! content compared byte for byte rather than by a hash, so there is no collision to
//! reason about, and it works the same for git blobs and directory files. The cache
//! holds the files of the last revision only: a file that is gone is dropped.

use std::collections::{BTreeMap, HashMap};

use super::diag::Diagnostic;
use super::load::{self, FileParse, SourceFile};
use super::validate::{self, Item, MappingDefaults, MappingMemo};
use super::yaml::Limits;
use super::{AmbassadorId, Options, Outcome};

/// Parse and validation results of the last revision's files, by path.
#[derive(Debug, Default)]
pub struct Cache {
    files: HashMap<String, Entry>,
    /// The limits and gateway id the entries were parsed under: what parses depends on
    /// them.
    parsed_under: Option<(Limits, AmbassadorId)>,
    /// What [`Cache::load_mappings`] needs of the last revision, when that one had no
    /// error (see `config::delta`).
    pub(super) base: Option<Base>,
}

/// The last revision as a base for the next one's [`super::MappingDelta`].
#[derive(Debug)]
pub(super) struct Base {
    pub options: Options,
    /// The Module's defaults every Mapping was validated under.
    pub defaults: MappingDefaults,
    /// The revision's paths, in its order (the order validation reads them in).
    pub paths: Vec<String>,
    /// Every diagnostic of the revision (warnings: it had no error), with how many
    /// times it was found before `finish` merged the equal ones.
    pub diagnostics: BTreeMap<Diagnostic, usize>,
}

#[derive(Debug)]
pub(super) struct Entry {
    pub bytes: Vec<u8>,
    pub parse: FileParse,
    /// One per `parse.parsed`, same index.
    pub memos: Vec<Option<MappingMemo>>,
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
        let parsed_under = (options.limits, options.ambassador_id.clone());
        if self.parsed_under.as_ref() != Some(&parsed_under) {
            old.clear();
            self.parsed_under = Some(parsed_under);
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
        let mut fresh =
            load::parse_each(&missing, &options.limits, &options.ambassador_id).into_iter();
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
        let (outcome, defaults, counted) = validate_entries(&mut entries, options);
        self.files = files.iter().map(|f| f.path.clone()).zip(entries).collect();
        self.base = (outcome.errors().next().is_none()).then(|| Base {
            options: options.clone(),
            defaults,
            paths: files.iter().map(|f| f.path.clone()).collect(),
            diagnostics: counted,
        });
        (outcome, reuse)
    }

    /// Forgets the last revision as a base for [`Cache::load_mappings`]: the caller did
    /// not keep its config. The parse and validation results stay.
    pub fn forget_base(&mut self) {
        self.base = None;
    }

    /// The entry of `path`, if the last revision had that file.
    pub(super) fn entry(&self, path: &str) -> Option<&Entry> {
        self.files.get(path)
    }

    /// Replaces the entries of the files a delta changed.
    pub(super) fn replace_entries(&mut self, gone: &[String], fresh: Vec<(String, Entry)>) {
        for path in gone {
            self.files.remove(path);
        }
        self.files.extend(fresh);
    }

    /// The paths of the last revision that `files` no longer has, or has with other
    /// bytes, and the indexes in `files` of the files that are new or changed.
    pub(super) fn changes(&self, files: &[SourceFile]) -> (Vec<String>, Vec<usize>) {
        let changed: Vec<usize> = files
            .iter()
            .enumerate()
            .filter(|(_, f)| self.files.get(&f.path).is_none_or(|e| e.bytes != f.bytes))
            .map(|(i, _)| i)
            .collect();
        let present: std::collections::HashSet<&str> =
            files.iter().map(|f| f.path.as_str()).collect();
        let mut gone: Vec<String> = self
            .files
            .keys()
            .filter(|p| !present.contains(p.as_str()))
            .cloned()
            .collect();
        gone.sort();
        (gone, changed)
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
/// Also gives the Mappings' defaults and every diagnostic with its count.
fn validate_entries(
    entries: &mut [Entry],
    options: &Options,
) -> (Outcome, MappingDefaults, BTreeMap<Diagnostic, usize>) {
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
    let (config, defaults) =
        validate::validate(items, options.secrets_dir.as_deref(), &mut diagnostics);
    let mut counted = BTreeMap::new();
    for d in &diagnostics {
        *counted.entry(d.clone()).or_insert(0) += 1;
    }
    (
        super::finish(config, diagnostics, options.policy),
        defaults,
        counted,
    )
}

/// Loads `files` once, with nothing kept (the cold path of [`super::load_files`]).
pub(super) fn load_once(files: &[SourceFile], options: &Options) -> Outcome {
    let refs: Vec<&SourceFile> = files.iter().collect();
    let parses = load::parse_each(&refs, &options.limits, &options.ambassador_id);
    let mut diagnostics = Vec::new();
    for parse in &parses {
        diagnostics.extend(parse.diagnostics.iter().cloned());
    }
    let items = parses
        .iter()
        .flat_map(|p| &p.parsed)
        .map(|parsed| Item { parsed, memo: None })
        .collect();
    let (config, _) = validate::validate(items, options.secrets_dir.as_deref(), &mut diagnostics);
    super::finish(config, diagnostics, options.policy)
}
