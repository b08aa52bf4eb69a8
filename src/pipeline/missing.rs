//! The applied config's warnings about Mappings whose Service has no endpoints
//! ([`crate::endpoints::missing_services`]), kept current through a change of Mappings.
//!
//! Working them out means a Service key per Mapping, 10k allocations and lookups at 10k
//! Mappings: more than the rest of a one-file revision's validation. A warning depends
//! on its Mapping and the endpoints alone, so a change of Mappings with the same
//! endpoints replaces the warnings of the Mappings it removed by those of the ones it
//! added, in place.

use crate::config::{Config, Diagnostic, Mapping};
use crate::endpoints::{Endpoints, missing_services};

/// The warnings, in the config's Mapping order, each with its Mapping's namespace and
/// name, and the endpoints they were worked out with.
#[derive(Debug)]
pub(super) struct Missing {
    endpoints: Endpoints,
    warnings: Vec<((String, String), Diagnostic)>,
}

impl Missing {
    /// The warnings of `config` (its Mappings sorted by namespace and name).
    pub(super) fn new(config: &Config, endpoints: &Endpoints) -> Missing {
        Missing {
            endpoints: endpoints.clone(),
            warnings: keyed(&config.mappings, missing_services(config, endpoints)),
        }
    }

    /// After a change of Mappings (see `config::MappingDelta`); `None` when the
    /// endpoints are not those of the warnings kept (work them out anew).
    pub(super) fn update(
        &mut self,
        removed: &[Mapping],
        added: &[Mapping],
        endpoints: &Endpoints,
    ) -> Option<()> {
        if self.endpoints != *endpoints {
            return None;
        }
        if self.endpoints.generation == 0 {
            // Nothing is said before the first full listing.
            return Some(());
        }
        let gone = |key: &(String, String)| {
            removed
                .iter()
                .any(|m| m.meta.namespace == key.0 && m.meta.name == key.1)
        };
        self.warnings.retain(|(key, _)| !gone(key));
        let config = Config {
            mappings: added.to_vec(),
            ..Config::default()
        };
        for (key, warning) in keyed(added, missing_services(&config, endpoints)) {
            let at = self.warnings.partition_point(|(other, _)| *other < key);
            self.warnings.insert(at, (key, warning));
        }
        Some(())
    }

    /// The warnings, in order.
    pub(super) fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.warnings.iter().map(|(_, d)| d)
    }
}

/// Pairs each warning with its Mapping: `missing_services` gives at most one per Mapping,
/// at the Mapping's origin, in the order of `mappings`.
fn keyed(mappings: &[Mapping], warnings: Vec<Diagnostic>) -> Vec<((String, String), Diagnostic)> {
    let mut mappings = mappings.iter();
    warnings
        .into_iter()
        .filter_map(|d| {
            let m = mappings.find(|m| {
                let o = &m.meta.origin;
                o.file == d.file
                    && o.line == d.line
                    && o.column == d.column
                    && d.resource.as_ref().is_some_and(|r| r.name == m.meta.name)
            })?;
            Some(((m.meta.namespace.clone(), m.meta.name.clone()), d))
        })
        .collect()
}
