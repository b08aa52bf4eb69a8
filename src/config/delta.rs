//! A revision that changes only Mappings, loaded as a change to the last one (issue 4).
//!
//! A whole load validates every resource and runs every check across resources, which
//! at 10k Mappings costs far more than the one file a commit usually touches.
//! [`Cache::load_mappings`] does work proportional to the change instead: it parses the
//! changed files, validates their Mappings under the last revision's Module defaults,
//! and re-runs the checks across resources only where the change can alter their
//! outcome (see [`Cache::load_mappings`] for each). It edits the last config in place
//! and hands back what changed, for `translate::Cache::translate_delta`.
//!
//! It declines (returns `None`, changing nothing) whenever the shortcut could differ
//! from a whole load: a changed file that holds or held anything but Mappings, a parse
//! or validation error, a check across resources that fails, a LocalRateLimit, other
//! options, files read in another order. The caller then loads the revision whole,
//! which reports every error of the revision, including those in untouched files.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::cache::{Base, Cache, Entry};
use super::diag::Diagnostic;
use super::load::{self, SourceFile, Spec};
use super::model::{Config, Kind, Mapping};
use super::validate::{self, shared_routes, tls_refs};
use super::{Options, Reuse};

/// What a revision changed, relative to the last one, when it changed only Mappings.
#[derive(Debug, Default)]
pub struct MappingDelta {
    /// The Mappings it no longer has, as the last config held them (validated and
    /// resolved). A Mapping that changed is in both lists.
    pub removed: Vec<Mapping>,
    /// The Mappings it has instead, as the new config holds them.
    pub added: Vec<Mapping>,
    /// Every diagnostic of the revision (warnings only), sorted: equal to a whole
    /// load's.
    pub diagnostics: Vec<Diagnostic>,
    pub reuse: Reuse,
}

/// A Mapping's identity: names are unique per kind and namespace.
type Key = (String, String);

fn key(m: &Mapping) -> Key {
    (m.meta.namespace.clone(), m.meta.name.clone())
}

/// Where `key` is in `mappings`, which are sorted by (namespace, name).
fn find(mappings: &[Mapping], key: &Key) -> Result<usize, usize> {
    mappings.binary_search_by(|m| {
        (m.meta.namespace.as_str(), m.meta.name.as_str()).cmp(&(key.0.as_str(), key.1.as_str()))
    })
}

/// One changed file, parsed and its Mappings validated.
struct Fresh {
    index: usize,
    entry: Entry,
}

