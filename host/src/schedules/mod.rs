//! `[schedules.<name>]`: the host publishes a message on the clock, once per tick
//! across all hosts.
//!
//! Every host runs the same clock: a tick is a time all of them compute alike (a cron
//! occurrence, or a multiple of `every` since the Unix epoch). At a tick each host
//! tries to claim it in the store (`SET NX` of `schedule:<name>:<tick ms>` with a TTL,
//! so on Redis the hosts share it); the one that wins publishes the message, with the
//! schedule's name and the tick's time (RFC 3339) in its headers and
//! `schedule:<name>:<tick ms>` as its message id, persistently and confirmed, retrying
//! once a second until the next tick if the broker refuses. It then records the tick
//! as the schedule's last.
//!
//! A restart: a host that starts publishes the most recent tick it missed, if that tick
//! is newer than the schedule's last recorded tick and at most [`CATCH_UP`] old (the
//! claim makes that once across hosts too); older missed ticks are skipped, with a
//! warning. A schedule new to the store fires from its next tick. `host.toml` reloads
//! apply within a second: added schedules start, removed ones stop.
//!
//! # Layout
//! - this file: the loop ([`spawn`]), the claim and the publish.
//! - `ticks.rs`: when a schedule ticks (next, and the latest before now).

mod ticks;

use crate::capability::messaging::operator::{OperatorMessage, publish_operator};
use crate::capability::store::SetCondition;
use crate::config::HostConfig;
use crate::services::Services;
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The oldest missed tick a starting host still publishes.
pub const CATCH_UP: Duration = Duration::from_secs(3600);
/// How often the loop looks at the configuration when no tick is due sooner.
const LOOK: Duration = Duration::from_secs(1);
/// How long a tick's claim is kept: past the oldest tick a starting host may still
/// claim ([`CATCH_UP`]), and no longer, so that a frequent schedule keeps about an
/// hour of claims (3 900 keys for `every = "1s"`), not days of them.
const CLAIM_TTL: Duration = Duration::from_secs(CATCH_UP.as_secs() + 300);

/// Runs the schedules of `config` (as reloaded) until `stopping`.
pub fn spawn(
    services: Arc<Services>,
    config: Arc<ArcSwap<HostConfig>>,
    stopping: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut fired: HashMap<String, DateTime<Utc>> = HashMap::new();
        catch_up(&services, &config.load_full(), &mut fired).await;
        loop {
            let current = config.load_full();
            fired.retain(|name, _| current.schedules.contains_key(name));
            let now = Utc::now();
            let mut wait = LOOK;
            for (name, schedule) in &current.schedules {
                let Ok(timing) = schedule.timing(name) else {
                    continue;
                };
                // Each schedule fires its ticks up to now, once each in this host.
                let since = fired.entry(name.clone()).or_insert(now);
                while let Some(tick) = ticks::next_after(&timing, *since).filter(|t| *t <= now) {
                    *since = tick;
                    fire(
                        &services,
                        &current,
                        name,
                        tick,
                        ticks::next_after(&timing, tick),
                    )
                    .await;
                }
                if let Some(next) = ticks::next_after(&timing, *since) {
                    let until = (next - Utc::now()).to_std().unwrap_or_default();
                    wait = wait.min(until);
                }
            }
            tokio::select! {
                () = stopping.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// At start: the most recent tick of each schedule, if it was missed (newer than the
/// schedule's last recorded tick) and at most [`CATCH_UP`] old.
async fn catch_up(
    services: &Services,
    config: &HostConfig,
    fired: &mut HashMap<String, DateTime<Utc>>,
) {
    let now = Utc::now();
    for (name, schedule) in &config.schedules {
        let Ok(timing) = schedule.timing(name) else {
            continue;
        };
        fired.insert(name.clone(), now);
        let Some(missed) = ticks::latest_at_or_before(&timing, now) else {
            continue;
        };
        let last = match services.store.get(&last_key(config, name)).await {
            Ok(Some(value)) => String::from_utf8_lossy(&value).parse::<i64>().ok(),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(schedule = %name, %error, "could not read the schedule's last tick; no catch-up");
                continue;
            }
        };
        // New to the store: it starts with its next tick.
        let Some(last) = last else { continue };
        if missed.timestamp_millis() <= last {
            continue;
        }
        let age = (now - missed).to_std().unwrap_or_default();
        if age > CATCH_UP {
            tracing::warn!(schedule = %name, tick = %missed.to_rfc3339(), "a tick missed while no host ran is older than {} s: skipped", CATCH_UP.as_secs());
            continue;
        }
        fire(
            services,
            config,
            name,
            missed,
            ticks::next_after(&timing, missed),
        )
        .await;
    }
}

fn last_key(config: &HostConfig, name: &str) -> String {
    format!("{}schedule:{name}:last", config.host.key_prefix)
}

/// Claims `tick` of schedule `name` and, if this host won it, publishes its message,
/// retrying a refused publish until the schedule's `next` tick.
async fn fire(
    services: &Services,
    config: &HostConfig,
    name: &str,
    tick: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) {
    let Some(schedule) = config.schedules.get(name) else {
        return;
    };
    let tick_ms = tick.timestamp_millis();
    let claim = format!("{}schedule:{name}:{tick_ms}", config.host.key_prefix);
    let host = config.host.key_prefix.clone();
    match services
        .store
        .set(
            &claim,
            host.as_bytes(),
            Some(CLAIM_TTL),
            SetCondition::IfAbsent,
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(schedule = %name, tick = %tick.to_rfc3339(), "tick claimed by another host");
            return;
        }
        Err(error) => {
            tracing::warn!(schedule = %name, %error, "could not claim a tick: not published by this host");
            return;
        }
    }
    let message = || OperatorMessage {
        priority: None,
        message_id: Some(format!("schedule:{name}:{tick_ms}")),
        correlation_id: None,
        headers: vec![
            ("schedule".into(), name.to_string()),
            ("scheduled-for".into(), tick.to_rfc3339()),
        ],
    };
    loop {
        match publish_operator(
            &services.messaging,
            config.host.max_message_bytes,
            &schedule.routing_key,
            schedule.payload_json(),
            message(),
        )
        .await
        {
            Ok(_) => break,
            Err(error) => {
                if next.is_some_and(|n| Utc::now() + chrono::Duration::seconds(1) >= n) {
                    tracing::error!(schedule = %name, tick = %tick.to_rfc3339(), error = format!("{error:#}"), "tick not published before the next one: skipped");
                    return;
                }
                tracing::warn!(schedule = %name, error = format!("{error:#}"), "tick not published yet; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let lag_ms = (Utc::now() - tick).num_milliseconds();
    tracing::info!(schedule = %name, tick = %tick.to_rfc3339(), lag_ms, routing_key = %schedule.routing_key, "schedule tick published");
    if let Err(error) = services
        .store
        .set(
            &last_key(config, name),
            tick_ms.to_string().as_bytes(),
            None,
            SetCondition::Always,
        )
        .await
    {
        tracing::warn!(schedule = %name, %error, "could not record the schedule's last tick");
    }
}
