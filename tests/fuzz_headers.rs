//! Fuzzing the pacing-header parsers: `ServerHint::read` and every parser behind it, over
//! generated header sets.
//!
//! The generator covers what a hostile or broken server sends: huge numbers (past `u64`, past
//! what a structured field allows), negatives, floats and exponents, HTTP-dates in all three
//! forms, past and future (and dates that do not exist), epoch timestamps, Go durations, IETF
//! structured fields with odd parameters, non-ASCII bytes, repeated headers, and whole sets
//! where `Retry-After`, `X-RateLimit-*` and `RateLimit` contradict each other.
//!
//! Each set must parse without a panic, the same way twice, and every wait it yields
//! (`retry_after`, `reset_in`, each parser's result) must stay within `MAX_HINT`.
//!
//! ```sh
//! cargo test --features bench --test fuzz_headers                  # 2 000 sets
//! POLITE_FUZZ_CASES=1000000 cargo test --release --features bench --test fuzz_headers -- --nocapture
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest_polite::bench_support::{
    MAX_HINT, ServerHint, parse_duration_str, parse_reset, parse_retry_after, server_hint_at,
};

/// Header sets per run: `POLITE_FUZZ_CASES`, or 2 000 so that the test suite stays fast.
fn cases() -> u32 {
    std::env::var("POLITE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(2_000)
}

/// Every name a parser reads, a near miss of each family, and names no parser reads.
const NAMES: &[&str] = &[
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-reset-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "X-RateLimit-Reset",
    "RateLimit",
    "ratelimit-",
    "x-ratelimit-resets",
    "x-ratelimit-bucket",
    "retry-after-ms",
    "content-type",
];

/// A wall-clock "now": mostly around today, sometimes at the edges of what a clock can say.
fn now() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        8 => (1_500_000_000u64..2_200_000_000, 0u32..1_000_000_000)
            .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n)),
        1 => (0u64..=253_402_300_799).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        1 => prop_oneof![
            Just(UNIX_EPOCH),
            Just(UNIX_EPOCH - Duration::from_secs(1_000_000_000)),
            Just(UNIX_EPOCH + Duration::from_secs(253_402_300_799)),
            Just(UNIX_EPOCH + Duration::from_secs(1 << 40)),
        ],
    ]
}

/// Characters drawn from `set`, `len` of them. (Cheaper to generate than a regex strategy.)
fn chars_of(set: &'static str, len: std::ops::Range<usize>) -> BoxedStrategy<String> {
    let chars: Vec<char> = set.chars().collect();
    proptest::collection::vec(proptest::sample::select(chars), len)
        .prop_map(|chars| chars.into_iter().collect())
        .boxed()
}

fn digits(len: std::ops::Range<usize>) -> BoxedStrategy<String> {
    chars_of("0123456789", len)
}

/// A number as a server might spell it, well or badly.
fn number() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (0u64..100_000).prop_map(|n| n.to_string()),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        2 => digits(16..41),
        1 => digits(300..401),
        2 => any::<f64>().prop_map(|f| f.to_string()),
        2 => (0u64..100_000, 0u64..1_000_000_000).prop_map(|(a, b)| format!("{a}.{b}")),
        1 => (digits(1..6), digits(19..61)).prop_map(|(a, b)| format!("{a}.{b}")),
        // epoch seconds around today, whole or with a fraction
        3 => (1_500_000_000u64..2_200_000_000).prop_map(|n| n.to_string()),
        1 => (1_500_000_000u64..2_200_000_000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b:03}")),
        2 => prop_oneof![
            Just("-0"), Just("+5"), Just("1e3"), Just("1E-3"), Just(" 7 "), Just("\t9"),
            Just("0x10"), Just(""), Just("."), Just("1."), Just(".5"), Just("NaN"), Just("inf"),
            Just("-inf"), Just("1_000"), Just("１２"), Just("0000000000000000000000000001"),
            Just("18446744073709551616"), Just("999999999999999"), Just("-999999999999999"),
            Just("9223372036854775808"), Just("1,5"), Just("5, 6"), Just("5;w=60"),
        ]
        .prop_map(str::to_owned),
    ]
    .boxed()
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// One instant written in the three HTTP-date forms (IMF-fixdate, RFC 850, asctime).
fn three_forms(at: SystemTime) -> [String; 3] {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let imf = httpdate::fmt_http_date(at);
    let day = DAYS.iter().position(|d| imf.starts_with(d)).unwrap_or(0);
    let (dd, mon, year, time) = (&imf[5..7], &imf[8..11], &imf[12..16], &imf[17..25]);
    let rfc850 = format!("{}, {dd}-{mon}-{} {time} GMT", LONG_DAYS[day], &year[2..]);
    let asctime = format!(
        "{} {mon} {:>2} {time} {year}",
        DAYS[day],
        dd.trim_start_matches('0')
    );
    [imf, rfc850, asctime]
}

