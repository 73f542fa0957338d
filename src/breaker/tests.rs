use tokio::time::Instant;

use super::*;
use crate::snapshot::{BreakerPhase, BreakerSnapshot};

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn is_probe(admission: Admission) -> bool {
    admission.is_probe()
}

/// Records `n` Allow-admitted outcomes at `now`, asserting none of them trips the breaker.
fn record_n(state: &mut BreakerState, now: Instant, n: u32, failure: bool) {
    for i in 0..n {
        let (admission, _) = state.admit(now);
        assert_eq!(admission, Admission::Allow, "call {i} should be allowed");
        let transition = state.record(now, &admission, failure);
        assert_eq!(
            transition, None,
            "call {i} (failure={failure}) tripped early"
        );
    }
}

/// Trips a closed breaker with one more failure, asserting that it opens.
fn trip(state: &mut BreakerState, now: Instant) -> Transition {
    let (admission, _) = state.admit(now);
    let transition = state.record(now, &admission, true);
    assert!(
        matches!(transition, Some(Transition::Opened { .. })),
        "expected the breaker to open, got {transition:?}"
    );
    transition.unwrap_or(Transition::Closed)
}

/// A state on `config` already opened by consecutive failures at `t0`.
fn opened(config: &Breaker, t0: Instant) -> BreakerState {
    let mut state = BreakerState::new(config.clone(), t0);
    let n = config.consecutive.unwrap_or(1);
    record_n(&mut state, t0, n - 1, true);
    trip(&mut state, t0);
    state
}

#[test]
fn consecutive_trigger_trips_at_exactly_n_and_a_success_resets_the_run() {
    let t0 = Instant::now();
    let mut state = BreakerState::new(Breaker::consecutive_failures(3), t0);
    record_n(&mut state, t0, 2, true);
    record_n(&mut state, t0, 1, false);
    record_n(&mut state, t0, 2, true);
    assert_eq!(
        state.phase(),
        BreakerPhase::Closed,
        "2 failures must not trip at n=3"
    );
    let (admission, _) = state.admit(t0);
    assert_eq!(
        state.record(t0, &admission, true),
        Some(Transition::Opened {
            failures: 3,
            open_for: secs(5)
        }),
        "the 3rd consecutive failure must open the breaker for the default 5 s"
    );
    assert_eq!(state.phase(), BreakerPhase::Open);
}

#[test]
fn open_breaker_rejects_with_the_time_left() {
    let t0 = Instant::now();
    let mut state = opened(&Breaker::consecutive_failures(1), t0);
    assert_eq!(
        state.admit(t0 + secs(2)),
        (Admission::Reject { retry_in: secs(3) }, None),
        "2 s into a 5 s open time a request must be rejected with 3 s left"
    );
    let almost = t0 + secs(5) - Duration::from_nanos(1);
    assert_eq!(
        state.admit(almost).0,
        Admission::Reject {
            retry_in: Duration::from_nanos(1)
        },
        "the breaker must not probe before the open time is over"
    );
}

#[test]
fn after_open_time_exactly_one_probe_goes_when_k_is_1() {
    let t0 = Instant::now();
    let mut state = opened(&Breaker::consecutive_failures(1), t0);
    let t1 = t0 + secs(5);
    assert_eq!(
        state.admit(t1),
        (Admission::Probe { period: 1 }, Some(Transition::HalfOpened)),
        "the first admit after the open time must go half-open and probe"
    );
    assert_eq!(state.phase(), BreakerPhase::HalfOpen);
    assert_eq!(
        state.admit(t1),
        (Admission::Reject { retry_in: secs(5) }, None),
        "a second concurrent admit must be rejected while the single probe is out"
    );
}

