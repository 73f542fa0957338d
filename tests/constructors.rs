//! Every public constructor that refuses a value by panicking points at the caller's line, not
//! at a line inside the crate (`#[track_caller]`), so the user sees which of their values is
//! wrong.
//!
//! One test in this binary: it installs a panic hook, which is process-wide.

use std::panic::{self, UnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest_polite::{Backoff, Breaker, Limit, Polite, RetryBudget};

type Seen = Arc<Mutex<Option<(String, String)>>>;

/// A call that must panic.
type Refused = Box<dyn FnOnce() + UnwindSafe>;

/// Makes a value and throws it away (`drop` of a `Copy` value draws a lint).
fn ignore<T>(_: T) {}

/// Runs `f`, which must panic; returns the file the panic was reported at, and its message.
fn panic_site(seen: &Seen, what: &str, f: impl FnOnce() + UnwindSafe) -> (String, String) {
    *seen.lock().expect("hook lock") = None;
    assert!(panic::catch_unwind(f).is_err(), "{what} must panic");
    seen.lock()
        .expect("hook lock")
        .take()
        .unwrap_or_else(|| panic!("{what}: the hook saw no panic"))
}

#[test]
fn panicking_constructors_report_the_callers_line() {
    let seen: Seen = Arc::default();
    let hook_seen = Arc::clone(&seen);
    panic::set_hook(Box::new(move |info| {
        let file = info
            .location()
            .map(|l| l.file().to_owned())
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        *hook_seen.lock().expect("hook lock") = Some((file, message));
    }));

    let zero = Duration::ZERO;
    let second = Duration::from_secs(1);
    let cases: Vec<(&str, Refused)> = vec![
        (
            "Limit::per",
            Box::new(move || ignore(Limit::per(0, second))),
        ),
        (
            "Limit::per_second",
            Box::new(|| ignore(Limit::per_second(0))),
        ),
        (
            "Limit::per_minute",
            Box::new(|| ignore(Limit::per_minute(0))),
        ),
        ("Limit::per_hour", Box::new(|| ignore(Limit::per_hour(0)))),
        (
            "Limit::burst",
            Box::new(|| ignore(Limit::per_second(5).burst(6))),
        ),
        (
            "Backoff::exponential",
            Box::new(move || ignore(Backoff::exponential(zero, second))),
        ),
        (
            "RetryBudget::new",
            Box::new(move || ignore(RetryBudget::new(zero, 1, 0.2))),
        ),
        (
            "Breaker::consecutive_failures",
            Box::new(|| ignore(Breaker::consecutive_failures(0))),
        ),
        (
            "Breaker::failure_rate",
            Box::new(move || ignore(Breaker::failure_rate(0.0, 1, second))),
        ),
        (
            "Breaker::or_consecutive_failures",
            Box::new(|| ignore(Breaker::disabled().or_consecutive_failures(0))),
        ),
        (
            "Breaker::or_failure_rate",
            Box::new(move || ignore(Breaker::disabled().or_failure_rate(2.0, 1, second))),
        ),
        (
            "Breaker::open_for",
            Box::new(move || ignore(Breaker::default().open_for(zero))),
        ),
        (
            "Breaker::open_growth",
            Box::new(move || ignore(Breaker::default().open_growth(0.5, second))),
        ),
        (
            "Breaker::half_open_probes",
            Box::new(|| ignore(Breaker::default().half_open_probes(0))),
        ),
        (
            "PoliteBuilder::max_in_flight",
            Box::new(|| ignore(Polite::builder().max_in_flight(0))),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, f) in cases {
        let (file, message) = panic_site(&seen, what, f);
        if !file.ends_with("constructors.rs") {
            wrong.push(format!("{what} panicked at {file} ({message:?})"));
        }
    }
    let _ = panic::take_hook();
    assert!(
        wrong.is_empty(),
        "these must report the caller's line (#[track_caller]):\n{}",
        wrong.join("\n")
    );
}
