//! `envoi sendmail`, and envoi run under the name `sendmail`: the command cron, git
//! send-email, mail(1) and PHP's mail() call to hand over a message.
//!
//! It reads one message on standard input, to its end (a lone `.` does not end it), and
//! sends it through the default profile (or `--profile`/`$ENVOI_PROFILE`) with `send`'s
//! retries, outbox and exit codes. Like every sendmail it prints nothing when it worked.
//! Its flags are sendmail's own (`-t`, `-f ADDR`, `-FNAME`, `-oi`…), which clap cannot
//! parse (`-fADDR`, `-oi`), so they are read here by hand.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use envoi::deliver::{Dsn, Failure, Transcript};
use envoi::error::{Error, Result};
use envoi::message::given::{self, Submission};
use envoi::message::input::read_bytes;
use envoi::profile::{Env, Flags, resolve};

use envoi::outbox::submit::{Plan, Signing, prepare_given};

use crate::cli::args::{DEFAULT_RETRIES, DEFAULT_RETRY_MAX_SECS, DEFAULT_TIMEOUT_SECS};
use crate::cli::render::transcript;
use crate::cli::send::submit;

/// What the command line asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    /// Recipients given as arguments (each may hold several, comma-separated).
    recipients: Vec<String>,
    /// `-t`: read recipients from To, Cc and Bcc too.
    from_headers: bool,
    /// `-f`/`-r`: the envelope sender (`<>` for none).
    envelope_from: Option<String>,
    /// `-F`: the sender's full name.
    full_name: Option<String>,
    /// `-N`: which delivery status notifications to ask for.
    notify: Option<String>,
    /// `-R`: what they return of the message (full or hdrs).
    ret: Option<String>,
    /// `-V`: the envelope id they carry.
    envid: Option<String>,
    /// `--profile`.
    profile: Option<String>,
    /// `--config`.
    config: Option<PathBuf>,
    /// `--queue`.
    queue: bool,
    /// `--log`.
    log: Option<String>,
    /// `-v`: the SMTP dialogue on stderr.
    verbose: bool,
}

/// The usage line shown with a usage error (and checked against envoi-sendmail(1)).
pub(crate) const USAGE: &str = "usage: envoi sendmail [-t] [-i] [-f ADDR] [-F NAME] [-o…] [-B…] \
                     [--profile NAME] [--config PATH] [--queue] [--log WHERE] [-v] [--] [RECIPIENT…]";

/// Reads sendmail's flags. Every `-o…` and `-B…` is accepted and ignored (delivery
/// modes and body types of a full MTA); `-b` modes other than `-bm` and unknown flags
/// are usage errors.
fn parse(args: &[OsString]) -> Result<Request> {
    let mut request = Request::default();
    let mut args = args.iter().map(|a| {
        a.to_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::usage(format!("{a:?} is not valid UTF-8; {USAGE}")))
    });
    let value = |flag: &str, attached: &str, args: &mut dyn Iterator<Item = Result<String>>| {
        if attached.is_empty() {
            args.next()
                .transpose()?
                .ok_or_else(|| Error::usage(format!("{flag} needs a value; {USAGE}")))
        } else {
            Ok(attached.to_owned())
        }
    };
    while let Some(arg) = args.next().transpose()? {
        match arg.as_str() {
            "--" => {
                for rest in args.by_ref() {
                    request.recipients.push(rest?);
                }
            }
            "-t" => request.from_headers = true,
            "-i" | "-bm" => {}
            "-v" => request.verbose = true,
            "--queue" => request.queue = true,
            "--profile" => request.profile = Some(value("--profile", "", &mut args)?),
            "--config" => request.config = Some(value("--config", "", &mut args)?.into()),
            "--log" => request.log = Some(value("--log", "", &mut args)?),
            long if long.starts_with("--log=") => {
                request.log = Some(long["--log=".len()..].to_owned());
            }
            long if long.starts_with("--profile=") => {
                request.profile = Some(long["--profile=".len()..].to_owned());
            }
            long if long.starts_with("--config=") => {
                request.config = Some(long["--config=".len()..].into());
            }
            flag if flag.starts_with("-o") => {}
            "-B" => {
                value("-B", "", &mut args)?;
            }
            flag if flag.starts_with("-B") => {}
            flag if flag.starts_with("-f") || flag.starts_with("-r") => {
                request.envelope_from = Some(value(&flag[..2], &flag[2..], &mut args)?);
            }
            flag if flag.starts_with("-F") => {
                request.full_name = Some(value("-F", &flag[2..], &mut args)?);
            }
            flag if flag.starts_with("-N") => {
                request.notify = Some(value("-N", &flag[2..], &mut args)?);
            }
            flag if flag.starts_with("-R") => {
                request.ret = Some(value("-R", &flag[2..], &mut args)?);
            }
            flag if flag.starts_with("-V") => {
                request.envid = Some(value("-V", &flag[2..], &mut args)?);
            }
            flag if flag.starts_with("-b") => {
                return Err(Error::usage(format!(
                    "{flag} is not supported: envoi hands messages to a relay and keeps no \
                     mail queue or SMTP server of its own (only -bm, the default)"
                )));
            }
            flag if flag.starts_with('-') && flag.len() > 1 => {
                return Err(Error::usage(format!("unknown flag {flag}; {USAGE}")));
            }
            _ => request.recipients.push(arg),
        }
    }
    Ok(request)
}

