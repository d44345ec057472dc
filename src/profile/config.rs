//! Connections as profiles in a TOML file, and the `--smtp-url` shortcut.
//!
//! The file is `--config PATH`, else `$ENVOI_CONFIG`, else `envoi/config.toml` in the
//! platform config directory (`~/.config` on Linux and macOS). `config.example.toml`
//! documents every key. A file that cannot be read or parsed is an error (exit 78):
//! a mail sender must not silently fall back to other settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::message::address;
use crate::message::check::{self, no_line_breaks};
use crate::message::given::{Names, SetFromHeader};
use crate::ownership::{self, Owner, ReadError};
use crate::profile::aliases::{self, AliasValue};
use crate::profile::dkim::Dkim;
use crate::profile::env::{Env, Origin, ProxyEnv};
use crate::profile::fingerprint::{Fingerprint, profile_pin};
use crate::profile::log::LogSettings;
use crate::profile::oauth2::{OAuth2, OAuth2Entry};
use crate::profile::password::{Password, PasswordSource};
use crate::profile::policy::{PolicyEntry, RecipientPolicy, RuleOrigin};
use crate::profile::proxy::{Proxy, ProxyKey};
use crate::profile::sent_copy::{SentCopy, SentCopyEntry};
use crate::profile::suggest;

/// A profile of a route, with its name.
pub(crate) type Hop = (String, Profile);

/// One entry of `[routes]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RouteEntry {
    /// `name = ["a", "b"]`: profiles tried in turn.
    List(Vec<String>),
    /// `[routes.name]`: `"*@example.com" = "a"` (a profile, or a list's name) per domain,
    /// and `"*" = "b"` for every other recipient.
    Rules(BTreeMap<String, String>),
}

/// A route of `[routes]` with its profiles checked.
#[derive(Debug)]
pub(crate) struct Routing {
    /// Its name.
    pub(crate) name: String,
    /// The profiles of every recipient no domain rule names (of all, for a list), in the
    /// order they are tried, the first apart.
    pub(crate) chain: (Hop, Vec<Hop>),
    /// Each `"*@domain"` rule: the domain (lowercase) and its profiles, likewise.
    pub(crate) domains: Vec<(String, (Hop, Vec<Hop>))>,
}

/// The domain of a rule's pattern, lowercase: `Some(None)` for `"*"`, `None` for a
/// pattern that is neither `"*"` nor `"*@domain"`.
fn rule_domain(pattern: &str) -> Option<Option<String>> {
    if pattern == "*" {
        return Some(None);
    }
    let domain = pattern.strip_prefix("*@")?;
    let fits = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    fits.then(|| Some(domain.to_lowercase()))
}

/// The whole config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// The profile used when `--profile` is not given.
    default: Option<String>,
    /// Named connections, as written; one becomes a [`Profile`] when selected, so a
    /// broken profile the run does not use does not stop it.
    #[serde(default)]
    profiles: BTreeMap<String, ProfileEntry>,
    /// Routes: a name for profiles tried in turn, each only while the ones before
    /// certainly did not take the message (`[routes]`, `name = ["a", "b"]`), or for
    /// rules that choose by the recipient's domain (`[routes.name]`).
    #[serde(default)]
    routes: BTreeMap<String, RouteEntry>,
    /// The delivery log of every profile that sets none (`log`, `log_facility`).
    log: Option<String>,
    log_facility: Option<String>,
    /// The idempotency ledger of every profile that sets none (`ledger`), and where its
    /// database password comes from (`ledger_password_env`, `ledger_password_command`).
    ledger: Option<String>,
    ledger_password_env: Option<String>,
    ledger_password_command: Option<String>,
    /// The recipient policy of every profile of the file (`[policy]`), which a
    /// profile's own `[profiles.NAME.policy]` adds to and cannot loosen.
    policy: Option<PolicyEntry>,
    /// The suppression list of every profile that sets none (`suppress`).
    suppress: Option<PathBuf>,
    /// Where it was read from, for errors that must name it.
    #[serde(skip)]
    path: PathBuf,
    /// The system-wide file, looked for too when the user's own file is missing (so
    /// missing as well), for the same errors.
    #[serde(skip)]
    system_missing: Option<PathBuf>,
}

/// A `[profiles.NAME]` table exactly as the file spells it; `config.example.toml`
/// documents each key.
///
/// Every key is an `Option`, even those with a default, so `envoi config show` can tell
/// a value written in the file from a default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProfileEntry {
    pub(super) transport: Option<TransportKey>,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) security: Option<Security>,
    pub(super) username: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_command: Option<String>,
    pub(super) password: Option<Password>,
    pub(super) auth: Option<Auth>,
    pub(super) token_env: Option<String>,
    pub(super) token_command: Option<String>,
    pub(super) oauth2: Option<OAuth2Entry>,
    pub(super) from: Option<String>,
    pub(super) timeout_secs: Option<u64>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) tls_fingerprint: Option<String>,
    pub(super) hello_name: Option<String>,
    pub(super) allow_plaintext_auth: Option<bool>,
    pub(super) proxy: Option<String>,
    pub(super) proxy_password_env: Option<String>,
    pub(super) dir: Option<PathBuf>,
    pub(super) mailbox: Option<String>,
    pub(super) save_to_sent: Option<bool>,
    pub(super) api_url: Option<String>,
    pub(super) outbox: Option<bool>,
    pub(super) outbox_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) aliases: BTreeMap<String, AliasValue>,
    pub(super) aliases_file: Option<PathBuf>,
    pub(super) default_domain: Option<String>,
    pub(super) allow_from_override: Option<bool>,
    pub(super) set_from_header: Option<SetFromHeader>,
    pub(super) dkim_selector: Option<String>,
    pub(super) dkim_domain: Option<String>,
    pub(super) dkim_key_file: Option<PathBuf>,
    pub(super) log: Option<String>,
    pub(super) log_facility: Option<String>,
    pub(super) ledger: Option<String>,
    pub(super) ledger_password_env: Option<String>,
    pub(super) ledger_password_command: Option<String>,
    pub(super) policy: Option<PolicyEntry>,
    pub(super) sent_copy: Option<SentCopyEntry>,
    pub(super) suppress: Option<PathBuf>,
}

/// The `transport` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum TransportKey {
    #[default]
    Smtp,
    File,
    Graph,
    Gmail,
}

impl TransportKey {
    /// The HTTPS mail API this transport speaks, if it is one.
    fn service(self) -> Option<Service> {
        match self {
            TransportKey::Graph => Some(Service::Graph),
            TransportKey::Gmail => Some(Service::Gmail),
            TransportKey::Smtp | TransportKey::File => None,
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Implicit TLS from the first byte (port 465).
    Tls,
    /// Plain connection upgraded with STARTTLS, which is required: never downgraded.
    #[default]
    Starttls,
    /// No TLS at all.
    None,
}

impl Security {
    /// The name the config file uses for it.
    pub fn name(self) -> &'static str {
        match self {
            Security::Tls => "tls",
            Security::Starttls => "starttls",
            Security::None => "none",
        }
    }

    /// The usual port for this security.
    pub fn default_port(self) -> u16 {
        match self {
            Security::Tls => 465,
            Security::Starttls => 587,
            Security::None => 25,
        }
    }
}

/// How envoi logs in (the `auth` key): with a password, or with an OAuth2 bearer token
/// as Microsoft 365 and Gmail require.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// AUTH PLAIN, else LOGIN, as the server offers; the secret is a password.
    #[default]
    Password,
    /// SASL XOAUTH2 (Google's and Microsoft's mechanism); the secret is a bearer token.
    Xoauth2,
    /// SASL OAUTHBEARER (RFC 7628); the secret is a bearer token.
    Oauthbearer,
}

impl Auth {
    /// The name the config file uses for it.
    pub fn name(self) -> &'static str {
        match self {
            Auth::Password => "password",
            Auth::Xoauth2 => "xoauth2",
            Auth::Oauthbearer => "oauthbearer",
        }
    }

    /// What the secret is called in errors and `config show`: a password, or a token.
    pub fn secret_word(self) -> &'static str {
        match self {
            Auth::Password => "password",
            Auth::Xoauth2 | Auth::Oauthbearer => "token",
        }
    }
}

/// Where a login's secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// A password, or a bearer token a variable or command gives
    /// ([`PasswordSource::fetch`]).
    Given(PasswordSource),
    /// An access token envoi gets from an OAuth2 token endpoint itself
    /// (`[profiles.NAME.oauth2]`; the delivery layer fetches and caches it).
    OAuth2(Box<OAuth2>),
}

/// One named connection, checked: the connector's server, port, user name, password and
/// TLS, or a directory to write messages into. A profile without a host or a directory
/// cannot be built.
#[derive(Debug, Clone)]
pub struct Profile {
    /// How it delivers.
    pub transport: Transport,
    /// Default sender, used when `--from` is not given.
    pub from: Option<String>,
    /// Queue every send in the outbox first (like `--queue`).
    pub outbox: bool,
    /// The outbox directory for this profile's sends.
    pub outbox_dir: Option<PathBuf>,
    /// Sendmail mode's keys: bare names, and who sets the sender.
    pub sendmail: SendmailKeys,
    /// DKIM signing (`dkim_*` keys), when set.
    pub dkim: Option<Dkim>,
    /// Made from `--smtp-url` (or `$ENVOI_SMTP_URL`), not a config file: advice names
    /// the URL's parameters (`?ca_file=…`), which is where the fix goes.
    pub from_url: bool,
    /// Where its delivery log goes (`log`, `log_facility`, the profile's over the file's).
    pub log: LogSettings,
    /// The shared idempotency ledger (`ledger = "postgres://…"` with the source of its
    /// password, when one is given beside it; the profile's over the
    /// file's), as written: the outbox layer reads it, and only when a key is given.
    pub ledger: Option<LedgerKeys>,
    /// Its recipient policy: the file's top-level `[policy]` with the profile's own
    /// `[profiles.NAME.policy]` (the system file's is added by `resolve`).
    pub policy: RecipientPolicy,
    /// Where a copy of each message sent goes (`sent_copy = { imap = "imaps://…" }`).
    pub sent_copy: Option<SentCopy>,
    /// The suppression list `batch` skips and fills (`suppress = "/abs/path"`, the
    /// profile's over the file's): an absolute path, checked when it is read.
    pub suppress: Option<PathBuf>,
}

/// A config file's `ledger` key and the password source written beside it (the
/// profile's, or the file's top level: a password always goes to the URL it was given
/// with, never to one a flag or variable chose).
#[derive(Debug, Clone)]
pub struct LedgerKeys {
    /// `postgres://USER@HOST:PORT/DB`, as written.
    pub url: String,
    /// `ledger_password_env` or `ledger_password_command`; `None`: `$PGPASSWORD`.
    pub password: Option<PasswordSource>,
}

