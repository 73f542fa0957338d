//! A tour of reqwest-polite, act by act, against servers embedded on loopback (no internet).
//!
//! 1. A documented quota: 100 requests at once against a strict sliding window, next to bare
//!    reqwest on the same server.
//! 2. Nothing configured: the server's `X-RateLimit-*` and `Retry-After` headers teach the
//!    client its quota.
//! 3. An outage: the circuit breaker fails fast, then recovers, next to bare reqwest.
//! 4. What the middleware knows about each host: the snapshot, as a table.
//!
//! Every figure is measured in this run. Run: `cargo run --example tour` (about 12 s).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use reqwest_polite::{
    BreakerEvent, BreakerPhase, Limit, Observer, Polite, RefusalEvent, WaitEvent,
};

const QUOTA: u32 = 20;
const WINDOW: Duration = Duration::from_secs(1);
const REQUESTS: usize = 100;

#[tokio::main]
async fn main() {
    let tour = Instant::now();
    let quota_server = common::sliding_window_server(QUOTA as usize, WINDOW);
    let learning_server = fixed_window_server(10, WINDOW);
    let healed = Arc::new(AtomicBool::new(true));
    let (outage, bare_outage) = (outage_server(&healed), outage_server(&healed));

    // one middleware for every act: the documented quota for the first server only
    let journal = Journal::default();
    let polite = Polite::builder()
        .host_limit(quota_server.addr.to_string(), Limit::per(QUOTA, WINDOW))
        .breaker(
            reqwest_polite::Breaker::consecutive_failures(5).open_for(Duration::from_millis(400)),
        )
        .observer(journal.clone())
        .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(polite.clone())
        .build();
    let bare = reqwest::Client::new();

    act_1(&client, &bare, &quota_server).await;
    act_2(&client, &polite, &learning_server, &journal).await;
    act_3(&client, &bare, &outage, &bare_outage, &healed, &journal).await;
    act_4(&polite);
    println!(
        "\n(the whole tour took {:.1} s)",
        tour.elapsed().as_secs_f64()
    );
}

/// Act 1: the documented quota, configured, against a strict sliding window.
async fn act_1(
    client: &reqwest_middleware::ClientWithMiddleware,
    bare: &reqwest::Client,
    server: &common::TestServer,
) {
    println!(
        "\nAct 1. A documented quota: {QUOTA} requests in any {WINDOW:?}, enforced by a strict sliding window (429 beyond)"
    );
    println!(
        "       client: .host_limit(\"{}\", Limit::per({QUOTA}, {WINDOW:?})); {REQUESTS} requests issued at once",
        server.addr
    );
    let bar = act_bar(REQUESTS as u64, "1/4");
    let started = Instant::now();
    let calls = (0..REQUESTS).map(|_| {
        let (bar, stats) = (bar.clone(), Arc::clone(&server.stats));
        async move {
            let result = client.get(server.url("/")).send().await;
            bar.inc(1);
            bar.set_message(format!("refused {}", stats.refused()));
            result.map(|resp| resp.status().as_u16())
        }
    });
    let results = futures::future::join_all(calls).await;
    let elapsed = started.elapsed();
    bar.finish();
    let ok = results.iter().filter(|r| matches!(r, Ok(200))).count();
    let ours_refused = server.stats.refused();
    let arrivals = server.stats.arrivals();
    let busiest = server.stats.max_in_any_window(WINDOW);
    let rate = sustained_rate(&arrivals);
    println!(
        "       ours: {ok}/{REQUESTS} succeeded, {ours_refused} refused; {:.2} s; sustained {rate:.2} req/s = {:.1}% of the quota; busiest {WINDOW:?} as the server saw it: {busiest}",
        elapsed.as_secs_f64(),
        100.0 * rate * WINDOW.as_secs_f64() / f64::from(QUOTA),
    );

    // bare reqwest, same server, once the window has emptied
    tokio::time::sleep(WINDOW).await;
    let calls = (0..REQUESTS).map(|_| async { bare.get(server.url("/")).send().await });
    let results = futures::future::join_all(calls).await;
    let bare_ok = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|resp| resp.status() == 200))
        .count();
    let bare_refused = server.stats.refused() - ours_refused;
    println!(
        "       bare reqwest, same server, same {REQUESTS} at once: {bare_ok} succeeded, {bare_refused} refused with 429"
    );
}

