//! One prepared message → its delivery: over SMTP with retries (`retry` over
//! `smtp`), or into a directory (`file`). This layer owns who retries and what counts
//! as sent; it prints nothing — what the user should hear goes to an [`Observer`], and
//! the `-v` dialogue to a [`Transcript`].

mod api;
mod deadline;
mod file;
mod http;
mod http_reach;
mod imap;
mod in_flight;
mod net;
mod oauth2;
mod observe;
mod options;
mod outcome;
mod pinned_tls;
mod redact;
mod renew;
mod retry;
mod smtp;
mod transport;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::message::Prepared;
use crate::profile::{
    Auth, Connection, Fingerprint, Password, Profile, ProxyKey, SecretSource, Security, SmtpProfile,
};
use deadline::cut_to_deadline;
use oauth2::TokenOrigin;
use transport::{Sessions, Transport};

pub use api::ApiCheck;
pub use imap::{MAX_COPY, file_copy};
pub use in_flight::payload_in_flight;
pub use oauth2::{LoginStep, Stored};
pub use observe::{Notice, Observer, Transcript};
pub use options::{DeliveryOptions, Dsn};
pub use outcome::{
    BatchSent, Delivery, Extras, Failure, RcptReply, Report, RoutePart, SentCopied, ServiceReceipt,
};
pub use retry::Policy;
/// SMTP's TLS (system roots plus a CA file, one verifier) for the PostgreSQL ledger too.
pub(crate) use smtp::tls::client_config as tls_client_config;
pub use smtp::{CertificateReport, ServerReport};

/// Doors for the fuzz targets in `fuzz/` to the parsers of what servers send: not part
/// of envoi's API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::oauth2::fuzzing::*;
    pub use super::smtp::fuzzing::*;
}

/// Delivers `prepared` through `profile`: writes it to the profile's directory, or
/// sends it over SMTP with retries as `options` say.
pub fn deliver(
    profile: &Profile,
    prepared: Prepared,
    options: &DeliveryOptions,
    observer: &mut dyn Observer,
) -> Result<Delivery, Failure> {
    Ok(match send_through(profile, &prepared, options, observer)? {
        BatchSent::Sent(report) => Delivery::Sent { prepared, report },
        BatchSent::Saved(path) => Delivery::Saved { prepared, path },
    })
}

/// [`deliver`] along `connection`: through its profile, or a route's (`[routes]`)
/// profiles in turn, each with its own retries, all within the one deadline, moving on
/// only while the message certainly reached nobody ([`Failure::not_accepted`]): never
/// after a certificate or login failure, a refused recipient, or once the message was on
/// its way. The report names the route's profile that carried it (or was tried last).
/// Rules by recipient domain are the outbox layer's (`submit`): a connection with some
/// is refused here (78), so that no path sends all recipients through one of its routes.
pub fn deliver_along(
    connection: &Connection,
    prepared: Prepared,
    options: &DeliveryOptions,
    observer: &mut dyn Observer,
) -> Result<Delivery, Failure> {
    if !connection.by_domain.is_empty() {
        return Err(Error::config(format!(
            "route {}: rules by recipient domain send directly (envoi send, \
             envoi sendmail without the system spool); its rules are not followed from the \
             outbox, so this message was not sent",
            route_name(connection)
        ))
        .into());
    }
    let routed = !connection.fallbacks.is_empty();
    let mut hops = connection.hops().peekable();
    // Attempts of the profiles that did not take it.
    let mut earlier = 0;
    while let Some((name, profile)) = hops.next() {
        if let (true, Some(transcript)) = (routed, options.transcript) {
            transcript(
                "*",
                &format!("route {}: profile {name}", route_name(connection)),
            );
        }
        match send_through(profile, &prepared, options, observer) {
            Ok(BatchSent::Sent(mut report)) => {
                report.attempts += earlier;
                if routed {
                    report.extras_mut().route = Some(name.to_owned());
                }
                return Ok(Delivery::Sent { prepared, report });
            }
            Ok(BatchSent::Saved(path)) => return Ok(Delivery::Saved { prepared, path }),
            Err(failure) if failure.not_accepted() && hops.peek().is_some() => {
                earlier += failure.report.attempts;
                let next = hops.peek().map_or("", |(next, _)| *next);
                observer.notice(Notice::FailingOver {
                    route: name.to_owned(),
                    reason: failure.error,
                    next: next.to_owned(),
                });
            }
            Err(mut failure) => {
                failure.report.attempts += earlier;
                if routed {
                    failure.report.extras_mut().route = Some(name.to_owned());
                }
                return Err(failure);
            }
        }
    }
    Err(Error::new(
        ErrorKind::Internal,
        "a connection without a profile to send through (a bug in envoi)",
    )
    .into())
}

