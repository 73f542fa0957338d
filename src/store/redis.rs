//! The shared store: quotas shared by every process that points at one Redis (feature `redis`).
//!
//! - **One schedule per scope**, in one Redis hash, advanced by one Lua script
//!   ([`gcra.lua`](https://docs.rs/crate/reqwest-polite/latest/source/src/store/gcra.lua)) that
//!   reads Redis's own `TIME`: the same window-exact GCRA as
//!   [`pacing::gcra`](crate::pacing::gcra), but every instant is the server's, so processes whose
//!   clocks disagree still share one schedule. The script *reserves* the slot (first come, first
//!   served across processes) and answers how long to wait for it; the caller sleeps locally.
//!   One round trip (`EVALSHA`) per decision; the script is loaded again after a `SCRIPT FLUSH`.
//! - **Closures** (a `Retry-After`, a spent quota) live in the same hash: one process's closure
//!   holds every process's next reservation back, and is never shortened.
//! - **Keys** are `<prefix>:{<scope>}:gcra`: the braces make the scope a Redis Cluster hash tag,
//!   so everything one scope needs lives in one slot. They expire once their schedule and
//!   closure have passed (up to a sixteenth of a window later: the expiry is extended in steps,
//!   so a busy scope rarely pays for a `PEXPIRE`), and never sooner than the limit's window, so
//!   Redis memory follows the scopes in use.
//! - **One node or a cluster**: [`RedisStore::connect`] talks to one node (or a proxy),
//!   `RedisStore::connect_cluster` (feature `redis-cluster`) to a Redis Cluster, through the
//!   same calls: each script touches only the keys it is given, all in one slot.
//! - **Liveness**: each store heartbeats into `<prefix>:{fleet}:procs`, a sorted set scored by
//!   expiry (Redis time), so any process can count the live ones: when Redis fails, the
//!   fallback paces each process at its share of the limit.
//!
//! A reservation is a promise the process may not keep: a request cancelled (or a call timed
//! out after Redis ran it) after its slot was reserved leaves that slot unused. The capacity
//! lost is one slot per cancelled reservation, never more: nothing else is held for it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Cmd};
use tokio::sync::OnceCell;

use self::conn::Conn;
pub use self::error::{Fallback, RedisStoreError};
use self::health::{BACKOFF_MIN, FLEET};
use self::health::{Health, Link, Shared, heartbeat};
pub(crate) use self::local::LocalSchedules;
#[cfg(test)]
use self::local::local_share;
use self::script::GCRA;
use self::script::{Plan, ScopeKey, escape, evalsha, non_negative};
use crate::limit::Limit;
use crate::time::saturating_nanos;

/// The default key prefix.
const DEFAULT_PREFIX: &str = "reqwest-polite";
/// The default bound on every Redis call.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// The default heartbeat period; a process counts as live for three periods after its last.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// How long [`RedisStore::connect`] may take to reach Redis for the first time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared answer to "may this request start?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "the request path calls it once wired")
)]
pub(crate) enum Reservation {
    /// A slot is reserved in the shared schedule: start after `delay` (zero: at once). Of that
    /// delay, `closed` is the scope's closure (zero: the scope is open).
    Go { delay: Duration, closed: Duration },
    /// Nothing was reserved: the wait would pass `max_wait`. The earliest start is `earliest`
    /// from now, of which `closed` is the scope's closure.
    Refused {
        earliest: Duration,
        closed: Duration,
    },
    /// Redis did not answer, and the fallback is [`Fallback::Local`]: pace this request locally
    /// at the limit's share for one of `processes` (see [`local_share`](local::local_share)).
    Local { processes: u32 },
}

/// The script's answer to a reservation, with the Redis clock reading it was made at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) granted: bool,
    /// Nanoseconds after `now_us` at which the request may start.
    pub(crate) delay_ns: u64,
    /// Nanoseconds until the scope's closure ends (0: open).
    pub(crate) closed_ns: u64,
    /// The Redis clock when the script ran: microseconds since the epoch.
    pub(crate) now_us: u64,
}

