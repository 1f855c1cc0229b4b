//! The status page at `/`, loaded in a real headless Chromium: the host's version,
//! uptime and backends, the plugin names, their outcome counts, bindings and last
//! failure, a chart of their recent messages/s and p99, the queues, the latest dead letters and the cache hit rate appear; a
//! screenshot is kept in `target/test-artifacts/status-page.png`.

use crate::operations::sample;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use techub_host::Platform;
use techub_tests::{
    PluginDir, artifact, config, grant, init_tracing, publish_user, tool, wait_for,
};

/// Chromium's headless flags for a root user in a container.
const HEADLESS: [&str; 5] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

fn chromium(args: &[String]) -> std::process::Output {
    let profile = tempfile_dir();
    let output = Command::new(tool("chromium", "chromium"))
        .args(HEADLESS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    output
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(techub_tests::unique("chromium-profile"));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_plugins_counts_queues_and_hit_rates_in_a_browser() {
    init_tracing();
    let dir = PluginDir::with(&[
        ("user-notifications", "user_notifications"),
        ("broken", "fixture_trap"),
    ]);
    dir.write("not-a-plugin.wasm", b"nope");
    let mut config = config(&dir);
    grant(
        &mut config,
        "user-notifications",
        &["users"],
        &["notification.*"],
    );
    let platform = Arc::new(Platform::start(config).await.unwrap());
    for i in 0..7 {
        publish_user(&platform, &format!("page-{i}")).await;
    }
    wait_for(Duration::from_secs(30), "seven handled", || async {
        let text = platform.services.metrics.encode();
        let ok = sample(
            &text,
            "techub_invocations_total",
            &[("plugin", "user-notifications"), ("outcome", "ok")],
        );
        (ok == Some(7.0)).then_some(())
    })
    .await;
    // One the plugin rejects: its last failure, and the newest dead letter.
    let rejected = platform
        .publish("user.created", b"not json".to_vec(), None)
        .await
        .unwrap();
    crate::e2e_embedded::dead_letter_of(&platform, &rejected).await;
    // Reads of the users domain, as the cache counts them: 3 hits, 1 miss.
    let stats = &platform.services.cache.stats;
    stats.record("users", techub_host::metrics::CacheEvent::Hit, 3);
    stats.record("users", techub_host::metrics::CacheEvent::Miss, 1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(
        axum::serve(listener, techub_host::admin::router(platform.clone(), None)).into_future(),
    );

    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium(&["--dump-dom".to_string(), url])
    })
    .await
    .unwrap();
    let dom_text = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.status.success() && dom_text.contains("<table"),
        "chromium could not load {url}: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    std::fs::write(artifact("status-page.html"), &dom_text).unwrap();
    // The plugin's row, as the browser parsed it: name, state, version, outbound
    // grants, in flight, then the outcome counts in the order of the header (ok first).
    let row_start = dom_text
        .find("data-plugin=\"user-notifications\"")
        .unwrap_or_else(|| panic!("no row for the plugin in:\n{dom_text}"));
    let row = &dom_text[row_start..row_start + dom_text[row_start..].find("</tr>").unwrap()];
    let cells: Vec<&str> = row
        .split("<td")
        .skip(1)
        .map(|cell| {
            let inner = &cell[cell.find('>').unwrap() + 1..];
            inner.split('<').next().unwrap_or("")
        })
        .collect();
    assert_eq!(cells[0], "user-notifications", "{row}");
    assert_eq!(cells[1], "serving", "{row}");
    assert_eq!(cells[3], "", "it has no outbound grants: {row}");
    assert_eq!(cells[5], "7", "the ok count: {row}");
    let bindings = row.split("class=\"bindings\">").nth(1).unwrap_or_default();
    assert!(
        bindings.starts_with("notification: user.created"),
        "its bindings: {row}"
    );
    let failure = row
        .split("class=\"failure bad\">")
        .nth(1)
        .unwrap_or_default();
    assert!(
        failure.contains("s ago: ") && failure.contains("JSON"),
        "its last failure: {row}"
    );
    let about = dom_text
        .split("id=\"about\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("no about line in:\n{dom_text}"));
    assert!(
        about.starts_with("techub-host ")
            && about.contains(" · up ")
            && about.contains("cache memory, store memory, lock memory, messaging memory"),
        "{about}"
    );
    // The chart of the last minutes, drawn from the traffic above.
    let chart = dom_text
        .split("class=\"rate\" data-plugin=\"user-notifications\"")
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .unwrap_or_else(|| panic!("no chart for the plugin in:\n{dom_text}"));
    let attribute = |name: &str| -> f64 {
        chart
            .split(&format!("{name}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {chart}"))
    };
    assert!(attribute("data-max-rate") > 0.0, "{chart}");
    assert!(attribute("data-max-p99") > 0.0, "{chart}");
    assert_eq!(chart.matches("<polyline").count(), 2, "{chart}");
    let latest = dom_text
        .split("id=\"latest-dead-letters\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no latest dead letters in:\n{dom_text}"));
    let newest = latest
        .split("class=\"dead-letter\"")
        .nth(1)
        .unwrap_or_default();
    assert!(
        newest.contains(&rejected) && newest.contains("rejected:"),
        "the newest dead letter first, with its reason: {latest}"
    );
    assert!(
        dom_text.contains("not-a-plugin.wasm"),
        "failed files are listed"
    );
    assert!(
        dom_text.contains("<td>techub.notification.user-notifications</td>"),
        "the plugin's queue"
    );
    assert!(dom_text.contains("id=\"dead-letters\""));
    let users = dom_text
        .find("<tr><td>users</td>")
        .map(|at| &dom_text[at..at + dom_text[at..].find("</tr>").unwrap()])
        .unwrap_or_else(|| panic!("no row for the users domain in:\n{dom_text}"));
    let cells: Vec<&str> = users
        .split("<td")
        .skip(1)
        .map(|cell| {
            cell[cell.find('>').unwrap() + 1..]
                .split('<')
                .next()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(
        cells,
        ["users", "3", "1", "7", "75.0 %"],
        "hits, misses, the seven writes and the hit rate: {users}"
    );

    let screenshot = artifact("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot = tokio::task::spawn_blocking({
        let shot_arg = format!("--screenshot={}", screenshot.display());
        move || chromium(&[shot_arg, "--window-size=1400,1000".to_string(), url])
    })
    .await
    .unwrap();
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot ({size} bytes): {}",
        String::from_utf8_lossy(&shot.stderr)
    );
}