/// A `suppress` key: an absolute path (78 else). A relative one would name another file
/// in each working directory, and a cron job's batch would miss the list.
fn suppress_path(level: &str, path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        Err(Error::config(format!(
            "{level}: suppress = {path:?} is not an absolute path; a relative one would \
             depend on the directory envoi runs in: write the whole path, like \
             \"/home/me/.local/state/envoi/suppress.tsv\""
        )))
    }
}

/// The ledger keys of one level of the file (a profile, or the top): 78 when both
/// password keys are given, or one without `ledger` beside it.
fn ledger_keys(
    level: &str,
    url: Option<&String>,
    env: Option<&String>,
    command: Option<&String>,
) -> Result<Option<LedgerKeys>> {
    let password = match (env, command) {
        (Some(_), Some(_)) => {
            return Err(Error::config(format!(
                "{level}: give only one of ledger_password_env and ledger_password_command"
            )));
        }
        (Some(var), None) => Some(PasswordSource::Env(var.clone())),
        (None, Some(command)) => Some(PasswordSource::Command(command.clone())),
        (None, None) => None,
    };
    match url {
        Some(url) => Ok(Some(LedgerKeys {
            url: url.clone(),
            password,
        })),
        None if password.is_some() => Err(Error::config(format!(
            "{level}: a ledger password key is set but ledger is not; set ledger = \
             \"postgres://USER@HOST:PORT/DB\" beside it"
        ))),
        None => Ok(None),
    }
}

/// The keys only sendmail mode reads, named as msmtp names those it shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendmailKeys {
    /// How bare names like `root` become addresses: `[profiles.NAME.aliases]` and
    /// `default_domain` (the `aliases_file`'s are read by [`SendmailKeys::names`]).
    pub names: Names,
    /// The system aliases file to read too (`aliases_file`, `/etc/aliases`).
    pub aliases_file: Option<PathBuf>,
    /// Whether `-f`/`-r` may set the envelope sender (msmtp's key, on by default as
    /// there); false pins it to `from`.
    pub allow_from_override: bool,
    /// What becomes of the message's From field (msmtp's key and values).
    pub set_from_header: SetFromHeader,
}

impl Default for SendmailKeys {
    fn default() -> SendmailKeys {
        SendmailKeys {
            names: Names::default(),
            aliases_file: None,
            allow_from_override: true,
            set_from_header: SetFromHeader::Auto,
        }
    }
}

impl SendmailKeys {
    /// The names sendmail mode qualifies with: the profile's aliases, and those of its
    /// `aliases_file`, read now (only sendmail mode reads it, so a missing file fails
    /// no other command), for names the profile's table does not have.
    pub fn names(&self) -> Result<Names> {
        let mut names = self.names.clone();
        if let Some(path) = &self.aliases_file {
            for (name, alias) in aliases::read_file(path)? {
                names.aliases.entry(name).or_insert(alias);
            }
        }
        Ok(names)
    }
}

/// Where a profile delivers.
// A run holds one or two: the size of the SMTP variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Transport {
    /// Over SMTP.
    Smtp(SmtpProfile),
    /// Into a directory of `.eml` files (`transport = "file"`).
    File {
        /// The directory.
        dir: PathBuf,
    },
    /// Over an HTTPS mail API (`transport = "graph"` or `"gmail"`), for hosts and
    /// tenants where SMTP is switched off or blocked.
    Api(ApiProfile),
}

/// The HTTPS mail APIs envoi sends through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Microsoft Graph `sendMail`, the message as MIME.
    Graph,
    /// The Gmail API `users.messages.send`.
    Gmail,
}

impl Service {
    /// The `transport` value that names it.
    pub fn key(self) -> &'static str {
        match self {
            Service::Graph => "graph",
            Service::Gmail => "gmail",
        }
    }

    /// Its name in sentences: "accepted by Microsoft Graph".
    pub fn name(self) -> &'static str {
        match self {
            Service::Graph => "Microsoft Graph",
            Service::Gmail => "the Gmail API",
        }
    }

    /// Where the service is when the profile says nothing (`api_url`).
    pub fn default_url(self) -> &'static str {
        match self {
            Service::Graph => "https://graph.microsoft.com/v1.0",
            Service::Gmail => "https://gmail.googleapis.com",
        }
    }
}

/// A profile that sends over Microsoft Graph or the Gmail API.
#[derive(Debug, Clone)]
pub struct ApiProfile {
    /// Which API.
    pub service: Service,
    /// The API's base URL without a trailing `/` (https, or http to this machine).
    pub api_url: String,
    /// Graph: the mailbox that sends (in the request path): `mailbox`, else the
    /// profile's `from` address; `None` then means the message's sender. The Gmail API
    /// always sends as the token's own user (`me`).
    pub mailbox: Option<String>,
    /// The identity of the token (`username`, else the mailbox or `from` address) and
    /// where the token comes from; an `Err` fails the delivery that needs it (78), as
    /// for SMTP.
    pub login: Result<Option<(String, SecretSource)>>,
    /// For connecting and for each request.
    pub timeout: Duration,
    /// A PEM file with extra trusted root certificates (a proxy that inspects TLS, a
    /// test server).
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 of the one certificate the service may present (a TLS-inspecting
    /// proxy's, say): with it, that match is the whole trust.
    pub tls_fingerprint: Option<Fingerprint>,
    /// The proxy the requests go through, and what chose it: [`Origin::File`] for the
    /// `proxy` key (or the URL's `?proxy=`), [`Origin::Variable`] for `HTTPS_PROXY` or
    /// `ALL_PROXY`; `None` to connect directly.
    pub proxy: Option<(Proxy, Origin)>,
    /// The `proxy` key as written: whether the environment may choose a proxy.
    pub(crate) proxy_key: ProxyKey,
}

/// An SMTP server and how to log in to it.
#[derive(Debug, Clone)]
pub struct SmtpProfile {
    /// Host name or IP address.
    pub host: String,
    /// Port (the profile's, else the usual one for `security`).
    pub port: u16,
    /// Implicit TLS, required STARTTLS, or none.
    pub security: Security,
    /// User name and where its secret comes from (a password, or for the OAuth2
    /// mechanisms a bearer token); `None` logs in as nobody.
    ///
    /// A login the profile got wrong (a user name without a password, two password
    /// sources) is an `Err` here and fails the delivery that needs it (78), not the
    /// selection: a dry run or a look at the outbox does not log in.
    pub login: Result<Option<(String, SecretSource)>>,
    /// How to log in: which SASL mechanism, and so what the secret is.
    pub auth: Auth,
    /// For connecting and for each command.
    pub timeout: Duration,
    /// A PEM file with extra trusted root certificates (a private CA), or the server's
    /// own self-signed certificate.
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 of the one certificate the server may present. With it, that match is
    /// the whole trust: no CA, expiry or host name is checked.
    pub tls_fingerprint: Option<Fingerprint>,
    /// The name sent in EHLO (`None`: this machine's host name).
    pub hello_name: Option<String>,
    /// Allow AUTH on a connection without TLS.
    pub allow_plaintext_auth: bool,
    /// The proxy the connection goes through, and what chose it: [`Origin::File`] for
    /// the `proxy` key (or `--smtp-url`'s `?proxy=`), [`Origin::Variable`] for
    /// `ALL_PROXY`; `None` to connect directly.
    pub proxy: Option<(Proxy, Origin)>,
    /// The `proxy` key as written: whether the environment may choose a proxy.
    pub(crate) proxy_key: ProxyKey,
}

impl Profile {
    /// Lets the environment's proxy variables choose the proxies, unless the `proxy` key
    /// did (a bad `ALL_PROXY` is 78, naming it): the transport's (an SMTP server as curl
    /// reads `smtp://`, an HTTPS API as it reads `https://`) and the `[oauth2]` token
    /// endpoint's (for its own host, as an `https://` URL).
    pub(crate) fn take_proxy_env(&mut self, env: &ProxyEnv) -> Result<()> {
        let (key, login) = match &mut self.transport {
            Transport::Smtp(smtp) => {
                smtp.proxy = smtp.proxy_key.choose(&smtp.host, env)?;
                (&smtp.proxy_key, &mut smtp.login)
            }
            Transport::Api(api) => {
                api.proxy = api.proxy_key.choose_https(&url_host(&api.api_url), env)?;
                (&api.proxy_key, &mut api.login)
            }
            Transport::File { .. } => return Ok(()),
        };
        if let Ok(Some((_, SecretSource::OAuth2(oauth)))) = login {
            oauth.proxy = key
                .choose_https(&url_host(&oauth.token_url), env)?
                .map(|(proxy, _)| proxy);
        }
        Ok(())
    }

    /// The SMTP login's user name, when the profile logs in (and its login keys are
    /// right): what the pre-send lint compares the From domain with.
    pub fn login_user(&self) -> Option<&str> {
        match &self.transport {
            Transport::Smtp(smtp) => smtp.login.as_ref().ok()?.as_ref().map(|(u, _)| u.as_str()),
            Transport::Api(api) => api.login.as_ref().ok()?.as_ref().map(|(u, _)| u.as_str()),
            Transport::File { .. } => None,
        }
    }

    /// The user name and `[oauth2]` table, when the profile gets its tokens itself
    /// (`envoi auth`).
    pub fn oauth2(&self) -> Option<(&str, &OAuth2)> {
        match self.login()?.as_ref().ok()? {
            Some((user, SecretSource::OAuth2(oauth))) => Some((user, oauth)),
            _ => None,
        }
    }

    /// The login of a transport that logs in (SMTP, the HTTPS APIs): the user name and
    /// where its secret comes from, or why the profile's keys for it are wrong.
    pub fn login(&self) -> Option<&Result<Option<(String, SecretSource)>>> {
        match &self.transport {
            Transport::Smtp(smtp) => Some(&smtp.login),
            Transport::Api(api) => Some(&api.login),
            Transport::File { .. } => None,
        }
    }

    /// Why this profile's provider needs no copy in Sent from envoi (`sent_copy`), when
    /// it files every message it sends there itself (Gmail, Microsoft 365, their HTTPS
    /// APIs): a second copy would be a duplicate.
    pub fn files_sent_itself(&self) -> Option<&'static str> {
        match &self.transport {
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

    /// A profile that writes `.eml` files into `dir`.
    pub fn file(dir: impl Into<PathBuf>) -> Profile {
        Profile {
            transport: Transport::File { dir: dir.into() },
            from: None,
            outbox: false,
            outbox_dir: None,
            sendmail: SendmailKeys::default(),
            dkim: None,
            from_url: false,
            log: LogSettings::default(),
            ledger: None,
            policy: RecipientPolicy::default(),
            sent_copy: None,
            suppress: None,
        }
    }
}

/// What EHLO may carry (RFC 5321 §4.1.1.1): a domain of letters, digits and hyphens in
/// dot-separated labels of 1–63 characters, or an address literal in brackets.
fn is_hello_name(name: &str) -> bool {
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return match literal.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        };
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label_ok)
}

