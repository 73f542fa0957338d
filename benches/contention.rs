//! Pacing decisions under contention, the limiters taking turns: 64 tasks on 2 worker threads
//! over 1000 hosts (the `contention` group of `benches/components.rs`), but each round times
//! ours, governor's keyed limiter and governor on our clock one after the other (the order
//! rotating), and each round's time is divided by governor's in the same round. Reported: the
//! median of those ratios, and of the times. On a shared 2-vCPU machine criterion's separate
//! runs drift by more than the difference between the limiters; ratios taken within a round
//! cancel the drift, as `benches/overhead.rs` does for the middleware.
//!
//! Every limiter is set so high that a slot is always free: this measures the admit path.
//!
//! Run: `cargo bench --features bench --bench contention` (`CONTENTION_ROUNDS`, 30 by default,
//! and `CONTENTION_BATCHES`, batches of 64 x 1000 decisions per limiter and round, 3 by default)

use std::hint::black_box;
use std::sync::Arc;

use reqwest_polite::bench_support;

#[path = "support/mod.rs"]
mod support;

#[path = "support/contended.rs"]
mod contended;

use contended::{PER_BATCH, PER_TASK, TASKS, WORKERS, host_index, load, time_batches};
use support::{HOSTS, governor_keyed, governor_keyed_std_clock};

type Decide = Arc<dyn Fn(usize, usize) -> bool + Send + Sync>;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a test run (`cargo test --benches`) passes nothing
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds = env_or("CONTENTION_ROUNDS", 30);
    let batches = env_or("CONTENTION_BATCHES", 3);
    let (rt, urls, keys, polite) = load();
    let governor = Arc::new(governor_keyed());
    let std_clock = Arc::new(governor_keyed_std_clock());
    for key in keys.iter() {
        assert!(governor.check_key(key).is_ok() && std_clock.check_key(key).is_ok());
    }
    let limiters: [(&str, Decide); 3] = [
        ("polite", {
            let urls = Arc::clone(&urls);
            Arc::new(move |task, i| {
                bench_support::pacing_decision(&polite, black_box(&urls[host_index(task, i)]))
            })
        }),
        ("governor_keyed", {
            let keys = Arc::clone(&keys);
            Arc::new(move |task, i| {
                governor
                    .check_key(black_box(&keys[host_index(task, i)]))
                    .is_ok()
            })
        }),
        ("governor_std_clock", {
            let keys = Arc::clone(&keys);
            Arc::new(move |task, i| {
                std_clock
                    .check_key(black_box(&keys[host_index(task, i)]))
                    .is_ok()
            })
        }),
    ];
    let decisions = (batches * PER_BATCH) as f64;
    // warm up every limiter once
    for (_, decide) in &limiters {
        time_batches(&rt, 1, decide);
    }
    let mut nanos = vec![Vec::new(); limiters.len()];
    let (mut vs_governor, mut vs_std_clock) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut this = [0.0; 3];
        for k in 0..limiters.len() {
            let which = (round + k) % limiters.len();
            let time = time_batches(&rt, batches as u64, &limiters[which].1);
            this[which] = time.as_secs_f64() * 1e9 / decisions;
        }
        for (all, t) in nanos.iter_mut().zip(this) {
            all.push(t);
        }
        vs_governor.push(this[0] / this[1]);
        vs_std_clock.push(this[0] / this[2]);
    }
    println!(
        "contention: {WORKERS} threads x {TASKS} tasks x {HOSTS} hosts, {rounds} rounds of {batches} x {TASKS} x {PER_TASK} decisions per limiter (medians)"
    );
    for ((name, _), all) in limiters.iter().zip(&nanos) {
        println!("  {name:<20} {:>7.1} ns per decision", median(all.clone()));
    }
    println!(
        "  polite / governor_keyed: {:.2}x; polite / governor_std_clock: {:.2}x (median of per-round ratios)",
        median(vs_governor),
        median(vs_std_clock)
    );
}
