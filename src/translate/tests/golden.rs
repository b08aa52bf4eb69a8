//! Golden tests: each repo under `tests/fixtures/translate/NAME/` (YAML input) is loaded,
//! translated and rendered as text; the text must equal `NAME/expected.txt`.
//! `UPDATE_GOLDEN=1 cargo test --lib translate::tests::golden` rewrites the files; review
//! the diff like any other change.
//!
//! The rendering is prost's pretty `Debug` with three changes that make it reviewable:
//! every `Any` is decoded and shown as the message it holds (recursively), our provenance
//! is shown as its list of strings on one line, and lines holding a default value (`None`,
//! `0`, `false`, `""`, `[]`, `{}`) are left out, as proto3 leaves them out on the wire.
//! Certificates and keys are shown as their length only.

use std::fmt::Write as _;

use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, UpstreamTlsContext, secret,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::{Message, Name};

use super::{FIXTURE_SECRETS, fixture_repos, load_dir, run};

/// The policy filters' and loggers' messages, decoded in the rendering.
mod policy {
    pub use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, ZipkinConfig};
    pub use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
        FileAccessLog, file_access_log,
    };
    pub use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3::{
        HttpGrpcAccessLogConfig, TcpGrpcAccessLogConfig,
    };
    pub use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
        StdoutAccessLog, stdout_access_log,
    };
    pub use envoy_types::pb::envoy::extensions::filters::http::buffer::v3::Buffer;
    pub use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
    pub use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
        ExtAuthz, ExtAuthzPerRoute,
    };
    pub use envoy_types::pb::envoy::extensions::filters::http::grpc_web::v3::GrpcWeb;
    pub use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
    pub use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::RateLimit;
}
use crate::translate::Resources;

