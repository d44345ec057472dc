//! `envoi send`: resolve the connection, build the message, deliver it.
//!
//! Every input is read and checked before any connection is opened, so bad input
//! never leaves half a message behind.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use clap::ArgMatches;

use crate::address;
use crate::cli::SendArgs;
use crate::config::{self, Profile, TransportKind};
use crate::dispatch::{self, Failure, Policy, Progress, Report};
use crate::error::{Error, ErrorKind, Result};
use crate::flush;
use crate::idempotency::{self, KeyGuard};
use crate::input::{is_stdin, read_bytes};
use crate::message::{self, Prepared};
use crate::outbox::{Outbox, Route};
use crate::output::Outcome;
use crate::output::print_error;
use crate::payload;
use crate::transport::payload_in_flight;
use crate::transport::{SmtpSettings, save_to_dir};

/// The profile in use, its name (`--smtp-url` for a URL), and how to find it again.
struct Connection {
    name: String,
    profile: Profile,
    route: Route,
}

/// Runs `envoi send` with its parsed flags and their matches.
pub fn run(args: &SendArgs, matches: &ArgMatches) -> Result<Outcome, Failure> {
    let started = Instant::now();
    let connection = resolve_connection(args)?;

    let from_flags = args.draft(matches)?;
    if args.input.as_deref().is_some_and(is_stdin) && from_flags.stdin_readers() > 0 {
        return Err(Error::usage(
            "standard input (-) can feed only one of --input, the body, the text and the attachments",
        )
        .into());
    }
    let draft = match &args.input {
        Some(path) => {
            let label = path.display().to_string();
            let json = read_bytes("--input", path)?;
            payload::parse(&label, &json)?.overlay(from_flags)
        }
        None => from_flags,
    };
    let email = draft.into_email()?;

    let from = match email.from.clone() {
        Some(from) => from,
        None => {
            let profile_from = connection
                .as_ref()
                .and_then(|c| c.profile.from.as_deref().map(|f| (&c.name, f)));
            let Some((name, from)) = profile_from else {
                return Err(
                    Error::usage("no sender: give --from or set `from` in the profile").into(),
                );
            };
            address::parse_single(&format!("profile {name:?}: from"), from)?
        }
    };
    let prepared = message::build(email, &from, SystemTime::now())?;

    if args.dry_run {
        return Ok(Outcome::DryRun { prepared });
    }
    let Some(connection) = connection else {
        return Err(Error::config(
            "no connection: give --profile or --smtp-url (or $ENVOI_SMTP_URL), or set \
             `default` in the config file",
        )
        .into());
    };
    let deadline = started + Duration::from_secs(args.timeout);
    let options = DeliveryOptions {
        policy: Policy {
            retries: args.retries,
            retry_max: Duration::from_secs(args.retry_max_secs),
            deadline: Some(deadline),
            allow_partial: args.allow_partial,
        },
        verbose: args.verbose,
    };
    let outbox_dir = config::outbox_dir(args.outbox_dir.as_deref(), Some(&connection.profile))?;
    let key = args.idempotency_key.as_deref();
    // Held until the outcome is recorded: a second run with this key waits, then sees it.
    let _key_guard = match key {
        Some(key) => {
            idempotency::check_key(key)?;
            let guard = KeyGuard::acquire(&outbox_dir, key, deadline)?;
            if let Some(first) = first_send(&outbox_dir, key)? {
                return Ok(first);
            }
            Some(guard)
        }
        None => None,
    };
    let Connection {
        name,
        profile,
        route,
    } = connection;
    if args.queue || profile.outbox {
        // The entry carries the key; it goes to the ledger when the entry is delivered.
        let outbox = Outbox::open(&outbox_dir)?;
        let entry = flush::enqueue(&outbox, &prepared, route, options.policy.allow_partial, key)?;
        let first = (options.verbose, options.policy.deadline);
        return flush::first_attempt(&outbox, entry, prepared, (&name, &profile), first);
    }
    watchdog(deadline, args.json);
    let outcome = deliver(&name, &profile, prepared, &options, &mut |_| Ok(()))?;
    if let Some(key) = key {
        let recorded = match &outcome {
            Outcome::Sent { prepared, .. } => Some((prepared, "sent")),
            Outcome::Saved { prepared, .. } => Some((prepared, "saved")),
            _ => None,
        };
        if let Some((prepared, status)) = recorded
            && let Err(e) = idempotency::record(&outbox_dir, key, &prepared.message_id, status)
        {
            eprintln!("envoi: warning: sent, but the idempotency key was not recorded: {e}");
        }
    }
    Ok(outcome)
}

/// Ends a direct send (75) shortly after `deadline` whatever it is doing: socket timeouts
/// bound each read, but a server that drips a byte at a time could outlast them. Ending
/// here is like a kill, which the ledger is built to survive. (In outbox mode the message
/// is already queued; there only the per-command timeouts apply.)
fn watchdog(deadline: Instant, json: bool) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()) + WATCHDOG_GRACE);
        let error = if payload_in_flight() {
            Error::new(
                ErrorKind::OutcomeUnknown,
                "the deadline (--timeout) passed after the message was sent and before the \
                 server answered; it may or may not have been delivered",
            )
        } else {
            Error::new(
                ErrorKind::Temporary,
                "the deadline (--timeout) passed while the server was still answering",
            )
        };
        print_error(&error, &Report::default(), json);
        std::process::exit(i32::from(error.kind().exit_code()));
    });
}

