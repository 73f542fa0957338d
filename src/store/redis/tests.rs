//! The shared store against a real `redis-server`, started from PATH on a free port for each
//! test and stopped when the test ends. Run with `cargo test --features redis`.

use std::net::TcpListener;
use std::time::{Duration, Instant as StdInstant};

use super::*;

pub(super) const MS: Duration = Duration::from_millis(1);
pub(super) const LONG: Duration = Duration::from_secs(3600);

#[path = "../../../tests/support/redis_server.rs"]
pub(super) mod redis_server;
use redis_server::RedisServer;

/// A plain connection for the test's own commands.
fn admin(server: &RedisServer) -> ::redis::Connection {
    Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("an admin connection")
}

async fn store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&server.url())
        .await
        .expect("connect to the test server")
}

/// The reserved instant, in ns since the epoch on the Redis clock.
pub(super) fn slot(answer: &Answer) -> u64 {
    answer.now_us * 1_000 + answer.delay_ns
}

/// `n` reservations of one unit at once on `scope`, alternating between stores `a` and `b`
/// (two processes); every one must be granted. Returns the reserved slots, sorted.
pub(super) async fn slots_reserved_by_both(
    a: &RedisStore,
    b: &RedisStore,
    scope: &'static str,
    limit: Limit,
    n: usize,
) -> Vec<u64> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .ask(scope, Some(&limit), None, 1, LONG)
                    .await
                    .expect("Redis answers")
            })
        })
        .collect();
    let mut slots = Vec::new();
    for task in tasks {
        let answer = task.await.expect("task");
        assert!(answer.granted, "{answer:?}");
        slots.push(slot(&answer));
    }
    slots.sort_unstable();
    slots
}

pub(super) fn max_in_any_window(sorted: &[u64], window: u64) -> usize {
    let mut most = 0;
    let mut first = 0;
    for (i, &s) in sorted.iter().enumerate() {
        while s - sorted[first] >= window {
            first += 1;
        }
        most = most.max(i + 1 - first);
    }
    most
}

async fn ask(
    store: &RedisStore,
    scope: &str,
    limit: &Limit,
    cost: u32,
    max_wait: Duration,
) -> Answer {
    store
        .ask(scope, Some(limit), None, cost, max_wait)
        .await
        .expect("Redis answers")
}

#[tokio::test]
async fn a_fresh_scope_admits_at_once_and_the_next_waits_exactly_one_interval() {
    let server = RedisServer::start().expect("redis-server");
    let store = store(&server).await;
    let limit = Limit::per_second(10);
    let first = ask(&store, "api.example", &limit, 1, LONG).await;
    assert!(
        first.granted && first.delay_ns == 0,
        "a fresh scope admits at once: {first:?}"
    );
    let second = ask(&store, "api.example", &limit, 1, LONG).await;
    assert!(second.granted, "{second:?}");
    assert_eq!(
        slot(&second) - slot(&first),
        limit.interval_nanos(),
        "the second slot is one interval after the first, on the Redis clock"
    );
    let other = ask(&store, "other.example", &limit, 1, LONG).await;
    assert_eq!(other.delay_ns, 0, "another scope has its own schedule");
}

#[tokio::test]
async fn a_burst_goes_at_once_then_the_schedule_refills() {
    let server = RedisServer::start().expect("redis-server");
    let store = store(&server).await;
    let limit = Limit::per_second(10).burst(4);
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(ask(&store, "s", &limit, 1, LONG).await);
    }
    for a in &answers[..4] {
        assert_eq!(a.delay_ns, 0, "the burst of 4 goes at once: {answers:?}");
    }
    assert_eq!(
        slot(&answers[4]) - slot(&answers[0]),
        limit.interval_nanos(),
        "the 5th waits one interval after the first"
    );
}

