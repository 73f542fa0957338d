//! Learning a quota with nothing configured, against loopback servers that count what reaches
//! them: where a fixed window starts is read from its first answer.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Reply, TestServer, burst, client, serve};
use reqwest_polite::Polite;

/// Fixed windows of `limit` per `window` that start at the first request after the previous
/// one ended (express-rate-limit, GitHub's primary limit), announced in legacy
/// `X-RateLimit-Limit/-Remaining/-Reset` with the reset in epoch seconds rounded up (or
/// down); 429 when over. Remembers when each window started.
struct FromFirstHit {
    limit: u64,
    window: Duration,
    rounds_down: bool,
    /// The quota is named (GitHub's `x-ratelimit-resource: core`).
    named: bool,
    /// The windows are aligned to the clock (each starts at a multiple of `window` since the
    /// epoch) and the reset is exact, not at the first request.
    aligned: bool,
    state: Mutex<Windows>,
}

/// The current window's start and count, and every window's start.
#[derive(Default)]
struct Windows {
    current: Option<(Instant, u64)>,
    starts: Vec<Instant>,
}

impl FromFirstHit {
    fn new(limit: u64, window: Duration) -> Self {
        FromFirstHit {
            limit,
            window,
            rounds_down: false,
            named: false,
            aligned: false,
            state: Mutex::new(Windows::default()),
        }
    }

    /// The reset rounded down: up to a second before the window ends.
    fn rounding_down(self) -> Self {
        FromFirstHit {
            rounds_down: true,
            ..self
        }
    }

    /// The quota named in every answer, as GitHub names its resources.
    fn named(self) -> Self {
        FromFirstHit {
            named: true,
            ..self
        }
    }

    /// Windows aligned to the clock.
    fn aligned(self) -> Self {
        FromFirstHit {
            aligned: true,
            ..self
        }
    }

    fn reply(&self) -> Reply {
        let now = Instant::now();
        let mut windows = self.state.lock().expect("window lock");
        let (start, used) = match windows.current {
            Some((start, used)) if now < start + self.window => (start, used),
            _ => {
                let start = if self.aligned {
                    let into = since_epoch().as_nanos() % self.window.as_nanos();
                    now - Duration::from_nanos(u64::try_from(into).expect("under a window"))
                } else {
                    now
                };
                windows.starts.push(start);
                (start, 0)
            }
        };
        let accepted = used < self.limit;
        let used = used + u64::from(accepted);
        windows.current = Some((start, used));
        let ends = SystemTime::now() + (start + self.window - now);
        let reset = ends.duration_since(UNIX_EPOCH).map_or(0, |d| {
            if self.aligned {
                // exact: a multiple of the window, read a few microseconds off
                (d + Duration::from_millis(1)).as_secs()
            } else {
                d.as_secs() + u64::from(d.subsec_nanos() > 0 && !self.rounds_down)
            }
        });
        let reply = if accepted {
            Reply::ok()
        } else {
            Reply::status(429)
        };
        let reply = if self.named {
            reply.header("x-ratelimit-resource", "core")
        } else {
            reply
        };
        reply
            .header("x-ratelimit-limit", self.limit)
            .header("x-ratelimit-remaining", self.limit - used)
            .header("x-ratelimit-reset", reset)
    }

    fn starts(&self) -> Vec<Instant> {
        self.state.lock().expect("window lock").starts.clone()
    }

    /// How long after the last window ended each window started.
    fn late_starts(&self) -> Vec<Duration> {
        self.starts()
            .windows(2)
            .map(|pair| pair[1] - (pair[0] + self.window))
            .collect()
    }
}

/// A loopback server answering as `limiter` does, and the limiter, to read its windows.
fn serve_windows(limiter: FromFirstHit) -> (Arc<FromFirstHit>, TestServer) {
    let limiter = Arc::new(limiter);
    let server = {
        let limiter = Arc::clone(&limiter);
        serve(move |_, _| limiter.reply())
    };
    (limiter, server)
}

fn assert_all_accepted(statuses: &[Result<u16, String>]) {
    assert!(
        statuses.iter().all(|s| *s == Ok(200)),
        "every request ends accepted: {statuses:?}"
    );
}

/// The time since the epoch, on the clock the servers' resets are read on.
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
}

/// Sleep until `at` into the next `period` on the epoch's clock.
async fn sleep_until_phase(period: Duration, at: Duration) {
    let into = since_epoch().as_nanos() % period.as_nanos();
    let wait = (period.as_nanos() + at.as_nanos() - into) % period.as_nanos();
    tokio::time::sleep(Duration::from_nanos(
        u64::try_from(wait).expect("under a period"),
    ))
    .await;
}

/// Each window of a server whose reset is announced in whole epoch seconds starts when the
/// last one ended, not at the whole second the server rounded its reset up to (up to a second
/// later: windows started 0.9–1.0 s late, every window after one that began just past a
/// whole second).
#[tokio::test]
async fn a_fixed_window_announced_in_whole_seconds_starts_when_the_last_one_ends() {
    let (limiter, server) = serve_windows(FromFirstHit::new(5, Duration::from_secs(1)));
    let polite = Polite::new();
    let statuses = burst(&client(&polite), &server.url("/"), 20).await;
    assert_all_accepted(&statuses);
    assert_eq!(server.stats.refused(), 0, "no refusal");
    let starts = limiter.starts();
    assert_eq!(starts.len(), 4, "20 requests in windows of 5: {starts:?}");
    let late = limiter.late_starts();
    assert!(
        late.iter().all(|late| *late < Duration::from_millis(300)),
        "windows started this long after the last one ended: {late:?}"
    );
}

