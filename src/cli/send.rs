//! `envoi send`: resolve the connection, build the message, deliver it.
//!
//! Every input is read and checked before any connection is opened, so bad input
//! never leaves half a message behind.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use clap::ArgMatches;
use envoi::deliver::{
    Delivery, DeliveryOptions, Dsn, Failure, Policy, Report, Transcript, deliver, payload_in_flight,
};
use envoi::error::{Error, ErrorKind, Result};
use envoi::message::draft::{self, Draft};
use envoi::message::input::{folder_of, is_stdin, read_bytes};
use envoi::message::lint::lint;
use envoi::message::{self, Prepared, address, payload};
use envoi::outbox::idempotency::{self, Claim, FirstSend, FirstStatus};
use envoi::outbox::{FirstAttempt, Outbox, Queued, send_queued};
use envoi::profile::{Connection, Env, Profile, Resolved, resolve};

use crate::cli::args::{
    DEFAULT_RETRIES, DEFAULT_RETRY_MAX_SECS, DEFAULT_TIMEOUT_SECS, SendArgs, secret_vars,
};
use crate::cli::render::{Notices, print_error, transcript, warning};

/// How `envoi send` ended well.
#[derive(Debug)]
pub enum Outcome {
    /// Sent or saved.
    Delivered(Delivery),
    /// `--queue`: written to the outbox; the first attempt failed temporarily, so envoi
    /// owns the retry (`envoi outbox flush`).
    Queued(Queued),
    /// `--idempotency-key` seen before: nothing was sent this time.
    Duplicate(FirstSend),
    /// `--dry-run`: built, not sent.
    DryRun(Prepared),
    /// `--lint`: built and checked, not sent.
    Linted {
        /// The message checked.
        prepared: Prepared,
        /// What may junk or bounce it, in words.
        findings: Vec<String>,
    },
}

/// Runs `envoi send` with its parsed flags and their matches.
pub fn run(args: &SendArgs, matches: &ArgMatches) -> Result<Outcome, Failure> {
    let started = Instant::now();
    let resolved = resolve(&args.flags(), &Env::from_process()?)?;
    let draft = read_draft(args, matches, &secret_vars(resolved.connection.as_ref()))?;
    let email = draft.into_email()?;
    // A delivery receipt asks the servers on the way for a DSN on success and failure,
    // with only the headers of the message returned.
    let dsn = email.delivery_receipt.as_ref().map(|_| Dsn {
        notify: Some(vec!["SUCCESS".to_owned(), "FAILURE".to_owned()]),
        ret: Some("HDRS".to_owned()),
        envid: None,
    });
    let from = match email.from.clone() {
        Some(from) => from,
        None => profile_from(resolved.connection.as_ref())?,
    };
    let profile = resolved.connection.as_ref().map(|c| &c.profile);
    let findings: Vec<String> = lint(
        &email,
        &from,
        profile.and_then(Profile::login_user),
        profile
            .and_then(|p| p.dkim.as_ref())
            .map(|d| d.domain.as_str()),
    )
    .iter()
    .map(ToString::to_string)
    .collect();
    let now = SystemTime::now();
    let prepared = message::build(email, &from, now)?;
    let prepared = dkim_sign(resolved.connection.as_ref(), prepared, now)?;
    if args.lint {
        return Ok(Outcome::Linted { prepared, findings });
    }
    if !args.quiet {
        for finding in &findings {
            warning(finding);
        }
    }
    if args.dry_run {
        return Ok(Outcome::DryRun(prepared));
    }
    let how = How {
        started,
        timeout: Duration::from_secs(args.timeout),
        retries: args.retries,
        retry_max: Duration::from_secs(args.retry_max_secs),
        allow_partial: args.allow_partial,
        queue: args.queue,
        verbose: args.verbose,
        json: args.json,
        dsn,
    };
    dispatch(&resolved, prepared, &how)
}

/// The message signed with the profile's DKIM key, when the profile has `dkim_*` keys
/// (a `--smtp-url` connection never does); `now` is the time of its Date header. Done
/// once, before `--dry-run` shows it or it is queued or sent, so the outbox keeps the
/// signed bytes.
pub fn dkim_sign(
    connection: Option<&Connection>,
    prepared: Prepared,
    now: SystemTime,
) -> Result<Prepared> {
    match connection.and_then(|c| c.profile.dkim.as_ref()) {
        Some(dkim) => dkim.sign(prepared, now),
        None => Ok(prepared),
    }
}

