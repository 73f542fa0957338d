//! The request loop: admit -> pace -> send -> record -> retry or return.
//!
//! Decisions are made elsewhere (the host's state decides pacing, reads answers and plans
//! retries; the breaker admits; the classifier says what may be retried); these files only
//! wait, send and resend:
//!
//! - [`admit`]: the breaker's word for each attempt, asked again right before it is sent;
//! - [`pace`]: the wait for a pacing slot (and a place under the in-flight cap);
//! - [`record`]: an answer read into the records it concerns, and the retry plan;
//! - [`refuse`]: the one way a request ends without being sent.

mod admit;
mod pace;
mod record;
mod refuse;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Extensions, Method};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

use crate::builder::Polite;
use crate::error::Error;
use crate::extensions::{RequestOptions, Units};
use crate::host::Host;
use crate::observe::{self, WaitReason};
use crate::retry::{Delays, Retryable, is_idempotent};
use crate::signals::ServerScope;
use admit::{admit, begin};
use pace::Paced;
use record::{Answer, Reading, plan_retry, record};
use refuse::refuse;

type Result<T> = reqwest_middleware::Result<T>;

#[async_trait::async_trait]
impl Middleware for Polite {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        // borrowed in this block only: a request borrowed in the body would stay in this future
        // (boxed, and moved) beside the one `send` holds
        let (host, req) = {
            let req = req;
            let partition = self.partition_of(req.headers()).await?;
            (self.host_for(req.url(), partition), req)
        };
        let Some(host) = host else {
            return next.run(req, extensions).await; // no host: nothing to pace, reqwest decides
        };
        let mut attempts = 0;
        let Some(observer) = self.inner.config.observers.get() else {
            let sent = self.send(&host, req, extensions, next, &mut attempts).await;
            return sent.unwrap_or_else(|refused| Err(refused.into()));
        };
        let started = Instant::now();
        let sent = self.send(&host, req, extensions, next, &mut attempts).await;
        observe::finished(observer, &host, &sent, attempts, started.elapsed());
        sent.unwrap_or_else(|refused| Err(refused.into()))
    }
}

