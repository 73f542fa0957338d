//! The default store: host records in this process's memory, idle ones evicted.

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

/// The host map's shards: requests to hosts in different shards take different locks, so
/// threads looking up their hosts do not all write the same lock word (as dashmap does).
const SHARDS: usize = 16;

/// One shard of host records, on its own cache lines.
///
/// foldhash, seeded per map: the lookup runs on every request, and SipHash costs twice as much
/// for keys this short; the per-map seed still keeps the layout unpredictable to whoever
/// chooses the URLs.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(RwLock<HashMap<Arc<str>, Arc<Host>, RandomState>>);

/// Host records in a sharded map; records idle for `idle_after` are swept out when new hosts
/// arrive, so memory follows the hosts in use, not every host ever called.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    hosts: Box<[Shard; SHARDS]>,
    /// Picks a key's shard (its own seed: independent of the shards' maps).
    shard_of: RandomState,
    /// Scopes beside host records (host-wide, route, unit, server-named), swept the same way.
    scopes: RwLock<HashMap<Box<str>, Arc<Scope>, RandomState>>,
    idle_after: Duration,
    last_sweep: Mutex<Instant>,
}

impl MemoryStore {
    pub(crate) fn new(idle_after: Duration) -> Self {
        MemoryStore {
            hosts: Box::default(),
            shard_of: RandomState::default(),
            scopes: RwLock::new(HashMap::default()),
            idle_after,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// The shard `key` lives in.
    fn shard(&self, key: &str) -> &RwLock<HashMap<Arc<str>, Arc<Host>, RandomState>> {
        // the hash's top bits: the maps inside use the low ones
        let i = (self.shard_of.hash_one(key) >> (64 - SHARDS.trailing_zeros())) as usize;
        &self.hosts[i % SHARDS].0
    }

    /// The record for `key`, made by `make` if there is none.
    pub(crate) fn host(&self, key: &str, make: impl FnOnce(Instant) -> Host) -> Arc<Host> {
        let shard = self.shard(key);
        if let Some(host) = shard.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Arc::clone(host);
        }
        let now = Instant::now();
        if self.sweep_due(now) {
            self.sweep(now);
        }
        let mut hosts = shard.write().unwrap_or_else(|p| p.into_inner());
        if let Some(host) = hosts.get(key) {
            return Arc::clone(host);
        }
        let host = Arc::new(make(now));
        // the record's own key, unless the map's also names a partition: one copy per host
        let map_key = if *host.key == *key {
            Arc::clone(&host.key)
        } else {
            Arc::from(key)
        };
        hosts.insert(map_key, Arc::clone(&host));
        host
    }

    /// Drop the records nobody holds that carry nothing worth keeping: host records shard by
    /// shard, then scope records. Runs at most once per `idle_after / 2`, when a new host or
    /// scope arrives, so records of every kind follow what is in use.
    fn sweep(&self, now: Instant) {
        let (mut evicted, mut kept) = (0, 0);
        for shard in self.hosts.iter() {
            let mut hosts = shard.0.write().unwrap_or_else(|p| p.into_inner());
            let (gone, left) = retain_in_use(&mut hosts, |host| host.is_idle(now, self.idle_after));
            evicted += gone;
            kept += left;
        }
        let mut scopes = self.scopes.write().unwrap_or_else(|p| p.into_inner());
        let (scopes_evicted, scopes_kept) =
            retain_in_use(&mut scopes, |scope| scope.is_idle(now, self.idle_after));
        drop(scopes);
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

    /// The scope record for `key`, made by `make` if there is none.
    pub(crate) fn scope(&self, key: &str, make: impl FnOnce(Instant) -> Scope) -> Arc<Scope> {
        if let Some(scope) = self
            .scopes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return Arc::clone(scope);
        }
        let now = Instant::now();
        if self.sweep_due(now) {
            self.sweep(now);
        }
        let mut scopes = self.scopes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(scope) = scopes.get(key) {
            return Arc::clone(scope);
        }
        let scope = Arc::new(make(now));
        scopes.insert(key.into(), Arc::clone(&scope));
        scope
    }

    /// The scope record for `key`, if there is one.
    pub(crate) fn find_scope(&self, key: &str) -> Option<Arc<Scope>> {
        let scopes = self.scopes.read().unwrap_or_else(|p| p.into_inner());
        scopes.get(key).cloned()
    }

    /// Every scope record, sorted by kind and name.
    pub(crate) fn scope_snapshot(&self) -> Vec<ScopeSnapshot> {
        let now = Instant::now();
        let scopes: Vec<Arc<Scope>> = self
            .scopes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut snapshots: Vec<ScopeSnapshot> = scopes.iter().map(|s| s.snapshot(now)).collect();
        snapshots.sort_by(|a, b| {
            (a.kind, &a.scope, &a.partition).cmp(&(b.kind, &b.scope, &b.partition))
        });
        snapshots
    }

    /// True at most once per `idle_after / 2`: sweeps run under the write lock a new record
    /// takes anyway, no more often than that.
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
        self.scopes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Number of host records held.
    pub(crate) fn len(&self) -> usize {
        self.hosts
            .iter()
            .map(|shard| shard.0.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub(crate) fn snapshot(&self) -> Vec<HostSnapshot> {
        let now = Instant::now();
        let hosts: Vec<Arc<Host>> = self
            .hosts
            .iter()
            .flat_map(|shard| {
                let hosts = shard.0.read().unwrap_or_else(|p| p.into_inner());
                hosts.values().cloned().collect::<Vec<_>>()
            })
            .collect();
        let mut snapshots: Vec<HostSnapshot> = hosts.iter().map(|h| h.snapshot(now)).collect();
        snapshots.sort_by(|a, b| a.key.cmp(&b.key));
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
