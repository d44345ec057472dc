//! `envoi check`: the connection doctor. It resolves the connection exactly as `send`
//! does, then connects, secures, says EHLO and logs in, and sends no mail. With
//! `--probe` it reads no profile and tries every way of speaking to a host instead.

use std::time::Duration;

use envoi::deliver::{ApiCheck, Probe, ServerReport, advice_for, check, check_api, probe};
use envoi::error::{Error, ErrorKind, Result};
use envoi::profile::{Env, Fingerprint, RecipientPolicy, Security, Transport, resolve};

use crate::cli::args::CheckArgs;

/// What a check found.
pub enum Checked {
    /// The profile's connection works.
    Server(Box<ServerReport>),
    /// What each port and way of speaking gave.
    Probes(Vec<Probe>),
    /// The HTTPS mail API took the token (and knows the mailbox).
    Api(ApiCheck),
}

/// Runs the check; with the recipient policy of the connection checked (empty for a
/// probe, which reads no profile).
pub fn run(args: &CheckArgs) -> Result<(Checked, RecipientPolicy)> {
    if let Some(target) = &args.probe {
        let (host, ports) = probe_target(target)?;
        let timeout = Duration::from_secs(args.timeout);
        let pin = match &args.tls_fingerprint {
            Some(text) => Some(
                Fingerprint::parse(text)
                    .map_err(|why| Error::usage(format!("--tls-fingerprint {text:?}: {why}")))?,
            ),
            None => None,
        };
        let trust = (args.ca_file.as_deref(), pin.as_ref());
        return Ok((
            Checked::Probes(probe(&host, &ports, trust, timeout)),
            RecipientPolicy::default(),
        ));
    }
    let resolved = resolve(&args.flags(), &Env::from_process()?)?;
    let profile = &resolved.connection()?.profile;
    let timeout = Duration::from_secs(args.timeout);
    let policy = resolved.policy.clone();
    if let Transport::Api(api) = &profile.transport {
        return check_api(api, timeout)
            .map(|r| (Checked::Api(r), policy))
            .map_err(|e| advice_for(profile, e));
    }
    check(profile, timeout).map(|r| (Checked::Server(Box::new(r)), policy))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; without a port, the three submission
/// ports.
fn probe_target(target: &str) -> Result<(String, Vec<u16>)> {
    let bad = || Error::usage(format!("--probe {target:?}: give HOST or HOST:PORT"));
    let (host, port) = match target.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            (host, after.strip_prefix(':'))
        }
        None => match target.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            _ => (target, None),
        },
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    let ports = match port {
        Some(p) => vec![p.parse().map_err(|_| bad())?],
        None => vec![465, 587, 25],
    };
    Ok((host.to_owned(), ports))
}

/// The probe that works best: implicit TLS, then STARTTLS, then plain — but plain only
/// when no TLS was offered at all. After a TLS attempt failed (refused, stripped,
/// tampered with, an untrusted certificate), plain SMTP is the downgrade someone in
/// between may want: no advice then, and [`nothing_works`] says why.
pub fn best(probes: &[Probe]) -> Option<&Probe> {
    let works = |security: Security| {
        probes
            .iter()
            .find(|p| p.security == security && p.outcome.is_ok())
    };
    works(Security::Tls)
        .or_else(|| works(Security::Starttls))
        .or_else(|| {
            (!tls_failed(probes))
                .then(|| works(Security::None))
                .flatten()
        })
}

/// Whether TLS was offered somewhere and did not work: a way failed after the server
/// offered TLS, or a plain EHLO lists STARTTLS (or the `XXXXXXXA` a stripping firewall
/// leaves in its place) while no TLS way worked.
fn tls_failed(probes: &[Probe]) -> bool {
    let starttls_or_its_mask = |keyword: &str| {
        let keyword = keyword.split_whitespace().next().unwrap_or_default();
        keyword.eq_ignore_ascii_case("STARTTLS")
            || (keyword.len() == 8 && keyword.to_ascii_uppercase().starts_with("XXXXXXX"))
    };
    probes.iter().any(|p| {
        p.tls_failed
            || p.outcome.as_ref().is_ok_and(|r| {
                r.tls.is_none() && r.extensions.iter().any(|e| starttls_or_its_mask(e))
            })
    })
}

/// The error for a probe that gives no advice: TLS with an untrusted certificate (77),
/// TLS offered and failing (75), or nothing answering (75).
pub fn nothing_works(probes: &[Probe]) -> Error {
    // TLS works and only trust is missing: name the way that works, and point at the
    // ready `ca_file` / `tls_fingerprint` advice its line above carries.
    let untrusted = |security: Security| {
        probes.iter().find(|p| {
            p.security == security
                && p.outcome
                    .as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::Certificate)
        })
    };
    if let Some(p) = untrusted(Security::Tls).or_else(|| untrusted(Security::Starttls)) {
        let way = match p.security {
            Security::Tls => "implicit TLS",
            _ => "STARTTLS",
        };
        return Error::new(
            ErrorKind::Certificate,
            format!(
                "{way} works on port {port}, the certificate is not trusted (its line above \
                 says why): use port = {port} and security = \"{security}\", and trust the \
                 certificate with ca_file or the tls_fingerprint line above (security = \
                 \"none\" is no way around it)",
                port = p.port,
                security = p.security.name(),
            ),
        );
    }
    if tls_failed(probes) {
        return Error::new(
            ErrorKind::Temporary,
            "the server offers TLS but it failed (STARTTLS refused or stripped, data \
             injected, or the handshake broken: the lines above say which): something between \
             you and the server may be interfering; do not use security = \"none\" to get \
             around it, try from another network or ask the server's operator",
        );
    }
    Error::new(
        ErrorKind::Temporary,
        "nothing answered SMTP on the ports tried",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_targets() {
        assert_eq!(
            probe_target("mail.example.com").unwrap(),
            ("mail.example.com".into(), vec![465, 587, 25])
        );
        assert_eq!(probe_target("mail.example.com:2525").unwrap().1, [2525]);
        assert_eq!(probe_target("[::1]:25").unwrap(), ("::1".into(), vec![25]));
        assert!(probe_target("host:notaport").is_err());
        assert!(probe_target("").is_err());
    }
}