impl Polite {
    /// Admit, pace, send, record, and retry or return. `Err`: the middleware refused to send
    /// the first attempt (nothing was sent); `Ok`: the last attempt's outcome. A retry refused
    /// before it is sent (a deadline, a scope spent past `max_retry_after`, a breaker that
    /// opened during the backoff) returns the last attempt's outcome instead: its response, or
    /// the transport error it ended with.
    ///
    /// Not an `async fn`: one keeps each argument twice in its future (as passed, and as bound
    /// in its body), and a request is large, moved with the future.
    #[allow(clippy::manual_async_fn)]
    fn send(
        &self,
        host: &Arc<Host>,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
        attempts: &mut u32,
    ) -> impl Future<Output = std::result::Result<Result<Response>, Error>> {
        async move {
            let config = &self.inner.config;
            let mut opts = RequestOptions::from_extensions(extensions);
            opts.bound_waits(config.max_retry_after);
            let safety = Safety::of(&req);
            let units = extensions.get::<Units>().cloned();
            // the request's own URL while it is here (no copy): before each send, req holds it
            let scopes_for = |url: &reqwest::Url, named: Option<&ServerScope>| {
                self.scopes_for(host, url, opts.cost, units.as_ref(), named)
            };
            // the first attempt: counted and admitted under one lock (see `begin`)
            let (mut named, first) = begin(self, host, req.url(), &opts)
                .map_err(|refused| refuse(host, config, refused, 0))?;
            let mut attempt = match first {
                Some(attempt) => attempt,
                None => Box::pin(admit(host, config, &opts, 0))
                    .await
                    .map_err(|refused| refuse(host, config, refused, 0))?,
            };
            let mut scopes = scopes_for(req.url(), named.as_ref());
            // made on the first retry, and boxed: most requests never need it
            let mut backoff: Option<Box<Delays<SmallRng>>> = None;
            // the outcome a retry was planned after, returned if the retry is refused unsent
            // (boxed: made only on a retry, and this future stays small)
            let mut last: Option<Box<Result<Response>>> = None;
            loop {
                let retries_left = !opts.no_retry
                    && config.retryable != Retryable::Never
                    && *attempts < config.max_retries;
                let spare = if retries_left { req.try_clone() } else { None };
                let paced = loop {
                    // a quiet host's free slot is taken without the lock or the queue; the
                    // wait is boxed: most requests never build it
                    let paced = match pace::quietly(host, &scopes, &mut attempt) {
                        Some(in_flight) => Ok(Paced::Go(in_flight)),
                        None => {
                            let path = req.url().path();
                            let named = named.as_ref();
                            let waits = pace::Waits {
                                host,
                                scopes: &scopes,
                                path,
                                named,
                                config,
                                opts: &opts,
                                attempts: *attempts,
                            };
                            Box::pin(waits.pace(&mut attempt)).await
                        }
                    };
                    match paced {
                        Ok(Paced::Renamed(learned)) => {
                            // the server named this route's quota while the request waited:
                            // pace again, in that scope too
                            named = Some(learned);
                            scopes = scopes_for(req.url(), named.as_ref());
                        }
                        // the breaker opened while the request waited for its slot: with
                        // `WaitIfOpen`, wait for it to let the request through, then pace again
                        Err(Error::CircuitOpen { .. }) if opts.wait_if_open.is_some() => {
                            match Box::pin(admit(host, config, &opts, *attempts)).await {
                                Ok(admitted) => attempt = admitted,
                                Err(refused) => break Err(refused),
                            }
                        }
                        other => break other,
                    }
                };
                #[cfg(feature = "redis")]
                let paced = match (self.shared(), paced) {
                    (Some(store), Ok(Paced::Go(in_flight))) => {
                        let max_wait = config.max_retry_after;
                        let shared =
                            crate::shared::pace(store, host, &scopes, &opts, max_wait, *attempts);
                        match shared.await {
                            // the fleet's slot may have come long after the local one: the
                            // breaker is asked again before the send
                            Ok(()) => admit::recheck_now(host, config, &mut attempt)
                                .map(|()| Paced::Go(in_flight)),
                            Err(refused) => Err(refused),
                        }
                    }
                    (_, paced) => paced,
                };
                let in_flight = match paced {
                    Ok(Paced::Go(in_flight)) => in_flight,
                    Ok(Paced::Renamed(_)) => unreachable!("paced again above"),
                    Err(refused) => {
                        let refused = refuse(host, config, refused, *attempts);
                        return last.map(|outcome| *outcome).ok_or(refused);
                    }
                };
                if *attempts > 0 {
                    observe::record_resend(*attempts);
                }
                // the answer may teach its route's quota: the path is read from the copy kept for
                // a retry, or kept here when there is none
                let own_path: Option<Box<str>> = spare.is_none().then(|| req.url().path().into());
                let result = next.clone().run(req, extensions).await;
                drop(in_flight);
                let path = match (&spare, &own_path) {
                    (Some(spare), _) => spare.url().path(),
                    (None, own) => own.as_deref().unwrap_or_default(),
                };
                let answer = Answer {
                    scopes: &scopes,
                    path,
                    safety: &safety,
                    resend_count: *attempts,
                };
                *attempts += 1;
                let (verdict, cooldowns) = record(self, host, attempt, &answer, read(&result));
                #[cfg(feature = "redis")]
                if let Some(store) = self.shared().filter(|_| !cooldowns.is_empty()) {
                    crate::shared::close(store, host, &cooldowns).await;
                }
                #[cfg(not(feature = "redis"))]
                let _ = cooldowns;
                let Some(spare) = spare else {
                    return Ok(result); // out of retries, or a body that cannot be cloned: sent once
                };
                let Some(delay) = plan_retry(host, self, &opts, verdict, *attempts, &mut backoff)
                else {
                    return Ok(result);
                };
                if let Some(observer) = config.observers.get() {
                    observe::retrying(observer, host, &result, *attempts, delay);
                }
                last = Some(Box::new(result));
                let slept = Instant::now();
                Box::pin(tokio::time::sleep(delay)).await; // boxed: most requests never sleep here
                if let Some(observer) = config.observers.get() {
                    let waited = slept.elapsed();
                    observe::waited(observer, host, None, WaitReason::Backoff, waited, *attempts);
                }
                req = spare;
                attempt = match Box::pin(admit(host, config, &opts, *attempts)).await {
                    Ok(attempt) => attempt,
                    Err(refused) => {
                        let refused = refuse(host, config, refused, *attempts);
                        return last.map(|outcome| *outcome).ok_or(refused);
                    }
                };
            }
        }
    }
}

/// A request carrying it may be retried like an idempotent one (draft-ietf-httpapi-idempotency-key-header).
const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// What the retry classifier needs to know about the request.
struct Safety {
    method: Method,
    /// Read only for a method that is not idempotent (for the others it changes nothing).
    idempotency_key: bool,
}

impl Safety {
    fn of(req: &Request) -> Self {
        let method = req.method();
        Safety {
            idempotency_key: !is_idempotent(method) && req.headers().contains_key(IDEMPOTENCY_KEY),
            method: method.clone(),
        }
    }
}

/// Read an attempt's result once, into what the engine needs (see [`Reading`]); `None` for
/// another middleware's error.
fn read(result: &Result<Response>) -> Option<Reading> {
    use crate::retry::Outcome;
    Some(match result {
        Ok(resp) => Reading::answer(resp.status(), resp.headers()),
        Err(reqwest_middleware::Error::Reqwest(err)) if err.is_connect() => {
            Reading::failed(Outcome::Connect)
        }
        Err(reqwest_middleware::Error::Reqwest(err)) if err.is_timeout() => {
            Reading::failed(Outcome::Timeout)
        }
        Err(reqwest_middleware::Error::Reqwest(_)) => Reading::failed(Outcome::Other),
        Err(reqwest_middleware::Error::Middleware(_)) => return None,
    })
}

/// A fresh jitter source for one request's retries: from the operating system, or from
/// `jitter_seed` and the request's number among the retried ones.
fn jitter_rng(polite: &Polite) -> SmallRng {
    let Some(seed) = polite.inner.config.jitter_seed else {
        return SmallRng::from_os_rng();
    };
    let n = polite.inner.jitter_draws.fetch_add(1, Ordering::Relaxed);
    SmallRng::seed_from_u64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