/// The DSN request of `-N`, `-R` and `-V` (RFC 3461), checked (64); `None` when none
/// of them was given.
fn dsn(request: &Request) -> Result<Option<Dsn>> {
    if request.notify.is_none() && request.ret.is_none() && request.envid.is_none() {
        return Ok(None);
    }
    let notify = request
        .notify
        .as_deref()
        .map(|n| {
            let words: Vec<String> = n
                .split(',')
                .map(|w| w.trim().to_ascii_uppercase())
                .collect();
            let known = ["SUCCESS", "FAILURE", "DELAY"];
            if words == ["NEVER"] || words.iter().all(|w| known.contains(&w.as_str())) {
                Ok(words)
            } else {
                Err(Error::usage(format!(
                    "-N {n:?}: give never, or some of success, failure and delay"
                )))
            }
        })
        .transpose()?;
    let ret = request
        .ret
        .as_deref()
        .map(|r| match r.to_ascii_uppercase().as_str() {
            upper @ ("FULL" | "HDRS") => Ok(upper.to_owned()),
            _ => Err(Error::usage(format!("-R {r:?}: give full or hdrs"))),
        })
        .transpose()?;
    if let Some(id) = &request.envid
        && (id.is_empty() || id.len() > 100 || !id.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err(Error::usage(format!(
            "-V {id:?}: give 1 to 100 printable ASCII characters"
        )));
    }
    Ok(Some(Dsn {
        notify,
        ret,
        envid: request.envid.clone(),
    }))
}

/// Drops the message into the system spool for the flush service to send: this user
/// may not read the system config (`closed`), which holds the relay's secret. Silent
/// like every sendmail, but for `-v`; 0 once the file is durable, as postdrop.
#[cfg(unix)]
fn drop_into_spool(request: &Request, env: &Env, closed: &Path) -> Result<()> {
    use envoi::outbox::spool::{self, MAX_SPOOLED, SPOOL_DIR};
    let dir = env
        .spool_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(SPOOL_DIR));
    let input = envoi::message::input::read_capped("standard input", Path::new("-"), MAX_SPOOLED)?;
    // Refused now what the flush would set aside: the user is here to be told.
    given::parse(&input)?;
    if !request.from_headers && request.recipients.is_empty() {
        return Err(Error::usage(
            "no recipient: give addresses as arguments, or -t to read To, Cc and Bcc",
        ));
    }
    let ignored: Vec<&str> = [
        ("-N", request.notify.is_some()),
        ("-R", request.ret.is_some()),
        ("-V", request.envid.is_some()),
        ("--profile", request.profile.is_some()),
        ("--queue", request.queue),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect();
    if !ignored.is_empty() {
        crate::cli::render::warning(&format!(
            "{} not kept: the system spool sends with the flush service's profile",
            ignored.join(", ")
        ));
    }
    let path = spool::drop_message(
        &dir,
        &spool::Request {
            recipients: request.recipients.clone(),
            from_headers: request.from_headers,
            envelope_from: request.envelope_from.clone(),
            full_name: request.full_name.clone(),
        },
        &input,
    )?;
    if request.verbose {
        eprintln!(
            "envoi: you may not read {}, which holds the relay's secret; the message is \
             in the system spool as {} for the flush service to send",
            closed.display(),
            path.display()
        );
    }
    Ok(())
}

