//! When a copy of a sent message goes to the sender's Sent folder (`sent_copy`): after the
//! server accepted it, for `send`, `sendmail` (the spine's [`super::submit::dispatch`])
//! and each outbox entry a flush sends ([`super::flush`]); not for `batch` records (a
//! campaign's thousands of copies are rarely wanted; see docs/sent-copy.md). The copy is
//! the exact bytes the server took (DKIM-signed, without Bcc), within the send's
//! deadline; a copy that fails is a warning, never a failed send.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::deliver::{self, Delivery, Notice, Observer, SentCopied, Transcript};
use crate::error::{Error, ErrorKind};
use crate::message::Prepared;
use crate::profile::Connection;

/// The time kept after a copy, before the send's deadline.
const AFTER_THE_COPY: Duration = Duration::from_secs(1);

/// Whether a message sent through `connection` gets a copy in Sent (some profile of it
/// asks for one the provider does not make itself), and `prepared` is small enough for
/// one.
pub(crate) fn wanted(connection: &Connection, prepared: &Prepared) -> bool {
    prepared.bytes.len() <= deliver::MAX_COPY
        && connection.hops().any(|(_, profile)| {
            profile
                .sent_copy
                .as_ref()
                .is_some_and(|copy| copy.force || profile.files_sent_itself().is_none())
        })
}

/// After `delivery` went through `connection`: files the copy its carrying profile asks
/// for, before `deadline`, and records what became of it in the delivery's report (which
/// the `--json` result and the delivery log read). A failure is told to `observer`.
pub(crate) fn after_delivery(
    connection: &Connection,
    delivery: &mut Delivery,
    deadline: Instant,
    transcript: Option<Transcript>,
    observer: &mut dyn Observer,
) {
    let Delivery::Sent { prepared, report } = delivery else {
        return;
    };
    // What the command still has to do once the copy ends (the delivery log's line, the
    // result) gets this much before the send's own deadline: a copy that took all of it
    // could leave a sent message to the watchdog, which would call it failed.
    let deadline = deadline.checked_sub(AFTER_THE_COPY).unwrap_or(deadline);
    // The profile of a route that carried it, else the connection's own.
    let profile = report
        .route()
        .and_then(|carrier| connection.hops().find(|(name, _)| *name == carrier))
        .map_or(&connection.profile, |(_, profile)| profile);
    let Some(copy) = &profile.sent_copy else {
        return;
    };
    if let (Some(why), false) = (profile.files_sent_itself(), copy.force) {
        if let Some(transcript) = transcript {
            transcript(
                "*",
                &format!("sent_copy: not made: {why} (sent_copy.force = true makes one anyway)"),
            );
        }
        return;
    }
    // On a thread, waited for until the deadline at most: every read and write of the
    // copy is bounded by it, but looking up the server's name is not, and a copy must
    // never hold a sent message past its deadline (where the watchdog would end it as
    // failed).
    let out_of_time = || {
        Err(Error::new(
            ErrorKind::Temporary,
            "the deadline (--timeout, or 120 s for an outbox entry) passed before the copy \
             was made",
        ))
    };
    let filed = if Instant::now() >= deadline {
        // Nothing started: not even a password command runs for a copy with no time.
        out_of_time()
    } else {
        let (done, result) = mpsc::channel();
        let (profile, copy, bytes) = (profile.clone(), copy.clone(), prepared.bytes.clone());
        std::thread::spawn(move || {
            let filed = deliver::file_copy(&profile, &copy, &bytes, Some(deadline), transcript);
            let _ = done.send(filed);
        });
        match result.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(filed) => filed,
            Err(mpsc::RecvTimeoutError::Timeout) => out_of_time(),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::new(
                ErrorKind::Internal,
                "the copy stopped before it ended (a bug in envoi; please report it)",
            )),
        }
    };
    let copied = match filed {
        Ok(folder) => {
            if let Some(transcript) = transcript {
                transcript("*", &format!("sent_copy: filed in {folder:?}"));
            }
            SentCopied::Filed(folder)
        }
        Err(error) => {
            observer.notice(Notice::SentCopyFailed(error.clone()));
            SentCopied::Failed(error)
        }
    };
    report.extras_mut().sent_copy = Some(copied);
}