#[test]
fn half_open_lets_exactly_k_probes_through() {
    let t0 = Instant::now();
    let config = Breaker::consecutive_failures(1).half_open_probes(3);
    let mut state = opened(&config, t0);
    let t1 = t0 + secs(5);
    let admitted: Vec<Admission> = (0..4).map(|_| state.admit(t1).0).collect();
    assert_eq!(
        admitted,
        [
            Admission::Probe { period: 1 },
            Admission::Probe { period: 1 },
            Admission::Probe { period: 1 },
            Admission::Reject { retry_in: secs(5) }
        ],
        "k=3 must let exactly 3 concurrent probes through"
    );
}

#[test]
fn probe_success_closes_and_resets_counts() {
    let t0 = Instant::now();
    let mut state = opened(&Breaker::consecutive_failures(2), t0);
    let t1 = t0 + secs(5);
    let (probe, _) = state.admit(t1);
    assert_eq!(
        state.record(t1, &probe, false),
        Some(Transition::Closed),
        "a successful probe must close the breaker"
    );
    assert_eq!(state.phase(), BreakerPhase::Closed);
    assert_eq!(
        state.snapshot(t1).consecutive_failures,
        0,
        "closing must reset the consecutive count"
    );
    assert_eq!(state.admit(t1), (Admission::Allow, None));
    // A fresh run of n failures is needed to trip again, and it opens for the base time.
    record_n(&mut state, t1, 1, true);
    assert_eq!(
        trip(&mut state, t1),
        Transition::Opened {
            failures: 2,
            open_for: secs(5)
        }
    );
}

#[test]
fn probe_failure_reopens_with_growing_open_time_capped_at_max() {
    let t0 = Instant::now();
    let config = Breaker::consecutive_failures(1).open_growth(2.0, secs(30));
    let mut state = opened(&config, t0);
    let mut now = t0;
    let mut open_time = secs(5);
    for expected in [10, 20, 30, 30] {
        now += open_time;
        let (probe, _) = state.admit(now);
        assert!(is_probe(probe), "a probe is due after {open_time:?}");
        match state.record(now, &probe, true) {
            Some(Transition::Opened { open_for, .. }) => {
                assert_eq!(
                    open_for,
                    secs(expected),
                    "a failed probe after {open_time:?} open must reopen for {expected} s"
                );
                open_time = open_for;
            }
            other => panic!("a failed probe must reopen the breaker, got {other:?}"),
        }
        assert_eq!(
            state.admit(now + open_time - Duration::from_nanos(1)).0,
            Admission::Reject {
                retry_in: Duration::from_nanos(1)
            },
            "the grown open time must be enforced"
        );
    }
    // A success resets the open time to the base.
    now += open_time;
    let (probe, _) = state.admit(now);
    state.record(now, &probe, false);
    assert_eq!(
        trip(&mut state, now),
        Transition::Opened {
            failures: 1,
            open_for: secs(5)
        },
        "after closing, the next trip must open for the base time again"
    );
}

#[test]
fn open_growth_of_one_keeps_the_open_time() {
    let t0 = Instant::now();
    let config = Breaker::consecutive_failures(1).open_growth(1.0, secs(60));
    let mut state = opened(&config, t0);
    let t1 = t0 + secs(5);
    let (probe, _) = state.admit(t1);
    assert_eq!(
        state.record(t1, &probe, true),
        Some(Transition::Opened {
            failures: 2,
            open_for: secs(5)
        }),
        "open_growth(1.0, ..) must not grow the open time"
    );
}

#[test]
fn release_probe_frees_the_slot_without_a_transition() {
    let t0 = Instant::now();
    let mut state = opened(&Breaker::consecutive_failures(1), t0);
    let t1 = t0 + secs(5);
    let (probe, _) = state.admit(t1);
    assert!(is_probe(probe));
    assert!(
        matches!(state.admit(t1).0, Admission::Reject { .. }),
        "the only slot is taken"
    );
    state.release(&probe);
    assert_eq!(
        state.phase(),
        BreakerPhase::HalfOpen,
        "releasing must not change phase"
    );
    assert_eq!(
        state.admit(t1),
        (Admission::Probe { period: 1 }, None),
        "a released probe slot must be available again"
    );
}

