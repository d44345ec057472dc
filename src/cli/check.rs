//! `envoi check`: the connection doctor. It resolves the connection exactly as `send`
//! does, then connects, secures, says EHLO and logs in, and sends no mail. With
//! `--probe` it reads no profile and tries every way of speaking to a host instead.

use std::time::Duration;

use envoi::deliver::{Probe, ServerReport, check, probe};
use envoi::error::{Error, ErrorKind, Result};
use envoi::profile::{Env, resolve};

use crate::cli::args::CheckArgs;

/// What a check found.
pub enum Checked {
    /// The profile's connection works.
    Server(Box<ServerReport>),
    /// What each port and way of speaking gave.
    Probes(Vec<Probe>),
}

/// The longest one probe attempt may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the check.
pub fn run(args: &CheckArgs) -> Result<Checked> {
    if let Some(target) = &args.probe {
        let (host, ports) = probe_target(target)?;
        let timeout = PROBE_TIMEOUT.min(Duration::from_secs(args.timeout));
        return Ok(Checked::Probes(probe(&host, &ports, None, timeout)));
    }
    let resolved = resolve(&args.flags(), &Env::from_process()?)?;
    check(
        &resolved.connection()?.profile,
        Duration::from_secs(args.timeout),
    )
    .map(|r| Checked::Server(Box::new(r)))
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

/// The probe that works best: implicit TLS, then STARTTLS, then plain (no password
/// should cross that one).
pub fn best(probes: &[Probe]) -> Option<&Probe> {
    use envoi::profile::Security;
    [Security::Tls, Security::Starttls, Security::None]
        .iter()
        .find_map(|s| {
            probes
                .iter()
                .find(|p| p.security == *s && p.outcome.is_ok())
        })
}

/// The error for a probe where nothing worked.
pub fn nothing_works(probes: &[Probe]) -> Error {
    let certificate = probes.iter().any(|p| {
        p.outcome
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::Certificate)
    });
    if certificate {
        return Error::new(
            ErrorKind::Certificate,
            "the server speaks TLS but its certificate is not trusted (the lines above say \
             why): trust it in the profile with ca_file, or pin it with tls_fingerprint",
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
