//! `envoi send`: resolve the connection, build the message, deliver it.
//!
//! Every input is read and checked before any connection is opened, so bad input
//! never leaves half a message behind.

use std::time::{Duration, Instant, SystemTime};

use clap::ArgMatches;
use envoi::deliver::{Dsn, Failure, Report, Transcript, payload_in_flight};
use envoi::error::{Error, ErrorKind, Result};
use envoi::message::draft::{self, Draft};
use envoi::message::input::{folder_of, is_stdin, read_bytes};
use envoi::message::lint::lint;
use envoi::message::{Prepared, payload};
use envoi::outbox::submit::{DefaultSender, LastWords, Plan, Signing, dispatch, prepare};
use envoi::profile::{Env, Profile, Resolved, resolve};

use crate::cli::args::{SendArgs, secret_vars};
use crate::cli::render::{Notices, Outcome, policy_lines, print_error, transcript, warning};

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
    let from = DefaultSender::new(None, resolved.connection.as_ref())?.pick(email.from.as_ref())?;
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
    let signing = Signing::of(resolved.connection.as_ref())?;
    let prepared = prepare(email, &from, &signing, &resolved.policy, now)?;
    if args.lint {
        for line in policy_lines(&resolved.policy) {
            eprintln!("envoi: policy: {line}");
        }
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
    let plan = Plan {
        started,
        timeout: Duration::from_secs(args.delivery.timeout),
        retries: args.delivery.retries,
        retry_max: Duration::from_secs(args.delivery.retry_max_secs),
        allow_partial: args.delivery.allow_partial,
        queue: args.queue,
        dsn,
        transcript: args.output.verbose.then_some(transcript as Transcript),
    };
    submit(&resolved, prepared, &plan, args.output.json)
}

/// [`dispatch`], with the watchdog armed for a direct send.
pub fn submit(
    resolved: &Resolved,
    prepared: Prepared,
    plan: &Plan,
    json: bool,
) -> Result<Outcome, Failure> {
    let arm = |deadline, last_words| watchdog(deadline, json, last_words);
    Ok(dispatch(resolved, prepared, plan, &mut Notices, &arm)?.into())
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

/// Ends a direct send (75) shortly after `deadline` whatever it is doing. A backstop:
/// the socket holds every read and write to the deadline (a dripping server cannot
/// stretch it), but looking up the server's name cannot be interrupted and has no
/// deadline of its own. Ending here is like a kill, which the ledger is built to survive.
/// (In outbox mode the message is already queued and the socket's deadline is enough.)
/// Its line goes to the delivery log first (`last_words`).
fn watchdog(deadline: Instant, json: bool, last_words: LastWords) {
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
        // The log may hang (a file on a stuck NFS mount): the process ends anyway.
        let (said, spoken) = std::sync::mpsc::channel();
        let for_log = error.clone();
        std::thread::spawn(move || {
            last_words.say(&for_log, &mut Notices);
            let _ = said.send(());
        });
        let _ = spoken.recv_timeout(LAST_WORDS_WAIT);
        print_error(&error, &Report::default(), json);
        std::process::exit(i32::from(error.kind().exit_code()));
    });
}

/// How long after the deadline the watchdog waits for the regular timeouts to act.
const WATCHDOG_GRACE: Duration = Duration::from_secs(2);

/// How long the watchdog waits for the delivery log's line before it ends the process.
const LAST_WORDS_WAIT: Duration = Duration::from_millis(500);
