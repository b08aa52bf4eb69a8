//! Validation from YAML, through `load_files` as users reach it: the rules that span
//! resources (route groups, references, what `--allow-partial` may leave out).

use crate::config::{
    Action, Config, Diagnostic, Options, Outcome, Policy, SourceFile, UpstreamTls, load_files,
};

fn load_with(yaml: &str, policy: Policy) -> Outcome {
    let files = [SourceFile {
        path: "test.yaml".to_owned(),
        bytes: yaml.as_bytes().to_vec(),
    }];
    load_files(
        &files,
        &Options {
            policy,
            ..Options::default()
        },
    )
}

fn load(yaml: &str) -> Outcome {
    load_with(yaml, Policy::RejectRevision)
}

fn partial(yaml: &str) -> Outcome {
    load_with(yaml, Policy::SkipInvalid)
}

fn errors(outcome: &Outcome) -> Vec<String> {
    outcome.errors().map(Diagnostic::to_string).collect()
}

fn clean(outcome: Outcome) -> Config {
    assert!(errors(&outcome).is_empty(), "{:#?}", errors(&outcome));
    outcome.config
}

/// The one error of `outcome`, rendered.
fn only_error(outcome: &Outcome) -> String {
    let errors = errors(outcome);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors[0].clone()
}

fn mapping(name: &str, namespace: &str, body: &str) -> String {
    format!(
        "---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}\nspec:\n{body}"
    )
}

// === Matches ===

/// Envoy compares query parameter names case-sensitively: lower-casing `userId` made a
/// route that never matched `?userId=42`. Header names stay lower-case (Envoy's own
/// form; they compare regardless of case).
#[test]
fn query_parameter_names_keep_their_case_and_header_names_are_lower_cased() {
    let config = clean(load(&mapping(
        "users",
        "default",
        "  prefix: /users/\n  service: users\n  query_parameters:\n    userId: \"42\"\n  \
         regex_query_parameters:\n    sortBy: \"^[a-z]+$\"\n  headers:\n    X-Tenant: acme\n",
    )));
    let m = &config.mappings[0];
    let names: Vec<&str> = m.query_parameters.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["sortBy", "userId"]);
    assert_eq!(m.headers[0].name, "x-tenant");
}

// === Route groups ===

const STABLE: &str = "  prefix: /api/\n  service: api-v1\n  weight: 90\n";
const CANARY: &str = "  prefix: /api/\n  service: api-v2\n  weight: 10\n";

const AUTH: &str = "---\napiVersion: getambassador.io/v3alpha1\nkind: AuthService\n\
                    metadata:\n  name: auth\nspec:\n  auth_service: auth:3000\n";

/// The first Mapping's `bypass_auth: true` used to switch auth off for the canary's
/// traffic too, silently.
#[test]
fn mappings_sharing_a_route_must_agree_on_bypass_auth() {
    let yaml = format!(
        "{AUTH}{}{}",
        mapping(
            "api-a-stable",
            "default",
            &format!("{STABLE}  bypass_auth: true\n")
        ),
        mapping("api-b-canary", "default", CANARY)
    );
    let outcome = load(&yaml);
    let error = only_error(&outcome);
    assert!(
        error.contains("Mapping \"api-b-canary\": bypass_auth: shares one Envoy route with Mapping \"api-a-stable\" at test.yaml:")
            && error.contains("its bypass_auth must equal"),
        "{error}"
    );
    assert!(!outcome.is_accepted());
    // Under --allow-partial the canary is left out: the route is the stable one's alone.
    let outcome = partial(&yaml);
    assert!(outcome.is_accepted());
    let names: Vec<&str> = outcome
        .config
        .mappings
        .iter()
        .map(|m| m.meta.name.as_str())
        .collect();
    assert_eq!(names, ["api-a-stable"]);
}

#[test]
fn every_route_level_difference_is_named() {
    let yaml = format!(
        "{}{}",
        mapping("a", "default", STABLE),
        mapping(
            "b",
            "default",
            &format!(
                "{CANARY}  timeout_ms: 500\n  rewrite: /v2/\n  allow_upgrade: [websocket]\n  \
                 retry_policy:\n    retry_on: 5xx\n"
            )
        )
    );
    let error = only_error(&load(&yaml));
    assert!(
        error.contains("its rewrite, timeout_ms, allow_upgrade, retry_policy must equal"),
        "{error}"
    );
}

