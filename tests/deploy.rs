//! Issue 8: the Kubernetes manifests in deploy/.
//!
//! Each overlay is rendered the way an operator applies it (`kubectl kustomize`), and every
//! object is read into its k8s-openapi struct with unknown fields refused. k8s-openapi
//! itself ignores fields it does not know, so each object is serialized back and compared
//! with what was rendered: whatever got lost is a field Kubernetes does not know either (a
//! typo such as `replicaz`), reported with its path. Then the properties the issue asks for
//! are checked on the typed objects, and what mirrors the code is checked against the built
//! binary (the Envoy bootstrap, the `serve` flags, the gateway YAML), so the manifests
//! cannot drift from it. Last, the Dockerfile's runtime packages are held to what `ldd`
//! says the binary links.
//!
//! The renderer is `$KUBECTL`, else `kubectl` on PATH. kubectl 1.32 (kustomize v5) and
//! Debian bookworm's kubectl 1.20 (kustomize v2.0.3) both render deploy/: the
//! kustomizations only use fields both know. Without kubectl these tests skip, except under
//! CI (`CI` set), where they fail.

mod kustomize_util;
mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kustomize_util::{
    Object, Rendered, container, http_probe, kubectl, mounted, parse_strict, pod_labels, pod_spec,
    port_number, render, serve_flags,
};
use serde_json::Value;

/// The namespace deploy/base puts everything in.
const NAMESPACE: &str = "attache";

/// The `attache bootstrap` arguments deploy/base/envoy/bootstrap.yaml was made with (see
/// deploy/base/kustomization.yaml), apart from the xDS address: that is read from the
/// ConfigMap and checked against the rendered attache-xds Service.
const BOOTSTRAP_ARGS: &[&str] = &[
    "--node-id",
    "envoy",
    "--cluster",
    "envoy",
    "--delta",
    "--admin-port",
    "9901",
];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// === checks every rendering must pass ===

/// What the issue asks of deploy/base, whatever the overlay.
fn check_base(r: &Rendered) -> AttacheArgs {
    // Everything namespaced lives in the attache namespace, which exists.
    for (name, namespace) in r.namespaces() {
        assert_eq!(
            namespace.as_deref(),
            Some(NAMESPACE),
            "{}: {name} is not in namespace {NAMESPACE}",
            r.name
        );
    }
    let namespace = r
        .objects
        .iter()
        .find_map(|o| match o {
            Object::Namespace(n) => Some(n),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{}: no Namespace", r.name));
    assert_eq!(namespace.metadata.name.as_deref(), Some(NAMESPACE));
    // The API server then refuses any pod that is not hardened like the ones checked here.
    let labels = namespace.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted"),
        "{}",
        r.name
    );
    check_rbac(r);
    for deployment in r.deployments() {
        check_pod_hardening(deployment);
        check_volume_references(r, deployment);
    }
    check_selectors(r);
    let envoy = check_envoy(r);
    let attache = check_attache(r);
    assert_eq!(
        envoy, attache.xds_service,
        "{}: Envoy's bootstrap must point at the attache-xds Service",
        r.name
    );
    attache
}

/// Read-only access to Services and EndpointSlices, nothing else, bound to attache's
/// ServiceAccount.
fn check_rbac(r: &Rendered) {
    let mut roles = r.objects.iter().filter_map(|o| match o {
        Object::ClusterRole(role) => Some(role),
        _ => None,
    });
    let role = roles.next().expect("a ClusterRole");
    assert!(roles.next().is_none(), "{}: one ClusterRole only", r.name);
    let mut grants = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{}: unexpected rule {rule:?}",
            r.name
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                let mut verbs = rule.verbs.clone();
                verbs.sort();
                grants.insert((group.clone(), resource.clone(), verbs));
            }
        }
    }
    let reads = vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()];
    assert_eq!(
        grants,
        BTreeSet::from([
            (String::new(), "services".to_owned(), reads.clone()),
            (
                "discovery.k8s.io".to_owned(),
                "endpointslices".to_owned(),
                reads
            ),
        ]),
        "{}: attache may only read Services and EndpointSlices",
        r.name
    );
    let binding = r
        .objects
        .iter()
        .find_map(|o| match o {
            Object::ClusterRoleBinding(b) => Some(b),
            _ => None,
        })
        .expect("a ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects: Vec<_> = binding
        .subjects
        .iter()
        .flatten()
        .map(|s| (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()))
        .collect();
    assert_eq!(
        subjects,
        [("ServiceAccount", "attache", Some(NAMESPACE))],
        "{}",
        r.name
    );
    assert!(r.objects.iter().any(|o| matches!(o,
        Object::ServiceAccount(sa) if sa.metadata.name.as_deref() == Some("attache"))));
}

