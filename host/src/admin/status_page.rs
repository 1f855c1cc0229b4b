//! `GET /`: a status page for people, rendered on the server (no script, no build
//! step): plugins with state, version and outcome counts, queues with depth, the
//! dead-letter queue, and the cache hit rate per domain over the last hour.

use crate::Platform;
use crate::capability::cache::Window;
use crate::capability::messaging::{DeadLetterFill, now_ms};
use crate::names::topology::queue_name;
use axum::extract::State;
use axum::response::Html;
use std::fmt::Write;
use std::sync::Arc;

/// Text made safe to place in HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin-bottom:2em}th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}\
th{background:#f4f4f4}td.n{text-align:right}.serving{color:#060}.draining,.loading{color:#a60}.failed,.bad{color:#b00}";

/// The page.
pub(super) async fn page(State(platform): State<Arc<Platform>>) -> Html<String> {
    let services = &platform.services;
    let (plugins, failed) = platform.registry().plugins().await;
    let mut html = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>techub status</title><style>{STYLE}</style></head><body><h1>techub</h1>"
    );

    html.push_str("<h2>Plugins</h2><table id=\"plugins\"><tr><th>plugin</th><th>state</th><th>version</th><th>outbound</th><th>in flight</th>");
    let outcomes = [
        "ok",
        "retry",
        "reject",
        "trap",
        "cpu_limit",
        "timeout",
        "memory_limit",
    ];
    for outcome in outcomes {
        let _ = write!(html, "<th>{outcome}</th>");
    }
    html.push_str("</tr>");
    for plugin in &plugins {
        let state = format!("{:?}", plugin.state).to_lowercase();
        let counts = services.metrics.plugin(&plugin.name).outcome_counts();
        let _ = write!(
            html,
            "<tr class=\"plugin\" data-plugin=\"{name}\"><td>{name}</td><td class=\"{state}\">{state}</td><td><code>{version}</code></td><td class=\"outbound\">{outbound}</td><td class=\"n\">{in_flight}</td>",
            name = escape(&plugin.name),
            outbound = escape(&plugin.outbound.join(" ")),
            version = escape(plugin.version.get(..12).unwrap_or(&plugin.version)),
            in_flight = plugin.in_flight,
        );
        for (_, count) in counts {
            let _ = write!(html, "<td class=\"n\">{count}</td>");
        }
        html.push_str("</tr>");
    }
    for file in &failed {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"failed\">failed</td><td colspan=\"10\">{}</td></tr>",
            escape(&file.file),
            escape(&file.reason)
        );
    }
    html.push_str("</table>");

    html.push_str(
        "<h2>Queues</h2><table id=\"queues\"><tr><th>queue</th><th>plugin</th><th>ready</th></tr>",
    );
    let prefix = platform.registry().queue_prefix();
    for plugin in &plugins {
        for (queue_type, _) in &plugin.subscriptions {
            let queue = queue_name(&prefix, queue_type, &plugin.name);
            let depth = match services.broker.queue_depth(&queue).await {
                Ok(Some(depth)) => depth.to_string(),
                Ok(None) => "gone".to_string(),
                Err(_) => "unavailable".to_string(),
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{depth}</td></tr>",
                escape(&queue),
                escape(&plugin.name)
            );
        }
    }
    let dead = match DeadLetterFill::read(services.broker.as_ref(), &platform.config().dead_letter)
        .await
    {
        Ok(fill) if fill.is_full() => format!(
            "{} <span class=\"bad\" id=\"dead-letters-full\">full: new dead letters wait in their retry queues</span>",
            fill.depth
        ),
        Ok(fill) => fill.depth.to_string(),
        Err(_) => "unavailable".to_string(),
    };
    let _ = write!(
        html,
        "<tr><td>dead letters</td><td></td><td class=\"n\" id=\"dead-letters\">{dead}</td></tr></table>"
    );

    html.push_str("<h2>Cache, last hour</h2><table id=\"cache\"><tr><th>domain</th><th>hits</th><th>misses</th><th>writes</th><th>hit rate</th></tr>");
    let window = Some(Window {
        start_ms: now_ms().saturating_sub(3_600_000),
        end_ms: None,
    });
    for domain in platform.config().cache.domains.keys() {
        let stats = services
            .cache_stats
            .sum(std::slice::from_ref(domain), window)
            .await;
        let reads = stats.hits + stats.misses;
        if reads + stats.sets + stats.deletes == 0 {
            continue; // an idle domain
        }
        let rate = match reads {
            0 => "-".to_string(),
            reads => format!("{:.1} %", stats.hits as f64 * 100.0 / reads as f64),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{rate}</td></tr>",
            escape(domain),
            stats.hits,
            stats.misses,
            stats.sets,
        );
    }
    html.push_str("</table><p>Machine-readable: <a href=\"/metrics\">/metrics</a>, <a href=\"/plugins\">/plugins</a>, <a href=\"/dead-letters\">/dead-letters</a>, <a href=\"/cache/stats\">/cache/stats</a>.</p></body></html>");
    Html(html)
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(
            super::escape("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
