//! `envoi config show`: every effective setting of the connection a send would use, and
//! where each came from (flag, environment, file, default). Secrets are described by
//! their source, never shown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::profile::config::{
    self, ConfigSource, ProfileEntry, SecretSource, Security, Service, Transport,
};
use crate::profile::env::{Env, Flags, Origin};
use crate::profile::files::config_path;
use crate::profile::fingerprint::Fingerprint;
use crate::profile::log::LogDest;
use crate::profile::oauth2::Consent;
use crate::profile::password::PasswordSource;
use crate::profile::proxy::{Proxy, ProxyKey};
use crate::profile::resolve::{Resolved, resolve};
use crate::profile::sent_copy::SentCopy;

/// One effective setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The config file's name for it (`host`, `password`, …).
    pub key: &'static str,
    /// Its value as text; `None` when unset. A password is only its source.
    pub value: Option<String>,
    /// Who set it.
    pub origin: Origin,
}

/// What `envoi config show` reports.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The config file envoi reads, and why; `None` when the connection is a URL (no
    /// file is read), or the platform has none and none was named.
    pub config: Option<(PathBuf, ConfigSource)>,
    /// The connection's name (a profile, or `--smtp-url`) and what chose it; `None`
    /// when there is no config file and nothing was named.
    pub connection: Option<(String, Origin)>,
    /// Every setting, in the order `config.example.toml` documents them.
    pub settings: Vec<Setting>,
    /// What would stop a send (78), in plain words; empty when none.
    pub problems: Vec<String>,
    /// The effective recipient policy: each rule's key, value and where it was written
    /// (a profile, a file's top level, the system file).
    pub policy: Vec<(String, String, String)>,
}

/// Resolves exactly as `send` does and explains the answer. A profile that cannot be
/// selected at all (a missing host, an unknown name) is the same error as for `send`.
pub fn show(flags: &Flags, env: &Env) -> Result<Shown> {
    let resolved = resolve(flags, env)?;
    let mut settings = Vec::new();
    let mut problems = Vec::new();
    let connection = match &resolved.connection {
        None => None,
        Some(connection) => {
            // A route's first profile: the one whose keys (from, dkim, outbox) apply.
            let entry = match (&connection.route.config, &connection.route.profile) {
                (Some(path), Some(_)) => {
                    let file = config::load(path, true)?;
                    file.entry(Some(&connection.name))?
                        .map(|(_, entry)| entry.clone())
                }
                _ => None,
            };
            let origin = Written {
                entry,
                url: (connection.route.smtp_url.is_some()).then_some(resolved.connection_origin),
            };
            explain(&connection.profile, &origin, &mut settings, &mut problems);
            if let Some(copy) = &connection.profile.sent_copy {
                settings.push(explain_sent_copy(&connection.profile, copy));
            }
            if let Some(path) = &connection.profile.suppress {
                settings.push(Setting {
                    key: "suppress",
                    value: Some(path.display().to_string()),
                    origin: Origin::File,
                });
            }
            Some((connection.name.clone(), resolved.connection_origin))
        }
    };
    settings.push(Setting {
        key: "outbox_dir",
        value: resolved.outbox_dir().ok().map(|d| d.display().to_string()),
        origin: resolved.outbox_dir_origin,
    });
    settings.push(explain_log(&resolved));
    let url = resolved
        .connection
        .as_ref()
        .is_some_and(|c| c.route.smtp_url.is_some());
    Ok(Shown {
        config: if url { None } else { config_path(flags, env) },
        connection,
        settings,
        problems,
        policy: resolved
            .policy
            .rules()
            .into_iter()
            .map(|(key, value, origin)| (key, value, origin.to_string()))
            .collect(),
    })
}

/// Where the delivery log goes: `$ENVOI_LOG` (`config show` has no `--log`), else the
/// profile's `log` (or the file's top-level one), with its facility for syslog.
fn explain_log(resolved: &Resolved) -> Setting {
    let profile = resolved.connection.as_ref().map(|c| &c.profile);
    let settings = resolved.log_for(profile);
    let origin = if resolved.log.is_some() {
        Origin::Variable("ENVOI_LOG")
    } else if settings.dest.is_some() {
        Origin::File
    } else {
        Origin::Default
    };
    let value = settings.dest.map(|dest| match dest {
        LogDest::Off => "none".to_owned(),
        LogDest::File(path) => path.display().to_string(),
        LogDest::Syslog => format!("syslog (facility {})", settings.facility.name()),
        LogDest::Journal => format!("journal (facility {})", settings.facility.name()),
    });
    Setting {
        key: "log",
        value,
        origin,
    }
}