#[test]
fn releasing_a_probe_of_an_ended_period_frees_no_current_slot() {
    let t0 = Instant::now();
    let config = Breaker::consecutive_failures(1).half_open_probes(2);
    let mut state = opened(&config, t0);
    let t1 = t0 + secs(5);
    let (a, _) = state.admit(t1);
    let (b, _) = state.admit(t1);
    state.record(t1, &a, true);
    let t2 = t1 + secs(10);
    let (c, _) = state.admit(t2);
    let (d, _) = state.admit(t2);
    assert!(is_probe(c) && is_probe(d), "two fresh slots");
    state.release(&b);
    assert!(
        matches!(state.admit(t2).0, Admission::Reject { .. }),
        "a probe from an ended period must not free a slot of this one"
    );
    state.release(&c);
    assert!(is_probe(state.admit(t2).0), "this period's own probe does");
}

#[test]
fn late_probe_outcome_after_reopen_is_ignored_but_frees_its_slot() {
    let t0 = Instant::now();
    let config = Breaker::consecutive_failures(1).half_open_probes(2);
    let mut state = opened(&config, t0);
    let t1 = t0 + secs(5);
    let (a, _) = state.admit(t1);
    let (b, _) = state.admit(t1);
    assert!(matches!(
        state.record(t1, &a, true),
        Some(Transition::Opened { .. })
    ));
    assert_eq!(
        state.record(t1, &b, false),
        None,
        "a probe finishing after another probe reopened the breaker must be ignored"
    );
    assert_eq!(state.phase(), BreakerPhase::Open);
    let t2 = t1 + secs(10);
    assert_eq!(state.admit(t2).0, Admission::Probe { period: 2 });
    assert_eq!(
        state.admit(t2).0,
        Admission::Probe { period: 2 },
        "both probe slots must be free in the next half-open period"
    );
}

#[test]
fn outcome_of_allowed_request_arriving_while_open_is_ignored() {
    let t0 = Instant::now();
    let mut state = BreakerState::new(Breaker::consecutive_failures(1), t0);
    let (first, _) = state.admit(t0);
    let (second, _) = state.admit(t0);
    let (third, _) = state.admit(t0);
    assert!(matches!(
        state.record(t0, &first, true),
        Some(Transition::Opened { .. })
    ));
    assert_eq!(
        state.record(t0, &second, false),
        None,
        "a late success must be ignored"
    );
    assert_eq!(
        state.record(t0, &third, true),
        None,
        "a late failure must be ignored"
    );
    let snapshot = state.snapshot(t0);
    assert_eq!(
        snapshot.phase,
        BreakerPhase::Open,
        "late outcomes must not close it"
    );
    assert_eq!(snapshot.times_opened, 1, "late failures must not reopen it");
    assert_eq!(
        snapshot.consecutive_failures, 1,
        "late outcomes must not count"
    );
}

#[test]
fn allowed_outcome_arriving_while_half_open_is_ignored() {
    let t0 = Instant::now();
    let mut state = BreakerState::new(Breaker::consecutive_failures(1), t0);
    let (first, _) = state.admit(t0);
    let (late, _) = state.admit(t0);
    state.record(t0, &first, true);
    let t1 = t0 + secs(5);
    assert!(is_probe(state.admit(t1).0));
    assert_eq!(
        state.record(t1, &late, false),
        None,
        "only a probe may close a half-open breaker"
    );
    assert_eq!(state.phase(), BreakerPhase::HalfOpen);
}

#[test]
fn rate_trigger_never_trips_below_min_calls() {
    let t0 = Instant::now();
    let mut state = BreakerState::new(Breaker::failure_rate(0.5, 10, secs(30)), t0);
    record_n(&mut state, t0, 9, true);
    assert_eq!(
        state.phase(),
        BreakerPhase::Closed,
        "9 failures out of 9 calls must not trip with min_calls=10"
    );
    assert_eq!(
        trip(&mut state, t0),
        Transition::Opened {
            failures: 10,
            open_for: secs(5)
        }
    );
}

