//! A native OAuth2 access token lives about an hour; a batch at Microsoft 365's 30
//! messages a minute, or a send whose retries wait long, outlives it. So the token is
//! taken again before each SMTP session (from the cache while it has more than a minute
//! left, so this costs a file read), never only once at the start.

use std::time::Instant;

use crate::deliver::deadline::{cut_to_deadline, earliest};
use crate::deliver::oauth2::{self, TokenOrigin};
use crate::deliver::retry::Connector;
use crate::deliver::smtp::{SmtpConnector, SmtpSession};
use crate::error::{ErrorKind, Result};
use crate::profile::OAuth2;

/// An SMTP connector whose sessions log in with a current token.
#[derive(Clone)]
pub(crate) struct Renewing {
    connector: SmtpConnector,
    /// `None` when the login is not a native OAuth2 token (a password, a token from
    /// a command or the environment, or no login): sessions use what was fetched.
    token: Option<TokenSource>,
}

/// Whose token it is, and where the one in use came from. Where to ask, how long to
/// wait and where `-v` goes are the connector's own settings.
#[derive(Clone)]
struct TokenSource {
    user: String,
    oauth: OAuth2,
    /// Where the token in the connector came from.
    origin: TokenOrigin,
    /// The token in the connector was fetched for the first session and not used yet.
    unused: bool,
}

impl Renewing {
    /// `connector` with the login already fetched; `token` (user, table, where that
    /// token came from) when the login is a native OAuth2 token to take again before
    /// every later session.
    pub(crate) fn new(
        connector: SmtpConnector,
        token: Option<(&str, &OAuth2, TokenOrigin)>,
    ) -> Renewing {
        let token = token.map(|(user, oauth, origin)| TokenSource {
            user: user.to_owned(),
            oauth: oauth.clone(),
            origin,
            unused: true,
        });
        Renewing { connector, token }
    }
}

impl TokenSource {
    /// The current token, into `connector`'s login, fetched before `deadline`.
    fn take(&mut self, connector: &mut SmtpConnector, deadline: Option<Instant>) -> Result<()> {
        let settings = connector.settings();
        let (token, origin) = oauth2::access_token(
            &self.user,
            &self.oauth,
            settings.ca_file.as_deref(),
            cut_to_deadline(settings.timeout, earliest(settings.deadline, deadline)),
            settings.transcript,
        )?;
        connector.log_in_as(self.user.clone(), token);
        self.origin = origin;
        Ok(())
    }
}

impl Connector for Renewing {
    type Session = SmtpSession;

    /// Opens a session with a current token. A cached token the server refuses (revoked
    /// before it expired) is forgotten and a new one fetched for one more try: otherwise
    /// every run would be refused until the cached one expired.
    fn open(&mut self, deadline: Option<Instant>) -> Result<SmtpSession> {
        let Some(token) = &mut self.token else {
            return self.connector.open(deadline);
        };
        if !std::mem::replace(&mut token.unused, false) {
            token.take(&mut self.connector, deadline)?;
        }
        match self.connector.open(deadline) {
            Err(e) if e.kind() == ErrorKind::AuthRefused && token.origin == TokenOrigin::Cache => {
                let settings = self.connector.settings();
                if let Some(transcript) = settings.transcript {
                    transcript(
                        "*",
                        "the server refused the cached OAuth2 token; fetching a new one",
                    );
                }
                oauth2::forget_access_token(&token.user, &token.oauth, settings.timeout);
                token.take(&mut self.connector, deadline)?;
                self.connector.open(deadline)
            }
            other => other,
        }
    }
}
