//! Determinism (same config -> byte-identical encodings, whatever the input order) and
//! provenance (each resource names the file, line and resource it came from).

use crate::config::{self, Config, Options, SourceFile};
use crate::translate::provenance::Provenance;
use crate::translate::testing::*;

use super::{run, secrets_dir};

const HOSTS: &str = r#"apiVersion: getambassador.io/v3alpha1
kind: Host
metadata:
  name: api
  namespace: shop
spec:
  hostname: api.example.com
  tlsSecret:
    name: example-cert
---
apiVersion: getambassador.io/v3alpha1
kind: Host
metadata:
  name: www
  namespace: shop
spec:
  hostname: "*.example.com"
"#;

const MAPPINGS: &str = r#"apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: users
  namespace: shop
spec:
  hostname: api.example.com
  prefix: /users/
  service: users:8080
  headers:
    x-a: "1"
    x-b: "2"
  add_request_headers:
    x-one: "1"
    x-two: "2"
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: shop
  namespace: shop
spec:
  prefix: /shop/
  service: shop
  weight: 90
---
apiVersion: getambassador.io/v3alpha1
kind: Mapping
metadata:
  name: shop-canary
  namespace: shop
spec:
  prefix: /shop/
  service: https://next.example.com
  grpc: true
  weight: 10
"#;

fn load(files: &[(&str, String)]) -> Config {
    let dir = secrets_dir(super::FIXTURE_SECRETS);
    let options = Options {
        secrets_dir: Some(dir.path().to_path_buf()),
        ..Options::default()
    };
    let files: Vec<SourceFile> = files
        .iter()
        .map(|(path, text)| SourceFile {
            path: (*path).to_owned(),
            bytes: text.as_bytes().to_vec(),
        })
        .collect();
    let outcome = config::load_files(&files, &options);
    assert!(
        outcome.errors().next().is_none(),
        "{:#?}",
        outcome.diagnostics
    );
    outcome.config
}

/// The documents of a multi-document YAML text, in reverse order.
fn reversed_documents(text: &str) -> String {
    let docs: Vec<&str> = text.split("---\n").collect();
    docs.into_iter().rev().collect::<Vec<_>>().join("---\n")
}

#[test]
fn translating_twice_gives_byte_identical_encodings() {
    let config = load(&[
        ("hosts.yaml", HOSTS.to_owned()),
        ("mappings.yaml", MAPPINGS.to_owned()),
    ]);
    let first = encoded(&run(&config));
    // Each translation builds fresh HashMaps with fresh random seeds; repeat to be sure
    // no map order reaches the bytes.
    for _ in 0..20 {
        assert_eq!(encoded(&run(&config)), first);
    }
}

#[test]
fn file_and_document_order_does_not_change_the_encoding() {
    let forward = run(&load(&[
        ("hosts.yaml", HOSTS.to_owned()),
        ("mappings.yaml", MAPPINGS.to_owned()),
    ]));
    // Same files listed the other way round, documents reversed inside them.
    let backward = run(&load(&[
        ("mappings.yaml", reversed_documents(MAPPINGS)),
        ("hosts.yaml", reversed_documents(HOSTS)),
    ]));
    // Provenance lines differ (documents moved), so compare with provenance stripped, and
    // check the rest byte for byte.
    assert_eq!(
        encoded(&strip_provenance(forward.clone())),
        encoded(&strip_provenance(backward))
    );
    assert!(!forward.clusters.is_empty() && !forward.secrets.is_empty());
}

/// CA Secrets and validation contexts, whatever the order of files and documents, and
/// however many times: the `tls-verify` fixture forwards, backwards and again.
#[test]
fn peer_verification_translates_to_byte_identical_encodings() {
    let dir = super::crate_root().join("tests/fixtures/translate/tls-verify");
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).expect("read fixture");
    let (hosts, mappings) = (read("hosts.yaml"), read("mappings.yaml"));
    let forward = || {
        run(&load(&[
            ("hosts.yaml", hosts.clone()),
            ("mappings.yaml", mappings.clone()),
        ]))
    };
    let first = forward();
    assert!(first.secrets.iter().any(|s| s.name.starts_with("ca/")));
    for _ in 0..5 {
        assert_eq!(encoded(&forward()), encoded(&first));
    }
    let backward = run(&load(&[
        ("mappings.yaml", reversed_documents(&mappings)),
        ("hosts.yaml", reversed_documents(&hosts)),
    ]));
    assert_eq!(
        encoded(&strip_provenance(first)),
        encoded(&strip_provenance(backward))
    );
}