/// Cluster settings, headers and host rewrites live on each weighted cluster entry.
#[test]
fn per_cluster_settings_may_differ_within_a_route() {
    let yaml = format!(
        "{}{}",
        mapping(
            "a",
            "default",
            &format!("{STABLE}  add_request_headers:\n    x-track: stable\n")
        ),
        mapping(
            "b",
            "default",
            &format!(
                "{CANARY}  host_rewrite: canary.internal\n  connect_timeout_ms: 500\n  \
                 circuit_breakers:\n  - max_connections: 10\n  tls: true\n"
            )
        )
    );
    let config = clean(load(&yaml));
    assert_eq!(config.mappings.len(), 2);
}

const LIMIT_HEAD: &str = "---\napiVersion: attache.io/v1\nkind: LocalRateLimit\nmetadata:\n  \
                          name: limit\nspec:\n  max_tokens: 10\n  fill_interval: 1s\n";

/// A LocalRateLimit naming only the canary did nothing: the route carried the stable
/// Mapping's (absent) limit.
#[test]
fn a_local_rate_limit_must_name_every_mapping_of_a_shared_route() {
    let yaml = format!(
        "{}{}{LIMIT_HEAD}  mappings:\n  - b\n",
        mapping("a", "default", STABLE),
        mapping("b", "default", CANARY),
    );
    let outcome = partial(&yaml);
    let error = only_error(&outcome);
    assert!(
        error.starts_with("test.yaml:30:5: error: LocalRateLimit \"limit\": spec.mappings: Mapping \"b\" shares one Envoy route with Mapping \"a\"")
            && error.contains("(\"a\" not limited by this one)"),
        "{error}"
    );
    // An enforcing kind: even --allow-partial does not serve a limit that does nothing.
    assert!(!outcome.is_accepted());

    let yaml = format!(
        "{}{}{LIMIT_HEAD}  mappings: [a, b]\n",
        mapping("a", "default", STABLE),
        mapping("b", "default", CANARY),
    );
    let config = clean(load(&yaml));
    assert_eq!(config.local_rate_limits.len(), 1);
}

// === LocalRateLimit positions ===

#[test]
fn local_rate_limit_errors_point_at_the_entry_in_either_form() {
    let crd = format!(
        "{}{LIMIT_HEAD}  mappings:\n  - api\n  - nope\n",
        mapping("api", "default", "  prefix: /api/\n  service: api\n")
    );
    let error = only_error(&load(&crd));
    assert!(
        error.starts_with(
            "test.yaml:20:5: error: LocalRateLimit \"limit\": spec.mappings: no valid Mapping \"nope\""
        ),
        "{error}"
    );
    let flat = format!(
        "{}---\napiVersion: attache.io/v1\nkind: LocalRateLimit\nname: limit\nmax_tokens: 10\n\
         fill_interval: 1s\nmappings: [api, nope]\n",
        mapping("api", "default", "  prefix: /api/\n  service: api\n")
    );
    let error = only_error(&load(&flat));
    assert!(
        error.starts_with(
            "test.yaml:16:17: error: LocalRateLimit \"limit\": mappings: no valid Mapping \"nope\""
        ),
        "{error}"
    );
}

// === --allow-partial and enforcing kinds ===

/// An AuthService whose `metadata` does not decode used to produce an error with no
/// resource, so `--allow-partial` served the revision without auth.
#[test]
fn an_authservice_with_bad_metadata_rejects_a_partial_revision() {
    let good = mapping("api", "default", "  prefix: /api/\n  service: api\n");
    for auth in [
        "apiVersion: getambassador.io/v3alpha1\nkind: AuthService\nmetadata:\n  name: auth\n  \
         bogus: x\nspec:\n  auth_service: auth:3000\n",
        "apiVersion: getambassador.io/v3alpha1\nkind: AuthService\nmetadata:\n  namespace: x\n\
         spec:\n  auth_service: auth:3000\n",
        "apiVersion: getambassador.io/v3alpha1\nkind: AuthService\nmetadata:\n  name: \"a b\"\n\
         spec:\n  auth_service: auth:3000\n",
        "apiVersion: getambassador.io/v3alpha1\nkind: RateLimitService\nmetadata: []\n\
         spec:\n  service: rls:8081\n",
        "apiVersion: getambassador.io/v3alpha1\nkind: authservice\nmetadata:\n  name: auth\n\
         spec:\n  auth_service: auth:3000\n",
    ] {
        let outcome = partial(&format!("{auth}{good}"));
        assert!(!outcome.is_accepted(), "{auth}: {:#?}", errors(&outcome));
    }
}

