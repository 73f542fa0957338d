//! Where a server's fixed window started, and so where it ends, inferred from the window's
//! first answer.
//!
//! Many servers count in fixed windows that start at a client's first request (GitHub's
//! primary limit, express-rate-limit) and announce the reset as a timestamp in whole seconds,
//! rounded up: every answer of a window names the same second, up to a second after the window
//! really ends. A client that waits for that second starts each window up to a second late,
//! and after a first window that starts just past a whole second, every later one does (a
//! third of a 2 s window's throughput).
//!
//! The first answer of a window (`remaining = limit − 1`) says more. The window began between
//! the request's send and its answer, so it lasts at most from the send to the announced reset;
//! a window of whole seconds (what servers count in) lasts the whole seconds of that, and ends
//! no later than that long after the answer: on time, but for the way back of one round trip.
//! A reset announced as a delay is already that close, so only a timestamp gains.
//!
//! The inference assumes windows that start at the first request and last whole seconds. A
//! server whose windows are aligned to the clock, last a fraction of a second, or slide, may
//! still count the old window at the inferred end. The scope then sends one scout (first
//! contact, see [`quota`](super::quota)), and its answer checks the inference: unless it is the
//! first answer of a new window, the scope takes resets as announced from then on.
//!
//! Until an inference has been confirmed once, a window of at least [`CHECK_WITHIN`] keeps its
//! last unit for that scout. A window aligned to the clock then still has the unit when the
//! scout comes early, and answers it instead of refusing it; a window that did end loses that
//! unit (a twentieth of it at most), until a check confirms an inference. A smaller window
//! would lose more of itself than the one refusal the check may cost, and spends all of it.
//!
//! A server may also round its reset *down*: a refusal then says nothing is left and the reset
//! has passed. The window ends within the second after that reset, so the scope waits out that
//! second instead of asking again and again, and ends later windows one second past where a
//! rounded-up reset would put them (still on time: the whole seconds to a rounded-down reset
//! are one short of the window).

use std::time::Duration;

use tokio::time::Instant;

use crate::signals::ServerHint;
use crate::time::far_add;

/// The resolution of the resets this module reads.
const WHOLE_SECOND: Duration = Duration::from_secs(1);

/// The smallest window that keeps its last unit for the scout checking an inferred end, until
/// one has been confirmed.
const CHECK_WITHIN: u64 = 20;

/// What one scope's answers say about where its fixed windows end. Three bytes: they sit in
/// the padding of the quota tracker, so a host record does not grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WindowStart {
    rounding: Rounding,
    phase: Phase,
    /// A next window's first answer has confirmed an inferred end.
    confirmed: bool,
}

/// How the server rounds its whole-second resets, as far as its answers show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Rounding {
    /// Up, until an answer shows otherwise: a window ends the whole seconds from its first
    /// request's send to its reset after its first answer.
    #[default]
    Up,
    /// A refusal said its reset had passed: a window ends one second later than rounded up.
    Down,
    /// A scout sent past a rounded-up end was answered by the old window: resets are taken as
    /// announced (a refusal saying its reset passed still shows them rounded down).
    Announced,
    /// A scout sent past a rounded-down end was answered by the old window too: resets are
    /// taken as announced, for good.
    Never,
}

/// Where the current window's end came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    /// Its announced reset.
    #[default]
    Announced,
    /// Its first answer.
    Inferred,
    /// An inferred end has passed: the next scout's answer checks it.
    Checking,
}

impl WindowStart {
    /// The end of the window an answer is about, when the answer is the window's first (sent
    /// at `sent_at`, answered at `now`) and names its reset in whole seconds: the whole seconds
    /// from the send to that reset (one more if the server rounds down), counted from `now`.
    /// `None`: the reset as announced.
    pub(crate) fn infer_end(
        &mut self,
        now: Instant,
        sent_at: Instant,
        hint: &ServerHint,
    ) -> Option<Instant> {
        let extra = match self.rounding {
            Rounding::Up => Duration::ZERO,
            Rounding::Down => WHOLE_SECOND,
            Rounding::Announced | Rounding::Never => return None,
        };
        let reset_in = hint
            .reset_in
            .filter(|_| hint.reset_whole_seconds && is_first(hint))?;
        let round_trip = now.saturating_duration_since(sent_at);
        let whole = Duration::from_secs(reset_in.saturating_add(round_trip).as_secs());
        let length = whole.saturating_add(extra);
        if length.is_zero() || (self.rounding == Rounding::Up && length >= reset_in) {
            return None;
        }
        self.phase = Phase::Inferred;
        Some(far_add(now, length))
    }