/// Default for `timeout_secs`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl ProfileEntry {
    /// Checks the entry called `name` and turns it into a [`Profile`].
    fn into_profile(self, name: &str) -> Result<Profile> {
        let bad = |what: String| Error::config(format!("profile {name:?}: {what}"));
        for (key, value) in [
            ("host", &self.host),
            ("username", &self.username),
            ("hello_name", &self.hello_name),
        ] {
            if let Some(v) = value {
                no_line_breaks(&format!("profile {name:?}: {key}"), v)?;
            }
        }
        if let Some(hello) = &self.hello_name
            && !is_hello_name(hello)
        {
            return Err(bad(format!(
                "hello_name {hello:?} must be a host name (like mail.example.com) or an address \
                 literal (like [192.0.2.1])"
            )));
        }
        if self.timeout_secs == Some(0) {
            return Err(bad("timeout_secs must be at least 1".into()));
        }
        let dkim = Dkim::from_keys(
            name,
            self.dkim_selector.as_deref(),
            self.dkim_domain.as_deref(),
            self.dkim_key_file.as_deref(),
        )?;
        let security = self.security.unwrap_or_default();
        let transport_key = self.transport.unwrap_or_default();
        if transport_key.service().is_none()
            && let Some(key) = [
                ("mailbox", self.mailbox.is_some()),
                ("save_to_sent", self.save_to_sent.is_some()),
                ("api_url", self.api_url.is_some()),
            ]
            .into_iter()
            .find_map(|(key, set)| set.then_some(key))
        {
            return Err(bad(format!(
                "{key} is for transport = \"graph\" or \"gmail\"; remove it, or set transport"
            )));
        }
        let transport = match transport_key {
            TransportKey::Graph => Transport::Api(self.api_profile(name, Service::Graph)?),
            TransportKey::Gmail => Transport::Api(self.api_profile(name, Service::Gmail)?),
            TransportKey::File => Transport::File {
                dir: self
                    .dir
                    .ok_or_else(|| bad("transport = \"file\" needs dir".into()))?,
            },
            TransportKey::Smtp => {
                let host = self
                    .host
                    .clone()
                    .ok_or_else(|| bad("host is missing".into()))?;
                let tls_fingerprint = profile_pin(
                    name,
                    self.tls_fingerprint.as_deref(),
                    self.ca_file.is_some(),
                )?;
                let proxy_key = self.proxy_key(name)?;
                Transport::Smtp(SmtpProfile {
                    login: self.login(name),
                    auth: self.auth.unwrap_or_default(),
                    host,
                    port: self.port.unwrap_or(security.default_port()),
                    security,
                    timeout: self
                        .timeout_secs
                        .map(Duration::from_secs)
                        .unwrap_or(DEFAULT_TIMEOUT),
                    ca_file: self.ca_file.clone(),
                    tls_fingerprint,
                    hello_name: self.hello_name,
                    allow_plaintext_auth: self.allow_plaintext_auth.unwrap_or(false),
                    proxy: None,
                    proxy_key,
                })
            }
        };
        let sendmail = SendmailKeys {
            names: Names {
                aliases: aliases::from_table(name, &self.aliases)?,
                default_domain: self.default_domain,
            },
            aliases_file: self.aliases_file,
            allow_from_override: self.allow_from_override.unwrap_or(true),
            set_from_header: self.set_from_header.unwrap_or_default(),
        };
        // Both pin the sender to `from`: without one, every sendmail run would fail.
        if self.from.is_none()
            && let Some(key) = [
                ("allow_from_override = false", !sendmail.allow_from_override),
                (
                    "set_from_header = \"on\"",
                    sendmail.set_from_header == SetFromHeader::On,
                ),
            ]
            .into_iter()
            .find_map(|(key, set)| set.then_some(key))
        {
            return Err(bad(format!(
                "{key} makes the profile's `from` the sender of what sendmail mode sends, \
                 but from is not set: set from = \"you@example.com\", or remove {key}"
            )));
        }
        let sent_copy = match self.sent_copy {
            Some(_) if transport_key == TransportKey::File => {
                return Err(bad(
                    "sent_copy is for profiles that send (smtp, graph, gmail): transport = \
                     \"file\" only writes files; remove sent_copy"
                        .into(),
                ));
            }
            Some(entry) => Some(entry.check(name, self.ca_file.as_ref())?),
            None => None,
        };
        let mut profile = Profile {
            transport,
            from: self.from,
            outbox: self.outbox.unwrap_or(false),
            outbox_dir: self.outbox_dir,
            sendmail,
            dkim,
            from_url: false,
            log: LogSettings::default(),
            ledger: None,
            policy: RecipientPolicy::default(),
            sent_copy,
            suppress: None,
        };
        // The `proxy` key's choice; the environment's comes with the route.
        profile.take_proxy_env(&ProxyEnv::default())?;
        Ok(profile)
    }

    /// The `proxy` key with `proxy_password_env`, as written.
    fn proxy_key(&self, name: &str) -> Result<ProxyKey> {
        match &self.proxy {
            Some(value) => ProxyKey::parse(
                &format!("profile {name:?}: proxy"),
                value,
                self.proxy_password_env.as_deref(),
            ),
            None if self.proxy_password_env.is_some() => Err(Error::config(format!(
                "profile {name:?}: proxy_password_env is set but proxy is not"
            ))),
            None => Ok(ProxyKey::Unset),
        }
    }

    /// The user name and its secret's source: exactly one source with a user name, of
    /// the kind `auth` needs (a password, or a token for the OAuth2 mechanisms).
    fn login(&self, name: &str) -> Result<Option<(String, SecretSource)>> {
        let auth = self.auth.unwrap_or_default();
        if auth != Auth::Password {
            return self.token_login(name, auth);
        }
        if self.oauth2.is_some() {
            return Err(Error::config(format!(
                "profile {name:?}: [profiles.{name}.oauth2] is for auth = \"xoauth2\" or \
                 \"oauthbearer\"; set auth, or remove the table"
            )));
        }
        if let Some(key) = [
            ("token_env", &self.token_env),
            ("token_command", &self.token_command),
        ]
        .into_iter()
        .find_map(|(key, value)| value.as_ref().map(|_| key))
        {
            return Err(Error::config(format!(
                "profile {name:?}: {key} is for auth = \"xoauth2\" or \"oauthbearer\"; \
                 set auth, or use password_env / password_command for a password"
            )));
        }
        let sources = [
            self.password_env.clone().map(PasswordSource::Env),
            self.password_command.clone().map(PasswordSource::Command),
            self.password.clone().map(PasswordSource::Inline),
        ];
        let mut given = sources.into_iter().flatten();
        let (first, second) = (given.next(), given.next());
        if second.is_some() {
            return Err(Error::config(format!(
                "profile {name:?}: give only one of password_env, password_command and password"
            )));
        }
        match (&self.username, first) {
            (None, None) => Ok(None),
            (Some(user), Some(source)) => Ok(Some((user.clone(), SecretSource::Given(source)))),
            (Some(_), None) => Err(Error::config(format!(
                "profile {name:?}: username is set but no password_env, password_command or password"
            ))),
            (None, Some(_)) => Err(Error::config(format!(
                "profile {name:?}: a password is set but no username"
            ))),
        }
    }
}

impl ProfileEntry {
    /// The `[profiles.NAME]` of `transport = "graph"` or `"gmail"`, checked: no SMTP key,
    /// an `api_url` that keeps the token private, and one token source.
    fn api_profile(&self, name: &str, service: Service) -> Result<ApiProfile> {
        let bad = |what: String| Error::config(format!("profile {name:?}: {what}"));
        let transport = service.key();
        for (key, set) in [
            ("host", self.host.is_some()),
            ("port", self.port.is_some()),
            ("security", self.security.is_some()),
            ("auth", self.auth.is_some()),
            ("password_env", self.password_env.is_some()),
            ("password_command", self.password_command.is_some()),
            ("password", self.password.is_some()),
            ("hello_name", self.hello_name.is_some()),
            ("allow_plaintext_auth", self.allow_plaintext_auth.is_some()),
            ("dir", self.dir.is_some()),
        ] {
            if set {
                return Err(bad(format!(
                    "transport = \"{transport}\" sends over HTTPS: remove {key}"
                )));
            }
        }
        if service == Service::Gmail {
            for (key, set) in [
                ("mailbox", self.mailbox.is_some()),
                ("save_to_sent", self.save_to_sent.is_some()),
            ] {
                if set {
                    return Err(bad(format!(
                        "{key} is for transport = \"graph\": the Gmail API sends as the \
                         token's own user and always keeps a copy in Sent; remove {key}"
                    )));
                }
            }
        }
        if self.save_to_sent == Some(false) {
            return Err(bad(
                "save_to_sent = false cannot be honoured: envoi hands Graph the message as \
                 MIME, and Graph's sendMail always saves a MIME message to Sent Items (only its \
                 JSON form takes saveToSentItems); remove save_to_sent"
                    .into(),
            ));
        }
        let tls_fingerprint = profile_pin(
            name,
            self.tls_fingerprint.as_deref(),
            self.ca_file.is_some(),
        )?;
        let api_url = api_url(
            &format!("profile {name:?}: api_url"),
            self.api_url.as_deref().unwrap_or(service.default_url()),
        )?;
        if let Some(mailbox) = &self.mailbox {
            address::parse_single(&format!("profile {name:?}: mailbox"), mailbox)?;
        }
        let from = self
            .from
            .as_deref()
            .map(|f| address::parse_single(&format!("profile {name:?}: from"), f))
            .transpose()?
            .map(|m| m.email.to_string());
        let mailbox = match service {
            Service::Graph => self.mailbox.clone().or_else(|| from.clone()),
            Service::Gmail => None,
        };
        let user = self.username.clone().or_else(|| mailbox.clone()).or(from);
        let login = self
            .token_source(name, &format!("transport = \"{transport}\""))
            .and_then(|source| match user {
                Some(user) => Ok(Some((user, source))),
                None => Err(bad(format!(
                    "transport = \"{transport}\" needs from (the address that sends) or \
                     username (whose token it is)"
                ))),
            });
        Ok(ApiProfile {
            service,
            api_url,
            mailbox,
            login,
            timeout: self
                .timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_TIMEOUT),
            ca_file: self.ca_file.clone(),
            tls_fingerprint,
            proxy: None,
            proxy_key: self.proxy_key(name)?,
        })
    }

    /// Where the bearer token of `needs` (`auth = "xoauth2"`, `transport = "graph"`)
    /// comes from: exactly one of token_env, token_command and the `oauth2` table.
    fn token_source(&self, name: &str, needs: &str) -> Result<SecretSource> {
        let bad = |what: String| Err(Error::config(format!("profile {name:?}: {what}")));
        match (&self.token_env, &self.token_command, &self.oauth2) {
            (Some(var), None, None) => Ok(SecretSource::Given(PasswordSource::Env(var.clone()))),
            (None, Some(command), None) => Ok(SecretSource::Given(PasswordSource::Command(
                command.clone(),
            ))),
            (None, None, Some(table)) => Ok(SecretSource::OAuth2(Box::new(table.check(name)?))),
            (Some(_), Some(_), _) => bad("give only one of token_env and token_command".into()),
            (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => bad(format!(
                "give token_env / token_command or a [profiles.{name}.oauth2] table, not both"
            )),
            (None, None, None) => bad(format!(
                "{needs} needs token_env, token_command (a program that prints an access \
                 token, like oama or `gcloud auth print-access-token`) or a \
                 [profiles.{name}.oauth2] table"
            )),
        }
    }

    /// The user name and token source of an OAuth2 mechanism: a user name and exactly
    /// one of token_env, token_command and the `oauth2` table; a password key is a
    /// mistake, named.
    fn token_login(&self, name: &str, auth: Auth) -> Result<Option<(String, SecretSource)>> {
        let bad = |what: String| Err(Error::config(format!("profile {name:?}: {what}")));
        let mechanism = auth.name();
        if self.password_env.is_some() || self.password_command.is_some() || self.password.is_some()
        {
            return bad(format!(
                "auth = \"{mechanism}\" logs in with a token, not a password: use token_env \
                 or token_command instead of password_env, password_command or password"
            ));
        }
        let source = self.token_source(name, &format!("auth = \"{mechanism}\""))?;
        match &self.username {
            Some(user) => Ok(Some((user.clone(), source))),
            None => bad(format!(
                "auth = \"{mechanism}\" needs username (the mailbox the token is for)"
            )),
        }
    }
}

