//! The generated repository of `generate.rs` with traffic policies (issue 7) on every
//! Mapping: what a gateway that uses them everywhere costs to load and translate.
//!
//! Each Mapping gets a retry policy, circuit breakers, CORS and rate-limit labels; every
//! fourth also outlier detection and every tenth ring-hash balancing. The repository adds
//! an AuthService, a RateLimitService, the `ambassador` Module with a JSON access log, and
//! LocalRateLimits covering one Mapping in ten.

use super::generate;

pub fn repo(mappings: usize) -> Vec<(String, String)> {
    let mut files = generate::repo(mappings);
    let mut limited: Vec<(String, String)> = Vec::new();
    for (_, text) in &mut files {
        let mut out = String::new();
        for (n, doc) in text.split("---\n").filter(|d| !d.is_empty()).enumerate() {
            out.push_str("---\n");
            out.push_str(doc);
            if !doc.contains("kind: Mapping") {
                continue;
            }
            out.push_str(&policies(n));
            if n.is_multiple_of(10) {
                let field = |key: &str| {
                    doc.lines()
                        .find_map(|l| l.trim().strip_prefix(key))
                        .unwrap_or_default()
                        .to_owned()
                };
                limited.push((field("namespace: "), field("name: ")));
            }
        }
        *text = out;
    }
    let mut gateway = String::from(
        "---\napiVersion: getambassador.io/v3alpha1\nkind: AuthService\nmetadata:\n  name: auth\n  namespace: gw\nspec:\n  auth_service: auth.gw:3000\n  proto: grpc\n\
         ---\napiVersion: getambassador.io/v3alpha1\nkind: RateLimitService\nmetadata:\n  name: rls\n  namespace: gw\nspec:\n  service: rls.gw:8081\n\
         ---\napiVersion: getambassador.io/v3alpha1\nkind: Module\nmetadata:\n  name: ambassador\n  namespace: gw\nspec:\n  config:\n    envoy_log_type: json\n    cluster_idle_timeout_ms: 30000\n",
    );
    for (i, (namespace, name)) in limited.iter().enumerate() {
        gateway.push_str(&format!(
            "---\napiVersion: attache.io/v1\nkind: LocalRateLimit\nmetadata:\n  name: limit-{i}\n  namespace: {namespace}\nspec:\n  mappings: [{name}]\n  max_tokens: 100\n  fill_interval: 1s\n"
        ));
    }
    files.push(("gateway.yaml".to_owned(), gateway));
    files
}

fn policies(n: usize) -> String {
    let mut spec = String::from(
        "  retry_policy:\n    retry_on: 5xx,connect-failure\n    num_retries: 2\n    per_try_timeout: 500ms\n\
         \x20 circuit_breakers:\n    - max_connections: 512\n      max_pending_requests: 128\n\
         \x20 cors:\n    origins: https://app.example.com,^https://[a-z]+\\.example\\.org$\n    methods: GET, POST\n    credentials: true\n\
         \x20 labels:\n    ambassador:\n      - per_user:\n          - generic_key:\n              value: api\n          - request_headers:\n              header_name: x-user\n              key: user\n",
    );
    if n.is_multiple_of(4) {
        spec.push_str(
            "  outlier_detection:\n    consecutive_5xx: 5\n    base_ejection_time_ms: 30000\n",
        );
    }
    if n.is_multiple_of(10) {
        spec.push_str("  load_balancer:\n    policy: ring_hash\n    header: x-user\n");
    }
    spec
}
