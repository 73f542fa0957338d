//! The server's quota as we count it (`RateLimit`, `X-RateLimit-*`), and first contact with a
//! scope whose quota we do not know yet.
//!
//! - **Known quota**: we keep our own count of what is left until the reset. At zero the scope
//!   cools down until the reset (the [cooldown](super::cooldown) owns that instant); when little
//!   is left, what is left is spread evenly over the time to the reset, all of it before.
//! - **First contact**: until we know a scope's quota, at most a window of *scouts* is out at
//!   once: 1, then 2 until contact has lasted a second (again after a quiet second), then
//!   doubling each round trip to 4, then one more each round trip (TCP's slow start and
//!   congestion avoidance), so a burst never lands whole on a quota we have not read, and a
//!   near server's per-second quota meets at most two scouts at once. Quota headers, a
//!   refusal, or the window reaching 32 (a second and about 30 round trips without either)
//!   end it; so does a scout that takes longer than [`SCOUT_HOLD`] to answer. The same when a
//!   quota window has expired.
//! - A scope with a configured limit sends one scout first and starts its schedule from that
//!   scout's answer (see `Schedule::observe`): a first request slowed by opening its
//!   connection (a TCP or TLS handshake, a busy client) would otherwise reach the server late,
//!   and the server would count it in a window with requests sent a window after it. From the
//!   first answer on, it trusts its limit over the quota headers of *successful* answers (a
//!   server that rounds its reset up to whole seconds would otherwise cost up to half the
//!   throughput); refusals saying nothing is left still count.
//! - A scope learned by first contact ends a fixed window where its first answer says it does
//!   (see [`window_start`](super::window_start)), when that is sooner than the reset announced,
//!   and waits out the second after a reset that a refusal says has passed.

use std::time::Duration;

use tokio::time::Instant;

use super::window_start::WindowStart;
use crate::signals::{ServerHint, is_refusal};
use crate::snapshot::ServerQuota;

/// Extra wait past a quota reset, for the server's clock and the whole-second resolution of
/// most reset headers.
pub(crate) const RESET_MARGIN: Duration = Duration::from_millis(50);

/// "Little is left": at most this share (1/n) of the quota, or this many when the quota is
/// unknown.
const LOW_SHARE: u64 = 10;
const LOW_UNKNOWN: u64 = 10;

/// How long the others wait for a scout's answer before going anyway.
pub(crate) const SCOUT_HOLD: Duration = Duration::from_secs(1);

/// The first-contact window at which a scope that never refused us and sends no quota headers
/// is considered unmetered.
const LEARNED: u32 = 32;

/// The first-contact window stays at most this...
const FIRST_SECOND_WINDOW: u32 = 2;

/// ...until contact has lasted this long: the shortest window quotas are counted in. A near
/// server's per-second quota is met within its first second, and each scout out when it
/// refuses one is refused too (and, on a limiter that counts refused requests, counted).
const GROWTH_AFTER: Duration = Duration::from_secs(1);

/// Then it doubles each round trip up to this, and grows by one each round trip after it.
const SLOW_START_END: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// First contact (or the quota window expired): at most `window` scouts out at once.
    FirstContact {
        window: u32,
        out: u32,
        /// Answers since the window last grew.
        acked: u32,
        /// The last send or answer: a server silent for `SCOUT_HOLD` ends first contact.
        since: Instant,
        /// How long first contact had lasted at `since`, in milliseconds (the window grows
        /// past [`FIRST_SECOND_WINDOW`] only after [`GROWTH_AFTER`]; four bytes keep a host
        /// record from growing).
        lasted_ms: u32,
    },
    /// Answers carry no quota headers: nothing to gate on.
    Unmetered,
    /// `remaining` units until `reset_at`.
    Known {
        remaining: u64,
        limit: Option<u64>,
        reset_at: Instant,
    },
    /// A quota the server named reset (its window ended) `since`, and no answer of its new
    /// window has come yet: the announced `limit` goes, `remaining` of it left, then the scope
    /// holds until an answer says where the new window stands (at most [`SCOUT_HOLD`]). The
    /// backlog never goes at once into a window that allows only `limit`.
    Renewed {
        remaining: u64,
        limit: u64,
        since: Instant,
    },
}

