//! The `proxy` key and the proxy variables of the environment (`ALL_PROXY`, `NO_PROXY`, as
//! curl reads them for an `smtp://` URL; `HTTPS_PROXY` first for an `https://` one): which
//! proxy, if any, a connection to a host goes through, and who chose it.
//!
//! One parsed [`Proxy`] serves every transport: envoi speaks SOCKS5 and HTTP CONNECT
//! itself, for SMTP and for the HTTPS client alike.

use std::fmt;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::profile::env::{Origin, ProxyEnv};
use crate::profile::password::{Password, PasswordSource};

/// How envoi talks to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `socks5://`: SOCKS5 (RFC 1928), envoi resolves the destination's name.
    Socks5,
    /// `socks5h://`: SOCKS5, the proxy resolves the name (envoi sends it as is).
    Socks5h,
    /// `http://`: an HTTP proxy's tunnel (CONNECT, RFC 9110 §9.3.6).
    Http,
}

impl ProxyKind {
    /// The URL scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Socks5h => "socks5h",
            ProxyKind::Http => "http",
        }
    }
}

/// A proxy: how to speak to it, where it is, and the login it wants, if any.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// SOCKS5 or HTTP CONNECT.
    pub kind: ProxyKind,
    /// Its host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// Its port (1080 when the URL names none, as curl does).
    pub port: u16,
    /// The user name from the URL and where its password comes from
    /// (`proxy_password_env`, or the environment variable's own URL).
    pub login: Option<(String, PasswordSource)>,
}

/// The port of a proxy URL that names none: curl's default for every proxy scheme.
const DEFAULT_PORT: u16 = 1080;

impl Proxy {
    /// `host:port`, with brackets around an IPv6 address: how errors name the proxy.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `scheme://host:port`: never the user name or password, so it may be shown anywhere
/// (`-v`, `envoi check`, errors).
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind.scheme(), self.address())
    }
}

/// The `proxy` key as the profile (or `--smtp-url`'s `?proxy=`) wrote it.
#[derive(Debug, Clone, Default)]
pub enum ProxyKey {
    /// Not written: the environment decides.
    #[default]
    Unset,
    /// `""` or `"none"`: never a proxy, whatever the environment says.
    Off,
    /// A proxy URL (boxed: most profiles have none).
    Url(Box<Proxy>),
}

impl ProxyKey {
    /// Parses the `proxy` key (`what` names it in errors) with the password variable of
    /// `proxy_password_env`. A password in the URL is refused (78): config files and
    /// command lines are read by others; the password comes from a variable.
    pub fn parse(what: &str, value: &str, password_env: Option<&str>) -> Result<ProxyKey> {
        let value = value.trim();
        if value.is_empty() || value.eq_ignore_ascii_case("none") {
            if password_env.is_some() {
                return Err(Error::config(format!(
                    "{what}: proxy_password_env is set but no proxy is"
                )));
            }
            return Ok(ProxyKey::Off);
        }
        let (mut proxy, user) = parse_url(what, value, false)?;
        proxy.login = match (user, password_env) {
            (Some((user, _)), Some(var)) => Some((user, PasswordSource::Env(var.to_owned()))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::config(format!(
                    "{what}: a proxy user name needs proxy_password_env (the variable that \
                     holds the proxy's password)"
                )));
            }
            (None, Some(_)) => {
                return Err(Error::config(format!(
                    "{what}: proxy_password_env needs a user name in the proxy URL \
                     (socks5h://USER@host:port)"
                )));
            }
        };
        Ok(ProxyKey::Url(Box::new(proxy)))
    }

    /// The proxy a connection to `host` goes through, and what chose it: the key when it
    /// is written, else the environment (`all_proxy`, `ALL_PROXY`, minus `no_proxy` /
    /// `NO_PROXY` and loopback hosts). `None` for a direct connection.
    pub fn choose(&self, host: &str, env: &ProxyEnv) -> Result<Option<(Proxy, Origin)>> {
        self.choose_from(host, env.all_proxy.as_ref(), env)
    }

    /// As [`ProxyKey::choose`] for an `https://` URL to `host` (a mail API, a token
    /// endpoint): from the environment, `https_proxy` / `HTTPS_PROXY` first, then
    /// `all_proxy` / `ALL_PROXY`, as curl reads them.
    pub fn choose_https(&self, host: &str, env: &ProxyEnv) -> Result<Option<(Proxy, Origin)>> {
        self.choose_from(
            host,
            env.https_proxy.as_ref().or(env.all_proxy.as_ref()),
            env,
        )
    }

    /// The key's proxy, else the variable `from_env` (minus `no_proxy` and loopback).
    fn choose_from(
        &self,
        host: &str,
        from_env: Option<&(&'static str, String)>,
        env: &ProxyEnv,
    ) -> Result<Option<(Proxy, Origin)>> {
        match self {
            ProxyKey::Off => Ok(None),
            ProxyKey::Url(proxy) => Ok(Some((Proxy::clone(proxy), Origin::File))),
            ProxyKey::Unset => from_environment(from_env, env.no_proxy.as_deref(), host),
        }
    }
}

