//! The one way a request ends without being sent: counted, traced, and told to the observer.

use crate::builder::Config;
use crate::error::Error;
use crate::host::Host;
use crate::observe;

/// Refuse to send an attempt (`attempts` were sent before it): count it in the host's
/// `rejected`, trace it, tell the observer, and hand the error back.
pub(super) fn refuse(host: &Host, config: &Config, error: Error, attempts: u32) -> Error {
    host.state().counters.rejected += 1;
    let reason = observe::RejectReason::of(&error);
    tracing::debug!(host = %host.record.key, %reason, attempts, %error, "not sending");
    if let Some(observer) = config.observers.get() {
        observe::rejected(observer, host, &error, attempts);
    }
    error
}