/// What first contact says about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Go; `scout`: this attempt reads a quota we do not know yet.
    Go { scout: bool },
    /// The scouts are out: wait for an answer, or until this instant.
    Hold(Instant),
}

/// One scope's view of the server's quota.
#[derive(Debug, Clone)]
pub(crate) struct QuotaTracker {
    state: State,
    /// The scope has a configured limit: one scout, then its schedule; successful answers'
    /// quota headers are not acted on.
    configured: bool,
    /// The quota is learned by first contact (again after each window expires).
    scouts: bool,
    /// Where the windows of a quota learned by first contact end.
    window_start: WindowStart,
}

impl QuotaTracker {
    /// `configured`: the scope has a limit of the user's, trusted over successful answers.
    /// `first_contact`: the quota is unknown until scouts have read it.
    pub(crate) fn new(now: Instant, configured: bool, first_contact: bool) -> Self {
        QuotaTracker {
            state: if first_contact {
                self::first_contact(now)
            } else {
                State::Unmetered
            },
            configured,
            scouts: first_contact,
            window_start: WindowStart::default(),
        }
    }

    /// True when the user configured the scope's quota (see [`QuotaTracker::new`]).
    pub(crate) fn is_configured(&self) -> bool {
        self.configured
    }

    /// The user set or cleared the scope's limit at run time.
    pub(crate) fn set_configured(&mut self, configured: bool) {
        self.configured = configured;
        if configured && matches!(self.state, State::FirstContact { .. }) {
            self.state = State::Unmetered;
        }
    }

    /// Skip first contact: the scope is known to send no quota headers (benches, tests).
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn assume_unmetered(&mut self) {
        self.state = State::Unmetered;
    }

    /// The server named the quota its answers are about (another scope's): first contact with
    /// this one has read what there is to read.
    pub(crate) fn end_first_contact(&mut self) {
        if matches!(self.state, State::FirstContact { .. }) {
            self.state = State::Unmetered;
            self.window_start.unchecked();
        }
    }

    /// True while first contact holds the scope to a window of scouts.
    pub(crate) fn in_first_contact(&self) -> bool {
        matches!(self.state, State::FirstContact { .. })
    }

    /// True when the answers carry no quota to count or learn.
    pub(crate) fn is_unmetered(&self) -> bool {
        self.state == State::Unmetered
    }

    /// May an attempt go at `now`, as far as first contact is concerned?
    pub(crate) fn gate(&mut self, now: Instant) -> Gate {
        if self.passed_end(now) {
            self.state = match self.state {
                State::Known {
                    limit: Some(limit), ..
                } if !self.configured && !self.scouts => State::Renewed {
                    remaining: limit,
                    limit,
                    since: now,
                },
                _ if self.configured || !self.scouts => State::Unmetered,
                _ => first_contact(now),
            };
        }
        match self.state {
            State::FirstContact { window, out, .. } if out < window => Gate::Go { scout: true },
            State::FirstContact { since, .. } => {
                if now >= since + SCOUT_HOLD {
                    // the scouts are slow: stop holding the others for them
                    self.state = State::Unmetered;
                    self.window_start.unchecked();
                    Gate::Go { scout: false }
                } else {
                    Gate::Hold(since + SCOUT_HOLD)
                }
            }
            State::Renewed {
                remaining: 0,
                since,
                ..
            } => {
                if now >= since + SCOUT_HOLD {
                    // no answer says where the new window stands: stop holding for one
                    self.state = State::Unmetered;
                    Gate::Go { scout: false }
                } else {
                    Gate::Hold(since + SCOUT_HOLD)
                }
            }
            State::Unmetered | State::Known { .. } | State::Renewed { .. } => {
                Gate::Go { scout: false }
            }
        }
    }