/// Act 2: nothing configured; the server's headers teach the client its quota.
async fn act_2(
    client: &reqwest_middleware::ClientWithMiddleware,
    polite: &Polite,
    server: &common::TestServer,
    journal: &Journal,
) {
    const N: usize = 30;
    println!(
        "\nAct 2. Nothing configured for this host; it allows 10 requests per {WINDOW:?} window and says so in X-RateLimit-Limit/Remaining/Reset-After, with Retry-After on its 429s"
    );
    println!("       client: no limit for it; {N} requests issued at once");
    journal.clear();
    let bar = act_bar(N as u64, "2/4");
    let started = Instant::now();
    let key = format!("http://{}", server.addr);
    let learned = Arc::new(Mutex::new(None));
    let calls = (0..N).map(|_| {
        let (bar, stats, key, learned) = (
            bar.clone(),
            Arc::clone(&server.stats),
            key.clone(),
            Arc::clone(&learned),
        );
        async move {
            let result = client.get(server.url("/")).send().await;
            bar.inc(1);
            bar.set_message(format!("refused {}", stats.refused()));
            // what the client knows about the server's quota, as it goes
            let mut learned = learned.lock().expect("learned lock");
            if learned.is_none()
                && let Some(host) = polite.snapshot().into_iter().find(|h| h.key == key)
                && let Some(quota) = host.server_quota
            {
                *learned = Some((quota, started.elapsed()));
            }
            result.map(|resp| resp.status().as_u16())
        }
    });
    let results = futures::future::join_all(calls).await;
    let elapsed = started.elapsed();
    bar.finish();
    let ok = results.iter().filter(|r| matches!(r, Ok(200))).count();
    let arrivals = server.stats.arrivals();
    let rate = sustained_rate(&arrivals);
    println!(
        "       {ok}/{N} succeeded, {} refused by the server, {} sent in all; {:.2} s; sustained {rate:.2} req/s = {:.0}% of its quota",
        server.stats.refused(),
        server.stats.hits(),
        elapsed.as_secs_f64(),
        100.0 * rate * WINDOW.as_secs_f64() / 10.0,
    );
    let waits = journal.waits();
    let waits: Vec<String> = waits.iter().map(|(r, n)| format!("{n} {r}")).collect();
    println!(
        "       waits by reason (observer): {}; busiest {WINDOW:?} as the server saw it: {}",
        waits.join(", "),
        server.stats.max_in_any_window(WINDOW)
    );
    if let Some((quota, at)) = *learned.lock().expect("learned lock") {
        println!(
            "       its snapshot after the first answer ({} ms in) already holds the server's quota: {} left, resetting in {} ms",
            at.as_millis(),
            quota.remaining,
            quota.resets_in.as_millis(),
        );
    }
}