/// Non-root, read-only root filesystem, no privilege escalation or capabilities, seccomp,
/// requests and a memory limit: for every container of every Deployment.
fn check_pod_hardening(deployment: &Deployment) {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let spec = pod_spec(deployment);
    let pod = spec
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("Deployment {name}: no pod securityContext"));
    assert_eq!(pod.run_as_non_root, Some(true), "Deployment {name}");
    assert!(
        pod.run_as_user.is_some_and(|uid| uid != 0),
        "Deployment {name}: a non-root runAsUser"
    );
    assert_eq!(
        pod.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "Deployment {name}"
    );
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let context = c
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("{name}/{}: no securityContext", c.name));
        assert_eq!(
            context.read_only_root_filesystem,
            Some(true),
            "{name}/{}",
            c.name
        );
        assert_eq!(
            context.allow_privilege_escalation,
            Some(false),
            "{name}/{}",
            c.name
        );
        assert_ne!(context.privileged, Some(true), "{name}/{}", c.name);
        assert_eq!(
            context.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()]),
            "{name}/{}",
            c.name
        );
        assert!(
            context
                .capabilities
                .as_ref()
                .is_none_or(|c| c.add.is_none()),
            "{name}/{}: no capabilities added",
            c.name
        );
        let resources = c
            .resources
            .as_ref()
            .unwrap_or_else(|| panic!("{name}/{}: no resources", c.name));
        let requests = resources.requests.clone().unwrap_or_default();
        assert!(
            requests.contains_key("cpu") && requests.contains_key("memory"),
            "{name}/{}: cpu and memory requests",
            c.name
        );
        let limits = resources.limits.clone().unwrap_or_default();
        assert!(
            limits.contains_key("memory"),
            "{name}/{}: a memory limit",
            c.name
        );
    }
}

/// Every mount names a volume, and every ConfigMap or Secret a volume names is rendered
/// (generated names carry a hash suffix, which kustomize must have carried over).
fn check_volume_references(r: &Rendered, deployment: &Deployment) {
    let spec = pod_spec(deployment);
    let volumes: BTreeSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for c in &spec.containers {
        for mount in c.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(mount.name.as_str()),
                "{}: {}/{} mounts unknown volume {}",
                r.name,
                deployment.metadata.name.as_deref().unwrap_or_default(),
                c.name,
                mount.name
            );
        }
    }
    for volume in spec.volumes.iter().flatten() {
        if let Some(cm) = &volume.config_map {
            r.config_map(&cm.name);
        }
        if let Some(secret) = &volume.secret {
            r.secret(secret.secret_name.as_deref().expect("a secret name"));
        }
    }
}