/// Runs sendmail mode with the arguments after the program (or subcommand) name.
pub fn run(args: &[OsString]) -> Result<(), Failure> {
    let started = Instant::now();
    let request = parse(args)?;
    let dsn = dsn(&request)?;
    let flags = Flags {
        config: request.config.clone(),
        profile: request.profile.clone(),
        log: request.log.clone(),
        ..Flags::default()
    };
    let env = Env::from_process()?;
    #[cfg(unix)]
    if let Some(closed) = envoi::profile::closed_system_config(&flags, &env) {
        return Ok(drop_into_spool(&request, &env, &closed)?);
    }
    let resolved = resolve(&flags, &env)?;
    let connection = resolved.connection()?;
    let names = connection.profile.sendmail.names()?;
    let input = read_bytes("standard input", Path::new("-"))?;
    let submission = Submission {
        recipients: &request.recipients,
        from_headers: request.from_headers,
        envelope_from: request.envelope_from.as_deref(),
        full_name: request.full_name.as_deref(),
        profile_from: connection.profile.from.as_deref(),
        names: &names,
        allow_from_override: connection.profile.sendmail.allow_from_override,
        set_from_header: connection.profile.sendmail.set_from_header,
        now: SystemTime::now(),
    };
    let prepared = given::parse(&input)?.prepare(&submission)?;
    // Signed as it will be sent: Date and Message-ID added, Bcc removed, under the
    // recipient policy.
    let signing = Signing::of(Some(connection))?;
    let prepared = prepare_given(prepared, &signing, &resolved.policy, submission.now)?;
    let plan = Plan {
        started,
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        retries: DEFAULT_RETRIES,
        retry_max: Duration::from_secs(DEFAULT_RETRY_MAX_SECS),
        allow_partial: false,
        queue: request.queue,
        dsn,
        transcript: request.verbose.then_some(transcript as Transcript),
    };
    submit(&resolved, prepared, &plan, false).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Request> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&args)
    }

    #[test]
    fn what_real_callers_pass() {
        let cronie = parsed(&[
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "root",
        ])
        .unwrap();
        assert!(cronie.from_headers);
        assert_eq!(cronie.full_name.as_deref(), Some("CronDaemon"));
        assert_eq!(cronie.envelope_from.as_deref(), Some("root"));
        assert!(cronie.recipients.is_empty());

        let debian_cron = parsed(&[
            "-i",
            "-FCronDaemon",
            "-B8BITMIME",
            "-oem",
            "ops@example.com",
        ])
        .unwrap();
        assert_eq!(debian_cron.recipients, ["ops@example.com"]);
        assert!(!debian_cron.from_headers);

        let git = parsed(&[
            "-f",
            "me@example.com",
            "-i",
            "a@example.com",
            "b@example.com",
        ])
        .unwrap();
        assert_eq!(git.recipients, ["a@example.com", "b@example.com"]);

        let mailx = parsed(&["-i", "-fme@example.com", "--", "-odd@example.com"]).unwrap();
        assert_eq!(mailx.envelope_from.as_deref(), Some("me@example.com"));
        assert_eq!(mailx.recipients, ["-odd@example.com"]);

        let ours = parsed(&[
            "--profile",
            "reports",
            "--config=/etc/envoi.toml",
            "--queue",
            "--log=syslog",
            "-t",
        ])
        .unwrap();
        assert_eq!(ours.log.as_deref(), Some("syslog"));
        assert_eq!(ours.profile.as_deref(), Some("reports"));
        assert_eq!(ours.config, Some(PathBuf::from("/etc/envoi.toml")));
        assert!(ours.queue);

        let dsn = parsed(&["-N", "success,failure", "-RHDRS", "-t"]).unwrap();
        assert_eq!(dsn.notify.as_deref(), Some("success,failure"));
        assert_eq!(dsn.ret.as_deref(), Some("HDRS"));
    }

    #[test]
    fn dsn_requests_are_checked() {
        let asked = parsed(&["-N", "success, Failure", "-Rhdrs", "-V", "job-1"]).unwrap();
        let request = dsn(&asked).unwrap().unwrap();
        assert_eq!(request.notify.unwrap(), ["SUCCESS", "FAILURE"]);
        assert_eq!(request.ret.as_deref(), Some("HDRS"));
        assert_eq!(request.envid.as_deref(), Some("job-1"));
        assert_eq!(dsn(&parsed(&["-t"]).unwrap()).unwrap(), None);
        for args in [
            &["-N", "never,success"][..],
            &["-N", ""],
            &["-R", "body"],
            &["-V", "two words"],
        ] {
            let err = dsn(&parsed(args).unwrap()).unwrap_err();
            assert_eq!(err.kind(), envoi::ErrorKind::Usage, "{args:?}");
        }
    }

    #[test]
    fn unsupported_modes_and_unknown_flags_are_usage_errors() {
        for args in [
            &["-bp"][..],
            &["-bs"],
            &["-bi"],
            &["-X"],
            &["-f"],
            &["--frobnicate"],
        ] {
            let err = parsed(args).unwrap_err();
            assert_eq!(err.kind(), envoi::ErrorKind::Usage, "{args:?}");
        }
        assert!(
            parsed(&["-bp"])
                .unwrap_err()
                .message()
                .contains("not supported")
        );
    }
}
