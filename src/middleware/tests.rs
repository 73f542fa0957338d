use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::admit::{Attempt, admit};
use super::pace::{Paced, Waits};
use crate::builder::Config;
use crate::error::Error;
use crate::extensions::RequestOptions;
use crate::host::Host;
use crate::limit::Limit;

const MS: Duration = Duration::from_millis(1);

/// A host paced by `limit` that has answered once without quota headers (no first-contact
/// gate), as the pacing tests need.
fn host(limit: Limit) -> Arc<Host> {
    let config = crate::host::HostConfig::test(Some(limit));
    let host = Arc::new(Host::new("http://test", &config, Instant::now()));
    host.state().schedule.pacing.quota.assume_unmetered();
    host
}

async fn pace(
    host: &Arc<Host>,
    opts: &RequestOptions,
    attempts: u32,
) -> std::result::Result<(), Error> {
    let mut attempt = admit(host, &Config::default(), opts, attempts).await?;
    pace_attempt(host, opts, &mut attempt, attempts).await
}

/// Pace `attempt` (admitted by the caller) on the host alone, with the default config.
async fn pace_attempt(
    host: &Arc<Host>,
    opts: &RequestOptions,
    attempt: &mut Attempt,
    attempts: u32,
) -> std::result::Result<(), Error> {
    let config = Config::default();
    let waits = Waits {
        host,
        scopes: &[],
        path: "/",
        named: None,
        generation: 0,
        config: &config,
        opts,
        attempts,
    };
    match waits.pace(attempt).await? {
        Paced::Go(_) => Ok(()),
        Paced::Rescope(_) => panic!("no scope changes here"),
    }
}

fn opts(cost: u32, deadline: Option<Instant>) -> RequestOptions {
    RequestOptions {
        cost,
        deadline,
        no_retry: false,
        wait_if_open: None,
    }
}