#[test]
fn rate_trigger_trips_when_ratio_reached_at_min_calls() {
    let t0 = Instant::now();
    let mut state = BreakerState::new(Breaker::failure_rate(0.5, 4, secs(30)), t0);
    record_n(&mut state, t0, 1, true);
    record_n(&mut state, t0, 2, false);
    let snapshot = state.snapshot(t0);
    assert_eq!(
        (snapshot.window_calls, snapshot.window_failures),
        (3, 1),
        "the window must count every call and failure"
    );
    assert_eq!(
        trip(&mut state, t0),
        Transition::Opened {
            failures: 2,
            open_for: secs(5)
        },
        "2 failures in 4 calls must trip at ratio 0.5, min_calls 4"
    );
}

#[test]
fn rate_trigger_does_not_trip_below_ratio() {
    let t0 = Instant::now();
    let mut state = BreakerState::new(Breaker::failure_rate(0.5, 4, secs(30)), t0);
    record_n(&mut state, t0, 3, false);
    record_n(&mut state, t0, 2, true);
    assert_eq!(
        state.phase(),
        BreakerPhase::Closed,
        "2/5 failures is below 0.5"
    );
}

#[test]
fn failures_age_out_of_the_rate_window() {
    let t0 = Instant::now();
    let config = Breaker::failure_rate(0.5, 10, secs(30));

    // Within the window, old failures still count.
    let mut state = BreakerState::new(config.clone(), t0);
    record_n(&mut state, t0, 9, true);
    trip(&mut state, t0 + secs(20));

    // Past the window, they do not.
    let mut state = BreakerState::new(config.clone(), t0);
    record_n(&mut state, t0, 9, true);
    let later = t0 + secs(30);
    assert_eq!(
        state.snapshot(later).window_failures,
        0,
        "failures 30 s old must have left a 30 s window"
    );
    record_n(&mut state, later, 9, true);
    assert_eq!(
        state.phase(),
        BreakerPhase::Closed,
        "aged-out failures must not count towards min_calls"
    );
    trip(&mut state, later);
}

#[test]
fn combined_triggers_trip_on_whichever_fires_first() {
    let t0 = Instant::now();
    let config = Breaker::failure_rate(0.5, 100, secs(30)).or_consecutive_failures(3);
    let mut state = BreakerState::new(config.clone(), t0);
    record_n(&mut state, t0, 2, true);
    assert_eq!(
        trip(&mut state, t0),
        Transition::Opened {
            failures: 3,
            open_for: secs(5)
        },
        "the consecutive trigger must fire even though the rate trigger lacks calls"
    );
}

#[test]
fn disabled_breaker_never_trips() {
    let t0 = Instant::now();
    let mut state = BreakerState::new(Breaker::disabled(), t0);
    for i in 0..1000 {
        let now = t0 + Duration::from_millis(i);
        let (admission, transition) = state.admit(now);
        assert_eq!(
            (admission, transition),
            (Admission::Allow, None),
            "disabled must allow call {i}"
        );
        assert_eq!(
            state.record(now, &admission, true),
            None,
            "disabled must not trip"
        );
    }
    assert!(
        state.is_idle(t0),
        "a disabled breaker keeps nothing worth keeping"
    );
}

#[test]
fn default_config_values_are_as_documented() {
    let config = Breaker::default();
    assert_eq!(config, Breaker::new(), "Default must equal new()");
    assert_eq!(config.consecutive, Some(5), "default consecutive trigger");
    assert_eq!(
        config.rate,
        Some(RateTrigger {
            ratio: 0.5,
            min_calls: 10,
            window: secs(30)
        }),
        "default rate trigger"
    );
    assert_eq!(config.open_for, secs(5), "default open time");
    assert_eq!(
        (config.growth, config.max_open),
        (2.0, secs(60)),
        "default growth"
    );
    assert_eq!(config.probes, 1, "default probes");
    assert!(!config.is_disabled());
}

