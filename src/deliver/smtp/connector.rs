//! Opening sessions: one set of settings, any number of sessions.

use std::time::Instant;

use crate::deliver::deadline::earliest;
use crate::deliver::retry::Connector;
use crate::error::Result;
use crate::profile::Password;

use super::session::SmtpSession;
use super::settings::{SmtpSettings, tls_config};

/// Opens SMTP sessions with one set of settings, each within what is left of the
/// deadline. The TLS configuration (system roots read once) is shared by its sessions.
#[derive(Clone)]
pub(crate) struct SmtpConnector {
    settings: SmtpSettings,
}

impl SmtpConnector {
    pub(crate) fn new(settings: SmtpSettings) -> SmtpConnector {
        SmtpConnector { settings }
    }

    /// What its sessions are opened with.
    pub(crate) fn settings(&self) -> &SmtpSettings {
        &self.settings
    }

    /// Sessions opened from now on log in as `user` with `secret` (a renewed token).
    pub(crate) fn log_in_as(&mut self, user: String, secret: Password) {
        self.settings.credentials = Some((user, secret));
    }
}

impl Connector for SmtpConnector {
    type Session = SmtpSession;

    fn open(&mut self, deadline: Option<Instant>) -> Result<SmtpSession> {
        let settings = SmtpSettings {
            deadline: earliest(self.settings.deadline, deadline),
            ..self.settings.clone()
        };
        SmtpSession::open(&settings, tls_config(&settings)?)
    }
}
