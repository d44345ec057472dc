//! `[profiles.NAME.oauth2]`: where envoi gets an OAuth2 access token by itself (RFC 6749
//! §4.4 client credentials, or §6 refreshing a user's refresh token), checked here.
//!
//! This layer only reads and checks the table. The request to the token endpoint, the
//! token cache and its lock are the delivery layer's (`deliver::oauth2`): that is where
//! envoi speaks to the network, with the same TLS trust (system roots plus `ca_file`) as
//! for the SMTP server.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::message::check::no_line_breaks;
use crate::profile::password::{Password, PasswordSource};
use crate::profile::proxy::Proxy;

/// The table exactly as the file spells it; `config.example.toml` documents each key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OAuth2Entry {
    pub(super) flow: Option<Flow>,
    pub(super) token_url: Option<String>,
    pub(super) tenant: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret_env: Option<String>,
    pub(super) client_secret_command: Option<String>,
    pub(super) client_secret: Option<Password>,
    pub(super) scope: Option<String>,
    pub(super) refresh_token_env: Option<String>,
    pub(super) refresh_token_command: Option<String>,
    pub(super) device_code_url: Option<String>,
    pub(super) auth_url: Option<String>,
}

/// Which grant envoi asks the token endpoint for (the `flow` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// RFC 6749 §4.4: the application's own credentials (a Microsoft 365 app
    /// registration allowed to send as the mailbox); needs a client secret.
    ClientCredentials,
    /// RFC 6749 §6: a refresh token from a user's consent, exchanged for access tokens;
    /// a new refresh token the endpoint returns replaces the old one.
    RefreshToken,
}

impl Flow {
    /// The name the config file uses for it, which is also the `grant_type`.
    pub fn name(self) -> &'static str {
        match self {
            Flow::ClientCredentials => "client_credentials",
            Flow::RefreshToken => "refresh_token",
        }
    }
}

/// A checked `[profiles.NAME.oauth2]` table.
#[derive(Debug, Clone)]
pub struct OAuth2 {
    /// The grant.
    pub flow: Flow,
    /// The token endpoint: `https://`, or `http://` to this machine only.
    pub token_url: String,
    /// The application's id.
    pub client_id: String,
    /// The application's secret; required by `client_credentials`, optional for
    /// `refresh_token` (public clients have none).
    pub client_secret: Option<PasswordSource>,
    /// What the token is for (`https://outlook.office365.com/.default`,
    /// `https://mail.google.com/`); sent when set.
    pub scope: Option<String>,
    /// For `refresh_token`: the first refresh token. Once the endpoint has rotated it,
    /// the cached one is used, until this one changes. `None`: only `envoi auth login`
    /// gives one.
    pub refresh_token: Option<PasswordSource>,
    /// How `envoi auth login` asks the user's consent; `None` when the table names no
    /// way (then it says which key to add).
    pub consent: Option<Consent>,
    /// The proxy the token endpoint is reached through: the profile's `proxy` key, else
    /// the environment's for `token_url`'s host (set when the profile is resolved;
    /// `None`, directly). `envoi auth login` asks the device code endpoint through it
    /// too: the same provider's, from the same network.
    pub proxy: Option<Proxy>,
}

/// How `envoi auth login` gets a user's consent, and so the first refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consent {
    /// RFC 8628 device authorization at this URL (Microsoft): envoi prints a code and a
    /// URL to open on any device, then polls the token endpoint.
    Device(String),
    /// RFC 8252 authorization code with PKCE at this URL, redirected to a listener on
    /// 127.0.0.1 (Google, whose device flow refuses the Gmail scope).
    Browser(String),
}

/// Google's token endpoint, whose authorization endpoint envoi knows.
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// Google's authorization endpoint for installed applications.
const GOOGLE_AUTH_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";

/// Microsoft's device authorization endpoint for a tenant.
fn microsoft_device_code_url(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode")
}

/// Microsoft's token endpoint for a tenant (the `tenant` key).
fn microsoft_token_url(tenant: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
}

/// A tenant is a domain (`contoso.onmicrosoft.com`), a GUID, or `organizations` /
/// `common` / `consumers`: letters, digits, dots and hyphens, nothing that could change
/// the URL's path.
fn is_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 253
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// Whether `url` may carry a client secret: `https`, or `http` to a loopback address
/// (a local test endpoint or a local proxy), never `http` across a network. The reason
/// when not.
pub(crate) fn check_token_url(url: &str) -> std::result::Result<(), String> {
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("{:?} is not a valid URL ({e})", without_userinfo(url)))?;
    // OA12: userinfo would go out as HTTP Basic credentials, and the URL is repeated in
    // messages; the client's credentials have keys of their own.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "it must not hold a user name or password; use client_id/client_secret \
             (or client_secret_env, client_secret_command)"
                .into(),
        );
    }
    let url = parsed.as_str();
    let loopback = match parsed.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("{url:?} has no host")),
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "{url:?} is plain http to another machine: the client secret and the tokens \
             would cross the network in clear; use https (http is allowed only to \
             127.0.0.1, ::1 and localhost)"
        )),
        other => Err(format!("{url:?}: the scheme {other:?} is not https")),
    }
}

