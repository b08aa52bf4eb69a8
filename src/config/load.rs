//! Loading: files -> documents -> typed raw resources, in both of Emissary's forms.
//!
//! This stage decides *what* each document is (apiVersion, kind, CRD or flat form, or a
//! Kubernetes Service carrying resources in its `getambassador.io/config` annotation) and
//! decodes its spec. Whether the values make sense is `validate`'s job.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::AmbassadorId;
use super::diag::{Diagnostic, ResourceRef, Severity};
use super::model::{Kind, Origin};
use super::raw;
use super::yaml::{self, DecodeError, Limits, Node, Value};

/// One config file of a revision: its path relative to the config root and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// `/`-separated, relative to the config root.
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Reading the config directory itself failed. Individual bad files are diagnostics, not
/// errors: they never hide the rest of the revision.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The root is missing or unreadable. Retryable: a ConfigMap mount may appear later.
    #[error("cannot read config directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Every `*.yaml` / `*.yml` file below `root`, recursively, sorted by path. Entries whose
/// name starts with `.` are skipped: editors' temp files, `.git`, and the `..data`
/// directories of a mounted ConfigMap (whose files are reached through the top-level
/// symlinks instead). Files are read up to one byte past `limits.max_file_bytes`, so an
/// oversized file is reported without being loaded whole.
///
/// # Errors
///
/// [`Error::ReadDir`] when `root` (or a directory below it) cannot be listed.
pub fn read_dir(root: &Path, limits: &Limits) -> Result<(Vec<SourceFile>, Vec<Diagnostic>), Error> {
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    // Bounded: a symlink loop must not spin forever.
    let mut budget = 100_000usize;
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::ReadDir {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::ReadDir {
                path: dir.clone(),
                source,
            })?;
            budget = budget.saturating_sub(1);
            if budget == 0 {
                break;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let relative = relative_path(root, &path);
            // Follow symlinks: ConfigMap files are links into `..data/`.
            let Ok(meta) = std::fs::metadata(&path) else {
                diagnostics.push(file_diagnostic(
                    &relative,
                    "cannot read: broken link or no permission",
                ));
                continue;
            };
            if meta.is_dir() {
                pending.push(path);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                match read_bounded(&path, limits.max_file_bytes) {
                    Ok(bytes) => files.push(SourceFile {
                        path: relative,
                        bytes,
                    }),
                    Err(e) => {
                        diagnostics.push(file_diagnostic(&relative, &format!("cannot read: {e}")))
                    }
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((files, diagnostics))
}

fn read_bounded(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn relative_path(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn file_diagnostic(file: &str, message: &str) -> Diagnostic {
    Diagnostic {
        file: Arc::from(file),
        line: 0,
        column: 0,
        severity: Severity::Error,
        resource: None,
        field: String::new(),
        message: message.to_owned(),
    }
}

/// A decoded resource, not yet validated.
#[derive(Debug)]
pub struct Parsed {
    pub kind: Kind,
    pub name: String,
    pub namespace: String,
    pub origin: Origin,
    pub labels: std::collections::BTreeMap<String, String>,
    /// `spec.` for the CRD form, empty for the flat form: prefixes field paths.
    pub base: &'static str,
    /// Where the spec mapping starts (the document itself in the flat form): a missing
    /// required field is reported here.
    pub spec_at: (u32, u32),
    pub spec: Spec,
    /// The annotated Service's own `name.namespace`, the default `service` of Mappings
    /// declared in its annotation.
    pub default_service: Option<String>,
}

/// The decoded spec of each kind.
#[derive(Debug)]
pub enum Spec {
    Mapping(Box<raw::MappingSpec>),
    Host(raw::HostSpec),
    Listener(raw::ListenerSpec),
    TlsContext(raw::TlsContextSpec),
    Module(Box<raw::ModuleSpec>),
    AuthService(Box<raw::AuthServiceSpec>),
    RateLimitService(raw::RateLimitServiceSpec),
    TracingService(raw::TracingServiceSpec),
    LogService(raw::LogServiceSpec),
    LocalRateLimit(raw::LocalRateLimitSpec),
}

/// API groups whose kinds follow Emissary's model.
const EMISSARY_API_VERSIONS: &[&str] = &[
    "getambassador.io/v3alpha1",
    "getambassador.io/v2",
    "getambassador.io/v1",
    "ambassador/v0",
    "ambassador/v1",
    "ambassador/v2",
];

/// attache's own extensions, and the kinds they hold.
const ATTACHE_API_VERSION: &str = "attache.io/v1";
const ATTACHE_KINDS: &[&str] = &["LocalRateLimit"];

/// Emissary kinds we do not implement. Those that enforce something (Edge Stack's
/// filters, raw TCP routing) are errors: serving without them would silently open the
/// gateway. The rest only add discovery hints or a portal and are skipped with a
/// warning.
const UNSUPPORTED_ENFORCING: &[&str] = &["TCPMapping", "Filter", "FilterPolicy", "ExternalFilter"];
const UNSUPPORTED_ADVISORY: &[&str] = &[
    "KubernetesEndpointResolver",
    "KubernetesServiceResolver",
    "ConsulResolver",
    "DevPortal",
];

const KNOWN_KINDS: &[&str] = &[
    "Mapping",
    "Host",
    "Listener",
    "TLSContext",
    "Module",
    "AuthService",
    "RateLimitService",
    "TracingService",
    "LogService",
];

/// The annotation Emissary reads resources from.
pub const CONFIG_ANNOTATION: &str = "getambassador.io/config";

/// What one file parsed into: the resources that decoded and the problems found in it.
/// It depends on the file's path and bytes alone, which is what lets `config::Cache`
/// keep it for as long as the file does not change.
#[derive(Debug, Default)]
pub struct FileParse {
    pub parsed: Vec<Parsed>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses every document of every file, decoding the ones that are gateway resources
/// for `gateway`; one [`FileParse`] per file, in the order of `files`.
pub fn parse_each(
    files: &[&SourceFile],
    limits: &Limits,
    gateway: &AmbassadorId,
) -> Vec<FileParse> {
    let total: usize = files.iter().map(|f| f.bytes.len()).sum();
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_PARSE_THREADS)
        .min(files.len());
    if total < PARALLEL_FROM_BYTES || workers < 2 {
        return files
            .iter()
            .map(|f| parse_file(f, limits, gateway))
            .collect();
    }
    // Files are independent, so big revisions parse on every core. Each worker takes a
    // contiguous run of files of about equal size and results are joined in file order,
    // so the output does not depend on scheduling.
    let chunks = contiguous_chunks(files, workers, total);
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|f| parse_file(f, limits, gateway))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Kinds whose absence would let through traffic they exist to stop (see
/// `Outcome::is_accepted`): any error in a document of one of these kinds rejects the
/// revision even under `--allow-partial`. The unsupported ones are here too: a config
/// that relies on TCP routing or Edge Stack's filters must not be served without them.
pub(super) const ENFORCING_KINDS: &[&str] = &[
    "AuthService",
    "RateLimitService",
    "LocalRateLimit",
    "TCPMapping",
    "Filter",
    "FilterPolicy",
    "ExternalFilter",
];

/// Whether `kind` (as written, so in any case: `authservice` is a typo of an enforcing
/// kind, and leaving it out would open the gateway just the same) is an enforcing kind.
pub(super) fn is_enforcing(kind: &str) -> bool {
    ENFORCING_KINDS.iter().any(|k| k.eq_ignore_ascii_case(kind))
}

/// A file that cannot be parsed may have held an AuthService (or another enforcing kind):
/// say so as an error of that kind, so that `--allow-partial` does not serve the rest of
/// the revision without it. Mentioning the kind anywhere counts; a false alarm only
/// rejects a revision whose file is broken anyway.
fn unreadable_enforcing(file: &Arc<str>, bytes: &[u8], diagnostics: &mut Vec<Diagnostic>) {
    for kind in ENFORCING_KINDS {
        if bytes.windows(kind.len()).any(|w| w == kind.as_bytes()) {
            diagnostics.push(Diagnostic {
                file: file.clone(),
                line: 0,
                column: 0,
                severity: Severity::Error,
                resource: Some(ResourceRef {
                    kind: (*kind).to_owned(),
                    name: "(unreadable)".to_owned(),
                }),
                field: String::new(),
                message: format!(
                    "this file mentions {kind} but cannot be read: refusing to serve without it"
                ),
            });
        }
    }
}

/// The `metadata.name` (CRD form) or `name` (flat form) of a document, if it has one.
fn document_name(doc: &Node) -> String {
    doc.get("metadata")
        .and_then(|m| m.get("name"))
        .or_else(|| doc.get("name"))
        .and_then(Node::as_str)
        .unwrap_or("(unnamed)")
        .to_owned()
}

/// Below this many bytes a revision parses faster on one thread than it takes to start more.
const PARALLEL_FROM_BYTES: usize = 256 * 1024;
/// Parsing is memory-bound beyond a few cores.
const MAX_PARSE_THREADS: usize = 8;

/// `files` cut into at most `n` contiguous runs of roughly `total / n` bytes each.
fn contiguous_chunks<'f, 's>(
    files: &'s [&'f SourceFile],
    n: usize,
    total: usize,
) -> Vec<&'s [&'f SourceFile]> {
    let target = total.div_ceil(n).max(1);
    let mut chunks = Vec::with_capacity(n);
    let (mut start, mut size) = (0, 0);
    for (i, file) in files.iter().enumerate() {
        size += file.bytes.len();
        if size >= target && chunks.len() + 1 < n {
            chunks.push(&files[start..=i]);
            start = i + 1;
            size = 0;
        }
    }
    if start < files.len() {
        chunks.push(&files[start..]);
    }
    chunks
}

/// Parses one file: its documents, decoded into resources where they are gateway kinds.
fn parse_file(file: &SourceFile, limits: &Limits, gateway: &AmbassadorId) -> FileParse {
    let mut out = FileParse::default();
    let name: Arc<str> = Arc::from(file.path.as_str());
    let docs = match yaml::parse_documents(&file.bytes, limits) {
        Ok(docs) => docs,
        Err(e) => {
            out.diagnostics.push(Diagnostic {
                file: name.clone(),
                line: e.line,
                column: e.column,
                severity: Severity::Error,
                resource: None,
                field: String::new(),
                message: e.message,
            });
            unreadable_enforcing(&name, &file.bytes, &mut out.diagnostics);
            return out;
        }
    };
    let mut ctx = DocContext {
        file: name,
        source: std::str::from_utf8(&file.bytes).unwrap_or_default(),
        limits,
        gateway,
        diagnostics: &mut out.diagnostics,
        out: &mut out.parsed,
    };
    for doc in &docs {
        ctx.document(doc, None);
    }
    out
}

/// Defaults inherited by resources declared inside a Service's annotation.
struct AnnotationScope {
    namespace: String,
    service: String,
}

struct DocContext<'a> {
    file: Arc<str>,
    source: &'a str,
    limits: &'a Limits,
    gateway: &'a AmbassadorId,
    diagnostics: &'a mut Vec<Diagnostic>,
    out: &'a mut Vec<Parsed>,
}

impl DocContext<'_> {
    fn error(
        &mut self,
        node: &Node,
        resource: Option<ResourceRef>,
        field: String,
        message: String,
    ) {
        self.push(
            Severity::Error,
            node.line,
            node.column,
            resource,
            field,
            message,
        );
    }

    fn push(
        &mut self,
        severity: Severity,
        line: u32,
        column: u32,
        resource: Option<ResourceRef>,
        field: String,
        message: String,
    ) {
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            severity,
            resource,
            field,
            message,
        });
    }

    fn decode_error(&mut self, e: DecodeError, resource: Option<ResourceRef>) {
        self.push(
            Severity::Error,
            e.line,
            e.column,
            resource,
            e.path,
            e.message,
        );
    }

    /// Decodes one document. Every error about a document whose `kind` is enforcing names
    /// that kind, even when it arises before the resource is known (bad `metadata`, no
    /// name, a wrong `apiVersion`): `Outcome::is_accepted` only sees the kind, and an
    /// AuthService left out unnamed would otherwise be skipped under `--allow-partial`.
    fn document(&mut self, doc: &Node, scope: Option<&AnnotationScope>) {
        let before = self.diagnostics.len();
        self.decode_document(doc, scope);
        let Some(kind) = doc.get("kind").and_then(Node::as_str) else {
            return;
        };
        if !is_enforcing(kind) {
            return;
        }
        for d in &mut self.diagnostics[before..] {
            if d.is_error() && d.resource.as_ref().is_none_or(|r| r.kind != kind) {
                d.resource = Some(ResourceRef {
                    kind: kind.to_owned(),
                    name: document_name(doc),
                });
            }
        }
    }

    fn decode_document(&mut self, doc: &Node, scope: Option<&AnnotationScope>) {
        if !matches!(doc.value, Value::Map(_)) {
            self.error(
                doc,
                None,
                String::new(),
                format!(
                    "expected a resource (a mapping with `apiVersion` and `kind`), found {}",
                    doc.value.describe()
                ),
            );
            return;
        }
        let (Some(api_version), Some(kind)) = (
            self.string_field(doc, "apiVersion"),
            self.string_field(doc, "kind"),
        ) else {
            return;
        };
        let (api_version, kind) = (api_version.to_owned(), kind.to_owned());
        if api_version == "v1" && kind == "Service" && scope.is_none() {
            self.service_annotation(doc);
            return;
        }
        let attache_kind = api_version == ATTACHE_API_VERSION;
        if attache_kind && !ATTACHE_KINDS.contains(&kind.as_str()) {
            let node = doc.get("kind").unwrap_or(doc);
            self.error(
                node,
                None,
                "kind".into(),
                format!(
                    "unknown kind {kind:?} for {ATTACHE_API_VERSION}; it holds {}",
                    ATTACHE_KINDS.join(", ")
                ),
            );
            return;
        }
        if !attache_kind && ATTACHE_KINDS.contains(&kind.as_str()) {
            let node = doc.get("apiVersion").unwrap_or(doc);
            self.error(
                node,
                Some(ResourceRef {
                    kind: kind.clone(),
                    name: document_name(doc),
                }),
                "apiVersion".into(),
                format!("{kind} is an attache extension: use apiVersion {ATTACHE_API_VERSION}"),
            );
            return;
        }
        if !attache_kind && !EMISSARY_API_VERSIONS.contains(&api_version.as_str()) {
            if api_version.contains("ambassador") || api_version.contains("attache") {
                let known = format!(
                    "{}, {ATTACHE_API_VERSION}",
                    EMISSARY_API_VERSIONS.join(", ")
                );
                let node = doc.get("apiVersion").unwrap_or(doc);
                self.error(
                    node,
                    Some(ResourceRef {
                        kind: kind.clone(),
                        name: document_name(doc),
                    }),
                    "apiVersion".into(),
                    format!("unknown apiVersion {api_version:?}; expected one of {known}"),
                );
            }
            // Other Kubernetes manifests (Deployments, ConfigMaps...) may share the repo.
            return;
        }
        let crd_form = doc.get("spec").is_some() || doc.get("metadata").is_some();
        let (name, namespace, labels) = match self.identity(doc, crd_form, &kind) {
            Some(id) => id,
            None => return,
        };
        let namespace = namespace
            .or_else(|| scope.map(|s| s.namespace.clone()))
            .unwrap_or_else(|| "default".to_owned());
        let resource = Some(ResourceRef {
            kind: kind.clone(),
            name: name.clone(),
        });
        let kind_enum = match kind.as_str() {
            "Mapping" => Kind::Mapping,
            "Host" => Kind::Host,
            "Listener" => Kind::Listener,
            "TLSContext" => Kind::TlsContext,
            "Module" => Kind::Module,
            "AuthService" => Kind::AuthService,
            "RateLimitService" => Kind::RateLimitService,
            "TracingService" => Kind::TracingService,
            "LogService" => Kind::LogService,
            "LocalRateLimit" => Kind::LocalRateLimit,
            other => {
                let node = doc.get("kind").unwrap_or(doc);
                if UNSUPPORTED_ENFORCING.contains(&other) {
                    self.error(node, resource, "kind".into(), format!("{other} is not supported by attache yet; refusing to serve a config that relies on it"));
                } else if UNSUPPORTED_ADVISORY.contains(&other) {
                    self.push(
                        Severity::Warning,
                        node.line,
                        node.column,
                        resource,
                        "kind".into(),
                        format!("{other} is not supported by attache yet; ignored"),
                    );
                } else {
                    let hint = KNOWN_KINDS
                        .iter()
                        .find(|k| k.eq_ignore_ascii_case(other))
                        .map(|k| format!("; did you mean {k:?}?"))
                        .unwrap_or_default();
                    self.error(
                        node,
                        resource,
                        "kind".into(),
                        format!("unknown kind {other:?} for {api_version}{hint}"),
                    );
                }
                return;
            }
        };
        let (spec_node, base, skip): (&Node, &'static str, &[&str]) = if crd_form {
            if let Some(extra) =
                unknown_top_level(doc, &["apiVersion", "kind", "metadata", "spec", "status"])
            {
                // Kubernetes drops any other top-level field of a custom resource, so
                // Emissary would never see it either: say where it belongs instead.
                let key = key_text(extra);
                let hint = if doc.get("spec").is_none() {
                    format!(
                        "; in the CRD form (with `metadata`) it goes under `spec` (`spec.{key}`), \
                         in the flat form `name` replaces `metadata`"
                    )
                } else {
                    String::new()
                };
                self.error(extra, resource, key, format!("unknown top-level field; the CRD form has `apiVersion`, `kind`, `metadata` and `spec`{hint}"));
                return;
            }
            match doc.get("spec") {
                Some(spec) => (spec, "spec", &[]),
                None => {
                    self.error(
                        doc,
                        resource,
                        "spec".into(),
                        "missing required field `spec`".into(),
                    );
                    return;
                }
            }
        } else {
            (doc, "", &["apiVersion", "kind", "name", "namespace"])
        };
        // Before decoding: another gateway's resource is not this one's to judge.
        match declared_gateways(spec_node.get("ambassador_id")) {
            Ok(ids) if !self.gateway.is_named_by(&ids) => return,
            Ok(_) => {}
            Err(node) => {
                let field = if crd_form {
                    "spec.ambassador_id"
                } else {
                    "ambassador_id"
                };
                self.error(
                    node,
                    resource,
                    field.into(),
                    format!(
                        "expected a string or a list of strings (the ids of the gateways \
                         this resource is for), found {}",
                        node.value.describe()
                    ),
                );
                return;
            }
        }
        let spec = match kind_enum {
            Kind::Mapping => yaml::decode_skipping::<raw::MappingSpec>(spec_node, base, skip)
                .map(|s| Spec::Mapping(Box::new(s))),
            Kind::Host => yaml::decode_skipping(spec_node, base, skip).map(Spec::Host),
            Kind::Listener => yaml::decode_skipping(spec_node, base, skip).map(Spec::Listener),
            Kind::TlsContext => yaml::decode_skipping(spec_node, base, skip).map(Spec::TlsContext),
            Kind::Module => yaml::decode_skipping::<raw::ModuleSpec>(spec_node, base, skip)
                .map(|s| Spec::Module(Box::new(s))),
            Kind::AuthService => {
                yaml::decode_skipping::<raw::AuthServiceSpec>(spec_node, base, skip)
                    .map(|s| Spec::AuthService(Box::new(s)))
            }
            Kind::RateLimitService => {
                yaml::decode_skipping(spec_node, base, skip).map(Spec::RateLimitService)
            }
            Kind::TracingService => {
                yaml::decode_skipping(spec_node, base, skip).map(Spec::TracingService)
            }
            Kind::LogService => yaml::decode_skipping(spec_node, base, skip).map(Spec::LogService),
            Kind::LocalRateLimit => {
                yaml::decode_skipping(spec_node, base, skip).map(Spec::LocalRateLimit)
            }
        };
        match spec {
            Ok(spec) => self.out.push(Parsed {
                kind: kind_enum,
                name,
                namespace,
                origin: Origin {
                    file: self.file.clone(),
                    line: doc.line,
                    column: doc.column,
                },
                labels,
                base: if crd_form { "spec." } else { "" },
                spec_at: (spec_node.line, spec_node.column),
                spec,
                default_service: scope.map(|s| s.service.clone()),
            }),
            Err(e) => self.decode_error(e, resource),
        }
    }

    /// A required string field of a document; reports it when missing or not a string.
    fn string_field<'n>(&mut self, doc: &'n Node, key: &str) -> Option<&'n str> {
        match doc.get(key) {
            Some(node) => match node.as_str() {
                Some(s) => Some(s),
                None => {
                    self.error(
                        node,
                        None,
                        key.into(),
                        format!("expected a string, found {}", node.value.describe()),
                    );
                    None
                }
            },
            None => {
                self.error(
                    doc,
                    None,
                    String::new(),
                    format!("missing required field `{key}`"),
                );
                None
            }
        }
    }

    /// Name, namespace and labels, from `metadata` (CRD form) or the top level (flat form).
    fn identity(
        &mut self,
        doc: &Node,
        crd_form: bool,
        kind: &str,
    ) -> Option<(
        String,
        Option<String>,
        std::collections::BTreeMap<String, String>,
    )> {
        if crd_form {
            let Some(meta_node) = doc.get("metadata") else {
                self.error(
                    doc,
                    None,
                    String::new(),
                    format!("{kind} has no `metadata`"),
                );
                return None;
            };
            let meta: raw::Metadata = match yaml::decode(meta_node, "metadata") {
                Ok(m) => m,
                Err(e) => {
                    self.decode_error(e, None);
                    return None;
                }
            };
            let Some(name) = meta.name else {
                self.error(
                    meta_node,
                    None,
                    "metadata".into(),
                    "missing required field `name`".into(),
                );
                return None;
            };
            if !self.check_name(&name, "metadata.name", kind) {
                return None;
            }
            Some((name.value, meta.namespace.map(|n| n.value), meta.labels))
        } else {
            let name = self.string_field(doc, "name")?.to_owned();
            let node = doc.get("name").unwrap_or(doc);
            let at = yaml::At {
                value: name,
                line: node.line,
                column: node.column,
            };
            if !self.check_name(&at, "name", kind) {
                return None;
            }
            let namespace = doc
                .get("namespace")
                .and_then(Node::as_str)
                .map(str::to_owned);
            Some((at.value, namespace, Default::default()))
        }
    }

    fn check_name(&mut self, name: &yaml::At<String>, field: &str, kind: &str) -> bool {
        let ok = !name.value.is_empty()
            && name.value.len() <= 253
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !ok {
            self.push(
                Severity::Error,
                name.line,
                name.column,
                Some(ResourceRef {
                    kind: kind.to_owned(),
                    name: name.value.clone(),
                }),
                field.to_owned(),
                "names are 1 to 253 characters of letters, digits, `-`, `.` and `_`".into(),
            );
        }
        ok
    }

    /// A Kubernetes Service whose `getambassador.io/config` annotation holds resources.
    ///
    /// A Service is a real Kubernetes object that other tools own: only the three fields
    /// attache needs are read (`name`, `namespace` and this annotation), whatever else its
    /// `metadata` carries, and a Service without the annotation is not a gateway resource
    /// at all.
    fn service_annotation(&mut self, doc: &Node) {
        let Some(meta_node) = doc.get("metadata") else {
            return;
        };
        let Some(annotation_node) = meta_node
            .get("annotations")
            .and_then(|a| a.get(CONFIG_ANNOTATION))
        else {
            return;
        };
        let field = format!("metadata.annotations[{CONFIG_ANNOTATION:?}]");
        let service = ResourceRef {
            kind: "Service".into(),
            name: document_name(doc),
        };
        let Some(text) = annotation_node.as_str() else {
            self.error(
                annotation_node,
                Some(service),
                field,
                format!(
                    "expected a string of YAML documents, found {}",
                    annotation_node.value.describe()
                ),
            );
            return;
        };
        let annotation = yaml::At {
            value: text.to_owned(),
            line: annotation_node.line,
            column: annotation_node.column,
        };
        let Some(name) = self.service_metadata_string(meta_node, "name", &service, true) else {
            return;
        };
        let namespace = self
            .service_metadata_string(meta_node, "namespace", &service, false)
            .unwrap_or_else(|| "default".into());
        let scope = AnnotationScope {
            service: format!("{name}.{namespace}"),
            namespace,
        };
        let (line_offset, column_offset) = annotation_offsets(self.source, &annotation);
        let mut docs = match yaml::parse_documents(annotation.value.as_bytes(), self.limits) {
            Ok(docs) => docs,
            Err(e) => {
                // As for an unreadable file: the text may have held an AuthService.
                let file = self.file.clone();
                unreadable_enforcing(&file, annotation.value.as_bytes(), self.diagnostics);
                self.push(
                    Severity::Error,
                    e.line + line_offset,
                    e.column + column_offset,
                    Some(service),
                    field,
                    e.message,
                );
                return;
            }
        };
        for doc in &mut docs {
            shift(doc, line_offset, column_offset);
        }
        for doc in &docs {
            self.document(doc, Some(&scope));
        }
    }
}

