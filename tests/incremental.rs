//! Issue 4: incremental loading, translation and snapshot building give exactly what a
//! cold build of the same revision gives. A sequence of revisions is applied through
//! the caches the pipeline keeps (`pipeline::Incremental`) and every snapshot is
//! compared with `load_files` + `translate` + `Snapshot::new` of the same files:
//! resource by resource (name, version, bytes) and type by type, plus every diagnostic.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use attache::config::{self, Options, Policy, SourceFile};
use attache::endpoints::{Endpoint, EndpointHealth, Endpoints, ServiceKey};
use attache::pipeline::{Incremental, Outcome, RevisionMeta, Way};
use attache::snapshot::{ResourceType, Snapshot};
use attache::source::Revision;
use attache::translate;

type Files = BTreeMap<String, String>;

fn mapping(ns: &str, name: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{extra}"
    )
}

fn host(name: &str, hostname: &str) -> String {
    format!(
        "---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: {name}\n  namespace: gw\nspec:\n  hostname: \"{hostname}\"\n"
    )
}

fn module(timeout_ms: u32) -> String {
    format!(
        "---\napiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\n  namespace: gw\nspec:\n  config:\n    cluster_request_timeout_ms: {timeout_ms}\n    buffer_limit_bytes: 65536\n"
    )
}

/// A repository with the shapes that share work between Mappings: weighted groups, a
/// shadow, a redirect, hostnames narrower than their Host, Mappings on every Host.
fn base() -> Files {
    let mut files = Files::new();
    files.insert(
        "hosts.yaml".into(),
        host("a", "a.example.com") + &host("wild", "*.example.com") + &host("any", "*"),
    );
    files.insert("module.yaml".into(), module(4000));
    for team in 0..4 {
        let ns = format!("team-{team}");
        let mut text = String::new();
        for i in 0..6 {
            let body = match i {
                0 => format!(
                    "  hostname: a.example.com\n  prefix: /t{team}/a/\n  service: app-{team}:8080\n"
                ),
                1 => format!(
                    "  hostname: b.example.com\n  prefix: /t{team}/b/\n  service: app-{team}:8080\n  timeout_ms: 1500\n"
                ),
                2 => format!("  prefix: /t{team}/w/\n  service: web-{team}\n  weight: 30\n"),
                3 => format!("  prefix: /t{team}/w/\n  service: web-canary-{team}\n"),
                4 => format!("  prefix: /t{team}/w/\n  service: mirror-{team}\n  shadow: true\n"),
                _ => format!(
                    "  prefix: /t{team}/old/\n  host_redirect: true\n  service: new.example.com\n"
                ),
            };
            text.push_str(&mapping(&ns, &format!("m{i}"), &body));
        }
        files.insert(format!("teams/{team}/mappings.yaml"), text);
    }
    files
}

fn endpoints() -> Endpoints {
    let mut services = BTreeMap::new();
    for team in 0..4 {
        services.insert(
            ServiceKey {
                namespace: "default".into(),
                name: format!("app-{team}"),
                port: "8080".into(),
            },
            vec![Endpoint {
                ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, team as u8)),
                port: 8080,
                health: EndpointHealth::Healthy,
                zone: None,
            }],
        );
    }
    Endpoints {
        generation: 3,
        services,
        ..Default::default()
    }
}

fn source_files(files: &Files) -> Vec<SourceFile> {
    files
        .iter()
        .map(|(path, text)| SourceFile {
            path: path.clone(),
            bytes: text.clone().into_bytes(),
        })
        .collect()
}

fn revision(id: &str, files: &Files) -> Revision {
    Revision {
        meta: RevisionMeta {
            id: id.to_owned(),
            ..Default::default()
        },
        files: source_files(files),
        problems: Vec::new(),
    }
}

/// One resource: type, name, version, bytes.
type Entry = (ResourceType, String, String, Vec<u8>);

/// Every resource, and the type versions.
fn contents(snapshot: &Snapshot) -> (Vec<Entry>, Vec<String>) {
    let mut resources = Vec::new();
    let mut types = Vec::new();
    for kind in ResourceType::ALL {
        for (name, r) in snapshot.resources(kind) {
            resources.push((kind, name.clone(), r.version.clone(), r.body.to_vec()));
        }
        types.push(snapshot.type_version(kind).to_owned());
    }
    (resources, types)
}