/// How a built message is to be delivered: what `send`'s flags (or sendmail mode's
/// defaults) say.
pub struct How {
    /// When the command started: the deadline counts from here.
    pub started: Instant,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--retries`.
    pub retries: u32,
    /// `--retry-max-secs`.
    pub retry_max: Duration,
    /// `--allow-partial`.
    pub allow_partial: bool,
    /// `--queue`.
    pub queue: bool,
    /// `-v`.
    pub verbose: bool,
    /// `--json`, for the watchdog's last word.
    pub json: bool,
    /// Delivery status notifications to request (sendmail's -N/-R/-V).
    pub dsn: Option<Dsn>,
}

impl How {
    /// What `send` does without flags.
    pub fn defaults(started: Instant) -> How {
        How {
            started,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            retries: DEFAULT_RETRIES,
            retry_max: Duration::from_secs(DEFAULT_RETRY_MAX_SECS),
            allow_partial: false,
            queue: false,
            verbose: false,
            json: false,
            dsn: None,
        }
    }
}

/// Delivers a prepared message along the resolved connection: checks the idempotency
/// key, queues it (`--queue`, profile `outbox = true`) or sends it directly under the
/// watchdog, and records the key.
pub fn dispatch(resolved: &Resolved, prepared: Prepared, how: &How) -> Result<Outcome, Failure> {
    let Some(connection) = &resolved.connection else {
        return Err(Error::config(
            "no connection: give --profile or --smtp-url (or $ENVOI_SMTP_URL), or set \
             `default` in the config file",
        )
        .into());
    };
    let deadline = how.started + how.timeout;
    let options = DeliveryOptions {
        policy: Policy {
            retries: how.retries,
            retry_max: how.retry_max,
            deadline: Some(deadline),
            allow_partial: how.allow_partial,
        },
        transcript: how.verbose.then_some(transcript as Transcript),
        dsn: how.dsn.clone(),
    };
    let key = resolved.idempotency_key.as_deref();
    // Held until the outcome is recorded: a second run with this key waits, then sees it.
    let _key_guard = match key {
        Some(key) => match idempotency::claim(resolved.outbox_dir()?, key, deadline)? {
            Claim::Duplicate(first) => return Ok(Outcome::Duplicate(first)),
            Claim::Fresh(guard) => Some(guard),
        },
        None => None,
    };
    if how.queue || connection.profile.outbox {
        return queued(connection, resolved.outbox_dir()?, prepared, &options, key);
    }
    watchdog(deadline, how.json);
    let delivery = deliver(&connection.profile, prepared, &options, &mut Notices)?;
    if let Some(key) = key {
        let (prepared, status) = match &delivery {
            Delivery::Sent { prepared, .. } => (prepared, FirstStatus::Sent),
            Delivery::Saved { prepared, .. } => (prepared, FirstStatus::Saved),
        };
        let outbox_dir = resolved.outbox_dir()?;
        if let Err(e) = idempotency::record(outbox_dir, key, &prepared.message_id, status) {
            warning(&format!(
                "sent, but the idempotency key was not recorded: {e}"
            ));
        }
    }
    Ok(Outcome::Delivered(delivery))
}

/// The message as flags and `--input` give it: the payload first, flags over it.
fn read_draft(args: &SendArgs, matches: &ArgMatches, secrets: &[String]) -> Result<Draft> {
    let from_flags = args.draft(matches, secrets)?;
    if args.input.as_deref().is_some_and(is_stdin) && from_flags.stdin_readers() > 0 {
        return Err(draft::stdin_read_twice());
    }
    Ok(match &args.input {
        Some(path) => {
            let label = path.display().to_string();
            let json = read_bytes("--input", path)?;
            // The payload's body is data: its local images stay unless asked for.
            payload::parse(&label, &json)?
                .body_is_data(folder_of(path))
                .overlay(from_flags)
        }
        None => from_flags,
    })
}

/// The sender when `--from` is not given: the profile's `from`.
fn profile_from(connection: Option<&Connection>) -> Result<envoi::Mailbox> {
    let profile_from = connection.and_then(|c| c.profile.from.as_deref().map(|f| (&c.name, f)));
    let Some((name, from)) = profile_from else {
        return Err(Error::usage(
            "no sender: give --from or set `from` in the profile",
        ));
    };
    address::parse_single(&format!("profile {name:?}: from"), from)
}

/// Outbox mode: the entry carries the key; it goes to the ledger when the entry is
/// delivered.
fn queued(
    connection: &Connection,
    outbox_dir: &Path,
    prepared: Prepared,
    options: &DeliveryOptions,
    key: Option<&str>,
) -> Result<Outcome, Failure> {
    let outbox = Outbox::open(outbox_dir)?;
    Ok(
        match send_queued(&outbox, prepared, connection, options, key, &mut Notices)? {
            FirstAttempt::Delivered(delivery) => Outcome::Delivered(delivery),
            FirstAttempt::Queued(queued) => Outcome::Queued(queued),
        },
    )
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