/// Act 3: the server goes down for 1.2 s; calls keep coming every 20 ms.
async fn act_3(
    client: &reqwest_middleware::ClientWithMiddleware,
    bare: &reqwest::Client,
    server: &common::TestServer,
    bare_server: &common::TestServer,
    healed: &Arc<AtomicBool>,
    journal: &Journal,
) {
    const TICK: Duration = Duration::from_millis(20);
    const CALLS: u64 = 120; // 2.4 s
    let (down_at, up_at) = (Duration::from_millis(300), Duration::from_millis(1500));
    println!(
        "\nAct 3. An outage: the server answers 503 from {:.1} s to {:.1} s; a call every {} ms for {:.1} s",
        down_at.as_secs_f64(),
        up_at.as_secs_f64(),
        TICK.as_millis(),
        (TICK * CALLS as u32).as_secs_f64()
    );
    println!(
        "       client: .breaker(Breaker::consecutive_failures(5).open_for(400 ms)), retries as by default; bare reqwest calls a twin server at the same ticks"
    );
    journal.clear();
    let bar = act_bar(CALLS, "3/4");
    let started = Instant::now();
    journal.start(started);
    let switch = {
        let healed = Arc::clone(healed);
        tokio::spawn(async move {
            tokio::time::sleep_until((started + down_at).into()).await;
            healed.store(false, Ordering::SeqCst);
            tokio::time::sleep_until((started + up_at).into()).await;
            healed.store(true, Ordering::SeqCst);
        })
    };
    let fast_failures = Arc::new(AtomicU64::new(0));
    let first_success_after_heal = Arc::new(Mutex::new(None::<Duration>));
    let mut tasks = Vec::new();
    let mut ticks = tokio::time::interval(TICK);
    for _ in 0..CALLS {
        ticks.tick().await;
        let (client, bar) = (client.clone(), bar.clone());
        let url = server.url("/");
        let (fast, first) = (
            Arc::clone(&fast_failures),
            Arc::clone(&first_success_after_heal),
        );
        tasks.push(tokio::spawn(async move {
            match client.get(&url).send().await {
                Err(err)
                    if matches!(
                        reqwest_polite::Error::of(&err),
                        Some(reqwest_polite::Error::CircuitOpen { .. })
                    ) =>
                {
                    fast.fetch_add(1, Ordering::SeqCst);
                }
                Ok(resp) if resp.status() == 200 && started.elapsed() > up_at => {
                    let at = started.elapsed() - up_at;
                    let mut first = first.lock().expect("first lock");
                    if first.is_none_or(|t| at < t) {
                        *first = Some(at);
                    }
                }
                _ => {}
            }
            bar.inc(1);
            bar.set_message(format!("failed fast {}", fast.load(Ordering::SeqCst)));
        }));
        let (bare, bare_url) = (bare.clone(), bare_server.url("/"));
        tasks.push(tokio::spawn(async move {
            let _ = bare.get(&bare_url).send().await;
        }));
    }
    futures::future::join_all(tasks).await;
    let _ = switch.await;
    bar.finish();
    let in_outage = |stats: &common::Stats| {
        let (from, to) = (started + down_at, started + up_at);
        stats
            .arrivals()
            .iter()
            .filter(|&&t| t >= from && t < to)
            .count()
    };
    let during = (up_at - down_at).as_secs_f64();
    println!(
        "       during the {during:.1} s outage the dead server got {} requests from ours (retries included), {} from bare reqwest",
        in_outage(&server.stats),
        in_outage(&bare_server.stats)
    );
    println!(
        "       ours failed {} calls fast (CircuitOpen: nothing sent); first success {} after the server healed",
        fast_failures.load(Ordering::SeqCst),
        first_success_after_heal
            .lock()
            .expect("first lock")
            .map_or("never".to_string(), |d| format!("{} ms", d.as_millis()))
    );
    println!("       breaker timeline (observer):");
    for line in journal.timeline() {
        println!("         {line}");
    }
}

/// Act 4: the per-host snapshot, as a table.
fn act_4(polite: &Polite) {
    println!("\nAct 4. What the middleware knows, per host (Polite::snapshot)\n");
    println!(
        "  {:<22} {:>10} {:>9} {:>8} {:>7} {:>7} {:>9} {:>6} {:>8} {:>9}",
        "host",
        "limit",
        "paced at",
        "requests",
        "waited",
        "retries",
        "throttled",
        "failed",
        "unsent",
        "breaker"
    );
    for host in polite.snapshot() {
        let limit = host.limit.map_or("-".to_string(), |l| {
            format!("{}/{}s", l.count(), l.window().as_secs_f64())
        });
        let paced = if host.interval.is_zero() {
            "-".to_string()
        } else {
            format!("{:.1}/s", 1.0 / host.interval.as_secs_f64())
        };
        let c = host.counters;
        println!(
            "  {:<22} {:>10} {:>9} {:>8} {:>7} {:>7} {:>9} {:>6} {:>8} {:>9}",
            host.key.trim_start_matches("http://"),
            limit,
            paced,
            c.requests,
            c.waited,
            c.retries,
            c.throttled,
            c.failures,
            c.rejected,
            host.breaker.phase.to_string()
        );
    }
    let scopes = polite.scope_snapshot();
    if scopes.is_empty() {
        println!(
            "\n  (no scopes beside the hosts: no host-wide, route, unit or server-named quotas in this tour)"
        );
    }
    for scope in scopes {
        println!("  {scope}");
    }
    println!("\n  the configured host as HostSnapshot's Display prints it:");
    if let Some(host) = polite.snapshot().iter().find(|h| h.limit.is_some()) {
        println!("  {host}");
    }
}

