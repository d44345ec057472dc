//! When a copy of a sent message goes to the sender's Sent folder (`sent_copy`): after the
//! server accepted it, for `send`, `sendmail` (the spine's [`super::submit::dispatch`])
//! and each outbox entry a flush sends ([`super::flush`]); not for `batch` records (a
//! campaign's thousands of copies are rarely wanted; see docs/sent-copy.md). The copy is
//! the exact bytes the server took (DKIM-signed, without Bcc), within the send's
//! deadline; a copy that fails is a warning, never a failed send.

use std::sync::mpsc;
use std::time::Instant;

use crate::deliver::{self, Delivery, Notice, Observer, SentCopied, Transcript};
use crate::error::{Error, ErrorKind};
use crate::profile::{Connection, Profile, Service, Transport};

/// Why `profile`'s provider needs no copy from envoi, when it files every message it
/// sends in Sent itself (a second copy would be a duplicate).
pub fn filed_by_provider(profile: &Profile) -> Option<&'static str> {
    match &profile.transport {
        Transport::Api(api) => Some(match api.service {
            Service::Graph => "Microsoft Graph saves what it sends in Sent Items itself",
            Service::Gmail => "the Gmail API files what it sends in Sent itself",
        }),
        Transport::Smtp(smtp) => match smtp.host.to_ascii_lowercase().trim_end_matches('.') {
            "smtp.gmail.com" | "smtp.googlemail.com" => {
                Some("Gmail files what smtp.gmail.com sends in Sent itself")
            }
            "smtp.office365.com" | "smtp-mail.outlook.com" => {
                Some("Microsoft 365 files what smtp.office365.com sends in Sent Items itself")
            }
            _ => None,
        },
        Transport::File { .. } => None,
    }
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
    // The profile of a route that carried it, else the connection's own.
    let profile = report
        .route()
        .and_then(|carrier| connection.hops().find(|(name, _)| *name == carrier))
        .map_or(&connection.profile, |(_, profile)| profile);
    let Some(copy) = &profile.sent_copy else {
        return;
    };
    if let (Some(why), false) = (filed_by_provider(profile), copy.force) {
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
    let (done, result) = mpsc::channel();
    let (profile, copy, bytes) = (profile.clone(), copy.clone(), prepared.bytes.clone());
    std::thread::spawn(move || {
        let filed = deliver::file_copy(&profile, &copy, &bytes, Some(deadline), transcript);
        let _ = done.send(filed);
    });
    let filed = result
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Temporary,
                "the deadline (--timeout, or 120 s for an outbox entry) passed before the copy \
                 was made",
            ))
        });
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