/// HTTP-dates: real ones in any form, past or future, and ones that cannot be.
fn http_date() -> BoxedStrategy<String> {
    prop_oneof![
        // around today, so that they are sometimes a little ahead of `now`
        4 => (1_500_000_000u64..2_200_000_000, 0usize..3)
            .prop_map(|(s, form)| three_forms(UNIX_EPOCH + Duration::from_secs(s))[form].clone()),
        2 => (0u64..253_402_300_799, 0usize..3)
            .prop_map(|(s, form)| three_forms(UNIX_EPOCH + Duration::from_secs(s))[form].clone()),
        // fields out of range: day 0 or 31 Feb, hour 25, year 0 or 99999, a wrong weekday
        2 => (0usize..7, 0u32..40, 0usize..12, 0u32..100_000, 0u32..30, 0u32..70, 0u32..70, 0usize..3)
            .prop_map(|(wd, d, m, y, h, mi, s, form)| match form {
                0 => format!("{}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT", DAYS[wd], MONTHS[m]),
                1 => format!("{}, {d:02}-{}-{:02} {h:02}:{mi:02}:{s:02} GMT", LONG_DAYS[wd], MONTHS[m], y % 100),
                _ => format!("{} {} {d:>2} {h:02}:{mi:02}:{s:02} {y}", DAYS[wd], MONTHS[m]),
            }),
        1 => prop_oneof![
            Just("Sun, 06 Nov 1994 08:49:37 UTC"), Just("Sun, 06 Nov 1994 08:49:37"),
            Just("sun, 06 nov 1994 08:49:37 gmt"), Just("Sun, 6 Nov 1994 8:49:37 GMT"),
            Just("Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT"),
            Just("Fri, 31 Dec 9999 23:59:59 GMT"), Just("Sat, 01 Jan 10000 00:00:00 GMT"),
        ]
        .prop_map(str::to_owned),
    ]
    .boxed()
}

/// Go-style durations as OpenAI sends them, and broken ones.
fn go_duration() -> BoxedStrategy<String> {
    let unit = prop_oneof![
        Just("h"),
        Just("m"),
        Just("s"),
        Just("ms"),
        Just("us"),
        Just("µs"),
        Just("μs"),
        Just("ns"),
        Just("d"),
        Just(""),
    ];
    let part = (digits(0..26), proptest::option::of(digits(0..26)), unit).prop_map(
        |(whole, fraction, unit)| match fraction {
            Some(f) => format!("{whole}.{f}{unit}"),
            None => format!("{whole}{unit}"),
        },
    );
    (
        prop_oneof![Just(""), Just("-"), Just("+")],
        proptest::collection::vec(part, 1..5),
    )
        .prop_map(|(sign, parts)| format!("{sign}{}", parts.concat()))
        .boxed()
}

/// A structured-field parameter value: integers in and out of the 15-digit range, decimals,
/// strings, tokens, booleans.
fn sf_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => number(),
        1 => chars_of("abcdefxyz ", 0..9).prop_map(|s| format!("\"{s}\"")),
        1 => chars_of("abcxyz019*", 0..7).prop_map(|s| format!("t{s}")),
        1 => Just("?1".to_owned()),
        1 => Just(":cHJldGVuZA==:".to_owned()),
    ]
    .boxed()
}

fn policy_name() -> BoxedStrategy<String> {
    prop_oneof![
        Just("\"default\"".to_owned()),
        Just("\"day\"".to_owned()),
        chars_of("abcdefxyz", 1..7).prop_map(|s| format!("\"{s}\"")),
        chars_of("abcxyz019", 0..6).prop_map(|s| format!("p{s}")),
        digits(1..5),
    ]
    .boxed()
}

