//! A lock holder stalled past its lease while a second host takes the lock.
//!
//! Two hosts run the `fenced` fixture, which adds one to a counter per message under
//! the lock `counter` (1 s lease), writing with the lease's fencing token. On host A
//! the fixture also passes the lock `gate` between its read and its write; the suite
//! holds `gate` for 2.5 s, three times mid-stream, so A's holder stalls there past its
//! lease while host B takes `counter` and counts on. When A wakes, its write carries
//! the older token and the store refuses it; A retries the message.
//!
//! Counted from Redis: every confirmed id in `counted`; the counter equal to the
//! number of ids counted (a stale write that landed would have set it back and lost
//! B's increments); the critical sections that overlapped (entered while another was
//! inside); the stale writes refused.

use crate::Row;
use crate::host::{Fixture, HostProcess};
use crate::ledger::{Ledger, Publisher};
use std::time::{Duration, Instant};
use techub_host::capability::redis_client::Retry;

const FENCED: Fixture = Fixture {
    plugin: "fenced",
    wasm: "fixture_fenced",
    subscribe: "fixture.fenced.#",
};
/// How many times the suite stalls host A's holder.
const STALLS: usize = 3;
/// How long each stall holds the gate: past the 1 s lease, inside the 10 s the
/// fixture waits for the gate.
const STALL: Duration = Duration::from_millis(2_500);

/// The stalled-holder scenario's counts.
#[derive(Debug, serde::Serialize)]
pub struct Fencing {
    stalls: usize,
    /// The counter's final value.
    counter: i64,
    /// Messages whose increment landed.
    counted: usize,
    /// Critical sections entered while another holder was still inside.
    overlapping_sections: i64,
    /// Writes with a stale fencing token, refused by the store.
    stale_writes_refused: i64,
}

impl Fencing {
    /// The counter never went back, and the stalls did produce stale writes (else the
    /// scenario tested nothing).
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.counter == self.counted as i64,
            "the fenced counter is {} after {} increments: a stale holder's write landed",
            self.counter,
            self.counted
        );
        anyhow::ensure!(
            self.stale_writes_refused > 0,
            "{} stalls past the lease produced no stale write: the scenario tested nothing",
            self.stalls
        );
        Ok(())
    }
}

impl std::fmt::Display for Fencing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} stalls: counter {} for {} increments, {} overlapping critical sections, {} stale writes refused",
            self.stalls,
            self.counter,
            self.counted,
            self.overlapping_sections,
            self.stale_writes_refused
        )
    }
}

/// The scenario's name in the report.
pub const NAME: &str = "a lock holder stalled past its lease";

pub async fn scenario(messages: usize) -> anyhow::Result<Row> {
    let name = NAME;
    let mut a = HostProcess::configure(name, FENCED)?;
    let plugin = a.config.plugins.get_mut(FENCED.plugin).expect("configured");
    // The stalled invocation must outlive its stall, not time out in it.
    plugin.limits.timeout_ms = Some(20_000);
    let mut b = a.sibling()?;
    a.rewrite(|config| {
        let plugin = config.plugins.get_mut(FENCED.plugin).expect("configured");
        plugin.settings.insert("gate".into(), "on".into());
    })?;
    a.start()?;
    b.start()?;
    a.ready().await?;
    b.ready().await?;
    let publisher = Publisher::connect(&a.config).await?;
    let ledger = Ledger::new(&a.config, FENCED.plugin).await?;
    let gate = format!("{}lock:{}:gate", a.config.host.key_prefix, FENCED.plugin);
    let stream = publisher.stream("fixture.fenced.m", messages);
    let mut last_stall_end = Instant::now();
    for stall in 1..=STALLS {
        while publisher.confirmed().len() < messages * stall / (STALLS + 1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        hold(&ledger, &gate, STALL).await?;
        last_stall_end = Instant::now();
    }
    let before = ledger.members("counted").await?.len();
    let recovery = loop {
        let counted = ledger.members("counted").await?.len();
        if counted > before || (stream.is_finished() && counted >= publisher.confirmed().len()) {
            break last_stall_end.elapsed();
        }
        anyhow::ensure!(
            last_stall_end.elapsed() < Duration::from_secs(60),
            "{name}: nothing counted within 60 s of the last stall"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let published = stream.await??;
    let confirmed = publisher.confirmed();
    let settled = Instant::now();
    let counted = loop {
        let counted = ledger.members("counted").await?;
        if confirmed.iter().all(|id| counted.contains(id))
            || settled.elapsed() > Duration::from_secs(60)
        {
            break counted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let counter = match ledger.bytes("counter").await? {
        None => 0,
        Some(bytes) => fenced_value(&bytes)?,
    };
    let attempts = ledger.attempts().await?;
    let fencing = Fencing {
        stalls: STALLS,
        counter,
        counted: counted.len(),
        overlapping_sections: ledger.number("overlaps").await?,
        stale_writes_refused: ledger.number("refused").await?,
    };
    let dead_lettered = publisher.dead_letter_depth().await?;
    a.terminate(Duration::from_secs(30))?;
    b.terminate(Duration::from_secs(30))?;
    Ok(Row {
        scenario: name,
        published,
        confirmed: confirmed.len(),
        handled: counted.len(),
        redeliveries: attempts.values().map(|n| n.saturating_sub(1)).sum(),
        // Each counted message adds one; the fixture has no other effect.
        duplicate_effects: 0,
        lost: confirmed.iter().filter(|id| !counted.contains(*id)).count(),
        dead_lettered,
        recovery_s: recovery.as_secs_f64(),
        fencing: Some(fencing),
        tally: None,
    })
}

/// Holds the fixture's lock `gate` (its Redis key) for `stall`, taking it as soon as
/// host A's holders let go of it.
async fn hold(ledger: &Ledger, gate: &str, stall: Duration) -> anyhow::Result<()> {
    let redis = ledger.redis();
    let owner = format!("fault-suite-{}", uuid::Uuid::new_v4());
    let ttl_ms = (stall.as_millis() as u64) * 4;
    let started = Instant::now();
    loop {
        let taken: Option<String> = redis
            .run("hold the gate", Retry::Never, |mut c| {
                let cmd = redis::cmd("SET")
                    .arg(gate)
                    .arg(&owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await
            .map_err(anyhow::Error::msg)?;
        if taken.is_some() {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the gate stayed held by the fixture for 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(stall).await;
    redis
        .run("open the gate", Retry::Idempotent, |mut c| {
            let cmd = redis::cmd("DEL").arg(gate).clone();
            async move { cmd.query_async::<i64>(&mut c).await }
        })
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

/// The number in a value `store::set_fenced` wrote (`<token>\n<value>`).
pub fn fenced_value(bytes: &[u8]) -> anyhow::Result<i64> {
    let text = std::str::from_utf8(bytes)?;
    let (_token, value) = text
        .split_once('\n')
        .ok_or_else(|| anyhow::anyhow!("the counter is not a fenced value: {text:?}"))?;
    Ok(value.parse()?)
}
