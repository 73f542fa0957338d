//! The default store: host and scope records in this process's memory, idle ones evicted.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::host::Host;
#[cfg(test)]
use crate::host::HostConfig;
use crate::scope::Scope;
use crate::snapshot::{HostSnapshot, ScopeSnapshot};

/// A registry's shards: requests for records in different shards take different locks, so
/// threads looking up their records do not all write the same lock word (as dashmap does).
const SHARDS: usize = 16;

/// One shard of records, on its own cache lines.
///
/// foldhash, seeded per map: the lookup runs on every request, and SipHash costs twice as much
/// for keys this short; the per-map seed still keeps the layout unpredictable to whoever
/// chooses the URLs.
#[derive(Debug)]
#[repr(align(128))]
struct Shard<R>(RwLock<HashMap<Arc<str>, Arc<R>, RandomState>>);

impl<R> Default for Shard<R> {
    fn default() -> Self {
        Shard(RwLock::default())
    }
}

/// What a registry keeps: host and scope records.
trait Kept {
    /// What a snapshot shows of it.
    type View;
    /// The record's own key (the map's, unless the map's also names a partition).
    fn key(&self) -> &Arc<str>;
    /// True when the record carries nothing worth keeping at `now`.
    fn is_idle(&self, now: Instant, idle_after: Duration) -> bool;
    fn view(&self, now: Instant) -> Self::View;
}

impl Kept for Host {
    type View = HostSnapshot;

    fn key(&self) -> &Arc<str> {
        &self.record.key
    }

    fn is_idle(&self, now: Instant, idle_after: Duration) -> bool {
        Host::is_idle(self, now, idle_after)
    }

    fn view(&self, now: Instant) -> HostSnapshot {
        self.snapshot(now)
    }
}

impl Kept for Scope {
    type View = ScopeSnapshot;

    fn key(&self) -> &Arc<str> {
        &self.record.key
    }

    fn is_idle(&self, now: Instant, idle_after: Duration) -> bool {
        Scope::is_idle(self, now, idle_after)
    }

    fn view(&self, now: Instant) -> ScopeSnapshot {
        self.snapshot(now)
    }
}

/// Records of one kind by key, in a sharded map.
#[derive(Debug)]
struct Registry<R> {
    shards: Box<[Shard<R>; SHARDS]>,
    /// Picks a key's shard (its own seed: independent of the shards' maps).
    shard_of: RandomState,
}

impl<R: Kept> Registry<R> {
    fn new() -> Self {
        Registry {
            shards: Box::new(std::array::from_fn(|_| Shard::default())),
            shard_of: RandomState::default(),
        }
    }

    /// The shard `key` lives in.
    fn shard(&self, key: &str) -> &RwLock<HashMap<Arc<str>, Arc<R>, RandomState>> {
        // the hash's top bits: the maps inside use the low ones
        let i = (self.shard_of.hash_one(key) >> (64 - SHARDS.trailing_zeros())) as usize;
        &self.shards[i % SHARDS].0
    }

    fn get(&self, key: &str) -> Option<Arc<R>> {
        let shard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        shard.get(key).cloned()
    }

    /// The record for `key`, made by `make` if there is none (looked for again under the
    /// write lock: another thread may have just made it).
    fn get_or_make(&self, key: &str, make: impl FnOnce() -> R) -> Arc<R> {
        let mut records = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        if let Some(record) = records.get(key) {
            return Arc::clone(record);
        }
        let record = Arc::new(make());
        // the record's own key, unless the map's also names a partition: one copy per record
        let map_key = if **record.key() == *key {
            Arc::clone(record.key())
        } else {
            Arc::from(key)
        };
        records.insert(map_key, Arc::clone(&record));
        record
    }

    /// Drop the records nobody holds that carry nothing worth keeping at `now`; returns how
    /// many were dropped and how many are left.
    fn sweep(&self, now: Instant, idle_after: Duration) -> (usize, usize) {
        let (mut evicted, mut kept) = (0, 0);
        for shard in self.shards.iter() {
            let mut records = shard.0.write().unwrap_or_else(|p| p.into_inner());
            let (gone, left) = retain_in_use(&mut records, |r| r.is_idle(now, idle_after));
            evicted += gone;
            kept += left;
        }
        (evicted, kept)
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.0.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// What a snapshot shows of every record, each read under its own lock (never with a
    /// shard's held).
    fn views(&self, now: Instant) -> Vec<R::View> {
        let records: Vec<Arc<R>> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let records = shard.0.read().unwrap_or_else(|p| p.into_inner());
                records.values().cloned().collect::<Vec<_>>()
            })
            .collect();
        records.iter().map(|record| record.view(now)).collect()
    }
}

/// Host and scope records in this process's memory; records idle for `idle_after` are swept
/// out when new ones arrive, so memory follows the hosts and scopes in use, not every one ever
/// called. A paced record is idle no sooner than a whole window of its limit after its last
/// start (see [`Kept::is_idle`]): a crawl under long windows keeps its records that long.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    hosts: Registry<Host>,
    /// Scopes beside host records (host-wide, route, unit, server-named).
    scopes: Registry<Scope>,
    idle_after: Duration,
    last_sweep: Mutex<Instant>,
}

