//! Rendering kustomize directories and reading what they render into k8s-openapi types,
//! strictly: unknown kinds, fields of the wrong type and unknown fields are refused, each
//! named with its path. Used by tests/deploy.rs.
//!
//! k8s-openapi itself ignores fields it does not know, so each object is serialized back
//! and compared with what was rendered: whatever got lost is a field the API server does
//! not know either (a typo such as `replicaz`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Probe, Secret, Service, ServiceAccount, Volume,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

// === rendering ===

/// kubectl: `$KUBECTL`, else the first `kubectl` on PATH. `None` (with a note) when there
/// is none; under CI a missing kubectl fails the test instead.
pub fn kubectl() -> Option<PathBuf> {
    let found = match std::env::var_os("KUBECTL") {
        Some(path) => Some(PathBuf::from(path)),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("kubectl"))
                .find(|candidate| candidate.is_file())
        }),
    };
    match found {
        Some(path) if path.is_file() => Some(path),
        _ if std::env::var_os("CI").is_some() => {
            panic!("no kubectl (set KUBECTL, or `apt-get install kubernetes-client`; .ci/run does)")
        }
        _ => {
            eprintln!("skipping: no kubectl on PATH and KUBECTL is not set");
            None
        }
    }
}

/// `kubectl kustomize DIR`: the multi-document YAML an operator would apply.
pub fn render(kubectl: &Path, dir: &Path) -> String {
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl.display()));
    if !output.status.success() {
        let version = Command::new(kubectl)
            .args(["version", "--client"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "`{} kustomize {}` failed ({}):\n{}",
            kubectl.display(),
            dir.display(),
            version.trim(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
}

// === strict typing ===

/// A rendered object, in its k8s-openapi type.
#[expect(
    clippy::large_enum_variant,
    reason = "a rendering holds a few dozen objects; boxing would buy nothing"
)]
pub enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Deployment(Deployment),
    Service(Service),
    ConfigMap(ConfigMap),
    Secret(Secret),
    PodDisruptionBudget(PodDisruptionBudget),
}

/// Reads every document of `yaml` into its typed object, or says what is wrong with each
/// one that does not fit: an unknown kind, a field of the wrong type, an unknown field.
pub fn parse_strict(yaml: &str) -> Result<Vec<Object>, Vec<String>> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| vec![format!("not YAML: {e}")])?;
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for (index, doc) in docs.iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        match typed(doc) {
            Ok(object) => objects.push(object),
            Err(errors) => problems.extend(
                errors
                    .into_iter()
                    .map(|e| format!("document {index} ({}): {e}", describe(doc))),
            ),
        }
    }
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(problems)
    }
}

/// `Kind namespace/name` of an untyped object, for messages.
pub fn describe(doc: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let metadata = &doc["metadata"];
    match metadata.get("namespace") {
        Some(ns) => format!(
            "{} {}/{}",
            text(&doc["kind"]),
            text(ns),
            text(&metadata["name"])
        ),
        None => format!("{} {}", text(&doc["kind"]), text(&metadata["name"])),
    }
}

pub fn typed(doc: &Value) -> Result<Object, Vec<String>> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    Ok(match (api_version, kind) {
        ("v1", "Namespace") => Object::Namespace(strict(doc)?),
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(doc)?),
        ("v1", "Service") => Object::Service(strict(doc)?),
        ("v1", "ConfigMap") => Object::ConfigMap(strict(doc)?),
        ("v1", "Secret") => Object::Secret(strict(&unwrap_secret_data(doc))?),
        ("apps/v1", "Deployment") => Object::Deployment(strict(doc)?),
        ("policy/v1", "PodDisruptionBudget") => Object::PodDisruptionBudget(strict(doc)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Object::ClusterRole(strict(doc)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(strict(doc)?)
        }
        _ => {
            return Err(vec![format!(
                "apiVersion {api_version:?} kind {kind:?} is not checked: add its \
                 k8s-openapi type to `typed` in tests/deploy.rs"
            )]);
        }
    })
}

/// `doc` with line breaks taken out of its `data` values. kustomize v5 wraps long base64
/// values over lines; the API server decodes them with Go's base64, which skips line
/// breaks, while k8s-openapi's decoder refuses them.
pub fn unwrap_secret_data(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(data) = doc.get_mut("data").and_then(Value::as_object_mut) {
        for value in data.values_mut() {
            if let Some(text) = value.as_str() {
                *value = Value::String(text.replace(['\n', '\r'], ""));
            }
        }
    }
    doc
}

/// Deserializes `doc` as a `T` and refuses it when anything of `doc` does not survive the
/// trip back to JSON: that is a field `T` (and so the API server) does not know.
pub fn strict<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, Vec<String>> {
    let typed: T = serde_path_to_error::deserialize(doc)
        .map_err(|e| vec![format!("{}: {}", e.path(), e.inner())])?;
    let back = serde_json::to_value(&typed).map_err(|e| vec![format!("serializing back: {e}")])?;
    let mut lost = Vec::new();
    compare(doc, &back, "", &mut lost);
    if lost.is_empty() {
        Ok(typed)
    } else {
        Err(lost)
    }
}