impl Answer {
    fn reservation(self) -> Reservation {
        let delay = Duration::from_nanos(self.delay_ns);
        let closed = Duration::from_nanos(self.closed_ns);
        if self.granted {
            Reservation::Go { delay, closed }
        } else {
            Reservation::Refused {
                earliest: delay,
                closed,
            }
        }
    }
}

/// Quotas shared across processes and machines through Redis (feature `redis`).
///
/// Every process that reaches the same Redis with the same [prefix](RedisStore::prefix) shares
/// one pacing schedule per scope, and one closure: a `Retry-After` one process receives holds
/// back every process.
///
/// ```no_run
/// # async fn demo() -> Result<(), reqwest_polite::RedisStoreError> {
/// use std::time::Duration;
/// use reqwest_polite::{Fallback, RedisStore};
///
/// let store = RedisStore::connect("redis://127.0.0.1/")
///     .await?
///     .prefix("billing-workers")          // one fleet, one quota
///     .timeout(Duration::from_millis(20)) // every Redis call is bounded
///     .fallback(Fallback::Local);         // Redis down: pace at our share of the limit
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
///
/// # Default
/// Prefix `reqwest-polite`, timeout 50 ms, [`Fallback::Local`], a heartbeat every second, a
/// fleet secret created in Redis on first use.
#[derive(Clone)]
pub struct RedisStore {
    link: Link,
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // never the secret
        f.debug_struct("RedisStore")
            .field("redis", &self.link.conn.kind())
            .field("prefix", &self.link.prefix)
            .field("timeout", &self.link.timeout)
            .field("fallback", &self.link.fallback)
            .field("heartbeat", &self.link.heartbeat)
            .field(
                "fleet_secret",
                &if self.link.configured_secret.is_some() {
                    "configured"
                } else {
                    "from Redis"
                },
            )
            .field("live_processes", &self.shared.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connect to the Redis at `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` with the `redis-tls` feature).
    ///
    /// Fails if Redis does not answer within 2 s: a wrong address shows at start-up. Once
    /// connected, failures no longer fail: they fall back (see [`Fallback`]), and the
    /// connection is re-established in the background.
    pub async fn connect(url: &str) -> Result<RedisStore, RedisStoreError> {
        let client = Client::open(url).map_err(RedisStoreError::InvalidUrl)?;
        Self::from_client(client).await
    }