/// Every Service and PodDisruptionBudget selects the pods of exactly one Deployment, and a
/// Service's target ports are ports those pods have.
fn check_selectors(r: &Rendered) {
    let selects = |selector: &BTreeMap<String, String>| -> Vec<&Deployment> {
        r.deployments()
            .filter(|d| {
                let labels = pod_labels(d);
                !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect()
    };
    for service in r.services() {
        let name = service.metadata.name.clone().unwrap_or_default();
        let spec = service.spec.as_ref().expect("a Service has a spec");
        let selected = selects(spec.selector.as_ref().expect("a selector"));
        assert_eq!(
            selected.len(),
            1,
            "{}: Service {name} selects one Deployment",
            r.name
        );
        let pods = pod_spec(selected[0]);
        for port in spec.ports.iter().flatten() {
            let target = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            assert!(
                pods.containers
                    .iter()
                    .any(|c| c.ports.iter().flatten().any(|p| match &target {
                        IntOrString::Int(n) => p.container_port == *n,
                        IntOrString::String(s) => p.name.as_deref() == Some(s),
                    })),
                "{}: Service {name} port {} targets {target:?}, which no container has",
                r.name,
                port.port
            );
        }
    }
    for object in &r.objects {
        if let Object::PodDisruptionBudget(pdb) = object {
            let selector = pdb
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|s| s.match_labels.clone())
                .unwrap_or_default();
            assert_eq!(
                selects(&selector).len(),
                1,
                "{}: PodDisruptionBudget {:?} selects one Deployment",
                r.name,
                pdb.metadata.name
            );
        }
    }
}

/// What the attache Deployment's checks found, for the overlay checks.
#[derive(Debug)]
struct AttacheArgs {
    flags: BTreeMap<String, String>,
    /// `host:port` of the attache-xds Service, as Envoy resolves it.
    xds_service: String,
}

impl AttacheArgs {
    fn flag(&self, name: &str) -> &str {
        self.flags
            .get(name)
            .unwrap_or_else(|| panic!("attache runs without {name}: {:?}", self.flags))
    }
}

/// Two replicas, probes, the state dir on an emptyDir, every flag one `attache serve`
/// knows, and Services on the ports attache listens on.
fn check_attache(r: &Rendered) -> AttacheArgs {
    let deployment = r.deployment("attache");
    assert_eq!(
        deployment.spec.replicas,
        Some(2),
        "{}: two attache replicas",
        r.name
    );
    let spec = pod_spec(deployment);
    assert_eq!(spec.service_account_name.as_deref(), Some("attache"));
    let c = container(deployment, "attache");
    assert_eq!(
        c.image.as_deref(),
        Some(format!("attache:{}", env!("CARGO_PKG_VERSION")).as_str()),
        "the image tag is the crate version"
    );
    let flags = serve_flags(c);
    let help = run_attache(&["serve", "--help"]);
    for name in flags.keys() {
        assert!(
            help.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-'))
                .any(|word| word == name),
            "{}: `attache serve` has no flag {name}",
            r.name
        );
    }
    let addr = |flag: &str| -> SocketAddr {
        flags
            .get(flag)
            .unwrap_or_else(|| panic!("{}: attache runs without {flag}", r.name))
            .parse()
            .unwrap_or_else(|e| panic!("{flag}: {e}"))
    };
    let (admin, xds) = (addr("--admin-addr"), addr("--xds-addr"));
    // The kubelet probes the pod's address, so loopback would fail every probe.
    assert!(admin.ip().is_unspecified() && xds.ip().is_unspecified());
    assert_eq!(
        http_probe(c, c.readiness_probe.as_ref(), "readiness"),
        ("/readyz".to_owned(), i32::from(admin.port()))
    );
    assert_eq!(
        http_probe(c, c.liveness_probe.as_ref(), "liveness"),
        ("/healthz".to_owned(), i32::from(admin.port()))
    );
    if let Some(startup) = &c.startup_probe {
        assert_eq!(
            http_probe(c, Some(startup), "startup"),
            ("/healthz".to_owned(), i32::from(admin.port()))
        );
    }
    assert_eq!(
        flags.get("--endpoints").map(String::as_str),
        Some("kubernetes")
    );
    let state_dir = flags
        .get("--state-dir")
        .unwrap_or_else(|| panic!("{}: attache runs without --state-dir", r.name));
    let (state, _) = mounted(spec, c, state_dir);
    assert!(
        state.empty_dir.is_some(),
        "{}: the state dir is on volume {}, not an emptyDir",
        r.name,
        state.name
    );
    let service_port = |service: &str, port: u16| -> i32 {
        let s = r.service(service);
        let ports = s
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        let found = ports
            .iter()
            .find(|p| {
                p.target_port
                    .as_ref()
                    .is_some_and(|t| port_number(c, t) == i32::from(port))
            })
            .unwrap_or_else(|| panic!("{}: Service {service} does not reach port {port}", r.name));
        found.port
    };
    service_port("attache-admin", admin.port());
    let xds_port = service_port("attache-xds", xds.port());
    assert_eq!(
        r.service("attache-xds")
            .spec
            .as_ref()
            .and_then(|s| s.type_.as_deref()),
        Some("ClusterIP")
    );
    AttacheArgs {
        flags,
        xds_service: format!("attache-xds.{NAMESPACE}.svc.cluster.local:{xds_port}"),
    }
}

/// The Envoy fleet: its bootstrap is what `attache bootstrap` prints, Envoy accepts it,
/// each pod is its own node, and a LoadBalancer Service reaches its ports. Returns the xDS
/// address the bootstrap points at.
fn check_envoy(r: &Rendered) -> String {
    let deployment = r.deployment("envoy");
    let spec = pod_spec(deployment);
    let c = container(deployment, "envoy");
    let args = c.args.clone().unwrap_or_default();
    let after = |flag: &str| -> &str {
        let at = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{}: envoy runs without {flag}: {args:?}", r.name));
        args.get(at + 1).map(String::as_str).unwrap_or_default()
    };
    // The node id comes from the downward API: one node per pod.
    assert_eq!(after("--service-node"), "$(POD_NAME)");
    let pod_name = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_NAME")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(pod_name, Some("metadata.name"));
    assert!(
        c.readiness_probe.is_some(),
        "{}: envoy has a readiness probe",
        r.name
    );

    let (volume, key) = mounted(spec, c, after("-c"));
    let config_map = volume
        .config_map
        .as_ref()
        .unwrap_or_else(|| panic!("{}: envoy's bootstrap is not from a ConfigMap", r.name));
    // Generated with a content hash in the name, so a new bootstrap rolls the Envoy pods.
    assert!(
        config_map.name.starts_with("envoy-bootstrap-"),
        "{}: {}",
        r.name,
        config_map.name
    );
    let data = r
        .config_map(&config_map.name)
        .data
        .clone()
        .unwrap_or_default();
    let text = data
        .get(&key)
        .unwrap_or_else(|| panic!("{}: ConfigMap {} has no key {key}", r.name, config_map.name));
    let in_manifest: Value = serde_saphyr::from_str(text).expect("the bootstrap is YAML");
    let xds = in_manifest["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
        ["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        .clone();
    let xds_address = format!(
        "{}:{}",
        xds["address"].as_str().unwrap_or_default(),
        xds["port_value"]
    );
    let mut args: Vec<&str> = vec![
        "bootstrap",
        "--format",
        "json",
        "--xds-address",
        &xds_address,
    ];
    args.extend(BOOTSTRAP_ARGS);
    let printed: Value =
        serde_json::from_str(&run_attache(&args)).expect("`attache bootstrap` prints JSON");
    assert!(
        in_manifest == printed,
        "{}: deploy/base/envoy/bootstrap.yaml is not what `attache {}` prints; regenerate it \
         (deploy/base/kustomization.yaml says how).\nin the manifest: {in_manifest:#}\nprinted: {printed:#}",
        r.name,
        args.join(" ")
    );
    if let Some(envoy) = util::envoy_binary() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("bootstrap.yaml");
        std::fs::write(&path, text).expect("writing the bootstrap");
        util::envoy_validate(&envoy, &path).unwrap_or_else(|e| panic!("{}: {e}", r.name));
    }

    let service = r.service("envoy");
    let service_spec = service.spec.as_ref().expect("a spec");
    assert_eq!(service_spec.type_.as_deref(), Some("LoadBalancer"));
    let listeners: BTreeSet<i32> = service_spec
        .ports
        .iter()
        .flatten()
        .map(|p| port_number(c, p.target_port.as_ref().expect("a targetPort")))
        .collect();
    // Emissary's (and attache's) default listeners.
    assert_eq!(listeners, BTreeSet::from([8080, 8443]));
    xds_address
}

/// Runs the built attache; its stdout. Panics with stderr when it fails.
fn run_attache(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_attache"))
        .args(args)
        .output()
        .expect("running attache");
    assert!(
        output.status.success(),
        "attache {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("attache prints UTF-8")
}

// === the overlays ===

/// Issue 8: the git overlay clones over SSH with a key and known_hosts from a Secret, and
/// takes webhooks signed with a secret from it.
#[test]
fn git_overlay_renders_typed_objects_that_run_attache_on_a_git_remote() {
    let Some(kubectl) = kubectl() else { return };
    let r = Rendered::of(&kubectl, &crate_dir().join("deploy/overlays/git"));
    let attache = check_base(&r);
    let url = attache.flag("--git");
    assert!(url.starts_with("ssh://"), "{url}");
    let deployment = r.deployment("attache");
    let spec = pod_spec(deployment);
    let c = container(deployment, "attache");
    let mut keys = BTreeSet::new();
    for flag in ["--ssh-key", "--known-hosts", "--webhook-secret-file"] {
        let path = attache.flag(flag);
        let (volume, key) = mounted(spec, c, path);
        let secret = volume
            .secret
            .as_ref()
            .unwrap_or_else(|| panic!("{flag} {path} is not on a Secret volume"));
        let name = secret.secret_name.as_deref().unwrap_or_default();
        assert!(name.starts_with("attache-git"), "{name}");
        let data = r.secret(name).data.clone().unwrap_or_default();
        assert!(
            data.contains_key(&key),
            "{flag} {path}: Secret {name} has no key {key}"
        );
        keys.insert((name.to_owned(), key));
    }
    // One Secret, readable by attache's group only.
    let names: BTreeSet<&String> = keys.iter().map(|(name, _)| name).collect();
    assert_eq!(names.len(), 1);
    let secret_volume = spec
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.secret.as_ref())
        .expect("the Secret volume");
    assert_eq!(secret_volume.default_mode, Some(0o440));

    // Every host key line is one attache accepts (a skipped line would refuse the host).
    let secret = r.secret(names.into_iter().next().expect("one name"));
    let known_hosts = secret.data.as_ref().expect("data")["known_hosts"].0.clone();
    let text = String::from_utf8(known_hosts).expect("known_hosts is text");
    let known = attache::source::known_hosts::KnownHosts::parse(&text);
    let mut lines = 0;
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, fields[2])
            .expect("base64 key");
        known
            .check(fields[0], 22, fields[1], &key)
            .unwrap_or_else(|e| panic!("known_hosts line {line:?}: {e}"));
        lines += 1;
    }
    assert!(lines >= 1, "known_hosts lists no host key");
}