#[tokio::test]
async fn a_refusal_reserves_nothing_and_says_when() {
    let server = RedisServer::start().expect("redis-server");
    let store = store(&server).await;
    let limit = Limit::per_second(10);
    let first = ask(&store, "s", &limit, 1, LONG).await;
    let refused = ask(&store, "s", &limit, 1, Duration::ZERO).await;
    assert!(
        !refused.granted,
        "a wait past max_wait is refused: {refused:?}"
    );
    assert_eq!(
        slot(&refused) - slot(&first),
        limit.interval_nanos(),
        "the refusal names the earliest slot"
    );
    let next = ask(&store, "s", &limit, 1, LONG).await;
    assert!(next.granted);
    assert_eq!(
        slot(&next),
        slot(&refused),
        "the refused slot was not taken: the next request gets it"
    );
    match store
        .reserve("s", Some(&limit), None, 1, Duration::ZERO)
        .await
    {
        Ok(Reservation::Refused { earliest, closed }) => {
            assert!(earliest > Duration::ZERO && earliest <= 2 * limit.interval());
            assert_eq!(closed, Duration::ZERO, "nothing closed the scope");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_cost_takes_that_many_slots() {
    let server = RedisServer::start().expect("redis-server");
    let store = store(&server).await;
    let limit = Limit::per_second(10);
    let interval = limit.interval_nanos();
    let three = ask(&store, "s", &limit, 3, LONG).await;
    // as the local pacer: 3 units on a full bucket wait for the 3rd slot
    assert_eq!(
        three.delay_ns,
        2 * interval,
        "3 units start at the 3rd slot"
    );
    let one = ask(&store, "s", &limit, 1, LONG).await;
    assert_eq!(
        slot(&one) - (slot(&three) - 2 * interval),
        5 * interval,
        "the next unit waits for the 3 units' last interval"
    );
}

#[tokio::test]
async fn a_slower_rate_stretches_the_spacing() {
    let server = RedisServer::start().expect("redis-server");
    let store = store(&server).await;
    let limit = Limit::per_second(10);
    let slower = 500 * 1_000_000;
    let first = store
        .ask("s", Some(&limit), Some(slower), 1, LONG)
        .await
        .expect("answer");
    let second = store
        .ask("s", Some(&limit), Some(slower), 1, LONG)
        .await
        .expect("answer");
    assert_eq!(
        slot(&second) - slot(&first),
        slower,
        "slowed to 500 ms apart"
    );
}

/// Two stores (two connections, as two processes) reserve one scope concurrently. Every
/// instant is read from Redis's TIME inside the script and no client sends its own time, so
/// clocks that disagree between machines cannot matter: the reserved instants are checked
/// directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_sharing_a_scope_never_reserve_more_than_n_in_any_window() {
    let server = RedisServer::start().expect("redis-server");
    // 120 calls at once on a shared 2-core machine can take longer than the 50 ms default:
    // this test is about the window, not about latency
    let a = store(&server).await.timeout(Duration::from_secs(5));
    let b = store(&server).await.timeout(Duration::from_secs(5));
    for (limit, scope) in [
        (Limit::per(10, 300 * MS), "smooth"),
        (Limit::per(10, 300 * MS).burst(5), "bursty"),
    ] {
        let slots = slots_reserved_by_both(&a, &b, scope, limit, 120).await;
        let window = 300_000_000;
        let most = max_in_any_window(&slots, window);
        assert!(
            most <= 10,
            "{limit:?}: {most} reserved slots in one 300 ms window"
        );
        // and the quota is used: 120 slots take (120 - burst) intervals, no more
        let span = slots[119] - slots[0];
        let ideal = (120 - u64::from(limit.burst_size())) * limit.interval_nanos();
        assert!(
            span <= ideal + 5_000_000,
            "{limit:?}: 120 slots spread over {span} ns, the schedule needs {ideal} ns"
        );
    }
}

#[tokio::test]
async fn closures_hold_every_process_back_and_are_never_shortened() {
    let server = RedisServer::start().expect("redis-server");
    let a = store(&server).await;
    let b = store(&server).await;
    let limit = Limit::per_second(10);
    let closed = a.close("s", Duration::from_secs(2)).await.expect("close");
    assert_eq!(closed, Some(Duration::from_secs(2)));
    let shorter = b
        .close("s", 500 * MS)
        .await
        .expect("close")
        .expect("shared");
    assert!(
        shorter > Duration::from_millis(1_900),
        "a shorter closure never shortens a longer one: {shorter:?}"
    );
    match b.reserve("s", Some(&limit), None, 1, LONG).await {
        Ok(Reservation::Go { delay, closed }) => {
            assert!(
                delay >= Duration::from_millis(1_900),
                "waits for the closure: {delay:?}"
            );
            assert_eq!(
                delay, closed,
                "the first slot after a closure is when it ends"
            );
        }
        other => panic!("expected a reservation after the closure, got {other:?}"),
    }
    match b
        .reserve("s", Some(&limit), None, 1, Duration::from_secs(1))
        .await
    {
        Ok(Reservation::Refused { earliest, closed }) => {
            assert!(
                closed >= Duration::from_millis(1_900),
                "closure reported: {closed:?}"
            );
            assert!(
                earliest > closed,
                "the slot after the reserved one: {earliest:?}"
            );
        }
        other => panic!("expected a refusal past max_wait, got {other:?}"),
    }
    let open = b
        .reserve("open", None, None, 1, Duration::ZERO)
        .await
        .expect("answer");
    assert_eq!(
        open,
        Reservation::Go {
            delay: Duration::ZERO,
            closed: Duration::ZERO
        },
        "a closure closes its own scope only"
    );
}

#[tokio::test]
async fn keys_expire_once_their_window_has_passed() {
    let server = RedisServer::start().expect("redis-server");
    let store = store(&server).await.heartbeat(50 * MS);
    let mut admin = admin(&server);
    let short = Limit::per(5, 100 * MS);
    ask(&store, "short", &short, 1, LONG).await;
    ask(&store, "hourly", &Limit::per_hour(5000), 1, LONG).await;
    let pttl = |admin: &mut ::redis::Connection, key: &str| -> i64 {
        ::redis::cmd("PTTL").arg(key).query(admin).expect("PTTL")
    };
    let short_ttl = pttl(&mut admin, "reqwest-polite:{short}:gcra");
    assert!(
        (1..=150).contains(&short_ttl),
        "a 100 ms window's key lives about that long: {short_ttl} ms"
    );
    let hourly_ttl = pttl(&mut admin, "reqwest-polite:{hourly}:gcra");
    assert!(
        (3_590_000..=3_600_000 + 225_000).contains(&hourly_ttl),
        "an hour's window keeps its key an hour (and a sixteenth): {hourly_ttl} ms"
    );
    tokio::time::sleep(300 * MS).await;
    let exists: bool = ::redis::cmd("EXISTS")
        .arg("reqwest-polite:{short}:gcra")
        .query(&mut admin)
        .expect("EXISTS");
    assert!(!exists, "an idle scope's key is gone after its window");
    // the live set expires too
    let procs_ttl = pttl(&mut admin, "reqwest-polite:{fleet}:procs");
    assert!(
        (1..=300).contains(&procs_ttl),
        "the live set lives two heartbeat TTLs past the last beat: {procs_ttl} ms"
    );
}

#[tokio::test]
async fn a_script_flush_reloads_the_script() {
    let server = RedisServer::start().expect("redis-server");
    let store = store(&server).await;
    let limit = Limit::per_second(10);
    ask(&store, "s", &limit, 1, LONG).await;
    let _: () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut admin(&server))
        .expect("SCRIPT FLUSH");
    let after = store.ask("s", Some(&limit), None, 1, LONG).await;
    assert!(
        matches!(after, Ok(Answer { granted: true, .. })),
        "NOSCRIPT reloads the script and answers: {after:?}"
    );
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_a_typed_error_for_that_scope_only() {
    let server = RedisServer::start().expect("redis-server");
    let strict = store(&server).await.fallback(Fallback::FailClosed);
    let local = strict.clone().fallback(Fallback::Local);
    let _: () = ::redis::cmd("SET")
        .arg("reqwest-polite:{s}:gcra")
        .arg("not a hash")
        .query(&mut admin(&server))
        .expect("SET");
    let limit = Limit::per_second(10);
    match strict.reserve("s", Some(&limit), None, 1, LONG).await {
        Err(RedisStoreError::Server { code, .. }) => assert_eq!(code, "WRONGTYPE"),
        other => panic!("expected WRONGTYPE, got {other:?}"),
    }
    assert!(
        matches!(
            local.reserve("s", Some(&limit), None, 1, LONG).await,
            Ok(Reservation::Local { processes: 1 })
        ),
        "with the local fallback, the request is paced locally"
    );
    assert!(
        matches!(
            strict.reserve("t", Some(&limit), None, 1, LONG).await,
            Ok(Reservation::Go { .. })
        ),
        "one bad key does not stop the others: no backoff"
    );
    assert_eq!(strict.outages(), 0, "a bad key is not an outage");
}

#[tokio::test]
async fn out_of_memory_is_a_typed_error_and_sharing_resumes() {
    let server = RedisServer::start().expect("redis-server");
    let store = store(&server).await.fallback(Fallback::FailClosed);
    let mut admin = admin(&server);
    let limit = Limit::per_second(10);
    let config = |admin: &mut ::redis::Connection, max: &str| {
        let _: () = ::redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(max)
            .query(admin)
            .expect("CONFIG SET");
    };
    config(&mut admin, "1");
    match store.reserve("s", Some(&limit), None, 1, LONG).await {
        Err(RedisStoreError::Server { code, .. }) => assert_eq!(code, "OOM"),
        other => panic!("expected OOM, got {other:?}"),
    }
    assert!(
        matches!(
            store.reserve("s", Some(&limit), None, 1, LONG).await,
            Err(RedisStoreError::Backoff { .. })
        ),
        "right after an outage, Redis is left alone for a while"
    );
    config(&mut admin, "0");
    let resumed = eventually_go(&store, &limit).await;
    assert!(
        resumed < Duration::from_secs(1),
        "resumed after {resumed:?}"
    );
    assert_eq!(store.outages(), 1, "one outage, one warning");
}

/// Reserve until Redis answers again; how long it took.
async fn eventually_go(store: &RedisStore, limit: &Limit) -> Duration {
    let start = StdInstant::now();
    loop {
        if let Ok(Reservation::Go { .. }) = store.reserve("s", Some(limit), None, 1, LONG).await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "sharing did not resume within 15 s"
        );
        tokio::time::sleep(20 * MS).await;
    }
}

#[tokio::test]
async fn a_killed_redis_falls_back_at_once_and_sharing_resumes_after_a_restart() {
    let mut server = RedisServer::start().expect("redis-server");
    let port = server.port;
    let a = store(&server).await.heartbeat(50 * MS);
    let b = store(&server).await.heartbeat(50 * MS);
    let limit = Limit::per_second(10);
    a.reserve("s", Some(&limit), None, 1, LONG)
        .await
        .expect("answer");
    b.reserve("s", Some(&limit), None, 1, LONG)
        .await
        .expect("answer");
    let start = StdInstant::now();
    while a.live_processes() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "both heartbeats seen"
        );
        tokio::time::sleep(10 * MS).await;
    }

    server.stop();
    for i in 0..50 {
        let start = StdInstant::now();
        let answer = a.reserve("s", Some(&limit), None, 1, LONG).await;
        let took = start.elapsed();
        assert_eq!(
            answer.expect("the local fallback never errors"),
            Reservation::Local { processes: 2 },
            "call {i}: pace locally at half the limit (2 processes were alive)"
        );
        assert!(
            took < Duration::from_millis(500),
            "call {i} took {took:?}: a hang"
        );
    }
    assert_eq!(
        a.outages(),
        1,
        "one outage, one warning, however many calls"
    );
    let share = local_share(&limit, a.live_processes());
    assert_eq!(
        share.count(),
        5,
        "each of 2 processes paces at 5 per second"
    );

    let _server = RedisServer::on_port(port).expect("redis-server");
    let resumed = eventually_go(&a, &limit).await;
    assert!(
        resumed < Duration::from_secs(10),
        "resumed after {resumed:?}"
    );
    assert_eq!(a.outages(), 1, "resuming is not a second outage");
}

