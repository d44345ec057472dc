//! One prepared message → its delivery: over SMTP with retries (`retry` over
//! `smtp`), or into a directory (`file`). This layer owns who retries and what counts
//! as sent; it prints nothing — what the user should hear goes to an [`Observer`], and
//! the `-v` dialogue to a [`Transcript`].

mod file;
mod oauth2;
mod renew;
mod retry;
mod smtp;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::message::Prepared;
use crate::profile::{Auth, Password, Profile, SecretSource, Security, SmtpProfile, Transport};
use oauth2::TokenOrigin;

pub use oauth2::{LoginStep, Stored};
pub use retry::{Failure, Policy, Report};
pub use smtp::{CertificateReport, RcptReply, ServerReport, payload_in_flight};

/// Doors for the fuzz targets in `fuzz/` to the parsers of what servers send: not part
/// of envoi's API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::oauth2::fuzzing::*;
    pub use super::smtp::fuzzing::*;
}

/// How a delivery ended well.
#[derive(Debug)]
pub enum Delivery {
    /// The server answered the final dot with 2xx (for some recipients, with
    /// `allow_partial`: see the report).
    Sent {
        /// What was sent.
        prepared: Prepared,
        /// Each recipient's fate.
        report: Report,
    },
    /// The file transport wrote the message.
    Saved {
        /// What was written.
        prepared: Prepared,
        /// Where.
        path: PathBuf,
    },
}

/// A request for delivery status notifications (RFC 3461), used when the server
/// offers DSN.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dsn {
    /// `NOTIFY=` on each RCPT: `NEVER`, or some of `SUCCESS`, `FAILURE`, `DELAY`.
    pub notify: Option<Vec<String>>,
    /// `RET=` on MAIL: `FULL` or `HDRS`.
    pub ret: Option<String>,
    /// `ENVID=` on MAIL: the sender's id for the notifications.
    pub envid: Option<String>,
}

/// How to deliver, beyond the profile: the retry policy, DSN and `-v`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryOptions {
    /// Retries, deadline and partial delivery.
    pub policy: Policy,
    /// Delivery status notifications to request, when the server offers DSN.
    pub dsn: Option<Dsn>,
    /// Where the SMTP dialogue goes, line by line, as it happens (`-v`).
    pub transcript: Option<Transcript>,
}

/// Receives the SMTP dialogue: the side (`C` client, `S` server, `*` envoi) and one
/// line, already made printable, with AUTH data redacted. A plain function, called
/// while the dialogue goes on, so a stall shows while it stalls.
pub type Transcript = fn(side: &str, line: &str);

/// Something the user should hear about while a delivery goes on.
#[derive(Debug)]
pub enum Notice {
    /// A temporary failure; the next attempt starts after `wait`.
    Retrying {
        /// What failed.
        reason: Error,
        /// The backoff.
        wait: Duration,
        /// The number of the next attempt…
        next_attempt: u32,
        /// …of this many at most.
        attempts: u32,
    },
    /// The server accepted a transaction but the observer could not record it.
    NotRecorded(Error),
    /// The profile allows AUTH without TLS, and it is about to happen: the password
    /// crosses the network in clear (T14).
    PasswordWithoutTls {
        /// `host:port`.
        server: String,
    },
    /// Delivery status notifications were asked for and the server does not offer DSN:
    /// the message goes without them.
    DsnNotOffered {
        /// `host:port`.
        server: String,
    },
}

/// Told what happens during a delivery.
pub trait Observer {
    /// After every transaction the server accepted, before anything else is said to it
    /// (even QUIT), so the caller can record who has the message while it is certain.
    /// An error here is reported as [`Notice::NotRecorded`]: the message is delivered
    /// all the same, and retrying it would send it again.
    fn accepted(&mut self, _report: &Report) -> Result<()> {
        Ok(())
    }

    /// A notice for the user.
    fn notice(&mut self, notice: Notice);
}

/// Delivers `prepared` through `profile`: writes it to the profile's directory, or
/// sends it over SMTP with retries as `options` say.
pub fn deliver(
    profile: &Profile,
    prepared: Prepared,
    options: &DeliveryOptions,
    observer: &mut dyn Observer,
) -> Result<Delivery, Failure> {
    let smtp = match &profile.transport {
        Transport::File { dir } => {
            let path = file::save_to_dir(dir, &prepared)?;
            return Ok(Delivery::Saved { prepared, path });
        }
        Transport::Smtp(smtp) => smtp,
    };
    let deadline = options.policy.deadline;
    let mut connector = logged_in(profile, smtp, options, deadline, deadline, observer)?;
    let report = retry::send(&mut connector, &prepared, &options.policy, observer)?;
    Ok(Delivery::Sent { prepared, report })
}

