//! The HTTPS mail APIs as a [`Transport`]: Microsoft Graph `sendMail` (`graph`) and the
//! Gmail API `users.messages.send` (`gmail`), for tenants that switched SMTP AUTH off and
//! hosts that block the SMTP ports.
//!
//! Both take the message envoi built, byte for byte (attachments, DKIM signature and
//! all), and read its recipients from its header, not from an envelope: so the envelope
//! is written into the header first (`message::given::with_envelope_in_header`: the
//! Bcc recipients into a Bcc field of these bytes only). Outcomes are envoi's: a 202
//! (Graph) or 200 (Gmail) is `sent` (accepted for delivery); 429, 503 and other 5xx are
//! temporary and retried under the send's [`Policy`], after `Retry-After` when it fits
//! the deadline; a 401 gets one more try with a fresh token, then 77; 403 is 77 with
//! what to grant; 400 and a message over the service's limit (refused before any
//! request) are 65; an unknown mailbox 78. A request whose body went out whole and got
//! no answer is `unknown` and never retried: the mail may have gone.
//!
//! The files: `shared` (the request, the bytes a service gets, its error JSON), `graph`
//! and `gmail` (each service's request, answers and check); this one, the token, the
//! retry loop and the outcomes.

mod gmail;
mod graph;
mod shared;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::deliver::deadline::{cut_to_deadline, deadline_passed};
use crate::deliver::http::{Answer, Client, NoAnswer, printable};
use crate::deliver::oauth2;
use crate::deliver::observe::{Notice, Observer, Transcript};
use crate::deliver::outcome::{BatchSent, Extras, Failure, RcptReply, Report, ServiceReceipt};
use crate::deliver::retry::{Policy, next_attempt};
use crate::deliver::transport::Transport;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Prepared;
use crate::profile::{ApiProfile, OAuth2, Password, PasswordSource, SecretSource, Service};
use shared::{Request, service_error};

/// Sends through one HTTPS mail API with one token.
#[derive(Clone)]
pub(crate) struct ApiTransport {
    api: ApiProfile,
    client: Client,
    token: Token,
    transcript: Option<Transcript>,
    /// The last request of the last message never reached the service (`envoi batch`
    /// stops after a few such messages in a row).
    unreachable: bool,
}

/// The bearer token and where another one comes from.
#[derive(Clone)]
struct Token {
    /// Whose token it is (the OAuth2 cache's key).
    user: String,
    current: Password,
    source: TokenSource,
    /// The token was just fetched and not used yet: no need to take it again.
    unused: bool,
}

#[derive(Clone)]
enum TokenSource {
    /// A variable or a command: fetched once per run (a command runs once), and again
    /// only after the service refused it.
    Given(PasswordSource),
    /// envoi's own OAuth2 client: taken again before each message (from the cache while
    /// it has more than a minute left), so a batch outlives the token's hour.
    OAuth2(Box<OAuth2>),
}

/// Why a request did not end in `sent`.
struct Refusal {
    error: Error,
    /// `Retry-After`, when the service asked to wait.
    retry_after: Option<Duration>,
    /// HTTP 401: the token was refused.
    unauthorized: bool,
    /// The service was not reached: no byte of the request's body went out.
    unreached: bool,
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Refusal {
        Refusal {
            error,
            retry_after: None,
            unauthorized: false,
            unreached: false,
        }
    }
}

impl From<NoAnswer> for Refusal {
    fn from(no: NoAnswer) -> Refusal {
        Refusal {
            unreached: !no.body_started && no.error.kind() == ErrorKind::Temporary,
            ..Refusal::from(no.error)
        }
    }
}

/// The transport for `api`, its token fetched by `fetch_by` (a token command runs here,
/// once).
pub(crate) fn open(
    api: &ApiProfile,
    fetch_by: Option<Instant>,
    transcript: Option<Transcript>,
) -> Result<ApiTransport> {
    let client = client(api)?;
    let (user, source) = match api.login.clone()? {
        Some((user, SecretSource::Given(source))) => (user, TokenSource::Given(source)),
        Some((user, SecretSource::OAuth2(oauth))) => (user, TokenSource::OAuth2(oauth)),
        None => {
            return Err(Error::config(format!(
                "transport = \"{}\" needs a token: set token_env, token_command or an \
                 [oauth2] table",
                api.service.key()
            )));
        }
    };
    if let (Some(transcript), Some((proxy, _))) = (transcript, &api.proxy) {
        let line = format!("{} through the proxy {proxy}", api.service.name());
        transcript("*", &line);
    }
    let timeout = cut_to_deadline(api.timeout, fetch_by);
    let current = fetch(&user, &source, api.ca_file.as_deref(), timeout, transcript)?;
    Ok(ApiTransport {
        api: api.clone(),
        client,
        token: Token {
            user,
            current,
            source,
            unused: true,
        },
        transcript,
        unreachable: false,
    })
}