impl DocContext<'_> {
    /// A string in a Service's `metadata`; reports it when it is not a string, or when it
    /// is `required` and missing.
    fn service_metadata_string(
        &mut self,
        meta: &Node,
        key: &str,
        service: &ResourceRef,
        required: bool,
    ) -> Option<String> {
        match meta.get(key) {
            Some(node) => match node.as_str() {
                Some(s) => Some(s.to_owned()),
                None => {
                    self.error(
                        node,
                        Some(service.clone()),
                        format!("metadata.{key}"),
                        format!("expected a string, found {}", node.value.describe()),
                    );
                    None
                }
            },
            None if required => {
                self.error(
                    meta,
                    Some(service.clone()),
                    "metadata".into(),
                    format!("missing required field `{key}`"),
                );
                None
            }
            None => None,
        }
    }
}

/// The gateway ids a resource's `ambassador_id` names: none when it is absent, null or
/// an empty list (all meaning `default`); the offending node when it is neither a
/// string nor a list of strings.
fn declared_gateways(node: Option<&Node>) -> Result<Vec<&str>, &Node> {
    let Some(node) = node else {
        return Ok(Vec::new());
    };
    match &node.value {
        Value::Null => Ok(Vec::new()),
        Value::Str(id) => Ok(vec![id]),
        Value::Seq(items) => items.iter().map(|i| i.as_str().ok_or(i)).collect(),
        _ => Err(node),
    }
}