/// A server that rounds its reset down: a refusal says nothing is left and the reset has
/// passed, while the window still has up to a second to run. The scope waits that second out
/// once, and ends later windows a second past the whole seconds to their reset (asking again
/// every 50 ms drew a refusal each until the window ended: about 10 per window here).
#[tokio::test]
async fn a_refusal_whose_whole_second_reset_has_passed_is_asked_again_once_per_scope() {
    let window = Duration::from_secs(1);
    let (limiter, server) = serve_windows(FromFirstHit::new(5, window).rounding_down());
    // start 0.6 s past a whole second: each window ends 0.6 s after its rounded-down reset
    sleep_until_phase(window, Duration::from_millis(600)).await;
    let polite = Polite::new();
    let statuses = burst(&client(&polite), &server.url("/"), 20).await;
    assert_all_accepted(&statuses);
    let refused = server.stats.refused();
    assert!(refused <= 2, "{refused} refusals");
    let starts = limiter.starts();
    assert_eq!(starts.len(), 4, "20 requests in windows of 5: {starts:?}");
    let late = limiter.late_starts();
    assert!(
        late[1..]
            .iter()
            .all(|late| *late < Duration::from_millis(300)),
        "windows after the first transition started this long after the last one ended: \
         {late:?}"
    );
}

/// A quota the server names (GitHub's resources) releases no more than its announced limit
/// when its window resets: the backlog waits for the new window's answers instead of going at
/// once (15 refusals of 20 requests in windows of 5 before).
#[tokio::test]
async fn a_named_quota_releases_its_limit_at_a_reset_not_the_backlog() {
    let (limiter, server) = serve_windows(FromFirstHit::new(5, Duration::from_secs(1)).named());
    let polite = Polite::new();
    let started = Instant::now();
    let statuses = burst(&client(&polite), &server.url("/"), 20).await;
    assert_all_accepted(&statuses);
    assert_eq!(server.stats.refused(), 0, "no refusal");
    assert_eq!(limiter.starts().len(), 4, "20 requests in windows of 5");
    // each window reopens at its announced reset, up to a second after it ended
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// A server whose windows are aligned to the clock, with an exact reset, looks like one whose
/// windows start at the first request (the first answer says remaining = limit - 1): the end
/// inferred from that answer comes before the real one. A window of 20 keeps its last unit for
/// the scout sent at the inferred end, so the scout is answered, not refused (1 refusal before),
/// and the scope then takes resets as announced.
#[tokio::test]
async fn windows_aligned_to_the_clock_are_checked_without_a_refusal() {
    let window = Duration::from_secs(2);
    let (limiter, server) = serve_windows(FromFirstHit::new(20, window).aligned());
    let polite = Polite::new();
    let client = client(&polite);
    // start 0.1 s into a window: its first answer infers an end a second after the send,
    // 0.9 s before the window ends (a first answer up to 0.9 s late still infers)
    sleep_until_phase(window, Duration::from_millis(100)).await;
    let statuses = burst(&client, &server.url("/"), 40).await;
    assert_all_accepted(&statuses);
    assert_eq!(server.stats.refused(), 0, "no refusal");
    assert_eq!(limiter.starts().len(), 2, "40 requests in windows of 20");
}

/// A server whose headers contradict its refusals: every answer announces 100 per 60 s (and
/// counts down from it), but more than 5 in any second are refused with a bare 429 carrying
/// the same headers. The first burst goes on the headers' word and meets the refusals; from
/// then on the scope paces by what the refusals taught, not by the count the headers give.
#[tokio::test]
async fn a_server_that_refuses_below_its_announced_quota_is_learned_from_its_refusals() {
    let limiter = common::SlidingWindow::new(5, Duration::from_secs(1));
    let used = std::sync::atomic::AtomicU64::new(0);
    let reset = since_epoch().as_secs() + 60;
    let server = serve(move |_, _| {
        let reply = limiter.reply();
        let used = used.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let reply = if reply.status == 429 {
            Reply::status(429)
        } else {
            Reply::ok()
        };
        reply
            .header("x-ratelimit-limit", 100)
            .header("x-ratelimit-remaining", 100u64.saturating_sub(used))
            .header("x-ratelimit-reset", reset)
    });
    let polite = Polite::new();
    let client = client(&polite);
    let url = server.url("/");
    let first = burst(&client, &url, 10).await;
    assert_all_accepted(&first);
    let learned_from = server.stats.refused();
    let started = Instant::now();
    let second = burst(&client, &url, 20).await;
    let took = started.elapsed();
    assert_all_accepted(&second);
    let refused = server.stats.refused() - learned_from;
    assert!(
        refused <= 2,
        "{refused} refusals after the {learned_from} it learned from"
    );
    assert!(
        took < Duration::from_secs(6),
        "20 requests at 5 per second took {took:?}"
    );
}
