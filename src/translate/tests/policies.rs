//! Traffic policies (issue 7) from YAML to Envoy: which cluster and route fields each
//! Mapping policy sets, which HTTP filters the gateway services add and in which order,
//! and how the Module's defaults reach Mappings that set nothing themselves.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::route::v3::{
    Route as EnvoyRoute, rate_limit, route_action, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{ExtAuthz, ext_authz};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use prost::Message;

use super::{load_yaml, run};
use crate::translate::Resources;
use crate::translate::testing::*;

fn mapping_yaml(name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {name}\n\
         spec:\n{spec}"
    )
}

fn doc(api_version: &str, kind: &str, name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "---\napiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn translate_yaml(yaml: &str) -> Resources {
    run(&load_yaml(yaml, &[]))
}

fn cluster_for<'a>(resources: &'a Resources, prefix: &str) -> &'a Cluster {
    let found: Vec<&Cluster> = resources
        .clusters
        .iter()
        .filter(|c| c.name.starts_with(prefix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "clusters named {prefix}*: {:?}",
        names(resources)
    );
    found[0]
}

fn names(resources: &Resources) -> Vec<&str> {
    resources.clusters.iter().map(|c| c.name.as_str()).collect()
}

fn route<'a>(resources: &'a Resources, name: &str) -> &'a EnvoyRoute {
    route_named(default_vhost(resources, "*"), name)
}

fn filter_names(hcm: &HttpConnectionManager) -> Vec<&str> {
    hcm.http_filters.iter().map(|f| f.name.as_str()).collect()
}