/// Where the copy of a sent message goes (`sent_copy`), and whether it is made at all.
fn explain_sent_copy(profile: &config::Profile, copy: &SentCopy) -> Setting {
    let folder = copy
        .folder
        .as_deref()
        .map_or("the folder marked \\Sent, else \"Sent\"".to_owned(), |f| {
            format!("{f:?}")
        });
    let mut value = format!("{}, {folder}", copy.url());
    match (profile.files_sent_itself(), copy.force) {
        (Some(why), false) => value.push_str(&format!(
            " (not made: {why}; sent_copy.force = true makes one anyway)"
        )),
        (Some(_), true) => value.push_str(" (force = true: made though the provider files one)"),
        (None, _) => {}
    }
    Setting {
        key: "sent_copy",
        value: Some(value),
        origin: Origin::File,
    }
}

/// Which keys a value came from: the profile's entry as written, or a URL.
struct Written {
    entry: Option<ProfileEntry>,
    /// The URL's flag or variable, when the connection is `--smtp-url`.
    url: Option<Origin>,
}

impl Written {
    /// The origin of a key the file may have written (`in_file`) or a URL may carry
    /// (`in_url`); otherwise the default.
    fn origin(&self, in_file: impl Fn(&ProfileEntry) -> bool, in_url: bool) -> Origin {
        match (&self.entry, self.url) {
            (Some(entry), _) if in_file(entry) => Origin::File,
            (_, Some(url)) if in_url => url,
            _ => Origin::Default,
        }
    }
}

/// The settings of a connection that SMTP and the HTTPS APIs share: how long a step may
/// take, and which certificates are trusted.
fn explain_trust(
    timeout: Duration,
    ca_file: Option<&Path>,
    pin: Option<Fingerprint>,
    written: &Written,
    settings: &mut Vec<Setting>,
) {
    let mut push = |key, value: Option<String>, origin| {
        settings.push(Setting { key, value, origin });
    };
    push(
        "timeout_secs",
        Some(timeout.as_secs().to_string()),
        written.origin(|e| e.timeout_secs.is_some(), false),
    );
    // A URL's ?ca_file= / ?tls_fingerprint= are set but not written in a file.
    push(
        "ca_file",
        ca_file.map(|p| p.display().to_string()),
        written.origin(|e| e.ca_file.is_some(), ca_file.is_some()),
    );
    push(
        "tls_fingerprint",
        pin.map(|pin| pin.to_string()),
        written.origin(|e| e.tls_fingerprint.is_some(), pin.is_some()),
    );
}

/// The proxy of a transport and what chose it (the key, `--smtp-url`'s `?proxy=`, or a
/// variable), with the proxy login's password source.
fn explain_proxy(
    chosen: &Option<(Proxy, Origin)>,
    key: &ProxyKey,
    written: &Written,
    settings: &mut Vec<Setting>,
    problems: &mut Vec<String>,
) {
    let mut push = |key, value: Option<String>, origin| {
        settings.push(Setting { key, value, origin });
    };
    let key_written = !matches!(key, ProxyKey::Unset);
    let (proxy, origin) = match (chosen, key_written) {
        (Some((proxy, origin @ Origin::Variable(_))), _) => (Some(proxy.to_string()), *origin),
        (Some((proxy, _)), _) => (
            Some(proxy.to_string()),
            written.origin(|e| e.proxy.is_some(), true),
        ),
        (None, true) => (
            Some("none (connects directly)".into()),
            written.origin(|e| e.proxy.is_some(), true),
        ),
        (None, false) => (None, Origin::Default),
    };
    push("proxy", proxy, origin);
    if let Some((proxy, origin)) = chosen
        && let Some((user, source)) = &proxy.login
    {
        let (described, problem) = match (source, origin) {
            (PasswordSource::Inline(_), Origin::Variable(name)) => {
                (format!("in ${name} (hidden)"), None)
            }
            (source, _) => describe_secret("proxy password", source),
        };
        push(
            "proxy_password_env",
            Some(format!("user {user}, password {described}")),
            *origin,
        );
        problems.extend(problem);
    }
}

