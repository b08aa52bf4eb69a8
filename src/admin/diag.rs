//! `/diag`: one server-rendered page that answers, at a glance, which commit is live,
//! what was rejected and why, which node holds which version and what Envoy refused, and
//! where every route and cluster came from (file:line).
//!
//! Plain HTML that reads without JavaScript; a few lines of script only offer an
//! auto-refresh. Every string on it is user input (commit messages, YAML, node ids,
//! Envoy's error text) and goes through [`esc`].

use std::fmt::Write;

use axum::extract::{Query, State as Extract};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::api::{StatusView, node_view, status_view};
use super::html::{esc, short, utc};
use super::inventory::{ClusterRow, Inventory, RouteRow, Target};
use super::{Error, Result, State};
use crate::config::Diagnostic;
use crate::pipeline::{Attempt, Outcome};
use crate::snapshot::{NodeState, ResourceType, RolloutStatus};

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#1b1f24}
h1{font-size:20px;margin:.8em 0 .4em}h2{font-size:16px;margin:1.4em 0 .4em}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}code,.mono{font-family:ui-monospace,monospace;font-size:13px}
.banner{border-radius:6px;padding:.6em 1em;margin:.5em 0}
.ok{background:#dafbe1;border:1px solid #4ac26b}.bad{background:#ffebe9;border:1px solid #cf222e;color:#82071e}
.warn{background:#fff8c5;border:1px solid #d4a72c}.muted{color:#656d76}
.nack{color:#cf222e;font-weight:600}.ack{color:#1a7f37}.pending{color:#9a6700}
pre{white-space:pre-wrap;margin:.2em 0}ul{margin:.2em 0 .2em 1.2em;padding:0}
";

const SCRIPT: &str = "
const box=document.getElementById('auto');
box.checked=location.hash==='#auto';
let timer;
function apply(){clearInterval(timer);
if(box.checked){location.hash='auto';timer=setInterval(()=>location.reload(),5000);}
else if(location.hash){history.replaceState(null,'',location.pathname+location.search);}}
box.addEventListener('change',apply);apply();
";

/// `/diag?q=TEXT`: show only the routes and clusters whose text contains `TEXT`.
#[derive(Debug, Deserialize)]
pub(super) struct Params {
    q: Option<String>,
}

/// How many routes and clusters the page lists unfiltered (10k routes make an 8 MB page);
/// `?q=` narrows them, and the JSON API has them all.
const MAX_ROWS: usize = 1000;

/// The `?q=` filter: case-insensitive substring of a row's host, match, target or source.
struct Filter {
    needle: Option<String>,
}

impl Filter {
    fn new(q: Option<&str>) -> Filter {
        Filter {
            needle: q
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .map(str::to_lowercase),
        }
    }

    fn keeps(&self, fields: &[&str]) -> bool {
        match &self.needle {
            None => true,
            Some(needle) => fields.iter().any(|f| f.to_lowercase().contains(needle)),
        }
    }
}

/// How many nodes the page lists: a fleet of thousands would make a page no browser
/// renders quickly, and the ones that need attention are sorted first.
const MAX_NODE_ROWS: usize = 500;

/// `GET /diag`.
pub(super) async fn page(
    Extract(state): Extract<State>,
    Query(params): Query<Params>,
) -> Result<Response> {
    let filter = Filter::new(params.q.as_deref());
    let html =
        render(&state, &filter).map_err(|e| Error::Internal(format!("rendering /diag: {e}")))?;
    let mut response = Html(html).into_response();
    // Always fresh: the page is a live view.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn render(state: &State, filter: &Filter) -> Result<String, std::fmt::Error> {
    let status = status_view(state);
    let inventory = state.store.stable().map(|s| state.inventory.get(&s));
    let mut nodes = state.store.nodes();
    // What needs attention first: connected nodes not in sync with the fleet's snapshot,
    // then the other connected ones, then the disconnected; by id within each.
    let fleet = status.serving.as_ref().map(|s| s.snapshot.as_str());
    nodes.sort_by_cached_key(|n| {
        let in_sync = n.synced_snapshot.as_deref() == fleet;
        (n.streams.is_empty(), in_sync, n.id.clone())
    });
    let mut out = String::with_capacity(16 * 1024);
    let o = &mut out;
    write!(
        o,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width\"><title>attache diagnostics</title>\
         <style>{STYLE}</style></head><body>"
    )?;
    write!(
        o,
        "<h1>attache diagnostics</h1><p class=muted>Rendered {} \
         &middot; <label><input type=checkbox id=auto> refresh every 5 s</label> \
         &middot; JSON: <a href=\"/api/v1/status\">status</a> <a href=\"/api/v1/nodes\">nodes</a> \
         <a href=\"/api/v1/resources\">resources</a> <a href=\"/api/v1/revisions\">revisions</a> \
         &middot; <a href=\"/metrics\">metrics</a></p>",
        utc(crate::pipeline::epoch_seconds(std::time::SystemTime::now()))
    )?;
    banners(o, &status)?;
    nodes_table(o, &nodes)?;
    match &inventory {
        Some(inventory) => {
            write!(
                o,
                "<form method=get action=/diag id=filter><input name=q size=40 \
                 placeholder=\"host, path, cluster or file\" value=\"{}\"> \
                 <button>Filter routes and clusters</button></form>",
                esc(filter.needle.as_deref().unwrap_or_default())
            )?;
            routes_table(o, inventory, filter)?;
            clusters_table(o, inventory, filter)?;
        }
        None => write!(
            o,
            "<h2>Routes</h2><p class=muted>No snapshot is served yet.</p>"
        )?,
    }
    warnings(o, &status)?;
    history(o, state)?;
    write!(o, "<script>{SCRIPT}</script></body></html>")?;
    Ok(out)
}

fn banners(o: &mut String, status: &StatusView) -> std::fmt::Result {
    match (&status.serving, &status.applied) {
        (Some(serving), Some(applied)) if applied_matches(applied, &serving.revision) => {
            write!(
                o,
                "<div class=\"banner ok\" id=serving><strong>Serving</strong> "
            )?;
            commit(o, applied)?;
            write!(
                o,
                " <span class=muted>as snapshot <code>{}</code></span></div>",
                esc(&serving.snapshot)
            )?;
        }
        (Some(serving), applied) => {
            write!(
                o,
                "<div class=\"banner ok\" id=serving><strong>Serving</strong> snapshot <code>{}</code> \
                 (revision <code>{}</code>)",
                esc(&serving.snapshot),
                esc(&serving.revision)
            )?;
            match applied {
                Some(applied) => {
                    write!(o, "; the newest accepted revision, ")?;
                    commit(o, applied)?;
                    write!(o, ", is still rolling out")?;
                }
                None => write!(
                    o,
                    "; no revision processed since attache started (persisted snapshot)"
                )?,
            }
            write!(o, "</div>")?;
        }
        (None, _) => write!(
            o,
            "<div class=\"banner warn\" id=serving><strong>Nothing served yet:</strong> \
             no revision has been accepted.</div>"
        )?,
    }
    if let Some(attempt) = status
        .last_attempted
        .as_ref()
        .filter(|_| status.newer_rejected)
    {
        write!(
            o,
            "<div class=\"banner bad\" id=rejected><strong>Rejected</strong> "
        )?;
        commit(o, attempt)?;
        write!(o, " <span>(processed {})</span>", utc(attempt.at))?;
        match &attempt.outcome {
            Outcome::Rejected { errors } => {
                write!(
                    o,
                    "<p>{} error(s); the serving revision stays:</p><ul class=mono>",
                    errors.len()
                )?;
                for e in errors {
                    write!(o, "<li>{}</li>", esc(&e.to_string()))?;
                }
                write!(o, "</ul>")?;
            }
            Outcome::Failed { reason } => {
                write!(
                    o,
                    "<p>Could not be built into a snapshot: <code>{}</code></p>",
                    esc(reason)
                )?;
            }
            Outcome::Accepted { .. } => {}
        }
        write!(o, "</div>")?;
    }
    if let Some(error) = &status.source_error {
        write!(
            o,
            "<div class=\"banner warn\" id=source-error><strong>Source failing</strong> since {} \
             ({} failure(s) in a row): <code>{}</code>. The last good revision keeps serving.</div>",
            utc(error.since),
            error.failures,
            esc(&error.message)
        )?;
    }
    let rollout = match &status.rollout {
        RolloutStatus::Idle { .. } => None,
        RolloutStatus::AwaitingCanaries { candidate, .. } => Some(format!(
            "canary rollout: waiting for canaries to ACK <code>{}</code>",
            esc(candidate)
        )),
        RolloutStatus::Baking {
            candidate,
            remaining_ms,
            ..
        } => Some(format!(
            "canary rollout: <code>{}</code> baking on canaries, {} s left",
            esc(candidate),
            remaining_ms.div_ceil(1000)
        )),
        RolloutStatus::Halted {
            candidate,
            node,
            message,
            ..
        } => Some(format!(
            "<span class=nack>canary rollout halted:</span> node <code>{}</code> rejected <code>{}</code>: \
             <code>{}</code>",
            esc(node),
            esc(candidate),
            esc(message)
        )),
    };
    if let Some(rollout) = rollout {
        write!(o, "<div class=\"banner warn\" id=rollout>{rollout}</div>")?;
    }
    Ok(())
}

fn applied_matches(applied: &Attempt, revision: &str) -> bool {
    applied.revision.id == revision
        || matches!(&applied.outcome, Outcome::Accepted { snapshot } if snapshot.starts_with(revision))
}

/// `abc123def456 "first line of message" by Author, at TIME`.
fn commit(o: &mut String, attempt: &Attempt) -> std::fmt::Result {
    let r = &attempt.revision;
    write!(
        o,
        "<code title=\"{}\">{}</code>",
        esc(&r.id),
        esc(short(&r.id))
    )?;
    if let Some(message) = &r.message {
        write!(o, " <q class=commit-message>{}</q>", esc(message.trim()))?;
    }
    if let Some(author) = &r.author {
        write!(o, " by {}", esc(author))?;
    }
    write!(
        o,
        ", {} <span class=muted>from {}</span>",
        utc(r.time),
        esc(&r.source)
    )
}

fn nodes_table(o: &mut String, nodes: &[NodeState]) -> std::fmt::Result {
    write!(o, "<h2 id=nodes>Nodes ({})</h2>", nodes.len())?;
    if nodes.is_empty() {
        return write!(o, "<p class=muted>No Envoy has connected.</p>");
    }
    if nodes.len() > MAX_NODE_ROWS {
        write!(
            o,
            "<p class=muted>The first {MAX_NODE_ROWS} (out of sync first); every node is in \
             <a href=\"/api/v1/nodes\">/api/v1/nodes</a>.</p>"
        )?;
    }
    let nodes = &nodes[..nodes.len().min(MAX_NODE_ROWS)];
    write!(
        o,
        "<table><thead><tr><th>Node</th><th>Cluster</th><th>State</th><th>Synced snapshot</th>\
         <th>Per type (ACKed version)</th><th>Last NACK</th></tr></thead><tbody>"
    )?;
    for node in nodes {
        let view = node_view(node.clone());
        write!(
            o,
            "<tr class=node><td><code>{}</code>{}<div class=muted>{}</div></td><td>{}</td><td>{}</td><td><code>{}</code></td><td>",
            esc(&node.id),
            if node.canary {
                " <strong>canary</strong>"
            } else {
                ""
            },
            esc(&node.user_agent),
            esc(&node.cluster),
            if view.connected {
                format!(
                    "connected ({} stream{})",
                    node.streams.len(),
                    if node.streams.len() == 1 { "" } else { "s" }
                )
            } else {
                "disconnected".to_owned()
            },
            esc(node.synced_snapshot.as_deref().unwrap_or("-")),
        )?;
        for (kind, types) in &node.types {
            let sent = types.sent.as_ref();
            let acked = types.acked.as_ref();
            let nacked = node
                .nacks
                .iter()
                .rev()
                .find(|n| n.kind == *kind)
                .filter(|n| sent.is_some_and(|s| s.version == n.version));
            let (class, word) = match (sent, acked, nacked) {
                (_, _, Some(_)) => ("nack", "NACK"),
                (Some(s), Some(a), None) if s.version == a.version => ("ack", "ACK"),
                (None, Some(_), None) => ("ack", "ACK"),
                _ => ("pending", "sent"),
            };
            let held = acked.map_or("-", |a| a.snapshot.as_str());
            write!(
                o,
                "<div><span class=mono>{}</span> <span class={class}>{word}</span> <code>{}</code></div>",
                type_short(*kind),
                esc(held)
            )?;
        }
        write!(o, "</td><td>")?;
        match &view.last_nack {
            Some(nack) => write!(
                o,
                "<span class=nack>{} of <code>{}</code></span> at {}<pre class=nack-message>{}</pre>",
                type_short(nack.kind),
                esc(&nack.snapshot),
                utc(i64::try_from(nack.at_ms / 1000).unwrap_or(i64::MAX)),
                esc(&nack.message)
            )?,
            None => write!(o, "<span class=muted>none</span>")?,
        }
        write!(o, "</td></tr>")?;
    }
    write!(o, "</tbody></table>")
}

fn type_short(kind: ResourceType) -> &'static str {
    match kind {
        ResourceType::Cluster => "CDS",
        ResourceType::Endpoint => "EDS",
        ResourceType::Listener => "LDS",
        ResourceType::Route => "RDS",
        ResourceType::Secret => "SDS",
    }
}

fn routes_table(o: &mut String, inventory: &Inventory, filter: &Filter) -> std::fmt::Result {
    let routes: Vec<&RouteRow> = inventory
        .routes
        .iter()
        .filter(|r| {
            let domains = r.domains.join(", ");
            let target = serde_json::to_string(&r.target).unwrap_or_default();
            let location = r.source.as_ref().map_or("", |s| s.location.as_str());
            let name = r.source.as_ref().map_or("", |s| s.name.as_str());
            filter.keeps(&[&domains, &r.matcher, &target, location, name, &r.name])
        })
        .collect();
    write!(
        o,
        "<h2 id=routes>Routes ({}) <span class=muted>in snapshot <code>{}</code></span></h2>",
        count(routes.len(), inventory.routes.len()),
        esc(&inventory.snapshot)
    )?;
    if routes.is_empty() {
        return write!(o, "<p class=muted>No routes.</p>");
    }
    capped(o, routes.len(), "routes")?;
    write!(
        o,
        "<table><thead><tr><th>Host</th><th>Match</th><th>Target (cluster, weight)</th>\
         <th>Source</th><th>Route config</th></tr></thead><tbody>"
    )?;
    for route in routes.into_iter().take(MAX_ROWS) {
        write!(
            o,
            "<tr class=route><td>{}</td><td><code>{}</code></td><td>",
            esc(&route.domains.join(", ")),
            esc(&route.matcher)
        )?;
        match &route.target {
            Target::Cluster { cluster } => write!(o, "<code>{}</code>", esc(cluster))?,
            Target::Weighted { clusters } => {
                for (cluster, weight) in clusters {
                    write!(o, "<div><code>{}</code> {weight}%</div>", esc(cluster))?;
                }
            }
            Target::Redirect { to, code } => {
                write!(o, "redirect {code} to <code>{}</code>", esc(to))?
            }
            Target::DirectResponse { status } => write!(o, "direct response {status}")?,
            Target::Other => write!(o, "<span class=muted>other</span>")?,
        }
        write!(o, "</td><td class=source>")?;
        source(o, route.source.as_ref())?;
        write!(
            o,
            "</td><td><code>{}</code></td></tr>",
            esc(&route.route_config)
        )?;
    }
    write!(o, "</tbody></table>")
}

/// `12` or, filtered, `3 of 12`.
fn count(shown: usize, total: usize) -> String {
    if shown == total {
        total.to_string()
    } else {
        format!("{shown} of {total}")
    }
}

/// Says so when a table shows only its first [`MAX_ROWS`].
fn capped(o: &mut String, rows: usize, what: &str) -> std::fmt::Result {
    if rows <= MAX_ROWS {
        return Ok(());
    }
    write!(
        o,
        "<p class=muted>The first {MAX_ROWS} {what}: filter above, or see every one in \
         <a href=\"/api/v1/{what}\">/api/v1/{what}</a>.</p>"
    )
}

fn source(o: &mut String, source: Option<&super::inventory::Source>) -> std::fmt::Result {
    match source {
        Some(s) => write!(
            o,
            "<code>{}</code> <span class=muted>{} {}/{}</span>",
            esc(&s.location),
            esc(&s.kind),
            esc(&s.namespace),
            esc(&s.name)
        ),
        None => write!(o, "<span class=muted>unknown</span>"),
    }
}

fn clusters_table(o: &mut String, inventory: &Inventory, filter: &Filter) -> std::fmt::Result {
    let clusters: Vec<&ClusterRow> = inventory
        .clusters
        .iter()
        .filter(|c| {
            let location = c.source.as_ref().map_or("", |s| s.location.as_str());
            let name = c.source.as_ref().map_or("", |s| s.name.as_str());
            filter.keeps(&[&c.name, location, name])
        })
        .collect();
    write!(
        o,
        "<h2 id=clusters>Clusters ({})</h2>",
        count(clusters.len(), inventory.clusters.len())
    )?;
    if clusters.is_empty() {
        return write!(o, "<p class=muted>No clusters.</p>");
    }
    capped(o, clusters.len(), "clusters")?;
    write!(
        o,
        "<table><thead><tr><th>Cluster</th><th>Discovery</th><th>Healthy / total endpoints</th>\
         <th>Source</th></tr></thead><tbody>"
    )?;
    for cluster in clusters.into_iter().take(MAX_ROWS) {
        let class = if cluster.healthy == 0 { "nack" } else { "ack" };
        write!(
            o,
            "<tr class=cluster><td><code>{}</code></td><td>{}</td><td class={class}>{} / {}</td><td>",
            esc(&cluster.name),
            esc(&cluster.discovery),
            cluster.healthy,
            cluster.total
        )?;
        source(o, cluster.source.as_ref())?;
        write!(o, "</td></tr>")?;
    }
    write!(o, "</tbody></table>")
}

fn warnings(o: &mut String, status: &StatusView) -> std::fmt::Result {
    let list: Vec<&Diagnostic> = status.applied.iter().flat_map(|a| &a.warnings).collect();
    write!(o, "<h2 id=warnings>Config warnings ({})</h2>", list.len())?;
    if list.is_empty() {
        return write!(o, "<p class=muted>None in the serving revision.</p>");
    }
    write!(o, "<ul class=mono>")?;
    for w in list {
        write!(o, "<li>{}</li>", esc(&w.to_string()))?;
    }
    write!(o, "</ul>")
}

fn history(o: &mut String, state: &State) -> std::fmt::Result {
    let status = state.status();
    write!(
        o,
        "<h2 id=history>Recent revisions ({})</h2>",
        status.history.len()
    )?;
    if status.history.is_empty() {
        return write!(
            o,
            "<p class=muted>None processed since attache started.</p>"
        );
    }
    write!(
        o,
        "<table><thead><tr><th>Processed</th><th>Revision</th><th>Outcome</th>\
         <th>read / parse / translate / publish (ms)</th></tr></thead><tbody>"
    )?;
    for attempt in &status.history {
        let (class, outcome) = match &attempt.outcome {
            Outcome::Accepted { snapshot } => {
                ("ack", format!("accepted as <code>{}</code>", esc(snapshot)))
            }
            Outcome::Rejected { errors } => {
                ("nack", format!("rejected: {} error(s)", errors.len()))
            }
            Outcome::Failed { reason } => ("nack", format!("failed: {}", esc(reason))),
        };
        let t = &attempt.timings;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        write!(o, "<tr><td>{}</td><td>", utc(attempt.at))?;
        commit(o, attempt)?;
        write!(
            o,
            "</td><td class={class}>{outcome}</td><td class=mono>{:.1} / {:.1} / {:.1} / {:.1}</td></tr>",
            ms(t.read),
            ms(t.parse),
            ms(t.translate),
            ms(t.publish)
        )?;
    }
    write!(o, "</tbody></table>")
}