#[test]
fn shuffled_model_lists_give_byte_identical_encodings() {
    let sorted = load(&[
        ("hosts.yaml", HOSTS.to_owned()),
        ("mappings.yaml", MAPPINGS.to_owned()),
    ]);
    let expected = encoded(&run(&sorted));
    let mut shuffled = sorted.clone();
    shuffled.mappings.reverse();
    shuffled.hosts.reverse();
    shuffled.mappings.rotate_left(1);
    assert_ne!(shuffled.mappings, sorted.mappings);
    assert_eq!(encoded(&run(&shuffled)), expected);
}

/// Clears every metadata field the translation sets, so two translations of documents at
/// different lines can be compared.
fn strip_provenance(mut r: crate::translate::Resources) -> crate::translate::Resources {
    use envoy_types::pb::envoy::config::listener::v3::filter;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use prost::Message;
    for l in &mut r.listeners {
        l.metadata = None;
        for c in &mut l.filter_chains {
            c.metadata = None;
            for f in &mut c.filters {
                if let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type {
                    // Route configs are fetched by RDS, so the HCM holds no metadata.
                    let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("an HCM");
                    assert_eq!(hcm.encode_to_vec(), any.value);
                }
            }
        }
    }
    for rc in &mut r.routes {
        rc.metadata = None;
        for v in &mut rc.virtual_hosts {
            v.metadata = None;
            for route in &mut v.routes {
                route.metadata = None;
            }
        }
    }
    for c in &mut r.clusters {
        c.metadata = None;
    }
    r
}

#[test]
fn every_resource_names_the_file_line_and_resource_it_came_from() {
    let config = load(&[
        ("hosts.yaml", HOSTS.to_owned()),
        ("mappings/shop.yaml", MAPPINGS.to_owned()),
    ]);
    let resources = run(&config);
    let read = |m: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>| {
        Provenance::from_metadata(m.expect("metadata")).expect("attache provenance")
    };
    let routes = route_config(&resources, "routes_8443");
    let api = vhost(routes, "shop/api");
    let p = read(api.metadata.as_ref());
    assert_eq!(
        (
            p.file.as_str(),
            p.line,
            p.kind.as_str(),
            p.namespace.as_str(),
            p.name.as_str()
        ),
        ("hosts.yaml", 1, "Host", "shop", "api")
    );
    let www = vhost(routes, "shop/www");
    assert_eq!(read(www.metadata.as_ref()).line, 11);
    let users = route_named(api, "shop/users");
    let p = read(users.metadata.as_ref());
    assert_eq!(
        (p.file.as_str(), p.line, p.kind.as_str(), p.name.as_str()),
        ("mappings/shop.yaml", 1, "Mapping", "users")
    );
    // The weighted route lists both Mappings.
    let shop = route_named(api, "shop/shop");
    let p = read(shop.metadata.as_ref());
    assert_eq!(p.line, 17);
    assert_eq!(p.mappings, ["shop/shop", "shop/shop-canary"]);
    // Clusters, filter chains and listeners too.
    for c in &resources.clusters {
        let p = read(c.metadata.as_ref());
        assert_eq!(p.file, "mappings/shop.yaml", "{}", c.name);
        assert_eq!(p.kind, "Mapping");
    }
    let l = listener_named(&resources, "listener_8443");
    let chain = l
        .filter_chains
        .iter()
        .find(|c| c.name == "shop/api")
        .expect("the api chain");
    assert_eq!(read(chain.metadata.as_ref()).name, "api");
}

/// Routes are moved into their last virtual host, not copied: the use counts must match
/// what the virtual hosts take exactly, over every fixture (Host policies, listeners,
/// TLS) and example-repo.
#[test]
fn shared_routes_are_each_used_exactly_as_counted() {
    use crate::translate::{listener, names, route, vhost};
    let mut repos = super::fixture_repos();
    repos.push(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"));
    for repo in repos {
        let config = super::load_dir(&repo, super::FIXTURE_SECRETS);
        let targets = config.mappings.iter().filter_map(|m| match &m.action {
            crate::config::Action::Route(r) => Some(&r.target),
            crate::config::Action::Redirect(_) => None,
        });
        let clusters = names::clusters(targets);
        let groups = route::groups(&config.mappings);
        let plans = listener::plans(&config);
        let built = vhost::SharedRoutes::new(&groups, &clusters, &plans, &config);
        for plan in &plans {
            vhost::route_configuration(plan, &config, &groups, &built);
        }
        assert!(
            built.all_used(),
            "{}: a route was miscounted",
            repo.display()
        );
    }
}

/// Issue 7: policies add maps (per-filter configs, JSON access log formats) that prost
/// encodes in hash order; each holds one entry or is encoded per entry, so the policies
/// fixture translates to the same bytes every time.
#[test]
fn policies_translate_to_byte_identical_encodings() {
    let repo = super::crate_root().join("tests/fixtures/translate/policies");
    let config = super::load_dir(&repo, super::FIXTURE_SECRETS);
    let first = encoded(&run(&config));
    for _ in 0..20 {
        assert_eq!(encoded(&run(&config)), first);
    }
}