/// `RateLimit` in the draft -07+ List form, the -05/-06 Dictionary form, or near misses.
fn ietf_ratelimit() -> BoxedStrategy<String> {
    let item = (
        policy_name(),
        proptest::collection::vec(
            (
                prop_oneof![Just("r"), Just("t"), Just("q"), Just("w"), Just("x")],
                sf_value(),
            ),
            0..4,
        ),
    )
        .prop_map(|(name, params)| {
            let params: String = params.iter().map(|(k, v)| format!(";{k}={v}")).collect();
            format!("{name}{params}")
        });
    let member = (
        prop_oneof![
            Just("limit"),
            Just("remaining"),
            Just("reset"),
            Just("r"),
            Just("t")
        ],
        sf_value(),
    )
        .prop_map(|(k, v)| format!("{k}={v}"));
    prop_oneof![
        3 => proptest::collection::vec(item, 1..5).prop_map(|items| items.join(", ")),
        2 => proptest::collection::vec(member, 1..5).prop_map(|m| m.join(", ")),
        1 => chars_of("rtqwlimesa0123456789;=,\" -.", 0..41),
    ]
    .boxed()
}

/// `RateLimit-Policy`: named policies with `q` and `w`, or draft -05 bare quotas.
fn ietf_policy() -> BoxedStrategy<String> {
    let item = prop_oneof![
        (policy_name(), sf_value(), sf_value()).prop_map(|(n, q, w)| format!("{n};q={q};w={w}")),
        (number(), sf_value()).prop_map(|(q, w)| format!("{q};w={w}")),
    ];
    proptest::collection::vec(item, 1..4)
        .prop_map(|items| items.join(", "))
        .boxed()
}

/// Bytes a header value may hold that are not ASCII text: obs-text, UTF-8 in other scripts,
/// mixed with digits.
fn non_ascii() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(
            prop_oneof![0x80u8..=0xff, b'0'..=b'9', Just(b'.'), Just(b' ')],
            0..24
        ),
        (digits(0..5), chars_of("é日本µ٣०", 1..4), digits(0..5))
            .prop_map(|(a, b, c)| format!("{a}{b}{c}").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..48),
    ]
    .boxed()
}

/// A value for the header called `name`: mostly its own dialect, sometimes anything at all.
fn value_for(name: &str) -> BoxedStrategy<Vec<u8>> {
    let own: BoxedStrategy<String> = match name {
        "retry-after" | "retry-after-ms" => prop_oneof![number(), http_date()].boxed(),
        "ratelimit" | "RateLimit" | "ratelimit-" => ietf_ratelimit(),
        "ratelimit-policy" => ietf_policy(),
        "ratelimit-limit" => prop_oneof![
            number(),
            (number(), number()).prop_map(|(a, b)| format!("{a}, {a};window={b}"))
        ]
        .boxed(),
        "x-ratelimit-reset-requests" => prop_oneof![go_duration(), number()].boxed(),
        "x-ratelimit-reset" | "X-RateLimit-Reset" => prop_oneof![number(), go_duration()].boxed(),
        _ => number(),
    };
    prop_oneof![
        6 => own.prop_map(String::into_bytes),
        1 => prop_oneof![number(), http_date(), go_duration(), ietf_ratelimit()]
            .prop_map(String::into_bytes),
        1 => non_ascii(),
    ]
    .boxed()
}

/// Any of the names with a value made for it. (Built once: a strategy made inside
/// `prop_flat_map` would compile its regexes again for every header.)
fn header() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    proptest::strategy::Union::new(
        NAMES
            .iter()
            .map(|&name| (Just(name), value_for(name)).boxed()),
    )
}

/// Every dialect at once, each with its own idea of when the host reopens.
fn contradicting_set() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    (
        value_for("retry-after"),
        value_for("x-ratelimit-reset"),
        value_for("x-ratelimit-reset-after"),
        value_for("x-ratelimit-remaining"),
        value_for("ratelimit"),
        value_for("ratelimit-reset"),
        value_for("ratelimit-remaining"),
        value_for("x-ratelimit-reset-requests"),
    )
        .prop_map(|(ra, xr, xra, xrem, rl, rlr, rlrem, oai)| {
            vec![
                ("retry-after", ra),
                ("x-ratelimit-reset", xr),
                ("x-ratelimit-reset-after", xra),
                ("x-ratelimit-remaining", xrem),
                ("ratelimit", rl),
                ("ratelimit-reset", rlr),
                ("ratelimit-remaining", rlrem),
                ("x-ratelimit-reset-requests", oai),
            ]
        })
}

/// A response's headers: a few at random (repeats included), or every dialect contradicting
/// the others, or both.
fn header_set() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    prop_oneof![
        3 => proptest::collection::vec(header(), 0..12),
        1 => contradicting_set(),
        1 => (contradicting_set(), proptest::collection::vec(header(), 0..6))
            .prop_map(|(mut a, b)| {
                a.extend(b);
                a
            }),
    ]
}