#[test]
fn fixture_repos_translate_to_their_golden_text() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for repo in fixture_repos() {
        let actual = render(&run(&load_dir(&repo, FIXTURE_SECRETS)));
        let path = repo.join("expected.txt");
        if update {
            std::fs::write(&path, &actual)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                path.display()
            )
        });
        if expected != actual {
            let line = first_difference(&expected, &actual);
            mismatches.push(format!(
                "{}: first difference at line {line}\n--- expected\n{}\n+++ actual\n{}",
                path.display(),
                window(&expected, line),
                window(&actual, line)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden files differ (UPDATE_GOLDEN=1 rewrites them):\n{}",
        mismatches.join("\n")
    );
}

/// Lines `line - 5 ..= line + 5` (1-based) of `text`, numbered.
fn window(text: &str, line: usize) -> String {
    text.lines()
        .enumerate()
        .skip(line.saturating_sub(6))
        .take(11)
        .map(|(i, l)| format!("{:5} {l}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The 1-based number of the first line where `a` and `b` differ.
fn first_difference(a: &str, b: &str) -> usize {
    a.lines()
        .zip(b.lines())
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.lines().count().min(b.lines().count()))
        + 1
}

#[test]
fn rendering_decodes_anys_and_drops_defaults() {
    let resources = run(&crate::translate::testing::config(
        vec![crate::translate::testing::mapping("a", "/a/", "a")],
        Vec::new(),
    ));
    let text = render(&resources);
    assert!(text.contains("HttpConnectionManager {"), "{text}");
    assert!(text.contains("stat_prefix: \"ingress_8080\""), "{text}");
    assert!(
        text.contains("@type: type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"),
        "{text}"
    );
    assert!(text.contains("\"Mapping\", \"default\", \"a\"],"), "{text}");
    assert!(!text.contains(": None,"), "{text}");
    assert!(!text.contains("value: ["), "undecoded Any bytes: {text}");
}

/// The text rendering of every resource, in `Resources` order.
pub(super) fn render(resources: &Resources) -> String {
    let mut out = String::new();
    let mut section = |kind: &str, name: &str, debug: String| {
        let _ = writeln!(out, "=== {kind} {name}");
        out.push_str(&clean(&debug));
    };
    for l in &resources.listeners {
        section("Listener", &l.name, format!("{l:#?}"));
    }
    for r in &resources.routes {
        section("RouteConfiguration", &r.name, format!("{r:#?}"));
    }
    for c in &resources.clusters {
        section("Cluster", &c.name, format!("{c:#?}"));
    }
    for a in &resources.endpoints {
        section("ClusterLoadAssignment", &a.cluster_name, format!("{a:#?}"));
    }
    for s in &resources.secrets {
        let mut s = s.clone();
        if let Some(secret::Type::TlsCertificate(cert)) = &mut s.r#type {
            for source in [&mut cert.certificate_chain, &mut cert.private_key]
                .into_iter()
                .flatten()
            {
                if let Some(Specifier::InlineString(pem)) = &source.specifier {
                    // Stand-in for the PEM: its length.
                    source.specifier = Some(Specifier::InlineString(format!(
                        "<PEM, {} bytes>",
                        pem.len()
                    )));
                }
            }
        }
        section("Secret", &s.name, format!("{s:#?}"));
    }
    out
}

/// Expands Any values and drops default lines from a pretty `Debug` text.
fn clean(debug: &str) -> String {
    let lines: Vec<&str> = debug.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        // An Any: `type_url: "...",` then `value: [` bytes `],`.
        if let Some(url) = line.trim_start().strip_prefix("type_url: \"") {
            let url = url.trim_end_matches(['"', ',']);
            let indent = &line[..line.len() - line.trim_start().len()];
            if let Some(value_line) = lines.get(i + 1) {
                if value_line.trim() == "value: [" {
                    let mut bytes = Vec::new();
                    let mut j = i + 2;
                    while j < lines.len() && lines[j].trim() != "]," {
                        if let Ok(b) = lines[j].trim().trim_end_matches(',').parse::<u8>() {
                            bytes.push(b);
                        }
                        j += 1;
                    }
                    let _ = writeln!(out, "{indent}@type: {url}");
                    for decoded in clean(&decode_any(url, &bytes)).lines() {
                        let _ = writeln!(out, "{indent}{decoded}");
                    }
                    i = j + 1;
                    continue;
                }
                if value_line.trim() == "value: []," {
                    let _ = writeln!(out, "{indent}@type: {url}");
                    i += 2;
                    continue;
                }
            }
        }
        // Our provenance: its list of strings on one line.
        if line.trim() == "\"attache\": Struct {" {
            let indent = &line[..line.len() - line.trim_start().len()];
            let end = format!("{indent}}},");
            let mut parts = Vec::new();
            let mut j = i + 1;
            while j < lines.len() && lines[j] != end {
                if lines[j].trim() == "StringValue("
                    && let Some(text) = lines.get(j + 1)
                {
                    parts.push(text.trim().trim_end_matches(','));
                }
                j += 1;
            }
            let _ = writeln!(out, "{indent}\"attache\": source [{}],", parts.join(", "));
            i = j + 1;
            continue;
        }
        if !is_default_line(line) {
            out.push_str(line);
            out.push('\n');
        }
        i += 1;
    }
    out
}

fn is_default_line(line: &str) -> bool {
    let Some((field, value)) = line.trim().split_once(": ") else {
        return false;
    };
    matches!(
        value,
        "None," | "0," | "0.0," | "false," | "\"\"," | "[]," | "{},"
    ) || ZERO_ENUMS.contains(&(field, value.trim_end_matches(',')))
}

/// Enum fields at their zero value (prost's `Debug` prints the variant name), which the
/// wire format leaves out like any other default.
const ZERO_ENUMS: &[(&str, &str)] = &[
    ("append_action", "AppendIfExistsOrAdd"),
    ("cluster_not_found_response_code", "ServiceUnavailable"),
    ("codec_type", "Auto"),
    ("dns_lookup_family", "Auto"),
    ("drain_type", "Default"),
    ("forward_client_cert_details", "Sanitize"),
    ("health_status", "Unknown"),
    ("internal_redirect_action", "PassThroughInternalRedirect"),
    ("lb_policy", "RoundRobin"),
    ("ocsp_staple_policy", "LenientStapling"),
    (
        "path_with_escaped_slashes_action",
        "ImplementationSpecificDefault",
    ),
    ("priority", "Default"),
    ("protocol", "Tcp"),
    ("protocol_selection", "UseConfiguredProtocol"),
    ("require_tls", "None"),
    ("response_code", "MovedPermanently"),
    ("server_header_transformation", "Overwrite"),
    ("source_type", "Any"),
    ("tls_maximum_protocol_version", "TlsAuto"),
    ("tls_minimum_protocol_version", "TlsAuto"),
    ("traffic_direction", "Unspecified"),
];

/// The pretty `Debug` of the message an Any holds, for the types translation produces.
fn decode_any(url: &str, bytes: &[u8]) -> String {
    fn show<M: Message + Name + Default + std::fmt::Debug>(bytes: &[u8]) -> String {
        match M::decode(bytes) {
            Ok(m) => format!("{m:#?}"),
            Err(e) => format!("<undecodable {}: {e}>", M::full_name()),
        }
    }
    let name = url.rsplit('/').next().unwrap_or(url);
    match name {
        n if n == HttpConnectionManager::full_name() => show::<HttpConnectionManager>(bytes),
        n if n == Router::full_name() => show::<Router>(bytes),
        n if n == TlsInspector::full_name() => show::<TlsInspector>(bytes),
        n if n == DownstreamTlsContext::full_name() => show::<DownstreamTlsContext>(bytes),
        n if n == UpstreamTlsContext::full_name() => show::<UpstreamTlsContext>(bytes),
        n if n == HttpProtocolOptions::full_name() => show::<HttpProtocolOptions>(bytes),
        n if n == policy::Cors::full_name() => show::<policy::Cors>(bytes),
        n if n == policy::CorsPolicy::full_name() => show::<policy::CorsPolicy>(bytes),
        n if n == policy::ExtAuthz::full_name() => show::<policy::ExtAuthz>(bytes),
        n if n == policy::ExtAuthzPerRoute::full_name() => show::<policy::ExtAuthzPerRoute>(bytes),
        n if n == policy::RateLimit::full_name() => show::<policy::RateLimit>(bytes),
        n if n == policy::LocalRateLimit::full_name() => show::<policy::LocalRateLimit>(bytes),
        n if n == policy::GrpcWeb::full_name() => show::<policy::GrpcWeb>(bytes),
        n if n == policy::Buffer::full_name() => show::<policy::Buffer>(bytes),
        n if n == policy::StdoutAccessLog::full_name() => {
            show_logger(bytes, |m: &mut policy::StdoutAccessLog| {
                use policy::stdout_access_log::AccessLogFormat::LogFormat;
                match &mut m.access_log_format {
                    Some(LogFormat(f)) => json_format(f),
                    _ => None,
                }
            })
        }
        n if n == policy::FileAccessLog::full_name() => {
            show_logger(bytes, |m: &mut policy::FileAccessLog| {
                use policy::file_access_log::AccessLogFormat::LogFormat;
                match &mut m.access_log_format {
                    Some(LogFormat(f)) => json_format(f),
                    _ => None,
                }
            })
        }
        n if n == policy::HttpGrpcAccessLogConfig::full_name() => {
            show::<policy::HttpGrpcAccessLogConfig>(bytes)
        }
        n if n == policy::TcpGrpcAccessLogConfig::full_name() => {
            show::<policy::TcpGrpcAccessLogConfig>(bytes)
        }
        n if n == policy::ZipkinConfig::full_name() => show::<policy::ZipkinConfig>(bytes),
        n if n == policy::OpenTelemetryConfig::full_name() => {
            show::<policy::OpenTelemetryConfig>(bytes)
        }
        n if n == Struct::full_name() => match Struct::decode(bytes) {
            Ok(s) => sorted_struct(&s),
            Err(e) => format!("<undecodable Struct: {e}>"),
        },
        other => format!("<{} bytes of {other}>", bytes.len()),
    }
}

/// A logger's `Debug` with its JSON format (a `Struct`, whose map prints in hash order)
/// taken out and shown after it with sorted keys.
fn show_logger<M: Message + Default + std::fmt::Debug>(
    bytes: &[u8],
    json: impl Fn(&mut M) -> Option<Struct>,
) -> String {
    let Ok(mut m) = M::decode(bytes) else {
        return "<undecodable access logger>".to_owned();
    };
    match json(&mut m) {
        Some(s) => format!("{m:#?}\njson_format (sorted) {}", sorted_struct(&s)),
        None => format!("{m:#?}"),
    }
}

/// Takes the JSON `Struct` out of a substitution format string, leaving an empty one.
fn json_format(
    f: &mut envoy_types::pb::envoy::config::core::v3::SubstitutionFormatString,
) -> Option<Struct> {
    use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
    match &mut f.format {
        Some(Format::JsonFormat(s)) => Some(std::mem::take(s)),
        _ => None,
    }
}

/// A Struct as `{ "key": value, ... }` with keys sorted (its map has no stable order).
fn sorted_struct(s: &Struct) -> String {
    let fields: std::collections::BTreeMap<&String, &Value> = s.fields.iter().collect();
    let mut out = String::from("{\n");
    for (key, value) in fields {
        let _ = writeln!(out, "    {key:?}: {},", compact_value(value));
    }
    out.push('}');
    out
}

fn compact_value(v: &Value) -> String {
    match &v.kind {
        Some(Kind::StringValue(s)) => format!("{s:?}"),
        Some(Kind::NumberValue(n)) => format!("{n}"),
        Some(Kind::BoolValue(b)) => format!("{b}"),
        Some(Kind::ListValue(l)) => {
            let items: Vec<String> = l.values.iter().map(compact_value).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Kind::StructValue(s)) => sorted_struct(s),
        Some(Kind::NullValue(_)) | None => "null".to_owned(),
    }
}
