//! `GET /`: a status page for people, rendered on the server (no script, no build
//! step): the host's version, uptime and backends; plugins with state, version,
//! outcome counts, bindings and last failure; a chart of each plugin's messages/s
//! and p99 over the last five minutes; queues with depth, the dead-letter
//! queue and its latest letters; and the cache hit rate per domain over the last hour.

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
    let _ = write!(html, "<p id=\"about\">{}</p>", escape(&about(&platform)));

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
    html.push_str("<th>bindings</th><th>last failure</th></tr>");
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
        let bindings: Vec<String> = plugin
            .subscriptions
            .iter()
            .map(|(queue_type, keys)| format!("{queue_type}: {}", keys.join(" ")))
            .collect();
        let failure = services.metrics.plugin(&plugin.name).last_failure();
        let failure = match (&plugin.last_error, failure) {
            (Some(error), _) => error.clone(),
            (None, Some((at_ms, reason))) => {
                let ago = now_ms().saturating_sub(at_ms) / 1000;
                format!("{ago} s ago: {reason}")
            }
            (None, None) => String::new(),
        };
        let _ = write!(
            html,
            "<td class=\"bindings\">{}</td><td class=\"failure bad\">{}</td></tr>",
            escape(&bindings.join("; ")),
            escape(&failure)
        );
    }
    for file in &failed {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"failed\">failed</td><td colspan=\"12\">{}</td></tr>",
            escape(&file.file),
            escape(&file.reason)
        );
    }
    html.push_str("</table>");

    recent_chart(&platform, &plugins, &mut html);

    html.push_str(
        "<h2>Queues</h2><table id=\"queues\"><tr><th>queue</th><th>plugin</th><th>ready</th></tr>",
    );
    let prefix = platform.registry().queue_prefix();
    for plugin in &plugins {
        for (queue_type, _) in &plugin.subscriptions {
            let queue = queue_name(&prefix, queue_type, &plugin.name);
            let depth = match services.messaging.broker.queue_depth(&queue).await {
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
    let dead = match DeadLetterFill::read(
        services.messaging.broker.as_ref(),
        &platform.config().dead_letter,
    )
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
    latest_dead_letters(&platform, &mut html).await;

    html.push_str("<h2>Cache, last hour</h2><table id=\"cache\"><tr><th>domain</th><th>hits</th><th>misses</th><th>writes</th><th>hit rate</th></tr>");
    let window = Some(Window {
        start_ms: now_ms().saturating_sub(3_600_000),
        end_ms: None,
    });
    for domain in platform.config().cache.domains.keys() {
        let stats = services
            .cache
            .stats
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

/// Chart size, in CSS pixels.
const CHART_WIDTH: f64 = 300.0;
const CHART_HEIGHT: f64 = 48.0;

/// Each serving plugin's messages/s (blue) and p99 (orange) over the last five
/// minutes, as an inline SVG (the page refreshes itself every 5 s).
fn recent_chart(platform: &Platform, plugins: &[crate::registry::PluginInfo], html: &mut String) {
    if !platform.services.metrics.enabled() {
        return;
    }
    let now_s = now_ms() / 1000;
    html.push_str("<h2>Last 5 minutes</h2><table id=\"recent\"><tr><th>plugin</th><th>messages/s <span style=\"color:#06c\">&#9632;</span> and p99 <span style=\"color:#d70\">&#9632;</span></th><th>now</th></tr>");
    for plugin in plugins {
        let points = platform.services.metrics.plugin(&plugin.name).recent(now_s);
        let max = |value: fn(&crate::metrics::RecentPoint) -> f64| {
            points.iter().map(value).fold(0.0, f64::max)
        };
        let (max_rate, max_p99) = (max(|p| p.per_second), max(|p| p.p99_ms));
        let line = |value: fn(&crate::metrics::RecentPoint) -> f64, top: f64| {
            let step = CHART_WIDTH / (points.len().max(2) - 1) as f64;
            points
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let y = match top > 0.0 {
                        true => CHART_HEIGHT - value(p) / top * (CHART_HEIGHT - 2.0) - 1.0,
                        false => CHART_HEIGHT - 1.0,
                    };
                    format!("{:.1},{y:.1}", i as f64 * step)
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let last = points.last().copied();
        let _ = write!(
            html,
            "<tr><td>{name}</td><td><svg class=\"rate\" data-plugin=\"{name}\" data-max-rate=\"{max_rate:.2}\" data-max-p99=\"{max_p99:.1}\" width=\"{CHART_WIDTH}\" height=\"{CHART_HEIGHT}\" viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\">\
             <title>up to {max_rate:.1} messages/s, p99 up to {max_p99:.1} ms</title>\
             <polyline fill=\"none\" stroke=\"#06c\" stroke-width=\"1.5\" points=\"{rate}\"/>\
             <polyline fill=\"none\" stroke=\"#d70\" stroke-width=\"1\" points=\"{p99}\"/></svg></td>\
             <td class=\"n\">{now_rate:.1}/s, p99 {now_p99:.1} ms</td></tr>",
            name = escape(&plugin.name),
            rate = line(|p| p.per_second, max_rate),
            p99 = line(|p| p.p99_ms, max_p99),
            now_rate = last.map_or(0.0, |p| p.per_second),
            now_p99 = last.map_or(0.0, |p| p.p99_ms),
        );
    }
    html.push_str("</table>");
}

/// How many of the newest dead letters the page lists.
const LATEST_DEAD_LETTERS: usize = 5;
/// Deepest dead-letter queue whose newest letters the page reads (past it, the oldest).
const MAX_PEEKED: usize = 500;

/// `techub-host 0.1.0 · up 2 h 5 min · cache redis, store redis, lock redis, messaging
/// amqp · redis single`.
fn about(platform: &Platform) -> String {
    let config = platform.config();
    let b = &config.backends;
    let name = |backend: crate::config::KvBackend| format!("{backend:?}").to_lowercase();
    let uptime = platform.uptime().as_secs();
    let uptime = match uptime {
        s if s < 60 => format!("{s} s"),
        s if s < 3_600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
    };
    let mut about = format!(
        "techub-host {} · up {uptime} · cache {}, store {}, lock {}, messaging {}",
        env!("CARGO_PKG_VERSION"),
        name(b.cache),
        name(b.store),
        name(b.lock),
        format!("{:?}", b.messaging).to_lowercase(),
    );
    if platform.services.redis.is_some() {
        about.push_str(&format!(" · redis {:?}", config.redis.mode).to_lowercase());
    }
    about
}

/// The newest dead letters, with their queue and reason.
async fn latest_dead_letters(platform: &Platform, html: &mut String) {
    let broker = platform.services.messaging.broker.as_ref();
    let Ok(fill) = DeadLetterFill::read(broker, &platform.config().dead_letter).await else {
        return;
    };
    let depth = usize::try_from(fill.depth).unwrap_or(usize::MAX);
    // The newest are at the end of the queue: a peek reads every letter before them,
    // so past a bound the page shows the oldest instead (it refreshes every 5 s).
    let (offset, title) = match depth <= MAX_PEEKED {
        true => (
            depth.saturating_sub(LATEST_DEAD_LETTERS),
            "Latest dead letters",
        ),
        false => (0, "Oldest dead letters"),
    };
    let Ok(letters) = broker.dead_letters(offset, LATEST_DEAD_LETTERS).await else {
        return;
    };
    let _ = write!(
        html,
        "<h2>{title}</h2><table id=\"latest-dead-letters\"><tr><th>id</th><th>queue</th><th>reason</th></tr>"
    );
    let newest_first: Vec<_> = match offset {
        0 if depth > MAX_PEEKED => letters.iter().collect(),
        _ => letters.iter().rev().collect(),
    };
    for letter in newest_first {
        let _ = write!(
            html,
            "<tr class=\"dead-letter\"><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            escape(&letter.envelope.id),
            escape(&letter.queue),
            escape(&letter.reason)
        );
    }
    html.push_str("</table>");
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