    /// True when the known quota's window has ended by `now` (an inferred end is then checked
    /// by the answers that follow).
    fn passed_end(&mut self, now: Instant) -> bool {
        let passed = matches!(self.state, State::Known { reset_at, .. } if now >= reset_at);
        if passed {
            self.window_start.passed();
        }
        passed
    }

    /// An attempt of `cost` units went at `now`. Returns the reset instant when this send
    /// spent what was left: the scope cools down until then.
    pub(crate) fn on_send(&mut self, now: Instant, cost: u32, scout: bool) -> Option<Instant> {
        match &mut self.state {
            State::Known { remaining, .. } => {
                *remaining = remaining.saturating_sub(u64::from(cost));
                self.spent_until(now)
            }
            State::Renewed { remaining, .. } => {
                *remaining = remaining.saturating_sub(u64::from(cost));
                None
            }
            State::FirstContact {
                window,
                out,
                since,
                lasted_ms,
                ..
            } if scout => {
                if *out == 0 && now >= *since + GROWTH_AFTER {
                    // quiet for a second: a per-second count has forgotten us, so contact
                    // starts its first second again
                    *lasted_ms = 0;
                    *since = now;
                    *window = (*window).min(FIRST_SECOND_WINDOW);
                }
                *out += 1;
                touch(since, lasted_ms, now);
                None
            }
            _ => None,
        }
    }

    /// The reset, when what is left of the known quota at `now` is spent (but for a unit kept
    /// to check an inferred end): the scope cools down until then.
    fn spent_until(&self, now: Instant) -> Option<Instant> {
        match self.state {
            State::Known {
                remaining,
                reset_at,
                limit,
            } if remaining <= self.window_start.kept(limit) && now < reset_at => Some(reset_at),
            _ => None,
        }
    }

    /// A quota whose windows are fixed and known (an IETF policy's `q` and `w`): once its
    /// window has reset, the count starts again at `limit` until the next reset, one `window`
    /// later, instead of the scope going unmetered until an answer says otherwise.
    pub(crate) fn renew(&mut self, now: Instant, limit: u64, window: Duration) {
        let State::Known { reset_at, .. } = self.state else {
            return;
        };
        if now < reset_at || window.is_zero() {
            return;
        }
        let windows = (now - reset_at).as_nanos() / window.as_nanos() + 1;
        let ahead = window.saturating_mul(u32::try_from(windows).unwrap_or(u32::MAX));
        self.state = State::Known {
            remaining: limit,
            limit: Some(limit),
            reset_at: crate::time::far_add(reset_at, ahead),
        };
    }

    /// A scout ended without an answer (error, cancellation): let the next one go. A
    /// configured scope stops holding its requests: its one scout is gone, and a host that
    /// fails every request would otherwise be called one request at a time.
    pub(crate) fn release_scout(&mut self) {
        if let State::FirstContact { out, .. } = &mut self.state {
            *out = out.saturating_sub(1);
        }
        if self.configured {
            self.end_first_contact();
        }
    }