/// Why envoi uses the config file it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--config`.
    Flag,
    /// `$ENVOI_CONFIG`.
    Variable,
    /// The platform's config directory.
    Platform,
    /// The system-wide file (`/etc/envoi/config.toml`, or `$ENVOI_SYSTEM_CONFIG`): the
    /// user has no file of their own.
    System,
}

impl ConfigSource {
    /// A file named by flag or variable must exist; the platform's may not (and the
    /// system's is only chosen when it exists).
    pub(crate) fn is_explicit(self) -> bool {
        matches!(self, ConfigSource::Flag | ConfigSource::Variable)
    }
}

/// Whether the system file is at `path`: one that cannot be stat'ed (`/etc/envoi` closed
/// to this user) counts as there, so that sendmail mode uses the spool and other commands
/// name it in their error.
fn is_there(path: &Path) -> bool {
    !matches!(path.try_exists(), Ok(false))
}

/// Where the config file is: `--config`, else `$ENVOI_CONFIG`, else the platform path
/// when that file exists, else the system-wide file when it exists, else the platform
/// path (where `envoi config init` writes). Not merged: the first file that exists is
/// the whole configuration, as msmtp reads `~/.msmtprc` or else `/etc/msmtprc`.
pub(crate) fn locate(flag: Option<&Path>, env: &Env) -> Option<(PathBuf, ConfigSource)> {
    let platform = env.platform_config.as_deref();
    let system = env.system_config.as_deref();
    let (path, source) = match (flag, env.config.as_deref()) {
        (Some(p), _) => (p, ConfigSource::Flag),
        (None, Some(p)) => (p, ConfigSource::Variable),
        (None, None) => match (platform, system) {
            // A folder of the user's own that they cannot open (a daemon run with root's
            // HOME) holds no file of theirs: the system's is read.
            (Some(p), _) if matches!(p.try_exists(), Ok(true)) => (p, ConfigSource::Platform),
            (_, Some(s)) if is_there(s) => (s, ConfigSource::System),
            (Some(p), _) => (p, ConfigSource::Platform),
            (None, _) => return None,
        },
    };
    Some((path.to_path_buf(), source))
}

/// The files envoi looks for when neither `--config` nor `$ENVOI_CONFIG` names one, in
/// order, for the errors that say nothing was found.
pub(crate) fn looked_for(env: &Env) -> String {
    let files: Vec<String> = [&env.platform_config, &env.system_config]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect();
    match files.as_slice() {
        [] => "no config file (this platform has no config directory)".to_owned(),
        [one] => format!("no config file at {one}"),
        [first, rest @ ..] => format!("no config file at {first} nor {}", rest.join(" nor ")),
    }
}

/// [`load`] of what [`locate`] found: a user's own file that is missing also names the
/// system-wide file in the errors of a profile not found (it was looked for too).
pub(crate) fn load_located(path: &Path, source: ConfigSource, env: &Env) -> Result<ConfigFile> {
    let mut file = load(path, source.is_explicit())?;
    if source == ConfigSource::Platform {
        file.system_missing = env.system_config.clone();
    }
    Ok(file)
}

/// Reads and parses the file. A missing file that was not named explicitly is empty.
/// Only a regular file of at most 1 MiB is read (`--config /dev/zero` or a FIFO must not
/// fill memory or hang), and the file's owner and mode must fit what it holds
/// ([`check_file`]).
pub(crate) fn load(path: &Path, explicit: bool) -> Result<ConfigFile> {
    let bytes = match ownership::read_named(path) {
        Ok(bytes) => bytes,
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(ConfigFile {
                path: path.to_path_buf(),
                ..ConfigFile::default()
            });
        }
        Err(e) => {
            return Err(Error::config(format!(
                "cannot read the config file {}: {e}",
                path.display()
            )));
        }
    };
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::config(format!(
            "the config file {} is not valid: it is not UTF-8 text",
            path.display()
        ))
    })?;
    let file = parse(path, &text)?;
    check_file(path, &file)?;
    Ok(file)
}

/// The text of the config file at `path`, parsed (nothing checked beyond its syntax and
/// the types of its keys).
pub(super) fn parse(path: &Path, text: &str) -> Result<ConfigFile> {
    // e.message() rather than e's Display, which quotes the offending line (maybe a password).
    let mut file: ConfigFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| format!(" (line {})", text[..span.start].matches('\n').count() + 1))
            .unwrap_or_default();
        // The message may repeat a value from the file (an unknown variant): escaped.
        Error::config(format!(
            "the config file {} is not valid{line}: {}",
            path.display(),
            check::escape_controls(e.message())
        ))
    })?;
    file.path = path.to_path_buf();
    Ok(file)
}

/// msmtp's rule, extended (T24, N8): a file that holds a secret must not be readable by
/// others; one that holds a secret, points to one (`password_env`, `token_env`, an
/// `oauth2` table) or runs a command must belong to this user (or root) and be writable
/// by no one else, since whoever can change it chooses the `host` the secret goes to or
/// the command that runs. Every config read goes through here, the `route.config` of an
/// outbox entry included.
fn check_file(path: &Path, file: &ConfigFile) -> Result<()> {
    const WHAT: &str = "the config file";
    let any = |f: fn(&ProfileEntry) -> bool| file.profiles.values().any(f);
    if any(|p| p.password.is_some() || p.oauth2.as_ref().is_some_and(|o| o.client_secret.is_some()))
    {
        ownership::check_private_file(path, WHAT, "a password or client secret")?;
        ownership::check_trusted_file(
            path,
            WHAT,
            "holds a password or client secret",
            Owner::MeOrRoot,
        )?;
    }
    if file.ledger_password_command.is_some()
        || any(|p| {
            p.password_command.is_some()
                || p.token_command.is_some()
                || p.ledger_password_command.is_some()
                || p.oauth2.as_ref().is_some_and(OAuth2Entry::runs_a_command)
        })
    {
        ownership::check_trusted_file(
            path,
            WHAT,
            "runs a command (password_command, token_command, ledger_password_command or an \
             oauth2 *_command)",
            Owner::MeOrRoot,
        )?;
    }
    if file.ledger_password_env.is_some()
        || any(|p| {
            p.password_env.is_some()
                || p.token_env.is_some()
                || p.oauth2.is_some()
                || p.proxy_password_env.is_some()
                || p.ledger_password_env.is_some()
        })
    {
        ownership::check_trusted_file(
            path,
            WHAT,
            "says where a secret goes (password_env, token_env, proxy_password_env, \
             ledger_password_env or an oauth2 table)",
            Owner::MeOrRoot,
        )?;
    }
    Ok(())
}

impl ConfigFile {
    /// The profile called `name`, else the `default` one. `None` when neither exists
    /// and no name was asked for.
    pub(crate) fn select(&self, name: Option<&str>) -> Result<Option<(String, Profile)>> {
        self.entry(name)?
            .map(|(name, entry)| Ok((name.to_owned(), self.profile_of(name, entry)?)))
            .transpose()
    }

    /// The route called `name` (else the `default` one, when it names a route), its
    /// profiles checked; `None` when the name is not a route's. A list that is empty,
    /// names an unknown profile, a profile twice or another list; a rule that is not
    /// `"*@domain"` or `"*"`, rules without `"*"`, or rules naming rules; a route named
    /// like a profile, which would hide it: each is 78 naming `routes.NAME`. Routes nest
    /// at most once (rules may name a list), so none can loop.
    pub(crate) fn route(&self, name: Option<&str>) -> Result<Option<Routing>> {
        let Some((name, entry)) = name
            .or(self.default.as_deref())
            .and_then(|name| self.routes.get_key_value(name))
        else {
            return Ok(None);
        };
        let key = format!("routes.{name}");
        if self.profiles.contains_key(name) {
            return Err(Error::config(format!(
                "{key}: there is also a [profiles.{name}]: give the route and the profile \
                 different names"
            )));
        }
        let rules = match entry {
            RouteEntry::List(members) => {
                return Ok(Some(Routing {
                    name: name.clone(),
                    chain: self.chain(&key, members)?,
                    domains: Vec::new(),
                }));
            }
            RouteEntry::Rules(rules) => rules,
        };
        let mut chain = None;
        let mut domains = Vec::new();
        for (pattern, target) in rules {
            let key = format!("{key}.{pattern:?}");
            let hops = match self.routes.get(target) {
                Some(RouteEntry::List(members)) => self.chain(&key, members)?,
                Some(RouteEntry::Rules(_)) => {
                    return Err(Error::config(format!(
                        "{key}: {target:?} has rules of its own: a rule names a profile or a \
                         list of profiles"
                    )));
                }
                None => self.chain(&key, std::slice::from_ref(target))?,
            };
            match rule_domain(pattern) {
                Some(None) => chain = Some(hops),
                Some(Some(domain)) => {
                    // Domains are matched without regard to case: two rules for one
                    // domain would leave it to the order of the file which one wins.
                    if domains.iter().any(|(d, _)| *d == domain) {
                        return Err(Error::config(format!(
                            "{key}: another rule already names the domain {domain} (domains \
                             are compared without regard to case): keep one"
                        )));
                    }
                    domains.push((domain, hops));
                }
                None => {
                    return Err(Error::config(format!(
                        "{key}: not a rule: write \"*@example.com\" (the recipients of one \
                         domain) or \"*\" (every other recipient)"
                    )));
                }
            }
        }
        let chain = chain.ok_or_else(|| {
            Error::config(format!(
                "{key}: no \"*\" rule: add \"*\" = \"PROFILE\" for the recipients no other \
                 rule names"
            ))
        })?;
        Ok(Some(Routing {
            name: name.clone(),
            chain,
            domains,
        }))
    }