/// Their error says attache refuses to serve a config that relies on them; under
/// `--allow-partial` it used to serve the rest anyway.
#[test]
fn unsupported_enforcing_kinds_reject_a_partial_revision() {
    let good = mapping("api", "default", "  prefix: /api/\n  service: api\n");
    for kind in ["TCPMapping", "Filter", "FilterPolicy", "ExternalFilter"] {
        let yaml = format!(
            "apiVersion: getambassador.io/v3alpha1\nkind: {kind}\nmetadata:\n  name: x\n\
             spec: {{}}\n{good}"
        );
        let outcome = partial(&yaml);
        assert!(only_error(&outcome).contains("refusing to serve"));
        assert!(!outcome.is_accepted(), "{kind}");
    }
    // An advisory kind is still only a warning.
    let yaml = format!(
        "apiVersion: getambassador.io/v3alpha1\nkind: DevPortal\nmetadata:\n  name: x\n\
         spec: {{}}\n{good}"
    );
    assert!(clean(partial(&yaml)).mappings.len() == 1);
}

// === Kubernetes Services ===

const SERVICE_META: &str = "  uid: 0b1c\n  resourceVersion: \"42\"\n  selfLink: /api/v1/x\n  \
                            labels:\n    app: api\n  ownerReferences: []\n  managedFields: []\n  \
                            creationTimestamp: \"2024-01-01T00:00:00Z\"\n  someFutureField: 1\n";

/// "Other manifests are ignored": a Service without the annotation is not attache's to
/// judge, however its metadata looks.
#[test]
fn a_service_without_the_annotation_is_ignored_whatever_its_metadata() {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n{SERVICE_META}  \
         annotations:\n    other: 1\nspec:\n  ports: [{{port: 80}}]\n"
    );
    let outcome = load(&yaml);
    assert!(outcome.diagnostics.is_empty(), "{:#?}", outcome.diagnostics);
}

#[test]
fn an_annotated_service_reads_only_name_namespace_and_the_annotation() {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n\
         {SERVICE_META}  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: x\n    \
         getambassador.io/config: |\n      apiVersion: getambassador.io/v3alpha1\n      \
         kind: Mapping\n      name: web\n      prefix: /web/\nspec:\n  ports: [{{port: 80}}]\n"
    );
    let config = clean(load(&yaml));
    let m = &config.mappings[0];
    assert_eq!(
        (m.meta.name.as_str(), m.meta.namespace.as_str()),
        ("web", "shop")
    );
    // Still strict about what attache does read.
    let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: shop\n  annotations:\n    \
                getambassador.io/config: \"kind: Mapping\"\n";
    assert!(only_error(&load(yaml)).contains("missing required field `name`"));
}

// === ambassador_id: gateways sharing a repository ===

fn load_for(yaml: &str, gateway: &str) -> Outcome {
    let files = [SourceFile {
        path: "test.yaml".to_owned(),
        bytes: yaml.as_bytes().to_vec(),
    }];
    let options = Options {
        ambassador_id: gateway.parse().expect("an ambassador_id"),
        ..Options::default()
    };
    load_files(&files, &options)
}

fn mapping_names(config: &Config) -> Vec<&str> {
    config
        .mappings
        .iter()
        .map(|m| m.meta.name.as_str())
        .collect()
}

