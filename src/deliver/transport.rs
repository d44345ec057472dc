//! The transport seam: where a prepared message goes once it is built and signed. The
//! SMTP client and the file transport sit behind [`Transport`]; a new one (an HTTP mail
//! API, say) is one more implementation and one arm in `deliver::open`, and every command
//! (`send`, `sendmail`, `batch`, `outbox flush`) reaches it through the same calls.

use crate::deliver::observe::Observer;
use crate::deliver::outcome::{BatchSent, Failure};
use crate::deliver::retry::Policy;
use crate::deliver::{renew, retry};
use crate::error::Result;
use crate::message::Prepared;

/// Takes prepared messages, one at a time.
pub(crate) trait Transport: Send {
    /// Sends (or writes) one message under `policy`. The caller keeps the message: to
    /// queue it, or to send it again.
    fn send(
        &mut self,
        prepared: &Prepared,
        policy: &Policy,
        observer: &mut dyn Observer,
    ) -> Result<BatchSent, Failure>;

    /// Another transport with the same settings and credentials (no password command
    /// runs again) and connections of its own, for sending in parallel.
    fn sibling(&self) -> Box<dyn Transport>;

    /// Sessions opened so far; 0 for a transport without sessions.
    fn sessions_opened(&self) -> u32 {
        0
    }

    /// Whether the last try to reach the server failed before any message went (SMTP:
    /// no session could be opened); false for a transport that cannot tell.
    fn unreachable(&self) -> bool {
        false
    }

    /// Ends what is still open (SMTP: QUIT).
    fn finish(&mut self) {}
}

/// How an SMTP transport uses its sessions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sessions {
    /// A new session for each attempt, closed after it (`send`, `outbox flush`).
    Fresh,
    /// Sessions kept open across messages, at most this many messages each (`batch`).
    Reused(u32),
}

/// envoi's SMTP client, with retries, as a transport.
// Boxed whole by `deliver::open`, so the variants' sizes cost nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Smtp {
    /// A new session for each attempt, closed after it (`send`, `outbox flush`).
    Fresh(renew::Renewing),
    /// Sessions kept open across messages (`batch`).
    Reused(retry::Reuse<renew::Renewing>),
}

impl Transport for Smtp {
    fn send(
        &mut self,
        prepared: &Prepared,
        policy: &Policy,
        observer: &mut dyn Observer,
    ) -> Result<BatchSent, Failure> {
        let report = match self {
            Smtp::Fresh(connector) => retry::send(connector, prepared, policy, observer)?,
            Smtp::Reused(sessions) => retry::send_via(sessions, prepared, policy, observer)?,
        };
        Ok(BatchSent::Sent(report))
    }

    fn sibling(&self) -> Box<dyn Transport> {
        Box::new(match self {
            Smtp::Fresh(connector) => Smtp::Fresh(connector.clone()),
            Smtp::Reused(sessions) => Smtp::Reused(sessions.sibling()),
        })
    }

    fn sessions_opened(&self) -> u32 {
        match self {
            Smtp::Fresh(_) => 0,
            Smtp::Reused(sessions) => sessions.opened(),
        }
    }

    fn unreachable(&self) -> bool {
        match self {
            Smtp::Fresh(_) => false,
            Smtp::Reused(sessions) => sessions.unreachable(),
        }
    }

    fn finish(&mut self) {
        if let Smtp::Reused(sessions) = self {
            sessions.close();
        }
    }
}