/// Applies `files` incrementally and cold, asserts both agree, and returns the
/// incremental snapshot (when accepted) to serve as the next `previous`, and the way
/// the incremental build went.
fn step(
    label: &str,
    incremental: &mut Incremental,
    previous: Option<&Snapshot>,
    files: &Files,
    options: &Options,
    endpoints: &Endpoints,
) -> (Option<Snapshot>, Way) {
    let id = format!("rev-{label}");
    let cold_outcome = config::load_files(&source_files(files), options);
    let built = incremental.build(revision(&id, files), options, endpoints, previous);
    let way = built.way;
    let mut cold_diagnostics = cold_outcome.diagnostics.clone();
    cold_diagnostics.sort();
    match (cold_outcome.into_result(), built.result) {
        (Ok((config, _)), Ok((inc_config, snapshot))) => {
            assert_eq!(*inc_config, config, "{label}: validated config differs");
            drop(inc_config);
            // Accepted: every diagnostic goes with it (errors too, under SkipInvalid).
            let mut cold_warnings = cold_diagnostics.clone();
            cold_warnings.extend(attache::endpoints::missing_services(&config, endpoints));
            assert_eq!(built.warnings, cold_warnings, "{label}: warnings differ");
            let resources = translate::translate(&config, endpoints);
            let cold = Snapshot::new(&id, endpoints.generation, &resources).expect("cold snapshot");
            assert_eq!(
                contents(&snapshot),
                contents(&cold),
                "{label}: snapshot differs"
            );
            assert_eq!(snapshot.version(), cold.version());
            assert_eq!(
                snapshot.referenced_endpoints(),
                cold.referenced_endpoints(),
                "{label}"
            );
            assert_eq!(
                snapshot.referenced_routes(),
                cold.referenced_routes(),
                "{label}"
            );
            snapshot.consistent().expect("consistent");
            (Some(snapshot), way)
        }
        (Err(rejected), Err(Outcome::Rejected { errors })) => {
            let cold_errors: Vec<_> = rejected
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .cloned()
                .collect();
            assert_eq!(errors, cold_errors, "{label}: errors differ");
            (None, way)
        }
        (cold, inc) => panic!(
            "{label}: cold accepted: {}, incremental: {:?}",
            cold.is_ok(),
            inc.err()
        ),
    }
}

/// The steady state: a change of Mappings alone.
const MAPPINGS: Way = Way::Mappings {
    translated_whole: false,
};