/// The header map the client would see: values the `http` crate refuses never reach a parser.
fn header_map(fields: &[(&'static str, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, bytes) in fields {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(bytes),
        ) {
            map.append(name, value);
        }
    }
    map
}

fn check_wait(what: &str, wait: Option<Duration>) -> Result<(), TestCaseError> {
    if let Some(wait) = wait {
        prop_assert!(wait <= MAX_HINT, "{what}: {wait:?} exceeds MAX_HINT");
    }
    Ok(())
}

fn check_hint(what: &str, hint: &ServerHint) -> Result<(), TestCaseError> {
    check_wait(&format!("{what}.retry_after"), hint.retry_after)?;
    check_wait(&format!("{what}.reset_in"), hint.reset_in)
}

/// One header set: nothing panics, the reading is deterministic, every wait is capped, and
/// `Retry-After` is the first such header's value.
fn check(fields: &[(&'static str, Vec<u8>)], now: SystemTime) -> Result<(), TestCaseError> {
    let headers = header_map(fields);
    for value in headers.values() {
        check_wait("parse_retry_after", parse_retry_after(value, now))?;
        check_wait("parse_reset", parse_reset(value, now))?;
        if let Ok(text) = value.to_str() {
            check_wait("parse_duration_str", parse_duration_str(text))?;
            check_wait(
                "parse_duration_str(trimmed)",
                parse_duration_str(text.trim()),
            )?;
        }
    }
    let hint = server_hint_at(&headers, now);
    check_hint("from_headers", &hint)?;
    prop_assert_eq!(
        &hint,
        &server_hint_at(&headers, now),
        "the same headers must read the same"
    );
    prop_assert_eq!(
        hint.retry_after,
        headers
            .get("retry-after")
            .and_then(|v| parse_retry_after(v, now)),
        "Retry-After is the first such header's value"
    );
    check_hint("read", &ServerHint::read(&headers))?;
    Ok(())
}

#[test]
fn header_sets_never_panic_and_every_wait_stays_within_its_cap() {
    let cases = cases();
    let mut runner = TestRunner::new(Config {
        cases,
        // a failure is shrunk and printed; nothing is written into the source tree
        failure_persistence: None,
        // the generator forks its RNG for every lazy branch: ChaCha made that most of the time
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    });
    let ran = AtomicU64::new(0);
    let started = Instant::now();
    let result = runner.run(&(header_set(), now()), |(fields, now)| {
        ran.fetch_add(1, Ordering::Relaxed);
        check(&fields, now)
    });
    let elapsed = started.elapsed();
    eprintln!(
        "fuzz_headers: {} header sets checked ({cases} cases asked; shrinking adds to the count) in {:.1} s",
        ran.load(Ordering::Relaxed),
        elapsed.as_secs_f64()
    );
    if let Err(err) = result {
        panic!("{err}");
    }
}

/// The generator reaches the parsers: a fair share of its sets yield each field, so a pass
/// means the parsers ran on values that look like the real thing, not only on junk.
#[test]
fn the_generator_reaches_every_field() {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::XorShift),
    );
    let strategy = (header_set(), now());
    let (mut retry_after, mut remaining, mut limit, mut reset_in, mut capped) = (0, 0, 0, 0, 0);
    let sets = 2_000;
    for _ in 0..sets {
        let (fields, now) = strategy
            .new_tree(&mut runner)
            .expect("the generator makes values")
            .current();
        let hint = server_hint_at(&header_map(&fields), now);
        retry_after += u32::from(hint.retry_after.is_some());
        remaining += u32::from(hint.remaining.is_some());
        limit += u32::from(hint.limit.is_some());
        reset_in += u32::from(hint.reset_in.is_some());
        capped += u32::from(hint.retry_after == Some(MAX_HINT) || hint.reset_in == Some(MAX_HINT));
    }
    eprintln!(
        "coverage of {sets}: retry_after {retry_after}, remaining {remaining}, limit {limit}, reset_in {reset_in}, capped {capped}"
    );
    for (field, count) in [
        ("retry_after", retry_after),
        ("remaining", remaining),
        ("limit", limit),
        ("reset_in", reset_in),
        ("a wait at the cap", capped),
    ] {
        assert!(
            count * 20 >= sets,
            "only {count} of {sets} generated sets yield {field}"
        );
    }
}