/// Two gateways share one repository; each serves only its own resources, as with
/// Emissary's AMBASSADOR_ID. The internal gateway's Mappings must never reach the
/// public one.
#[test]
fn each_gateway_loads_only_the_resources_its_ambassador_id_names() {
    let yaml = [
        mapping("plain", "default", "  prefix: /plain/\n  service: a\n"),
        mapping(
            "named-default",
            "default",
            "  ambassador_id: [default]\n  prefix: /d/\n  service: a\n",
        ),
        mapping(
            "internal-only",
            "default",
            "  ambassador_id: internal\n  prefix: /admin/\n  service: a\n",
        ),
        mapping(
            "both",
            "default",
            "  ambassador_id: [internal, default]\n  prefix: /both/\n  service: a\n",
        ),
        mapping(
            "empty-list",
            "default",
            "  ambassador_id: []\n  prefix: /e/\n  service: a\n",
        ),
        // Flat form: the field sits at the top level.
        "---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nname: flat-internal\n\
         ambassador_id: [internal]\nprefix: /flat/\nservice: a\n"
            .to_owned(),
    ]
    .concat();
    let public = clean(load_for(&yaml, "default"));
    assert_eq!(
        mapping_names(&public),
        ["both", "empty-list", "named-default", "plain"]
    );
    let internal = clean(load_for(&yaml, "internal"));
    assert_eq!(
        mapping_names(&internal),
        ["both", "flat-internal", "internal-only"]
    );
    assert!(clean(load_for(&yaml, "other")).mappings.is_empty());
}

/// Another gateway's resource is that gateway's to judge: its fields are not decoded
/// here, and its name may repeat one of this gateway's.
#[test]
fn another_gateways_resources_are_neither_decoded_nor_counted_as_duplicates() {
    let yaml = [
        mapping("api", "default", "  prefix: /api/\n  service: a\n"),
        mapping(
            "api",
            "default",
            "  ambassador_id: canary\n  prefix: /api/\n  service: b\n  futureField: 1\n",
        ),
        "---\napiVersion: getambassador.io/v3alpha1\nkind: AuthService\nmetadata:\n  \
         name: auth\nspec:\n  ambassador_id: [canary]\n  auth_service: auth:3000\n  \
         proto: nonsense\n"
            .to_owned(),
    ]
    .concat();
    let config = clean(load_for(&yaml, "default"));
    assert_eq!(mapping_names(&config), ["api"]);
    assert!(config.auth_service.is_none());
    let canary = load_for(&yaml, "canary");
    let errors = errors(&canary);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors.iter().any(|e| e.contains("futureField")),
        "{errors:#?}"
    );
    assert!(errors.iter().any(|e| e.contains("proto")), "{errors:#?}");
}

/// Resources in a Service's annotation carry their own `ambassador_id`.
#[test]
fn annotated_resources_are_filtered_by_their_own_ambassador_id() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations:\n    \
                getambassador.io/config: |\n      apiVersion: getambassador.io/v3alpha1\n      \
                kind: Mapping\n      name: web\n      prefix: /web/\n      ---\n      \
                apiVersion: getambassador.io/v3alpha1\n      kind: Mapping\n      \
                name: web-internal\n      ambassador_id: internal\n      prefix: /int/\n";
    assert_eq!(mapping_names(&clean(load_for(yaml, "default"))), ["web"]);
    assert_eq!(
        mapping_names(&clean(load_for(yaml, "internal"))),
        ["web-internal"]
    );
}

/// A malformed `ambassador_id` cannot say which gateway the resource is for: an error
/// for every gateway, at the field.
#[test]
fn a_malformed_ambassador_id_is_an_error_at_the_field() {
    let yaml = mapping(
        "odd",
        "default",
        "  prefix: /odd/\n  service: a\n  ambassador_id: {name: internal}\n",
    );
    for gateway in ["default", "internal"] {
        assert_eq!(
            only_error(&load_for(&yaml, gateway)),
            "test.yaml:10:18: error: Mapping \"odd\": spec.ambassador_id: expected a string or \
             a list of strings (the ids of the gateways this resource is for), found a mapping"
        );
    }
    let listed = mapping(
        "odd",
        "default",
        "  prefix: /odd/\n  service: a\n  ambassador_id: [internal, 7]\n",
    );
    assert!(only_error(&load_for(&listed, "default")).contains("test.yaml:10:29:"));
}

/// The id comes from a flag or AMBASSADOR_ID, so a bad one is refused where it is read.
#[test]
fn an_ambassador_id_is_a_non_empty_word() {
    assert!("".parse::<crate::config::AmbassadorId>().is_err());
    assert!("in ternal".parse::<crate::config::AmbassadorId>().is_err());
    assert_eq!(
        crate::config::AmbassadorId::default().as_str(),
        crate::config::AmbassadorId::DEFAULT
    );
}

