//! The shared store against a real Redis Cluster (feature `redis-cluster`): three
//! `redis-server` primaries from PATH joined by `redis-cli --cluster create`, started for each
//! test and killed when it ends.

use std::time::{Duration, Instant as StdInstant};

use super::tests::redis_server::RedisCluster;
use super::tests::{LONG, MS, max_in_any_window, slot, slots_reserved_by_both};
use super::*;

async fn store(cluster: &RedisCluster) -> RedisStore {
    // generous: a cluster of three on a shared 2-core machine; these tests are not about latency
    RedisStore::connect_cluster(cluster.urls())
        .await
        .expect("connect to the test cluster")
        .timeout(Duration::from_secs(5))
}

/// A plain connection to each node, for the test's own commands.
fn admins(cluster: &RedisCluster) -> Vec<::redis::Connection> {
    cluster
        .nodes
        .iter()
        .map(|node| {
            Client::open(node.url())
                .and_then(|c| c.get_connection())
                .expect("an admin connection")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_a_cluster_share_one_schedule_per_scope() {
    let cluster = RedisCluster::start().expect("a Redis Cluster");
    let a = store(&cluster).await;
    let b = store(&cluster).await;
    let limit = Limit::per(10, 300 * MS);
    let slots = slots_reserved_by_both(&a, &b, "shared", limit, 60).await;
    let most = max_in_any_window(&slots, 300_000_000);
    assert!(
        most <= 10,
        "{most} slots reserved in one 300 ms window through the cluster"
    );
    let span = slots[59] - slots[0];
    let ideal = 59 * limit.interval_nanos();
    assert!(
        span <= ideal + 5_000_000,
        "60 slots spread over {span} ns, the schedule needs {ideal} ns: one schedule, not two"
    );
}

#[tokio::test]
async fn scopes_spread_over_the_nodes_and_each_keeps_its_own_schedule() {
    let cluster = RedisCluster::start().expect("a Redis Cluster");
    let store = store(&cluster).await;
    let limit = Limit::per_second(10);
    let scopes: Vec<String> = (0..12).map(|i| format!("api{i}.example")).collect();
    for scope in &scopes {
        let first = ask_cluster(&store, scope, &limit).await;
        let second = ask_cluster(&store, scope, &limit).await;
        assert_eq!(first.delay_ns, 0, "{scope}: a fresh scope admits at once");
        assert_eq!(
            slot(&second) - slot(&first),
            limit.interval_nanos(),
            "{scope}: the second slot is one interval after the first"
        );
    }
    // each scope's key lives on exactly one node, and the scopes use more than one node
    let mut admins = admins(&cluster);
    let mut nodes_used = std::collections::BTreeSet::new();
    for scope in &scopes {
        let key = format!("reqwest-polite:{{{scope}}}:gcra");
        let mut holders = Vec::new();
        for (i, admin) in admins.iter_mut().enumerate() {
            // KEYS, not EXISTS: a node answers MOVED for a key of another's slot
            let here: Vec<String> = ::redis::cmd("KEYS").arg(&key).query(admin).expect("KEYS");
            if !here.is_empty() {
                holders.push(i);
            }
        }
        assert_eq!(holders.len(), 1, "{key} is held by nodes {holders:?}");
        nodes_used.insert(holders[0]);
    }
    assert!(
        nodes_used.len() >= 2,
        "12 scopes all landed on one node ({nodes_used:?}): the test shows nothing"
    );
}

async fn ask_cluster(store: &RedisStore, scope: &str, limit: &Limit) -> Answer {
    store
        .ask(scope, Some(limit), None, 1, LONG)
        .await
        .expect("the cluster answers")
}

#[tokio::test]
async fn a_cluster_reloads_flushed_scripts_closes_scopes_and_shares_the_fleet_secret() {
    let cluster = RedisCluster::start().expect("a Redis Cluster");
    let a = store(&cluster).await.heartbeat(20 * MS);
    let b = store(&cluster).await;
    let limit = Limit::per_second(10);
    ask_cluster(&a, "s", &limit).await;
    for admin in &mut admins(&cluster) {
        let _: () = ::redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(admin)
            .expect("SCRIPT FLUSH");
    }
    let after = b.ask("s", Some(&limit), None, 1, LONG).await;
    assert!(
        matches!(after, Ok(Answer { granted: true, .. })),
        "NOSCRIPT reloads the script on the node that holds the scope: {after:?}"
    );
    let closed = a.close("s", Duration::from_secs(2)).await.expect("closed");
    assert!(
        closed.is_some_and(|c| c > Duration::from_secs(1)),
        "{closed:?}"
    );
    let held = ask_cluster(&b, "s", &limit).await;
    assert!(
        held.closed_ns > 1_000_000_000,
        "a closure by one store holds the other back: {held:?}"
    );
    let secret = a.fleet_secret().await.expect("secret");
    assert_eq!(b.fleet_secret().await.expect("secret"), secret);
    // the heartbeat (its keys share the {fleet} slot) counts both stores
    let start = StdInstant::now();
    b.start_heartbeat();
    while a.live_processes() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the heartbeat saw {} live processes",
            a.live_processes()
        );
        tokio::time::sleep(20 * MS).await;
    }
}

#[tokio::test]
async fn an_unreachable_cluster_falls_back_or_fails_closed() {
    let mut cluster = RedisCluster::start().expect("a Redis Cluster");
    let local = store(&cluster).await.timeout(100 * MS);
    let strict = store(&cluster)
        .await
        .timeout(100 * MS)
        .fallback(Fallback::FailClosed);
    let limit = Limit::per_second(10);
    for store in [&local, &strict] {
        assert!(
            matches!(
                store.reserve("s", Some(&limit), None, 1, LONG).await,
                Ok(Reservation::Go { .. })
            ),
            "shared while the cluster runs"
        );
    }
    cluster.stop();
    let start = StdInstant::now();
    for _ in 0..3 {
        assert!(
            matches!(
                local.reserve("s", Some(&limit), None, 1, LONG).await,
                Ok(Reservation::Local { .. })
            ),
            "paced locally while the cluster is gone"
        );
    }
    let refused = strict.reserve("s", Some(&limit), None, 1, LONG).await;
    assert!(
        matches!(&refused, Err(err) if err.is_outage()),
        "fails closed with the cause (or the backoff its heartbeat's failure started): \
         {refused:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "no hang: {:?}",
        start.elapsed()
    );
    assert_eq!(local.outages(), 1, "one outage, one warning");
}

#[tokio::test]
async fn connecting_to_no_cluster_fails_fast_with_a_typed_error() {
    let start = StdInstant::now();
    let err = RedisStore::connect_cluster(["redis://127.0.0.1:1/"])
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(
            err,
            RedisStoreError::Unreachable(_) | RedisStoreError::Timeout(_)
        ),
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(
        RedisStore::connect_cluster(Vec::<String>::new()).await,
        Err(RedisStoreError::InvalidUrl(_))
    ));
}