/// The HTTPS client for `api`'s service.
fn client(api: &ApiProfile) -> Result<Client> {
    Client::new(
        api.ca_file.as_deref(),
        api.tls_fingerprint.as_ref(),
        api.proxy.as_ref().map(|(proxy, _)| proxy),
        format!("{} at {}", api.service.name(), api.api_url),
        "api_url",
    )
}

/// A token from `source`, checked to be one an HTTP header can carry.
fn fetch(
    user: &str,
    source: &TokenSource,
    ca_file: Option<&Path>,
    timeout: Duration,
    transcript: Option<Transcript>,
) -> Result<Password> {
    let token = match source {
        TokenSource::Given(given) => given.fetch_as("token", timeout)?,
        TokenSource::OAuth2(oauth) => {
            oauth2::access_token(user, oauth, ca_file, timeout, transcript)?.0
        }
    };
    // RFC 6750's b64token, and nothing that could end the header line.
    if token.expose().is_empty() || !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::config(
            "the token holds spaces or characters a bearer token cannot have (token_env, \
             token_command)",
        ));
    }
    Ok(token)
}

impl ApiTransport {
    /// The current token: an OAuth2 one taken again (from the cache, usually) unless it
    /// was just fetched; with `fresh`, a new one whatever the cache holds (the service
    /// refused the one in use).
    fn take_token(&mut self, fresh: bool, timeout: Duration) -> Result<()> {
        if !fresh && std::mem::replace(&mut self.token.unused, false) {
            return Ok(());
        }
        match (&self.token.source, fresh) {
            (TokenSource::OAuth2(oauth), true) => {
                if let Some(transcript) = self.transcript {
                    transcript(
                        "*",
                        "the service refused the OAuth2 token; fetching a new one",
                    );
                }
                oauth2::forget_access_token(&self.token.user, oauth, timeout);
            }
            (TokenSource::Given(_), false) => return Ok(()),
            _ => {}
        }
        self.token.current = fetch(
            &self.token.user,
            &self.token.source,
            self.api.ca_file.as_deref(),
            timeout,
            self.transcript,
        )?;
        Ok(())
    }

    /// One request, ended by `deadline`: the status and the service's id for the message
    /// when it took it.
    fn exchange(
        &self,
        request: &Request,
        deadline: Option<Instant>,
    ) -> std::result::Result<(u16, Option<String>), Refusal> {
        let bearer = format!("Bearer {}", self.token.current.expose());
        let client_request_id = uuid();
        let mut headers = vec![("Authorization", bearer.as_str())];
        if self.api.service == Service::Graph {
            // Graph logs it with the request: what to quote to Microsoft's support.
            headers.push(("client-request-id", client_request_id.as_str()));
        }
        self.trace(
            "C",
            &format!(
                "POST {} ({}, {} bytes)",
                request.url,
                request.content_type,
                request.body.len()
            ),
        );
        let answer = self
            .client
            .post(
                &request.url,
                &headers,
                request.content_type,
                &request.body,
                self.api.timeout,
                deadline,
            )
            .map_err(Refusal::from)?;
        self.trace(
            "S",
            &format!(
                "HTTP {}{}",
                answer.status,
                answer
                    .request_id
                    .as_deref()
                    .map(|id| format!(" (request-id {id})"))
                    .unwrap_or_default()
            ),
        );
        match self.api.service {
            Service::Graph => graph::accepted(&answer),
            Service::Gmail => gmail::accepted(&answer),
        }
        .map(|id| (answer.status, id))
        .map_err(|()| self.refusal(&answer))
    }

    /// Says `line` to the `-v` transcript, if there is one.
    fn trace(&self, side: &str, line: &str) {
        if let Some(transcript) = self.transcript {
            transcript(side, line);
        }
    }