// === Cross-resource removal under --allow-partial ===

/// A bad Host or Listener was left out by name, taking valid namesakes in other
/// namespaces with it.
#[test]
fn a_bad_host_or_listener_takes_no_namesake_in_another_namespace_with_it() {
    let resource = |kind: &str, ns: &str, spec: &str| {
        format!(
            "---\napiVersion: getambassador.io/v3alpha1\nkind: {kind}\nmetadata:\n  name: edge\n  \
             namespace: {ns}\nspec:\n{spec}"
        )
    };
    let yaml = [
        resource("Host", "a", "  hostname: a.example.com\n"),
        resource(
            "Host",
            "b",
            "  hostname: b.example.com\n  tlsContext:\n    name: missing\n",
        ),
        resource("Listener", "a", "  port: 8080\n  protocol: HTTP\n"),
        resource("Listener", "b", "  port: 8080\n  protocol: HTTP\n"),
    ]
    .concat();
    let outcome = partial(&yaml);
    assert_eq!(errors(&outcome).len(), 2, "{:#?}", errors(&outcome));
    let hosts: Vec<&str> = outcome
        .config
        .hosts
        .iter()
        .map(|h| h.meta.namespace.as_str())
        .collect();
    assert_eq!(hosts, ["a"]);
    let listeners: Vec<&str> = outcome
        .config
        .listeners
        .iter()
        .map(|l| l.meta.namespace.as_str())
        .collect();
    assert_eq!(listeners, ["a"]);
}

// === Upstream TLS ===

#[test]
fn tls_with_an_http_service_is_a_contradiction() {
    let error = only_error(&load(&mapping(
        "api",
        "default",
        "  prefix: /api/\n  service: http://api:8080\n  tls: true\n",
    )));
    assert!(
        error.contains("`tls` contradicts the `http://` service"),
        "{error}"
    );
    let error = only_error(&load(
        "apiVersion: getambassador.io/v3alpha1\nkind: AuthService\nmetadata:\n  name: auth\n\
         spec:\n  auth_service: http://auth:3000\n  tls: true\n",
    ));
    assert!(
        error.contains("`tls` contradicts the `http://` service"),
        "{error}"
    );
    let config = clean(load(&mapping(
        "api",
        "default",
        "  prefix: /api/\n  service: https://api:8443\n  tls: true\n",
    )));
    let Action::Route(r) = &config.mappings[0].action else {
        panic!("a route");
    };
    assert_eq!(r.target.tls, UpstreamTls::Tls);
}

// === Rate-limit labels ===

#[test]
fn a_key_on_a_fixed_key_label_must_be_its_own_name() {
    let rls = "---\napiVersion: getambassador.io/v3alpha1\nkind: RateLimitService\nmetadata:\n  \
               name: rls\nspec:\n  service: rls:8081\n";
    let with = |label: &str| {
        format!(
            "{rls}{}",
            mapping(
                "api",
                "default",
                &format!(
                    "  prefix: /api/\n  service: api\n  labels:\n    ambassador:\n    - \
                     per_ip:\n      - {label}\n"
                )
            )
        )
    };
    let error = only_error(&load(&with("remote_address: {key: client}")));
    assert!(
        error.contains("remote_address.key: Envoy always sends remote_address under the descriptor key \"remote_address\""),
        "{error}"
    );
    clean(load(&with("remote_address: {key: remote_address}")));
    clean(load(&with("remote_address: {}")));
}

// === TLSContext references ===

fn tls_context(name: &str, namespace: &str) -> String {
    format!(
        "---\napiVersion: getambassador.io/v3alpha1\nkind: TLSContext\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}\nspec:\n  min_tls_version: v1.2\n"
    )
}

fn context_of(config: &Config) -> (String, String) {
    let Action::Route(r) = &config.mappings[0].action else {
        panic!("a route");
    };
    let UpstreamTls::Context(c) = &r.target.tls else {
        panic!("a TLSContext: {:?}", r.target.tls);
    };
    (c.namespace.clone(), c.name.clone())
}

