//! Which records a request is paced by: its host's record (per partition) and every scope it
//! falls in, made on first use from the configured limits and what servers named.

use std::sync::Arc;

use http::HeaderMap;
use tokio::time::Instant;
use url::Url;

use crate::builder::Polite;
use crate::host::{Host, HostConfig};
use crate::limit::Limit;
use crate::partition::Partition;
use crate::scope::{RouteLimit, Scope, UnitLimit};
use crate::signals::{QuotaName, ServerScope, ServerScopeKind};
use crate::snapshot::ScopeKind;

impl Polite {
    /// The partition of a request, when requests are partitioned: keyed per process, or by
    /// the fleet's secret when a shared store is in use (an error if it cannot be had: a
    /// per-process key would split one credential's shared quota).
    pub(crate) async fn partition_of(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Partition>, crate::Error> {
        let Some(local) = &self.inner.partitioner else {
            return Ok(None);
        };
        #[cfg(feature = "redis")]
        if let Some(store) = &self.inner.config.shared {
            let fleet = self
                .inner
                .fleet_partitioner
                .get_or_try_init(|| async {
                    let secret = store.fleet_secret().await?;
                    Ok::<_, crate::store::RedisStoreError>(
                        crate::partition::Partitioner::with_secret(local.header().clone(), &secret),
                    )
                })
                .await
                .map_err(|err| crate::Error::StoreUnavailable {
                    host: String::new(),
                    reason: format!("no fleet-wide key for partitions: {err}"),
                })?;
            return Ok(fleet.of(headers));
        }
        Ok(local.of(headers))
    }

    /// The shared store, if quotas are shared across processes.
    #[cfg(feature = "redis")]
    pub(crate) fn shared(&self) -> Option<&crate::store::RedisStore> {
        self.inner.config.shared.as_deref()
    }

    /// The record for a URL's host (in `partition`), or `None` for URLs without a host.
    pub(crate) fn host_for(&self, url: &Url, partition: Option<Partition>) -> Option<Arc<Host>> {
        let authority = crate::host::host_key(url)?;
        let key = match partition {
            None => authority.clone(),
            Some(p) => std::borrow::Cow::Owned(format!("{authority} {}", p.key())),
        };
        let config = &self.inner.config;
        Some(self.inner.store.host(&key, |now: Instant| {
            let (limits, generation) = self.limits();
            let host_config = HostConfig {
                limits: limits.for_host(url),
                generation,
                partition,
                max_in_flight: config.max_in_flight,
                breaker: Arc::clone(&config.breaker),
                retry_budget: Arc::clone(&config.retry_budget),
            };
            Host::new(&authority, &host_config, now)
        }))
    }

    /// Every scope a request falls in beside its host record, with the units it takes in
    /// each, sorted by key (the order their locks are taken in). Empty, without allocating,
    /// when nothing but host records is configured and the server named no quota.
    pub(crate) fn scopes_for(
        &self,
        host: &Host,
        url: &Url,
        cost: u32,
        units: Option<&crate::extensions::Units>,
        named: Option<&ServerScope>,
    ) -> Vec<(Arc<Scope>, u32)> {
        let (limits, generation) = self.limits();
        if !limits.has_scopes() && named.is_none() {
            return Vec::new();
        }
        let p = host.record.partition;
        let tag = Partition::key_of(p);
        let mut scopes = Vec::new();
        let mut add = |key: String, kind, label: String, limit: Option<Limit>, units: u32| {
            let scope = self.inner.store.scope(&key, |now| {
                Scope::new(&key, kind, &label, p, limit, generation, now)
            });
            {
                let mut state = scope.state();
                if state.schedule.generation != generation && limit.is_some() {
                    state.schedule.relimit(limit, true, generation);
                }
            }
            scopes.push((scope, units));
        };
        if let Some((name, limit)) = limits.host_wide(url) {
            add(
                host_wide_key(&tag, &name),
                ScopeKind::Host,
                name,
                Some(limit),
                cost,
            );
        }
        for route in limits.routes(url) {
            let RouteLimit {
                host,
                prefix,
                limit,
            } = route;
            add(
                format!("{tag}|route|{host}|{prefix}"),
                ScopeKind::Route,
                format!("{host} {prefix}"),
                Some(*limit),
                cost,
            );
        }
        if let Some(units) = units
            && let Some(UnitLimit { host, unit, limit }) = limits.unit(url, units.unit())
        {
            add(
                format!("{tag}|unit|{host}|{unit}"),
                ScopeKind::Unit,
                format!("{host} {unit}"),
                Some(*limit),
                units.count(),
            );
        }
        if let Some(named) = named {
            for quota in &named.quotas {
                scopes.push((self.named_scope(host, named.kind, quota), cost));
            }
        }
        scopes.sort_by(|a, b| a.0.record.key.cmp(&b.0.record.key));
        scopes.dedup_by(|a, b| a.0.record.key == b.0.record.key);
        scopes
    }

    /// The host-wide scope a limit may move to or from when configured limits of generation
    /// `generation` are applied to `host`'s record: `configured`, the one they set for the
    /// URL's host (its name and limit; made if it does not exist yet, as the request's scopes
    /// would make it), else the one that may have paced the record until now.
    ///
    /// Found before the record's lock is taken: the store's locks are never taken under a
    /// record's (a sweep locks every record).
    pub(crate) fn host_wide_scope(
        &self,
        host: &Host,
        url: &Url,
        configured: Option<(String, Limit)>,
        generation: u64,
    ) -> Option<Arc<Scope>> {
        let tag = Partition::key_of(host.record.partition);
        match configured {
            Some((name, limit)) => {
                let key = host_wide_key(&tag, &name);
                let partition = host.record.partition;
                Some(self.inner.store.scope(&key, |now| {
                    let kind = ScopeKind::Host;
                    Scope::new(&key, kind, &name, partition, Some(limit), generation, now)
                }))
            }
            None => {
                let (name, _) = crate::scope::host_names(url);
                self.inner.store.find_scope(&host_wide_key(&tag, &name))
            }
        }
    }

    /// A quota the server named (its scope is made if it does not exist yet): one requests on
    /// its routes pace in, and one its answers feed. A policy's partition key (`pk`, hashed)
    /// is part of its key and shows as its tag, never as the key itself.
    pub(crate) fn named_scope(
        &self,
        host: &Host,
        kind: ServerScopeKind,
        quota: &QuotaName,
    ) -> Arc<Scope> {
        let generation = self.generation();
        let tag = Partition::key_of(host.record.partition);
        let (kind, word) = match kind {
            ServerScopeKind::Resource => (ScopeKind::Resource, "resource"),
            ServerScopeKind::Bucket => (ScopeKind::Bucket, "bucket"),
            ServerScopeKind::Policy => (ScopeKind::Policy, "policy"),
        };
        let name = &quota.name;
        // a policy's `pk` splits its quota only where requests are partitioned by credential:
        // a host record every credential shares cannot tell which `pk` its next request is
        // for, so its policies of one name share one (conservative) count
        let pk = quota.partition.filter(|_| host.record.partition.is_some());
        let key = match pk {
            None => format!("{tag}|{word}|{}|{name}", host.record.key),
            Some(pk) => format!("{tag}|{word}|{}|{name}|{}", host.record.key, pk.key()),
        };
        self.inner.store.scope(&key, |now| {
            let label = match pk {
                None => format!("{} {name}", host.record.key),
                Some(pk) => format!("{} {name} pk {pk}", host.record.key),
            };
            Scope::new(
                &key,
                kind,
                &label,
                host.record.partition,
                None,
                generation,
                now,
            )
        })
    }
}

/// The store key of the host-wide scope of host `name` (every port), in partition `tag`.
fn host_wide_key(tag: &str, name: &str) -> String {
    format!("{tag}|host|{name}")
}