    /// The profiles `members` of the route key `key`, checked, first apart.
    fn chain(&self, key: &str, members: &[String]) -> Result<(Hop, Vec<Hop>)> {
        let bad = |what: String| Error::config(format!("{key}: {what}"));
        let mut hops: Vec<Hop> = Vec::with_capacity(members.len());
        for member in members {
            if key.strip_prefix("routes.") == Some(member.as_str()) {
                return Err(bad("a route cannot list itself".into()));
            }
            if self.routes.contains_key(member) {
                return Err(bad(format!(
                    "{member:?} is a route: a list names profiles, not other routes (list \
                     its profiles instead)"
                )));
            }
            if hops.iter().any(|(n, _)| n == member) {
                return Err(bad(format!("{member:?} is listed twice")));
            }
            let Some(entry) = self.profiles.get(member) else {
                // The unknown-profile error, with its suggestion and list.
                return Err(match self.entry(Some(member)) {
                    Err(e) => bad(e.message().to_owned()),
                    Ok(_) => bad(format!("no profile {member:?}")),
                });
            };
            hops.push((member.clone(), self.profile_of(member, entry)?));
        }
        let mut hops = hops.into_iter();
        let first = hops.next().ok_or_else(|| {
            bad(
                "the list is empty: name the profiles to try, in order, like \
                 [\"primary\", \"backup\"]"
                    .into(),
            )
        })?;
        Ok((first, hops.collect()))
    }

    /// The profile `name` of `entry` with what it takes from the file's top level (the
    /// delivery log, the ledger): one way for a profile named alone and for each of a
    /// route's, so a route keeps every key its profiles would have.
    fn profile_of(&self, name: &str, entry: &ProfileEntry) -> Result<Profile> {
        let mut profile = entry.clone().into_profile(name)?;
        profile.log = self.log_settings(name, entry)?;
        let own = ledger_keys(
            &format!("profile {name:?}"),
            entry.ledger.as_ref(),
            entry.ledger_password_env.as_ref(),
            entry.ledger_password_command.as_ref(),
        )?;
        let top = ledger_keys(
            &format!("{} (top level)", self.path.display()),
            self.ledger.as_ref(),
            self.ledger_password_env.as_ref(),
            self.ledger_password_command.as_ref(),
        )?;
        profile.ledger = own.or(top);
        profile.policy = self.top_policy()?;
        if let Some(entry) = &entry.policy {
            let own = RecipientPolicy::from_entry(entry, &RuleOrigin::profile(name, &self.path))?;
            profile.policy = std::mem::take(&mut profile.policy).within(own);
        }
        profile.suppress = match (&entry.suppress, &self.suppress) {
            (Some(path), _) => Some(suppress_path(&format!("profile {name:?}"), path)?),
            (None, Some(path)) => Some(suppress_path(
                &format!("{} (top level)", self.path.display()),
                path,
            )?),
            (None, None) => None,
        };
        Ok(profile)
    }

    /// The file's top-level `[policy]`, checked (78 naming the key); empty without one.
    pub(crate) fn top_policy(&self) -> Result<RecipientPolicy> {
        self.policy_as(RuleOrigin::top(&self.path))
    }

    /// The top-level `[policy]` of the system file, read beside the user's own file.
    pub(crate) fn system_policy(&self) -> Result<RecipientPolicy> {
        self.policy_as(RuleOrigin::system(&self.path))
    }

    fn policy_as(&self, origin: RuleOrigin) -> Result<RecipientPolicy> {
        match &self.policy {
            Some(entry) => RecipientPolicy::from_entry(entry, &origin),
            None => Ok(RecipientPolicy::default()),
        }
    }

    /// Where the profile `name`'s delivery log goes: its `log` and `log_facility`, else
    /// the file's top-level ones.
    fn log_settings(&self, name: &str, entry: &ProfileEntry) -> Result<LogSettings> {
        LogSettings::from_keys(
            name,
            (entry.log.as_deref(), self.log.as_deref()),
            (entry.log_facility.as_deref(), self.log_facility.as_deref()),
        )
    }

    /// The `outbox_dir` of the profile called `name` (else the `default` one), without
    /// checking the rest of it: the outbox commands need only that key.
    /// A route's outbox is its first profile's (its `"*"` rule's, with rules; a list's
    /// name there names no profile, and so no outbox_dir).
    pub(crate) fn outbox_dir_of(&self, name: Option<&str>) -> Result<Option<PathBuf>> {
        let first = match name
            .or(self.default.as_deref())
            .and_then(|name| self.routes.get(name))
        {
            Some(RouteEntry::List(members)) => members.first(),
            // "*" may name a list: its first profile, as for a list named alone.
            Some(RouteEntry::Rules(rules)) => match rules.get("*") {
                Some(target) => match self.routes.get(target) {
                    Some(RouteEntry::List(members)) => members.first(),
                    _ => Some(target),
                },
                None => None,
            },
            None => None,
        };
        Ok(self
            .entry(first.map(String::as_str).or(name))?
            .and_then(|(_, entry)| entry.outbox_dir.clone()))
    }

    /// Every profile, in name order, as `envoi profiles` shows it (never a secret).
    pub(crate) fn summaries(&self) -> Vec<ProfileSummary> {
        self.profiles
            .iter()
            .map(|(name, entry)| ProfileSummary {
                name: name.clone(),
                is_default: self.default.as_deref() == Some(name.as_str()),
                target: match entry.transport.unwrap_or_default() {
                    TransportKey::File => format!(
                        "file -> {}",
                        entry
                            .dir
                            .as_deref()
                            .map_or("?".into(), |d| d.display().to_string())
                    ),
                    TransportKey::Graph | TransportKey::Gmail => format!(
                        "{} -> {}",
                        entry
                            .transport
                            .unwrap_or_default()
                            .service()
                            .map_or("?", Service::key),
                        entry
                            .api_url
                            .as_deref()
                            .or(entry
                                .transport
                                .and_then(TransportKey::service)
                                .map(Service::default_url))
                            .unwrap_or("?")
                    ),
                    TransportKey::Smtp => format!(
                        "{}:{} ({})",
                        entry.host.as_deref().unwrap_or("?"),
                        entry
                            .port
                            .unwrap_or(entry.security.unwrap_or_default().default_port()),
                        entry.security.unwrap_or_default().name()
                    ),
                },
                user: entry.username.clone(),
            })
            .collect()
    }

    /// The entry called `name`, else the `default` one; `None` when neither is named.
    pub(super) fn entry<'a>(
        &'a self,
        name: Option<&'a str>,
    ) -> Result<Option<(&'a str, &'a ProfileEntry)>> {
        let (name, why) = match (name, self.default.as_deref()) {
            (Some(name), _) => (name, ""),
            (None, Some(name)) => (name, " (the file's default)"),
            (None, None) => return Ok(None),
        };
        if let Some(entry) = self.profiles.get(name) {
            return Ok(Some((name, entry)));
        }
        let file = if self.path.as_os_str().is_empty() {
            "the config file".to_owned()
        } else {
            self.path.display().to_string()
        };
        let known = self.profiles.keys().map(String::as_str);
        let hint = match suggest::nearest(name, known.clone()) {
            Some(near) => format!("; did you mean {near:?}?"),
            None => ".".to_owned(),
        };
        let list = match self.profiles.len() {
            0 if !self.path.as_os_str().is_empty() && !self.path.exists() => {
                let nor = self
                    .system_missing
                    .as_ref()
                    .map(|p| format!(", nor does {}", p.display()))
                    .unwrap_or_default();
                format!(
                    " That file does not exist{nor}: `envoi config init` writes a commented \
                     starter there to edit"
                )
            }
            0 => " It has no [profiles.NAME] table yet".to_owned(),
            n if n <= MAX_LISTED => {
                let names: Vec<String> = known.map(|k| format!("{k:?}")).collect();
                format!(" Its profiles: {}", names.join(", "))
            }
            n => format!(" It has {n} profiles: `envoi profiles` lists them"),
        };
        Err(Error::config(format!(
            "no profile {name:?}{why} in {file}{hint}{list}"
        )))
    }
}

/// The most profile names an unknown-profile error lists; beyond, it points to
/// `envoi profiles`.
const MAX_LISTED: usize = 8;

/// One profile as `envoi profiles` shows it: where it connects, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSummary {
    /// Its name.
    pub name: String,
    /// Whether it is the file's `default`.
    pub is_default: bool,
    /// `host:port (security)`, or `file → DIR`.
    pub target: String,
    /// The user name it logs in as, if any.
    pub user: Option<String>,
}