/// The connector for `smtp`, its login fetched by `fetch_by` (a password command runs
/// here, once); a native OAuth2 token is taken again before each later session (see
/// [`renew`]). `deadline` bounds the sessions (`None` in a batch, whose messages have
/// their own). A login about to cross the network in plain text is told to `observer`.
fn logged_in(
    profile: &Profile,
    smtp: &SmtpProfile,
    options: &DeliveryOptions,
    fetch_by: Option<Instant>,
    deadline: Option<Instant>,
    observer: &mut dyn Observer,
) -> Result<renew::Renewing> {
    let (login, origin) = credentials(smtp, fetch_by, options.transcript)?;
    if login.is_some() && smtp.security == Security::None && smtp.allow_plaintext_auth {
        observer.notice(Notice::PasswordWithoutTls {
            server: format!("{}:{}", smtp.host, smtp.port),
        });
    }
    let mut settings = smtp::SmtpSettings::new(smtp, login, options.transcript, deadline);
    settings.dsn = options.dsn.clone();
    let token = origin
        .zip(profile.oauth2())
        .map(|(origin, (user, oauth))| (user, oauth, origin));
    Ok(renew::Renewing::new(
        smtp::SmtpConnector::new(settings),
        token,
    ))
}

/// Sends message after message through one profile, over reused SMTP sessions
/// (`envoi batch`): one session carries messages until `per_session` of them went over
/// it, the server closes it, or a command on it fails; a transaction that failed is
/// reset (RSET) before the next. Each message gets the retry policy of
/// [`DeliveryOptions::policy`], with its deadline counted from when that message starts.
///
/// A password is fetched once, when the batch starts; a native OAuth2 token is taken
/// again before each session, so a batch outlives the token's hour.
pub struct Batch {
    inner: BatchInner,
    options: DeliveryOptions,
    per_message: Duration,
}

/// How one message of a [`Batch`] ended well.
#[derive(Debug)]
pub enum BatchSent {
    /// Sent over SMTP (to some recipients, with `allow_partial`: see the report).
    Sent(Report),
    /// Written by the file transport, there.
    Saved(PathBuf),
}

enum BatchInner {
    File(PathBuf),
    Smtp(Box<retry::Reuse<renew::Renewing>>),
}

impl Batch {
    /// Prepares to send through `profile`: fetches the credentials (a password command
    /// runs once) and opens no connection yet. `per_message` is each message's deadline,
    /// retries included; `per_session` the most messages over one SMTP session.
    pub fn new(
        profile: &Profile,
        options: DeliveryOptions,
        per_message: Duration,
        per_session: u32,
        observer: &mut dyn Observer,
    ) -> Result<Batch> {
        let inner = match &profile.transport {
            Transport::File { dir } => BatchInner::File(dir.clone()),
            Transport::Smtp(smtp) => {
                // No overall deadline on the sessions: each command has the profile's
                // timeout, and each message its own deadline in the policy.
                let fetch_by = Some(Instant::now() + per_message);
                let connector = logged_in(profile, smtp, &options, fetch_by, None, observer)?;
                BatchInner::Smtp(Box::new(retry::Reuse::new(connector, per_session)))
            }
        };
        Ok(Batch {
            inner,
            options,
            per_message,
        })
    }

    /// Another batch through the same profile, with the same credentials (no password
    /// command runs again, no token is fetched again) and its own sessions: one per
    /// sender of `envoi batch --concurrency`.
    pub fn sibling(&self) -> Batch {
        let inner = match &self.inner {
            BatchInner::File(dir) => BatchInner::File(dir.clone()),
            BatchInner::Smtp(sessions) => BatchInner::Smtp(Box::new(sessions.sibling())),
        };
        Batch {
            inner,
            options: self.options.clone(),
            per_message: self.per_message,
        }
    }

    /// Sends one message, on the open session when there is one. The caller keeps the
    /// message: to queue it, or to send it again.
    pub fn send(
        &mut self,
        prepared: &Prepared,
        observer: &mut dyn Observer,
    ) -> Result<BatchSent, Failure> {
        match &mut self.inner {
            BatchInner::File(dir) => Ok(BatchSent::Saved(file::save_to_dir(dir, prepared)?)),
            BatchInner::Smtp(sessions) => {
                let policy = Policy {
                    deadline: Some(Instant::now() + self.per_message),
                    ..self.options.policy.clone()
                };
                let report = retry::send_via(sessions.as_mut(), prepared, &policy, observer)?;
                Ok(BatchSent::Sent(report))
            }
        }
    }

    /// SMTP sessions opened so far.
    pub fn sessions_opened(&self) -> u32 {
        match &self.inner {
            BatchInner::File(_) => 0,
            BatchInner::Smtp(sessions) => sessions.opened(),
        }
    }

    /// Ends the open session (QUIT).
    pub fn finish(mut self) {
        if let BatchInner::Smtp(sessions) = &mut self.inner {
            sessions.close();
        }
    }
}

/// A user name with its password or token, fetched.
type Login = Option<(String, Password)>;

/// `timeout`, or what is left before `deadline` when that is less: how long one step
/// (a command, a password command, a token request) may take.
pub(crate) fn cut_to_deadline(timeout: Duration, deadline: Option<Instant>) -> Duration {
    deadline.map_or(timeout, |d| {
        timeout.min(d.saturating_duration_since(Instant::now()))
    })
}