/// Spawn `n` requests (one per ms), each recording when it got its slot.
async fn spawn_waiters(
    host: &Arc<Host>,
    n: usize,
    log: &Arc<Mutex<Vec<(usize, Duration)>>>,
    t0: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (host, log) = (Arc::clone(host), Arc::clone(log));
        tasks.push(tokio::spawn(async move {
            pace(&host, &opts(1, None), 0)
                .await
                .expect("no deadline set");
            log.lock().expect("log lock").push((i, Instant::now() - t0));
        }));
        tokio::time::sleep(MS).await;
    }
    tasks
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order_at_exact_slots() {
    let t0 = Instant::now();
    let host = host(Limit::per_second(10));
    let log = Arc::new(Mutex::new(Vec::new()));
    for task in spawn_waiters(&host, 5, &log, t0).await {
        task.await.expect("waiter finished");
    }
    let log = log.lock().expect("log lock").clone();
    assert_eq!(
        log,
        vec![
            (0, Duration::ZERO),
            (1, 102 * MS),
            (2, 204 * MS),
            (3, 306 * MS),
            (4, 408 * MS)
        ],
        "FIFO order and one slot per 102 ms"
    );
    assert_eq!(host.state().counters.waited, 4, "four of them had to wait");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_costs_no_throughput() {
    let t0 = Instant::now();
    let host = host(Limit::per_second(10));
    let log = Arc::new(Mutex::new(Vec::new()));
    let tasks = spawn_waiters(&host, 5, &log, t0).await;
    // cancel waiters 1 and 3 while they wait (the one at the head and one further back)
    tasks[1].abort();
    tasks[3].abort();
    for task in tasks {
        let _ = task.await;
    }
    let log = log.lock().expect("log lock").clone();
    assert_eq!(
        log,
        vec![(0, Duration::ZERO), (2, 102 * MS), (4, 204 * MS)],
        "the slots of cancelled waiters go to the next in line"
    );
    let state = host.state();
    assert_eq!(
        (state.queued, state.queued_cost),
        (0, 0),
        "the queue is empty again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_deadline_fails_at_once() {
    let t0 = Instant::now();
    let host = host(Limit::per_second(10));
    pace(&host, &opts(1, None), 0)
        .await
        .expect("first slot is free");
    // next slot at 102 ms: a deadline at 50 ms cannot be met
    let err = pace(&host, &opts(1, Some(t0 + 50 * MS)), 0)
        .await
        .expect_err("the deadline cannot be met");
    assert!(
        matches!(err, Error::DeadlineExceeded { attempts: 0, .. }),
        "got {err:?}"
    );
    assert_eq!(Instant::now(), t0, "failing must not wait");
    // a deadline at the slot itself is fine
    pace(&host, &opts(1, Some(t0 + 102 * MS)), 0)
        .await
        .expect("slot at the deadline");
    assert_eq!(Instant::now() - t0, 102 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_is_refused_at_the_head_of_the_queue_once_its_slot_is_certain() {
    let t0 = Instant::now();
    let host = host(Limit::per_second(10));
    let log = Arc::new(Mutex::new(Vec::new()));
    let tasks = spawn_waiters(&host, 4, &log, t0).await; // slots 0, 102, 204, 306 ms
    // the requests ahead might be cancelled, so the queue is not a certain wait: it queues
    let err = pace(&host, &opts(1, Some(t0 + 350 * MS)), 0)
        .await
        .expect_err("behind three waiters, the 5th slot (408 ms) is past 350 ms");
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "got {err:?}");
    assert_eq!(
        Instant::now() - t0,
        306 * MS,
        "refused once at the head of the queue, where its own slot (408 ms) is certain"
    );
    for task in tasks {
        task.await.expect("waiter finished");
    }
    let state = host.state();
    assert_eq!((state.queued, state.queued_cost), (0, 0), "left the queue");
}

#[tokio::test(start_paused = true)]
async fn a_refusal_before_the_deadline_says_how_long_it_would_have_waited() {
    let t0 = Instant::now();
    let host = host(Limit::per_minute(1));
    pace(&host, &opts(1, None), 0).await.expect("first slot");
    let err = pace(&host, &opts(1, Some(t0 + 30 * 1000 * MS)), 0)
        .await
        .expect_err("the next slot is a minute away");
    match err {
        Error::DeadlineExceeded {
            would_wait: Some(wait),
            ..
        } => assert_eq!(wait, Limit::per_minute(1).interval()),
        other => panic!("got {other:?}"),
    }
    assert_eq!(Instant::now(), t0, "certain: refused at once");
}

#[tokio::test(start_paused = true)]
async fn in_flight_counts_sent_attempts_only_and_a_dropped_one_leaves() {
    let host = host(Limit::per_second(10));
    let mut sent = admit(&host, &Config::default(), &opts(1, None), 0)
        .await
        .expect("admitted");
    pace_attempt(&host, &opts(1, None), &mut sent, 0)
        .await
        .expect("first slot");
    let waiting = tokio::spawn({
        let host = Arc::clone(&host);
        async move { pace(&host, &opts(1, None), 0).await }
    });
    tokio::task::yield_now().await;
    let snapshot = host.snapshot(Instant::now());
    assert_eq!(
        (snapshot.in_flight, snapshot.queued),
        (1, 1),
        "{snapshot:?}"
    );
    drop(sent); // cancelled before its answer
    waiting.await.expect("joined").expect("its slot comes");
    // the waiter went, and its attempt was dropped unanswered too (by `pace_attempt`)
    assert_eq!(host.snapshot(Instant::now()).in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn cost_waits_for_all_its_slots() {
    let t0 = Instant::now();
    let host = host(Limit::per_second(10).burst(2));
    pace(&host, &opts(2, None), 0)
        .await
        .expect("the burst covers cost 2");
    assert_eq!(Instant::now(), t0);
    pace(&host, &opts(2, None), 0).await.expect("waits");
    // two units refill in two intervals of 113.33 ms; the timer wakes on the next ms tick
    assert_eq!(
        Instant::now() - t0,
        227 * MS,
        "two units refill in two intervals"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_held_behind_a_first_contact_probe_respects_its_deadline() {
    let t0 = Instant::now();
    let config = crate::host::HostConfig::test(None);
    let host = Arc::new(Host::new("http://new", &config, t0));
    let mut probe = admit(&host, &Config::default(), &opts(1, None), 0)
        .await
        .expect("breaker disabled");
    pace_attempt(&host, &opts(1, None), &mut probe, 0)
        .await
        .expect("the first request goes as the probe");
    assert!(
        probe.scout,
        "the first request to an unknown host reads its quota"
    );
    let err = pace(&host, &opts(1, Some(t0 + 200 * MS)), 0)
        .await
        .expect_err("no answer comes: the held request gives up at its deadline");
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "got {err:?}");
    assert_eq!(
        Instant::now() - t0,
        200 * MS,
        "held until the deadline, not past it"
    );
    drop(probe); // the probe is cancelled: the next request probes at once
    pace(&host, &opts(1, Some(t0 + 200 * MS)), 0)
        .await
        .expect("a cancelled probe frees the gate");
}