/// Issue 8: the configmap overlay mounts a ConfigMap of every file in its gateway/
/// directory as attache's --dir, and that configuration validates.
#[test]
fn configmap_overlay_renders_typed_objects_that_serve_its_gateway_directory() {
    let Some(kubectl) = kubectl() else { return };
    let overlay = crate_dir().join("deploy/overlays/configmap");
    let r = Rendered::of(&kubectl, &overlay);
    let attache = check_base(&r);
    let deployment = r.deployment("attache");
    let (volume, rest) = mounted(
        pod_spec(deployment),
        container(deployment, "attache"),
        attache.flag("--dir"),
    );
    assert_eq!(rest, "", "--dir is the mount point itself");
    let name = &volume
        .config_map
        .as_ref()
        .unwrap_or_else(|| panic!("--dir is not on a ConfigMap volume"))
        .name;
    let data = r.config_map(name).data.clone().unwrap_or_default();

    // Every file of gateway/ is in the ConfigMap (kustomize v2 needs each listed), as is.
    let gateway = overlay.join("gateway");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&gateway).expect("deploy/overlays/configmap/gateway") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        files.insert(name, std::fs::read_to_string(&path).expect("a text file"));
    }
    assert_eq!(
        data,
        files,
        "the ConfigMap must hold exactly the files in {}",
        gateway.display()
    );

    // What attache will read from the mount validates.
    let dir = tempfile::tempdir().expect("a temp dir");
    for (name, text) in &data {
        std::fs::write(dir.path().join(name), text).expect("writing a gateway file");
    }
    let out = run_attache(&["validate", dir.path().to_str().expect("a UTF-8 path")]);
    assert!(out.contains("revision accepted"), "{out}");
}

