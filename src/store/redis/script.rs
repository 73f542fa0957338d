//! How a reservation is put to Redis: the key a scope's schedule lives under, the script call
//! (reloaded on `NOSCRIPT`), and the plan the script runs in its own units.

use std::borrow::Cow;
use std::time::Duration;

use ::redis::{Cmd, FromRedisValue, RedisResult, RedisWrite, Script, ToRedisArgs};

use super::conn::Conn;
use super::error::RedisStoreError;
use crate::limit::Limit;
use crate::time::saturating_nanos;

/// Below this interval the timer cannot space requests one by one (as in `pacing::gcra`).
pub(super) const SPACED_MIN_NANOS: u64 = 2_000_000;
/// The longest wait gcra.lua is asked to grant (2^62 ns: 146 years), so that every wait it
/// answers fits its integer reply.
pub(super) const MAX_WAIT_NANOS: u64 = 1 << 62;

pub(super) static GCRA: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("../gcra.lua")));

/// `<prefix>:{<scope>}:gcra`, written straight into the command that names it (no `String`
/// per call): the scope, escaped, is the key's hash tag.
pub(super) struct ScopeKey<'a> {
    pub(super) prefix: &'a str,
    pub(super) scope: &'a str,
}

impl ToRedisArgs for ScopeKey<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + RedisWrite,
    {
        use std::io::Write;
        let mut arg = out.writer_for_next_arg();
        // writing to the command's buffer cannot fail
        let _ = arg.write_all(self.prefix.as_bytes());
        let _ = arg.write_all(b":{");
        let _ = arg.write_all(escape(self.scope).as_bytes());
        let _ = arg.write_all(b"}:gcra");
    }
}

/// Run `cmd` (an `EVALSHA` of `script`), loading the script and running it again if Redis
/// answers `NOSCRIPT` (after a `SCRIPT FLUSH` or a restart; in a cluster, on the node that
/// lacks it), as redis-rs's `Script::invoke_async` does.
pub(super) async fn evalsha<T: FromRedisValue>(
    script: &Script,
    cmd: &Cmd,
    conn: &mut Conn,
) -> RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(err) if err.code() == Some("NOSCRIPT") => {
            script.load_async(conn).await?;
            cmd.query_async(conn).await
        }
        answer => answer,
    }
}

/// What the script needs for one reservation, in its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    /// ns per unit, the slower rate included (0: unpaced).
    pub(super) interval: u64,
    /// How far ahead of the schedule a start may be: the burst at the configured interval.
    pub(super) tolerance: u64,
    /// How late after its slot a start may still keep it.
    pub(super) slack: u64,
    pub(super) cost: u32,
    pub(super) max_wait: u64,
    /// The key lives at least this long: the limit's window.
    pub(super) ttl_ms: u64,
}

impl Plan {
    pub(super) fn new(
        limit: Option<&Limit>,
        slower: Option<u64>,
        cost: u32,
        max_wait: Duration,
    ) -> Plan {
        let cost = cost.max(1);
        let max_wait = saturating_nanos(max_wait).min(MAX_WAIT_NANOS);
        let Some(limit) = limit else {
            return Plan {
                interval: slower.unwrap_or(0),
                tolerance: 0,
                slack: 0,
                cost,
                max_wait,
                ttl_ms: 1,
            };
        };
        let configured = limit.interval_nanos();
        let interval = slower.map_or(configured, |s| s.max(configured));
        // Spaced limits (no burst, an interval the timer can space) keep every start a full
        // interval apart in Redis time, so a leaky-bucket server never sees two closer than it
        // allows; the others keep a late start's slot, as the local pacer does.
        let spaced = limit.burst_size() == 1 && configured >= SPACED_MIN_NANOS;
        Plan {
            interval,
            tolerance: configured.saturating_mul(u64::from(limit.burst_size())),
            slack: if spaced { 0 } else { limit.margin_nanos() / 2 },
            cost,
            max_wait,
            ttl_ms: u64::try_from(limit.window().as_nanos().div_ceil(1_000_000))
                .unwrap_or(u64::MAX)
                .max(1),
        }
    }

    /// How far one reservation moves the schedule: `cost` intervals, in ns (0: unpaced).
    pub(super) fn advance(&self) -> u64 {
        self.interval.saturating_mul(u64::from(self.cost))
    }

    /// How far ahead of the schedule a start may be, in ns: the tolerance, and at least one
    /// interval (a start is due one interval before the schedule's end).
    pub(super) fn lead(&self) -> u64 {
        self.tolerance.max(self.interval)
    }
}

pub(super) fn non_negative(v: i64) -> Result<u64, RedisStoreError> {
    u64::try_from(v).map_err(|_| RedisStoreError::Reply(format!("negative value {v}")))
}

/// `%`, `{` and `}` percent-encoded: a scope or prefix never opens or closes a hash tag, and
/// two different names never share a key.
pub(super) fn escape(name: &str) -> Cow<'_, str> {
    if !name.contains(['%', '{', '}']) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}