#[test]
fn default_config_behaves_as_documented() {
    let t0 = Instant::now();
    let mut state = BreakerState::new(Breaker::default(), t0);
    record_n(&mut state, t0, 4, true);
    assert_eq!(
        trip(&mut state, t0),
        Transition::Opened {
            failures: 5,
            open_for: secs(5)
        },
        "the default must trip on 5 consecutive failures and open for 5 s"
    );
    let mut now = t0;
    let mut reopened = Vec::new();
    let mut open_time = secs(5);
    for _ in 0..5 {
        now += open_time;
        let (probe, _) = state.admit(now);
        assert_eq!(
            state.admit(now).0,
            Admission::Reject {
                retry_in: open_time
            },
            "1 probe"
        );
        if let Some(Transition::Opened { open_for, .. }) = state.record(now, &probe, true) {
            open_time = open_for;
            reopened.push(open_for.as_secs());
        }
    }
    assert_eq!(
        reopened,
        [10, 20, 40, 60, 60],
        "default growth must double the open time up to 60 s"
    );
}

#[test]
fn snapshot_reports_phase_counts_and_time_left() {
    let t0 = Instant::now();
    let mut state = BreakerState::new(Breaker::default(), t0);
    record_n(&mut state, t0, 3, true);
    let snapshot = state.snapshot(t0 + secs(1));
    assert_eq!(
        snapshot,
        BreakerSnapshot {
            phase: BreakerPhase::Closed,
            since: secs(1),
            consecutive_failures: 3,
            window_failures: 3,
            window_calls: 3,
            retry_in: None,
            times_opened: 0,
        }
    );
    record_n(&mut state, t0, 1, true);
    trip(&mut state, t0 + secs(2));
    let snapshot = state.snapshot(t0 + secs(4));
    assert_eq!(snapshot.phase, BreakerPhase::Open);
    assert_eq!(snapshot.since, secs(2), "open for 2 s so far");
    assert_eq!(
        snapshot.retry_in,
        Some(secs(3)),
        "3 s of the 5 s open time left"
    );
    assert_eq!(snapshot.times_opened, 1);
    assert_eq!(BreakerPhase::HalfOpen.to_string(), "half-open");
}

#[test]
fn idle_only_when_nothing_worth_keeping() {
    let t0 = Instant::now();
    let mut state = BreakerState::new(Breaker::default(), t0);
    assert!(state.is_idle(t0), "a new breaker is idle");
    record_n(&mut state, t0, 1, true);
    assert!(!state.is_idle(t0), "a consecutive failure must be kept");
    record_n(&mut state, t0, 1, false);
    assert!(
        !state.is_idle(t0),
        "a failure still in the window must be kept"
    );
    assert!(
        state.is_idle(t0 + secs(30)),
        "once the failure has left the window the state is idle"
    );
    let opened = opened(&Breaker::consecutive_failures(1), t0);
    assert!(
        !opened.is_idle(t0 + secs(5)),
        "an open breaker is not idle while its open time and the quiet after it last"
    );
}

