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
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::builder::Polite;
use crate::error::Error;
use crate::extensions::{RequestOptions, Units};
use crate::host::Host;
use crate::observe::{self, WaitReason};
use crate::retry::{Delays, Retryable, is_idempotent};
use crate::scope::Scope;
use crate::signals::ServerScope;
use admit::{Attempt, admit, begin};
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
            let (named, mut attempt, generation) =
                self.first_attempt(host, req.url(), &opts).await?;
            let mut scopes = Scopes {
                list: self.scopes_for(host, req.url(), opts.cost, units.as_ref(), named.as_ref()),
                named,
                generation,
            };
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
                let call = Call {
                    host,
                    url: req.url(),
                    units: units.as_ref(),
                    opts: &opts,
                    attempts: *attempts,
                };
                let paced = self.take_slot(&call, &mut scopes, &mut attempt);
                let paced = paced.await;
                let in_flight = match paced {
                    Ok(in_flight) => in_flight,
                    Err(refused) => return unsent(host, config, refused, *attempts, last),
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
                    scopes: &scopes.list,
                    path,
                    safety: &safety,
                    resend_count: *attempts,
                };
                *attempts += 1;
                let heard = self.hear(host, attempt, &answer, &result).await;
                let Some(spare) = spare else {
                    return Ok(result); // out of retries, or a body that cannot be cloned: sent once
                };
                let Some(delay) = plan_retry(host, self, &opts, heard, *attempts, &mut backoff)
                else {
                    return Ok(result);
                };
                // boxed: most requests never back off
                Box::pin(self.back_off(host, delay, *attempts, &result)).await;
                last = Some(Box::new(result));
                req = spare;
                attempt = match Box::pin(admit(host, config, &opts, *attempts)).await {
                    Ok(attempt) => attempt,
                    Err(refused) => return unsent(host, config, refused, *attempts, last),
                };
            }
        }
    }

    /// The request's first attempt: counted and admitted under one lock (see `begin`), or
    /// admitted once the breaker lets it through ([`WaitIfOpen`](crate::WaitIfOpen)). Returns
    /// the quota the server named for its route, if any.
    async fn first_attempt(
        &self,
        host: &Arc<Host>,
        url: &url::Url,
        opts: &RequestOptions,
    ) -> std::result::Result<(Option<ServerScope>, Attempt, u64), Error> {
        let config = &self.inner.config;
        let (named, first, generation) =
            begin(self, host, url, opts).map_err(|refused| refuse(host, config, refused, 0))?;
        let attempt = match first {
            Some(attempt) => attempt,
            None => Box::pin(admit(host, config, opts, 0))
                .await
                .map_err(|refused| refuse(host, config, refused, 0))?,
        };
        Ok((named, attempt, generation))
    }

    /// Read an attempt's outcome into every record it concerns (and, with a shared store, the
    /// cooldowns it started into the store), and classify it. Returns the verdict and the
    /// longest pause the answer asked for (its `Retry-After`, in whichever scope).
    async fn hear(
        &self,
        host: &Host,
        attempt: Attempt,
        answer: &Answer<'_>,
        result: &Result<Response>,
    ) -> (crate::retry::Verdict, Option<std::time::Duration>) {
        let (verdict, cooldowns) = record(self, host, attempt, answer, read(result));
        let paused = cooldowns.iter().map(|(_, pause)| *pause).max();
        #[cfg(feature = "redis")]
        if let Some(store) = self.shared().filter(|_| !cooldowns.is_empty()) {
            crate::shared::close(store, host, &cooldowns).await;
        }
        (verdict, paused)
    }

    /// The attempt's slot in every scope (and in the fleet's schedule, with a shared store),
    /// with its place under the in-flight cap: a quiet host's free slot without the lock or the
    /// queue, else [waiting](Self::wait_for_slot) for it.
    async fn take_slot(
        &self,
        call: &Call<'_>,
        scopes: &mut Scopes,
        attempt: &mut Attempt,
    ) -> std::result::Result<Option<OwnedSemaphorePermit>, Error> {
        let in_flight = match pace::quietly(call.host, &scopes.list, attempt) {
            Some(in_flight) => in_flight,
            // boxed: most requests never wait
            None => Box::pin(self.wait_for_slot(call, scopes, attempt)).await?,
        };
        #[cfg(feature = "redis")]
        if let Some(store) = self.shared() {
            self.fleet_slot(store, call, &scopes.list, attempt).await?;
        }
        Ok(in_flight)
    }

    /// Wait for the attempt's slot in every scope (and a place under the in-flight cap).
    /// While it waits, the server may name its route's quota or the configured limits may
    /// change (`scopes` are then worked out again, and it paces in the new ones too), and with
    /// [`WaitIfOpen`](crate::WaitIfOpen) a breaker that opened is waited out.
    async fn wait_for_slot(
        &self,
        call: &Call<'_>,
        scopes: &mut Scopes,
        attempt: &mut Attempt,
    ) -> std::result::Result<Option<OwnedSemaphorePermit>, Error> {
        let Call {
            host,
            url,
            units,
            opts,
            attempts,
        } = *call;
        let config = &self.inner.config;
        loop {
            let waits = pace::Waits {
                host,
                scopes: &scopes.list,
                path: url.path(),
                named: scopes.named.as_ref(),
                generation: scopes.generation,
                config,
                opts,
                attempts,
            };
            match waits.pace(attempt).await {
                Ok(Paced::Go(in_flight)) => return Ok(in_flight),
                Ok(Paced::Rescope(learned)) => {
                    // the record first (read before the scopes are: they are never older
                    // than it says)
                    let record = admit::up_to_date(self, host, url, host.state());
                    scopes.generation = record.schedule.generation;
                    drop(record);
                    if learned.is_some() {
                        scopes.named = learned;
                    }
                    scopes.list =
                        self.scopes_for(host, url, opts.cost, units, scopes.named.as_ref());
                }
                Err(Error::CircuitOpen { .. }) if opts.wait_if_open.is_some() => {
                    *attempt = Box::pin(admit(host, config, opts, attempts)).await?;
                }
                Err(refused) => return Err(refused),
            }
        }
    }

    /// The fleet's slot, through the shared store; the breaker is asked again once it comes
    /// (it may come long after the local one).
    #[cfg(feature = "redis")]
    async fn fleet_slot(
        &self,
        store: &crate::store::RedisStore,
        call: &Call<'_>,
        scopes: &[(Arc<Scope>, u32)],
        attempt: &mut Attempt,
    ) -> std::result::Result<(), Error> {
        let (config, host) = (&self.inner.config, call.host);
        let wait_at_most = config.max_retry_after;
        crate::shared::pace(store, host, scopes, call.opts, wait_at_most, call.attempts).await?;
        admit::recheck_now(host, config, attempt)
    }

    /// Sleep a retry's backoff after `result`, telling the observer of the retry and of the
    /// wait.
    async fn back_off(
        &self,
        host: &Host,
        delay: std::time::Duration,
        attempts: u32,
        result: &Result<Response>,
    ) {
        if let Some(observer) = self.inner.config.observers.get() {
            observe::retrying(observer, host, result, attempts, delay);
        }
        let slept = Instant::now();
        tokio::time::sleep(delay).await;
        if let Some(observer) = self.inner.config.observers.get() {
            let waited = slept.elapsed();
            observe::waited(observer, host, None, WaitReason::Backoff, waited, attempts);
        }
    }
}

/// What one attempt of a request is paced by that does not change while it waits: its host's
/// record, its URL, its units and options, and how many attempts went before it.
#[derive(Clone, Copy)]
struct Call<'a> {
    host: &'a Arc<Host>,
    url: &'a url::Url,
    units: Option<&'a Units>,
    opts: &'a RequestOptions,
    attempts: u32,
}

/// A request's scopes as they were worked out: the scopes with the units it takes in each,
/// the quota the server named for its route, and the generation of the configured limits
/// the host's record had. Worked out again while it waits, when either changes.
struct Scopes {
    list: Vec<(Arc<Scope>, u32)>,
    named: Option<ServerScope>,
    generation: u64,
}

/// An attempt refused before it was sent (`attempts` sent before it): the outcome of the one
/// before, when there was one (a retry refused), or the refusal.
fn unsent(
    host: &Host,
    config: &crate::builder::Config,
    refused: Error,
    attempts: u32,
    last: Option<Box<Result<Response>>>,
) -> std::result::Result<Result<Response>, Error> {
    let refused = refuse(host, config, refused, attempts);
    last.map(|outcome| *outcome).ok_or(refused)
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