    /// The end of the window a refusal is about, when it says nothing is left and its
    /// whole-second reset has passed: the server rounds its resets down, and the window ends
    /// within the second from `now`.
    pub(crate) fn late_end(
        &mut self,
        now: Instant,
        hint: &ServerHint,
        refused: bool,
    ) -> Option<Instant> {
        let passed = refused
            && hint.remaining == Some(0)
            && hint.reset_whole_seconds
            && hint.reset_in == Some(Duration::ZERO);
        if !passed {
            return None;
        }
        if matches!(self.rounding, Rounding::Up | Rounding::Announced) {
            self.rounding = Rounding::Down;
        }
        self.phase = Phase::Announced;
        Some(far_add(now, WHOLE_SECOND))
    }

    /// The window ended at its announced reset, or a new one began with an answer that
    /// inferred nothing.
    pub(crate) fn announced(&mut self) {
        self.phase = Phase::Announced;
    }

    /// The current window's end has passed: an inferred one is checked by what comes next.
    pub(crate) fn passed(&mut self) {
        if self.phase == Phase::Inferred {
            self.phase = Phase::Checking;
        }
    }

    /// First contact ended without a scout's answer: nothing is left to check.
    pub(crate) fn unchecked(&mut self) {
        if self.phase == Phase::Checking {
            self.phase = Phase::Announced;
        }
    }

    /// The units a window of `limit` keeps for the scout that checks its inferred end: the
    /// last one, until an inference has been confirmed, when the window is large enough.
    pub(crate) fn kept(&self, limit: Option<u64>) -> u64 {
        let keeps = self.phase == Phase::Inferred
            && !self.confirmed
            && limit.is_some_and(|limit| limit >= CHECK_WITHIN);
        u64::from(keeps)
    }

    /// Read an answer while an inferred end is being checked. Returns true when the answer is
    /// stale: to a request sent before the end (not a `scout`) and about the old window, so its
    /// count says nothing about the window now. The next window's first answer confirms the
    /// inference; a scout's answer that is not one refutes it.
    pub(crate) fn check(&mut self, scout: bool, hint: &ServerHint, refused: bool) -> bool {
        if self.phase != Phase::Checking {
            return false;
        }
        if is_first(hint) && !refused {
            self.phase = Phase::Announced;
            self.confirmed = true;
            false
        } else if scout {
            self.phase = Phase::Announced;
            self.rounding = match self.rounding {
                Rounding::Up => Rounding::Announced,
                _ => Rounding::Never,
            };
            false
        } else {
            true
        }
    }
}