    /// An answer that is not a success, in envoi's terms.
    fn refusal(&self, answer: &Answer) -> Refusal {
        let service = self.api.service;
        let (code, message) = service_error(&answer.body);
        let shown = |s: &str| printable(s, &[self.token.current.expose().to_owned()]);
        let said = match (&code, &message) {
            (Some(code), Some(message)) => format!("{}: {}", shown(code), shown(message)),
            (Some(one), None) | (None, Some(one)) => shown(one),
            (None, None) if answer.body.trim().is_empty() => match &answer.unread {
                Some(why) => format!("a body that could not be read: {why}"),
                None => "an empty body".into(),
            },
            (None, None) => format!("\"{}\"", shown(answer.body.trim())),
        };
        let status = answer.status;
        // Graph's request-id is what Microsoft's support asks for.
        let id = answer
            .request_id
            .as_deref()
            .map(|id| format!(", request-id {}", shown(id)))
            .unwrap_or_default();
        let head = format!("{} answered HTTP {status} ({said}{id})", service.name());
        let retry_after = answer.retry_after;
        let (kind, advice) = match status {
            401 => (
                ErrorKind::AuthRefused,
                "the token was refused: it expired, was revoked, or is for another service \
                 (check the token source, and oauth2.scope)"
                    .to_owned(),
            ),
            403 => (
                ErrorKind::AuthRefused,
                grant_advice(service, code.as_deref()).to_owned(),
            ),
            400 | 413 | 422 => (
                ErrorKind::InvalidData,
                "the service refused this message; sending it again will not change that".into(),
            ),
            404 => (
                ErrorKind::Config,
                match (service, &self.api.mailbox) {
                    (Service::Graph, Some(mailbox)) => {
                        format!("no mailbox {mailbox} there: check mailbox (or from), and api_url")
                    }
                    _ => "nothing there: check api_url".to_owned(),
                },
            ),
            429 | 500..=599 => (
                ErrorKind::Temporary,
                match retry_after {
                    Some(wait) => format!("busy; it asks to wait {} s", wait.as_secs()),
                    None => "busy or failing for now".to_owned(),
                },
            ),
            300..=399 => (
                ErrorKind::Config,
                "api_url redirects elsewhere; give the service's own URL".into(),
            ),
            _ => (
                ErrorKind::Unavailable,
                format!("not an answer {} gives: check api_url", service.name()),
            ),
        };
        Refusal {
            error: Error::new(kind, format!("{head}: {advice}")),
            retry_after,
            unauthorized: status == 401,
            unreached: false,
        }
    }

    /// The report of a message the service took.
    fn accepted_report(
        &self,
        prepared: &Prepared,
        status: u16,
        id: Option<String>,
        attempts: u32,
    ) -> Report {
        let words = format!("accepted by {}", self.api.service.name());
        Report {
            delivered: prepared
                .envelope
                .to()
                .iter()
                .map(|to| RcptReply::new(to, status, words.clone()))
                .collect(),
            refused: Vec::new(),
            data_reply: Some((status, words)),
            attempts,
            payload_sent: true,
            extras: Some(Box::new(Extras {
                service: Some(ServiceReceipt {
                    service: self.api.service.name(),
                    id,
                }),
                ..Extras::default()
            })),
        }
    }
}