    /// Read an answer to a request sent at `sent_at` (`None`: not known). `accepted_any`: the
    /// server has accepted something lately. Returns the reset instant when the answer says the
    /// quota is spent: the scope cools down until then.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        sent_at: Option<Instant>,
        scout: bool,
        status: u16,
        hint: &ServerHint,
        accepted_any: bool,
    ) -> Option<Instant> {
        if scout {
            self.release_scout();
        }
        if self.configured {
            // one scout was all a configured scope sends before its first answer
            self.end_first_contact();
        }
        let refused = http::StatusCode::from_u16(status).is_ok_and(|s| is_refusal(s, hint));
        if self.configured && !(refused && hint.remaining == Some(0)) {
            return None;
        }
        // an answer to a request of the window that ended says nothing of the renewed one
        if let (State::Renewed { since, .. }, Some(sent)) = (self.state, sent_at)
            && sent < since
        {
            return None;
        }
        // only a scope that sends one scout at each new window infers where windows end: a
        // wrong inference then costs that scout, not a window's worth of requests
        let sent_at = sent_at.filter(|_| self.scouts && !self.configured);
        self.passed_end(now);
        if self.window_start.check(scout, hint, refused) {
            return None;
        }
        match (hint.remaining, hint.reset_in) {
            (Some(remaining), Some(reset_in)) => {
                let inferred = sent_at.and_then(|sent_at| {
                    let late = self.window_start.late_end(now, hint, refused);
                    late.or_else(|| self.window_start.infer_end(now, sent_at, hint))
                });
                let ends = inferred.unwrap_or_else(|| crate::time::far_add(now, reset_in));
                let reset_at = crate::time::far_add(ends, RESET_MARGIN);
                self.state = self.counted(now, remaining, reset_at, hint.limit, inferred);
                self.spent_until(now)
            }
            _ => {
                self.no_quota_to_read(now, status, accepted_any);
                None
            }
        }
    }

    /// The state after an answer that says `remaining` are left until `reset_at` (of
    /// `limit`); `inferred`: that reset is the window end inferred from its first answer.
    fn counted(
        &mut self,
        now: Instant,
        remaining: u64,
        reset_at: Instant,
        limit: Option<u64>,
        inferred: Option<Instant>,
    ) -> State {
        match self.state {
            // same window: the lower count wins (our own count includes requests sent after
            // the one this answer is for)
            State::Known {
                remaining: ours,
                reset_at: known,
                limit: known_limit,
            } if now < known => State::Known {
                remaining: ours.min(remaining),
                reset_at: known.min(reset_at),
                limit: limit.or(known_limit),
            },
            // the renewed window's first answer: our count includes the requests sent since,
            // which the answer may not
            State::Renewed {
                remaining: ours,
                limit: renewed,
                ..
            } => State::Known {
                remaining: ours.min(remaining),
                reset_at,
                limit: limit.or(Some(renewed)),
            },
            _ => {
                if inferred.is_none() {
                    self.window_start.announced();
                }
                State::Known {
                    remaining,
                    reset_at,
                    limit,
                }
            }
        }
    }

    /// An answer without a readable quota: first contact goes on, or ends.
    fn no_quota_to_read(&mut self, now: Instant, status: u16, accepted_any: bool) {
        let State::FirstContact {
            window,
            acked,
            since,
            lasted_ms,
            ..
        } = &mut self.state
        else {
            return;
        };
        touch(since, lasted_ms, now);
        if status == 429 && accepted_any {
            // refused after some were accepted: the adaptive rate takes over from here
            self.state = State::Unmetered;
        } else if status == 429 {
            // refused before anything was accepted: start again with one scout
            *window = 1;
        } else if *window + 1 >= LEARNED {
            self.state = State::Unmetered;
        } else if u128::from(*lasted_ms) < GROWTH_AFTER.as_millis() {
            // not a second yet: a quota per second may be met any moment
            *window = (*window + 1).min(FIRST_SECOND_WINDOW);
        } else if *window < SLOW_START_END {
            *window += 1; // doubles each round trip
        } else {
            // one more each round trip: the round that meets the quota overshoots it by at
            // most one window
            *acked += 1;
            if *acked >= *window {
                *window += 1;
                *acked = 0;
            }
        }
    }

    /// The spacing the quota asks for right now, if little is left: what is left (but a unit
    /// kept to check an inferred end), spread evenly over the time to the reset, the last of it
    /// one spacing before the reset (at `(reset - now) / remaining`, the last would go at the
    /// reset, count in the next window, and leave one of this window's unused: a tenth of a
    /// small fixed window's quota).
    pub(crate) fn spread(&self, now: Instant) -> Option<Duration> {
        match self.state {
            State::Known {
                remaining,
                limit,
                reset_at,
            } if now < reset_at => {
                let remaining = remaining.saturating_sub(self.window_start.kept(limit));
                if remaining == 0 || !is_low(remaining, limit) {
                    return None;
                }
                let parts = u32::try_from(remaining.saturating_add(1)).unwrap_or(u32::MAX);
                Some((reset_at - now) / parts)
            }
            _ => None,
        }
    }

    /// The server's quota as we count it, while one is known (snapshots show it as it is).
    pub(crate) fn remaining(&self, now: Instant) -> Option<ServerQuota> {
        match self.state {
            State::Known {
                remaining,
                reset_at,
                ..
            } if now < reset_at => Some(ServerQuota {
                remaining,
                resets_in: reset_at - now,
            }),
            _ => None,
        }
    }

    /// True when forgetting this changes nothing.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        match self.state {
            State::Known { reset_at, .. } => now >= reset_at,
            State::FirstContact { out, .. } => out == 0,
            State::Renewed { since, .. } => now >= since + SCOUT_HOLD,
            State::Unmetered => true,
        }
    }
}

