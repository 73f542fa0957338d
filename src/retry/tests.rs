use tokio::time::Instant;

use super::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

const MS: Duration = Duration::from_millis(1);

fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// Reference ceiling, computed independently of `Backoff::ceiling`.
fn expected_ceiling(base: Duration, max: Duration, retry: u32) -> Duration {
    let mut c = base;
    for _ in 0..retry {
        c = c.saturating_mul(2);
        if c >= max {
            return max;
        }
    }
    c.min(max)
}

// --- Backoff -------------------------------------------------------------------------------

#[test]
fn no_jitter_doubles_from_base_and_caps_at_max() {
    let backoff = Backoff::exponential(100 * MS, 2_000 * MS).jitter(Jitter::None);
    let got: Vec<u64> = backoff
        .delays(rng(0))
        .take(8)
        .map(|d| d.as_millis() as u64)
        .collect();
    assert_eq!(
        got,
        [100, 200, 400, 800, 1600, 2000, 2000, 2000],
        "Jitter::None must yield base * 2^i capped at max"
    );
}

#[test]
fn full_jitter_stays_within_zero_and_ceiling() {
    let backoff = Backoff::exponential(100 * MS, 5_000 * MS).jitter(Jitter::Full);
    for (i, d) in backoff.delays(rng(1)).take(64).enumerate() {
        let ceiling = backoff.ceiling(i as u32);
        assert!(
            d <= ceiling,
            "Full: retry {i} waited {d:?} > ceiling {ceiling:?}"
        );
    }
}

#[test]
fn full_jitter_actually_varies() {
    let backoff = Backoff::exponential(100 * MS, 100 * MS).jitter(Jitter::Full);
    let delays: Vec<Duration> = backoff.delays(rng(2)).take(20).collect();
    assert!(
        delays.windows(2).any(|w| w[0] != w[1]),
        "Full jitter gave 20 identical delays: {delays:?}"
    );
}

#[test]
fn equal_jitter_stays_within_half_ceiling_and_ceiling() {
    let backoff = Backoff::exponential(100 * MS, 5_000 * MS).jitter(Jitter::Equal);
    for (i, d) in backoff.delays(rng(3)).take(64).enumerate() {
        let ceiling = backoff.ceiling(i as u32);
        assert!(
            ceiling / 2 <= d && d <= ceiling,
            "Equal: retry {i} waited {d:?}, outside [{:?}, {ceiling:?}]",
            ceiling / 2
        );
    }
}

#[test]
fn decorrelated_jitter_stays_within_base_and_max() {
    let (base, max) = (100 * MS, 5_000 * MS);
    let backoff = Backoff::exponential(base, max).jitter(Jitter::Decorrelated);
    for (i, d) in backoff.delays(rng(4)).take(64).enumerate() {
        assert!(
            base <= d && d <= max,
            "Decorrelated: retry {i} waited {d:?}, outside [{base:?}, {max:?}]"
        );
    }
}

#[test]
fn same_seed_gives_same_delays() {
    let backoff = Backoff::default();
    let a: Vec<Duration> = backoff.delays(rng(42)).take(10).collect();
    let b: Vec<Duration> = backoff.delays(rng(42)).take(10).collect();
    assert_eq!(a, b, "a seeded RNG must make delays reproducible");
}

#[test]
fn default_backoff_is_100ms_to_20s_full_jitter() {
    let backoff = Backoff::default();
    assert_eq!(backoff.base(), 100 * MS, "default base");
    assert_eq!(backoff.max(), Duration::from_secs(20), "default max");
    assert_eq!(backoff.jitter_kind(), Jitter::Full, "default jitter");
}

#[test]
fn ceiling_saturates_for_any_retry_index() {
    let backoff = Backoff::exponential(Duration::from_nanos(1), Duration::MAX);
    for retry in [63, 64, 93, 94, 95, 127, 128, 129, 1000, u32::MAX] {
        assert_eq!(
            backoff.ceiling(retry),
            expected_ceiling(Duration::from_nanos(1), Duration::MAX, retry.min(200)),
            "ceiling({retry}) for base 1 ns, max Duration::MAX"
        );
    }
    assert_eq!(
        backoff.ceiling(u32::MAX),
        Duration::MAX,
        "a huge retry index must saturate at max"
    );
}