impl Transport for ApiTransport {
    fn send(
        &mut self,
        prepared: &Prepared,
        policy: &Policy,
        observer: &mut dyn Observer,
    ) -> std::result::Result<BatchSent, Failure> {
        let request = match self.api.service {
            Service::Graph => graph::request(&self.api, prepared)?,
            Service::Gmail => gmail::request(&self.api, prepared)?,
        };
        let mut attempts = 0;
        let mut refreshed = false;
        let mut fresh = false;
        // Some request's body went out: a later failure no longer proves nobody has it.
        let mut body_went = false;
        loop {
            let failed = |error: Error, attempts: u32, body_went: bool| Failure {
                error,
                report: Report {
                    attempts,
                    payload_sent: body_went,
                    ..Report::default()
                },
            };
            if policy.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(failed(deadline_passed(), attempts, body_went));
            }
            let timeout = cut_to_deadline(self.api.timeout, policy.deadline);
            self.take_token(std::mem::take(&mut fresh), timeout)
                .map_err(|e| failed(e, attempts, body_went))?;
            attempts += 1;
            let exchanged = self.exchange(&request, policy.deadline);
            self.unreachable = exchanged.as_ref().is_err_and(|r| r.unreached);
            body_went |= exchanged.as_ref().is_err_and(|r| !r.unreached);
            let refusal = match exchanged {
                Ok((status, id)) => {
                    let report = self.accepted_report(prepared, status, id, attempts);
                    if let Err(e) = observer.accepted(&report) {
                        // Sent all the same: retrying would send it again.
                        observer.notice(Notice::NotRecorded(e));
                    }
                    return Ok(BatchSent::Sent(report));
                }
                Err(refusal) => refusal,
            };
            if refusal.unauthorized && !refreshed {
                // Once: a token revoked before its time, or one a command hands out
                // anew. A second 401 is the answer.
                refreshed = true;
                fresh = true;
                continue;
            }
            let Some(wait) = next_attempt(&refusal.error, attempts, policy, refusal.retry_after)
            else {
                return Err(failed(refusal.error, attempts, body_went));
            };
            observer.notice(Notice::Retrying {
                reason: refusal.error,
                wait,
                next_attempt: attempts + 1,
                attempts: policy.retries + 1,
            });
            std::thread::sleep(wait);
        }
    }

    fn sibling(&self) -> Box<dyn Transport> {
        Box::new(self.clone())
    }

    fn unreachable(&self) -> bool {
        self.unreachable
    }
}

/// What to grant (or fix) after a 403 whose error code is `code`.
fn grant_advice(service: Service, code: Option<&str>) -> &'static str {
    match (service, code) {
        // Not a permission: the mailbox itself cannot be used through Graph.
        (Service::Graph, Some("MailboxNotEnabledForRESTAPI")) => {
            "this mailbox cannot be reached through Graph: it is inactive, soft-deleted, \
             hosted on-premises (hybrid), or has no Exchange Online licence; check it in the \
             Exchange admin center, or send through SMTP from a profile without transport"
        }
        (Service::Graph, Some("ErrorSendAsDenied")) => {
            "the mailbox may not send as the From address: give the mailbox Send As on that \
             address, or send From the mailbox's own address"
        }
        (Service::Graph, _) => {
            "the token may not send as this mailbox: grant the app the Mail.Send application \
             permission with admin consent (limited to this mailbox by an application access \
             policy or RBAC for Applications), or a delegated token the Mail.Send scope"
        }
        (Service::Gmail, _) => {
            "the token may not send mail: it needs the \
             https://www.googleapis.com/auth/gmail.send scope (set oauth2.scope and log in \
             again with envoi auth login)"
        }
    }
}

/// A random (version 4) UUID, for Graph's `client-request-id`.
fn uuid() -> String {
    let n = fastrand::u128(..);
    let n = (n & !(0xf << 76)) | (0x4 << 76);
    let n = (n & !(0x3 << 62)) | (0x2 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        n >> 96,
        (n >> 80) & 0xffff,
        (n >> 64) & 0xffff,
        (n >> 48) & 0xffff,
        n & 0xffff_ffff_ffff
    )
}

/// `envoi check` on an HTTPS mail API: the token and the mailbox proved without
/// sending (Graph reads the mailbox's settings, Gmail the token user's profile).
#[derive(Debug, Clone)]
pub struct ApiCheck {
    /// "Microsoft Graph", "the Gmail API".
    pub service: &'static str,
    /// The URL asked.
    pub url: String,
    /// The mailbox (Graph) or the token's address (Gmail, when the service said it).
    pub mailbox: Option<String>,
    /// What the answer proves, in words.
    pub finding: String,
    /// The proxy the requests went through (`scheme://host:port`), if any.
    pub proxy: Option<String>,
}