fn key_text(node: &Node) -> String {
    node.as_str().unwrap_or_default().to_owned()
}

/// The first top-level key not in `allowed` (as its key node, for its position).
fn unknown_top_level<'n>(doc: &'n Node, allowed: &[&str]) -> Option<&'n Node> {
    match &doc.value {
        Value::Map(entries) => entries
            .iter()
            .map(|(k, _)| k)
            .find(|k| !k.as_str().is_some_and(|s| allowed.contains(&s))),
        _ => None,
    }
}

/// Where line 1, column 1 of an annotation's text sits in the file. For a block scalar
/// (`|` or `>`) the text starts on the next line, indented; for a quoted or plain scalar it
/// starts at the scalar itself.
fn annotation_offsets(source: &str, annotation: &yaml::At<String>) -> (u32, u32) {
    let line_index = annotation.line.saturating_sub(1) as usize;
    let mut lines = source.lines().skip(line_index);
    let Some(first) = lines.next() else {
        return (0, 0);
    };
    let start = (annotation.column.saturating_sub(1) as usize).min(first.len());
    let indicator = first.get(start..).unwrap_or("").trim_start();
    if indicator.starts_with('|') || indicator.starts_with('>') {
        let indent = lines
            .find(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .unwrap_or(0);
        (annotation.line, u32::try_from(indent).unwrap_or(0))
    } else {
        (annotation.line.saturating_sub(1), annotation.column)
    }
}

fn shift(node: &mut Node, lines: u32, columns: u32) {
    node.line += lines;
    node.column += columns;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| shift(n, lines, columns)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            shift(k, lines, columns);
            shift(v, lines, columns);
        }),
        _ => {}
    }
}
