//! The observer of a world: every event scanned for credentials, breaker transitions logged.

use std::sync::Arc;

use tokio::time::Instant;

use super::load::current_request;
use super::server::{BreakerMark, SharedLog, lock};
use super::world::World;

/// The observer of a world.
pub struct SimObserver {
    pub world: Arc<World>,
    pub log: SharedLog,
}

impl SimObserver {
    fn scan(&self, place: &str, text: String) {
        lock(&self.log).scan(place, &text);
    }
}

impl reqwest_polite::Observer for SimObserver {
    fn on_wait(&self, event: &reqwest_polite::WaitEvent<'_>) {
        self.scan("wait event", format!("{event:?}"));
    }
    fn on_retry(&self, event: &reqwest_polite::RetryEvent<'_>) {
        self.scan("retry event", format!("{event:?}"));
    }
    fn on_refusal(&self, event: &reqwest_polite::RefusalEvent<'_>) {
        self.scan("refusal event", format!("{event:?}"));
    }
    fn on_rejected(&self, event: &reqwest_polite::RejectedEvent<'_>) {
        self.scan("rejected event", format!("{event:?} {}", event.error));
    }
    fn on_request(&self, event: &reqwest_polite::RequestEvent<'_>) {
        self.scan("request event", format!("{event:?}"));
    }
    fn on_breaker(&self, event: &reqwest_polite::BreakerEvent<'_>) {
        let text = format!("{event:?}");
        let id = current_request();
        let who = id
            .and_then(|id| self.world.requests.get(id as usize))
            .and_then(|r| r.credential)
            .filter(|_| self.world.config.partitioned);
        let partition = who.map(|i| self.world.credentials[i].clone());
        let mut log = lock(&self.log);
        log.scan("breaker event", &text);
        let seq = log.next_seq();
        let phase = event.phase;
        log.note(|t| {
            format!(
                "{t:9.3} breaker {} {phase:?} (by #{id:?}, credential {who:?})",
                event.host
            )
        });
        log.breaker.push(BreakerMark {
            seq,
            at: Instant::now(),
            open_for: event.open_for,
            host: event.host.to_string(),
            partition,
            phase,
        });
    }
}
