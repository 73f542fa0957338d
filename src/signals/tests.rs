use std::time::UNIX_EPOCH;

use super::*;

#[test]
fn a_scope_without_partitions_names_each_quota_once() {
    let pk = |n: u8| Some(Partition::of_server_key(&[n]));
    let scope = ServerScope {
        kind: ServerScopeKind::Policy,
        quotas: vec![
            QuotaName {
                name: "user".into(),
                partition: pk(1),
            },
            QuotaName {
                name: "daily".into(),
                partition: None,
            },
            QuotaName {
                name: "user".into(),
                partition: pk(2),
            },
        ],
    };
    let shared = scope.without_partitions();
    let names: Vec<_> = shared
        .quotas
        .iter()
        .map(|q| (q.name.as_str(), q.partition))
        .collect();
    assert_eq!(names, [("user", None), ("daily", None)]);
}
use proptest::prelude::*;

/// 1994-11-06T08:49:37Z, the date of RFC 9110's examples, in Unix seconds.
const RFC_DATE_SECS: u64 = 784_111_777;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("test header values are valid")
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, v) in pairs {
        map.append(*name, value(v));
    }
    map
}

#[test]
fn read_skips_answers_without_pacing_headers_and_parses_the_others() {
    let plain = headers(&[("content-type", "text/plain"), ("x-request-id", "abc")]);
    assert_eq!(ServerHint::read(&plain), ServerHint::default());
    let paced = headers(&[
        ("content-type", "text/plain"),
        ("x-ratelimit-remaining", "5"),
        ("x-ratelimit-reset-after", "2"),
        ("retry-after", "3"),
    ]);
    assert_eq!(
        ServerHint::read(&paced),
        ServerHint {
            retry_after: Some(Duration::from_secs(3)),
            remaining: Some(5),
            limit: None,
            reset_in: Some(Duration::from_secs(2)),
            reset_whole_seconds: true,
            ..ServerHint::default()
        },
        "delta values do not depend on the clock"
    );
}

fn retry_after(s: &str) -> Option<Duration> {
    parse_retry_after(&value(s), at(RFC_DATE_SECS))
}

#[test]
fn retry_after_delta_seconds() {
    for (input, want) in [
        ("120", Duration::from_secs(120)),
        ("0", Duration::ZERO),
        (" 5 ", Duration::from_secs(5)),
        ("007", Duration::from_secs(7)),
        ("1.5", Duration::from_millis(1_500)),
    ] {
        assert_eq!(retry_after(input), Some(want), "Retry-After {input:?}");
    }
}

#[test]
fn retry_after_http_date_in_all_three_forms() {
    let now = at(RFC_DATE_SECS - 120);
    for form in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        assert_eq!(
            parse_retry_after(&value(form), now),
            Some(Duration::from_secs(120)),
            "date form {form:?} should be 120 s after now"
        );
    }
}

#[test]
fn retry_after_date_in_the_past_is_zero() {
    let now = at(RFC_DATE_SECS + 3_600);
    assert_eq!(
        parse_retry_after(&value("Sun, 06 Nov 1994 08:49:37 GMT"), now),
        Some(Duration::ZERO),
        "a date an hour ago means retry now"
    );
}

#[test]
fn retry_after_garbage_is_none() {
    for input in [
        "",
        " ",
        "abc",
        "-5",
        "-0",
        "+5",
        "1e400",
        "NaN",
        "inf",
        "5 s",
        "1.",
        ".5",
        "0x10",
        "1,5",
        "Sun, 06 Nov 1994 08:49:37",
        "Mon, 32 Nov 1994 08:49:37 GMT",
    ] {
        assert_eq!(
            retry_after(input),
            None,
            "Retry-After {input:?} is not a delay"
        );
    }
    let non_ascii = HeaderValue::from_bytes(b"12\xb5").expect("obs-text is a valid header value");
    assert_eq!(
        parse_retry_after(&non_ascii, at(RFC_DATE_SECS)),
        None,
        "non-ASCII Retry-After must be ignored"
    );
}