/// The profile's user name with its password or token fetched. A password command, or
/// the request to an OAuth2 token endpoint, gets what a server command gets: the
/// profile's timeout, cut to what is left before `deadline`. With `transcript` (`-v`),
/// says whether an OAuth2 token came from the cache or the endpoint (never the token).
fn credentials(
    smtp: &SmtpProfile,
    deadline: Option<Instant>,
    transcript: Option<Transcript>,
) -> Result<(Login, Option<TokenOrigin>)> {
    let timeout = cut_to_deadline(smtp.timeout, deadline);
    let key = smtp.auth.secret_word();
    match smtp.login.clone()? {
        Some((user, SecretSource::Given(source))) => {
            Ok((Some((user, source.fetch_as(key, timeout)?)), None))
        }
        Some((user, SecretSource::OAuth2(oauth))) => {
            let (token, origin) =
                oauth2::access_token(&user, &oauth, smtp.ca_file.as_deref(), timeout, transcript)?;
            Ok((Some((user, token)), Some(origin)))
        }
        None => Ok((None, None)),
    }
}

/// The user name and `[oauth2]` table of a profile, for `envoi auth`; 78 for a profile
/// without one.
fn oauth_of(profile: &Profile) -> Result<(&str, &crate::profile::OAuth2, Option<&Path>)> {
    if let Transport::Smtp(smtp) = &profile.transport {
        if let Some((user, oauth)) = profile.oauth2() {
            return Ok((user, oauth, smtp.ca_file.as_deref()));
        }
        // A login the profile got wrong says so itself.
        smtp.login.clone()?;
    }
    Err(Error::config(
        "this profile has no [profiles.NAME.oauth2] table: envoi auth is for OAuth2 \
         tokens envoi fetches itself",
    ))
}

/// `envoi auth login`: the user's consent for the profile's OAuth2 table, waited for at
/// most `wait`; the refresh token goes to the token cache. `tell` shows each step.
pub fn auth_login(
    profile: &Profile,
    wait: Duration,
    tell: &mut dyn FnMut(LoginStep),
) -> Result<Stored> {
    let (user, oauth, ca_file) = oauth_of(profile)?;
    oauth2::login(user, oauth, ca_file, wait, tell)
}

/// `envoi auth status`: what the token cache holds for the profile (never a token).
pub fn auth_status(profile: &Profile) -> Result<Option<Stored>> {
    let (user, oauth, _) = oauth_of(profile)?;
    oauth2::stored(user, oauth)
}

/// `envoi auth logout`: forgets the profile's tokens; whether there were any.
pub fn auth_logout(profile: &Profile) -> Result<bool> {
    let (user, oauth, _) = oauth_of(profile)?;
    oauth2::logout(user, oauth)
}

/// `envoi check`: connects to the profile's server as a delivery would (TLS, EHLO,
/// login), reports what it offers, and sends no mail. A file profile has no server
/// (78).
pub fn check(profile: &Profile, timeout: Duration) -> Result<ServerReport> {
    let Transport::Smtp(smtp) = &profile.transport else {
        return Err(Error::config(
            "this profile writes files (transport = \"file\"): there is no server to check",
        ));
    };
    check_server(smtp, timeout)
}

fn check_server(smtp: &SmtpProfile, timeout: Duration) -> Result<ServerReport> {
    let deadline = Instant::now() + timeout;
    let (credentials, _) = credentials(smtp, Some(deadline), None)?;
    smtp::check(smtp::SmtpSettings::new(
        smtp,
        credentials,
        None,
        Some(deadline),
    ))
}

/// What one way of speaking to one port gave (`envoi check --probe`).
#[derive(Debug, Clone)]
pub struct Probe {
    /// The port tried.
    pub port: u16,
    /// Implicit TLS, STARTTLS or none.
    pub security: Security,
    /// What the server offered, or why that way does not work.
    pub outcome: std::result::Result<ServerReport, Error>,
}

/// `envoi check --probe`: tries implicit TLS, STARTTLS and plain SMTP on each of `ports`
/// of `host`, without logging in, each within `timeout`. Answers the question behind
/// most "wrong version number" and "timed out" reports: what does this port speak?
pub fn probe(host: &str, ports: &[u16], ca_file: Option<&Path>, timeout: Duration) -> Vec<Probe> {
    let mut probes = Vec::new();
    for &port in ports {
        for security in [Security::Tls, Security::Starttls, Security::None] {
            let server = SmtpProfile {
                host: host.to_owned(),
                port,
                security,
                login: Ok(None),
                auth: Auth::Password,
                timeout,
                ca_file: ca_file.map(Path::to_path_buf),
                tls_fingerprint: None,
                hello_name: None,
                allow_plaintext_auth: false,
            };
            probes.push(Probe {
                port,
                security,
                outcome: check_server(&server, timeout),
            });
        }
    }
    probes
}

/// The one wording of "out of time" for every step of a send.
fn deadline_passed() -> Error {
    Error::new(
        ErrorKind::Temporary,
        "the deadline for the whole send (--timeout) has passed",
    )
}