fn first_contact(now: Instant) -> State {
    State::FirstContact {
        window: 1,
        out: 0,
        acked: 0,
        since: now,
        lasted_ms: 0,
    }
}

/// First contact heard from or sent to the server at `now`: move `since` there, and what
/// `lasted_ms` counts with it.
fn touch(since: &mut Instant, lasted_ms: &mut u32, now: Instant) {
    let step = now.saturating_duration_since(*since).as_millis();
    *lasted_ms = lasted_ms.saturating_add(u32::try_from(step).unwrap_or(u32::MAX));
    *since = now;
}

fn is_low(remaining: u64, limit: Option<u64>) -> bool {
    match limit {
        Some(limit) => remaining.saturating_mul(LOW_SHARE) <= limit,
        None => remaining <= LOW_UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn hint(remaining: u64, reset_in: Duration) -> ServerHint {
        ServerHint {
            remaining: Some(remaining),
            reset_in: Some(reset_in),
            limit: Some(100),
            ..ServerHint::default()
        }
    }

    #[test]
    fn first_contact_sends_one_scout_and_holds_the_rest() {
        let t0 = Instant::now();
        let mut q = QuotaTracker::new(t0, false, true);
        assert_eq!(q.gate(t0), Gate::Go { scout: true });
        q.on_send(t0, 1, true);
        assert_eq!(q.gate(t0), Gate::Hold(t0 + SCOUT_HOLD), "others wait");
        q.observe(t0, Some(t0), true, 200, &hint(50, 10 * S), false);
        assert_eq!(q.gate(t0), Gate::Go { scout: false }, "the quota is known");
    }

    #[test]
    fn a_scope_without_quota_headers_is_learned_in_slow_start_then_not_gated() {
        let t0 = Instant::now();
        let mut q = QuotaTracker::new(t0, false, true);
        let (mut round_trips, mut sent, mut now) = (0, 0, t0);
        // round trips of 0.1 s
        while q.gate(now) != (Gate::Go { scout: false }) {
            let mut out = 0;
            while q.gate(now) == (Gate::Go { scout: true }) {
                q.on_send(now, 1, true);
                out += 1;
            }
            now += S / 10;
            for _ in 0..out {
                q.observe(now, Some(now), true, 200, &ServerHint::default(), true);
            }
            sent += out;
            round_trips += 1;
            assert!(round_trips < 100, "first contact must end");
        }
        // windows 1, then 2 until a second has passed (9 round trips), then 4 (doubling), 5,
        // 6, ..., 31: the first answer of that window ends it
        assert_eq!(round_trips, 38);
        assert_eq!(sent, 1 + 2 * 9 + (4..=31).sum::<u32>());
        assert!(q.is_idle(now));
    }

    #[test]
    fn a_refusal_before_anything_was_accepted_restarts_with_one_scout() {
        let t0 = Instant::now();
        let mut q = QuotaTracker::new(t0, false, true);
        q.on_send(t0, 1, true);
        q.observe(t0, Some(t0), true, 429, &ServerHint::default(), false);
        assert_eq!(q.gate(t0), Gate::Go { scout: true });
        q.on_send(t0, 1, true);
        assert!(matches!(q.gate(t0), Gate::Hold(_)), "window 1");
    }

    #[test]
    fn a_slow_scout_stops_holding_the_others() {
        let t0 = Instant::now();
        let mut q = QuotaTracker::new(t0, false, true);
        q.on_send(t0, 1, true);
        assert_eq!(q.gate(t0 + SCOUT_HOLD), Gate::Go { scout: false });
    }

    #[test]
    fn our_own_count_reaching_zero_closes_until_the_reset_then_scouts_again() {
        let t0 = Instant::now();
        let mut q = QuotaTracker::new(t0, false, true);
        assert_eq!(
            q.observe(t0, Some(t0), false, 200, &hint(2, 10 * S), true),
            None
        );
        assert_eq!(q.on_send(t0, 1, false), None);
        let reset = t0 + 10 * S + RESET_MARGIN;
        assert_eq!(q.on_send(t0, 1, false), Some(reset), "spent: closed");
        assert_eq!(q.gate(reset), Gate::Go { scout: true }, "a new window");
    }

    #[test]
    fn a_low_remaining_is_spread_over_the_time_to_reset() {
        let t0 = Instant::now();
        let mut q = QuotaTracker::new(t0, false, true);
        q.observe(t0, Some(t0), false, 200, &hint(50, 10 * S), true);
        assert_eq!(q.spread(t0), None, "half the quota left is not low");
        q.observe(t0, Some(t0), false, 200, &hint(5, 10 * S), true);
        assert_eq!(
            q.spread(t0),
            Some((10 * S + RESET_MARGIN) / 6),
            "the last of the 5 one spacing before the reset, not at it (in the next window)"
        );
    }

    #[test]
    fn a_configured_limit_is_trusted_over_successful_answers_but_not_over_refusals() {
        let t0 = Instant::now();
        let mut q = QuotaTracker::new(t0, true, true);
        assert_eq!(q.gate(t0), Gate::Go { scout: true }, "one scout first");
        assert_eq!(q.on_send(t0, 1, true), None);
        assert_eq!(
            q.gate(t0),
            Gate::Hold(t0 + SCOUT_HOLD),
            "the others wait for its answer"
        );
        assert_eq!(
            q.observe(t0, Some(t0), true, 200, &hint(0, 2 * S), true),
            None
        );
        assert_eq!(
            q.gate(t0),
            Gate::Go { scout: false },
            "first contact ends at the first answer"
        );
        let mut failed = QuotaTracker::new(t0, true, true);
        assert_eq!(failed.gate(t0), Gate::Go { scout: true });
        assert_eq!(failed.on_send(t0, 1, true), None);
        failed.release_scout();
        assert_eq!(
            failed.gate(t0),
            Gate::Go { scout: false },
            "a scout that failed ends first contact: no request-at-a-time for a failing host"
        );
        assert_eq!(q.spread(t0), None);
        let reset = t0 + 2 * S + RESET_MARGIN;
        assert_eq!(
            q.observe(t0, Some(t0), false, 429, &hint(0, 2 * S), true),
            Some(reset),
            "a refusal saying 0 left closes the scope"
        );
        assert_eq!(q.gate(reset), Gate::Go { scout: false }, "no gate after");
    }

    #[test]
    fn a_fixed_window_starts_again_at_its_quota() {
        let t0 = Instant::now();
        let mut q = QuotaTracker::new(t0, false, false);
        q.renew(t0, 4, S);
        assert!(q.is_unmetered(), "nothing known: nothing to renew");
        q.observe(t0, Some(t0), false, 200, &hint(1, S), true);
        let reset = t0 + S + RESET_MARGIN;
        assert_eq!(q.on_send(t0, 1, false), Some(reset), "spent: closed");
        q.renew(reset - RESET_MARGIN, 4, S);
        let left = |q: &QuotaTracker, at| q.remaining(at).map(|q| (q.remaining, q.resets_in));
        assert_eq!(left(&q, t0), Some((0, S + RESET_MARGIN)), "not yet");
        q.renew(reset + 3 * S / 2, 4, S);
        assert_eq!(
            left(&q, reset + 3 * S / 2),
            Some((4, S / 2)),
            "the quota again, until the next reset of the fixed windows"
        );
    }

    /// A quota of 10 with `remaining` left, its reset `reset_in` away in whole epoch seconds.
    fn whole(remaining: u64, reset_in: Duration) -> ServerHint {
        ServerHint {
            limit: Some(10),
            reset_whole_seconds: true,
            ..hint(remaining, reset_in)
        }
    }

    const MS: Duration = Duration::from_millis(1);

    /// Fixed windows of 10 per 2 s from each window's first request, the reset announced as
    /// the whole second after the end (0.9 s late): each window closes at the end its first
    /// answer says, its scout starts the next, and the next is inferred again.
    #[tokio::test(start_paused = true)]
    async fn a_window_closes_where_its_first_answer_says_and_the_next_scout_starts_the_next() {
        let sent = Instant::now();
        let now = sent + 2 * MS;
        let mut q = QuotaTracker::new(sent, false, true);
        q.on_send(sent, 1, true);
        let first = whole(9, 2 * S + 898 * MS);
        assert_eq!(q.observe(now, Some(sent), true, 200, &first, false), None);
        let ends = now + 2 * S + RESET_MARGIN;
        for _ in 0..8 {
            assert_eq!(q.on_send(now, 1, false), None);
        }
        assert_eq!(
            q.on_send(now, 1, false),
            Some(ends),
            "spent: closed until 2 s after the first answer, not the announced second"
        );
        assert_eq!(q.gate(ends), Gate::Go { scout: true }, "a scout at the end");
        q.on_send(ends, 1, true);
        assert!(matches!(q.gate(ends), Gate::Hold(_)), "one scout");
        let old = whole(0, 848 * MS);
        assert_eq!(
            q.observe(ends + MS, Some(now), false, 200, &old, true),
            None,
            "an answer to a request sent before the end is the old window's: no pause"
        );
        let next = whole(9, 2 * S + 500 * MS);
        q.observe(ends + 2 * MS, Some(ends), true, 200, &next, true);
        let left = q
            .remaining(ends + 2 * MS)
            .map(|q| (q.remaining, q.resets_in));
        assert_eq!(
            left,
            Some((9, 2 * S + RESET_MARGIN)),
            "the scout's answer starts the next window, whose end is inferred too"
        );
    }

    /// Windows aligned to the clock, whose whole-second reset is exact: the scout sent at the
    /// inferred end is refused, and resets are taken as announced from then on.
    #[tokio::test(start_paused = true)]
    async fn a_scout_refused_past_an_inferred_end_ends_the_inference_for_good() {
        let sent = Instant::now();
        let now = sent + 2 * MS;
        let mut q = QuotaTracker::new(sent, false, true);
        q.on_send(sent, 1, true);
        let announced = now + 2 * S + 898 * MS;
        q.observe(
            now,
            Some(sent),
            true,
            200,
            &whole(9, announced - now),
            false,
        );
        let ends = now + 2 * S + RESET_MARGIN;
        for _ in 0..9 {
            q.on_send(now, 1, false);
        }
        assert_eq!(q.gate(ends), Gate::Go { scout: true });
        q.on_send(ends, 1, true);
        let at = ends + MS;
        let refusal = whole(0, announced - at);
        assert_eq!(
            q.observe(at, Some(ends), true, 429, &refusal, true),
            Some(announced + RESET_MARGIN),
            "refused by the old window: closed until its announced reset"
        );
        let later = announced + RESET_MARGIN;
        assert_eq!(q.gate(later), Gate::Go { scout: true });
        q.on_send(later, 1, true);
        q.observe(
            later + MS,
            Some(later),
            true,
            200,
            &whole(9, 1500 * MS),
            true,
        );
        let left = q.remaining(later + MS).map(|q| q.resets_in);
        assert_eq!(
            left,
            Some(1500 * MS + RESET_MARGIN),
            "the next window ends at its announced reset"
        );
    }

    #[test]
    fn absurd_resets_saturate() {
        let t0 = Instant::now();
        let mut q = QuotaTracker::new(t0, false, true);
        let closes = q.observe(t0, Some(t0), false, 429, &hint(0, Duration::MAX), true);
        assert!(closes.is_some_and(|until| until > t0));
    }
}