/// Appends the settings of `profile`, each with its origin, and the problems a send
/// would meet.
fn explain(
    profile: &config::Profile,
    written: &Written,
    settings: &mut Vec<Setting>,
    problems: &mut Vec<String>,
) {
    let mut push = |key, value: Option<String>, origin| {
        settings.push(Setting { key, value, origin });
    };
    let text = |v: &Option<String>| v.clone();
    match &profile.transport {
        Transport::File { dir } => {
            push(
                "transport",
                Some("file".into()),
                written.origin(|e| e.transport.is_some(), false),
            );
            push("dir", Some(dir.display().to_string()), Origin::File);
        }
        Transport::Api(api) => {
            push(
                "transport",
                Some(api.service.key().into()),
                written.origin(|e| e.transport.is_some(), true),
            );
            push(
                "api_url",
                Some(api.api_url.clone()),
                written.origin(|e| e.api_url.is_some(), true),
            );
            if api.service == Service::Graph {
                push(
                    "mailbox",
                    Some(
                        api.mailbox
                            .clone()
                            .unwrap_or_else(|| "the message's sender".into()),
                    ),
                    written.origin(|e| e.mailbox.is_some(), true),
                );
                push(
                    "save_to_sent",
                    Some("true".into()),
                    written.origin(|e| e.save_to_sent.is_some(), false),
                );
            }
            let login_origin = written.origin(|e| e.username.is_some(), true);
            explain_login(
                &api.login,
                "token",
                login_origin,
                written,
                settings,
                problems,
            );
            explain_trust(
                api.timeout,
                api.ca_file.as_deref(),
                api.tls_fingerprint,
                written,
                settings,
            );
            explain_proxy(&api.proxy, &api.proxy_key, written, settings, problems);
        }
        Transport::Smtp(smtp) => {
            push(
                "transport",
                Some("smtp".into()),
                written.origin(|e| e.transport.is_some(), true),
            );
            push(
                "host",
                Some(smtp.host.clone()),
                written.origin(|e| e.host.is_some(), true),
            );
            push(
                "port",
                Some(smtp.port.to_string()),
                written.origin(|e| e.port.is_some(), true),
            );
            push(
                "security",
                Some(smtp.security.name().into()),
                written.origin(|e| e.security.is_some(), true),
            );
            push(
                "auth",
                Some(smtp.auth.name().into()),
                written.origin(|e| e.auth.is_some(), true),
            );
            let login_origin = written.origin(|e| e.username.is_some(), true);
            explain_login(
                &smtp.login,
                smtp.auth.secret_word(),
                login_origin,
                written,
                settings,
                problems,
            );
            if matches!(smtp.login, Ok(Some(_)))
                && smtp.security == Security::None
                && !smtp.allow_plaintext_auth
            {
                problems.push(
                    "a secret with security = \"none\" would cross the network in clear \
                     text: use \"starttls\" or \"tls\" (or set allow_plaintext_auth = true \
                     on a trusted network)"
                        .into(),
                );
            }
            explain_trust(
                smtp.timeout,
                smtp.ca_file.as_deref(),
                smtp.tls_fingerprint,
                written,
                settings,
            );
            let mut push = |key, value: Option<String>, origin| {
                settings.push(Setting { key, value, origin });
            };
            push(
                "hello_name",
                Some(
                    smtp.hello_name
                        .clone()
                        .unwrap_or_else(|| "this machine's host name".into()),
                ),
                written.origin(|e| e.hello_name.is_some(), false),
            );
            push(
                "allow_plaintext_auth",
                Some(smtp.allow_plaintext_auth.to_string()),
                written.origin(|e| e.allow_plaintext_auth.is_some(), false),
            );
            explain_proxy(&smtp.proxy, &smtp.proxy_key, written, settings, problems);
        }
    }
    let mut push = |key, value: Option<String>, origin| {
        settings.push(Setting { key, value, origin });
    };
    push(
        "from",
        text(&profile.from),
        written.origin(|e| e.from.is_some(), false),
    );
    push(
        "outbox",
        Some(profile.outbox.to_string()),
        written.origin(|e| e.outbox.is_some(), false),
    );
    push(
        "default_domain",
        text(&profile.sendmail.names.default_domain),
        written.origin(|e| e.default_domain.is_some(), false),
    );
    let aliases: Vec<String> = profile
        .sendmail
        .names
        .aliases
        .iter()
        .map(|(name, alias)| format!("{name} = {}", alias.targets.join(", ")))
        .collect();
    push(
        "aliases",
        (!aliases.is_empty()).then(|| aliases.join(", ")),
        written.origin(|e| !e.aliases.is_empty(), false),
    );
    push(
        "aliases_file",
        profile
            .sendmail
            .aliases_file
            .as_ref()
            .map(|p| p.display().to_string()),
        written.origin(|e| e.aliases_file.is_some(), false),
    );
    push(
        "allow_from_override",
        Some(profile.sendmail.allow_from_override.to_string()),
        written.origin(|e| e.allow_from_override.is_some(), false),
    );
    push(
        "set_from_header",
        Some(profile.sendmail.set_from_header.name().to_owned()),
        written.origin(|e| e.set_from_header.is_some(), false),
    );
    // The key file by its path only; reading it checks what a send would check.
    let dkim = profile.dkim.as_ref();
    for (key, value) in [
        ("dkim_selector", dkim.map(|d| d.selector.clone())),
        ("dkim_domain", dkim.map(|d| d.domain.clone())),
        (
            "dkim_key_file",
            dkim.map(|d| d.key_file.display().to_string()),
        ),
    ] {
        let origin = if value.is_some() {
            Origin::File
        } else {
            Origin::Default
        };
        push(key, value, origin);
    }
    if let Some(Err(e)) = dkim.map(|d| d.signer()) {
        problems.push(e.message().to_owned());
    }
}