/// The proxy of the variable `var` (its name and value) for `host`, unless `host` is
/// loopback or the `no_proxy` list names it. A value envoi cannot use is a configuration
/// error (78), not a silent direct connection.
fn from_environment(
    var: Option<&(&'static str, String)>,
    no_proxy_list: Option<&str>,
    host: &str,
) -> Result<Option<(Proxy, Origin)>> {
    let Some((name, value)) = var else {
        return Ok(None);
    };
    if is_loopback(host) || no_proxy_list.is_some_and(|l| no_proxy(l, host)) {
        return Ok(None);
    }
    let what = format!("${name}");
    // curl reads a URL without a scheme as an HTTP proxy.
    let (mut proxy, user) = if value.contains("://") {
        parse_url(&what, value, true)?
    } else {
        parse_url(&what, &format!("http://{value}"), true)?
    };
    proxy.login = user.map(|(user, password)| {
        let password = Password::new(password.unwrap_or_default());
        (user, PasswordSource::Inline(password))
    });
    Ok(Some((proxy, Origin::Variable(name))))
}

/// A host that is this machine: never sent to a proxy named by the environment.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    }
}

/// Whether the `no_proxy` list (comma- or space-separated) names `host`, as curl matches
/// it: `*` names every host; an IP address names itself (a `/bits` range, the addresses
/// in it); a name names itself and every name under it (a leading dot changes nothing).
fn no_proxy(list: &str, host: &str) -> bool {
    let host = host
        .trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    list.split([',', ' ', '\t'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.trim_start_matches('[').to_ascii_lowercase();
            if let Some(ip) = host_ip {
                let (net, bits) = match entry.split_once('/') {
                    Some((net, bits)) => (net, bits.parse::<u8>().ok()),
                    None => (entry.trim_end_matches(']'), None),
                };
                let Ok(net) = net.trim_end_matches(']').parse::<IpAddr>() else {
                    return false;
                };
                return in_range(ip, net, bits);
            }
            let entry = entry.trim_start_matches('.').trim_end_matches('.');
            !entry.is_empty()
                && (host == entry
                    || host
                        .strip_suffix(entry)
                        .is_some_and(|rest| rest.ends_with('.')))
        })
}

/// Whether `ip` is `net`, or within its first `bits` bits.
fn in_range(ip: IpAddr, net: IpAddr, bits: Option<u8>) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(a.to_bits()), u128::from(b.to_bits()), 32u32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128u32),
        _ => return false,
    };
    let bits = bits.map_or(width, u32::from).min(width);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (ip >> shift) == (net >> shift)
}

/// A proxy URL's user name and password, if it has one.
type UrlLogin = (String, Option<String>);