#[tokio::test]
async fn a_stalled_redis_times_out_and_fails_closed_when_asked_to() {
    let server = RedisServer::start().expect("redis-server");
    let store = store(&server)
        .await
        .timeout(50 * MS)
        .fallback(Fallback::FailClosed);
    let limit = Limit::per_second(10);
    store
        .reserve("s", Some(&limit), None, 1, LONG)
        .await
        .expect("answer");

    server.signal("-STOP");
    let start = StdInstant::now();
    let stalled = store.reserve("s", Some(&limit), None, 1, LONG).await;
    let took = start.elapsed();
    server.signal("-CONT");
    assert!(
        matches!(stalled, Err(RedisStoreError::Timeout(t)) if t == 50 * MS),
        "a stalled Redis is a timeout: {stalled:?}"
    );
    assert!(
        took < Duration::from_millis(300),
        "bounded by the timeout: took {took:?}"
    );
    let resumed = eventually_go(&store, &limit).await;
    assert!(
        resumed < Duration::from_secs(1),
        "resumed after {resumed:?}"
    );
}

#[tokio::test]
async fn connecting_to_nothing_fails_fast_with_a_typed_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let start = StdInstant::now();
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}/"))
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
        RedisStore::connect("not a url").await,
        Err(RedisStoreError::InvalidUrl(_))
    ));
}

