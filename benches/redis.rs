//! The shared store's decision through Redis, next to a plain `PING` on the same connection:
//! - first, PING, the store's reservation, a bare `EVALSHA` of the same script, an `EVALSHA`
//!   of a script that does nothing with the same arguments (the floor of any script: what the
//!   call costs before our Lua does any work) and one of a script that makes our three Redis
//!   calls (TIME, HMGET, HSET) and nothing else (the floor of any script that reads Redis's
//!   clock and one key and writes it), interleaved call by call (printed medians: the load of
//!   a shared machine weighs on each alike);
//! - `latency/ping` and `latency/reserve`: one call at a time from a current-thread runtime,
//!   on loopback, so the difference is what the script costs over a round trip;
//! - `throughput/reserve`: decisions per second from one process, 64 tasks on 2 worker
//!   threads sharing one multiplexed connection (the connection manager pipelines them).
//!
//! Starts its own `redis-server` from PATH on a free port (no persistence) and stops it.
//! The limit is so high that every reservation is granted at once: this measures the decision,
//! not waiting.
//!
//! Run: `cargo bench --features bench,redis --bench redis -- --warm-up-time 1 --measurement-time 3`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use reqwest_polite::bench_support;
use reqwest_polite::redis::aio::ConnectionManager;
use reqwest_polite::{Limit, RedisStore};

const WORKERS: usize = 2;
const TASKS: usize = 64;

#[path = "../tests/support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

/// A connection manager on `rt` (its driver task runs there) and a store on it.
fn connect(rt: &tokio::runtime::Runtime, url: &str) -> (ConnectionManager, Arc<RedisStore>) {
    let manager: ConnectionManager = rt.block_on(async {
        let client = reqwest_polite::redis::Client::open(url).expect("client");
        // bounded so a stalled server fails the bench instead of hanging it
        tokio::time::timeout(Duration::from_secs(5), client.get_connection_manager())
            .await
            .expect("connect in time")
            .expect("connect")
    });
    // a generous bound: this measures answers, not the fallback
    let store = RedisStore::from_manager(manager.clone()).timeout(Duration::from_secs(1));
    (manager, Arc::new(store))
}

/// PING, the store's reservation, a bare `EVALSHA` of the same script, one of an empty
/// script with the same arguments and one of the script's Redis calls alone, interleaved call
/// by call so that the load of a shared machine weighs on each alike; prints the medians.
fn paired_latency(
    rt: &tokio::runtime::Runtime,
    manager: &ConnectionManager,
    store: &RedisStore,
    limit: &Limit,
) {
    const ROUNDS: usize = 20_000;
    let gcra = reqwest_polite::redis::Script::new(include_str!("../src/store/gcra.lua"));
    let empty = reqwest_polite::redis::Script::new("return {1, 0, 0, 0}");
    let calls = reqwest_polite::redis::Script::new(
        "local t = redis.call('TIME') \
         local s = redis.call('HMGET', KEYS[1], 'tu', 'tn', 'cu', 'xe') \
         redis.call('HSET', KEYS[1], 'tu', t[1] * 1000000 + t[2], 'tn', 0) \
         return {1, 0, 0, 0}",
    );
    let [mut ping, mut reserve, mut bare, mut floor, mut skeleton] =
        [(); 5].map(|_| Vec::with_capacity(ROUNDS));
    rt.block_on(async {
        let mut conn = manager.clone();
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let _: String = reqwest_polite::redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .expect("PONG");
            ping.push(t.elapsed());
            let t = Instant::now();
            assert!(bench_support::redis_reserve(store, "paired", limit).await);
            reserve.push(t.elapsed());
            for (script, times) in [
                (&gcra, &mut bare),
                (&empty, &mut floor),
                (&calls, &mut skeleton),
            ] {
                let t = Instant::now();
                // what the store sends: advance and lead (one interval each), slack, max
                // wait, TTL floor
                let _: Vec<i64> = script
                    .key("reqwest-polite:{bare}:gcra")
                    .arg(limit.interval().as_nanos() as u64)
                    .arg(limit.interval().as_nanos() as u64)
                    .arg(10_000_000u64)
                    .arg(3_600_000_000_000u64)
                    .arg(1_000u64)
                    .invoke_async(&mut conn)
                    .await
                    .expect("answer");
                times.push(t.elapsed());
            }
        }
    });
    let median = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (p, r, b, f, k) = (
        median(&mut ping),
        median(&mut reserve),
        median(&mut bare),
        median(&mut floor),
        median(&mut skeleton),
    );
    let x = |d: Duration| d.as_secs_f64() / p.as_secs_f64();
    println!(
        "paired medians over {ROUNDS} rounds: PING {p:?}, reserve {r:?} ({:.2}x PING), \
         bare EVALSHA {b:?} ({:.2}x PING), empty script {f:?} ({:.2}x PING), \
         TIME+HMGET+HSET only {k:?} ({:.2}x PING)",
        x(r),
        x(b),
        x(f),
        x(k),
    );
}

fn bench_redis(c: &mut Criterion) {
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    let limit = Limit::per_second(u32::MAX / 2);

    // one call at a time: a current-thread runtime, so no hand-over between workers is timed
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (manager, store) = connect(&rt, &url);
    paired_latency(&rt, &manager, &store, &limit);
    let mut latency = c.benchmark_group("latency");
    latency.bench_function("ping", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = manager.clone();
            async move {
                let pong: String = reqwest_polite::redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .expect("PONG");
                pong
            }
        })
    });
    latency.bench_function("reserve", |b| {
        b.to_async(&rt)
            .iter(|| async { assert!(bench_support::redis_reserve(&store, "bench", &limit).await) })
    });
    latency.finish();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("runtime");
    let (_, store) = connect(&rt, &url);
    let mut throughput = c.benchmark_group("throughput");
    throughput.throughput(Throughput::Elements(1));
    throughput.bench_function("reserve", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let store = Arc::clone(&store);
            async move {
                let per_task = iters.div_ceil(TASKS as u64);
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let store = Arc::clone(&store);
                        tokio::spawn(async move {
                            for _ in 0..per_task {
                                assert!(
                                    bench_support::redis_reserve(&store, "bench", &limit).await
                                );
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("task");
                }
                // time per decision, so criterion's elements/s is decisions per second
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_task * TASKS as u64) as f64)
            }
        })
    });
    throughput.finish();
    drop(server);
}

criterion_group!(benches, bench_redis);
criterion_main!(benches);