#[test]
fn retry_after_huge_values_are_capped() {
    for input in ["1000000000000", "99999999999999999999999", "31536001"] {
        assert_eq!(
            retry_after(input),
            Some(MAX_HINT),
            "{input:?} should cap at MAX_HINT"
        );
    }
    let far_date = parse_retry_after(&value("Fri, 01 Jan 9999 00:00:00 GMT"), at(0));
    assert_eq!(
        far_date,
        Some(MAX_HINT),
        "a date centuries ahead caps at MAX_HINT"
    );
}

#[test]
fn reset_tells_epoch_from_delta() {
    // GitHub: X-RateLimit-Reset: 1372700873 is a Unix timestamp.
    let now = at(1_372_700_873 - 30);
    let reset = |s: &str| parse_reset(&value(s), now);
    assert_eq!(
        reset("1372700873"),
        Some(Duration::from_secs(30)),
        "epoch 30 s ahead"
    );
    assert_eq!(
        reset("1372700873.25"),
        Some(Duration::from_millis(30_250)),
        "fractional epoch"
    );
    assert_eq!(
        reset("1372700000"),
        Some(Duration::ZERO),
        "epoch in the past is zero"
    );
    assert_eq!(
        reset("1000000000"),
        Some(Duration::ZERO),
        "the threshold itself is an epoch"
    );
    assert_eq!(
        reset("60"),
        Some(Duration::from_secs(60)),
        "small values are delays"
    );
    assert_eq!(
        reset(" 1.5 "),
        Some(Duration::from_millis(1_500)),
        "fractional delay"
    );
    assert_eq!(
        reset("999999999"),
        Some(MAX_HINT),
        "just below threshold: a capped delay"
    );
    assert_eq!(
        reset("99999999999999999999999"),
        Some(MAX_HINT),
        "an epoch beyond u64 is far in the future"
    );
    for garbage in ["", "-1", "-0", "1e400", "NaN", "inf", "soon"] {
        assert_eq!(reset(garbage), None, "reset {garbage:?} is not a time");
    }
}

#[test]
fn reset_accepts_go_durations() {
    let now = at(RFC_DATE_SECS);
    for (input, want) in [
        ("6m0s", Duration::from_secs(360)),
        ("20ms", Duration::from_millis(20)),
        ("1h2m3.5s", Duration::from_millis(3_723_500)),
        ("0.5s", Duration::from_millis(500)),
        ("1s", Duration::from_secs(1)),
    ] {
        assert_eq!(
            parse_reset(&value(input), now),
            Some(want),
            "reset {input:?}"
        );
    }
}

#[test]
fn go_duration_strings() {
    for (input, want) in [
        ("0", Some(Duration::ZERO)),
        ("+1s", Some(Duration::from_secs(1))),
        ("1ns", Some(Duration::from_nanos(1))),
        ("1us", Some(Duration::from_micros(1))),
        ("1µs", Some(Duration::from_micros(1))),
        ("1μs", Some(Duration::from_micros(1))),
        ("1.5ms", Some(Duration::from_micros(1_500))),
        (".5s", Some(Duration::from_millis(500))),
        ("1.s", Some(Duration::from_secs(1))),
        ("1h1h", Some(Duration::from_secs(7_200))),
        ("0.1ns", Some(Duration::ZERO)),
        ("99999999999999999999999h", Some(MAX_HINT)),
        (
            "0.333333333333333333333333333333h",
            Some(Duration::from_millis(1_199_999) + Duration::from_nanos(999_999)),
        ),
        ("", None),
        ("5", None),
        ("s", None),
        (".s", None),
        ("-1s", None),
        ("1x", None),
        ("1s5", None),
        ("1 s", None),
        (" 1s", None),
        ("1d", None),
    ] {
        assert_eq!(parse_duration_str(input), want, "Go duration {input:?}");
    }
}