/// Appends the user name and the source of its secret (`password` or `token`), an
/// `[oauth2]` table's keys included, and the problem a send would meet fetching it.
fn explain_login(
    login: &Result<Option<(String, SecretSource)>>,
    secret: &'static str,
    login_origin: Origin,
    written: &Written,
    settings: &mut Vec<Setting>,
    problems: &mut Vec<String>,
) {
    let mut push = |key, value: Option<String>, origin| {
        settings.push(Setting { key, value, origin });
    };
    let text = |v: &Option<String>| v.clone();
    match login {
        Ok(Some((user, source))) => {
            push("username", Some(user.clone()), login_origin);
            match source {
                SecretSource::Given(source) => {
                    let (described, problem) = describe_secret(secret, source);
                    push(secret, Some(described), login_origin);
                    problems.extend(problem);
                }
                SecretSource::OAuth2(oauth) => {
                    push(
                        secret,
                        Some("from the OAuth2 token endpoint (see oauth2.*)".into()),
                        Origin::File,
                    );
                    let mut secret_setting = |key, what, source: &Option<_>| {
                        let (value, problem) = match source {
                            Some(source) => {
                                let (described, problem) = describe_secret(what, source);
                                (Some(described), problem)
                            }
                            None => (None, None),
                        };
                        problems.extend(problem);
                        (key, value)
                    };
                    let client_secret = secret_setting(
                        "oauth2.client_secret",
                        "client secret",
                        &oauth.client_secret,
                    );
                    let refresh_token = secret_setting(
                        "oauth2.refresh_token",
                        "refresh token",
                        &oauth.refresh_token,
                    );
                    for (key, value) in [
                        ("oauth2.flow", Some(oauth.flow.name().to_owned())),
                        ("oauth2.token_url", Some(oauth.token_url.clone())),
                        ("oauth2.client_id", Some(oauth.client_id.clone())),
                        client_secret,
                        ("oauth2.scope", oauth.scope.clone()),
                        refresh_token,
                        (
                            "oauth2.login",
                            oauth.consent.as_ref().map(|consent| match consent {
                                Consent::Device(url) => format!("device flow at {url}"),
                                Consent::Browser(url) => {
                                    format!("browser flow at {url}")
                                }
                            }),
                        ),
                    ] {
                        let origin = if value.is_some() {
                            Origin::File
                        } else {
                            Origin::Default
                        };
                        push(key, value, origin);
                    }
                    use etcetera::BaseStrategy;
                    push(
                        "oauth2.cache",
                        etcetera::choose_base_strategy()
                            .ok()
                            .map(|b| b.cache_dir().join("envoi").display().to_string()),
                        Origin::Default,
                    );
                }
            }
        }
        Ok(None) => {
            push("username", None, Origin::Default);
            push(secret, None, Origin::Default);
        }
        Err(e) => {
            push(
                "username",
                text(&written.entry.as_ref().and_then(|e| e.username.clone())),
                login_origin,
            );
            push(secret, None, login_origin);
            problems.push(e.message().to_owned());
        }
    }
}

/// Where a secret (`password` or `token`) comes from, in words, and the problem a send
/// would meet fetching it. The secret itself is never read: a command is not run, a
/// variable only checked.
fn describe_secret(secret: &str, source: &PasswordSource) -> (String, Option<String>) {
    match source {
        PasswordSource::Env(name) => {
            if std::env::var_os(name).is_some_and(|v| !v.is_empty()) {
                (format!("from ${name} (set)"), None)
            } else {
                (
                    format!("from ${name} (not set)"),
                    Some(format!("${name} holds the {secret} but is not set")),
                )
            }
        }
        PasswordSource::Command(command) => (format!("from the command `{command}`"), None),
        PasswordSource::Inline(_) => ("in the config file (hidden)".into(), None),
    }
}

/// Turns the problems into the error a send would give: 78 with the first one named.
impl Shown {
    /// `Ok` when nothing would stop a send; otherwise a configuration error (78).
    pub fn verdict(&self) -> Result<()> {
        match self.problems.as_slice() {
            [] => Ok(()),
            problems => Err(Error::config(problems.join("; "))),
        }
    }
}
