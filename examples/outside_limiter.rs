//! A measuring harness: drive reqwest-polite against an outside server-side limiter running on
//! loopback, one we do not ship: `scripts/outside-limiter/run.sh` starts Flask-Limiter and runs this.
//!
//! ```text
//! cargo run --release --example outside_limiter -- http://127.0.0.1:18080 60 quota 10
//! cargo run --release --example outside_limiter -- http://127.0.0.1:18080 60 host-quota 10
//! cargo run --release --example outside_limiter -- http://127.0.0.1:18080 60 defaults
//! cargo run --release --example outside_limiter -- http://127.0.0.1:18080 60 reqwest-retry
//! cargo run --release --example outside_limiter -- http://127.0.0.1:18080 0 outage
//! ```
//!
//! The server must expose `/` (rate limited), `/outage` (503 until healed, not rate limited),
//! `/stats` (what reached it, as JSON) and `/reset/<seconds down>`, as `app.py` does. Only
//! loopback addresses are accepted. `quota` configures the limit for every host (`limit`),
//! `host-quota` for the server's host name, every port (`host_limit("127.0.0.1", ...)`).

use std::time::{Duration, Instant};

use reqwest_polite::{Breaker, Limit, Polite};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: outside_limiter <http://127.0.0.1:PORT> <requests> <quota|host-quota|defaults|reqwest-retry|outage> [quota per second]";
    let (Some(base), Some(n), Some(mode)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let loopback = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"];
    if !loopback.iter().any(|prefix| base.starts_with(prefix)) {
        eprintln!("only loopback servers: {usage}");
        std::process::exit(2);
    }
    let n: usize = n.parse().unwrap_or_else(|_| {
        eprintln!("{usage}");
        std::process::exit(2)
    });
    let quota: u32 = args.get(4).and_then(|q| q.parse().ok()).unwrap_or(10);
    let plain = reqwest::Client::new();
    let result = match mode.as_str() {
        "outage" => outage(&plain, base).await,
        "quota" => burst(&plain, base, n, Some(Configured::Limit), quota).await,
        "host-quota" => burst(&plain, base, n, Some(Configured::HostLimit), quota).await,
        "defaults" => burst(&plain, base, n, None, quota).await,
        "reqwest-retry" => reqwest_retry_burst(&plain, base, n).await,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    if let Err(err) = result {
        eprintln!("the outside server did not answer: {err}");
        std::process::exit(1);
    }
}

async fn stats(plain: &reqwest::Client, base: &str) -> reqwest::Result<String> {
    plain
        .get(format!("{base}/stats"))
        .send()
        .await?
        .text()
        .await
}

/// How the quota is configured.
#[derive(Clone, Copy, PartialEq)]
enum Configured {
    /// `limit`: every host record.
    Limit,
    /// `host_limit` of the host's name without a port: a scope over every port of the host.
    HostLimit,
}

/// `n` requests at once, with the quota (`per_second`) configured or with defaults.
async fn burst(
    plain: &reqwest::Client,
    base: &str,
    n: usize,
    configured: Option<Configured>,
    per_second: u32,
) -> reqwest::Result<()> {
    plain.get(format!("{base}/reset/0.0")).send().await?;
    tokio::time::sleep(Duration::from_millis(1_100)).await; // let the server's window empty
    let builder = Polite::builder();
    let url = format!("{base}/");
    let host = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let polite = match configured {
        Some(Configured::Limit) => builder.limit(Limit::per_second(per_second)),
        Some(Configured::HostLimit) => builder.host_limit(host, Limit::per_second(per_second)),
        None => builder,
    }
    .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(polite.clone())
        .build();
    let started = Instant::now();
    let calls = (0..n).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    let calls = futures::future::join_all(calls);
    let results = if std::env::var_os("POLITE_WATCH").is_some() {
        // print the host's and the scopes' state every 250 ms while the calls run (debugging aid)
        tokio::pin!(calls);
        loop {
            tokio::select! {
                results = &mut calls => break results,
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    let at = started.elapsed().as_secs_f64();
                    for host in polite.snapshot() {
                        eprintln!("    {at:>6.2} s  {host}");
                    }
                    for scope in polite.scope_snapshot() {
                        eprintln!("    {at:>6.2} s  {scope} interval {:?}", scope.interval);
                    }
                }
            }
        }
    } else {
        calls.await
    };
    let elapsed = started.elapsed().as_secs_f64();
    let ok = results.iter().filter(|r| matches!(r, Ok(200))).count();
    let best = (n as f64 - 1.0) / f64::from(per_second);
    println!(
        "{}: {n} at once, {ok} ok, {elapsed:.2} s ({per_second}/s allows it in {best:.2} s: {:.0}% of the quota's throughput); server saw {}",
        match configured {
            Some(Configured::Limit) => "quota configured",
            Some(Configured::HostLimit) => "quota configured by a port-less host_limit",
            None => "defaults",
        },
        100.0 * best / elapsed,
        stats(plain, base).await?
    );
    Ok(())
}

/// `n` requests at once through reqwest-retry 0.9 as its README shows it (exponential
/// backoff, 3 retries): the peer that retries refusals without reading them.
async fn reqwest_retry_burst(plain: &reqwest::Client, base: &str, n: usize) -> reqwest::Result<()> {
    plain.get(format!("{base}/reset/0.0")).send().await?;
    tokio::time::sleep(Duration::from_millis(1_100)).await; // let the server's window empty
    let policy = reqwest_retry::policies::ExponentialBackoff::builder().build_with_max_retries(3);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(reqwest_retry::RetryTransientMiddleware::new_with_policy(
            policy,
        ))
        .build();
    let url = format!("{base}/");
    let started = Instant::now();
    let calls = (0..n).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| matches!(r, Ok(200))).count();
    println!(
        "reqwest-retry: {n} at once, {ok} ok, {:.2} s; server saw {}",
        started.elapsed().as_secs_f64(),
        stats(plain, base).await?
    );
    Ok(())
}

/// A 3 s outage, retries off, `consecutive_failures(5).open_for(1 s)`.
async fn outage(plain: &reqwest::Client, base: &str) -> reqwest::Result<()> {
    plain.get(format!("{base}/reset/3.0")).send().await?;
    let polite = Polite::builder()
        .max_retries(0)
        .breaker(Breaker::consecutive_failures(5).open_for(Duration::from_secs(1)))
        .build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(polite)
        .build();
    let started = Instant::now();
    let (mut ok, mut failed, mut fast) = (0, 0, 0);
    let mut first_ok = None;
    while started.elapsed() < Duration::from_secs(6) {
        match client.get(format!("{base}/outage")).send().await {
            Ok(resp) if resp.status() == 200 => {
                ok += 1;
                first_ok.get_or_insert(started.elapsed());
            }
            Ok(_) => failed += 1,
            Err(_) => fast += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "outage of 3 s, one call per 20 ms for 6 s: {failed} reached the dead server, {fast} failed fast, {ok} ok; first success {:.2} s after the start; server saw {}",
        first_ok.map_or(f64::NAN, |d| d.as_secs_f64()),
        stats(plain, base).await?
    );
    Ok(())
}