#[test]
fn issue_4_a_sequence_of_revisions_matches_a_cold_build_of_each() {
    let options = Options {
        policy: Policy::RejectRevision,
        ..Default::default()
    };
    let endpoints = endpoints();
    let mut inc = Incremental::default();
    let mut files = base();
    let (first, way) = step("base", &mut inc, None, &files, &options, &endpoints);
    assert_eq!(way, Way::Whole);
    let first = first.expect("accepted");
    let base_contents = contents(&first);
    let mut previous = Some(first);
    let mut apply = |label: &str, files: &Files, inc: &mut Incremental, expected: Way| {
        let (next, way) = step(label, inc, previous.as_ref(), files, &options, &endpoints);
        assert_eq!(way, expected, "{label}: built the wrong way");
        if next.is_some() {
            previous = next.clone();
        }
        next
    };
    let edit = |files: &mut Files, path: &str, from: &str, to: &str| {
        let text = files.get_mut(path).expect("file");
        assert!(text.contains(from), "{path}: no {from:?}");
        *text = text.replacen(from, to, 1);
    };

    // Add a Mapping to one file, for a service no Mapping used: a new cluster.
    files
        .get_mut("teams/1/mappings.yaml")
        .unwrap()
        .push_str(&mapping(
            "team-1",
            "added",
            "  prefix: /added/\n  service: added:80\n",
        ));
    apply("add", &files, &mut inc, MAPPINGS).expect("accepted");
    // Change a Mapping's prefix: its route moves within its virtual hosts.
    edit(&mut files, "teams/2/mappings.yaml", "/t2/a/", "/t2/a2/");
    apply("change", &files, &mut inc, MAPPINGS).expect("accepted");
    // Change the weighted group (its shared route and provenance).
    edit(
        &mut files,
        "teams/3/mappings.yaml",
        "weight: 30",
        "weight: 60",
    );
    apply("weight", &files, &mut inc, MAPPINGS).expect("accepted");
    // A precedence: the route goes first in every virtual host it is on.
    edit(
        &mut files,
        "teams/0/mappings.yaml",
        "prefix: /t0/old/\n",
        "prefix: /t0/old/\n  precedence: 10\n",
    );
    apply("precedence", &files, &mut inc, MAPPINGS).expect("accepted");
    // Another hostname: the route leaves a.example.com's virtual host for b's.
    edit(
        &mut files,
        "teams/2/mappings.yaml",
        "hostname: a.example.com",
        "hostname: b.example.com",
    );
    apply("move vhost", &files, &mut inc, MAPPINGS).expect("accepted");
    // Same match as another Mapping and no weight: a warning on the group.
    files
        .get_mut("teams/2/mappings.yaml")
        .unwrap()
        .push_str(&mapping(
            "team-2",
            "twin",
            "  prefix: /t2/old/\n  service: twin:80\n",
        ));
    apply("same match", &files, &mut inc, MAPPINGS).expect("accepted");
    // `bypass_auth` with no AuthService: a warning on the Mapping.
    edit(
        &mut files,
        "teams/2/mappings.yaml",
        "service: twin:80\n",
        "service: twin:80\n  bypass_auth: true\n",
    );
    apply("bypass", &files, &mut inc, MAPPINGS).expect("accepted");
    // Remove a Mapping: the one before it in the file keeps its line, those after move.
    let t0 = files.get_mut("teams/0/mappings.yaml").unwrap();
    let removed = mapping(
        "team-0",
        "m1",
        "  hostname: b.example.com\n  prefix: /t0/b/\n  service: app-0:8080\n  timeout_ms: 1500\n",
    );
    assert!(t0.contains(&removed));
    *t0 = t0.replace(&removed, "");
    apply("remove", &files, &mut inc, MAPPINGS).expect("accepted");
    // The last Mapping of a service goes: its cluster and load assignment go too.
    let t1 = files.get_mut("teams/1/mappings.yaml").unwrap();
    let added = mapping(
        "team-1",
        "added",
        "  prefix: /added/\n  service: added:80\n",
    );
    *t1 = t1.replace(&added, "");
    apply("last user", &files, &mut inc, MAPPINGS).expect("accepted");
    // A new file of Mappings, then a Mapping moved from it to another file.
    files.insert(
        "teams/5/new.yaml".into(),
        mapping("team-5", "n0", "  prefix: /n0/\n  service: app-1:8080\n")
            + &mapping("team-5", "n1", "  prefix: /n1/\n  service: n1:80\n")
            + &mapping(
                "team-5",
                "k",
                "  prefix: /k/\n  service: coll.team-five:80\n",
            ),
    );
    apply("new file", &files, &mut inc, MAPPINGS).expect("accepted");
    let n1 = mapping("team-5", "n1", "  prefix: /n1/\n  service: n1:80\n");
    edit(&mut files, "teams/5/new.yaml", &n1, "");
    files
        .get_mut("teams/0/mappings.yaml")
        .unwrap()
        .push_str(&n1);
    apply("moved", &files, &mut inc, MAPPINGS).expect("accepted");
    // An address whose cluster name collides with a Service's: both names change, so
    // translation runs whole.
    files
        .get_mut("teams/5/new.yaml")
        .unwrap()
        .push_str(&mapping(
            "team-5",
            "collide",
            "  prefix: /collide/\n  service: coll.team.five:80\n",
        ));
    let collided = Way::Mappings {
        translated_whole: true,
    };
    apply("collision", &files, &mut inc, collided).expect("accepted");
    files.remove("teams/5/new.yaml");
    apply("file gone", &files, &mut inc, collided).expect("accepted");
    // A duplicate name across files: rejected with the error a whole load reports.
    let mut duplicate = files.clone();
    duplicate.insert(
        "teams/6/dup.yaml".into(),
        mapping("team-0", "m0", "  prefix: /dup/\n  service: dup:80\n"),
    );
    assert!(apply("duplicate", &duplicate, &mut inc, Way::Whole).is_none());
    // After a rejected revision, the next one is loaded whole.
    apply("after rejection", &files, &mut inc, Way::Whole).expect("accepted");
    // Change a Host: every Mapping's attachment and authority match is reconsidered.
    edit(&mut files, "hosts.yaml", "a.example.com", "aa.example.com");
    edit(
        &mut files,
        "teams/1/mappings.yaml",
        "hostname: a.example.com",
        "hostname: aa.example.com",
    );
    apply("host", &files, &mut inc, Way::Whole).expect("accepted");
    // A Host added, then removed.
    let hosts = files["hosts.yaml"].clone();
    files
        .get_mut("hosts.yaml")
        .unwrap()
        .push_str(&host("c", "c.example.com"));
    apply("host added", &files, &mut inc, Way::Whole).expect("accepted");
    edit(&mut files, "teams/3/mappings.yaml", "/t3/a/", "/t3/a3/");
    apply("after host added", &files, &mut inc, MAPPINGS).expect("accepted");
    files.insert("hosts.yaml".into(), hosts);
    apply("host removed", &files, &mut inc, Way::Whole).expect("accepted");
    // A Module default every Mapping takes.
    files.insert("module.yaml".into(), module(7000));
    apply("module", &files, &mut inc, Way::Whole).expect("accepted");
    edit(&mut files, "teams/3/mappings.yaml", "/t3/a3/", "/t3/a4/");
    apply("after module", &files, &mut inc, MAPPINGS).expect("accepted");
    // Rename a file: provenance names the new path.
    let moved = files.remove("teams/3/mappings.yaml").unwrap();
    files.insert("teams/3/renamed.yaml".into(), moved);
    apply("rename", &files, &mut inc, MAPPINGS).expect("accepted");
    // A broken revision is rejected with the same errors, then a fixed one accepted.
    let mut broken = files.clone();
    broken.insert(
        "teams/9/bad.yaml".into(),
        mapping("team-9", "bad", "  prefix: nope\n  service: x\n"),
    );
    broken.insert("teams/9/worse.yaml".into(), "key: [unclosed\n".into());
    assert!(apply("broken", &broken, &mut inc, Way::Whole).is_none());
    apply("fixed", &files, &mut inc, Way::Whole).expect("accepted");
    // Revert to the first revision: byte for byte what it was.
    let reverted = apply("revert", &base(), &mut inc, Way::Whole).expect("accepted");
    let (mut resources, types) = contents(&reverted);
    let (mut expected, expected_types) = base_contents;
    resources.sort();
    expected.sort();
    assert_eq!(resources, expected);
    assert_eq!(types, expected_types);
}

