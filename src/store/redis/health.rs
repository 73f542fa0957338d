//! The link to Redis and what this process knows of its health: the heartbeat that keeps the
//! process in the live set, and the outage bookkeeping the fallback decides by.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ::redis::{RedisResult, Script};
use tokio::sync::OnceCell;

use tokio::time::Instant;

use super::conn::Conn;
use super::error::{Fallback, RedisStoreError};
use super::local::LocalSchedules;

/// After a failure, the first wait before Redis is asked again; it doubles up to the maximum.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(2);
pub(super) static FLEET: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("../fleet.lua")));

/// How to reach Redis, and the settings every call uses. Cloned into the heartbeat task,
/// which holds the [`Shared`] state only weakly, so dropping the last store stops it.
#[derive(Clone)]
pub(super) struct Link {
    pub(super) conn: Conn,
    pub(super) prefix: Arc<str>,
    pub(super) timeout: Duration,
    pub(super) fallback: Fallback,
    pub(super) heartbeat: Duration,
    /// A fleet secret the user configured; `None`: created in Redis.
    pub(super) configured_secret: Option<[u8; 32]>,
}

/// What one store (and its clones) learns as it goes.
pub(super) struct Shared {
    /// This process's member in the live set.
    pub(super) id: String,
    pub(super) health: Mutex<Health>,
    /// Processes seen alive at the last heartbeat (0: none seen yet).
    pub(super) live: AtomicU32,
    /// The fleet secret, once read from Redis.
    pub(super) secret: OnceCell<[u8; 32]>,
    pub(super) heartbeat_started: AtomicBool,
    /// Outages warned about (one warning each).
    pub(super) outages: AtomicU32,
    /// Whether a failure that concerns one key (a wrong type) has been warned about.
    pub(super) warned_key_error: AtomicBool,
    /// The schedules [`Fallback::Local`] paces by while Redis is away.
    pub(super) local: LocalSchedules,
}

/// Whether Redis is answering, and when to ask it again if not.
#[derive(Debug)]
pub(super) struct Health {
    /// Redis is failing: no call before this instant. `None`: healthy.
    pub(super) retry_at: Option<Instant>,
    /// The next wait when a retry fails too.
    pub(super) backoff: Duration,
    /// When the current outage began.
    pub(super) down_since: Option<Instant>,
}

/// Heartbeat every period until the last store is dropped.
pub(super) async fn heartbeat(link: Link, shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(link.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ttl_ms = u64::try_from(link.heartbeat.as_millis().saturating_mul(3))
        .unwrap_or(u64::MAX)
        .max(1);
    let [procs, secret_key] = link.fleet_keys();
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let secret = shared.secret.get().map_or(&[][..], |s| &s[..]);
        let mut conn = link.conn.clone();
        let beat = link
            .call(&shared, async {
                FLEET
                    .key(&procs)
                    .key(&secret_key)
                    .arg("beat")
                    .arg(&shared.id)
                    .arg(ttl_ms)
                    .arg(secret)
                    .invoke_async::<u32>(&mut conn)
                    .await
            })
            .await;
        if let Ok(live) = beat {
            shared.live.store(live, Ordering::Relaxed);
        }
    }
}

impl Link {
    /// `<prefix>:{fleet}:procs` and `<prefix>:{fleet}:secret`: one hash slot.
    pub(super) fn fleet_keys(&self) -> [String; 2] {
        [
            format!("{}:{{fleet}}:procs", self.prefix),
            format!("{}:{{fleet}}:secret", self.prefix),
        ]
    }

    /// Run one Redis call, bounded by the timeout, unless Redis is in backoff; record how it
    /// went.
    pub(super) async fn call<T>(
        &self,
        shared: &Shared,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, RedisStoreError> {
        shared.may_call(Instant::now())?;
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(RedisStoreError::from_redis(err)),
            Err(_) => Err(RedisStoreError::Timeout(self.timeout)),
        };
        match &result {
            Ok(_) => shared.answered(Instant::now()),
            Err(err) if err.is_outage() => shared.failed(Instant::now(), err, self.fallback),
            Err(err) => shared.key_error(err),
        }
        result
    }
}

impl Shared {
    pub(super) fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuse while in backoff; past it, let this one call through as the probe and hold the
    /// others back for one more backoff step.
    pub(super) fn may_call(&self, now: Instant) -> Result<(), RedisStoreError> {
        let mut health = self.health();
        match health.retry_at {
            Some(at) if at > now => Err(RedisStoreError::Backoff { retry_in: at - now }),
            Some(_) => {
                health.retry_at = Some(now + health.backoff);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub(super) fn answered(&self, now: Instant) {
        let mut health = self.health();
        if let Some(since) = health.down_since.take() {
            self.local.clear();
            tracing::info!(
                outage = ?now.saturating_duration_since(since),
                "Redis answers again: quotas are shared again"
            );
        }
        health.retry_at = None;
        health.backoff = BACKOFF_MIN;
    }

    pub(super) fn failed(&self, now: Instant, err: &RedisStoreError, fallback: Fallback) {
        let mut health = self.health();
        health.retry_at = Some(now + health.backoff);
        health.backoff = (health.backoff * 2).min(BACKOFF_MAX);
        if health.down_since.is_none() {
            health.down_since = Some(now);
            self.outages.fetch_add(1, Ordering::Relaxed);
            let live = self.live.load(Ordering::Relaxed).max(1);
            match fallback {
                Fallback::Local => tracing::warn!(
                    error = %err,
                    processes = live,
                    "Redis failed: pacing locally at 1/{live} of each limit until it answers"
                ),
                Fallback::FailClosed => tracing::warn!(
                    error = %err,
                    "Redis failed: refusing requests until it answers"
                ),
            }
        } else {
            tracing::debug!(error = %err, "Redis still failing");
        }
    }

    pub(super) fn key_error(&self, err: &RedisStoreError) {
        if !self.warned_key_error.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %err,
                "Redis refused a key of the shared store (warned once)"
            );
        }
    }
}
