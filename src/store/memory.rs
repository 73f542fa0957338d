//! The default store: host records in this process's memory, idle ones evicted.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

#[cfg(test)]
use crate::host::HostConfig;
use crate::host::{Host, HostSnapshot};
use crate::scope::{Scope, ScopeSnapshot};

/// Host records in a map; records idle for `idle_after` are swept out when new hosts arrive,
/// so memory follows the hosts in use, not every host ever called.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    /// foldhash, seeded per map: the lookup runs on every request, and SipHash costs twice as
    /// much for keys this short; the per-map seed still keeps the layout unpredictable to
    /// whoever chooses the URLs.
    hosts: RwLock<HashMap<Box<str>, Arc<Host>, RandomState>>,
    /// Scopes beside host records (host-wide, route, unit, server-named), swept the same way.
    scopes: RwLock<HashMap<Box<str>, Arc<Scope>, RandomState>>,
    idle_after: Duration,
    last_sweep: Mutex<Instant>,
}

impl MemoryStore {
    pub(crate) fn new(idle_after: Duration) -> Self {
        MemoryStore {
            hosts: RwLock::new(HashMap::default()),
            scopes: RwLock::new(HashMap::default()),
            idle_after,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// The record for `key`, made by `make` if there is none.
    pub(crate) fn host(&self, key: &str, make: impl FnOnce(Instant) -> Host) -> Arc<Host> {
        if let Some(host) = self
            .hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return Arc::clone(host);
        }
        let now = Instant::now();
        let mut hosts = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        if let Some(host) = hosts.get(key) {
            return Arc::clone(host);
        }
        self.maybe_sweep(&mut hosts, now);
        let host = Arc::new(make(now));
        hosts.insert(key.into(), Arc::clone(&host));
        host
    }

    /// Drop the records nobody holds that carry nothing worth keeping. Runs at most once per
    /// `idle_after / 2`, under the write lock a new host takes anyway.
    fn maybe_sweep(&self, hosts: &mut HashMap<Box<str>, Arc<Host>, RandomState>, now: Instant) {
        if !self.sweep_due(now) {
            return;
        }
        let before = hosts.len();
        // strong_count == 1: only the map holds it, and nobody can clone it while we hold the
        // write lock, so no request is using the record we drop.
        hosts.retain(|_, host| Arc::strong_count(host) > 1 || !host.is_idle(now, self.idle_after));
        // a crawl that touched many hosts once leaves a table sized for all of them
        let kept = hosts.len();
        if hosts.capacity() > 4 * kept + 64 {
            hosts.shrink_to(2 * kept);
        }
        let evicted = before - hosts.len();
        if evicted > 0 {
            tracing::debug!(evicted, kept = hosts.len(), "evicted idle host records");
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
        let mut scopes = self.scopes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(scope) = scopes.get(key) {
            return Arc::clone(scope);
        }
        if scopes.len() >= 64 && self.sweep_due(now) {
            scopes.retain(|_, scope| {
                Arc::strong_count(scope) > 1 || !scope.is_idle(now, self.idle_after)
            });
            let kept = scopes.len();
            if scopes.capacity() > 4 * kept + 64 {
                scopes.shrink_to(2 * kept);
            }
        }
        let scope = Arc::new(make(now));
        scopes.insert(key.into(), Arc::clone(&scope));
        scope
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
        self.hosts.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn snapshot(&self) -> Vec<HostSnapshot> {
        let now = Instant::now();
        let hosts: Vec<Arc<Host>> = self
            .hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut snapshots: Vec<HostSnapshot> = hosts.iter().map(|h| h.snapshot(now)).collect();
        snapshots.sort_by(|a, b| a.key.cmp(&b.key));
        snapshots
    }
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