#[test]
fn issue_4_with_skip_invalid_a_revision_with_errors_is_served_and_the_next_loaded_whole() {
    let options = Options {
        policy: Policy::SkipInvalid,
        ..Default::default()
    };
    let endpoints = endpoints();
    let mut inc = Incremental::default();
    let mut files = base();
    let (first, _) = step("base", &mut inc, None, &files, &options, &endpoints);
    let mut previous = first;
    // An invalid Mapping is left out and the rest served; that revision has an error,
    // so it is no base for the steady way, and neither way may drop the error.
    files.insert(
        "teams/9/bad.yaml".into(),
        mapping("team-9", "bad", "  prefix: nope\n  service: x\n"),
    );
    let (next, way) = step(
        "skip",
        &mut inc,
        previous.as_ref(),
        &files,
        &options,
        &endpoints,
    );
    assert_eq!(way, Way::Whole);
    previous = Some(next.expect("served without the bad Mapping"));
    let t0 = files.get_mut("teams/0/mappings.yaml").unwrap();
    *t0 = t0.replacen("/t0/a/", "/t0/a0/", 1);
    let (next, way) = step(
        "after",
        &mut inc,
        previous.as_ref(),
        &files,
        &options,
        &endpoints,
    );
    assert_eq!(way, Way::Whole);
    previous = Some(next.expect("accepted"));
    // The error fixed: the next change of Mappings goes the steady way again.
    files.remove("teams/9/bad.yaml");
    let (next, _) = step(
        "fixed",
        &mut inc,
        previous.as_ref(),
        &files,
        &options,
        &endpoints,
    );
    let t0 = files.get_mut("teams/0/mappings.yaml").unwrap();
    *t0 = t0.replacen("/t0/a0/", "/t0/a1/", 1);
    let (_, way) = step(
        "steady",
        &mut inc,
        next.as_ref(),
        &files,
        &options,
        &endpoints,
    );
    assert_eq!(way, MAPPINGS);
}

