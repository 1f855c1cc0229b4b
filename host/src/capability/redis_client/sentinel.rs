//! `[redis] mode = "sentinel"`: a connection to the primary the sentinels name, and a
//! new one when a failover names another.
//!
//! redis-rs asks the sentinels for the primary once per connection it opens; its
//! `ConnectionManager` then reconnects to that same address for ever. So the host
//! asks again after a failed command that suggests the primary moved: a refused or
//! dropped connection (the old primary is down) or `READONLY` (it came back demoted to
//! a replica). Asking is rate-limited, so a dead sentinel set is not hammered.

use crate::config::{RedisConfig, redact_url};
use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The primary's connection, following failovers.
pub struct FollowPrimary {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The primary's address (no credentials in it) and a connection to it.
    current: RwLock<(String, ConnectionManager, redis::Client)>,
    manager_config: ConnectionManagerConfig,
    connect_timeout: Duration,
    /// When the sentinels were last asked.
    asked: Mutex<Instant>,
    /// Least time between two questions to the sentinels.
    ask_every: Duration,
    master_name: String,
}

/// Whether `error` says the primary may have moved.
fn primary_may_have_moved(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

impl FollowPrimary {
    /// Asks the sentinels of `config` for the primary and connects to it.
    pub(super) async fn connect(
        config: &RedisConfig,
        manager_config: ConnectionManagerConfig,
    ) -> anyhow::Result<Self> {
        let sentinels = config
            .sentinels
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>();
        let described = format!(
            "the primary {:?} of sentinels {sentinels:?}",
            config.master_name
        );
        // The primary's user, password and database come from `url`.
        let primary = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| anyhow::anyhow!("invalid redis.url: {:?}", e.kind()))?;
        let node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(primary.redis_settings().clone());
        let mut client = SentinelClient::build(
            config.sentinels.clone(),
            config.master_name.clone(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(|e| anyhow::anyhow!("invalid redis.sentinels {sentinels:?}: {:?}", e.kind()))?;
        let connect_timeout = Duration::from_millis(config.connection_timeout_ms);
        let current = Self::open(&mut client, &manager_config, connect_timeout)
            .await
            .map_err(|reason| anyhow::anyhow!("could not connect to {described}: {reason}"))?;
        tracing::info!(primary = %current.0, master_name = %config.master_name, "Redis primary found through the sentinels");
        Ok(Self {
            sentinels: tokio::sync::Mutex::new(client),
            current: RwLock::new(current),
            manager_config,
            connect_timeout,
            asked: Mutex::new(Instant::now()),
            ask_every: Duration::from_millis(config.retry_delay_ms.clamp(50, 1_000)),
            master_name: config.master_name.clone(),
        })
    }

    /// Asks the sentinels for the primary and connects to it: its address and the
    /// connection, or why not (no URL or password in the text).
    async fn open(
        sentinels: &mut SentinelClient,
        manager_config: &ConnectionManagerConfig,
        connect_timeout: Duration,
    ) -> Result<(String, ConnectionManager, redis::Client), String> {
        let asked = tokio::time::timeout(connect_timeout, sentinels.async_get_client()).await;
        let client = match asked {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                return Err(format!("the sentinels did not name it: {}", quiet(&error)));
            }
            Err(_) => {
                return Err(format!(
                    "no sentinel answered within {} ms",
                    connect_timeout.as_millis()
                ));
            }
        };
        let address = client.get_connection_info().addr().to_string();
        let manager = ConnectionManager::new_with_config(client.clone(), manager_config.clone());
        match tokio::time::timeout(connect_timeout, manager).await {
            Ok(Ok(manager)) => Ok((address, manager, client)),
            Ok(Err(error)) => Err(format!("{address} refused: {}", quiet(&error))),
            Err(_) => Err(format!(
                "{address} did not answer within {} ms",
                connect_timeout.as_millis()
            )),
        }
    }

    /// A connection to the primary as last known.
    pub(super) fn current(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// A client of the primary as last known (for pub/sub connections of their own).
    pub(super) fn client(&self) -> redis::Client {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .2
            .clone()
    }

    /// The primary's address as last known.
    pub(super) fn address(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// After `error`: when the primary may have moved, asks the sentinels (at most
    /// once per `ask_every`) and switches to the primary they name if it is another.
    /// In a task of its own: the failed command's timeout would otherwise cancel the
    /// question half-way, and the next attempt picks up whatever it found.
    pub(super) fn after_failure(self: &Arc<Self>, error: &redis::RedisError) {
        if !primary_may_have_moved(error) {
            return;
        }
        {
            let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
            if asked.elapsed() < self.ask_every {
                return;
            }
            *asked = Instant::now();
        }
        let this = self.clone();
        tokio::spawn(async move { this.follow().await });
    }

    /// Asks the sentinels for the primary; connects to it when it moved.
    async fn follow(&self) {
        let mut sentinels = self.sentinels.lock().await;
        let known = self.address();
        // Ask first, connect only when the answer differs: the common failure is a
        // blip of the same primary, which its ConnectionManager rides out.
        let named = tokio::time::timeout(self.connect_timeout, sentinels.async_get_client()).await;
        let Ok(Ok(client)) = named else {
            tracing::warn!(master_name = %self.master_name, "the sentinels did not name a primary; still on {known}");
            return;
        };
        if client.get_connection_info().addr().to_string() == known {
            return;
        }
        match Self::open(&mut sentinels, &self.manager_config, self.connect_timeout).await {
            Ok(current) => {
                tracing::warn!(from = %known, to = %current.0, master_name = %self.master_name, "the Redis primary moved; following it");
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = current;
            }
            Err(reason) => {
                tracing::warn!(master_name = %self.master_name, %reason, "the sentinels named a new primary that cannot be reached yet");
            }
        }
    }
}

/// An error's text without anything that could quote a URL: I/O errors as they are
/// (they name no URL), others by kind and code.
fn quiet(error: &redis::RedisError) -> String {
    match error.is_io_error() {
        true => error.to_string(),
        false => format!("{:?} {}", error.kind(), error.code().unwrap_or_default()),
    }
}