/// Regression: `Backoff::exponential(x, Duration::MAX)` must not make anything panic here;
/// every delay stays within `[0, max]`, whatever the jitter, for any number of retries.
#[test]
fn backoff_up_to_duration_max_never_panics() {
    for base in [
        Duration::from_nanos(1),
        100 * MS,
        Duration::MAX / 2,
        Duration::MAX,
    ] {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let backoff = Backoff::exponential(base, Duration::MAX).jitter(jitter);
            for (i, d) in backoff.delays(rng(9)).take(300).enumerate() {
                let floor = match jitter {
                    Jitter::Decorrelated => base,
                    Jitter::None => backoff.ceiling(i as u32),
                    _ => Duration::ZERO,
                };
                assert!(
                    d >= floor,
                    "{jitter:?} from {base:?}: retry {i} waited {d:?} below {floor:?}"
                );
            }
            assert_eq!(backoff.ceiling(u32::MAX), Duration::MAX);
        }
    }
}

#[test]
fn invalid_backoff_is_refused() {
    assert_eq!(
        Backoff::try_exponential(Duration::ZERO, MS),
        Err(InvalidBackoff::ZeroBase),
        "zero base must be refused"
    );
    assert_eq!(
        Backoff::try_exponential(2 * MS, MS),
        Err(InvalidBackoff::MaxBelowBase {
            base: 2 * MS,
            max: MS
        }),
        "max below base must be refused"
    );
    assert!(
        Backoff::try_exponential(MS, MS).is_ok(),
        "max == base is a constant backoff and must be accepted"
    );
}

#[test]
#[should_panic(expected = "base delay must be greater than zero")]
fn exponential_panics_on_zero_base() {
    let _ = Backoff::exponential(Duration::ZERO, MS);
}

#[test]
#[should_panic(expected = "must be at least the base delay")]
fn exponential_panics_when_max_below_base() {
    let _ = Backoff::exponential(2 * MS, MS);
}

fn any_jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
    ]
}

