//! Whether a message is between its first byte going out and the server's answer to it
//! (SMTP: DATA to the reply to the final dot; an HTTPS API: the request body to the
//! response): a process ended then cannot know whether it was delivered. The command line's watchdog asks
//! [`payload_in_flight`] before it ends a send at the deadline.
//!
//! A leaf of `deliver/`: the SMTP session and the HTTPS transports both count here
//! without importing each other.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How many messages are on their way and unanswered. A count, not a flag, because
/// `envoi batch --concurrency` has several senders at that step at once.
static PAYLOADS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Whether a message is on its way and unanswered: a process stopped now (the command
/// line's watchdog) must report the outcome as unknown.
pub fn payload_in_flight() -> bool {
    PAYLOADS_IN_FLIGHT.load(Ordering::SeqCst) > 0
}

/// One message counted in [`PAYLOADS_IN_FLIGHT`] while it lives, whichever way the step
/// ends.
pub(crate) struct InFlight;

impl InFlight {
    pub(crate) fn start() -> InFlight {
        PAYLOADS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        PAYLOADS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}