#[tokio::test(start_paused = true)]
async fn works_on_paused_tokio_time() {
    let mut state = opened(&Breaker::consecutive_failures(1), Instant::now());
    tokio::time::advance(secs(4)).await;
    assert_eq!(
        state.admit(Instant::now()).0,
        Admission::Reject { retry_in: secs(1) }
    );
    tokio::time::advance(secs(1)).await;
    assert_eq!(
        state.admit(Instant::now()),
        (Admission::Probe { period: 1 }, Some(Transition::HalfOpened))
    );
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Regression: a probe that never answers (reqwest has no default
/// timeout) must not hold its slot forever. Past the open time it counts as failed: the
/// breaker reopens for the grown open time, and then the next probe goes.
#[tokio::test(start_paused = true)]
async fn a_probe_that_never_answers_counts_as_failed_after_the_open_time() {
    let t0 = Instant::now();
    let config = Breaker::consecutive_failures(1).open_for(ms(300));
    let mut state = opened(&config, t0);
    tokio::time::advance(ms(300)).await;
    let (hung, _) = state.admit(Instant::now());
    assert!(is_probe(hung), "the first probe goes after the open time");
    tokio::time::advance(ms(299)).await;
    assert_eq!(
        state.admit(Instant::now()).0,
        Admission::Reject { retry_in: ms(1) },
        "within its hold the probe keeps its slot, and the rejection says when the hold ends"
    );
    tokio::time::advance(ms(1)).await;
    let (admission, transition) = state.admit(Instant::now());
    assert_eq!(
        (admission, transition),
        (
            Admission::Reject { retry_in: ms(600) },
            Some(Transition::Opened {
                failures: 2,
                open_for: ms(600)
            })
        ),
        "a probe silent for the open time counts as failed: reopen for the grown time"
    );
    assert_eq!(state.phase(), BreakerPhase::Open);
    tokio::time::advance(ms(600)).await;
    let (next, transition) = state.admit(Instant::now());
    assert!(
        is_probe(next),
        "after the grown open time the next probe must go, got {next:?}"
    );
    assert_eq!(transition, Some(Transition::HalfOpened));
    assert_eq!(
        state.record(Instant::now(), &hung, true),
        None,
        "the hung probe failing at last must be ignored: it was already counted"
    );
    assert!(
        matches!(state.admit(Instant::now()).0, Admission::Reject { .. }),
        "the late answer must not free the new probe's slot"
    );
    assert_eq!(
        state.record(Instant::now(), &next, false),
        Some(Transition::Closed),
        "the new probe decides"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_probe_that_succeeds_after_its_hold_still_closes() {
    let config = Breaker::consecutive_failures(1).open_for(ms(200));
    let mut state = opened(&config, Instant::now());
    tokio::time::advance(ms(200)).await;
    let (slow, _) = state.admit(Instant::now());
    tokio::time::advance(ms(250)).await;
    assert_eq!(
        state.record(Instant::now(), &slow, false),
        Some(Transition::Closed),
        "a host slower than the open time is up: its late success closes the breaker"
    );
    assert_eq!(state.admit(Instant::now()).0, Admission::Allow);
}

#[tokio::test(start_paused = true)]
async fn an_expired_probe_is_seen_by_snapshot_and_record_too() {
    let t0 = Instant::now();
    let mut state = opened(&Breaker::consecutive_failures(1).open_for(ms(300)), t0);
    tokio::time::advance(ms(300)).await;
    let (hung, _) = state.admit(Instant::now());
    tokio::time::advance(ms(300)).await;
    let snapshot = state.snapshot(Instant::now());
    assert_eq!(
        (snapshot.phase, snapshot.retry_in, snapshot.times_opened),
        (BreakerPhase::Open, Some(ms(600)), 2),
        "the snapshot must show the expired probe as a reopening"
    );
    assert!(
        matches!(
            state.record(Instant::now(), &hung, true),
            Some(Transition::Opened { .. })
        ),
        "the late failure itself reports the reopening it comes after"
    );
    assert_eq!(state.phase(), BreakerPhase::Open, "and counts no further");
    assert_eq!(state.snapshot(Instant::now()).consecutive_failures, 2);
}

#[test]
fn a_probe_hold_with_huge_open_time_never_overflows() {
    let t0 = Instant::now();
    let config = Breaker::consecutive_failures(1).open_for(Duration::MAX);
    let mut state = opened(&config, t0);
    assert!(matches!(
        state.admit(t0 + secs(1)).0,
        Admission::Reject { .. }
    ));
    assert!(!state.is_idle(t0 + secs(1)), "open for ever");
    let _ = state.snapshot(t0 + secs(1));
}

/// Regression: a host that failed and then went quiet must become idle
/// so its record can be evicted, whatever state its breaker was left in.
#[tokio::test(start_paused = true)]
async fn a_run_of_failures_is_forgotten_after_the_longest_open_time_of_quiet() {
    // open 5 s, growing up to 20 s: the breaker's memory is 20 s
    let config = Breaker::consecutive_failures(3)
        .open_for(secs(5))
        .open_growth(2.0, secs(20));
    let mut state = BreakerState::new(config.clone(), Instant::now());
    record_n(&mut state, Instant::now(), 1, true);
    tokio::time::advance(secs(15)).await;
    record_n(&mut state, Instant::now(), 1, true);
    tokio::time::advance(secs(20) - ms(1)).await;
    assert!(
        !state.is_idle(Instant::now()),
        "a run whose last failure is younger than the longest open time is kept"
    );
    assert_eq!(state.snapshot(Instant::now()).consecutive_failures, 2);
    tokio::time::advance(ms(1)).await;
    assert!(
        state.is_idle(Instant::now()),
        "a run followed by the longest open time of quiet is forgotten"
    );
    assert_eq!(state.snapshot(Instant::now()).consecutive_failures, 0);
    record_n(&mut state, Instant::now(), 2, true);
    assert_eq!(
        state.phase(),
        BreakerPhase::Closed,
        "a forgotten run must not count towards the next one"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_nobody_calls_is_forgotten() {
    let config = Breaker::consecutive_failures(1)
        .open_for(secs(5))
        .open_growth(2.0, secs(20));
    let mut state = opened(&config, Instant::now());
    tokio::time::advance(secs(25) - ms(1)).await;
    assert!(
        !state.is_idle(Instant::now()),
        "kept until its open time and the longest open time of quiet have passed"
    );
    tokio::time::advance(ms(1)).await;
    assert!(state.is_idle(Instant::now()), "then forgotten");
    assert_eq!(state.snapshot(Instant::now()).phase, BreakerPhase::Closed);
    assert_eq!(
        state.admit(Instant::now()),
        (Admission::Allow, Some(Transition::Closed)),
        "a forgotten breaker is a closed one, and says so once"
    );
    assert_eq!(
        state.snapshot(Instant::now()).times_opened,
        1,
        "history kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_then_quiet_is_forgotten() {
    let config = Breaker::consecutive_failures(1)
        .open_for(secs(5))
        .open_growth(2.0, secs(20));
    let mut state = opened(&config, Instant::now());
    tokio::time::advance(secs(5)).await;
    let (hung, _) = state.admit(Instant::now());
    assert!(is_probe(hung));
    // held 5 s, reopened for 10 s, then 20 s of quiet
    tokio::time::advance(secs(35) - ms(1)).await;
    assert!(!state.is_idle(Instant::now()), "not yet");
    tokio::time::advance(ms(1)).await;
    assert!(
        state.is_idle(Instant::now()),
        "a hung probe and then quiet must not pin the record for ever"
    );
}

#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_whose_probe_was_dropped_is_forgotten() {
    let config = Breaker::consecutive_failures(1)
        .open_for(secs(5))
        .open_growth(2.0, secs(20));
    let mut state = opened(&config, Instant::now());
    tokio::time::advance(secs(5)).await;
    let (dropped, _) = state.admit(Instant::now());
    state.release(&dropped);
    tokio::time::advance(secs(20) - ms(1)).await;
    assert!(!state.is_idle(Instant::now()), "half-open is kept a while");
    tokio::time::advance(ms(1)).await;
    assert!(state.is_idle(Instant::now()), "then forgotten");
}

#[tokio::test(start_paused = true)]
async fn a_failure_rate_window_empties_without_traffic() {
    let mut state = BreakerState::new(Breaker::default(), Instant::now());
    record_n(&mut state, Instant::now(), 4, true);
    record_n(&mut state, Instant::now(), 1, false);
    tokio::time::advance(secs(30) - ms(1)).await;
    assert!(!state.is_idle(Instant::now()), "failures in the window");
    tokio::time::advance(ms(1)).await;
    assert!(
        state.is_idle(Instant::now()),
        "default breaker: idle once the failures left the 30 s window"
    );

    let mut state = BreakerState::new(Breaker::default(), Instant::now());
    record_n(&mut state, Instant::now(), 4, true);
    tokio::time::advance(secs(60) - ms(1)).await;
    assert!(!state.is_idle(Instant::now()), "a run of 4 is kept 60 s");
    tokio::time::advance(ms(1)).await;
    assert!(
        state.is_idle(Instant::now()),
        "default breaker: idle 60 s after the last failure of a run"
    );
}

#[test]
#[should_panic(expected = "consecutive failures must be at least 1")]
fn consecutive_failures_zero_panics() {
    let _ = Breaker::consecutive_failures(0);
}

#[test]
#[should_panic(expected = "consecutive failures must be at least 1")]
fn or_consecutive_failures_zero_panics() {
    let _ = Breaker::disabled().or_consecutive_failures(0);
}

#[test]
#[should_panic(expected = "failure ratio must be greater than 0 and at most 1, got 0")]
fn failure_rate_zero_ratio_panics() {
    let _ = Breaker::failure_rate(0.0, 10, secs(30));
}

#[test]
#[should_panic(expected = "failure ratio must be greater than 0 and at most 1, got 1.5")]
fn failure_rate_ratio_above_one_panics() {
    let _ = Breaker::failure_rate(1.5, 10, secs(30));
}

#[test]
#[should_panic(expected = "failure ratio must be greater than 0 and at most 1, got NaN")]
fn failure_rate_nan_ratio_panics() {
    let _ = Breaker::disabled().or_failure_rate(f64::NAN, 10, secs(30));
}

#[test]
#[should_panic(expected = "min_calls must be at least 1")]
fn failure_rate_zero_min_calls_panics() {
    let _ = Breaker::failure_rate(0.5, 0, secs(30));
}

#[test]
#[should_panic(expected = "failure-rate window must be greater than zero")]
fn failure_rate_zero_window_panics() {
    let _ = Breaker::failure_rate(0.5, 10, Duration::ZERO);
}

#[test]
#[should_panic(expected = "the open time must be greater than zero")]
fn open_for_zero_panics() {
    let _ = Breaker::default().open_for(Duration::ZERO);
}

#[test]
#[should_panic(expected = "the factor must be a finite number >= 1.0, got 0.5")]
fn open_growth_below_one_panics() {
    let _ = Breaker::default().open_growth(0.5, secs(60));
}

#[test]
#[should_panic(expected = "at least one probe is needed")]
fn half_open_probes_zero_panics() {
    let _ = Breaker::default().half_open_probes(0);
}

#[test]
fn try_constructors_return_errors_instead_of_panicking() {
    assert_eq!(
        Breaker::try_consecutive_failures(0),
        Err(BreakerConfigError::ZeroConsecutiveFailures)
    );
    assert_eq!(
        Breaker::try_failure_rate(-0.1, 10, secs(30)),
        Err(BreakerConfigError::InvalidRatio(-0.1))
    );
    assert_eq!(
        Breaker::try_failure_rate(0.5, 0, secs(30)),
        Err(BreakerConfigError::ZeroMinCalls)
    );
    assert_eq!(
        Breaker::try_failure_rate(0.5, 10, Duration::ZERO),
        Err(BreakerConfigError::ZeroWindow)
    );
    assert!(
        matches!(
            Breaker::try_failure_rate(f64::NAN, 10, secs(30)),
            Err(BreakerConfigError::InvalidRatio(r)) if r.is_nan()
        ),
        "NaN must be refused"
    );
    assert_eq!(
        Breaker::try_consecutive_failures(3),
        Ok(Breaker::consecutive_failures(3))
    );
    assert_eq!(
        Breaker::try_failure_rate(1.0, 1, Duration::from_nanos(1)),
        Ok(Breaker::failure_rate(1.0, 1, Duration::from_nanos(1)))
    );
}