impl Cache {
    /// Loads `files` as a change to the last revision, when that one had no error and
    /// only Mappings changed. `config` must be the config the last [`Cache::load`] or
    /// `load_mappings` gave (the caller keeps it); on success it becomes the new
    /// revision's config, equal to what `load` would give, and the result says what
    /// changed. `None` when the change needs a whole load (see the module doc);
    /// `config` is then untouched.
    ///
    /// What is re-checked across resources, and why that is all:
    /// - duplicate names: the new Mappings against each other and the config;
    /// - TLSContext references, "no Host serves it", `bypass_auth` without an
    ///   AuthService: per Mapping, against Hosts, TLSContexts and services that did
    ///   not change;
    /// - same match (weights, even splits, shadows) and the route settings a match
    ///   group must share: the groups of the changed Mappings' matches, before and
    ///   after, in validation order;
    /// - secrets: read again, as a whole load does.
    pub fn load_mappings(
        &mut self,
        files: &[SourceFile],
        options: &Options,
        config: &mut Config,
    ) -> Option<MappingDelta> {
        let mut base = self.base.take()?;
        if !same_options(&base.options, options) || !config.local_rate_limits.is_empty() {
            return None;
        }
        let (gone, changed) = self.changes(files);
        // Validation order is file order: unchanged files must keep theirs.
        let present: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let kept_old = base.paths.iter().filter(|p| present.contains(p.as_str()));
        let kept_new = files
            .iter()
            .map(|f| &f.path)
            .filter(|p| self.entry(p).is_some());
        if !kept_old.eq(kept_new) {
            return None;
        }
        let old_entries: Vec<&Entry> = changed
            .iter()
            .filter_map(|&i| self.entry(&files[i].path))
            .chain(gone.iter().filter_map(|p| self.entry(p)))
            .collect();
        if !old_entries.iter().all(|e| only_mappings(e)) {
            return None;
        }
        let fresh = self.parse_changed(files, &changed, options, &base)?;

        // The Mappings of the changed files, before and after.
        let mut old_keys: BTreeSet<Key> = BTreeSet::new();
        for entry in &old_entries {
            for p in &entry.parse.parsed {
                old_keys.insert((p.namespace.clone(), p.name.clone()));
            }
        }
        let mut new: BTreeMap<Key, Mapping> = BTreeMap::new();
        for f in &fresh {
            for memo in f.entry.memos.iter().flatten() {
                let mut m = memo.mapping()?.clone();
                if !tls_refs::resolve_mapping(config, &mut m) {
                    return None;
                }
                if new.insert(key(&m), m).is_some() {
                    return None;
                }
            }
        }
        let mut removed: Vec<usize> = Vec::new();
        let mut replaced: Vec<usize> = Vec::new();
        for k in &old_keys {
            let at = find(&config.mappings, k).ok()?;
            match new.get(k) {
                Some(m) if *m == config.mappings[at] => {
                    new.remove(k);
                }
                Some(_) => replaced.push(at),
                None => removed.push(at),
            }
        }
        // `new` now holds the changed and added Mappings.
        for (k, m) in &new {
            let duplicate = !old_keys.contains(k) && find(&config.mappings, k).is_ok();
            if duplicate || !validate::served(config, m) {
                return None;
            }
        }
        let old_versions: Vec<&Mapping> = replaced
            .iter()
            .chain(&removed)
            .map(|&at| &config.mappings[at])
            .collect();
        let new_versions: Vec<&Mapping> = new.values().collect();

        // Diagnostics: the old revision's, less what the changed files and groups gave,
        // plus what they give now.
        let mut minus: Vec<Diagnostic> = Vec::new();
        let mut plus: Vec<Diagnostic> = Vec::new();
        for entry in &old_entries {
            minus.extend(entry_diagnostics(entry));
        }
        for f in &fresh {
            plus.extend(entry_diagnostics(&f.entry));
        }
        if config.auth_service.is_none() {
            let bypass = |ms: &[&Mapping], out: &mut Vec<Diagnostic>| {
                out.extend(
                    ms.iter()
                        .filter(|m| m.bypass_auth)
                        .map(|m| validate::bypass_without_auth(m)),
                );
            };
            bypass(&old_versions, &mut minus);
            bypass(&new_versions, &mut plus);
        }
        let affected: Vec<&Mapping> = old_versions.iter().chain(&new_versions).copied().collect();
        let in_group = |m: &Mapping| affected.iter().any(|a| validate::same_match_key(a, m));
        let old_order = Order::new(&base.paths, |path| self.entry(path));
        let mut old_group: Vec<&Mapping> = config.mappings.iter().filter(|m| in_group(m)).collect();
        old_order.sort(&mut old_group)?;
        let fresh_by_path: HashMap<&str, &Entry> = fresh
            .iter()
            .map(|f| (files[f.index].path.as_str(), &f.entry))
            .collect();
        let new_paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let new_order = Order::new(&new_paths, |path| {
            fresh_by_path
                .get(path)
                .copied()
                .or_else(|| self.entry(path))
        });
        // The old versions leave the groups; the new ones join them.
        let changing: BTreeSet<(&str, &str)> = old_versions
            .iter()
            .map(|m| (m.meta.namespace.as_str(), m.meta.name.as_str()))
            .collect();
        let unchanged_members = config.mappings.iter().filter(|m| {
            in_group(m) && !changing.contains(&(m.meta.namespace.as_str(), m.meta.name.as_str()))
        });
        let mut new_group: Vec<&Mapping> = unchanged_members.chain(new.values()).collect();
        new_order.sort(&mut new_group)?;
        validate::same_match(old_group.iter().copied(), &mut minus, &mut BTreeSet::new());
        let mut bad = BTreeSet::new();
        validate::same_match(new_group.iter().copied(), &mut plus, &mut bad);
        if !bad.is_empty() || plus.iter().any(Diagnostic::is_error) {
            return None;
        }
        for m in &new_versions {
            let group: Vec<&Mapping> = new_group
                .iter()
                .copied()
                .filter(|o| validate::same_match_key(m, o))
                .collect();
            if shared_routes::conflicts(&group) {
                return None;
            }
        }
        if !validate::secrets_unchanged(config, options.secrets_dir.as_deref()) {
            return None;
        }
        for d in minus {
            let count = base.diagnostics.get_mut(&d)?;
            *count -= 1;
            if *count == 0 {
                base.diagnostics.remove(&d);
            }
        }
        for d in plus {
            *base.diagnostics.entry(d).or_insert(0) += 1;
        }

        // Every check passed: edit the config and the cache.
        let reuse = Reuse {
            parsed: fresh.len(),
            reused: files.len() - fresh.len(),
        };
        let (removed_mappings, added) =
            apply(&mut config.mappings, replaced, removed, new.into_values());
        let fresh: Vec<(String, Entry)> = fresh
            .into_iter()
            .map(|f| (files[f.index].path.clone(), f.entry))
            .collect();
        self.replace_entries(&gone, fresh);
        base.paths = new_paths;
        let diagnostics = base.diagnostics.keys().cloned().collect();
        self.base = Some(base);
        Some(MappingDelta {
            removed: removed_mappings,
            added,
            diagnostics,
            reuse,
        })
    }