/// The name of `connection`'s route, as the config file spells it.
fn route_name(connection: &Connection) -> &str {
    connection.route.profile.as_deref().unwrap_or_default()
}

/// One message through one profile, under `options`' policy and deadline.
fn send_through(
    profile: &Profile,
    prepared: &Prepared,
    options: &DeliveryOptions,
    observer: &mut dyn Observer,
) -> Result<BatchSent, Failure> {
    let deadline = options.policy.deadline;
    let mut transport = open(
        profile,
        options,
        Sessions::Fresh,
        deadline,
        deadline,
        observer,
    )?;
    transport.send(prepared, &options.policy, observer)
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
    transport: Box<dyn Transport>,
    options: DeliveryOptions,
    per_message: Duration,
    /// Each message gets one attempt, no retries (see [`Batch::hurry`]).
    hurried: bool,
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
        // No deadline of the batch's own: a session takes the deadline of each message
        // it carries (its policy's), down to every read and write.
        let fetch_by = Some(Instant::now() + per_message);
        let sessions = Sessions::Reused(per_session);
        let transport = open(profile, &options, sessions, fetch_by, None, observer)?;
        Ok(Batch {
            transport,
            options,
            per_message,
            hurried: false,
        })
    }

    /// Another batch through the same profile, with the same credentials (no password
    /// command runs again, no token is fetched again) and its own sessions: one per
    /// sender of `envoi batch --concurrency`.
    pub fn sibling(&self) -> Batch {
        Batch {
            transport: self.transport.sibling(),
            options: self.options.clone(),
            per_message: self.per_message,
            hurried: false,
        }
    }

    /// With `hurried`, each message gets one attempt and no retries: `envoi batch` asks
    /// this while the server is found down, so that each record does not wait out the
    /// retries again for a server the last one could not reach.
    pub fn hurry(&mut self, hurried: bool) {
        self.hurried = hurried;
    }

    /// Whether the last try to reach the server failed before any message went (SMTP:
    /// no session could be opened, from the TCP connection to the login; an HTTPS API: no
    /// byte of the request's body went out); false for the file transport.
    pub fn unreachable(&self) -> bool {
        self.transport.unreachable()
    }

    /// Sends one message, on the open session when there is one. The caller keeps the
    /// message: to queue it, or to send it again.
    pub fn send(
        &mut self,
        prepared: &Prepared,
        observer: &mut dyn Observer,
    ) -> Result<BatchSent, Failure> {
        let policy = Policy {
            deadline: Some(Instant::now() + self.per_message),
            retries: if self.hurried {
                0
            } else {
                self.options.policy.retries
            },
            ..self.options.policy.clone()
        };
        self.transport.send(prepared, &policy, observer)
    }

    /// SMTP sessions opened so far.
    pub fn sessions_opened(&self) -> u32 {
        self.transport.sessions_opened()
    }

    /// Ends the open session (QUIT).
    pub fn finish(mut self) {
        self.transport.finish();
    }
}

