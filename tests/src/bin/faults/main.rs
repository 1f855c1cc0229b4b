//! `cargo xtask faults [--messages N]`: faults under a steady confirmed stream, with a
//! ledger read from the backends. Each scenario runs the real `techub-host` binary
//! (out of process) on Redis and RabbitMQ under names of its own, publishes N
//! messages with publisher confirms to the `ledger` fixture (which records every
//! delivery in Redis), injects its fault mid-stream, and counts from Redis and the
//! broker: published, confirmed, handled, redeliveries, duplicate effects, lost,
//! dead-lettered, and the seconds from the fault's end to the next handled message.
//! Prints a table, writes `target/faults/report.json`, exits 1 on any loss.
//!
//! # Layout
//! - `main.rs`: the scenarios and the report.
//! - `host.rs`: the host process (config file, start, kill, SIGTERM, readiness).
//! - `ledger.rs`: the publisher and the ledger's counts from Redis.

mod host;
mod ledger;

use host::HostProcess;
use ledger::{Ledger, Publisher};
use std::time::{Duration, Instant};

/// One scenario's fault, injected when half the messages are confirmed.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `kill -9` of the host, then a restart.
    Kill,
    /// SIGTERM (the host drains what it holds), then a restart.
    Term,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9 mid-stream, restart",
            Fault::Term => "SIGTERM mid-stream (drain), restart",
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct Row {
    scenario: &'static str,
    published: usize,
    confirmed: usize,
    handled: usize,
    redeliveries: u64,
    duplicate_effects: i64,
    lost: usize,
    dead_lettered: u64,
    recovery_s: f64,
}

async fn scenario(fault: Fault, messages: usize) -> anyhow::Result<Row> {
    let mut host = HostProcess::configure(fault.name())?;
    host.start()?;
    host.ready().await?;
    let publisher = Publisher::connect(&host.config).await?;
    let ledger = Ledger::new(&host.config).await;
    let stream = publisher.stream(messages);
    // Fault when half the stream is confirmed.
    while publisher.confirmed().len() < messages / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match fault {
        Fault::Kill => host.kill(),
        Fault::Term => host.terminate(Duration::from_secs(30))?,
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ledger.handled().await?.len();
    host.start()?;
    let restarted = Instant::now();
    let recovery = loop {
        if ledger.handled().await?.len() > before {
            break restarted.elapsed();
        }
        anyhow::ensure!(
            restarted.elapsed() < Duration::from_secs(60),
            "{}: nothing handled within 60 s of the restart",
            fault.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let published = stream.await??;
    let confirmed = publisher.confirmed();
    // Until every confirmed message is handled, or 60 s pass.
    let settled = Instant::now();
    let handled = loop {
        let handled = ledger.handled().await?;
        if confirmed.iter().all(|id| handled.contains(id))
            || settled.elapsed() > Duration::from_secs(60)
        {
            break handled;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attempts = ledger.attempts().await?;
    let effects = ledger.effects().await?;
    let dead_lettered = publisher.dead_letter_depth().await?;
    host.terminate(Duration::from_secs(30))?;
    Ok(Row {
        scenario: fault.name(),
        published,
        confirmed: confirmed.len(),
        handled: handled.len(),
        redeliveries: attempts.values().map(|n| n.saturating_sub(1)).sum(),
        duplicate_effects: effects - handled.len() as i64,
        lost: confirmed.iter().filter(|id| !handled.contains(*id)).count(),
        dead_lettered,
        recovery_s: recovery.as_secs_f64(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let messages = std::env::args()
        .skip_while(|a| a != "--messages")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let mut rows = Vec::new();
    for fault in [Fault::Kill, Fault::Term] {
        let row = scenario(fault, messages).await?;
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
        rows.push(row);
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
    anyhow::ensure!(
        duplicate_effects == 0,
        "{duplicate_effects} duplicate effect(s)"
    );
    Ok(())
}