/// How long after the deadline the watchdog waits for the regular timeouts to act.
const WATCHDOG_GRACE: Duration = Duration::from_secs(2);

/// The outcome of an earlier send with `key`: recorded in the ledger, or still queued.
fn first_send(outbox_dir: &Path, key: &str) -> Result<Option<Outcome>> {
    if let Some(first) = idempotency::lookup(outbox_dir, key)? {
        return Ok(Some(Outcome::Duplicate {
            message_id: first.message_id,
            first_status: first.status,
        }));
    }
    if !outbox_dir.join("queue").is_dir() {
        return Ok(None);
    }
    Ok(Outbox::open(outbox_dir)?
        .find_key(key)?
        .map(|queued| Outcome::Duplicate {
            message_id: queued.message_id,
            first_status: "queued".into(),
        }))
}

/// `--smtp-url`/`$ENVOI_SMTP_URL` when given, else the profile from the config file.
fn resolve_connection(args: &SendArgs) -> Result<Option<Connection>> {
    let url = args.smtp_url.clone().or_else(|| {
        std::env::var("ENVOI_SMTP_URL")
            .ok()
            .filter(|u| !u.is_empty())
    });
    if url.is_some() && args.profile.is_some() {
        return Err(Error::usage(
            "--profile and --smtp-url (or $ENVOI_SMTP_URL) both name a connection; give one",
        ));
    }
    open_route(&Route {
        config: args.config.clone(),
        profile: args.profile.clone(),
        smtp_url: url,
    })
}

/// The profile an outbox entry was queued with; `config` overrides the recorded file.
pub fn connection_for(route: &Route, config: Option<&Path>) -> Result<(String, Profile)> {
    let route = Route {
        config: config
            .map(Path::to_path_buf)
            .or_else(|| route.config.clone()),
        ..route.clone()
    };
    open_route(&route)?
        .map(|c| (c.name, c.profile))
        .ok_or_else(|| Error::config("no config file or default profile for the queued message"))
}

/// The connection a route names: its URL, or its profile (else `default`) of its config
/// file (else `$ENVOI_CONFIG`, else the platform path). `None` when no file exists and
/// none was named. The returned route names the file and profile actually used.
fn open_route(route: &Route) -> Result<Option<Connection>> {
    if let Some(url) = &route.smtp_url {
        let profile = config::profile_from_url(url)?;
        profile.check("--smtp-url")?;
        return Ok(Some(Connection {
            name: "--smtp-url".into(),
            profile,
            route: route.clone(),
        }));
    }
    let env = std::env::var("ENVOI_CONFIG").ok();
    let Some((path, explicit)) = config::locate(route.config.as_deref(), env.as_deref()) else {
        return Ok(None);
    };
    let file = config::load(&path, explicit)?;
    let config = std::path::absolute(&path).unwrap_or(path);
    Ok(file
        .select(route.profile.as_deref())?
        .map(|(name, profile)| Connection {
            route: Route {
                config: Some(config),
                profile: Some(name.clone()),
                smtp_url: None,
            },
            name,
            profile,
        }))
}

/// How to deliver, beyond the profile: the retry policy and `-v`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryOptions {
    /// Retries, deadline and partial delivery.
    pub policy: Policy,
    /// Print the SMTP dialogue on stderr.
    pub verbose: bool,
}

/// Delivers a prepared message through `profile` (named `name` in errors): writes it
/// to the profile's directory, or sends it over SMTP with retries as `options` say.
/// `progress` is told after every transaction the server accepted (see
/// [`dispatch::Progress`]).
pub fn deliver(
    name: &str,
    profile: &Profile,
    prepared: Prepared,
    options: &DeliveryOptions,
    progress: Progress<'_>,
) -> Result<Outcome, Failure> {
    profile.check(name)?;
    let host = match (profile.transport, &profile.dir, &profile.host) {
        (TransportKind::File, Some(dir), _) => {
            let path = save_to_dir(dir, &prepared)?;
            return Ok(Outcome::Saved { prepared, path });
        }
        (TransportKind::Smtp, _, Some(host)) => host.clone(),
        _ => {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("profile {name:?} passed its check without a host or dir (a bug)"),
            )
            .into());
        }
    };
    let credentials = match profile.login(name)? {
        Some((user, source)) => Some((user, source.fetch()?)),
        None => None,
    };
    let settings = SmtpSettings {
        host,
        port: profile.port.unwrap_or(profile.security.default_port()),
        security: profile.security,
        credentials,
        hello_name: profile.hello_name.clone(),
        timeout: profile.timeout(),
        ca_file: profile.ca_file.clone(),
        allow_plaintext_auth: profile.allow_plaintext_auth,
        verbose: options.verbose,
        deadline: options.policy.deadline,
    };
    let report = dispatch::send(&settings, &prepared, &options.policy, progress)?;
    Ok(Outcome::Sent { prepared, report })
}
