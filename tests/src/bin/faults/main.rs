//! `cargo xtask faults [--messages N]`: faults under a steady confirmed stream, with a
//! ledger read from the backends. Each scenario runs the real `techub-host` binary
//! (out of process) on Redis and RabbitMQ under names of its own, publishes N
//! messages with publisher confirms to a fixture that records every delivery in Redis,
//! injects its fault mid-stream, and counts from Redis and the broker: published,
//! confirmed, handled, redeliveries, duplicate effects, lost, dead-lettered, and the
//! seconds from the fault's end to the next handled message.
//! Prints a table, writes `target/faults/report.json`, exits 1 on any loss, any
//! duplicate effect, a fenced counter that went back, an acknowledged fenced write
//! lost by a Redis failover with `wait_replicas` on, or a recovery over 5 s.
//! `--only <text>` runs the scenarios whose name contains the text.
//!
//! # Layout
//! - `main.rs`: the scenarios to run and the report.
//! - `stream.rs`: the ledger scenarios (host, broker, network and Redis faults).
//! - `fence.rs`: a lock holder stalled past its lease while another host takes it.
//! - `tally.rs`: the Redis failover scenarios' fenced counter, and the acknowledged
//!   writes a failover lost.
//! - `host.rs`: the host process (config file, start, kill, SIGTERM, readiness).
//! - `ledger.rs`: the publisher and the fixtures' records in Redis.

mod fence;
mod host;
mod ledger;
mod stream;
mod tally;

use stream::Fault;

/// Longest a scenario may take, from the fault's end, to handle a message again.
const MAX_RECOVERY_S: f64 = 5.0;

/// One scenario's counts.
#[derive(Debug, serde::Serialize)]
pub struct Row {
    scenario: &'static str,
    published: usize,
    confirmed: usize,
    handled: usize,
    redeliveries: u64,
    duplicate_effects: i64,
    lost: usize,
    dead_lettered: u64,
    recovery_s: f64,
    /// The stalled-holder scenario's counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    fencing: Option<fence::Fencing>,
    /// The Redis failover scenarios' fenced counter.
    #[serde(skip_serializing_if = "Option::is_none")]
    tally: Option<tally::Tally>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let option = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let messages = option("--messages")
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    // `--only <text>`: the scenarios whose name contains it.
    let only = option("--only").unwrap_or_default();
    let mut rows = Vec::new();
    let faults: Vec<Fault> = Fault::ALL
        .into_iter()
        .filter(|f| f.name().contains(&only))
        .collect();
    // One three-node cluster for all of its scenarios (about 18 s to start).
    let cluster = match faults.iter().any(|f| f.on_cluster()) {
        true => {
            let started = std::time::Instant::now();
            let cluster =
                tokio::task::spawn_blocking(|| techub_tests::RabbitCluster::start(3)).await?;
            println!(
                "a three-node RabbitMQ cluster started in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Some(cluster)
        }
        false => None,
    };
    for fault in faults {
        rows.push(print(
            stream::scenario(fault, messages, cluster.as_ref()).await?,
        ));
    }
    if fence::NAME.contains(&only) {
        rows.push(print(fence::scenario(messages).await?));
    }
    let dir = techub_tests::repo_root().join("target/faults");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    println!("report: {}", dir.join("report.json").display());
    let lost: usize = rows.iter().map(|r| r.lost).sum();
    let duplicate_effects: i64 = rows.iter().map(|r| r.duplicate_effects).sum();
    anyhow::ensure!(lost == 0, "{lost} confirmed message(s) lost");
    let slow: Vec<String> = rows
        .iter()
        .filter(|r| r.recovery_s > MAX_RECOVERY_S)
        .map(|r| format!("{} ({:.2} s)", r.scenario, r.recovery_s))
        .collect();
    anyhow::ensure!(
        slow.is_empty(),
        "recovery took longer than {MAX_RECOVERY_S} s after the fault: {}",
        slow.join(", ")
    );
    anyhow::ensure!(
        duplicate_effects == 0,
        "{duplicate_effects} duplicate effect(s)"
    );
    for fencing in rows.iter().filter_map(|r| r.fencing.as_ref()) {
        fencing.check()?;
    }
    for tally in rows.iter().filter_map(|r| r.tally.as_ref()) {
        tally.check()?;
    }
    Ok(())
}

fn print(row: Row) -> Row {
    println!(
        "{:<40} published {:>5} confirmed {:>5} handled {:>5} redelivered {:>4} duplicate effects {:>2} lost {:>2} dead-lettered {:>2} recovered in {:.2} s",
        row.scenario,
        row.published,
        row.confirmed,
        row.handled,
        row.redeliveries,
        row.duplicate_effects,
        row.lost,
        row.dead_lettered,
        row.recovery_s
    );
    if let Some(fencing) = &row.fencing {
        println!("{:<40} {fencing}", "");
    }
    if let Some(tally) = &row.tally {
        println!("{:<40} {tally}", "");
    }
    row
}