/// Issue 8: both overlays share the base, and the base alone renders into typed objects
/// too (what the overlays build on).
#[test]
fn base_renders_typed_objects() {
    let Some(kubectl) = kubectl() else { return };
    let r = Rendered::of(&kubectl, &crate_dir().join("deploy/base"));
    check_rbac(&r);
    check_selectors(&r);
    check_envoy(&r);
    for deployment in r.deployments() {
        check_pod_hardening(deployment);
        check_volume_references(&r, deployment);
    }
}

// === typos are caught ===

/// Issue 8: a misspelt field in a patch (kustomize passes it through untouched) fails,
/// naming the field and where it is.
#[test]
fn a_typo_in_an_overlay_is_reported_with_its_path() {
    let Some(kubectl) = kubectl() else { return };
    // A copy of the base next to the overlay: kustomize v5 refuses an absolute base path.
    let dir = tempfile::tempdir().expect("a temp dir");
    copy_dir(&crate_dir().join("deploy/base"), &dir.path().join("base"));
    let overlay = dir.path().join("typo");
    std::fs::create_dir(&overlay).expect("creating the overlay dir");
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nbases:\n  - ../base\n\
         patchesStrategicMerge:\n  - typo.yaml\n",
    )
    .expect("writing the kustomization");
    std::fs::write(
        overlay.join("typo.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: attache\n  namespace: attache\n\
         spec:\n  replicaz: 3\n  template:\n    spec:\n      containers:\n        - name: attache\n\
         \x20         readinesProbe:\n            httpGet:\n              path: /readyz\n              port: 8877\n",
    )
    .expect("writing the patch");
    let yaml = render(&kubectl, &overlay);
    let Err(problems) = parse_strict(&yaml) else {
        panic!("the typos were not caught")
    };
    let text = problems.join("\n");
    assert!(
        text.contains("Deployment attache/attache): spec.replicaz: unknown field"),
        "{text}"
    );
    assert!(
        text.contains("spec.template.spec.containers[attache].readinesProbe: unknown field"),
        "{text}"
    );
    assert_eq!(problems.len(), 2, "only the two typos: {text}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating a directory");
    for entry in std::fs::read_dir(from).expect("reading a directory") {
        let path = entry.expect("a directory entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copying a file");
        }
    }
}