/// The transport `profile` names. A login is fetched here, by `fetch_by`; `deadline`
/// bounds the SMTP sessions (`None` in a batch, whose messages have their own).
fn open(
    profile: &Profile,
    options: &DeliveryOptions,
    sessions: Sessions,
    fetch_by: Option<Instant>,
    deadline: Option<Instant>,
    observer: &mut dyn Observer,
) -> Result<Box<dyn Transport>> {
    let transport = open_transport(profile, options, sessions, fetch_by, deadline, observer)
        .map_err(|e| advice_for(profile, e))?;
    Ok(if profile.from_url {
        Box::new(FromUrl(transport))
    } else {
        transport
    })
}

/// [`open`], in the profile's words.
fn open_transport(
    profile: &Profile,
    options: &DeliveryOptions,
    sessions: Sessions,
    fetch_by: Option<Instant>,
    deadline: Option<Instant>,
    observer: &mut dyn Observer,
) -> Result<Box<dyn Transport>> {
    Ok(match &profile.transport {
        crate::profile::Transport::File { dir } => {
            Box::new(file::FileTransport { dir: dir.clone() })
        }
        crate::profile::Transport::Api(api) => {
            Box::new(api::open(api, fetch_by, options.transcript)?)
        }
        crate::profile::Transport::Smtp(smtp) => {
            let connector = logged_in(profile, smtp, options, fetch_by, deadline, observer)?;
            Box::new(match sessions {
                Sessions::Fresh => transport::Smtp::Fresh(connector),
                Sessions::Reused(most) => {
                    transport::Smtp::Reused(retry::Reuse::new(connector, most))
                }
            })
        }
    })
}

/// `error` in the words of where `profile` came from: with `--smtp-url` its trust advice
/// names the URL's `?ca_file=…` / `?tls_fingerprint=…`, since there is no profile to put
/// a key in.
pub fn advice_for(profile: &Profile, error: Error) -> Error {
    if profile.from_url {
        Error::new(error.kind(), smtp::tls::url_form(error.message()))
    } else {
        error
    }
}

/// A transport of a profile made from a URL: its failures advise URL parameters.
struct FromUrl(Box<dyn Transport>);

impl Transport for FromUrl {
    fn send(
        &mut self,
        prepared: &Prepared,
        policy: &Policy,
        observer: &mut dyn Observer,
    ) -> Result<BatchSent, Failure> {
        self.0
            .send(prepared, policy, observer)
            .map_err(|failure| Failure {
                error: Error::new(
                    failure.error.kind(),
                    smtp::tls::url_form(failure.error.message()),
                ),
                ..failure
            })
    }

    fn sibling(&self) -> Box<dyn Transport> {
        Box::new(FromUrl(self.0.sibling()))
    }

    fn sessions_opened(&self) -> u32 {
        self.0.sessions_opened()
    }

    fn finish(&mut self) {
        self.0.finish();
    }
}