#[tokio::test]
async fn the_fleet_secret_is_shared_and_survives_a_flush() {
    let server = RedisServer::start().expect("redis-server");
    let a = store(&server).await.heartbeat(20 * MS);
    let b = store(&server).await;
    let secret = a.fleet_secret().await.expect("secret");
    assert_eq!(
        b.fleet_secret().await.expect("secret"),
        secret,
        "one secret per fleet"
    );
    assert_ne!(secret, [0; 32]);
    let _: () = ::redis::cmd("FLUSHALL")
        .query(&mut admin(&server))
        .expect("FLUSHALL");
    // a's heartbeat puts back the secret it holds, so a newcomer still hashes as the fleet
    tokio::time::sleep(100 * MS).await;
    let c = store(&server).await;
    assert_eq!(
        c.fleet_secret().await.expect("secret"),
        secret,
        "a process that joins after Redis lost its keys gets the fleet's secret back"
    );
    let configured = store(&server).await.partition_secret([7; 32]);
    assert_eq!(configured.fleet_secret().await.expect("secret"), [7; 32]);
    assert!(
        !format!("{configured:?}").contains("7, 7"),
        "Debug never shows the secret"
    );
}

#[tokio::test]
async fn a_cancelled_reservation_costs_one_slot_and_nothing_else() {
    let server = RedisServer::start().expect("redis-server");
    let store = store(&server).await;
    let limit = Limit::per_second(10);
    let interval = limit.interval_nanos();
    let first = ask(&store, "s", &limit, 1, LONG).await;
    // reserved, then the request is dropped: its slot is lost, and only its slot
    let _abandoned = ask(&store, "s", &limit, 1, LONG).await;
    // a call cancelled in flight, before or after Redis ran it
    for _ in 0..5 {
        let call = store.ask("s", Some(&limit), None, 1, LONG);
        let _ = tokio::time::timeout(Duration::from_micros(1), call).await;
    }
    let next = ask(&store, "s", &limit, 1, LONG).await;
    let lost = (slot(&next) - slot(&first)) / interval - 1;
    assert!(
        (1..=6).contains(&lost),
        "at most one slot per cancelled reservation: {lost} slots between"
    );
    assert_eq!(
        (slot(&next) - slot(&first)) % interval,
        0,
        "the connection still pairs answers with calls: slots stay on the schedule"
    );
}