/// An `api_url` (`what` names it), checked: `https`, or `http` only to this machine (a
/// bearer token must not cross a network in clear), no user, query or fragment; given
/// back without its trailing `/`.
fn api_url(what: &str, raw: &str) -> Result<String> {
    let bad = |why: &str| Error::config(format!("{what} {raw:?}: {why}"));
    if raw.chars().any(char::is_control) {
        return Err(Error::config(format!(
            "{what}: the URL contains a control character (CR, LF, NUL…)"
        )));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("not a valid URL ({e})")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(bad(
                "http would send the bearer token in clear text; use https (http is only \
                 for this machine)",
            ));
        }
        other => return Err(bad(&format!("scheme {other:?} is not https"))),
    }
    if url.host().is_none() {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::config(format!(
            "{what}: a user or password in the URL is refused; the token comes from the \
             profile's token source"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("give the base URL, without ? or #"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Where an `--smtp-url` connection's password comes from.
const PASSWORD_VAR: &str = "ENVOI_PASSWORD";

/// Where an `--smtp-url` connection's bearer token comes from (`?auth=xoauth2`).
const TOKEN_VAR: &str = "ENVOI_TOKEN";

/// Builds a profile from `smtps://user@host:465`, `smtp://host` (STARTTLS) or
/// `smtp://host:25?security=none`. The password comes from `$ENVOI_PASSWORD` (with
/// `?auth=xoauth2` or `?auth=oauthbearer`, a bearer token from `$ENVOI_TOKEN`); a
/// password inside the URL is refused, since command lines are visible to other users.
pub fn profile_from_url(raw: &str) -> Result<Profile> {
    // The raw URL is never echoed: it might hold a password.
    let bad = |why: &str| Error::config(format!("--smtp-url: {why}"));
    let userinfo = raw
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo);
    if userinfo.is_some_and(|u| u.contains(':')) {
        return Err(bad(
            "a password in the URL is refused (command lines are visible to other users); \
             put it in ENVOI_PASSWORD",
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(bad("the URL contains a control character (CR, LF, NUL…)"));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("not a valid URL ({e})")))?;
    let mut security = match url.scheme() {
        "smtps" => Security::Tls,
        "smtp" => Security::Starttls,
        "graph" => return api_profile_from_url(&url, Service::Graph),
        "gmail" => return api_profile_from_url(&url, Service::Gmail),
        other => {
            return Err(bad(&format!(
                "scheme {other:?} is not smtp, smtps, graph or gmail"
            )));
        }
    };
    let mut auth = Auth::Password;
    let mut proxy_key = ProxyKey::Unset;
    let mut trust = UrlTrust::default();
    for (key, value) in url.query_pairs() {
        if trust.take(&key, &value)? {
            continue;
        }
        match (key.as_ref(), value.as_ref()) {
            ("proxy", value) => proxy_key = ProxyKey::parse("--smtp-url: proxy", value, None)?,
            ("security", "tls") => security = Security::Tls,
            ("security", "starttls") => security = Security::Starttls,
            ("security", "none") => security = Security::None,
            ("auth", "password") => auth = Auth::Password,
            ("auth", "xoauth2") => auth = Auth::Xoauth2,
            ("auth", "oauthbearer") => auth = Auth::Oauthbearer,
            _ => {
                // The key quoted (it is percent-decoded: CR, LF, escapes), the value not
                // shown: like the URL, it may hold a secret.
                return Err(bad(&format!(
                    "unknown parameter or value for {key:?} (known: security=tls|starttls|none, \
                     auth=password|xoauth2|oauthbearer, proxy=URL, ca_file=PATH, \
                     tls_fingerprint=SHA256)"
                )));
            }
        }
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let username = match url.username() {
        "" => None,
        user => Some(
            percent_encoding::percent_decode_str(user)
                .decode_utf8()
                .map_err(|_| bad("the user name is not valid UTF-8"))?
                .into_owned(),
        ),
    };
    if let Some(user) = &username {
        // Decoded, %0D%0A is a line break: it would end the AUTH command (65).
        no_line_breaks("profile \"--smtp-url\": username", user)?;
    }
    let proxy = proxy_key.choose(&host, &ProxyEnv::default())?;
    let (ca_file, tls_fingerprint) = trust.checked()?;
    Ok(Profile {
        transport: Transport::Smtp(SmtpProfile {
            login: match (username, auth) {
                (Some(user), Auth::Password) => Ok(Some((
                    user,
                    SecretSource::Given(PasswordSource::Env(PASSWORD_VAR.into())),
                ))),
                (Some(user), _) => Ok(Some((
                    user,
                    SecretSource::Given(PasswordSource::Env(TOKEN_VAR.into())),
                ))),
                (None, Auth::Password) => Ok(None),
                (None, other) => Err(bad(&format!(
                    "auth={} needs a user name in the URL (the mailbox the token is for)",
                    other.name()
                ))),
            },
            auth,
            host,
            port: url.port().unwrap_or(security.default_port()),
            security,
            timeout: DEFAULT_TIMEOUT,
            ca_file,
            tls_fingerprint,
            hello_name: None,
            allow_plaintext_auth: false,
            proxy,
            proxy_key,
        }),
        from: None,
        outbox: false,
        outbox_dir: None,
        sendmail: SendmailKeys::default(),
        dkim: None,
        from_url: true,
        log: LogSettings::default(),
        ledger: None,
        policy: RecipientPolicy::default(),
        sent_copy: None,
        suppress: None,
    })
}

/// A URL's `?ca_file=PATH` and `?tls_fingerprint=SHA256`: a private CA or a pinned
/// certificate, as a profile's keys of the same names give.
#[derive(Default)]
struct UrlTrust {
    ca_file: Option<PathBuf>,
    tls_fingerprint: Option<String>,
}

impl UrlTrust {
    /// Takes `key=value` when it is one of the two; `false` for any other key.
    fn take(&mut self, key: &str, value: &str) -> Result<bool> {
        let bad = |why: String| Error::config(format!("--smtp-url: {why}"));
        match key {
            "ca_file" if value.is_empty() => Err(bad("ca_file= needs a path".into())),
            "ca_file" => {
                self.ca_file = Some(PathBuf::from(value));
                Ok(true)
            }
            "tls_fingerprint" => {
                self.tls_fingerprint = Some(value.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The CA file and the pin, checked as a profile's are: one or the other, the pin a
    /// SHA-256.
    fn checked(self) -> Result<(Option<PathBuf>, Option<Fingerprint>)> {
        let bad = |why: String| Error::config(format!("--smtp-url: {why}"));
        let Some(text) = self.tls_fingerprint else {
            return Ok((self.ca_file, None));
        };
        if self.ca_file.is_some() {
            return Err(bad(
                "give ca_file or tls_fingerprint, not both: a pinned certificate is trusted \
                 without any CA, so ca_file would never be consulted"
                    .into(),
            ));
        }
        let pin = Fingerprint::parse(&text).map_err(|why| {
            bad(format!(
                "tls_fingerprint={text} is not a SHA-256 fingerprint: {why}; read it from the \
                 server's certificate with: openssl x509 -noout -fingerprint -sha256 -in cert.pem"
            ))
        })?;
        Ok((None, Some(pin)))
    }
}

/// The host of a checked `https://` URL, without brackets: what `NO_PROXY` is matched
/// against (empty, so matching nothing but `*`, for a URL that does not parse).
fn url_host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .unwrap_or_default()
}

/// A profile from `graph://mailbox@domain` or `gmail://me@gmail.com`: the address is
/// the mailbox that sends and the profile's `from`; the token comes from `$ENVOI_TOKEN`;
/// `?api_url=` moves the service (a sovereign cloud, a test server).
fn api_profile_from_url(url: &url::Url, service: Service) -> Result<Profile> {
    let bad = |why: &str| Error::config(format!("--smtp-url: {why}"));
    let scheme = service.key();
    let user = percent_encoding::percent_decode_str(url.username())
        .decode_utf8()
        .map_err(|_| bad("the user name is not valid UTF-8"))?;
    let host = url.host_str().unwrap_or_default();
    if user.is_empty() || host.is_empty() || url.port().is_some() || !matches!(url.path(), "" | "/")
    {
        return Err(bad(&format!(
            "give {scheme}://ADDRESS, the mailbox that sends (like {scheme}://reports@example.com)"
        )));
    }
    let address = format!("{user}@{host}");
    no_line_breaks("profile \"--smtp-url\": the address", &address)?;
    let mailbox = address::parse_single("--smtp-url: the address", &address)?
        .email
        .to_string();
    let mut api = service.default_url().to_owned();
    let mut proxy_key = ProxyKey::Unset;
    let mut trust = UrlTrust::default();
    for (key, value) in url.query_pairs() {
        if trust.take(&key, &value)? {
            continue;
        }
        match (key.as_ref(), value.as_ref(), service) {
            ("api_url", given, _) => api = api_url("--smtp-url: api_url", given)?,
            ("proxy", given, _) => proxy_key = ProxyKey::parse("--smtp-url: proxy", given, None)?,
            ("save_to_sent", "true", Service::Graph) => {}
            ("save_to_sent", "false", Service::Graph) => {
                return Err(bad(
                    "save_to_sent=false cannot be honoured: Graph's sendMail always saves a \
                     MIME message to Sent Items (only its JSON form takes saveToSentItems)",
                ));
            }
            _ => {
                return Err(bad(&format!(
                    "unknown parameter or value for {key:?} (known: api_url=URL, proxy=URL, \
                     ca_file=PATH, tls_fingerprint=SHA256{})",
                    if service == Service::Graph {
                        ", save_to_sent=true"
                    } else {
                        ""
                    }
                )));
            }
        }
    }
    let (ca_file, tls_fingerprint) = trust.checked()?;
    let mut profile = Profile {
        transport: Transport::Api(ApiProfile {
            service,
            api_url: api,
            mailbox: (service == Service::Graph).then(|| mailbox.clone()),
            login: Ok(Some((
                mailbox.clone(),
                SecretSource::Given(PasswordSource::Env(TOKEN_VAR.into())),
            ))),
            timeout: DEFAULT_TIMEOUT,
            ca_file,
            tls_fingerprint,
            proxy: None,
            proxy_key,
        }),
        from: Some(mailbox),
        outbox: false,
        outbox_dir: None,
        sendmail: SendmailKeys::default(),
        dkim: None,
        from_url: true,
        log: LogSettings::default(),
        ledger: None,
        policy: RecipientPolicy::default(),
        sent_copy: None,
        suppress: None,
    };
    profile.take_proxy_env(&ProxyEnv::default())?;
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn parse(text: &str) -> ConfigFile {
        toml::from_str(text).unwrap()
    }

    fn smtp(profile: Profile) -> SmtpProfile {
        match profile.transport {
            Transport::Smtp(smtp) => smtp,
            Transport::File { dir } => panic!("a file profile ({})", dir.display()),
            Transport::Api(api) => panic!("a {} profile", api.service.key()),
        }
    }

    fn api(profile: Profile) -> ApiProfile {
        match profile.transport {
            Transport::Api(api) => api,
            _ => panic!("not an HTTPS API profile"),
        }
    }

    #[test]
    fn graph_and_gmail_profiles() {
        let file = parse(
            "[profiles.g]\ntransport = \"graph\"\nfrom = \"Reports <reports@contoso.com>\"\n\
             token_env = \"T\"\n\
             [profiles.shared]\ntransport = \"graph\"\nfrom = \"a@contoso.com\"\n\
             mailbox = \"shared@contoso.com\"\nsave_to_sent = true\n\
             api_url = \"http://127.0.0.1:8080/v1.0/\"\ntoken_command = \"t\"\n\
             [profiles.m]\ntransport = \"gmail\"\nfrom = \"me@gmail.com\"\n\
             [profiles.m.oauth2]\nflow = \"refresh_token\"\nclient_id = \"c\"\n\
             token_url = \"https://oauth2.googleapis.com/token\"\nrefresh_token_env = \"R\"\n\
             [profiles.host]\ntransport = \"graph\"\nfrom = \"a@b.c\"\nhost = \"h\"\n\
             [profiles.nosave]\ntransport = \"graph\"\nfrom = \"a@b.c\"\nsave_to_sent = false\n\
             [profiles.clear]\ntransport = \"gmail\"\nfrom = \"a@b.c\"\n\
             api_url = \"http://mail.example.com\"\n\
             [profiles.smtp]\nhost = \"h\"\nmailbox = \"a@b.c\"\n\
             [profiles.nobody]\ntransport = \"graph\"\ntoken_env = \"T\"\n",
        );
        let g = api(file.select(Some("g")).unwrap().unwrap().1);
        assert_eq!(g.service, Service::Graph);
        assert_eq!(g.api_url, "https://graph.microsoft.com/v1.0");
        assert_eq!(g.mailbox.as_deref(), Some("reports@contoso.com"));
        assert!(
            matches!(g.login, Ok(Some((ref u, SecretSource::Given(PasswordSource::Env(_))))) if u == "reports@contoso.com")
        );
        let shared = api(file.select(Some("shared")).unwrap().unwrap().1);
        assert_eq!(shared.mailbox.as_deref(), Some("shared@contoso.com"));
        assert_eq!(shared.api_url, "http://127.0.0.1:8080/v1.0");
        let m = api(file.select(Some("m")).unwrap().unwrap().1);
        assert_eq!((m.service, m.mailbox), (Service::Gmail, None));
        assert!(matches!(m.login, Ok(Some((_, SecretSource::OAuth2(_))))));
        for (name, says) in [
            ("host", "sends over HTTPS: remove host"),
            ("nosave", "always saves a MIME message"),
            ("clear", "in clear text"),
            ("smtp", "mailbox is for transport"),
        ] {
            let err = file.select(Some(name)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{name}");
            assert!(err.message().contains(says), "{name}: {err}");
        }
        let nobody = api(file.select(Some("nobody")).unwrap().unwrap().1);
        assert!(nobody.login.unwrap_err().message().contains("needs from"));
    }

    #[test]
    fn graph_and_gmail_urls() {
        let g = profile_from_url("graph://reports@contoso.com").unwrap();
        assert_eq!(g.from.as_deref(), Some("reports@contoso.com"));
        let g = api(g);
        assert_eq!(g.mailbox.as_deref(), Some("reports@contoso.com"));
        assert!(
            matches!(g.login, Ok(Some((_, SecretSource::Given(PasswordSource::Env(ref v))))) if v == "ENVOI_TOKEN")
        );
        let m = api(profile_from_url(
            "gmail://me@gmail.com?api_url=https%3A%2F%2F127.0.0.1%3A9%2F",
        )
        .unwrap());
        assert_eq!(
            (m.service, m.api_url.as_str()),
            (Service::Gmail, "https://127.0.0.1:9")
        );
        for bad in [
            "graph://contoso.com",
            "graph://a@contoso.com?save_to_sent=false",
            "gmail://me@gmail.com?save_to_sent=true",
            "graph://a@contoso.com?api_url=http%3A%2F%2Fexample.com",
        ] {
            assert_eq!(
                profile_from_url(bad).unwrap_err().kind(),
                ErrorKind::Config,
                "{bad}"
            );
        }
    }

    /// Found by the config fuzz target: toml repeats an unknown variant in its message,
    /// an escape sequence included; the error now shows it escaped.
    #[test]
    fn a_parse_error_shows_no_control_character() {
        // TOML's `\e` is ESC.
        let text = "[profiles.a.oauth2]\nflow = \"client_cre\\entials\"\n";
        let err = super::parse(Path::new("c.toml"), text).unwrap_err();
        assert!(!err.message().chars().any(char::is_control), "{err:?}");
        assert!(err.message().contains("client_cre\\u{1b}ntials"), "{err}");
    }

    /// msmtp's two sendmail keys: read as written, defaulting as msmtp's do, and each
    /// setting that makes `from` the sender refused without one, naming itself.
    #[test]
    fn the_sendmail_keys_default_as_msmtp_s_and_need_from_to_pin() {
        let (_, plain) = parse("[profiles.a]\nhost = \"h\"\n")
            .select(Some("a"))
            .unwrap()
            .unwrap();
        assert!(plain.sendmail.allow_from_override);
        assert_eq!(plain.sendmail.set_from_header, SetFromHeader::Auto);
        let (_, pinned) = parse(
            "[profiles.a]\nhost = \"h\"\nfrom = \"a@example.com\"\n\
             allow_from_override = false\nset_from_header = \"off\"\n",
        )
        .select(Some("a"))
        .unwrap()
        .unwrap();
        assert!(!pinned.sendmail.allow_from_override);
        assert_eq!(pinned.sendmail.set_from_header, SetFromHeader::Off);
        for key in ["allow_from_override = false", "set_from_header = \"on\""] {
            let err = parse(&format!("[profiles.a]\nhost = \"h\"\n{key}\n"))
                .select(Some("a"))
                .unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Config);
            assert!(err.message().contains(key), "{err}");
        }
        let err = toml::from_str::<ConfigFile>(
            "[profiles.a]\nhost = \"h\"\nset_from_header = \"always\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("auto"), "{err}");
    }

    #[test]
    fn parses_the_documented_example() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
                .unwrap();
        let file = parse(&text);
        let (name, work) = file.select(None).unwrap().unwrap();
        assert_eq!(name, "work");
        let work = smtp(work);
        assert_eq!(work.security, Security::Starttls);
        assert!(matches!(
            work.login,
            Ok(Some((_, SecretSource::Given(PasswordSource::Env(_)))))
        ));
        let (_, outbox) = file.select(Some("outbox")).unwrap().unwrap();
        assert!(matches!(outbox.transport, Transport::File { .. }));
    }

    /// Every key of the commented `[profiles.work.oauth2]` example is one envoi reads.
    #[test]
    fn the_documented_oauth2_keys_are_known() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
                .unwrap();
        let block: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [profiles.work.oauth2]"))
            .skip(1)
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ")
                    .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let entry: OAuth2Entry = toml::from_str(&block).unwrap();
        assert!(entry.flow.is_some() && entry.tenant.is_some() && entry.token_url.is_some());
        assert!(entry.client_id.is_some() && entry.scope.is_some());
        assert!(entry.client_secret_env.is_some() && entry.client_secret_command.is_some());
        assert!(entry.client_secret.is_some());
        assert!(entry.refresh_token_env.is_some() && entry.refresh_token_command.is_some());
    }

    /// An oauth2 table becomes the login's secret source, and `auth = "password"` with
    /// one is refused.
    #[test]
    fn an_oauth2_table_is_the_token_source() {
        let file = parse(
            "[profiles.a]\nhost = \"h\"\nusername = \"u\"\nauth = \"xoauth2\"\n\
             [profiles.a.oauth2]\nflow = \"refresh_token\"\nclient_id = \"c\"\n\
             token_url = \"https://oauth2.googleapis.com/token\"\nrefresh_token_env = \"R\"\n\
             [profiles.b]\nhost = \"h\"\nusername = \"u\"\n\
             [profiles.b.oauth2]\nflow = \"refresh_token\"\n",
        );
        let (_, a) = file.select(Some("a")).unwrap().unwrap();
        match smtp(a).login {
            Ok(Some((user, SecretSource::OAuth2(o)))) => {
                assert_eq!(user, "u");
                assert_eq!(o.token_url, "https://oauth2.googleapis.com/token");
            }
            other => panic!("{other:?}"),
        }
        let (_, b) = file.select(Some("b")).unwrap().unwrap();
        let err = smtp(b).login.unwrap_err();
        assert!(err.message().contains("is for auth"), "{err}");
    }

    #[test]
    fn a_route_lists_profiles_in_order_and_is_checked_when_used() {
        let base = "[profiles.a]\nhost = \"a.example\"\n[profiles.b]\nhost = \"b.example\"\n";
        let file = parse(&format!(
            "default = \"ab\"\n{base}[routes]\nab = [\"b\", \"a\"]\n"
        ));
        let routing = file.route(None).unwrap().unwrap();
        let ((first, _), rest) = &routing.chain;
        assert_eq!((routing.name.as_str(), first.as_str()), ("ab", "b"));
        let rest: Vec<&str> = rest.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(rest, ["a"]);
        assert!(routing.domains.is_empty());
        assert!(
            file.route(Some("a")).unwrap().is_none(),
            "a profile, not a route"
        );
        for (routes, says) in [
            ("x = []", "routes.x: the list is empty"),
            ("x = [\"a\", \"c\"]", "routes.x: no profile \"c\""),
            ("x = [\"a\", \"a\"]", "routes.x: \"a\" is listed twice"),
            (
                "x = [\"a\", \"y\"]\ny = [\"b\"]",
                "routes.x: \"y\" is a route",
            ),
            ("x = [\"x\"]", "routes.x: a route cannot list itself"),
            ("a = [\"b\"]", "routes.a: there is also a [profiles.a]"),
            ("x = { \"*@c.example\" = \"a\" }", "routes.x: no \"*\" rule"),
            (
                "x = { \"c.example\" = \"a\", \"*\" = \"b\" }",
                "routes.x.\"c.example\": not a rule",
            ),
            (
                "x = { \"*\" = \"nope\" }",
                "routes.x.\"*\": no profile \"nope\"",
            ),
            (
                "x = { \"*\" = \"y\" }\ny = { \"*\" = \"a\" }",
                "\"y\" has rules of its own",
            ),
        ] {
            let file = parse(&format!("{base}[routes]\n{routes}\n"));
            let name = &routes[..1];
            let err = file.route(Some(name)).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Config);
            assert!(err.message().contains(says), "{routes}: {err}");
        }
    }

    #[test]
    fn rules_choose_a_profile_or_a_list_by_recipient_domain() {
        let file = parse(
            "[profiles.a]\nhost = \"a.example\"\n[profiles.b]\nhost = \"b.example\"\n\
             [profiles.c]\nhost = \"c.example\"\n[routes]\nbc = [\"b\", \"c\"]\n\
             [routes.mail]\n\"*@Contoso.com\" = \"a\"\n\"*\" = \"bc\"\n",
        );
        let routing = file.route(Some("mail")).unwrap().unwrap();
        let ((first, _), rest) = &routing.chain;
        assert_eq!(
            (first.as_str(), rest.len()),
            ("b", 1),
            "\"*\" names the list bc"
        );
        let [(domain, ((profile, _), others))] = routing.domains.as_slice() else {
            panic!("one domain rule");
        };
        assert_eq!((domain.as_str(), profile.as_str()), ("contoso.com", "a"));
        assert!(others.is_empty());
    }

    #[test]
    fn unknown_keys_and_profiles_are_config_errors() {
        let err = toml::from_str::<ConfigFile>("[profiles.a]\nhots = \"x\"\n").unwrap_err();
        assert!(err.message().contains("hots"), "{err}");
        let file = parse("[profiles.a]\nhost = \"x\"\n");
        let err = file.select(Some("b")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("\"b\""), "{err}");
    }

    #[test]
    fn a_profile_without_host_or_dir_cannot_be_selected() {
        let file = parse("[profiles.a]\nport = 25\n[profiles.f]\ntransport = \"file\"\n");
        let err = file.select(Some("a")).unwrap_err();
        assert!(err.message().contains("host is missing"), "{err}");
        let err = file.select(Some("f")).unwrap_err();
        assert!(err.message().contains("needs dir"), "{err}");
    }

    /// T24: a config file others can change must not make envoi run a command.
    #[cfg(unix)]
    #[test]
    fn t24_a_password_command_needs_a_file_only_its_owner_can_change() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[profiles.a]\nhost = \"h\"\nusername = \"u\"\npassword_command = \"pass mail\"\n",
        )
        .unwrap();
        let set = |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
        set(0o644).unwrap();
        assert!(load(&path, true).is_ok());
        set(0o664).unwrap();
        let err = load(&path, true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("chmod go-w"), "{err}");
        set(0o644).unwrap();
        if ownership::effective_uid() == Some(0) {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let err = load(&path, true).unwrap_err();
            assert!(err.message().contains("another user"), "{err}");
        }
    }

    /// T24: a config that points to a secret is trusted only when no one else can change
    /// it and it is this user's (or root's); one that holds a secret too.
    #[cfg(unix)]
    #[test]
    fn t24_a_pointer_to_a_secret_or_a_secret_needs_a_file_of_ones_own() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let set = |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
        for key in ["password_env = \"P\"", "token_env = \"T\""] {
            std::fs::write(&path, format!("[profiles.a]\nhost = \"h\"\n{key}\n")).unwrap();
            set(0o644).unwrap();
            assert!(load(&path, true).is_ok(), "{key}");
            set(0o666).unwrap();
            let err = load(&path, true).unwrap_err();
            assert!(err.message().contains("chmod go-w"), "{key}: {err}");
        }
        if ownership::effective_uid() == Some(0) {
            std::fs::write(&path, "[profiles.a]\nhost = \"h\"\npassword = \"p\"\n").unwrap();
            set(0o600).unwrap();
            std::os::unix::fs::chown(&path, Some(0), None).unwrap();
            assert!(load(&path, true).is_ok(), "root's own file");
            set(0o640).unwrap();
            assert!(load(&path, true).is_err(), "root's, read by root's group");
            std::os::unix::fs::chown(&path, None, Some(65534)).unwrap();
            assert!(
                load(&path, true).is_ok(),
                "root's, read by a group root chose"
            );
            set(0o644).unwrap();
            let err = load(&path, true).unwrap_err();
            assert!(err.message().contains("chmod 640"), "{err}");
            set(0o600).unwrap();
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            let err = load(&path, true).unwrap_err();
            assert!(err.message().contains("another user (uid 65534"), "{err}");
        } else {
            eprintln!("skipped the owner half: it needs root to chown to nobody");
        }
    }

    /// An inline oauth2 client_secret needs a private file, like password; an oauth2
    /// command needs a file only its owner can change, like password_command.
    #[cfg(unix)]
    #[test]
    fn oauth2_secrets_follow_the_password_rules_for_the_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let set = |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
        let head = "[profiles.a]\nhost = \"h\"\n[profiles.a.oauth2]\n";
        std::fs::write(&path, format!("{head}client_secret = \"s\"\n")).unwrap();
        set(0o644).unwrap();
        let err = load(&path, true).unwrap_err();
        assert!(err.message().contains("chmod 600"), "{err}");
        set(0o600).unwrap();
        assert!(load(&path, true).is_ok());
        for key in ["client_secret_command", "refresh_token_command"] {
            std::fs::write(&path, format!("{head}{key} = \"pass x\"\n")).unwrap();
            set(0o664).unwrap();
            let err = load(&path, true).unwrap_err();
            assert!(err.message().contains("chmod go-w"), "{key}: {err}");
        }
    }

    /// T08: hello_name is a host name or an address literal, nothing else.
    #[test]
    fn t08_hello_name_must_be_a_host_name() {
        for good in [
            "mail.example.com",
            "host-1",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
        ] {
            assert!(is_hello_name(good), "{good}");
        }
        for bad in [
            "",
            "two words",
            "a..b",
            "-x.example",
            "x_y.example",
            "[300.1.1.1]",
            "é.example",
        ] {
            assert!(!is_hello_name(bad), "{bad}");
        }
        let file = parse("[profiles.a]\nhost = \"h\"\nhello_name = \"bad_name\"\n");
        assert_eq!(
            file.select(Some("a")).unwrap_err().kind(),
            ErrorKind::Config
        );
    }

    #[test]
    fn a_password_of_the_wrong_type_is_not_echoed() {
        let text = "[profiles.a]\nhost = \"h\"\nusername = \"u\"\npassword = 31415926535\n";
        let err = toml::from_str::<ConfigFile>(text).unwrap_err();
        assert!(!err.message().contains("31415926535"), "{}", err.message());
        let file = parse("[profiles.a]\npassword = \"s3cr3t\"\n");
        assert!(!format!("{file:?}").contains("s3cr3t"));
    }

    #[test]
    fn password_rules() {
        let file = parse(
            "[profiles.p]\nhost = \"h\"\nusername = \"u\"\n\
             [profiles.q]\nhost = \"h\"\nusername = \"u\"\npassword_env = \"X\"\npassword = \"y\"\n",
        );
        for name in ["p", "q"] {
            let (_, profile) = file.select(Some(name)).unwrap().unwrap();
            let err = smtp(profile).login.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        }
    }

    #[test]
    fn an_api_profile_and_its_token_endpoint_take_the_proxy_key_or_the_https_environment() {
        let token = |p: &ApiProfile| match &p.login {
            Ok(Some((_, SecretSource::OAuth2(o)))) => o.proxy.as_ref().map(ToString::to_string),
            other => panic!("{other:?}"),
        };
        let file = parse(
            "[profiles.k]\ntransport = \"graph\"\nfrom = \"a@contoso.com\"\n\
             proxy = \"socks5h://p:1080\"\n\
             [profiles.k.oauth2]\nflow = \"client_credentials\"\nclient_id = \"c\"\n\
             token_url = \"https://login.example/token\"\nclient_secret_env = \"S\"\n\
             [profiles.e]\ntransport = \"gmail\"\nfrom = \"me@gmail.com\"\n\
             [profiles.e.oauth2]\nflow = \"client_credentials\"\nclient_id = \"c\"\n\
             token_url = \"https://login.example/token\"\nclient_secret_env = \"S\"\n\
             [profiles.bad]\ntransport = \"graph\"\nfrom = \"a@b.c\"\ntoken_env = \"T\"\n\
             proxy_password_env = \"P\"\n",
        );
        let (_, k) = file.select(Some("k")).unwrap().unwrap();
        let k = api(k);
        let (proxy, origin) = k.proxy.clone().expect("the key's proxy");
        assert_eq!(
            (proxy.to_string(), origin),
            ("socks5h://p:1080".into(), Origin::File)
        );
        assert_eq!(token(&k).as_deref(), Some("socks5h://p:1080"));

        let (_, mut e) = file.select(Some("e")).unwrap().unwrap();
        let env = ProxyEnv {
            all_proxy: Some(("ALL_PROXY", "socks5://all:1080".into())),
            https_proxy: Some(("HTTPS_PROXY", "http://web:3128".into())),
            no_proxy: Some("login.example".into()),
        };
        e.take_proxy_env(&env).unwrap();
        let e = api(e);
        let (proxy, origin) = e.proxy.clone().expect("the environment's proxy");
        assert_eq!(proxy.to_string(), "http://web:3128");
        assert_eq!(origin, Origin::Variable("HTTPS_PROXY"));
        assert_eq!(token(&e), None, "NO_PROXY names the token endpoint's host");

        let err = file.select(Some("bad")).unwrap_err();
        assert!(err.message().contains("proxy_password_env"), "{err}");

        let g = api(profile_from_url("graph://a@contoso.com?proxy=http%3A%2F%2Fp%3A3128").unwrap());
        assert_eq!(g.proxy.expect("a proxy").0.to_string(), "http://p:3128");
        let g = api(profile_from_url("gmail://me@gmail.com?proxy=none").unwrap());
        assert!(g.proxy.is_none() && matches!(g.proxy_key, ProxyKey::Off));
    }

    #[test]
    fn an_smtp_url_may_name_its_proxy() {
        let p = smtp(profile_from_url("smtp://h?proxy=socks5h%3A%2F%2F127.0.0.1%3A1080").unwrap());
        let (proxy, origin) = p.proxy.expect("a proxy");
        assert_eq!(proxy.to_string(), "socks5h://127.0.0.1:1080");
        assert_eq!(origin, Origin::File);
        let p = smtp(profile_from_url("smtp://h?proxy=none").unwrap());
        assert!(p.proxy.is_none() && matches!(p.proxy_key, ProxyKey::Off));
        let e = profile_from_url("smtp://h?proxy=http%3A%2F%2Fu%3As3cr3t%40p%3A3128").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.message().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn smtp_urls() {
        let p = smtp(profile_from_url("smtps://me%40x.com@mail.example.com").unwrap());
        assert_eq!(p.security, Security::Tls);
        assert_eq!(
            p.login.as_ref().unwrap().as_ref().map(|l| l.0.as_str()),
            Some("me@x.com")
        );
        assert_eq!(p.host, "mail.example.com");
        assert_eq!(p.port, 465);
        let p = smtp(profile_from_url("smtp://127.0.0.1:2525?security=none").unwrap());
        assert_eq!((p.security, p.port), (Security::None, 2525));
        assert!(p.login.unwrap().is_none());
        assert_eq!(
            smtp(profile_from_url("smtp://h").unwrap()).security,
            Security::Starttls
        );
        for leaky in [
            "smtps://u:secret@h",
            "smtps://u:secret@h:99999",
            "smtp://u:secret@h\n",
        ] {
            let err = profile_from_url(leaky).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(!err.message().contains("secret"), "{err}");
        }
        assert!(profile_from_url("smtp://h\r\n").is_err());
        let err = profile_from_url("smtp://a%0D%0Ab@h").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        let p = smtp(profile_from_url("smtp://me%40x.com@h?auth=xoauth2").unwrap());
        assert_eq!(p.auth, Auth::Xoauth2);
        assert!(
            matches!(p.login, Ok(Some((_, SecretSource::Given(PasswordSource::Env(ref v))))) if v == "ENVOI_TOKEN")
        );
        let p = smtp(profile_from_url("smtp://h?auth=oauthbearer").unwrap());
        assert!(p.login.is_err(), "a token needs a user");
        assert!(profile_from_url("http://h").is_err());
        assert!(profile_from_url("smtp://h?tls=none").is_err());
    }
}
