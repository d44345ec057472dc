//! How fast a batch goes: `--rate` as one pacer for every sender, and the slowing down
//! when the server says it is throttling.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use envoi::deliver::{Batch, BatchSent, Failure, Notice, Observer, Report};
use envoi::error::{ErrorKind, Result};

use crate::cli::render::Notices;

/// Sends one record. A server that throttles (a 4xx whose words say so: "rate limit",
/// "too many messages", "slow down"…) slows the batch down: the spacing between messages
/// doubles (from 1 s, at most 60 s) for the rest of the batch, across every sender, and
/// a record it deferred is sent again after that wait, up to [`THROTTLE_ROUNDS`] times,
/// instead of failing; `again` is called before each such send (a campaign renews its
/// claim's lease there), and `false` from it ends the re-sends (the claim was lost).
pub(super) fn send_slowing(
    batch: &mut Batch,
    prepared: &envoi::message::Prepared,
    pacer: &Mutex<Pacer>,
    again: &mut dyn FnMut() -> bool,
) -> std::result::Result<BatchSent, Failure> {
    let mut round = 0;
    loop {
        let mut watch = Watch { throttled: false };
        let sent = batch.send(prepared, &mut watch);
        let deferred_by_throttle = match &sent {
            Err(failure) => failure.report.delivered.is_empty() && throttling(&failure.error),
            Ok(_) => false,
        };
        if watch.throttled || deferred_by_throttle {
            let interval = {
                let mut pacer = lock(pacer);
                pacer.slow_down();
                pacer.interval
            };
            eprintln!(
                "envoi: the server is throttling: now at most one message every {:.0} s",
                interval.as_secs_f64()
            );
        }
        if !deferred_by_throttle || round >= THROTTLE_ROUNDS {
            return sent;
        }
        round += 1;
        pace(pacer);
        if !again() {
            return sent;
        }
    }
}

/// How many times a record the server deferred for throttling is sent again.
const THROTTLE_ROUNDS: u32 = 3;

/// The spacing after the first throttling reply (without --rate)…
const THROTTLE_FIRST: Duration = Duration::from_secs(1);

/// …and the most it grows to.
const THROTTLE_MAX: Duration = Duration::from_secs(60);

/// Whether a temporary failure is the server asking to slow down.
fn throttling(error: &envoi::Error) -> bool {
    const WORDS: [&str; 9] = [
        "rate limit",
        "rate-limit",
        "ratelimit",
        "throttl",
        "slow down",
        "too many messages",
        "too many connections",
        "too many mails",
        "limit exceeded",
    ];
    let text = error.message().to_ascii_lowercase();
    error.kind() == ErrorKind::Temporary && WORDS.iter().any(|w| text.contains(w))
}

/// The user's notices, and whether a retry was for throttling.
struct Watch {
    throttled: bool,
}

impl Observer for Watch {
    fn accepted(&mut self, report: &Report) -> Result<()> {
        Notices.accepted(report)
    }

    fn notice(&mut self, notice: Notice) {
        if let Notice::Retrying { reason, .. } = &notice
            && throttling(reason)
        {
            self.throttled = true;
        }
        Notices.notice(notice);
    }
}

/// `--rate`: each message starts at least `interval` after the one before, whichever
/// sender sends it (a token bucket of one token, so an idle spell does not allow a burst
/// after it). Without `--rate` the interval is zero until the server throttles.
pub(super) struct Pacer {
    interval: Duration,
    next: Instant,
}

impl Pacer {
    /// The first message may start at once.
    pub(super) fn new(interval: Duration) -> Pacer {
        Pacer {
            interval,
            next: Instant::now(),
        }
    }

    /// After a throttling reply: the gap doubles (from 1 s, at most 60 s), but never
    /// shrinks below what `--rate` asked for: a slower `--rate 1/h` must not speed up.
    fn slow_down(&mut self) {
        let doubled = (self.interval * 2).clamp(THROTTLE_FIRST, THROTTLE_MAX);
        self.interval = self.interval.max(doubled);
    }

    /// Takes the next start time for the caller and moves the one after it on.
    fn reserve(&mut self) -> Instant {
        let at = self.next.max(Instant::now());
        self.next = at + self.interval;
        at
    }
}

/// Waits for this message's turn; the lock is held only to take the turn, not while
/// waiting, so the other senders take the turns after it meanwhile.
pub(super) fn pace(pacer: &Mutex<Pacer>) {
    let at = lock(pacer).reserve();
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

/// The pacer, also after a sender panicked: it holds two plain values, whole at any time.
fn lock(pacer: &Mutex<Pacer>) -> MutexGuard<'_, Pacer> {
    pacer.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_slows_down_and_never_speeds_up() {
        let mut pacer = Pacer {
            interval: Duration::ZERO,
            next: Instant::now(),
        };
        pacer.slow_down();
        assert_eq!(pacer.interval, THROTTLE_FIRST);
        pacer.slow_down();
        assert_eq!(pacer.interval, THROTTLE_FIRST * 2);
        for _ in 0..10 {
            pacer.slow_down();
        }
        assert_eq!(pacer.interval, THROTTLE_MAX);
        let mut hourly = Pacer {
            interval: Duration::from_secs(3600),
            next: Instant::now(),
        };
        hourly.slow_down();
        assert_eq!(
            hourly.interval,
            Duration::from_secs(3600),
            "--rate 1/h sped up"
        );
    }
}
