//! The bundled example-repo loads without errors.
use std::path::Path;

#[test]
fn example_repo_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo");
    let outcome = attache::config::load_dir(&root, &Default::default()).expect("readable");
    for d in &outcome.diagnostics {
        eprintln!("{d}");
    }
    assert!(outcome.errors().next().is_none());
    let c = &outcome.config;
    assert_eq!(c.hosts.len(), 3);
    let names: Vec<_> = c.mappings.iter().map(|m| m.meta.name.clone()).collect();
    assert_eq!(c.mappings.len(), 10, "{names:?}");
}