/// Checks one delay against the bounds its jitter promises.
fn check_bounds(backoff: &Backoff, retry: u32, d: Duration) -> Result<(), TestCaseError> {
    let (base, max) = (backoff.base(), backoff.max());
    let ceiling = expected_ceiling(base, max, retry.min(200));
    prop_assert!(d <= max, "retry {retry}: {d:?} above max {max:?}");
    match backoff.jitter_kind() {
        Jitter::None => prop_assert_eq!(d, ceiling, "None: retry {} not the ceiling", retry),
        Jitter::Full => prop_assert!(d <= ceiling, "Full: retry {retry}: {d:?} > {ceiling:?}"),
        Jitter::Equal => prop_assert!(
            ceiling / 2 <= d && d <= ceiling,
            "Equal: retry {retry}: {d:?} outside [{:?}, {ceiling:?}]",
            ceiling / 2
        ),
        Jitter::Decorrelated => {
            prop_assert!(
                base <= d,
                "Decorrelated: retry {retry}: {d:?} < base {base:?}"
            )
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn every_delay_within_bounds(
        base_ms in 1u64..10_000,
        max_ms in 1u64..=3_600_000,
        jitter in any_jitter(),
        seed in any::<u64>(),
    ) {
        let base = Duration::from_millis(base_ms);
        let max = Duration::from_millis(max_ms.max(base_ms));
        let backoff = Backoff::exponential(base, max).jitter(jitter);
        for (i, d) in backoff.delays(rng(seed)).take(64).enumerate() {
            check_bounds(&backoff, i as u32, d)?;
        }
    }

    #[test]
    fn long_runs_saturate_without_panicking(
        base_ns in 1u64..1_000,
        max in prop_oneof![
            Just(Duration::MAX),
            Just(Duration::from_secs(u64::MAX / 2)),
            Just(Duration::new(u64::MAX, 0)),
            Just(Duration::from_secs(3_600)),
        ],
        jitter in any_jitter(),
        seed in any::<u64>(),
    ) {
        let backoff = Backoff::exponential(Duration::from_nanos(base_ns), max).jitter(jitter);
        for (i, d) in backoff.delays(rng(seed)).take(200).enumerate() {
            check_bounds(&backoff, i as u32, d)?;
        }
    }
}

// --- Classification ------------------------------------------------------------------------

fn status(code: u16) -> Outcome {
    Outcome::Status(StatusCode::from_u16(code).expect("valid test status code"))
}

#[test]
fn classify_table() {
    use Outcome::{Connect, Other, Timeout};
    use Retryable::{Always, Never, SafeOnly};
    use Verdict::{Retry, Return};
    let (get, post) = (Method::GET, Method::POST);
    #[rustfmt::skip]
    let table: &[(Retryable, &Method, bool, Outcome, Verdict)] = &[
        // Non-idempotent: only what the server cannot have acted on.
        (SafeOnly, &post, false, status(500), Return),
        (SafeOnly, &post, false, status(503), Return),
        (SafeOnly, &post, false, Timeout,     Return),
        (SafeOnly, &post, false, Other,       Return),
        (SafeOnly, &post, false, status(408), Return),
        (SafeOnly, &post, false, status(429), Retry),
        (SafeOnly, &post, false, Connect,     Retry),
        // Idempotent: transient server and transport failures too.
        (SafeOnly, &get, false, status(500), Retry),
        (SafeOnly, &get, false, status(502), Retry),
        (SafeOnly, &get, false, status(503), Retry),
        (SafeOnly, &get, false, status(504), Retry),
        (SafeOnly, &get, false, status(408), Retry),
        (SafeOnly, &get, false, Timeout,     Retry),
        (SafeOnly, &get, false, Other,       Retry),
        (SafeOnly, &get, false, status(429), Retry),
        (SafeOnly, &get, false, Connect,     Retry),
        // Permanent server conditions: never.
        (SafeOnly, &get,  false, status(501), Return),
        (SafeOnly, &get,  false, status(505), Return),
        (SafeOnly, &get,  false, status(511), Return),
        (SafeOnly, &post, true,  status(501), Return),
        (Always,   &post, false, status(501), Return),
        (Always,   &get,  false, status(501), Return),
        // An Idempotency-Key makes a POST safe to repeat.
        (SafeOnly, &post, true, status(503), Retry),
        (SafeOnly, &post, true, Timeout,     Retry),
        // Success, redirects and client errors go back to the caller.
        (SafeOnly, &get, false, status(200), Return),
        (SafeOnly, &get, false, status(304), Return),
        (SafeOnly, &get, false, status(400), Return),
        (SafeOnly, &get, false, status(401), Return),
        (SafeOnly, &get, false, status(404), Return),
        (Always,   &post, false, status(404), Return),
        // Never: nothing.
        (Never, &get,  false, status(429), Return),
        (Never, &get,  false, status(503), Return),
        (Never, &get,  true,  Connect,     Return),
        (Never, &post, true,  Timeout,     Return),
        // Always: the user vouches for non-idempotent requests.
        (Always, &post, false, status(503), Retry),
        (Always, &post, false, Timeout,     Retry),
        (Always, &post, false, status(429), Retry),
    ];
    for (policy, method, key, outcome, want) in table {
        assert_eq!(
            classify(*policy, method, *key, outcome),
            *want,
            "classify({policy:?}, {method}, idempotency_key={key}, {outcome:?})"
        );
    }
}

#[test]
fn stripe_should_retry_turns_only_answered_failures_into_retries() {
    use Outcome::{Connect, Timeout};
    use Retryable::{Always, Never, SafeOnly};
    use Verdict::{Retry, Return};
    #[rustfmt::skip]
    let table: &[(Retryable, Outcome, Option<bool>, Verdict, Verdict)] = &[
        // `true` on a failure the server answered: retried, even a POST's
        (SafeOnly, status(409), Some(true),  Return, Retry),
        (SafeOnly, status(500), Some(true),  Return, Retry),
        (Always,   status(400), Some(true),  Return, Retry),
        // never a success or a redirect: the request took effect
        (SafeOnly, status(200), Some(true),  Return, Return),
        (Always,   status(201), Some(true),  Return, Return),
        (SafeOnly, status(301), Some(true),  Return, Return),
        (SafeOnly, status(304), Some(true),  Return, Return),
        // never against the user's `Never`
        (Never,    status(503), Some(true),  Return, Return),
        (Never,    status(409), Some(true),  Return, Return),
        // `false` vetoes
        (SafeOnly, status(503), Some(false), Retry,  Return),
        (Always,   status(429), Some(false), Retry,  Return),
        // no word: the classification stands
        (SafeOnly, status(503), None,        Retry,  Retry),
        (SafeOnly, status(200), None,        Return, Return),
        (SafeOnly, Connect,     None,        Retry,  Retry),
        (SafeOnly, Timeout,     Some(true),  Return, Return),
    ];
    for (policy, outcome, word, classified, want) in table {
        assert_eq!(
            heed_server(*classified, *policy, outcome, *word),
            *want,
            "heed_server({classified:?}, {policy:?}, {outcome:?}, {word:?})"
        );
    }
}

#[test]
fn idempotent_methods_are_exactly_rfc_9110s() {
    for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
        let method = Method::from_bytes(m.as_bytes()).expect("valid method");
        assert!(is_idempotent(&method), "{m} is idempotent");
    }
    for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
        let method = Method::from_bytes(m.as_bytes()).expect("valid method");
        assert!(!is_idempotent(&method), "{m} is not idempotent");
    }
}

