//! Generated gateway repositories for benchmarks and load tools.
//!
//! The shape follows what a large platform team commits: a few dozen teams, each with its
//! own file of Mappings on a handful of Hosts, a mix of plain prefixes, header matches,
//! regex rewrites, weighted canaries and Kubernetes services. Deterministic (no RNG), so
//! two runs measure the same input.

/// One generated repository: files as (relative path, contents).
// Each bench and example that includes this file uses one of `repo` and `repo_in`.
#[allow(dead_code)]
pub fn repo(mappings: usize) -> Vec<(String, String)> {
    repo_in(mappings, 50)
}

/// Like [`repo`], the Mappings spread over `teams` files (issue 4's repository is 10k
/// Mappings in 100 files).
#[allow(dead_code)]
pub fn repo_in(mappings: usize, teams: usize) -> Vec<(String, String)> {
    const HOSTS: usize = 8;
    let teams = teams.max(1);
    let mut files = Vec::new();

    let mut hosts = String::new();
    for h in 0..HOSTS {
        hosts.push_str(&format!(
            "---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: host-{h}\n  namespace: gw\nspec:\n  hostname: svc{h}.example.com\n"
        ));
    }
    hosts.push_str(
        "---\napiVersion: getambassador.io/v3alpha1\nkind: Host\nmetadata:\n  name: fallback\n  namespace: gw\nspec:\n  hostname: \"*\"\n",
    );
    files.push(("hosts.yaml".to_owned(), hosts));

    let per_team = mappings.div_ceil(teams);
    let mut made = 0;
    for team in 0..teams {
        let mut text = String::new();
        for i in 0..per_team {
            if made == mappings {
                break;
            }
            text.push_str(&mapping(team, i, made % HOSTS));
            made += 1;
        }
        if !text.is_empty() {
            files.push((format!("teams/team-{team:02}/mappings.yaml"), text));
        }
    }
    files
}

fn mapping(team: usize, i: usize, host: usize) -> String {
    let name = format!("t{team}-m{i}");
    let head = format!(
        "---\napiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {name}\n  namespace: team-{team}\nspec:\n  hostname: svc{host}.example.com\n"
    );
    let body = match i % 5 {
        // A plain prefix to a Kubernetes service, with a timeout.
        0 => format!(
            "  prefix: /t{team}/api/{i}/\n  service: app-{i}.team-{team}:8080\n  timeout_ms: 5000\n"
        ),
        // Header and method match, response header added.
        1 => format!(
            "  prefix: /t{team}/api/{i}/\n  method: POST\n  headers:\n    x-tenant: tenant-{i}\n  service: app-{i}.team-{team}\n  add_response_headers:\n    x-team: team-{team}\n"
        ),
        // A regex rewrite to an external host:port.
        2 => format!(
            "  prefix: /t{team}/v{i}/\n  regex_rewrite:\n    pattern: \"^/t{team}/v{i}/(.*)$\"\n    substitution: \"/\\\\1\"\n  service: legacy-{i}.internal.example.net:8080\n"
        ),
        // Websocket upgrade with an idle timeout.
        3 => format!(
            "  prefix: /t{team}/ws/{i}/\n  allow_upgrade: [websocket]\n  idle_timeout_ms: 60000\n  service: ws-{i}.team-{team}:9000\n"
        ),
        // gRPC with a query-parameter match.
        _ => format!(
            "  prefix: /t{team}.Svc{i}/\n  grpc: true\n  query_parameters:\n    debug: \"1\"\n  service: grpc-{i}.team-{team}:50051\n"
        ),
    };
    head + &body
}