/// A user name with its password or token, fetched.
type Login = Option<(String, Password)>;

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
    let ca_file = match &profile.transport {
        crate::profile::Transport::Smtp(smtp) => smtp.ca_file.as_deref(),
        crate::profile::Transport::Api(api) => api.ca_file.as_deref(),
        crate::profile::Transport::File { .. } => None,
    };
    if let Some((user, oauth)) = profile.oauth2() {
        return Ok((user, oauth, ca_file));
    }
    if let Some(login) = profile.login() {
        // A login the profile got wrong says so itself.
        login.clone()?;
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

/// `envoi check` on an HTTPS mail API profile (`transport = "graph"` or `"gmail"`):
/// proves the token and the mailbox without sending (Graph reads the mailbox's
/// settings, Gmail the token user's profile).
pub fn check_api(api: &crate::profile::ApiProfile, timeout: Duration) -> Result<ApiCheck> {
    api::check(api, timeout)
}

/// `envoi check`: connects to the profile's server as a delivery would (TLS, EHLO,
/// login), reports what it offers, and sends no mail. A file profile has no server
/// (78); an HTTPS API profile is checked by [`check_api`].
pub fn check(profile: &Profile, timeout: Duration) -> Result<ServerReport> {
    let smtp = match &profile.transport {
        crate::profile::Transport::Smtp(smtp) => smtp,
        crate::profile::Transport::Api(api) => {
            return Err(Error::config(format!(
                "transport = \"{}\" has no SMTP server to check: check it with check_api",
                api.service.key()
            )));
        }
        crate::profile::Transport::File { .. } => {
            return Err(Error::config(
                "this profile writes files (transport = \"file\"): there is no server to check",
            ));
        }
    };
    let deadline = Instant::now() + timeout;
    let (credentials, _) = credentials(smtp, Some(deadline), None)?;
    smtp::check(smtp::SmtpSettings::new(
        smtp,
        credentials,
        None,
        Some(deadline),
    ))
    .map_err(|e| advice_for(profile, e))
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
    /// This way failed after the server offered TLS (STARTTLS refused, stripped after
    /// being offered, bytes injected, a failed handshake, an untrusted certificate):
    /// plain SMTP is then no advice to give.
    pub tls_failed: bool,
}

/// The longest one way of one port may take in `envoi check --probe`.
const PROBE_ATTEMPT: Duration = Duration::from_secs(10);

/// `envoi check --probe`: tries implicit TLS, STARTTLS and plain SMTP on each of `ports`
/// of `host`, without logging in, all within `timeout` (the ports side by side, each way
/// within at most 10 s of it). Answers the question behind most "wrong version number"
/// and "timed out" reports: what does this port speak? The certificate is checked against
/// the system's roots plus `ca_file`, or only against the pin when one is given.
pub fn probe(
    host: &str,
    ports: &[u16],
    (ca_file, pin): (Option<&Path>, Option<&Fingerprint>),
    timeout: Duration,
) -> Vec<Probe> {
    let deadline = Instant::now() + timeout;
    let probe_port = |port: u16| {
        // A port that answered the TLS handshake speaks implicit TLS: its plain ways
        // would only wait out a greeting that never comes.
        let mut speaks_tls = false;
        [Security::Tls, Security::Starttls, Security::None].map(|security| {
            if speaks_tls {
                return Probe {
                    port,
                    security,
                    outcome: Err(Error::config(format!(
                        "not tried: port {port} speaks implicit TLS (it answered the TLS \
                         handshake), so it sends no greeting in plain text"
                    ))),
                    tls_failed: false,
                };
            }
            let server = SmtpProfile {
                host: host.to_owned(),
                port,
                security,
                login: Ok(None),
                auth: Auth::Password,
                timeout: cut_to_deadline(PROBE_ATTEMPT, Some(deadline)),
                ca_file: ca_file.map(Path::to_path_buf),
                tls_fingerprint: pin.cloned(),
                hello_name: None,
                allow_plaintext_auth: false,
                // A probe reads no profile: it connects directly.
                proxy: None,
                proxy_key: ProxyKey::Off,
            };
            let settings = smtp::SmtpSettings::new(&server, None, None, Some(deadline));
            let (outcome, tls_offered) = smtp::probe_check(settings);
            speaks_tls = security == Security::Tls && tls_offered;
            Probe {
                port,
                security,
                tls_failed: tls_offered && outcome.is_err(),
                outcome,
            }
        })
    };
    std::thread::scope(|scope| {
        let running: Vec<_> = ports
            .iter()
            .map(|&port| (port, scope.spawn(move || probe_port(port))))
            .collect();
        running
            .into_iter()
            .flat_map(|(port, probing)| {
                probing.join().unwrap_or_else(|_| {
                    [Security::Tls, Security::Starttls, Security::None].map(|security| Probe {
                        port,
                        security,
                        outcome: Err(Error::new(
                            ErrorKind::Internal,
                            "probing this port failed (a bug in envoi)",
                        )),
                        tls_failed: false,
                    })
                })
            })
            .collect()
    })
}