/// The first answer of a window: all but one of the quota left.
fn is_first(hint: &ServerHint) -> bool {
    hint.limit
        .zip(hint.remaining)
        .is_some_and(|(limit, remaining)| remaining.checked_add(1) == Some(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// An answer of a quota of 10 whose reset is `reset_in` away, in whole seconds or not.
    fn answer(remaining: u64, reset_in: Duration, whole: bool) -> ServerHint {
        ServerHint {
            remaining: Some(remaining),
            limit: Some(10),
            reset_in: Some(reset_in),
            reset_whole_seconds: whole,
            ..ServerHint::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_answer_with_a_rounded_up_timestamp_ends_its_window_on_time() {
        // a 2 s window began at 0.1 s past a whole second: the server announces the second
        // after its end, 2.9 s after the send
        let sent = Instant::now();
        let now = sent + 2 * MS;
        let mut window = WindowStart::default();
        let first = answer(9, 2 * S + 898 * MS, true);
        assert_eq!(
            window.infer_end(now, sent, &first),
            Some(now + 2 * S),
            "the window ends 2 s after its first answer, not at the announced second"
        );
        assert_eq!(window.phase, Phase::Inferred);
        let later = answer(5, 2 * S + 800 * MS, true);
        assert_eq!(
            window.infer_end(now + 100 * MS, sent, &later),
            None,
            "only the first answer of a window says when it began"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_first_answer_in_whole_seconds_sooner_than_its_reset_is_read() {
        let sent = Instant::now();
        let now = sent + 2 * MS;
        let mut window = WindowStart::default();
        let exact = answer(9, 2 * S + 900 * MS, false);
        assert_eq!(
            window.infer_end(now, sent, &exact),
            None,
            "a reset with a fraction is exact"
        );
        let delay = answer(9, 2 * S, true);
        assert_eq!(
            window.infer_end(now, sent, &delay),
            None,
            "a first answer's whole-second delay is the window already"
        );
        let short = answer(9, 900 * MS, true);
        assert_eq!(
            window.infer_end(now, sent, &short),
            None,
            "no whole second to count"
        );
        let mut unknown = answer(9, 2 * S + 900 * MS, true);
        unknown.limit = None;
        assert_eq!(
            window.infer_end(now, sent, &unknown),
            None,
            "first of what?"
        );
        assert_eq!(window, WindowStart::default());
    }

    #[tokio::test(start_paused = true)]
    async fn answers_past_an_inferred_end_confirm_it_or_end_the_inference_for_good() {
        let sent = Instant::now();
        let now = sent + 2 * MS;
        let first = answer(9, 2 * S + 900 * MS, true);
        let mut window = WindowStart::default();
        assert!(window.infer_end(now, sent, &first).is_some());
        let old = answer(0, 900 * MS, true);
        assert!(
            !window.check(false, &old, false),
            "not checked before the end"
        );
        window.passed();
        assert!(
            window.check(false, &old, false),
            "a request sent before the end, answered after it: the old window's count"
        );
        let next = answer(9, 2 * S + 950 * MS, true);
        let mut confirmed = window;
        assert!(!confirmed.check(true, &next, false));
        assert_eq!(
            confirmed.infer_end(now + 2 * S, now + 2 * S - 2 * MS, &next),
            Some(now + 4 * S),
            "confirmed by the next window's first answer: inferred again"
        );
        for (hint, refused) in [(old.clone(), true), (answer(3, 895 * MS, true), false)] {
            let mut refuted = window;
            assert!(!refuted.check(true, &hint, refused));
            assert_eq!(
                refuted.infer_end(now, sent, &first),
                None,
                "refuted by a scout's {hint:?}: resets are taken as announced"
            );
            assert_eq!(refuted.rounding, Rounding::Announced);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_window_keeps_its_last_unit_until_an_inference_is_confirmed() {
        let sent = Instant::now();
        let now = sent + 2 * MS;
        let first = answer(9, 2 * S + 900 * MS, true);
        let mut window = WindowStart::default();
        assert_eq!(window.kept(Some(20)), 0, "nothing inferred yet");
        assert!(window.infer_end(now, sent, &first).is_some());
        assert_eq!(window.kept(Some(20)), 1, "the scout's unit");
        assert_eq!(
            window.kept(Some(10)),
            0,
            "a small window spends all of itself"
        );
        assert_eq!(window.kept(None), 0);
        window.passed();
        assert_eq!(
            window.kept(Some(20)),
            0,
            "the end passed: the scout takes it"
        );
        assert!(!window.check(true, &answer(9, 2 * S + 950 * MS, true), false));
        assert!(window.infer_end(now, sent, &first).is_some());
        assert_eq!(
            window.kept(Some(20)),
            0,
            "confirmed: nothing kept from then on"
        );
    }

    /// A server that rounds its reset down: a refusal says its reset has passed.
    #[tokio::test(start_paused = true)]
    async fn a_refusal_whose_reset_has_passed_waits_out_the_second_and_rounds_down_from_then_on() {
        let now = Instant::now();
        let mut window = WindowStart::default();
        let passed = answer(0, Duration::ZERO, true);
        assert_eq!(window.late_end(now, &passed, false), None, "not a refusal");
        assert_eq!(
            window.late_end(now, &answer(0, 300 * MS, true), true),
            None,
            "a reset still ahead"
        );
        assert_eq!(
            window.late_end(now, &passed, true),
            Some(now + S),
            "the window ends within the second after a rounded-down reset"
        );
        // a 2 s window began 0.1 s past a whole second: the server announces the second
        // before its end, 1.9 s after the send
        let sent = now + 5 * S;
        let first = answer(9, S + 898 * MS, true);
        assert_eq!(
            window.infer_end(sent + 2 * MS, sent, &first),
            Some(sent + 2 * MS + 2 * S),
            "rounded down: a second past the whole seconds to the reset"
        );
        window.passed();
        assert!(!window.check(true, &answer(0, S, true), true));
        assert_eq!(window.rounding, Rounding::Never, "refuted twice: for good");
        assert_eq!(
            window.late_end(now, &passed, true),
            Some(now + S),
            "a reset that passed still means the window ends within a second"
        );
        assert_eq!(window.rounding, Rounding::Never);
        assert_eq!(window.infer_end(sent + 2 * MS, sent, &first), None);
    }
}