/// `rediss://` through the redis crate's rustls support (feature `redis-tls`), against a
/// redis-server with TLS on a certificate made here with the `openssl` command.
#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn rediss_urls_connect_with_the_redis_tls_feature() {
    let dir = std::env::temp_dir().join(format!("reqwest-polite-tls-{}", process_id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(
        path("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the TLS test needs the openssl command");
        assert!(status.success(), "openssl {args:?} failed");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                &path("ca.key"),
                "-out",
                &path("ca.crt"),
                "-days",
                "1",
                "-subj",
                "/CN=reqwest-polite test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                &path("server.key"),
                "-out",
                &path("server.csr"),
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("server.csr"),
        "-CA",
        &path("ca.crt"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-out",
        &path("server.crt"),
        "-days",
        "1",
        "-extfile",
        &path("san.ext"),
    ]);

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let port_arg = port.to_string();
    let (cert, key, ca) = (path("server.crt"), path("server.key"), path("ca.crt"));
    let _server = RedisServer::spawn(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port_arg,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ],
        false,
    );
    let client = Client::build_with_tls(
        format!("rediss://localhost:{port}/"),
        ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&ca).expect("CA")),
        },
    )
    .expect("a TLS client");
    let store = RedisStore::from_client(client)
        .await
        .expect("connect over TLS");
    let answer = store
        .reserve("s", Some(&Limit::per_second(10)), None, 1, LONG)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        matches!(answer, Ok(Reservation::Go { .. })),
        "a reservation over TLS: {answer:?}"
    );
}