fn typed<M: Message + Default>(hcm: &HttpConnectionManager, name: &str) -> M {
    let filter = hcm
        .http_filters
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no filter {name}: {:?}", filter_names(hcm)));
    match &filter.config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => {
            M::decode(any.value.as_slice()).expect("decodes")
        }
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn cluster_policies_go_on_their_own_cluster() {
    let yaml = [
        mapping_yaml("plain", "prefix: /plain/\nservice: users"),
        mapping_yaml(
            "guarded",
            "prefix: /guarded/
service: users
circuit_breakers:
  - max_connections: 7
    max_pending_requests: 8
  - priority: high
    max_requests: 9
outlier_detection:
  consecutive_5xx: 4
  base_ejection_time_ms: 1500
load_balancer:
  policy: least_request
keepalive:
  time: 30
  probes: 2
cluster_idle_timeout_ms: 4000",
        ),
    ]
    .concat();
    let resources = translate_yaml(&yaml);
    // Same Service, different policies: two clusters; the plain one keeps its name.
    assert_eq!(resources.clusters.len(), 2, "{:?}", names(&resources));
    let plain = resources
        .clusters
        .iter()
        .find(|c| c.name == "cluster_users_default")
        .expect("the plain cluster keeps its name");
    assert!(plain.circuit_breakers.is_none());
    let guarded = cluster_for(&resources, "cluster_users_default_p");
    let thresholds = &guarded
        .circuit_breakers
        .as_ref()
        .expect("breakers")
        .thresholds;
    assert_eq!(thresholds.len(), 2);
    assert_eq!(thresholds[0].max_connections.map(|v| v.value), Some(7));
    assert_eq!(thresholds[0].max_pending_requests.map(|v| v.value), Some(8));
    assert_eq!(thresholds[1].max_requests.map(|v| v.value), Some(9));
    let outlier = guarded
        .outlier_detection
        .as_ref()
        .expect("outlier detection");
    assert_eq!(outlier.consecutive_5xx.map(|v| v.value), Some(4));
    assert_eq!(
        outlier.base_ejection_time.map(|d| d.nanos),
        Some(500_000_000)
    );
    assert_eq!(guarded.lb_policy, cluster::LbPolicy::LeastRequest as i32);
    let keepalive = guarded
        .upstream_connection_options
        .as_ref()
        .and_then(|o| o.tcp_keepalive.as_ref())
        .expect("keepalive");
    assert_eq!(keepalive.keepalive_time.map(|v| v.value), Some(30));
    assert_eq!(keepalive.keepalive_probes.map(|v| v.value), Some(2));
    assert_eq!(keepalive.keepalive_interval, None);
    assert_eq!(guarded.typed_extension_protocol_options.len(), 1);
    // Each Mapping's route goes to its own cluster.
    let to = |name| match &action(route(&resources, name)).cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(to("default/plain"), plain.name);
    assert_eq!(to("default/guarded"), guarded.name);
}

#[test]
fn route_policies_set_retry_hash_and_mirrors() {
    let yaml = [
        mapping_yaml(
            "api",
            "prefix: /api/
service: api
retry_policy:
  retry_on: 5xx, reset
  num_retries: 4
  per_try_timeout: 1.5s
load_balancer:
  policy: ring_hash
  cookie:
    name: affinity
    ttl: 10m",
        ),
        mapping_yaml(
            "api-shadow",
            "prefix: /api/\nservice: api-next\nshadow: true\nweight: 10",
        ),
    ]
    .concat();
    let resources = translate_yaml(&yaml);
    let vhost = default_vhost(&resources, "*");
    // The shadow is no route of its own.
    assert_eq!(route_names(vhost), ["default/api"]);
    let a = action(route(&resources, "default/api"));
    let retry = a.retry_policy.as_ref().expect("retry policy");
    assert_eq!(retry.retry_on, "5xx,reset");
    assert_eq!(retry.num_retries.map(|v| v.value), Some(4));
    assert_eq!(
        retry.per_try_timeout.map(|d| (d.seconds, d.nanos)),
        Some((1, 500_000_000))
    );
    match &a.hash_policy[0].policy_specifier {
        Some(route_action::hash_policy::PolicySpecifier::Cookie(c)) => {
            assert_eq!(c.name, "affinity");
            assert_eq!(c.ttl.map(|d| d.seconds), Some(600));
        }
        other => panic!("{other:?}"),
    }
    let mirror = &a.request_mirror_policies[0];
    assert!(
        mirror.cluster.starts_with("cluster_api_next_default"),
        "{mirror:?}"
    );
    let fraction = mirror
        .runtime_fraction
        .as_ref()
        .and_then(|f| f.default_value);
    assert_eq!(fraction.map(|f| f.numerator), Some(10));
    // The mirror's cluster exists; the ring hash is on the api cluster.
    assert!(names(&resources).contains(&mirror.cluster.as_str()));
    let api = cluster_for(&resources, "cluster_api_default_p");
    assert_eq!(api.lb_policy, cluster::LbPolicy::RingHash as i32);
}

#[test]
fn gateway_services_add_filters_in_order_and_their_clusters() {
    let yaml = [
        doc(
            "getambassador.io/v3alpha1",
            "AuthService",
            "auth",
            "auth_service: auth:3000\nproto: grpc\ntimeout_ms: 900\nfailure_mode_allow: true",
        ),
        doc(
            "getambassador.io/v3alpha1",
            "RateLimitService",
            "rls",
            "service: rls:8081\ndomain: shop",
        ),
        doc(
            "getambassador.io/v3alpha1",
            "Module",
            "ambassador",
            "config:\n  enable_grpc_web: true",
        ),
        mapping_yaml(
            "api",
            "prefix: /api/
service: api
cors:
  origins: \"*\"
labels:
  shop:
    - per_user:
        - request_headers:
            header_name: x-user
            key: user
  other:
    - ignored:
        - constant",
        ),
        mapping_yaml(
            "health",
            "prefix: /health/\nservice: api\nbypass_auth: true",
        ),
        doc(
            "attache.io/v1",
            "LocalRateLimit",
            "burst",
            "mappings: [api]\nmax_tokens: 5\nfill_interval: 500ms",
        ),
    ]
    .concat();
    let resources = translate_yaml(&yaml);
    let manager = hcm(listener_named(&resources, "listener_8080"));
    assert_eq!(
        filter_names(&manager),
        [
            "envoy.filters.http.grpc_web",
            "envoy.filters.http.cors",
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.ratelimit",
            "envoy.filters.http.local_ratelimit",
            "envoy.filters.http.router",
        ]
    );
    let authz: ExtAuthz = typed(&manager, "envoy.filters.http.ext_authz");
    assert!(authz.failure_mode_allow);
    match authz.services {
        Some(ext_authz::Services::GrpcService(g)) => {
            assert_eq!(g.timeout.map(|d| d.nanos), Some(900_000_000));
        }
        other => panic!("{other:?}"),
    }
    // gRPC services get HTTP/2 clusters of their own.
    let auth_cluster = cluster_for(&resources, "cluster_auth_default_3000");
    assert_eq!(auth_cluster.typed_extension_protocol_options.len(), 1);
    cluster_for(&resources, "cluster_rls_default_8081");
    // Labels of the RateLimitService's domain only, then the local bucket's selector.
    let api = action(route(&resources, "default/api"));
    assert_eq!(api.rate_limits.len(), 2, "{:?}", api.rate_limits);
    let header_action = &api.rate_limits[0].actions[0].action_specifier;
    match header_action {
        Some(rate_limit::action::ActionSpecifier::RequestHeaders(h)) => {
            assert_eq!(
                (h.header_name.as_str(), h.descriptor_key.as_str()),
                ("x-user", "user")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(api.rate_limits[0].stage, None);
    assert_eq!(api.rate_limits[1].stage.map(|s| s.value), Some(1));
    let local: LocalRateLimit = typed(&manager, "envoy.filters.http.local_ratelimit");
    assert_eq!(local.stage, 1);
    assert_eq!(local.token_bucket, None, "unlimited routes match no bucket");
    assert_eq!(local.descriptors.len(), 1);
    assert_eq!(local.descriptors[0].entries[0].value, "default/api");
    assert_eq!(
        local.descriptors[0]
            .token_bucket
            .as_ref()
            .map(|b| b.max_tokens),
        Some(5)
    );
    // One per-filter entry per route (see route_policy::PerFilter): CORS on api,
    // ext_authz off on health.
    let api_route = route(&resources, "default/api");
    let keys: Vec<&String> = api_route.typed_per_filter_config.keys().collect();
    assert_eq!(keys, ["envoy.filters.http.cors"]);
    let health = route(&resources, "default/health");
    let keys: Vec<&String> = health.typed_per_filter_config.keys().collect();
    assert_eq!(keys, ["envoy.filters.http.ext_authz"]);
}

#[test]
fn bypass_auth_with_cors_puts_cors_on_the_cluster_weight() {
    let yaml = [
        doc(
            "getambassador.io/v3alpha1",
            "AuthService",
            "auth",
            "auth_service: auth:3000",
        ),
        mapping_yaml(
            "login",
            "prefix: /login/\nservice: login\nbypass_auth: true\ncors:\n  origins: https://a.example.com",
        ),
    ]
    .concat();
    let resources = translate_yaml(&yaml);
    let login = route(&resources, "default/login");
    let keys: Vec<&String> = login.typed_per_filter_config.keys().collect();
    assert_eq!(keys, ["envoy.filters.http.ext_authz"]);
    let weighted: &Vec<weighted_cluster::ClusterWeight> = match &action(login).cluster_specifier {
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => &w.clusters,
        other => panic!("{other:?}"),
    };
    assert_eq!(weighted.len(), 1);
    let keys: Vec<&String> = weighted[0].typed_per_filter_config.keys().collect();
    assert_eq!(keys, ["envoy.filters.http.cors"]);
}

#[test]
fn module_defaults_apply_where_mappings_set_nothing() {
    let yaml = [
        doc(
            "getambassador.io/v3alpha1",
            "Module",
            "ambassador",
            "config:
  cluster_request_timeout_ms: 7000
  cluster_idle_timeout_ms: 20000
  retry_policy:
    retry_on: connect-failure
  circuit_breakers:
    - max_connections: 50
  load_balancer:
    policy: maglev
    source_ip: true
  use_remote_address: true
  xff_num_trusted_hops: 2
  max_request_headers_kb: 80
  buffer_limit_bytes: 32768",
        ),
        mapping_yaml("inherits", "prefix: /a/\nservice: a"),
        mapping_yaml(
            "overrides",
            "prefix: /b/
service: b
timeout_ms: 100
retry_policy:
  retry_on: 5xx
load_balancer:
  policy: round_robin",
        ),
    ]
    .concat();
    let resources = translate_yaml(&yaml);
    let inherits = action(route(&resources, "default/inherits"));
    assert_eq!(inherits.timeout.map(|d| d.seconds), Some(7));
    assert_eq!(
        inherits.retry_policy.as_ref().map(|r| r.retry_on.as_str()),
        Some("connect-failure")
    );
    assert!(matches!(
        inherits.hash_policy[0].policy_specifier,
        Some(route_action::hash_policy::PolicySpecifier::ConnectionProperties(_))
    ));
    let overrides = action(route(&resources, "default/overrides"));
    assert_eq!(overrides.timeout.map(|d| d.nanos), Some(100_000_000));
    assert_eq!(
        overrides.retry_policy.as_ref().map(|r| r.retry_on.as_str()),
        Some("5xx")
    );
    assert!(overrides.hash_policy.is_empty());
    let a = cluster_for(&resources, "cluster_a_default_p");
    assert_eq!(a.lb_policy, cluster::LbPolicy::Maglev as i32);
    assert_eq!(
        a.per_connection_buffer_limit_bytes.map(|v| v.value),
        Some(32768)
    );
    let b = cluster_for(&resources, "cluster_b_default_p");
    assert_eq!(b.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    // Breakers and the idle timeout come from the Module on both.
    for c in [a, b] {
        let breakers = c.circuit_breakers.as_ref().expect("module breakers");
        assert_eq!(
            breakers.thresholds[0].max_connections.map(|v| v.value),
            Some(50)
        );
    }
    let listener = listener_named(&resources, "listener_8080");
    assert_eq!(
        listener.per_connection_buffer_limit_bytes.map(|v| v.value),
        Some(32768)
    );
    let manager = hcm(listener);
    assert_eq!(manager.use_remote_address.map(|v| v.value), Some(true));
    assert_eq!(manager.xff_num_trusted_hops, 2);
    assert_eq!(manager.max_request_headers_kb.map(|v| v.value), Some(80));
}

#[test]
fn configs_without_policies_keep_the_bare_router_chain() {
    let resources = translate_yaml(&mapping_yaml("a", "prefix: /a/\nservice: a"));
    let manager = hcm(listener_named(&resources, "listener_8080"));
    assert_eq!(filter_names(&manager), ["envoy.filters.http.router"]);
    assert!(manager.access_log.is_empty() && manager.tracing.is_none());
    assert!(
        route(&resources, "default/a")
            .typed_per_filter_config
            .is_empty()
    );
}
