//! The contention load both `benches/components.rs` (criterion) and `benches/contention.rs`
//! (the limiters taking turns) run: `TASKS` tasks on `WORKERS` worker threads, each making
//! `PER_TASK` pacing decisions over `HOSTS` hosts, every one admitted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest_polite::{Polite, bench_support};
use tokio::runtime::Runtime;

use crate::support::{HOSTS, many_hosts, polite};

pub const WORKERS: usize = 2;
pub const TASKS: usize = 64;
/// Decisions per task in one batch.
pub const PER_TASK: usize = 1000;
pub const PER_BATCH: usize = TASKS * PER_TASK;

/// The load's runtime, its hosts (as URLs and as governor keys), and ours with every host
/// known and answered (past first contact), so each decision takes the admit path.
pub fn load() -> (Runtime, Arc<Vec<Url>>, Arc<Vec<String>>, Polite) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("runtime");
    let (urls, keys) = many_hosts();
    let polite = polite();
    for url in &urls {
        bench_support::mark_answered(&polite, url);
        assert!(bench_support::pacing_decision(&polite, url), "must admit");
    }
    assert_eq!(polite.host_count(), HOSTS);
    (rt, Arc::new(urls), Arc::new(keys), polite)
}

/// The host a task asks about for its `i`th decision: each task rotates over every host,
/// starting at its own offset.
pub fn host_index(task: usize, i: usize) -> usize {
    (task * (HOSTS / TASKS) + i) % HOSTS
}

/// Time `batches` batches of `TASKS` tasks spread over the runtime's workers, each making
/// `PER_TASK` decisions with `decide(task, i)`; every one must be admitted.
pub fn time_batches<F>(rt: &Runtime, batches: u64, decide: &Arc<F>) -> Duration
where
    F: Fn(usize, usize) -> bool + Send + Sync + ?Sized + 'static,
{
    let start = Instant::now();
    rt.block_on(async {
        for _ in 0..batches {
            let tasks: Vec<_> = (0..TASKS)
                .map(|task| {
                    let decide = Arc::clone(decide);
                    tokio::spawn(async move { (0..PER_TASK).filter(|&i| decide(task, i)).count() })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await.expect("task"), PER_TASK, "all admitted");
            }
        }
    });
    start.elapsed()
}