    /// Parses the changed files and validates their Mappings; `None` when one holds
    /// anything else or has an error.
    fn parse_changed(
        &self,
        files: &[SourceFile],
        changed: &[usize],
        options: &Options,
        base: &Base,
    ) -> Option<Vec<Fresh>> {
        let refs: Vec<&SourceFile> = changed.iter().map(|&i| &files[i]).collect();
        let parses = load::parse_each(&refs, &options.limits, &options.ambassador_id);
        let mut fresh = Vec::with_capacity(parses.len());
        for (&index, parse) in changed.iter().zip(parses) {
            if parse.diagnostics.iter().any(Diagnostic::is_error) {
                return None;
            }
            let mut memos = Vec::with_capacity(parse.parsed.len());
            for p in &parse.parsed {
                let Spec::Mapping(spec) = &p.spec else {
                    return None;
                };
                let memo = validate::mapping_memo(p, spec, &base.defaults);
                if memo.mapping().is_none() || memo.diagnostics().iter().any(Diagnostic::is_error) {
                    return None;
                }
                memos.push(Some(memo));
            }
            fresh.push(Fresh {
                index,
                entry: Entry {
                    bytes: files[index].bytes.clone(),
                    parse,
                    memos,
                },
            });
        }
        Some(fresh)
    }
}

fn same_options(a: &Options, b: &Options) -> bool {
    a.policy == b.policy
        && a.secrets_dir == b.secrets_dir
        && a.limits == b.limits
        && a.ambassador_id == b.ambassador_id
}

fn only_mappings(entry: &Entry) -> bool {
    entry.parse.parsed.iter().all(|p| p.kind == Kind::Mapping)
        && !entry.parse.diagnostics.iter().any(Diagnostic::is_error)
}

/// What a file contributed to the diagnostics: its parse and its Mappings' validation.
fn entry_diagnostics(entry: &Entry) -> impl Iterator<Item = Diagnostic> + '_ {
    entry.parse.diagnostics.iter().cloned().chain(
        entry
            .memos
            .iter()
            .flatten()
            .flat_map(|m| m.diagnostics().iter().cloned()),
    )
}

/// The order validation reads Mappings in: by file in revision order, then by place in
/// the file.
struct Order<'a, F> {
    file_index: HashMap<&'a str, usize>,
    entry: F,
}

impl<'a, F: Fn(&str) -> Option<&'a Entry>> Order<'a, F> {
    fn new(paths: &'a [String], entry: F) -> Self {
        Order {
            file_index: paths
                .iter()
                .enumerate()
                .map(|(i, p)| (p.as_str(), i))
                .collect(),
            entry,
        }
    }

    fn position(&self, m: &Mapping) -> Option<(usize, usize)> {
        let file = *self.file_index.get(&*m.meta.origin.file)?;
        let entry = (self.entry)(&m.meta.origin.file)?;
        let item = entry.parse.parsed.iter().position(|p| {
            p.kind == Kind::Mapping && p.namespace == m.meta.namespace && p.name == m.meta.name
        })?;
        Some((file, item))
    }

    /// Sorts `mappings` into validation order; `None` when one is not where it should be.
    fn sort(&self, mappings: &mut Vec<&Mapping>) -> Option<()> {
        let mut keyed: Vec<((usize, usize), &Mapping)> = mappings
            .iter()
            .map(|m| Some((self.position(m)?, *m)))
            .collect::<Option<_>>()?;
        keyed.sort_by_key(|(at, _)| *at);
        *mappings = keyed.into_iter().map(|(_, m)| m).collect();
        Some(())
    }
}

/// Edits `mappings` (sorted by namespace and name): the Mappings at `replaced` and
/// `removed` leave, `new` (sorted by key, holding the replacements) comes in. Returns
/// what left and what came in, as in [`MappingDelta`].
fn apply(
    mappings: &mut Vec<Mapping>,
    replaced: Vec<usize>,
    removed: Vec<usize>,
    new: impl Iterator<Item = Mapping>,
) -> (Vec<Mapping>, Vec<Mapping>) {
    let mut left = Vec::new();
    let mut came = Vec::new();
    let mut inserted = Vec::new();
    for m in new {
        match find(mappings, &key(&m)) {
            // A replacement: the same place, so one assignment.
            Ok(at) if replaced.contains(&at) => {
                came.push(m.clone());
                left.push(std::mem::replace(&mut mappings[at], m));
            }
            _ => inserted.push(m),
        }
    }
    if !removed.is_empty() {
        let gone: BTreeSet<usize> = removed.into_iter().collect();
        let mut kept = Vec::with_capacity(mappings.len() - gone.len());
        for (index, m) in mappings.drain(..).enumerate() {
            if gone.contains(&index) {
                left.push(m);
            } else {
                kept.push(m);
            }
        }
        *mappings = kept;
    }
    came.extend(inserted.iter().cloned());
    if inserted.len() <= 8 {
        for m in inserted {
            let at = find(mappings, &key(&m)).unwrap_or_else(|at| at);
            mappings.insert(at, m);
        }
    } else {
        // Many at once (a new file): one stable sort of a sorted run and a short one
        // moves each Mapping once instead of once per insertion.
        mappings.extend(inserted);
        mappings.sort_by(|a, b| {
            (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name))
        });
    }
    (left, came)
}
