//! `cargo xtask faults [--messages N]`: faults under a steady confirmed stream, with a
//! ledger read from the backends. Each scenario runs the real `techub-host` binary
//! (out of process) on Redis and RabbitMQ under names of its own, publishes N
//! messages with publisher confirms to the `ledger` fixture (which records every
//! delivery in Redis), injects its fault mid-stream, and counts from Redis and the
//! broker: published, confirmed, handled, redeliveries, duplicate effects, lost,
//! dead-lettered, and the seconds from the fault's end to the next handled message.
//! Scenarios: `kill -9` and SIGTERM of the host mid-stream, each restarted; two hosts
//! competing, one killed for good; the host's own Redis down for 5 s.
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
    /// Two hosts compete for the queue; one is killed for good.
    KillOneOfTwo,
    /// The host's own Redis (where its store, and the ledger, live) killed for 5 s,
    /// then restarted with its data (append-only file).
    RedisOutage,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9 mid-stream, restart",
            Fault::Term => "SIGTERM mid-stream (drain), restart",
            Fault::KillOneOfTwo => "two hosts, one killed for good",
            Fault::RedisOutage => "the host's Redis down 5 s",
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
    // The Redis outage needs a Redis of its own, which keeps its data across the
    // restart (an append-only file in a directory of its own).
    let data = tempfile::tempdir()?;
    let data_dir = data.path().display().to_string();
    let mut own_redis = match fault {
        Fault::RedisOutage => {
            let args = [
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                &data_dir,
            ];
            let redis = techub_tests::OwnRedis::start_with(&args).await;
            host.use_redis(&redis.url())?;
            Some(redis)
        }
        _ => None,
    };
    let mut sibling = match fault {
        Fault::KillOneOfTwo => Some(host.sibling()?),
        _ => None,
    };
    host.start()?;
    host.ready().await?;
    if let Some(sibling) = &mut sibling {
        sibling.start()?;
        sibling.ready().await?;
    }
    let publisher = Publisher::connect(&host.config).await?;
    let ledger = Ledger::new(&host.config).await?;
    let stream = publisher.stream(messages);
    // Fault when half the stream is confirmed.
    while publisher.confirmed().len() < messages / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match fault {
        Fault::Kill | Fault::KillOneOfTwo => host.kill(),
        Fault::Term => host.terminate(Duration::from_secs(30))?,
        Fault::RedisOutage => own_redis.as_mut().expect("started above").kill(),
    }
    let outage = match fault {
        Fault::RedisOutage => Duration::from_secs(5),
        _ => Duration::from_secs(1),
    };
    tokio::time::sleep(outage).await;
    // The fault ends: the host (or its Redis) is back; the sibling never left.
    match fault {
        Fault::Kill | Fault::Term => host.start()?,
        Fault::RedisOutage => own_redis.as_mut().expect("started above").restart().await,
        Fault::KillOneOfTwo => {}
    }
    let before = ledger.handled().await?.len();
    let restarted = Instant::now();
    // Recovered: something more was handled, or (the stream having ended) all of it.
    let recovery = loop {
        let handled = ledger.handled().await?;
        let all =
            stream.is_finished() && publisher.confirmed().iter().all(|id| handled.contains(id));
        if handled.len() > before || all {
            break restarted.elapsed();
        }
        anyhow::ensure!(
            restarted.elapsed() < Duration::from_secs(60),
            "{}: nothing handled within 60 s of the fault's end",
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
    if let Some(sibling) = &mut sibling {
        sibling.terminate(Duration::from_secs(30))?;
    }
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
    for fault in [
        Fault::Kill,
        Fault::Term,
        Fault::KillOneOfTwo,
        Fault::RedisOutage,
    ] {
        let row = scenario(fault, messages).await?;
        println!(
            "{:<36} published {:>5} confirmed {:>5} handled {:>5} redelivered {:>4} duplicate effects {:>2} lost {:>2} dead-lettered {:>2} recovered in {:.2} s",
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