/// The strict reading on its own, without kubectl: unknown fields, wrong types and
/// unknown kinds are each refused with where they are; a correct object passes.
#[test]
fn strict_typing_refuses_unknown_fields_wrong_types_and_unknown_kinds() {
    let good = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: attache\n\
                spec:\n  selector:\n    app: web\n  ports:\n    - name: http\n      port: 80\n      targetPort: http\n";
    assert!(parse_strict(good).is_ok());

    let typo = good.replace("targetPort: http", "targetPrt: http");
    assert_eq!(
        parse_strict(&typo).err(),
        Some(vec![
            "document 0 (Service attache/web): spec.ports[http].targetPrt: unknown field (not \
             in the Kubernetes schema; a typo?)"
                .to_owned()
        ])
    );

    let wrong_type = good.replace("port: 80", "port: eighty");
    let problems = parse_strict(&wrong_type).err().expect("refused");
    assert!(
        problems.len() == 1 && problems[0].contains("spec.ports[0].port: invalid type"),
        "{problems:?}"
    );

    let unknown_kind = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n";
    let problems = parse_strict(unknown_kind).err().expect("refused");
    assert!(
        problems[0].contains("kind \"Ingress\" is not checked"),
        "{problems:?}"
    );

    // Misspelt metadata, e.g. a label map put one level too high, is refused as well.
    let misplaced = good.replace(
        "  namespace: attache\n",
        "  namespace: attache\nlabels:\n  a: b\n",
    );
    assert!(
        parse_strict(&misplaced)
            .err()
            .is_some_and(|p| p.len() == 1 && p[0].contains("): labels: unknown field")),
    );
}

