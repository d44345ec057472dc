//! A native OAuth2 access token lives about an hour; a batch at Microsoft 365's 30
//! messages a minute, or a send whose retries wait long, outlives it. So the token is
//! taken again before each SMTP session (from the cache while it has more than a minute
//! left, so this costs a file read), never only once at the start.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::deliver::Transcript;
use crate::deliver::oauth2::{self, TokenOrigin};
use crate::deliver::retry::Connector;
use crate::deliver::smtp::{SmtpConnector, SmtpSession};
use crate::error::{ErrorKind, Result};
use crate::profile::{OAuth2, Password};

/// An SMTP connector whose sessions log in with a current token.
#[derive(Clone)]
pub(crate) struct Renewing {
    connector: SmtpConnector,
    /// `None` when the login is not a native OAuth2 token (a password, a token from
    /// a command or the environment, or no login): sessions use what was fetched.
    token: Option<TokenSource>,
}

/// Where the token comes from, and where the one in use came from.
#[derive(Clone)]
struct TokenSource {
    user: String,
    oauth: OAuth2,
    ca_file: Option<PathBuf>,
    /// For the token endpoint: the profile's timeout, cut to the deadline.
    timeout: Duration,
    deadline: Option<Instant>,
    transcript: Option<Transcript>,
    /// Where the token in the connector came from.
    origin: TokenOrigin,
    /// The token in the connector was fetched for the first session and not used yet.
    unused: bool,
}

/// What [`Renewing::new`] needs to take the token again.
pub(crate) struct Renewal<'a> {
    pub user: &'a str,
    pub oauth: &'a OAuth2,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub deadline: Option<Instant>,
    pub transcript: Option<Transcript>,
    /// Where the token already in `connector` came from.
    pub origin: TokenOrigin,
}

impl Renewing {
    /// `connector` with the login already fetched; `renewal` when that login is a
    /// native OAuth2 token to take again before every later session.
    pub(crate) fn new(connector: SmtpConnector, renewal: Option<Renewal>) -> Renewing {
        let token = renewal.map(|r| TokenSource {
            user: r.user.to_owned(),
            oauth: r.oauth.clone(),
            ca_file: r.ca_file,
            timeout: r.timeout,
            deadline: r.deadline,
            transcript: r.transcript,
            origin: r.origin,
            unused: true,
        });
        Renewing { connector, token }
    }
}

impl TokenSource {
    /// The current token, into `connector`'s login.
    fn take(&mut self, connector: &mut SmtpConnector) -> Result<()> {
        let left = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        let timeout = left.map_or(self.timeout, |left| self.timeout.min(left));
        let (token, origin): (Password, TokenOrigin) = oauth2::access_token(
            &self.user,
            &self.oauth,
            self.ca_file.as_deref(),
            timeout,
            self.transcript,
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
    fn open(&mut self) -> Result<SmtpSession> {
        let Some(token) = &mut self.token else {
            return self.connector.open();
        };
        if !std::mem::replace(&mut token.unused, false) {
            token.take(&mut self.connector)?;
        }
        match self.connector.open() {
            Err(e) if e.kind() == ErrorKind::AuthRefused && token.origin == TokenOrigin::Cache => {
                if let Some(transcript) = token.transcript {
                    transcript(
                        "*",
                        "the server refused the cached OAuth2 token; fetching a new one",
                    );
                }
                oauth2::forget_access_token(&token.user, &token.oauth, token.timeout);
                token.take(&mut self.connector)?;
                self.connector.open()
            }
            other => other,
        }
    }
}