/// Mappings took the first TLSContext of the name in any namespace while Hosts preferred
/// their own; now every reference prefers its own namespace, then a unique match.
#[test]
fn a_tls_reference_prefers_its_namespace_then_a_unique_match() {
    let api = mapping(
        "api",
        "shop",
        "  prefix: /api/\n  service: api\n  tls: upstream\n",
    );
    let config = clean(load(&format!(
        "{}{}{api}",
        tls_context("upstream", "billing"),
        tls_context("upstream", "shop")
    )));
    assert_eq!(context_of(&config), ("shop".into(), "upstream".into()));
    let config = clean(load(&format!(
        "{}{api}",
        tls_context("upstream", "billing")
    )));
    assert_eq!(context_of(&config), ("billing".into(), "upstream".into()));
}

#[test]
fn an_ambiguous_tls_reference_is_an_error_naming_both() {
    let contexts = format!(
        "{}{}",
        tls_context("upstream", "billing"),
        tls_context("upstream", "orders")
    );
    let api = mapping(
        "api",
        "shop",
        "  prefix: /api/\n  service: api\n  tls: upstream\n",
    );
    let error = only_error(&load(&format!("{contexts}{api}")));
    assert!(
        error.contains("no TLSContext named \"upstream\" in namespace \"shop\", and several in others: in \"billing\" at test.yaml:2:1 and in \"orders\" at test.yaml:10:1"),
        "{error}"
    );
    let host = "---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: edge\n  \
                namespace: shop\nspec:\n  hostname: shop.example.com\n  tlsContext:\n    \
                name: upstream\n";
    let error = only_error(&load(&format!("{contexts}{host}")));
    assert!(error.contains("Host \"edge\": tlsContext.name: no TLSContext named \"upstream\" in namespace \"shop\", and several"), "{error}");
    let auth = "---\napiVersion: getambassador.io/v3alpha1\nkind: AuthService\nmetadata:\n  \
                name: auth\n  namespace: shop\nspec:\n  auth_service: auth:3000\n  tls: upstream\n";
    let outcome = partial(&format!("{contexts}{auth}"));
    assert!(only_error(&outcome).contains("AuthService \"auth\": spec.tls: no TLSContext named"));
    assert!(!outcome.is_accepted());
}

// === At scale ===

/// Past a few thousand Mappings validation runs on several threads; the outcome must be
/// what one thread gives: the Module's defaults (declared after the Mappings) applied to
/// every Mapping, each bad Mapping reported at its line, a duplicate reported against
/// the first declaration (never the other way round), the rest kept, in order.
#[test]
fn many_mappings_validate_as_one_thread_would() {
    const COUNT: usize = 6_000;
    let mut yaml = String::new();
    let mut bad_line = 0;
    for i in 0..COUNT {
        let prefix = if i == 1_234 {
            bad_line = yaml.lines().count() + 8;
            "no-slash".to_owned()
        } else {
            format!("/m{i}/")
        };
        // The last one reuses the name of the 11th.
        let name = if i == COUNT - 1 { 10 } else { i };
        yaml.push_str(&mapping(
            &format!("m{name}"),
            "team",
            &format!("  prefix: {prefix}\n  service: app-{i}\n"),
        ));
    }
    yaml.push_str(
        "---\napiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\n  \
         namespace: team\nspec:\n  config:\n    cluster_request_timeout_ms: 1234\n",
    );
    let outcome = partial(&yaml);
    let errors = errors(&outcome);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("test.yaml:{bad_line}:"))
                && e.contains("Mapping \"m1234\"")
                && e.contains("spec.prefix")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("duplicate Mapping name \"m10\"")
                && e.ends_with("first declared at test.yaml:92:1")),
        "{errors:#?}"
    );
    let config = outcome.config;
    assert_eq!(config.mappings.len(), COUNT - 2);
    assert!(config.mappings.is_sorted_by(
        |a, b| (&a.meta.namespace, &a.meta.name) <= (&b.meta.namespace, &b.meta.name)
    ));
    let m10 = config
        .mappings
        .iter()
        .find(|m| m.meta.name == "m10")
        .expect("the first m10 is kept");
    assert_eq!(m10.path.pattern(), "/m10/");
    for m in &config.mappings {
        let Action::Route(route) = &m.action else {
            panic!("{} is a route", m.meta.name);
        };
        assert_eq!(route.timeout_ms, 1234, "{}", m.meta.name);
    }
}