/// `envoi check` for `api` within `timeout`.
pub(crate) fn check(api: &ApiProfile, timeout: Duration) -> Result<ApiCheck> {
    let deadline = Instant::now() + timeout;
    let transport = open(api, Some(deadline), None)?;
    let url = match api.service {
        Service::Graph => graph::check_url(api)?,
        Service::Gmail => gmail::check_url(api),
    };
    let bearer = format!("Bearer {}", transport.token.current.expose());
    let answer = transport.client.get(
        &url,
        &[("Authorization", bearer.as_str())],
        cut_to_deadline(api.timeout, Some(deadline)),
    )?;
    let checked = match api.service {
        Service::Graph => graph::checked(api, &answer),
        Service::Gmail => gmail::checked(&answer),
    };
    match checked {
        Some((mailbox, finding)) => Ok(ApiCheck {
            service: api.service.name(),
            url,
            mailbox,
            finding,
            proxy: api.proxy.as_ref().map(|(proxy, _)| proxy.to_string()),
        }),
        None => Err(transport.refusal(&answer).error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(service: Service) -> ApiTransport {
        let api = ApiProfile {
            service,
            api_url: "https://127.0.0.1:9".into(),
            mailbox: Some("box@example.com".into()),
            login: Ok(None),
            timeout: Duration::from_secs(1),
            ca_file: None,
            tls_fingerprint: None,
            proxy: None,
            proxy_key: crate::profile::ProxyKey::Unset,
        };
        ApiTransport {
            client: client(&api).unwrap(),
            api,
            token: Token {
                user: "u".into(),
                current: Password::new("tok-123".into()),
                source: TokenSource::Given(PasswordSource::Env("T".into())),
                unused: true,
            },
            transcript: None,
            unreachable: false,
        }
    }

    /// Each status in envoi's terms, the service's words kept and the token never shown.
    #[test]
    fn answers_become_envois_outcomes() {
        let graph = transport(Service::Graph);
        let answer = |status: u16, body: &str, retry_after: Option<u64>| Answer {
            status,
            request_id: None,
            retry_after: retry_after.map(Duration::from_secs),
            body: body.into(),
            unread: None,
        };
        let denied =
            r#"{"error":{"code":"ErrorAccessDenied","message":"Access is denied for tok-123."}}"#;
        for (status, kind, says) in [
            (401, ErrorKind::AuthRefused, "token was refused"),
            (403, ErrorKind::AuthRefused, "Mail.Send"),
            (400, ErrorKind::InvalidData, "refused this message"),
            (413, ErrorKind::InvalidData, "refused this message"),
            (404, ErrorKind::Config, "no mailbox box@example.com"),
            (429, ErrorKind::Temporary, "busy"),
            (503, ErrorKind::Temporary, "busy"),
            (302, ErrorKind::Config, "redirects"),
            (415, ErrorKind::Unavailable, "check api_url"),
        ] {
            let refusal = graph.refusal(&answer(status, denied, None));
            assert_eq!(refusal.error.kind(), kind, "{status}");
            let message = refusal.error.message();
            assert!(message.contains(says), "{status}: {message}");
            assert!(
                message.contains("ErrorAccessDenied: Access is denied"),
                "{message}"
            );
            assert!(!message.contains("tok-123"), "{message}");
            assert_eq!(refusal.unauthorized, status == 401);
        }
        let busy = graph.refusal(&answer(429, "", Some(7)));
        assert_eq!(busy.retry_after, Some(Duration::from_secs(7)));
        assert!(
            busy.error.message().contains("asks to wait 7 s"),
            "{}",
            busy.error
        );
        let gmail = transport(Service::Gmail);
        let scope = gmail.refusal(&answer(403, "{}", None));
        assert!(
            scope.error.message().contains("gmail.send"),
            "{}",
            scope.error
        );
    }

    /// A 403 says what to fix by Graph's code: a mailbox Graph cannot reach is not a
    /// missing permission.
    #[test]
    fn a_403_names_the_fix_its_code_calls_for() {
        let graph = transport(Service::Graph);
        for (code, says, not) in [
            ("MailboxNotEnabledForRESTAPI", "on-premises", "Mail.Send"),
            ("ErrorSendAsDenied", "Send As", "admin consent"),
            ("ErrorAccessDenied", "Mail.Send", "on-premises"),
        ] {
            let answer = Answer {
                status: 403,
                request_id: None,
                retry_after: None,
                body: format!(r#"{{"error":{{"code":"{code}","message":"no"}}}}"#),
                unread: None,
            };
            let message = graph.refusal(&answer).error.message().to_owned();
            assert!(message.contains(says), "{code}: {message}");
            assert!(!message.contains(not), "{code}: {message}");
        }
    }
    #[test]
    fn client_request_ids_are_uuids() {
        let id = uuid();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "4", "{id}");
        assert!("89ab".contains(&id[19..20]), "{id}");
        assert_ne!(uuid(), id);
    }
}