/// Gateways sharing the repository (`ambassador_id`): a Mapping handed from one
/// gateway to another is a removal or an addition for this one, on the steady way too,
/// and a file holding only another gateway's Host does not force a whole load.
#[test]
fn issue_4_a_mapping_moving_between_gateways_matches_a_cold_build() {
    let options = Options {
        ambassador_id: "internal".parse().expect("an id"),
        ..Default::default()
    };
    let endpoints = endpoints();
    let mut inc = Incremental::default();
    let mut files = base();
    // Mappings of the internal gateway, beside ones it does not serve.
    files.insert(
        "internal.yaml".into(),
        mapping(
            "ops",
            "admin",
            "  ambassador_id: [internal]\n  prefix: /admin/\n  service: admin:80\n",
        ) + &mapping(
            "ops",
            "metrics",
            "  ambassador_id: public\n  prefix: /metrics/\n  service: metrics:80\n",
        ) + "---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: pub\n  \
             namespace: gw\nspec:\n  ambassador_id: [public]\n  hostname: pub.example.com\n",
    );
    let (first, way) = step("base", &mut inc, None, &files, &options, &endpoints);
    assert_eq!(way, Way::Whole);
    let first = first.expect("accepted");
    let routes = |snapshot: &Snapshot| {
        snapshot
            .resources(ResourceType::Route)
            .values()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect::<String>()
    };
    assert!(routes(&first).contains("/admin/"));
    assert!(!routes(&first).contains("/metrics/"));
    // The public gateway's Mapping becomes this one's too.
    let text = files.get_mut("internal.yaml").unwrap();
    *text = text.replacen(
        "ambassador_id: public",
        "ambassador_id: [public, internal]",
        1,
    );
    let (second, way) = step(
        "adopt",
        &mut inc,
        Some(&first),
        &files,
        &options,
        &endpoints,
    );
    assert_eq!(way, MAPPINGS);
    let second = second.expect("accepted");
    assert!(routes(&second).contains("/metrics/"));
    // And the admin Mapping leaves for the public gateway only.
    let text = files.get_mut("internal.yaml").unwrap();
    *text = text.replacen("ambassador_id: [internal]", "ambassador_id: [public]", 1);
    let (third, way) = step(
        "hand over",
        &mut inc,
        Some(&second),
        &files,
        &options,
        &endpoints,
    );
    assert_eq!(way, MAPPINGS);
    assert!(!routes(&third.expect("accepted")).contains("/admin/"));
}

/// A tiny deterministic generator: the same mutations on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % below as u64) as usize
    }
}

#[test]
fn issue_4_random_edits_match_a_cold_build_after_every_revision() {
    let options = Options::default();
    let endpoints = endpoints();
    let mut inc = Incremental::default();
    let mut files = base();
    let (mut previous, _) = step("gen-0", &mut inc, None, &files, &options, &endpoints);
    let mut rng = Lcg(7);
    let mut accepted = 0;
    let mut steady = 0;
    for round in 1..=40 {
        let team = rng.next(5);
        let path = format!("teams/{team}/mappings.yaml");
        let ns = format!("team-{team}");
        let text = files.entry(path.clone()).or_default();
        match rng.next(6) {
            0 => text.push_str(&mapping(
                &ns,
                &format!("r{round}"),
                &format!("  prefix: /r{round}/\n  service: svc-{}:80\n", rng.next(3)),
            )),
            1 => *text = text.replacen("/t", "/x", 1),
            2 => *text = text.replacen("weight: 30", "weight: 20", 1),
            3 => *text = text.replacen("service: app", "service: other", 1),
            // Same match, no weights: a warning, cached with the file.
            4 => text.push_str(&mapping(
                &ns,
                &format!("w{round}"),
                &format!("  prefix: /same/{team}/\n  service: same-{}\n", rng.next(2)),
            )),
            _ => {
                files.remove(&path);
            }
        }
        let (next, way) = step(
            &format!("gen-{round}"),
            &mut inc,
            previous.as_ref(),
            &files,
            &options,
            &endpoints,
        );
        if way == MAPPINGS {
            steady += 1;
        }
        if next.is_some() {
            accepted += 1;
            previous = next;
        }
    }
    assert!(
        accepted >= 20,
        "too few accepted revisions to mean much: {accepted}"
    );
    assert!(steady >= 10, "too few went the steady way: {steady}");
}

#[test]
fn issue_4_one_changed_file_is_the_only_one_parsed_and_its_mapping_the_only_route_built() {
    let options = Options::default();
    let endpoints = endpoints();
    let mut files = base();
    let mut loader = config::Cache::new();
    let mut translator = translate::Cache::new();
    let (outcome, reuse) = loader.load(&source_files(&files), &options);
    assert_eq!((reuse.parsed, reuse.reused), (files.len(), 0));
    let (_, first) = translator.translate(&outcome.config, &endpoints);
    let t1 = files.get_mut("teams/1/mappings.yaml").unwrap();
    *t1 = t1.replace("/t1/a/", "/t1/changed/");
    let (outcome, reuse) = loader.load(&source_files(&files), &options);
    assert_eq!((reuse.parsed, reuse.reused), (1, files.len() - 1));
    assert_eq!(loader.len(), files.len());
    let (_, second) = translator.translate(&outcome.config, &endpoints);
    assert_eq!(second.routes_built, 1, "{second:?}");
    assert_eq!(second.routes_reused + 1, first.routes_built);
    assert_eq!(second.clusters_built, 0, "{second:?}");
    // A file that is gone leaves the cache.
    files.remove("teams/2/mappings.yaml");
    let (_, reuse) = loader.load(&source_files(&files), &options);
    assert_eq!(reuse.parsed, 0);
    assert_eq!(loader.len(), files.len());
}