/// Records every part of `rendered` that `typed` lacks or holds differently, by path
/// (`spec.template.spec.containers[attache].readinesProbe`).
pub fn compare(rendered: &Value, typed: &Value, path: &str, lost: &mut Vec<String>) {
    match (rendered, typed) {
        (Value::Object(fields), Value::Object(kept)) => {
            for (key, value) in fields {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match kept.get(key) {
                    Some(back) => compare(value, back, &here, lost),
                    None => lost.push(format!(
                        "{here}: unknown field (not in the Kubernetes schema; a typo?)"
                    )),
                }
            }
        }
        (Value::Array(items), Value::Array(kept)) if items.len() == kept.len() => {
            for (index, (item, back)) in items.iter().zip(kept).enumerate() {
                let label = match item.get("name").and_then(Value::as_str) {
                    Some(name) => name.to_owned(),
                    None => index.to_string(),
                };
                compare(item, back, &format!("{path}[{label}]"), lost);
            }
        }
        _ if rendered == typed => {}
        _ => lost.push(format!("{path}: {rendered} reads back as {typed}")),
    }
}

// === the rendered objects ===

/// One rendered overlay, typed.
pub struct Rendered {
    /// The overlay, relative to the crate (for messages).
    pub name: String,
    pub objects: Vec<Object>,
}

impl Rendered {
    /// Renders `dir` and types every object; panics listing every problem.
    pub fn of(kubectl: &Path, dir: &Path) -> Rendered {
        let name = dir
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(dir)
            .display()
            .to_string();
        let yaml = render(kubectl, dir);
        match parse_strict(&yaml) {
            Ok(objects) => Rendered { name, objects },
            Err(problems) => panic!(
                "{name} renders objects Kubernetes would not accept as written:\n  {}",
                problems.join("\n  ")
            ),
        }
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.objects.iter().filter_map(|o| match o {
            Object::Deployment(d) => Some(d),
            _ => None,
        })
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.objects.iter().filter_map(|o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        })
    }

    pub fn deployment(&self, name: &str) -> &Deployment {
        self.deployments()
            .find(|d| d.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no Deployment {name}", self.name))
    }

    pub fn service(&self, name: &str) -> &Service {
        self.services()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no Service {name}", self.name))
    }

    pub fn config_map(&self, name: &str) -> &ConfigMap {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::ConfigMap(c) if c.metadata.name.as_deref() == Some(name) => Some(c),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{}: no ConfigMap {name}", self.name))
    }

    pub fn secret(&self, name: &str) -> &Secret {
        self.objects
            .iter()
            .find_map(|o| match o {
                Object::Secret(s) if s.metadata.name.as_deref() == Some(name) => Some(s),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{}: no Secret {name}", self.name))
    }

    /// `(name, namespace)` of every object of a namespaced kind.
    pub fn namespaces(&self) -> Vec<(String, Option<String>)> {
        self.objects
            .iter()
            .filter_map(|o| {
                let meta = match o {
                    Object::ServiceAccount(x) => &x.metadata,
                    Object::Deployment(x) => &x.metadata,
                    Object::Service(x) => &x.metadata,
                    Object::ConfigMap(x) => &x.metadata,
                    Object::Secret(x) => &x.metadata,
                    Object::PodDisruptionBudget(x) => &x.metadata,
                    Object::Namespace(_)
                    | Object::ClusterRole(_)
                    | Object::ClusterRoleBinding(_) => return None,
                };
                Some((
                    meta.name.clone().unwrap_or_default(),
                    meta.namespace.clone(),
                ))
            })
            .collect()
    }
}

pub fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .template
        .spec
        .as_ref()
        .expect("a Deployment has a pod spec")
}

pub fn pod_labels(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

pub fn container<'a>(deployment: &'a Deployment, name: &str) -> &'a Container {
    pod_spec(deployment)
        .containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name} in {:?}", deployment.metadata.name))
}

/// The number a container port (by number or name) stands for.
pub fn port_number(container: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .unwrap_or_else(|| panic!("container {} has no port named {name}", container.name)),
    }
}

/// An HTTP GET probe as `(path, port)`.
pub fn http_probe(container: &Container, probe: Option<&Probe>, which: &str) -> (String, i32) {
    let get = probe
        .and_then(|p| p.http_get.as_ref())
        .unwrap_or_else(|| panic!("container {} has no HTTP {which} probe", container.name));
    (
        get.path.clone().unwrap_or_default(),
        port_number(container, &get.port),
    )
}

/// `serve`'s `--name=value` arguments as a map; any other form is refused, so an overlay's
/// appended flag cannot silently swallow the next argument.
pub fn serve_flags(container: &Container) -> BTreeMap<String, String> {
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(
        args.first().map(String::as_str),
        Some("serve"),
        "attache's args start with the subcommand: {args:?}"
    );
    let mut flags = BTreeMap::new();
    for arg in &args[1..] {
        let (name, value) = arg
            .split_once('=')
            .filter(|(name, _)| name.starts_with("--"))
            .unwrap_or_else(|| panic!("attache arg {arg:?} is not --name=value"));
        let previous = flags.insert(name.to_owned(), value.to_owned());
        assert!(previous.is_none(), "attache arg {name} given twice");
    }
    flags
}

/// Where an absolute path inside `container` comes from: the volume mounted at the
/// longest prefix of it, and the rest of the path below that mount.
pub fn mounted<'a>(spec: &'a PodSpec, container: &Container, path: &str) -> (&'a Volume, String) {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| {
            path == m.mount_path
                || path.starts_with(&format!("{}/", m.mount_path.trim_end_matches('/')))
        })
        .max_by_key(|m| m.mount_path.len())
        .unwrap_or_else(|| panic!("{path} is on no volume of container {}", container.name));
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("volumeMount {} names no volume", mount.name));
    let rest = path[mount.mount_path.len()..].trim_start_matches('/');
    (volume, rest.to_owned())
}