#[test]
fn every_4xx_except_408_and_429_is_returned_even_when_always() {
    for code in 400..500u16 {
        if code == 408 || code == 429 {
            continue;
        }
        assert_eq!(
            classify(Retryable::Always, &Method::GET, true, &status(code)),
            Verdict::Return,
            "status {code} must not be retried"
        );
    }
}

// --- Budget --------------------------------------------------------------------------------

const WINDOW: Duration = Duration::from_secs(10);

#[test]
fn ratio_allows_exactly_its_share_of_deposits() {
    let t0 = Instant::now();
    let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 0.2), t0);
    for _ in 0..100 {
        budget.deposit(t0);
    }
    for i in 0..20 {
        assert!(budget.withdraw(t0), "withdrawal {i} of 20 was denied");
    }
    assert!(
        !budget.withdraw(t0),
        "withdrawal 21 allowed after 100 requests at ratio 0.2"
    );
    assert_eq!(
        budget.snapshot(t0),
        (100, 20, 0),
        "a denied withdrawal must not be counted"
    );
}

#[test]
fn ratio_is_exact_in_decimal() {
    // 0.29 * 100 is 28.999999999999996 in f64; the budget must still allow 29.
    let t0 = Instant::now();
    let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 0.29), t0);
    for _ in 0..100 {
        budget.deposit(t0);
    }
    assert_eq!(budget.snapshot(t0).2, 29, "0.29 of 100 requests");
}

#[test]
fn entries_age_out_after_the_window() {
    let t0 = Instant::now();
    let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 0.5), t0);
    for _ in 0..10 {
        budget.deposit(t0);
    }
    for _ in 0..5 {
        assert!(budget.withdraw(t0), "5 retries allowed after 10 requests");
    }
    assert!(!budget.withdraw(t0), "budget spent");

    let almost = t0 + WINDOW * 9 / 10 - MS;
    assert_eq!(
        budget.snapshot(almost),
        (10, 5, 0),
        "entries must still count 0.9 windows later"
    );
    assert!(
        !budget.withdraw(almost),
        "budget still spent before the window passes"
    );

    let later = t0 + WINDOW;
    assert_eq!(
        budget.snapshot(later),
        (0, 0, 0),
        "entries must be gone one window later"
    );
    assert!(
        budget.is_idle(later),
        "no activity in the window means idle"
    );
    assert!(
        !budget.withdraw(later),
        "no requests and no floor: nothing to retry on"
    );
}

#[test]
fn window_slides_bucket_by_bucket() {
    let t0 = Instant::now();
    let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 1.0), t0);
    // One request per second for 15 s: at most the last 10 seconds' count.
    for s in 0..15u64 {
        budget.deposit(t0 + Duration::from_secs(s));
    }
    let (requests, _, _) = budget.snapshot(t0 + Duration::from_secs(14));
    assert_eq!(
        requests, 10,
        "the window holds the last 10 one-second buckets"
    );
}

#[tokio::test(start_paused = true)]
async fn entries_age_out_on_paused_time() {
    let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 0.2), Instant::now());
    for _ in 0..5 {
        budget.deposit(Instant::now());
    }
    assert!(budget.withdraw(Instant::now()), "0.2 * 5 allows one retry");
    assert!(
        !budget.is_idle(Instant::now()),
        "fresh activity is not idle"
    );
    tokio::time::advance(WINDOW).await;
    assert!(
        budget.is_idle(Instant::now()),
        "idle once the window has passed"
    );
}