/// What the tour's observer noted: waits by reason, breaker transitions with their time.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<JournalInner>>);

#[derive(Default)]
struct JournalInner {
    waits: BTreeMap<String, u64>,
    refusals: u64,
    started: Option<Instant>,
    timeline: Vec<String>,
}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, JournalInner> {
        self.0.lock().expect("journal lock")
    }
    fn clear(&self) {
        *self.lock() = JournalInner::default();
    }
    fn start(&self, at: Instant) {
        self.lock().started = Some(at);
    }
    fn waits(&self) -> Vec<(String, u64)> {
        let inner = self.lock();
        let mut waits: Vec<_> = inner.waits.iter().map(|(r, n)| (r.clone(), *n)).collect();
        if inner.refusals > 0 {
            waits.push(("refusals heard".to_string(), inner.refusals));
        }
        waits
    }
    fn timeline(&self) -> Vec<String> {
        self.lock().timeline.clone()
    }
}

impl Observer for Journal {
    fn on_wait(&self, event: &WaitEvent<'_>) {
        *self
            .lock()
            .waits
            .entry(event.reason.to_string())
            .or_default() += 1;
    }
    fn on_refusal(&self, _: &RefusalEvent<'_>) {
        self.lock().refusals += 1;
    }
    fn on_breaker(&self, event: &BreakerEvent<'_>) {
        let mut inner = self.lock();
        let Some(started) = inner.started else {
            return;
        };
        let at = started.elapsed().as_secs_f64();
        let what = match (event.phase, event.failures, event.open_for) {
            (BreakerPhase::Open, Some(failures), Some(open_for)) => format!(
                "opened after {failures} failures, for {} ms",
                open_for.as_millis()
            ),
            (BreakerPhase::HalfOpen, ..) => "half-open: one probe goes through".to_string(),
            (BreakerPhase::Closed, ..) => "closed: the probe succeeded".to_string(),
            (phase, ..) => phase.to_string(),
        };
        inner.timeline.push(format!("{at:>5.2} s  {what}"));
    }
}

/// One progress bar per act.
fn act_bar(len: u64, act: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_prefix(format!("act {act}"));
    bar.set_style(
        ProgressStyle::with_template(
            "       {prefix} [{bar:40}] {pos:>3}/{len} {elapsed_precise} {msg}",
        )
        .expect("a valid template")
        .progress_chars("#>."),
    );
    bar
}

/// Requests per second between the first and the last arrival.
fn sustained_rate(arrivals: &[Instant]) -> f64 {
    let (Some(first), Some(last)) = (arrivals.iter().min(), arrivals.iter().max()) else {
        return 0.0;
    };
    let span = last.duration_since(*first).as_secs_f64();
    if span == 0.0 {
        return 0.0;
    }
    (arrivals.len() - 1) as f64 / span
}

/// A fixed-window quota of `limit` per `window` that says so in its headers (Discord style:
/// `X-RateLimit-Reset-After` in fractional seconds), with `Retry-After` on its 429s.
fn fixed_window_server(limit: u64, window: Duration) -> common::TestServer {
    let state = Mutex::new((Instant::now(), 0u64));
    common::serve(move |_, _| {
        let now = Instant::now();
        let mut state = state.lock().expect("window lock");
        if now >= state.0 + window {
            *state = (now, 0);
        }
        let reset_after = state.0 + window - now;
        let allowed = state.1 < limit;
        if allowed {
            state.1 += 1;
        }
        let reply = if allowed {
            common::Reply::ok()
        } else {
            common::Reply::status(429)
                .header("retry-after", reset_after.as_secs_f64().ceil() as u64)
        };
        reply
            .header("x-ratelimit-limit", limit)
            .header("x-ratelimit-remaining", limit - state.1)
            .header(
                "x-ratelimit-reset-after",
                format!("{:.3}", reset_after.as_secs_f64()),
            )
    })
}

/// A server that answers 200 while `healed`, 503 otherwise.
fn outage_server(healed: &Arc<AtomicBool>) -> common::TestServer {
    let healed = Arc::clone(healed);
    common::serve(move |_, _| {
        common::Reply::status(if healed.load(Ordering::SeqCst) {
            200
        } else {
            503
        })
    })
}