/// `url` with anything between `://` and the host's `@` left out: what an error may
/// repeat of a URL that might hold a password.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Exactly one source of a secret among `KEY_env`, `KEY_command` and (when the key
/// allows it) `KEY`; `None` when none is given.
fn one_source(
    key: &str,
    env: &Option<String>,
    command: &Option<String>,
    inline: Option<&Password>,
) -> std::result::Result<Option<PasswordSource>, String> {
    let sources = [
        env.clone().map(PasswordSource::Env),
        command.clone().map(PasswordSource::Command),
        inline.cloned().map(PasswordSource::Inline),
    ];
    let mut given = sources.into_iter().flatten();
    match (given.next(), given.next()) {
        (_, Some(_)) => Err(match inline {
            Some(_) => format!("give only one of {key}_env, {key}_command and {key}"),
            None => format!("give only one of {key}_env and {key}_command"),
        }),
        (first, None) => Ok(first),
    }
}

impl OAuth2Entry {
    /// Checks the table of the profile called `name`: 78 naming the key at fault.
    pub(super) fn check(&self, name: &str) -> Result<OAuth2> {
        let bad = |what: String| Error::config(format!("profile {name:?}: oauth2.{what}"));
        for (key, value) in [
            ("token_url", &self.token_url),
            ("tenant", &self.tenant),
            ("client_id", &self.client_id),
            ("scope", &self.scope),
            ("device_code_url", &self.device_code_url),
            ("auth_url", &self.auth_url),
        ] {
            if let Some(v) = value {
                no_line_breaks(&format!("profile {name:?}: oauth2.{key}"), v)?;
            }
        }
        let flow = self.flow.ok_or_else(|| {
            bad("flow is missing: \"client_credentials\" or \"refresh_token\"".into())
        })?;
        let token_url = match (&self.token_url, &self.tenant) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "token_url and tenant both given: tenant is short for Microsoft's \
                     token_url, give one"
                        .into(),
                ));
            }
            (None, None) => {
                return Err(bad(
                    "token_url is missing (or tenant, for Microsoft 365)".into()
                ));
            }
            (Some(url), None) => url.clone(),
            (None, Some(tenant)) if is_tenant(tenant) => microsoft_token_url(tenant),
            (None, Some(tenant)) => {
                return Err(bad(format!(
                    "tenant {tenant:?} must be a domain (contoso.onmicrosoft.com) or a \
                     tenant id"
                )));
            }
        };
        check_token_url(&token_url).map_err(|why| bad(format!("token_url: {why}")))?;
        let client_id = match &self.client_id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => return Err(bad("client_id is missing".into())),
        };
        let client_secret = one_source(
            "client_secret",
            &self.client_secret_env,
            &self.client_secret_command,
            self.client_secret.as_ref(),
        )
        .map_err(bad)?;
        let refresh_token = one_source(
            "refresh_token",
            &self.refresh_token_env,
            &self.refresh_token_command,
            None,
        )
        .map_err(bad)?;
        match flow {
            Flow::ClientCredentials if client_secret.is_none() => {
                return Err(bad(
                    "flow = \"client_credentials\" needs client_secret_env, \
                     client_secret_command or client_secret"
                        .into(),
                ));
            }
            Flow::ClientCredentials if refresh_token.is_some() => {
                return Err(bad(
                    "refresh_token_env / refresh_token_command are for flow = \
                     \"refresh_token\""
                        .into(),
                ));
            }
            _ => {}
        }
        let consent = match (&self.device_code_url, &self.auth_url) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "device_code_url and auth_url both given: envoi auth login uses one way \
                     of consent"
                        .into(),
                ));
            }
            (Some(url), None) => Some(Consent::Device(url.clone())),
            (None, Some(url)) => Some(Consent::Browser(url.clone())),
            (None, None) => match &self.tenant {
                Some(tenant) => Some(Consent::Device(microsoft_device_code_url(tenant))),
                None if token_url == GOOGLE_TOKEN_URL => {
                    Some(Consent::Browser(GOOGLE_AUTH_URL.to_owned()))
                }
                None => None,
            },
        };
        if let Some(Consent::Device(url) | Consent::Browser(url)) = &consent {
            let key = match consent {
                Some(Consent::Device(_)) => "device_code_url",
                _ => "auth_url",
            };
            check_token_url(url).map_err(|why| bad(format!("{key}: {why}")))?;
        }
        Ok(OAuth2 {
            flow,
            token_url,
            client_id,
            client_secret,
            scope: self.scope.clone().filter(|s| !s.is_empty()),
            refresh_token,
            consent,
            proxy: None,
        })
    }

    /// Whether the table makes envoi run a command (the file must then be its owner's).
    pub(super) fn runs_a_command(&self) -> bool {
        self.client_secret_command.is_some() || self.refresh_token_command.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn check(text: &str) -> Result<OAuth2> {
        let entry: OAuth2Entry = toml::from_str(text).unwrap();
        entry.check("p")
    }

    #[test]
    fn a_tenant_is_microsofts_token_url() {
        let o = check(
            "flow = \"client_credentials\"\ntenant = \"contoso.onmicrosoft.com\"\n\
             client_id = \"id\"\nclient_secret_env = \"S\"\n",
        )
        .unwrap();
        assert_eq!(
            o.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(o.flow, Flow::ClientCredentials);
        assert!(matches!(o.client_secret, Some(PasswordSource::Env(ref v)) if v == "S"));
    }

    #[test]
    fn auth_login_knows_microsofts_and_googles_consent() {
        let m365 = check(
            "flow = \"refresh_token\"\nclient_id = \"i\"\ntenant = \"contoso.onmicrosoft.com\"\n",
        )
        .unwrap();
        assert_eq!(
            m365.consent,
            Some(Consent::Device(
                "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode"
                    .into()
            ))
        );
        let gmail = check(&format!(
            "flow = \"refresh_token\"\nclient_id = \"i\"\ntoken_url = \"{GOOGLE_TOKEN_URL}\"\n"
        ))
        .unwrap();
        assert_eq!(
            gmail.consent,
            Some(Consent::Browser(GOOGLE_AUTH_URL.into()))
        );
        let other =
            check("flow = \"refresh_token\"\nclient_id = \"i\"\ntoken_url = \"https://h/t\"\n")
                .unwrap();
        assert_eq!(other.consent, None);
    }

    /// OA12: userinfo is refused, and no error repeats the password in it.
    #[test]
    fn oa12_no_user_name_or_password_in_a_token_url() {
        for bad in [
            "https://user:pw-canary@login.example.com/token",
            "http://user:pw-canary@127.0.0.1:8080/token",
            "https://user@login.example.com/token",
            "http://user:pw-canary@[bad/token",
        ] {
            let why = check_token_url(bad).unwrap_err();
            assert!(!why.contains("pw-canary"), "{bad}: {why}");
        }
        let why = check_token_url("https://u:pw-canary@h/t").unwrap_err();
        assert!(
            why.contains("must not hold a user name or password"),
            "{why}"
        );
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        for ok in [
            "https://oauth2.googleapis.com/token",
            "http://127.0.0.1:8080/token",
            "http://[::1]:8080/token",
            "http://localhost/token",
        ] {
            assert_eq!(check_token_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://login.example.com/token",
            "http://192.0.2.1/token",
            "ftp://127.0.0.1/token",
            "not a url",
        ] {
            assert!(check_token_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mistakes_name_the_key() {
        let cases = [
            (
                "client_id = \"i\"\ntoken_url = \"https://h/t\"\n",
                "oauth2.flow",
            ),
            (
                "flow = \"refresh_token\"\nclient_id = \"i\"\n",
                "oauth2.token_url is missing",
            ),
            (
                "flow = \"refresh_token\"\nclient_id = \"i\"\ntoken_url = \"https://h/t\"\n\
                 tenant = \"x\"\n",
                "token_url and tenant",
            ),
            (
                "flow = \"refresh_token\"\nclient_id = \"i\"\ntenant = \"a/../b\"\n",
                "oauth2.tenant",
            ),
            (
                "flow = \"refresh_token\"\nclient_id = \"i\"\ntoken_url = \"http://h/t\"\n\
                 refresh_token_env = \"R\"\n",
                "plain http",
            ),
            (
                "flow = \"refresh_token\"\ntoken_url = \"https://h/t\"\n",
                "oauth2.client_id",
            ),
            (
                "flow = \"client_credentials\"\nclient_id = \"i\"\ntoken_url = \"https://h/t\"\n",
                "needs client_secret_env",
            ),
            (
                "flow = \"refresh_token\"\nclient_id = \"i\"\ntoken_url = \"https://h/t\"\n\
                 device_code_url = \"https://h/d\"\nauth_url = \"https://h/a\"\n",
                "both given",
            ),
            (
                "flow = \"refresh_token\"\nclient_id = \"i\"\ntoken_url = \"https://h/t\"\n\
                 auth_url = \"http://h/a\"\n",
                "oauth2.auth_url",
            ),
            (
                "flow = \"client_credentials\"\nclient_id = \"i\"\ntoken_url = \"https://h/t\"\n\
                 client_secret_env = \"S\"\nclient_secret = \"s\"\n",
                "only one of client_secret_env",
            ),
        ];
        for (text, says) in cases {
            let err = check(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{text}");
            assert!(err.message().contains(says), "{text}: {err}");
        }
        let err = toml::from_str::<OAuth2Entry>("flow = \"device_code\"\n").unwrap_err();
        assert!(err.message().contains("device_code"), "{err}");
    }
}