#[test]
fn ietf_list_form() {
    let hint = ServerHint::from_headers(
        &headers(&[
            ("ratelimit", r#""default";r=50;t=30"#),
            ("ratelimit-policy", r#""default";q=100;w=60"#),
        ]),
        at(RFC_DATE_SECS),
    );
    let want = ServerHint {
        retry_after: None,
        remaining: Some(50),
        limit: Some(100),
        reset_in: Some(Duration::from_secs(30)),
        reset_whole_seconds: true,
        ..ServerHint::default()
    };
    assert_eq!(hint, want, "draft -07+ RateLimit with String names");
    let tokens = ServerHint::from_headers(
        &headers(&[
            ("ratelimit", "default;r=50;t=30"),
            ("ratelimit-policy", "default;q=100;w=60"),
        ]),
        at(RFC_DATE_SECS),
    );
    assert_eq!(tokens, want, "draft -07 RateLimit with Token names");
}

#[test]
fn ietf_list_form_picks_most_restrictive_policy() {
    let now = at(RFC_DATE_SECS);
    let rate_limit = r#""burst";r=5;t=1, "daily";r=2;t=3600"#;
    let hint = ServerHint::from_headers(
        &headers(&[
            ("ratelimit", rate_limit),
            (
                "ratelimit-policy",
                r#""burst";q=100;w=60, "daily";q=1000;w=86400"#,
            ),
        ]),
        now,
    );
    assert_eq!(hint.remaining, Some(2), "smallest remaining wins");
    assert_eq!(
        hint.reset_in,
        Some(Duration::from_secs(3_600)),
        "reset of that policy"
    );
    assert_eq!(
        hint.limit,
        Some(1_000),
        "quota of the policy with the same name"
    );

    let unnamed = ServerHint::from_headers(
        &headers(&[
            ("ratelimit", rate_limit),
            (
                "ratelimit-policy",
                r#""hourly";q=500;w=3600, "minute";q=50;w=60"#,
            ),
        ]),
        now,
    );
    assert_eq!(
        unnamed.limit,
        Some(50),
        "no policy of that name: smallest quota"
    );

    let split = ServerHint::from_headers(
        &headers(&[
            ("ratelimit", r#""burst";r=5;t=1"#),
            ("ratelimit", r#""daily";r=2;t=3600"#),
        ]),
        now,
    );
    assert_eq!(
        split.remaining,
        Some(2),
        "RateLimit lines are combined into one List"
    );
}

#[test]
fn ietf_policies_are_each_their_own_quota() {
    let now = at(RFC_DATE_SECS);
    let hint = ServerHint::from_headers(
        &headers(&[
            ("ratelimit", r#""burst";r=50;t=30, "daily";r=999;t=3600"#),
            (
                "ratelimit-policy",
                r#""burst";q=100;w=60, "daily";q=1000;w=86400"#,
            ),
        ]),
        now,
    );
    let name = |name: &str| QuotaName {
        name: name.into(),
        partition: None,
    };
    assert_eq!(
        hint.policies,
        vec![
            PolicyQuota {
                id: name("burst"),
                remaining: 50,
                limit: Some(100),
                window: Some(Duration::from_secs(60)),
                reset_in: Some(Duration::from_secs(30)),
            },
            PolicyQuota {
                id: name("daily"),
                remaining: 999,
                limit: Some(1000),
                window: Some(Duration::from_secs(86_400)),
                reset_in: Some(Duration::from_secs(3_600)),
            },
        ],
        "each policy with its own count, quota and window"
    );
    assert_eq!(
        hint.server_scope,
        Some(ServerScope {
            kind: ServerScopeKind::Policy,
            quotas: vec![name("burst"), name("daily")],
        }),
        "both policies name the answer's quotas"
    );
    assert_eq!(
        (hint.remaining, hint.limit),
        (Some(50), Some(100)),
        "the most restrictive still reads as the answer's quota"
    );

    let single = ServerHint::from_headers(
        &headers(&[
            ("ratelimit", r#""default";r=5;t=1"#),
            ("ratelimit-policy", r#""default";q=10;w=1"#),
        ]),
        now,
    );
    assert!(
        single.policies.is_empty() && single.server_scope.is_none(),
        "a single policy stays the host's quota: {single:?}"
    );
    let github = ServerHint::from_headers(
        &headers(&[
            ("ratelimit", r#""a";r=5;t=1, "b";r=6;t=2"#),
            ("x-ratelimit-resource", "core"),
        ]),
        now,
    );
    assert_eq!(
        github.server_scope,
        Some(ServerScope::one(ServerScopeKind::Resource, "core")),
        "a resource the server names wins"
    );
    let many: Vec<String> = (0..40).map(|i| format!("p{i};r=1")).collect();
    let many = ServerHint::from_headers(&headers(&[("ratelimit", &many.join(", "))]), now);
    assert_eq!(many.policies.len(), MAX_POLICIES, "bounded");
}

#[test]
fn ietf_partition_keys_split_policies_and_are_never_kept() {
    let now = at(RFC_DATE_SECS);
    // `pk` is a Byte Sequence: base64 of "user-alice-secret" and "user-bob-secret"
    let alice = "dXNlci1hbGljZS1zZWNyZXQ=";
    let bob = "dXNlci1ib2Itc2VjcmV0";
    let hint = ServerHint::from_headers(
        &headers(&[
            (
                "ratelimit",
                &format!(r#""user";r=3;t=10;pk=:{alice}:, "user";r=7;t=10;pk=:{bob}:"#),
            ),
            (
                "ratelimit-policy",
                &format!(r#""user";q=5;w=10;pk=:{bob}:, "user";q=10;w=10;pk=:{alice}:"#),
            ),
        ]),
        now,
    );
    assert_eq!(hint.policies.len(), 2, "two partitions, two quotas");
    let (a, b) = (&hint.policies[0], &hint.policies[1]);
    assert_ne!(a.id.partition, None);
    assert_ne!(
        a.id.partition, b.id.partition,
        "distinct keys, distinct partitions"
    );
    assert_eq!(
        (a.limit, b.limit),
        (Some(10), Some(5)),
        "each quota is the member with the same partition key"
    );
    let again = ServerHint::from_headers(
        &headers(&[("ratelimit", &format!(r#""user";r=1;pk=:{alice}:"#))]),
        now,
    );
    assert_eq!(
        again.policies.len(),
        1,
        "one policy with a partition key is a quota of its own"
    );
    assert_eq!(again.policies[0].id, a.id, "stable within the process");
    let shown = format!("{hint:?} {again:?}");
    for secret in ["alice", "bob", alice, bob] {
        assert!(!shown.contains(secret), "a partition key leaked: {shown}");
    }
}

#[test]
fn ietf_dictionary_form() {
    let now = at(RFC_DATE_SECS);
    let hint = ServerHint::from_headers(
        &headers(&[("ratelimit", "limit=100, remaining=50, reset=5")]),
        now,
    );
    let want = ServerHint {
        retry_after: None,
        remaining: Some(50),
        limit: Some(100),
        reset_in: Some(Duration::from_secs(5)),
        reset_whole_seconds: true,
        ..ServerHint::default()
    };
    assert_eq!(hint, want, "draft -05/-06 RateLimit Dictionary");

    let with_policy = ServerHint::from_headers(
        &headers(&[
            ("ratelimit", "remaining=50, reset=5"),
            ("ratelimit-policy", "1000;w=3600, 100;w=60"),
        ]),
        now,
    );
    assert_eq!(
        with_policy, want,
        "limit from the smallest draft -05 policy"
    );
}

#[test]
fn ietf_separate_fields() {
    let hint = ServerHint::from_headers(
        &headers(&[
            ("ratelimit-limit", "10, 10;window=1, 50;window=60"),
            ("ratelimit-remaining", "3"),
            ("ratelimit-reset", "7"),
        ]),
        at(RFC_DATE_SECS),
    );
    let want = ServerHint {
        retry_after: None,
        remaining: Some(3),
        limit: Some(10),
        reset_in: Some(Duration::from_secs(7)),
        reset_whole_seconds: true,
        ..ServerHint::default()
    };
    assert_eq!(hint, want, "draft -00..-03 separate fields");
}

#[test]
fn named_quotas_dialects_and_other_units() {
    let now = at(1_700_000_000);
    let github = ServerHint::from_headers(
        &headers(&[
            ("x-ratelimit-resource", "search"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000030"),
        ]),
        now,
    );
    assert_eq!(
        github.server_scope,
        Some(ServerScope::one(ServerScopeKind::Resource, "search"))
    );
    assert_eq!(github.reset_in, Some(Duration::from_secs(30)));
    let discord = ServerHint::from_headers(
        &headers(&[
            ("x-ratelimit-bucket", "abcd1234"),
            ("x-ratelimit-reset-after", "1.250"),
            ("x-ratelimit-scope", "shared"),
        ]),
        now,
    );
    assert_eq!(
        discord.server_scope,
        Some(ServerScope::one(ServerScopeKind::Bucket, "abcd1234"))
    );
    assert_eq!(discord.reset_in, Some(Duration::from_millis(1250)));
    assert!(!discord.global);
    let global = headers(&[("x-ratelimit-global", "true")]);
    assert!(ServerHint::from_headers(&global, now).global);
    let global = headers(&[("x-ratelimit-scope", "global")]);
    assert!(ServerHint::from_headers(&global, now).global);
    let too_long = "x".repeat(65);
    let odd = headers(&[("x-ratelimit-resource", too_long.as_str())]);
    assert_eq!(ServerHint::from_headers(&odd, now).server_scope, None);

    let stripe = |v| ServerHint::from_headers(&headers(&[("stripe-should-retry", v)]), now);
    assert_eq!(stripe("true").should_retry, Some(true));
    assert_eq!(stripe("false").should_retry, Some(false));
    assert_eq!(stripe("maybe").should_retry, None);

    let shopify =
        ServerHint::from_headers(&headers(&[("x-shopify-shop-api-call-limit", "32/40")]), now);
    assert_eq!(
        (shopify.remaining, shopify.limit, shopify.reset_in),
        (Some(8), Some(40), Some(Duration::from_secs(16)))
    );
    let over = headers(&[("x-shopify-shop-api-call-limit", "50/40")]);
    assert_eq!(ServerHint::from_headers(&over, now).remaining, Some(0));

    let openai = ServerHint::from_headers(
        &headers(&[
            ("x-ratelimit-limit-tokens", "90000"),
            ("x-ratelimit-remaining-tokens", "1200"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]),
        now,
    );
    assert_eq!(
        openai.tokens,
        Some(UnitQuota {
            remaining: Some(1200),
            limit: Some(90000),
            reset_in: Some(Duration::from_secs(360))
        })
    );
    assert_eq!(openai.remaining, None, "tokens are not requests");
}

#[test]
fn github_and_discord_x_ratelimit() {
    let now = at(1_372_700_873 - 90);
    let github = ServerHint::from_headers(
        &headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", "1372700873"),
        ]),
        now,
    );
    let want = ServerHint {
        retry_after: None,
        remaining: Some(4_999),
        limit: Some(5_000),
        reset_in: Some(Duration::from_secs(90)),
        reset_whole_seconds: true,
        ..ServerHint::default()
    };
    assert_eq!(github, want, "GitHub sends the reset as a timestamp");

    let discord = ServerHint::from_headers(
        &headers(&[
            ("x-ratelimit-reset", "1372700873.5"),
            ("x-ratelimit-reset-after", "1.25"),
        ]),
        now,
    );
    assert_eq!(
        discord.reset_in,
        Some(Duration::from_millis(1_250)),
        "X-RateLimit-Reset-After wins over X-RateLimit-Reset"
    );
    assert!(
        !discord.reset_whole_seconds,
        "a reset with a fraction of a second is not read as whole seconds"
    );
}

#[test]
fn openai_request_quota() {
    let hint = ServerHint::from_headers(
        &headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]),
        at(RFC_DATE_SECS),
    );
    let want = ServerHint {
        retry_after: None,
        remaining: Some(59),
        limit: Some(60),
        reset_in: Some(Duration::from_secs(1)),
        ..ServerHint::default()
    };
    assert_eq!(
        hint, want,
        "OpenAI request quota; the token quota is not read"
    );
}

#[test]
fn precedence_is_per_field() {
    let now = at(RFC_DATE_SECS);
    let all = [
        ("ratelimit", r#""a";r=1;t=1"#),
        ("ratelimit-remaining", "2"),
        ("ratelimit-limit", "20"),
        ("ratelimit-reset", "2"),
        ("x-ratelimit-remaining", "3"),
        ("x-ratelimit-limit", "30"),
        ("x-ratelimit-reset", "3"),
        ("x-ratelimit-remaining-requests", "4"),
        ("x-ratelimit-limit-requests", "40"),
        ("x-ratelimit-reset-requests", "4s"),
        ("retry-after", "9"),
    ];
    let hint = ServerHint::from_headers(&headers(&all), now);
    let want = ServerHint {
        retry_after: Some(Duration::from_secs(9)),
        remaining: Some(1),
        limit: Some(20),
        reset_in: Some(Duration::from_secs(1)),
        reset_whole_seconds: true,
        ..ServerHint::default()
    };
    assert_eq!(
        hint, want,
        "IETF RateLimit first, then RateLimit-* for the missing limit"
    );

    let hint = ServerHint::from_headers(&headers(&all[4..]), now);
    let want = ServerHint {
        retry_after: Some(Duration::from_secs(9)),
        remaining: Some(3),
        limit: Some(30),
        reset_in: Some(Duration::from_secs(3)),
        reset_whole_seconds: true,
        ..ServerHint::default()
    };
    assert_eq!(hint, want, "X-RateLimit-* before OpenAI");

    let hint = ServerHint::from_headers(
        &headers(&[
            ("ratelimit-remaining", "-1"),
            ("x-ratelimit-remaining", "1.5"),
            ("x-ratelimit-remaining-requests", "4"),
        ]),
        now,
    );
    assert_eq!(
        hint.remaining,
        Some(4),
        "invalid values fall through to the next source"
    );
}

#[test]
fn malformed_fields_are_ignored() {
    let now = at(RFC_DATE_SECS);
    for bad in [
        "",
        " ",
        "-1",
        "-0",
        "1.5",
        "1e400",
        "NaN",
        "inf",
        "99999999999999999999999",
        "five",
    ] {
        let hint = ServerHint::from_headers(
            &headers(&[
                ("x-ratelimit-remaining", bad),
                ("x-ratelimit-limit", bad),
                ("ratelimit-remaining", bad),
                ("x-ratelimit-remaining-requests", bad),
            ]),
            now,
        );
        assert_eq!(hint.remaining, None, "remaining {bad:?} must be ignored");
        assert_eq!(hint.limit, None, "limit {bad:?} must be ignored");
    }
    let sfv_broken = ServerHint::from_headers(
        &headers(&[
            ("ratelimit", r#""a";r=-5;t=1, "b;r=3"#),
            ("ratelimit-policy", "q=?"),
            ("ratelimit-remaining", " 8 "),
        ]),
        now,
    );
    assert_eq!(
        sfv_broken,
        ServerHint {
            remaining: Some(8),
            ..ServerHint::default()
        },
        "an unparsable RateLimit falls back to RateLimit-Remaining"
    );
    let negative = ServerHint::from_headers(&headers(&[("ratelimit", r#""a";r=-5;t=-1"#)]), now);
    assert!(
        negative.is_empty(),
        "negative r and t are ignored: {negative:?}"
    );
    let non_ascii = HeaderValue::from_bytes(b"5\xff").expect("obs-text is a valid header value");
    let mut map = HeaderMap::new();
    map.insert("x-ratelimit-remaining", non_ascii);
    assert!(
        ServerHint::from_headers(&map, now).is_empty(),
        "non-ASCII remaining is ignored"
    );
}

#[test]
fn no_headers_is_empty() {
    let hint = ServerHint::from_headers(&HeaderMap::new(), at(RFC_DATE_SECS));
    assert!(hint.is_empty(), "no headers, no hint: {hint:?}");
    let hint = ServerHint {
        remaining: Some(0),
        ..ServerHint::default()
    };
    assert!(
        !hint.is_empty(),
        "remaining = 0 is a hint, not an empty one"
    );
}

const HEADER_NAMES: [&str; 14] = [
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
    "x-unrelated",
];

/// Arbitrary bytes, and strings made of the characters these headers use, to reach past the
/// first check of each parser.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        "[0-9a-z.;=,\"?*:+ -]{0,40}".prop_map(String::into_bytes),
    ]
}

fn any_now() -> impl Strategy<Value = SystemTime> {
    (0u64..=4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| UNIX_EPOCH + Duration::new(secs, nanos))
}

fn assert_within_cap(hint: &ServerHint) {
    for d in [hint.retry_after, hint.reset_in].into_iter().flatten() {
        assert!(d <= MAX_HINT, "{d:?} exceeds MAX_HINT in {hint:?}");
    }
}

/// Formats whole milliseconds as Go's `Duration.String` does, e.g. `1h2m3.5s` or `20ms`.
fn go_string(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000,
    );
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&s.to_string());
    if frac > 0 {
        out.push_str(format!(".{frac:03}").trim_end_matches('0'));
    }
    out.push('s');
    out
}

proptest! {
    #[test]
    fn parsers_never_panic(bytes in header_bytes(), now in any_now()) {
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            for d in [parse_retry_after(&v, now), parse_reset(&v, now)].into_iter().flatten() {
                prop_assert!(d <= MAX_HINT, "{d:?} from {v:?} exceeds MAX_HINT");
            }
        }
        if let Ok(s) = std::str::from_utf8(&bytes) {
            let parsed = parse_duration_str(s);
            prop_assert!(
                parsed.is_none_or(|d| d <= MAX_HINT),
                "{parsed:?} from {s:?} exceeds MAX_HINT"
            );
        }
    }

    #[test]
    fn from_headers_never_panics(
        fields in proptest::collection::vec((0..HEADER_NAMES.len(), header_bytes()), 0..6),
        now in any_now(),
    ) {
        let mut map = HeaderMap::new();
        for (name, bytes) in fields {
            if let (Some(name), Ok(v)) = (HEADER_NAMES.get(name), HeaderValue::from_bytes(&bytes)) {
                map.append(*name, v);
            }
        }
        assert_within_cap(&ServerHint::from_headers(&map, now));
    }

    #[test]
    fn delta_seconds_round_trip(secs in any::<u32>(), now in any_now()) {
        let want = Duration::from_secs(u64::from(secs)).min(MAX_HINT);
        let v = value(&secs.to_string());
        prop_assert_eq!(parse_retry_after(&v, now), Some(want), "Retry-After {}", secs);
        if u64::from(secs) < EPOCH_THRESHOLD_SECS {
            prop_assert_eq!(parse_reset(&v, now), Some(want), "reset delta {}", secs);
        }
    }

    #[test]
    fn http_date_round_trip(
        date_secs in 315_532_800u64..4_102_444_800,
        now in any_now(),
    ) {
        let date = at(date_secs);
        let want = date.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_HINT);
        let v = value(&httpdate::fmt_http_date(date));
        prop_assert_eq!(parse_retry_after(&v, now), Some(want), "Retry-After {:?}", v);
    }

    #[test]
    fn epoch_reset_round_trip(epoch in EPOCH_THRESHOLD_SECS..4_102_444_800, now in any_now()) {
        let want = at(epoch).duration_since(now).unwrap_or(Duration::ZERO).min(MAX_HINT);
        prop_assert_eq!(parse_reset(&value(&epoch.to_string()), now), Some(want), "epoch {}", epoch);
    }

    #[test]
    fn go_duration_round_trip(ms in 0..=MAX_HINT.as_secs() * 1_000) {
        let want = Duration::from_millis(ms);
        let go = go_string(ms);
        prop_assert_eq!(parse_duration_str(&go), Some(want), "Go form {}", go);
        let minutes = format!("{}m{}.{:03}s", ms / 60_000, ms / 1_000 % 60, ms % 1_000);
        prop_assert_eq!(parse_duration_str(&minutes), Some(want), "XmYs form {}", minutes);
        let millis = format!("{ms}ms");
        prop_assert_eq!(parse_duration_str(&millis), Some(want), "Zms form {}", millis);
    }
}