// === the image ===

/// Issue 8: the Dockerfile's runtime stage installs the Debian package of every shared
/// library the binary links (the image cannot be built on a machine without a Docker
/// engine, so its library list is held to `ldd` here), on the same Debian release as the
/// build stage.
#[test]
fn the_runtime_image_installs_every_shared_library_the_binary_links() {
    let dockerfile =
        std::fs::read_to_string(crate_dir().join("Dockerfile")).expect("reading the Dockerfile");
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    assert_eq!(stages.len(), 2, "a build and a runtime stage");
    let image = |stage: &str| {
        stage
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let (build, runtime) = (image(stages[0]), image(stages[1]));
    assert!(
        build.ends_with("-bookworm") && runtime == "debian:bookworm-slim",
        "both stages on Debian 12, so the libraries match: {build} -> {runtime}"
    );
    assert!(stages[0].contains("cargo build --release --locked --bin attache"));
    // The packages after `apt-get install` in the runtime stage, up to the end of the command.
    let runtime_stage = stages[1].replace("\\\n", " ");
    let installed: BTreeSet<&str> = runtime_stage
        .split("apt-get install")
        .skip(1)
        .flat_map(|rest| {
            rest.split("&&")
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .filter(|word| !word.starts_with('-'))
        })
        .collect();
    assert!(installed.contains("ca-certificates"), "{installed:?}");

    let (Ok(ldd), Ok(_)) = (
        Command::new("ldd")
            .arg(env!("CARGO_BIN_EXE_attache"))
            .output(),
        Command::new("dpkg").arg("--version").output(),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "ldd and dpkg are needed (CI runs on Debian)"
        );
        eprintln!("skipping: no ldd or dpkg (not a Debian machine)");
        return;
    };
    let libraries: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|line| line.split("=>").nth(1))
        .filter_map(|target| target.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(!libraries.is_empty(), "ldd listed no libraries");
    let mut missing = Vec::new();
    for library in &libraries {
        let package = debian_package(Path::new(library))
            .unwrap_or_else(|| panic!("no Debian package owns {library}"));
        // libc6 is in every Debian image.
        if package != "libc6" && !installed.contains(package.as_str()) {
            missing.push(format!("{library} ({package})"));
        }
    }
    assert!(
        missing.is_empty(),
        "the Dockerfile's runtime stage does not install: {missing:?}"
    );
}

/// The package owning `path`, asked as ldd printed it and as its canonical path (with
/// merged /usr, dpkg knows only one of /lib/... and /usr/lib/...).
fn debian_package(path: &Path) -> Option<String> {
    let canonical = std::fs::canonicalize(path).ok();
    let without_usr = canonical
        .as_ref()
        .and_then(|c| c.strip_prefix("/usr").ok())
        .map(|rest| Path::new("/").join(rest));
    [Some(path.to_owned()), canonical, without_usr]
        .into_iter()
        .flatten()
        .find_map(|candidate| {
            let output = Command::new("dpkg")
                .arg("-S")
                .arg(&candidate)
                .output()
                .ok()?;
            let text = String::from_utf8(output.stdout).ok()?;
            let line = text.lines().next()?;
            let package = line.split(':').next()?.trim();
            (output.status.success() && !package.is_empty()).then(|| package.to_owned())
        })
}