/// Regression (eviction): what an outage leaves in the budget (requests, retries, a spent
/// budget) must go away without new traffic, so the host's record can be evicted.
#[tokio::test(start_paused = true)]
async fn a_budget_spent_by_an_outage_is_idle_one_window_later() {
    let mut budget = BudgetState::new(RetryBudget::default(), Instant::now());
    for _ in 0..50 {
        budget.deposit(Instant::now());
    }
    while budget.withdraw(Instant::now()) {}
    assert_eq!(budget.snapshot(Instant::now()).2, 0, "spent");
    tokio::time::advance(WINDOW * 9 / 10 - MS).await;
    assert!(!budget.is_idle(Instant::now()), "still within the window");
    tokio::time::advance(WINDOW / 10 + MS).await;
    assert!(
        budget.is_idle(Instant::now()),
        "one window after the last entry nothing is left"
    );
    assert_eq!(
        budget.snapshot(Instant::now()),
        (0, 0, 100),
        "and the floor is whole again"
    );
}

#[test]
fn floor_allows_retries_without_deposits() {
    let t0 = Instant::now();
    let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 2, 0.0), t0);
    assert_eq!(
        budget.snapshot(t0),
        (0, 0, 20),
        "2 per second over 10 s allows 20"
    );
    for i in 0..20 {
        assert!(budget.withdraw(t0), "floor withdrawal {i} of 20 was denied");
    }
    assert!(
        !budget.withdraw(t0),
        "withdrawal 21 beyond the floor of 20 allowed"
    );
    assert!(
        budget.withdraw(t0 + WINDOW),
        "the floor must be available again once the retries age out"
    );
}

#[test]
fn default_budget_is_10s_10_per_sec_20_percent() {
    assert_eq!(
        RetryBudget::default(),
        RetryBudget::new(WINDOW, 10, 0.2),
        "documented default"
    );
    let t0 = Instant::now();
    let mut budget = BudgetState::new(RetryBudget::default(), t0);
    for _ in 0..50 {
        budget.deposit(t0);
    }
    assert_eq!(budget.snapshot(t0).2, 110, "100 floor + 0.2 * 50");
}

#[test]
fn unlimited_never_denies() {
    let t0 = Instant::now();
    let mut budget = BudgetState::new(RetryBudget::unlimited(), t0);
    for i in 0..10_000 {
        assert!(budget.withdraw(t0), "unlimited budget denied retry {i}");
    }
    assert_eq!(budget.snapshot(t0).1, 10_000, "retries are still counted");
}

#[test]
fn time_going_backwards_does_not_rewind_the_window() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(5);
    let mut budget = BudgetState::new(RetryBudget::new(WINDOW, 0, 1.0), later);
    budget.deposit(later + Duration::from_secs(20));
    budget.deposit(t0);
    assert_eq!(
        budget.snapshot(later + Duration::from_secs(20)).0,
        2,
        "an earlier instant counts in the latest bucket"
    );
}

#[test]
fn try_new_returns_errors_instead_of_panicking() {
    assert_eq!(
        RetryBudget::try_new(Duration::ZERO, 1, 0.2),
        Err(InvalidRetryBudget::ZeroWindow)
    );
    assert_eq!(
        RetryBudget::try_new(WINDOW, 1, -0.1),
        Err(InvalidRetryBudget::Ratio(-0.1))
    );
    assert_eq!(
        RetryBudget::try_new(WINDOW, 1, 1000.5),
        Err(InvalidRetryBudget::Ratio(1000.5))
    );
    assert!(
        matches!(
            RetryBudget::try_new(WINDOW, 1, f64::NAN),
            Err(InvalidRetryBudget::Ratio(r)) if r.is_nan()
        ),
        "NaN must be refused"
    );
    assert_eq!(
        RetryBudget::try_new(WINDOW, 10, 0.2),
        Ok(RetryBudget::new(WINDOW, 10, 0.2))
    );
    assert_eq!(
        RetryBudget::try_new(Duration::MAX, u32::MAX, 1000.0),
        Ok(RetryBudget::new(Duration::MAX, u32::MAX, 1000.0)),
        "extremes saturate"
    );
}

#[test]
#[should_panic(expected = "window must be greater than zero")]
fn budget_panics_on_zero_window() {
    let _ = RetryBudget::new(Duration::ZERO, 1, 0.2);
}

#[test]
#[should_panic(expected = "ratio must be within [0, 1000]")]
fn budget_panics_on_nan_ratio() {
    let _ = RetryBudget::new(WINDOW, 1, f64::NAN);
}

#[test]
#[should_panic(expected = "ratio must be within [0, 1000]")]
fn budget_panics_on_negative_ratio() {
    let _ = RetryBudget::new(WINDOW, 1, -0.1);
}