/// Parses `socks5://`, `socks5h://` or `http://` `[user@]host[:port]`. A password in the
/// URL is refused unless `password_allowed` (an environment variable's own URL, which no
/// other user can read). The proxy comes without its login; the user name and password
/// of the URL, decoded, come beside it.
fn parse_url(what: &str, raw: &str, password_allowed: bool) -> Result<(Proxy, Option<UrlLogin>)> {
    // The raw value is never echoed: it might hold a password.
    let bad = |why: &str| Error::config(format!("{what}: {why}"));
    let userinfo = raw
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo);
    if !password_allowed && userinfo.is_some_and(|u| u.contains(':')) {
        return Err(bad(
            "a password in the proxy URL is refused (config files and command lines are read \
             by others): write socks5h://USER@host:port and put the password in the variable \
             that proxy_password_env names",
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(bad("the proxy URL contains a control character"));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("not a valid proxy URL ({e})")))?;
    let kind = match url.scheme() {
        "socks5" => ProxyKind::Socks5,
        "socks5h" => ProxyKind::Socks5h,
        "http" => ProxyKind::Http,
        other => {
            return Err(bad(&format!(
                "proxy scheme {other:?} is not one envoi speaks: use socks5:// (envoi resolves \
                 the server's name), socks5h:// (the proxy resolves it) or http:// (CONNECT)"
            )));
        }
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "a proxy URL is scheme://host:port, with no path, query or fragment",
        ));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("the proxy URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let decode = |s: &str, which: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| bad(&format!("the proxy {which} is not valid UTF-8")))
    };
    let login = match url.username() {
        "" => None,
        user => {
            let user = decode(user, "user name")?;
            if user.len() > 255 {
                return Err(bad("the proxy user name is longer than 255 octets"));
            }
            let password = url.password().map(|p| decode(p, "password")).transpose()?;
            Some((user, password))
        }
    };
    let proxy = Proxy {
        kind,
        host,
        port: url.port().unwrap_or(DEFAULT_PORT),
        login: None,
    };
    Ok((proxy, login))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn env(all: &str, no: &str) -> ProxyEnv {
        ProxyEnv {
            all_proxy: (!all.is_empty()).then(|| ("ALL_PROXY", all.to_owned())),
            https_proxy: None,
            no_proxy: (!no.is_empty()).then(|| no.to_owned()),
        }
    }

    fn chosen(key: &ProxyKey, host: &str, env: &ProxyEnv) -> Option<String> {
        key.choose(host, env).unwrap().map(|(p, _)| p.to_string())
    }

    #[test]
    fn the_key_parses_the_three_schemes_and_its_login() {
        for (raw, shown) in [
            ("socks5://127.0.0.1:1080", "socks5://127.0.0.1:1080"),
            ("socks5h://proxy.example", "socks5h://proxy.example:1080"),
            ("http://[::1]:3128", "http://[::1]:3128"),
        ] {
            let ProxyKey::Url(proxy) = ProxyKey::parse("proxy", raw, None).unwrap() else {
                panic!("{raw} is a proxy");
            };
            assert_eq!(proxy.to_string(), shown);
        }
        let ProxyKey::Url(proxy) =
            ProxyKey::parse("proxy", "http://me%40x@p:3128", Some("PROXY_PW")).unwrap()
        else {
            panic!("a proxy");
        };
        assert_eq!(proxy.to_string(), "http://p:3128", "no user name shown");
        assert!(matches!(
            &proxy.login,
            Some((user, PasswordSource::Env(var))) if user == "me@x" && var == "PROXY_PW"
        ));
    }

    #[test]
    fn bad_values_are_configuration_errors_that_do_not_echo_a_password() {
        for raw in [
            "socks5h://user:hunter2@p:1080",
            "https://p:443",
            "socks4://p:1080",
            "http://p:3128/path",
            "not a url",
        ] {
            let e = ProxyKey::parse("proxy", raw, None).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{raw}");
            assert!(!e.message().contains("hunter2"), "{e}");
        }
        let e = ProxyKey::parse("proxy", "http://p:3128", Some("V")).unwrap_err();
        assert!(e.message().contains("user name"), "{e}");
    }

    #[test]
    fn the_key_wins_over_the_environment_and_none_turns_it_off() {
        let env = env("socks5h://envproxy:1080", "");
        let key = ProxyKey::parse("proxy", "http://keyproxy:3128", None).unwrap();
        assert_eq!(
            chosen(&key, "smtp.example.com", &env).as_deref(),
            Some("http://keyproxy:3128")
        );
        for off in ["", "none", "NONE"] {
            let key = ProxyKey::parse("proxy", off, None).unwrap();
            assert_eq!(chosen(&key, "smtp.example.com", &env), None);
        }
        let (proxy, origin) = ProxyKey::Unset
            .choose("smtp.example.com", &env)
            .unwrap()
            .unwrap();
        assert_eq!(proxy.to_string(), "socks5h://envproxy:1080");
        assert_eq!(origin, Origin::Variable("ALL_PROXY"));
    }

    #[test]
    fn the_environment_spares_loopback_and_what_no_proxy_names() {
        let list = "other.org, .example.com,192.0.2.7 10.0.0.0/8 [2001:db8::1]";
        let env = env("proxy:3128", list);
        let unset = ProxyKey::Unset;
        for host in ["localhost", "127.0.0.1", "::1", "a.localhost", "[::1]"] {
            assert_eq!(chosen(&unset, host, &env), None, "{host}");
        }
        for host in [
            "example.com",
            "smtp.example.com",
            "OTHER.org",
            "192.0.2.7",
            "10.1.2.3",
            "2001:db8::1",
        ] {
            assert_eq!(chosen(&unset, host, &env), None, "{host}");
        }
        for host in ["notexample.com", "192.0.2.8", "11.0.0.1", "example.net"] {
            assert_eq!(
                chosen(&unset, host, &env).as_deref(),
                Some("http://proxy:3128"),
                "{host}"
            );
        }
        assert_eq!(chosen(&unset, "anything", &self::env("p:1", "*")), None);
    }

    #[test]
    fn an_https_url_takes_https_proxy_first_and_smtp_never_does() {
        let mut env = env("socks5h://all:1080", "api.example.net");
        env.https_proxy = Some(("HTTPS_PROXY", "http://web:3128".to_owned()));
        let unset = ProxyKey::Unset;
        let (proxy, origin) = unset.choose_https("graph.example", &env).unwrap().unwrap();
        assert_eq!(proxy.to_string(), "http://web:3128");
        assert_eq!(origin, Origin::Variable("HTTPS_PROXY"));
        assert_eq!(
            chosen(&unset, "smtp.example", &env).as_deref(),
            Some("socks5h://all:1080")
        );
        assert!(
            unset
                .choose_https("api.example.net", &env)
                .unwrap()
                .is_none()
        );
        assert!(unset.choose_https("127.0.0.1", &env).unwrap().is_none());
        env.https_proxy = None;
        let (proxy, _) = unset.choose_https("graph.example", &env).unwrap().unwrap();
        assert_eq!(proxy.to_string(), "socks5h://all:1080", "then ALL_PROXY");
    }

    #[test]
    fn the_environment_may_carry_the_proxy_password() {
        let env = env("http://u:s%40cret@p:3128", "");
        let (proxy, _) = ProxyKey::Unset
            .choose("mail.example", &env)
            .unwrap()
            .unwrap();
        let Some((user, PasswordSource::Inline(password))) = &proxy.login else {
            panic!("a login");
        };
        assert_eq!((user.as_str(), password.expose()), ("u", "s@cret"));
        let e = ProxyKey::Unset
            .choose("mail.example", &self::env("ftp://p", ""))
            .unwrap_err();
        assert!(e.message().starts_with("$ALL_PROXY: "), "{e}");
    }
}