impl MemoryStore {
    pub(crate) fn new(idle_after: Duration) -> Self {
        MemoryStore {
            hosts: Registry::new(),
            scopes: Registry::new(),
            idle_after,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// The host record for `key`, made by `make` if there is none.
    pub(crate) fn host(&self, key: &str, make: impl FnOnce(Instant) -> Host) -> Arc<Host> {
        self.record(&self.hosts, key, make)
    }

    /// The scope record for `key`, made by `make` if there is none.
    pub(crate) fn scope(&self, key: &str, make: impl FnOnce(Instant) -> Scope) -> Arc<Scope> {
        self.record(&self.scopes, key, make)
    }

    /// The scope record for `key`, if there is one.
    pub(crate) fn find_scope(&self, key: &str) -> Option<Arc<Scope>> {
        self.scopes.get(key)
    }

    /// The record for `key` in `registry`, made by `make` if there is none; a new record may
    /// sweep first.
    fn record<R: Kept>(
        &self,
        registry: &Registry<R>,
        key: &str,
        make: impl FnOnce(Instant) -> R,
    ) -> Arc<R> {
        if let Some(record) = registry.get(key) {
            return record;
        }
        let now = Instant::now();
        if self.sweep_due(now) {
            self.sweep(now);
        }
        registry.get_or_make(key, || make(now))
    }

    /// Drop the records nobody holds that carry nothing worth keeping, hosts and scopes. Runs
    /// at most once per `idle_after / 2`, when a new record arrives, so records of every kind
    /// follow what is in use.
    fn sweep(&self, now: Instant) {
        let (evicted, kept) = self.hosts.sweep(now, self.idle_after);
        let (scopes_evicted, scopes_kept) = self.scopes.sweep(now, self.idle_after);
        if evicted + scopes_evicted > 0 {
            tracing::debug!(
                evicted,
                kept,
                scopes_evicted,
                scopes_kept,
                "evicted idle records"
            );
        }
    }

    /// True at most once per `idle_after / 2`: sweeps run under the write locks new records
    /// take anyway, no more often than that.
    fn sweep_due(&self, now: Instant) -> bool {
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(*last) < self.idle_after / 2 {
            return false;
        }
        *last = now;
        true
    }

    /// Number of scope records held.
    pub(crate) fn scope_count(&self) -> usize {
        self.scopes.len()
    }

    /// Number of host records held.
    pub(crate) fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Every host record's snapshot, sorted by key.
    pub(crate) fn snapshot(&self) -> Vec<HostSnapshot> {
        let mut snapshots = self.hosts.views(Instant::now());
        snapshots.sort_by(|a, b| a.key.cmp(&b.key));
        snapshots
    }

    /// Every scope record's snapshot, sorted by kind and name.
    pub(crate) fn scope_snapshot(&self) -> Vec<ScopeSnapshot> {
        let mut snapshots = self.scopes.views(Instant::now());
        snapshots.sort_by(|a, b| {
            (a.kind, &a.scope, &a.partition).cmp(&(b.kind, &b.scope, &b.partition))
        });
        snapshots
    }
}

/// Keep the records someone holds or that `idle` says carry something; shrink a table a crawl
/// left sized for far more. Returns how many were dropped and how many are left.
fn retain_in_use<K: Eq + std::hash::Hash, V>(
    records: &mut HashMap<K, Arc<V>, RandomState>,
    idle: impl Fn(&V) -> bool,
) -> (usize, usize) {
    let before = records.len();
    // strong_count == 1: only the map holds it, and nobody can clone it while the caller holds
    // the map's write lock, so no request is using the record dropped
    records.retain(|_, record| Arc::strong_count(record) > 1 || !idle(record));
    let left = records.len();
    if records.capacity() > 4 * left + 64 {
        records.shrink_to(2 * left);
    }
    (before - left, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_config() -> HostConfig {
        HostConfig::test(None)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_records_are_evicted_and_held_ones_kept() {
        let store = MemoryStore::new(Duration::from_secs(60));
        let make = |now| Host::new("k", &test_config(), now);
        let held = store.host("http://held", make);
        for i in 0..100 {
            let _ = store.host(&format!("http://h{i}"), make);
        }
        assert_eq!(store.len(), 101);
        tokio::time::advance(Duration::from_secs(61)).await;
        let _ = store.host("http://new", make);
        assert_eq!(
            store.len(),
            2,
            "idle records must be evicted; the held one and the new one stay"
        );
        assert!(
            Arc::ptr_eq(&held, &store.host("http://held", make)),
            "a held record is never replaced"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_over_many_hosts() {
        let store = MemoryStore::new(Duration::from_secs(10));
        let make = |now| Host::new("k", &test_config(), now);
        let mut most = 0;
        for i in 0..10_000 {
            let _ = store.host(&format!("http://h{i}"), make);
            most = most.max(store.len());
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // 10 s idle at one new host per 10 ms: about 1000 live, plus up to 5 s between sweeps
        assert!(
            most <= 1_600,
            "store grew to {most} records for 1000 live hosts"
        );
    }
}
