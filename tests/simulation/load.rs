//! The load: every request of a world sent at its time, each in its own task, and how each
//! ended.

use std::sync::Arc;
use std::time::Duration;

use reqwest_middleware::ClientWithMiddleware;
use reqwest_polite::{Cost, Deadline, NoRetry, Units};
use tokio::time::Instant;

use super::server::{SharedLog, lock};
use super::world::{Body, CREDENTIAL_HEADER, Request, World};

tokio::task_local! {
    /// The id of the request whose task is running: the server and the observer read it.
    static REQUEST: u32;
}

/// The request whose task is running, if any.
pub fn current_request() -> Option<u32> {
    REQUEST.try_with(|id| *id).ok()
}

/// How one request ended.
#[derive(Debug, Clone)]
pub enum Ending {
    Answer(u16),
    /// The middleware refused (nothing sent for the attempt), as [`reqwest_polite::Error`].
    Refused(#[allow(dead_code)] reqwest_polite::Error), // shown (Debug) in violations
    /// A transport error came back.
    Transport,
    /// The caller dropped it at `cancel_after`.
    Cancelled,
    /// Its task panicked.
    Panicked(String),
}

#[derive(Debug, Clone)]
pub struct Ended {
    pub id: u32,
    pub entered: Instant,
    pub at: Instant,
    pub how: Ending,
}

/// Send every request of `world`, request `i` through `clients[i % clients.len()]` (one client
/// per process); `None` for a request still running at
/// `horizon` (measured from the world's start).
pub async fn run(
    world: &Arc<World>,
    polite: &reqwest_polite::Polite,
    clients: &[ClientWithMiddleware],
    log: &SharedLog,
    horizon: Duration,
) -> Vec<Option<Ended>> {
    let t0 = lock(log).t0;
    let tasks: Vec<_> = world
        .requests
        .iter()
        .map(|r| {
            let client = clients[r.id as usize % clients.len()].clone();
            let (world, log) = (Arc::clone(world), Arc::clone(log));
            let at = t0 + r.at;
            let id = r.id;
            tokio::spawn(REQUEST.scope(id, async move {
                tokio::time::sleep_until(at).await;
                send(&world, &client, &log, &world.requests[id as usize]).await
            }))
        })
        .collect();
    let relimits = tokio::spawn({
        let (world, polite, log) = (Arc::clone(world), polite.clone(), Arc::clone(log));
        async move {
            for change in &world.relimits {
                tokio::time::sleep_until(t0 + change.at).await;
                match change.limit {
                    Some(limit) => polite.set_host_limit(&change.key, limit),
                    None => polite.clear_host_limit(&change.key),
                }
                let mut log = lock(&log);
                let seq = log.next_seq();
                log.relimits.push(seq);
                log.note(|t| format!("{t:9.3} limit of {} now {:?}", change.key, change.limit));
            }
        }
    });
    let mut ended = Vec::with_capacity(tasks.len());
    for (r, task) in world.requests.iter().zip(tasks) {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(t0 + horizon, task).await {
            Ok(Ok(end)) => ended.push(Some(end)),
            Ok(Err(err)) => ended.push(Some(Ended {
                id: r.id,
                entered: t0 + r.at,
                at: Instant::now(),
                how: Ending::Panicked(panic_text(err)),
            })),
            Err(_) => {
                abort.abort();
                ended.push(None);
            }
        }
    }
    relimits.abort();
    ended
}

fn panic_text(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
        Err(err) => err.to_string(),
    }
}

async fn send(world: &World, client: &ClientWithMiddleware, log: &SharedLog, r: &Request) -> Ended {
    let entered = Instant::now();
    {
        let mut log = lock(log);
        let seq = log.next_seq();
        log.entered.insert(r.id, seq);
    }
    let url = format!("http://{}{}", r.authority, r.path);
    let mut req = client.request(r.method.clone(), url);
    if let Some(i) = r.credential {
        req = req.header(CREDENTIAL_HEADER, &world.credentials[i]);
    }
    if r.idempotency_key {
        req = req.header("idempotency-key", format!("key-{}", r.id));
    }
    req = match r.body {
        Body::None => req,
        Body::Bytes => req.body("body"),
        Body::Stream => req.body(reqwest::Body::wrap(http_body_util::Full::new(
            bytes::Bytes::from_static(b"streamed"),
        ))),
    };
    if let Some(cost) = r.cost {
        req = req.with_extension(Cost(cost));
    }
    if let Some(units) = r.units {
        req = req.with_extension(Units::new("tokens", units));
    }
    if let Some(deadline) = r.deadline {
        req = req.with_extension(Deadline::after(deadline));
    }
    if r.no_retry {
        req = req.with_extension(NoRetry);
    }
    let sent = req.send();
    let result = match r.cancel_after {
        None => Some(sent.await),
        Some(after) => tokio::time::timeout(after, sent).await.ok(),
    };
    let how = match result {
        None => Ending::Cancelled,
        Some(Ok(resp)) => Ending::Answer(resp.status().as_u16()),
        Some(Err(err)) => {
            let text = format!("{err:?} {err}");
            lock(log).scan("error", &text);
            match reqwest_polite::Error::of(&err) {
                Some(refused) => Ending::Refused(refused.clone()),
                None => Ending::Transport,
            }
        }
    };
    Ended {
        id: r.id,
        entered,
        at: Instant::now(),
        how,
    }
}
