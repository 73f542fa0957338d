//! A measuring harness, not a program to copy: a million hosts touched once, then idle; the host
//! records and the process's memory come back down after `idle_timeout`.
//!
//! ```text
//! cargo run --release --features bench --example scale                       # 10^6 hosts, answered in process
//! cargo run --release --features bench --example scale -- --loopback 100000  # real requests to a loopback server
//! ```
//!
//! Every host is a distinct name (`h123456.test`), so a distinct host record. Each is touched by
//! one GET through a client with the middleware (no limit configured: the first request to each
//! host is its first-contact scout). Two ways to answer it:
//!
//! - by default, a second middleware behind ours answers 200 in process: the request goes through
//!   everything ours does (record lookup and creation, admission, pacing, recording the answer),
//!   without a socket, so a million hosts take seconds;
//! - `--loopback N`: N real requests over HTTP/1 to one loopback listener, each name resolved to
//!   127.0.0.1 by a custom resolver. Every new host is a new TCP connection (reqwest pools per
//!   host), so this measures the rate of that path and the memory reqwest adds beside ours.
//!
//! Then the example waits out `idle_timeout` (20 s), touches one new host (a new host is what
//! sweeps idle records), and prints the record count and the process's resident memory (VmRSS)
//! before, at the peak and after; then fills again with as many other hosts, to show whether
//! the freed memory is reused.
//!
//! Beside RSS, the example counts the bytes the program holds on the heap (a counting global
//! allocator): at the peak, what that grew by per record is what a record costs with its key,
//! its `Arc`, what it allocates and its share of the host map, without the allocator's own
//! overhead and rounding (which RSS includes).
//!
//! glibc's allocator keeps most of what was freed (the records are small chunks spread over the
//! heap), so RSS after the sweep is an upper bound of what the records still cost. On
//! Linux/glibc the example then asks it to hand free pages back (`malloc_trim(0)`, which a
//! long-running crawler can call as well) and prints RSS again: that figure is what is still in
//! use.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use reqwest_polite::Polite;

/// Longer than a fill of 10^6 hosts takes in release (about 14 s), so the peak holds them all.
const IDLE: Duration = Duration::from_secs(20);
/// Requests in flight at once while filling.
const CONCURRENCY: usize = 256;

/// The system allocator, counting the bytes held.
struct Counting;

/// Bytes allocated and not freed yet.
static HELD: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed through to the system allocator unchanged; only a counter is
// updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            HELD.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            HELD.fetch_add(new_size, Ordering::Relaxed);
            HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let loopback = args.iter().position(|a| a == "--loopback").map(|i| {
        args.get(i + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000)
    });
    let hosts: usize = loopback.unwrap_or(1_000_000);
    let polite = Polite::builder().idle_timeout(IDLE).build();
    let (client, port, how) = match loopback {
        Some(_) => {
            let addr = serve_loopback();
            let how = format!("real requests to {addr}");
            (loopback_client(&polite), addr.port(), how)
        }
        None => (in_process_client(&polite), 80, "answered in process".into()),
    };
    println!(
        "scale: {hosts} distinct hosts, one GET each ({how}), idle_timeout {IDLE:?}; a host record is {} bytes (size_of, without its key and map entry)",
        reqwest_polite::bench_support::host_record_size()
    );
    let (baseline, held_before) = (rss_kib(), HELD.load(Ordering::Relaxed));
    println!(
        "  before:        {:>8} records  RSS {:>8} KiB  heap held {:>8} KiB",
        polite.host_count(),
        baseline,
        held_before / 1024
    );

    for round in 1..=2 {
        let first = (round - 1) * hosts;
        let started = Instant::now();
        let failed = fill(&client, port, first..first + hosts).await;
        let took = started.elapsed();
        let (records, peak, held) = (polite.host_count(), rss_kib(), HELD.load(Ordering::Relaxed));
        println!(
            "  fill {round}, peak: {records:>8} records  RSS {peak:>8} KiB  heap held {:>8} KiB  ({:.0} B of RSS and {:.0} B of heap per record over the baseline; {hosts} requests in {:.1} s, {:.0}/s, {failed} failed)",
            held / 1024,
            (peak.saturating_sub(baseline) * 1024) as f64 / records.max(1) as f64,
            held.saturating_sub(held_before) as f64 / records.max(1) as f64,
            took.as_secs_f64(),
            hosts as f64 / took.as_secs_f64(),
        );
        tokio::time::sleep(IDLE + Duration::from_millis(200)).await;
        // a new host arriving is what sweeps the idle records
        let _ = fill(&client, port, 2 * hosts + round..2 * hosts + round + 1).await;
        println!(
            "  fill {round}, after idle: {:>8} records  RSS {:>8} KiB  heap held {:>8} KiB",
            polite.host_count(),
            rss_kib(),
            HELD.load(Ordering::Relaxed) / 1024
        );
        if give_back_free_memory() {
            println!(
                "  fill {round}, trimmed:    {:>8} records  RSS {:>8} KiB  (baseline {baseline} KiB; after malloc_trim(0))",
                polite.host_count(),
                rss_kib()
            );
        }
    }
}

/// Ask the allocator to return the free pages it keeps to the system; `false` where there is
/// no such call (anything but glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back_free_memory() -> bool {
    // SAFETY: malloc_trim only walks glibc's own free lists; it takes no pointer from us.
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_free_memory() -> bool {
    false
}

/// GET `http://h{i}.test:{port}/` for every `i` in `range`, `CONCURRENCY` at a time; returns
/// how many failed.
async fn fill(client: &ClientWithMiddleware, port: u16, range: std::ops::Range<usize>) -> usize {
    let next = Arc::new(AtomicUsize::new(range.start));
    let workers = (0..CONCURRENCY).map(|_| {
        let (client, next, end) = (client.clone(), Arc::clone(&next), range.end);
        tokio::spawn(async move {
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return failed;
                }
                let url = format!("http://h{i}.test:{port}/");
                match client.get(&url).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                    }
                    _ => failed += 1,
                }
            }
        })
    });
    let mut failed = 0;
    for worker in futures::future::join_all(workers).await {
        failed += worker.expect("a fill worker panicked");
    }
    failed
}

/// The process's resident set size, in KiB (Linux; 0 elsewhere).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Answers every request 200 without the network: the transport, replaced.
struct AnswerInProcess;

#[async_trait::async_trait]
impl Middleware for AnswerInProcess {
    async fn handle(
        &self,
        _req: reqwest::Request,
        _extensions: &mut http::Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        Ok(reqwest::Response::from(http::Response::new("ok")))
    }
}

fn in_process_client(polite: &Polite) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(polite.clone())
        .with(AnswerInProcess)
        .build()
}

/// Resolves every name to the loopback listener.
struct ToLoopback;

impl reqwest::dns::Resolve for ToLoopback {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0)); // the URL's port is used
        Box::pin(async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) })
    }
}

fn loopback_client(polite: &Polite) -> ClientWithMiddleware {
    let http = reqwest::Client::builder()
        .dns_resolver(ToLoopback)
        .no_proxy()
        // each host is called once: keep no idle connection (one per host would run out of
        // file descriptors)
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client builds");
    ClientBuilder::new(http).with(polite.clone()).build()
}

/// One HTTP/1 listener on 127.0.0.1 answering 200 to everything, on its own thread.
fn serve_loopback() -> SocketAddr {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let service = service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}
