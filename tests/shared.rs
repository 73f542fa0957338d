//! Quotas shared across processes through a real `redis-server` (feature `redis`): two
//! middlewares with their own connections stand for two processes.
#![cfg(feature = "redis")]

mod common;

use std::time::{Duration, Instant};

use common::{Reply, client, polite_error, serve};
use reqwest_polite::{Breaker, Fallback, Limit, Polite, PoliteBuilder, RedisStore};

#[path = "support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

async fn store(redis: &RedisServer) -> RedisStore {
    // a generous timeout: on a busy test machine a call past the 50 ms default would fall
    // back to local pacing, which these tests are not about
    RedisStore::connect(&redis.url())
        .await
        .expect("redis answers")
        .prefix("test")
        .timeout(Duration::from_secs(1))
}

async fn process(redis: &RedisServer, limit: Limit) -> Polite {
    Polite::builder()
        .limit(limit)
        .partition_by_header("authorization")
        .max_retries(0)
        .store(store(redis).await)
        .build()
}

/// Two processes, `a` and `b`, each send 8 requests at once with one credential to a server
/// that allows 5 per second: one shared quota (no refusal, never more than 5 in a second) and
/// one partition tag in both (the fleet's key).
async fn assert_one_quota_for_both(a: &Polite, b: &Polite) {
    let server = common::sliding_window_server(5, Duration::from_secs(1));
    let (ca, cb) = (client(a), client(b));
    let url = server.url("/");
    let calls = (0..8).flat_map(|_| {
        [
            ca.get(&url)
                .header("authorization", "Bearer shared-KEY")
                .send(),
            cb.get(&url)
                .header("authorization", "Bearer shared-KEY")
                .send(),
        ]
    });
    let results = futures::future::join_all(calls).await;
    for result in &results {
        assert_eq!(result.as_ref().expect("answered").status(), 200);
    }
    assert_eq!(server.stats.hits(), 16, "every request reached the server");
    assert_eq!(server.stats.refused(), 0, "one quota for both processes");
    let most = server.stats.max_in_any_window(Duration::from_secs(1));
    assert!(
        most <= 5,
        "{most} requests within one second from two processes"
    );
    let tags: Vec<Option<String>> = [a, b]
        .iter()
        .map(|p| p.snapshot()[0].partition.clone())
        .collect();
    assert!(
        tags[0].is_some() && tags[0] == tags[1],
        "one fleet secret: {tags:?}"
    );
}