    /// Like [`RedisStore::connect`], from a [`redis::Client`] you made (for settings a URL
    /// cannot carry).
    pub async fn from_client(client: Client) -> Result<RedisStore, RedisStoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(4);
        let manager = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| RedisStoreError::Timeout(CONNECT_TIMEOUT))?
        .map_err(RedisStoreError::from_redis)?;
        Ok(Self::from_manager(manager))
    }

    /// A store on a connection manager you made (its reconnection settings are yours; every
    /// call is still bounded by the store's [timeout](RedisStore::timeout)).
    pub fn from_manager(manager: ConnectionManager) -> RedisStore {
        Self::from_conn(Conn::Node(manager))
    }

    /// Connect to a Redis Cluster through any of its nodes (`redis://host:port` each, or
    /// `rediss://` with the `redis-tls` feature; feature `redis-cluster`). The client learns
    /// the slots from them and sends each call to the primary that holds its scope: every key
    /// of one scope shares one hash slot (`{<scope>}`), and the fleet's keys another
    /// (`{fleet}`).
    ///
    /// Fails if the cluster does not answer within 2 s, or if `nodes` is empty or a URL does
    /// not parse. Once connected, failures fall back (see [`Fallback`]) as on one node.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), reqwest_polite::RedisStoreError> {
    /// use reqwest_polite::RedisStore;
    ///
    /// let store = RedisStore::connect_cluster([
    ///     "redis://10.0.0.1:6379/",
    ///     "redis://10.0.0.2:6379/",
    ///     "redis://10.0.0.3:6379/",
    /// ])
    /// .await?
    /// .prefix("billing-workers");
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis-cluster")]
    pub async fn connect_cluster<I>(nodes: I) -> Result<RedisStore, RedisStoreError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        let client = ::redis::cluster::ClusterClient::builder(nodes)
            .connection_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(RedisStoreError::InvalidUrl)?;
        Self::from_cluster_client(client).await
    }

    /// Like [`RedisStore::connect_cluster`], from a [`redis::cluster::ClusterClient`] you made
    /// (for settings URLs cannot carry: retries, TLS certificates, read routing...).
    #[cfg(feature = "redis-cluster")]
    pub async fn from_cluster_client(
        client: ::redis::cluster::ClusterClient,
    ) -> Result<RedisStore, RedisStoreError> {
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_connection())
            .await
            .map_err(|_| RedisStoreError::Timeout(CONNECT_TIMEOUT))?
            .map_err(RedisStoreError::from_redis)?;
        Ok(Self::from_cluster_connection(conn))
    }

    /// A store on a cluster connection you made (every call is still bounded by the store's
    /// [timeout](RedisStore::timeout)).
    #[cfg(feature = "redis-cluster")]
    pub fn from_cluster_connection(conn: ::redis::cluster_async::ClusterConnection) -> RedisStore {
        Self::from_conn(Conn::Cluster(conn))
    }

    fn from_conn(conn: Conn) -> RedisStore {
        RedisStore {
            link: Link {
                conn,
                prefix: Arc::from(DEFAULT_PREFIX),
                timeout: DEFAULT_TIMEOUT,
                fallback: Fallback::default(),
                heartbeat: DEFAULT_HEARTBEAT,
                configured_secret: None,
            },
            shared: Arc::new(Shared {
                id: process_id(),
                health: Mutex::new(Health {
                    retry_at: None,
                    backoff: BACKOFF_MIN,
                    down_since: None,
                }),
                live: AtomicU32::new(0),
                secret: OnceCell::new(),
                heartbeat_started: AtomicBool::new(false),
                outages: AtomicU32::new(0),
                warned_key_error: AtomicBool::new(false),
                local: LocalSchedules::default(),
            }),
        }
    }

    /// The prefix of every key the store writes: processes share quotas when they share a
    /// prefix (and a Redis). Braces and `%` are escaped, so the prefix never becomes a Redis
    /// Cluster hash tag.
    ///
    /// # Default
    /// `reqwest-polite`
    pub fn prefix(mut self, prefix: impl AsRef<str>) -> Self {
        self.link.prefix = Arc::from(escape(prefix.as_ref()));
        self
    }

    /// The longest any Redis call may take; past it, the request falls back (see [`Fallback`])
    /// and Redis is left alone for a while (backoff). Keep it well under your requests' own
    /// latency: every request waits for one call.
    ///
    /// # Default
    /// 50 ms
    ///
    /// # Panics
    /// If `timeout` is zero: no call could ever succeed.
    #[track_caller]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        assert!(
            !timeout.is_zero(),
            "RedisStore::timeout: a zero timeout fails every call"
        );
        self.link.timeout = timeout;
        self
    }

    /// What to do when Redis does not answer.
    ///
    /// # Default
    /// [`Fallback::Local`]
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.link.fallback = fallback;
        self
    }

    /// How often this process tells the others it is alive. A process counts as alive for
    /// three periods after its last heartbeat, so the local fallback divides the limit by the
    /// processes alive just before Redis failed.
    ///
    /// # Default
    /// 1 s
    ///
    /// # Panics
    /// If `every` is zero.
    #[track_caller]
    pub fn heartbeat(mut self, every: Duration) -> Self {
        assert!(
            !every.is_zero(),
            "RedisStore::heartbeat: the period must be longer than zero"
        );
        self.link.heartbeat = every;
        self
    }

    /// The secret key credentials are hashed with before they name a shared quota. Every
    /// process of the fleet must use the same one; without it, the store creates one in Redis
    /// (32 random bytes, `SET NX`) and every process reads it from there.
    ///
    /// # Default
    /// Created in Redis on first use, under `<prefix>:{fleet}:secret`.
    pub fn partition_secret(mut self, secret: [u8; 32]) -> Self {
        self.link.configured_secret = Some(secret);
        self
    }

    /// Reserve `cost` units of `scope`'s shared schedule for `limit` (`None`: unpaced, only
    /// closures hold it back), spaced at least `slower` ns apart when a slower rate is in
    /// force (server hints, adaptive rate), if the wait is at most `max_wait`.
    ///
    /// One round trip. Never waits longer than the store's timeout; on a failure, answers
    /// [`Reservation::Local`] or the error, as the [`Fallback`] says.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "the request path calls it once wired")
    )]
    pub(crate) async fn reserve(
        &self,
        scope: &str,
        limit: Option<&Limit>,
        slower: Option<u64>,
        cost: u32,
        max_wait: Duration,
    ) -> Result<Reservation, RedisStoreError> {
        match self.ask(scope, limit, slower, cost, max_wait).await {
            Ok(answer) => Ok(answer.reservation()),
            Err(err) => self
                .fall_back(err)
                .map(|processes| Reservation::Local { processes }),
        }
    }

    /// The script's raw answer (the reservation, with the Redis clock reading).
    pub(crate) async fn ask(
        &self,
        scope: &str,
        limit: Option<&Limit>,
        slower: Option<u64>,
        cost: u32,
        max_wait: Duration,
    ) -> Result<Answer, RedisStoreError> {
        self.start_heartbeat();
        let plan = Plan::new(limit, slower, cost, max_wait);
        // one command, written once: no script invocation to build and copy, the key written
        // straight into it
        let mut cmd = Cmd::new();
        cmd.arg("EVALSHA")
            .arg(GCRA.get_hash())
            .arg(1)
            .arg(self.scope_key(scope))
            .arg(plan.advance())
            .arg(plan.lead())
            .arg(plan.slack)
            .arg(plan.max_wait)
            .arg(plan.ttl_ms);
        let mut conn = self.link.conn.clone();
        let (granted, delay, closed, now): (i64, i64, i64, i64) = self
            .link
            .call(&self.shared, evalsha(&GCRA, &cmd, &mut conn))
            .await?;
        Ok(Answer {
            granted: granted == 1,
            delay_ns: non_negative(delay)?,
            closed_ns: non_negative(closed)?,
            now_us: non_negative(now)?,
        })
    }

    /// Close `scope` for every process for `until` from now (by the Redis clock), unless it is
    /// closed longer already: a closure is never shortened. Answers how long it stays closed,
    /// or `None` if Redis did not answer and the fallback is [`Fallback::Local`] (the caller's
    /// own closure is then all there is).
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "the request path calls it once wired")
    )]
    pub(crate) async fn close(
        &self,
        scope: &str,
        until: Duration,
    ) -> Result<Option<Duration>, RedisStoreError> {
        self.start_heartbeat();
        let mut cmd = Cmd::new();
        cmd.arg("EVALSHA")
            .arg(GCRA.get_hash())
            .arg(1)
            .arg(self.scope_key(scope))
            .arg("close")
            .arg(saturating_nanos(until))
            .arg(1);
        let mut conn = self.link.conn.clone();
        let answer = self
            .link
            .call(&self.shared, evalsha::<(i64, i64)>(&GCRA, &cmd, &mut conn))
            .await
            .and_then(|(closed, _now)| Ok(Duration::from_nanos(non_negative(closed)?)));
        match answer {
            Ok(closed) => Ok(Some(closed)),
            Err(err) => self.fall_back(err).map(|_| None),
        }
    }

    /// The schedules [`Fallback::Local`] paces by, at [`live_processes`](Self::live_processes)'
    /// share of each limit, while Redis is away.
    pub(crate) fn local(&self) -> &LocalSchedules {
        &self.shared.local
    }

    /// Processes seen alive at the last heartbeat, this one included (1 until one answered):
    /// what [`Fallback::Local`] divides the limit by.
    pub(crate) fn live_processes(&self) -> u32 {
        self.shared.live.load(Ordering::Relaxed).max(1)
    }

    /// The fleet-wide key for hashing credentials: the one configured with
    /// [`RedisStore::partition_secret`], or the one in Redis (created there once with
    /// `SET NX`, read once per store, then kept). An error whatever the [`Fallback`]: a
    /// per-process key would split one credential's quota.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "the request path calls it once wired")
    )]
    pub(crate) async fn fleet_secret(&self) -> Result<[u8; 32], RedisStoreError> {
        if let Some(secret) = self.link.configured_secret {
            return Ok(secret);
        }
        self.start_heartbeat();
        let secret = self
            .shared
            .secret
            .get_or_try_init(|| async {
                let mut candidate = [0u8; 32];
                fill_random(&mut candidate)?;
                let [procs, secret] = self.link.fleet_keys();
                let mut conn = self.link.conn.clone();
                let stored: Vec<u8> = self
                    .link
                    .call(&self.shared, async {
                        FLEET
                            .key(&procs)
                            .key(&secret)
                            .arg("secret")
                            .arg(&candidate[..])
                            .invoke_async(&mut conn)
                            .await
                    })
                    .await?;
                <[u8; 32]>::try_from(stored.as_slice()).map_err(|_| {
                    RedisStoreError::Reply(format!(
                        "{secret} holds {} bytes, not a 32-byte secret",
                        stored.len()
                    ))
                })
            })
            .await?;
        Ok(*secret)
    }

    /// `<prefix>:{<scope>}:gcra`: the scope is the hash tag, so a scope's keys share a slot.
    fn scope_key<'a>(&'a self, scope: &'a str) -> ScopeKey<'a> {
        ScopeKey {
            prefix: &self.link.prefix,
            scope,
        }
    }

    /// The fallback for `err`: the divisor for local pacing, or the error.
    fn fall_back(&self, err: RedisStoreError) -> Result<u32, RedisStoreError> {
        match self.link.fallback {
            Fallback::Local => Ok(self.live_processes()),
            Fallback::FailClosed => Err(err),
        }
    }

    /// Start heartbeating, once per store (and its clones), if a tokio runtime is running.
    fn start_heartbeat(&self) {
        if self.shared.heartbeat_started.load(Ordering::Relaxed)
            || self.shared.heartbeat_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.shared
                .heartbeat_started
                .store(false, Ordering::Release);
            return;
        };
        let link = self.link.clone();
        let shared = Arc::downgrade(&self.shared);
        runtime.spawn(heartbeat(link, shared));
    }

    /// Outages warned about so far.
    #[cfg(test)]
    pub(crate) fn outages(&self) -> u32 {
        self.shared.outages.load(Ordering::Relaxed)
    }
}

fn fill_random(buf: &mut [u8]) -> Result<(), RedisStoreError> {
    use rand::TryRngCore;
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|err| RedisStoreError::Random(err.to_string()))
}

/// 128 random bits in hex: this process's name in the live set. Should the OS have no
/// randomness, the clock and the process id still tell processes apart.
fn process_id() -> String {
    let mut bytes = [0u8; 16];
    if fill_random(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(all(test, feature = "redis-cluster"))]
mod cluster_tests;
mod conn;
mod error;
mod health;
mod local;
mod script;
#[cfg(test)]
mod tests;