/// The request path runs inside `Send` futures, on any worker: the store and its calls must go
/// there. Checked at compile time.
#[test]
fn the_store_and_its_calls_can_cross_threads() {
    fn send<T: Send>(_: T) {}
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    fn calls(store: &RedisStore, limit: &Limit) {
        send(store.reserve("s", Some(limit), None, 1, Duration::ZERO));
        send(store.close("s", Duration::ZERO));
        send(store.fleet_secret());
    }
    shareable::<RedisStore>();
    let _ = calls;
}

#[test]
fn local_share_splits_the_limit_among_processes() {
    let limit = Limit::per_second(10).burst(4);
    let share = local_share(&limit, 3);
    assert_eq!((share.count(), share.burst_size()), (3, 1));
    assert_eq!(share.window(), Duration::from_secs(1));
    assert_eq!(
        local_share(&limit, 1),
        limit,
        "one process: the whole limit"
    );
    assert_eq!(
        local_share(&limit, 0),
        limit,
        "none seen yet: the whole limit"
    );
    let scarce = local_share(&Limit::per_second(2), 5);
    assert_eq!(
        (scarce.count(), scarce.window()),
        (1, Duration::from_secs(3)),
        "fewer slots than processes: one each per ceil(5/2) windows"
    );
}

#[test]
fn names_never_open_a_hash_tag() {
    assert_eq!(escape("api.example.com"), "api.example.com");
    assert_eq!(escape("a{b}%c"), "a%7Bb%7D%25c");
    assert_ne!(escape("%7B"), escape("{"), "escaping is injective");
}

#[test]
fn plans_follow_the_local_pacer() {
    let smooth = Plan::new(Some(&Limit::per_second(10)), None, 0, LONG);
    assert_eq!(smooth.interval, 102_000_000);
    assert_eq!(smooth.tolerance, 102_000_000);
    assert_eq!(
        smooth.slack, 0,
        "spaced limits keep a full interval between starts"
    );
    assert_eq!(smooth.cost, 1, "a cost of 0 counts as 1");
    assert_eq!(smooth.ttl_ms, 1_000);
    let fast = Plan::new(Some(&Limit::per_second(5_000)), None, 1, LONG);
    assert_eq!(
        fast.slack, 10_000_000,
        "batched limits keep late slots for half the margin"
    );
    let slowed = Plan::new(Some(&Limit::per_second(10)), Some(1_000_000), 1, LONG);
    assert_eq!(slowed.interval, 102_000_000, "never faster than the limit");
    let unpaced = Plan::new(None, None, 1, Duration::MAX);
    assert_eq!(
        (unpaced.interval, unpaced.advance(), unpaced.max_wait),
        (0, 0, 1 << 62),
        "unpaced; the longest wait asked for fits the script's integer reply"
    );
    let costly = Plan::new(Some(&Limit::per_second(10).burst(4)), None, 3, LONG);
    assert_eq!(costly.interval, 145_714_286, "1.02 s over 7 slots");
    assert_eq!(costly.advance(), 3 * 145_714_286, "cost 3: three intervals");
    assert_eq!(costly.lead(), 4 * 145_714_286, "the burst's tolerance");
    assert_eq!(smooth.lead(), 102_000_000, "at least one interval");
}