/// `local` (falling back to local pacing) and `closed` (failing closed) share a store until
/// `outage` takes it away: then `local` keeps sending, paced alone, without hanging, and
/// `closed` fails with `StoreUnavailable`, sending nothing.
async fn assert_fallbacks(local: &Polite, closed: &Polite, outage: impl FnOnce()) {
    let server = serve(|_, _| Reply::ok());
    for polite in [local, closed] {
        let resp = client(polite).get(server.url("/")).send().await;
        assert_eq!(resp.expect("shared pacing").status(), 200);
    }
    outage();
    let started = Instant::now();
    for _ in 0..3 {
        let resp = client(local).get(server.url("/")).send().await;
        assert_eq!(resp.expect("paced locally").status(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    let err = client(closed)
        .get(server.url("/"))
        .send()
        .await
        .expect_err("fails closed");
    assert!(
        matches!(
            polite_error(&err),
            Some(reqwest_polite::Error::StoreUnavailable { .. })
        ),
        "{err}"
    );
    assert_eq!(
        server.stats.hits(),
        2 + 3,
        "nothing sent that was not admitted"
    );
}

#[tokio::test]
async fn two_processes_share_one_quota_and_its_closures() {
    let redis = RedisServer::start().expect("redis-server");
    let a = process(&redis, Limit::per_second(5)).await;
    let b = process(&redis, Limit::per_second(5)).await;
    assert_one_quota_for_both(&a, &b).await;
}

/// A server that answers its first request with `refusal`, and accepts every other one.
fn refusing_the_first(refusal: impl Fn() -> Reply + Send + Sync + 'static) -> common::TestServer {
    let refused = std::sync::atomic::AtomicBool::new(false);
    serve(move |_, _| {
        if refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Reply::ok()
        } else {
            refusal()
        }
    })
}

#[tokio::test]
async fn a_retry_after_one_process_receives_closes_the_host_for_the_other() {
    let redis = RedisServer::start().expect("redis-server");
    let server = refusing_the_first(|| Reply::status(429).header("retry-after", 1));
    let a = process(&redis, Limit::per_second(100)).await;
    let b = process(&redis, Limit::per_second(100)).await;
    let url = server.url("/");
    let resp = client(&a).get(&url).send().await.expect("answered");
    assert_eq!(resp.status(), 429, "process a is refused, Retry-After: 1");
    let resp = client(&b).get(&url).send().await.expect("answered");
    assert_eq!(resp.status(), 200);
    let arrivals = server.stats.arrivals();
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_millis(950),
        "process b reached the host {gap:?} after a's refusal, before its Retry-After"
    );
}

/// A request already sleeping for its slot in the fleet's schedule when another process is told
/// `Retry-After` waits the pause out too: it reads the shared cooldowns again once its slot
/// comes (found by the simulation: a fleet's waiters were sent during the pause).
#[tokio::test]
async fn a_request_sleeping_for_its_fleet_slot_waits_out_a_pause_that_came_meanwhile() {
    let redis = RedisServer::start().expect("redis-server");
    let server = refusing_the_first(|| {
        // answered while the other process sleeps for the next slot
        Reply::status(429)
            .header("retry-after", 2)
            .delay(Duration::from_millis(300))
    });
    let a = process(&redis, Limit::per_second(1)).await;
    let b = process(&redis, Limit::per_second(1)).await;
    let url = server.url("/");
    let first = tokio::spawn({
        let (client, url) = (client(&a), url.clone());
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // the fleet's next slot is a second after a's request: b sleeps for it
    let resp = client(&b).get(&url).send().await.expect("answered");
    assert_eq!(resp.status(), 200);
    let refused = first.await.expect("joined").expect("answered");
    assert_eq!(refused, 429, "process a is refused, Retry-After: 2");
    let arrivals = server.stats.arrivals();
    // a's refusal came 0.3 s after its request reached the host
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_millis(2250),
        "process b reached the host {gap:?} after a's request, inside the pause its answer \
         (0.3 s later) asked for: 2 s"
    );
}

/// A request whose own local slot took the last unit of the server's quota (its scope then
/// cools down until the reset, for the requests after it) still goes at its fleet slot: only a
/// cooldown that came while it slept holds it back.
#[tokio::test]
async fn a_request_that_took_the_last_unit_still_goes_at_its_fleet_slot() {
    let redis = RedisServer::start().expect("redis-server");
    // a quota the server names (GitHub's `core`): counted from its headers, configured or not
    let server = serve(|_, _| {
        Reply::ok()
            .header("x-ratelimit-resource", "core")
            .header("x-ratelimit-limit", 100)
            .header("x-ratelimit-remaining", 1)
            .header("x-ratelimit-reset-after", 30)
    });
    let a = process(&redis, Limit::per_second(2)).await;
    let b = process(&redis, Limit::per_second(2)).await;
    let url = server.url("/");
    // b learns that 1 is left; a takes the fleet's next slot
    client(&b).get(&url).send().await.expect("answered");
    let started = Instant::now();
    let taken = tokio::spawn({
        let (client, url) = (client(&a), url.clone());
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // b's last unit: its local slot spends the quota, then it sleeps for the fleet's slot
    let last = tokio::time::timeout(Duration::from_secs(5), client(&b).get(&url).send()).await;
    let last = last
        .expect("not held for the quota it took itself")
        .expect("answered");
    assert_eq!(last.status(), 200);
    assert_eq!(taken.await.expect("joined").expect("answered"), 200);
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Headers, as (name, value) pairs.
type Headers = &'static [(&'static str, &'static str)];

/// Two processes configured by `configure` share a store. Both reach the host once (answered
/// 200 with `ok`: the quota the server names, if any); then the server refuses `a` with 429,
/// `Retry-After: 2` and `refusal`; `b` sends next, and must not reach the host before the
/// cooldown is over.
async fn assert_a_retry_after_holds_back_the_other_process(
    configure: fn(PoliteBuilder) -> PoliteBuilder,
    ok: Headers,
    refusal: Headers,
) {
    let redis = RedisServer::start().expect("redis-server");
    let answered = std::sync::atomic::AtomicU64::new(0);
    let server = serve(move |_, _| {
        let (reply, headers) = match answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            2 => (Reply::status(429).header("retry-after", 2), refusal),
            _ => (Reply::ok(), ok),
        };
        headers
            .iter()
            .fold(reply, |reply, (name, value)| reply.header(name, value))
    });
    let mut fleet = Vec::new();
    for _ in 0..2 {
        fleet.push(configure(Polite::builder().max_retries(0).store(store(&redis).await)).build());
    }
    let send = |polite: &Polite| {
        client(polite)
            .get(server.url("/r"))
            .header("authorization", "Bearer fleet-KEY")
            .send()
    };
    for polite in &fleet {
        let resp = send(polite).await.expect("answered");
        assert_eq!(resp.status(), 200, "both processes reach the host first");
    }
    let resp = send(&fleet[0]).await.expect("answered");
    assert_eq!(resp.status(), 429, "process a is refused, Retry-After: 2");
    let resp = send(&fleet[1]).await.expect("answered");
    assert_eq!(resp.status(), 200);
    let arrivals = server.stats.arrivals();
    let gap = arrivals[3] - arrivals[2];
    assert!(
        gap >= Duration::from_millis(1950),
        "process b reached the host {gap:?} after a's refusal, before its Retry-After: 2"
    );
}

/// The README's configuration: a port-less `host_limit`, one quota per credential.
#[tokio::test]
async fn a_retry_after_holds_back_the_other_process_under_a_portless_host_limit() {
    assert_a_retry_after_holds_back_the_other_process(
        |polite| {
            polite
                .host_limit("127.0.0.1", Limit::per_second(100))
                .partition_by_header("authorization")
        },
        &[],
        &[],
    )
    .await;
}

#[tokio::test]
async fn a_retry_after_holds_back_the_other_process_with_no_limit() {
    assert_a_retry_after_holds_back_the_other_process(|polite| polite, &[], &[]).await;
}

/// GitHub: the refusal closes the resource it names, for every process that paces in it.
#[tokio::test]
async fn a_retry_after_holds_back_the_other_process_in_a_github_resource() {
    let named: Headers = &[("x-ratelimit-resource", "core")];
    assert_a_retry_after_holds_back_the_other_process(|polite| polite, named, named).await;
}

/// Discord: the refusal closes the bucket it names, for every process.
#[tokio::test]
async fn a_retry_after_holds_back_the_other_process_in_a_discord_bucket() {
    let named: Headers = &[("x-ratelimit-bucket", "abcd1234")];
    assert_a_retry_after_holds_back_the_other_process(|polite| polite, named, named).await;
}

/// IETF `RateLimit` policies: the refusal closes the policy it says is spent, for every
/// process.
#[tokio::test]
async fn a_retry_after_holds_back_the_other_process_in_an_ietf_policy() {
    const POLICIES: (&str, &str) = (
        "ratelimit-policy",
        r#""burst";q=1000;w=1, "minute";q=60000;w=60"#,
    );
    let ok: Headers = &[
        POLICIES,
        ("ratelimit", r#""burst";r=999;t=1, "minute";r=59999;t=60"#),
    ];
    let refusal: Headers = &[
        POLICIES,
        ("ratelimit", r#""burst";r=0;t=2, "minute";r=59000;t=60"#),
    ];
    assert_a_retry_after_holds_back_the_other_process(|polite| polite, ok, refusal).await;
}

#[tokio::test]
async fn when_redis_goes_away_the_fallback_paces_locally_or_fails_closed() {
    let redis = RedisServer::start().expect("redis-server");
    let local_store = store(&redis).await.fallback(Fallback::Local);
    let closed_store = store(&redis).await.fallback(Fallback::FailClosed);
    let local = Polite::builder()
        .limit(Limit::per_second(20))
        .store(local_store)
        .build();
    let closed = Polite::builder()
        .limit(Limit::per_second(20))
        .store(closed_store)
        .build();
    assert_fallbacks(&local, &closed, move || drop(redis)).await; // killed
}

/// Every way a 32-byte key could be printed: the whole key (bytes, hex), each 64-bit word
/// (either byte order, decimal and hex), and the XOR of its halves' words.
fn printed_forms(key: &[u8; 32]) -> Vec<String> {
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&key[at..at + 8]);
        bytes
    };
    let mut words: Vec<u64> = (0..4)
        .flat_map(|i| {
            [
                u64::from_le_bytes(word(8 * i)),
                u64::from_be_bytes(word(8 * i)),
            ]
        })
        .collect();
    words.push(u64::from_le_bytes(word(0)) ^ u64::from_le_bytes(word(16)));
    words.push(u64::from_le_bytes(word(8)) ^ u64::from_le_bytes(word(24)));
    let mut forms = vec![
        format!("{key:?}"),
        key.iter().map(|b| format!("{b:02x}")).collect(),
    ];
    for w in words {
        forms.extend([w.to_string(), format!("{w:x}"), format!("{w:016x}")]);
    }
    forms
}

#[tokio::test]
async fn neither_the_fleet_secret_nor_a_credential_shows_in_debug_snapshots_or_errors() {
    let redis = RedisServer::start().expect("redis-server");
    let secret: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
    let polite = Polite::builder()
        .partition_by_header("authorization")
        .max_retries(0)
        .breaker(Breaker::consecutive_failures(1).open_for(Duration::from_secs(60)))
        .store(store(&redis).await.partition_secret(secret))
        .build();
    let shown = common::shown_after_a_credential(&polite, "Bearer sk-FLEET-CREDENTIAL").await;
    assert!(
        shown.contains("authorization"),
        "the header is shown: {shown}"
    );
    assert!(
        !shown.contains("sk-FLEET-CREDENTIAL"),
        "a credential leaked: {shown}"
    );
    for form in printed_forms(&secret) {
        assert!(
            !shown.contains(&form),
            "the fleet's secret shows as {form}: {shown}"
        );
    }
}

/// Most instants of `at` within any span of `window`.
fn most_in_any_window(at: &[Instant], window: Duration) -> usize {
    at.iter()
        .map(|&s| at.iter().filter(|&&t| t >= s && t < s + window).count())
        .max()
        .unwrap_or(0)
}

/// Two processes configured by `configure`, each with its own store on `redis`, whose
/// heartbeats have seen each other: Redis gone, each paces at half of each limit.
async fn two_processes_seen_alive(
    redis: &RedisServer,
    configure: fn(PoliteBuilder) -> PoliteBuilder,
) -> [Polite; 2] {
    let warm_up = serve(|_, _| Reply::ok());
    let mut fleet = Vec::new();
    for _ in 0..2 {
        let store = store(redis)
            .await
            .heartbeat(Duration::from_millis(100))
            .timeout(Duration::from_millis(200));
        let polite = configure(Polite::builder().max_retries(0).store(store)).build();
        // the first call through the store starts its heartbeat
        let resp = client(&polite).get(warm_up.url("/")).send().await;
        assert_eq!(resp.expect("shared pacing").status(), 200);
        fleet.push(polite);
    }
    // a heartbeat every 100 ms: both are counted alive well within half a second
    tokio::time::sleep(Duration::from_millis(500)).await;
    [fleet.remove(0), fleet.remove(0)]
}

/// During an outage the local fallback paces a port-less limit as one schedule across its
/// ports, at the process's share: two processes sending to two ports of one host under 10 per
/// second start at most 10 in any second between them (not 10 per port per process).
#[tokio::test]
async fn during_an_outage_a_portless_limit_is_one_schedule_at_each_process_share() {
    let mut redis = RedisServer::start().expect("redis-server");
    let fleet = two_processes_seen_alive(&redis, |polite| {
        polite.host_limit("127.0.0.1", Limit::per_second(10))
    })
    .await;
    let ports = [serve(|_, _| Reply::ok()), serve(|_, _| Reply::ok())];
    redis.stop();
    let until = Instant::now() + Duration::from_secs(2);
    let senders = fleet.iter().flat_map(|polite| {
        ports.iter().map(move |port| async move {
            let (client, url) = (client(polite), port.url("/"));
            for _ in 0..100 {
                if Instant::now() >= until {
                    break;
                }
                let resp = client.get(&url).send().await;
                assert_eq!(resp.expect("paced locally").status(), 200);
            }
        })
    });
    futures::future::join_all(senders).await;
    let arrivals: Vec<Instant> = ports.iter().flat_map(|p| p.stats.arrivals()).collect();
    let most = most_in_any_window(&arrivals, Duration::from_secs(1));
    assert!(
        most <= 10,
        "{most} requests within one second from 2 processes x 2 ports under 10 per second \
         ({} in all)",
        arrivals.len()
    );
    assert!(
        arrivals.len() >= 12,
        "the share is used: {} requests in 2 s",
        arrivals.len()
    );
}

/// During an outage, a request costing more than the process's share (8 units, a share of 5
/// per second) waits until the share has accrued it: it is not charged as the share and sent
/// at once.
#[tokio::test]
async fn during_an_outage_a_cost_above_the_share_waits_for_it() {
    let mut redis = RedisServer::start().expect("redis-server");
    // the host's own limit: the request is the first on its record, which lets it go at once
    let [a, _b] =
        two_processes_seen_alive(&redis, |polite| polite.limit(Limit::per_second(10))).await;
    let server = serve(|_, _| Reply::ok());
    redis.stop();
    let sent = Instant::now();
    let resp = client(&a)
        .get(server.url("/"))
        .with_extension(reqwest_polite::Cost(8))
        .send()
        .await;
    assert_eq!(resp.expect("paced locally").status(), 200);
    let waited = server.stats.arrivals()[0] - sent;
    // a share of 5 per second, burst 1: one unit now, seven more 204 ms apart
    assert!(
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(3),
        "8 units on a share of 5 per second reached the server after {waited:?}"
    );
}

/// The same through a Redis Cluster of three primaries (feature `redis-cluster`).
#[cfg(feature = "redis-cluster")]
mod cluster {
    use super::*;
    use redis_server::RedisCluster;

    async fn process(cluster: &RedisCluster, limit: Limit, fallback: Fallback) -> Polite {
        let store = RedisStore::connect_cluster(cluster.urls())
            .await
            .expect("the cluster answers")
            .prefix("test")
            .timeout(Duration::from_secs(1))
            .fallback(fallback);
        Polite::builder()
            .limit(limit)
            .partition_by_header("authorization")
            .max_retries(0)
            .store(store)
            .build()
    }

    #[tokio::test]
    async fn two_processes_on_a_cluster_share_one_quota() {
        let cluster = RedisCluster::start().expect("a Redis Cluster");
        let a = process(&cluster, Limit::per_second(5), Fallback::Local).await;
        let b = process(&cluster, Limit::per_second(5), Fallback::Local).await;
        assert_one_quota_for_both(&a, &b).await;
    }

    #[tokio::test]
    async fn when_the_cluster_goes_away_the_fallback_paces_locally_or_fails_closed() {
        let mut cluster = RedisCluster::start().expect("a Redis Cluster");
        let local = process(&cluster, Limit::per_second(20), Fallback::Local).await;
        let closed = process(&cluster, Limit::per_second(20), Fallback::FailClosed).await;
        assert_fallbacks(&local, &closed, || cluster.stop()).await;
    }
}
