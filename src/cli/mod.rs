//! The face: the only code that knows clap, standard output and error, and exit codes.
//! It belongs to the binary alone (declared in `main.rs`), so no library code can
//! reach it.
//!
//! [`args`] defines the flags; [`send`] and [`outbox`] run the commands on the library;
//! [`render`] prints their results as text or `--json`.

mod args;
mod auth;
mod batch;
mod check;
mod config;
mod docs;
mod outbox;
mod progress;
mod render;
mod send;
mod sendmail;
mod suppress;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::FromArgMatches;
use envoi::deliver::Report;
use envoi::error::{Error, ErrorKind};

use args::{Cli, Command, OutboxCommand};
use render::{print_error, print_outcome};

/// Runs envoi with `args` (program name first) and returns the exit code.
pub fn main(args: Vec<OsString>) -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("envoi: error: internal error (a bug in envoi; please report it): {info}");
    }));
    let code = exit_70_on_panic(|| run(args));
    // Where files have no Unix owner and mode (Windows), the secret files it trusted unchecked.
    if let Some(text) = envoi::ownership::unchecked_warning() {
        render::warning(&text);
    }
    code
}

/// The arguments of sendmail mode, when envoi runs as `sendmail` (a link named so, as
/// cron and mail(1) call it) or as `envoi sendmail`. They bypass clap: sendmail's flags
/// (`-fADDR`, `-oi`, and `--` before recipients that start with `-`) are not clap's.
fn sendmail_args(args: &[OsString]) -> Option<&[OsString]> {
    let program = args.first().map(std::path::Path::new)?;
    if program.file_name().is_some_and(|name| name == "sendmail") {
        return Some(&args[1..]);
    }
    (args.get(1)? == "sendmail").then(|| &args[2..])
}

/// The exit of a command that reports its own output: 0, or the error's code.
/// After a check's report, the recipient policy its sends are under, one rule a line
/// (with `--json`, `envoi config show --json` lists it: the check prints one object).
fn print_policy(policy: &envoi::profile::RecipientPolicy, json: bool) {
    if json {
        return;
    }
    for line in render::policy_lines(policy) {
        println!("policy       {line}");
    }
}

fn done(result: envoi::error::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e, &Report::default(), false);
            ExitCode::from(e.kind().exit_code())
        }
    }
}

/// The exit of a command that only writes to standard output: a closed pipe (`| head`)
/// is fine; another failure to write is a temporary one (75).
fn written(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let error = Error::new(ErrorKind::Temporary, format!("cannot write: {e}"));
            print_error(&error, &Report::default(), false);
            ExitCode::from(error.kind().exit_code())
        }
    }
}

/// Sendmail mode, like every sendmail: silent when it worked, the error on stderr
/// otherwise.
fn sendmail(args: &[OsString]) -> ExitCode {
    match sendmail::run(args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(failure) => {
            print_error(&failure.error, &failure.report, false);
            ExitCode::from(failure.error.kind().exit_code())
        }
    }
}

/// A panic is a bug: it exits 70 (EX_SOFTWARE, like every internal error), not Rust's 101.
fn exit_70_on_panic(run: impl FnOnce() -> ExitCode + std::panic::UnwindSafe) -> ExitCode {
    std::panic::catch_unwind(run).unwrap_or(ExitCode::from(ErrorKind::Internal.exit_code()))
}

fn run(args: Vec<OsString>) -> ExitCode {
    if let Some(rest) = sendmail_args(&args) {
        return sendmail(rest);
    }
    let wants_json = args.iter().any(|a| a == "--json");
    let matches = match args::parse(&args) {
        Ok(m) => m,
        Err(e) => return clap_exit(e, wants_json),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e, wants_json),
    };
    match cli.command {
        Command::Sendmail { args } => sendmail(&args),
        Command::Config(command) => done(config::run(command)),
        Command::Auth(command) => done(auth::run(command)),
        Command::Profiles {
            config,
            json,
            names,
        } => done(config::profiles(config, json, names)),
        Command::Check(args) => match check::run(&args) {
            Ok((check::Checked::Server(report), policy)) => {
                render::print_check(&report, args.json);
                print_policy(&policy, args.json);
                ExitCode::SUCCESS
            }
            Ok((check::Checked::Api(report), policy)) => {
                render::print_api_check(&report, args.json);
                print_policy(&policy, args.json);
                ExitCode::SUCCESS
            }
            Ok((check::Checked::Probes(probes), _)) => {
                let best = check::best(&probes);
                render::print_probes(&probes, best, args.json);
                match best {
                    Some(_) => ExitCode::SUCCESS,
                    None => {
                        let e = check::nothing_works(&probes);
                        print_error(&e, &Report::default(), false);
                        ExitCode::from(e.kind().exit_code())
                    }
                }
            }
            Err(e) => {
                print_error(&e, &Report::default(), args.json);
                ExitCode::from(e.kind().exit_code())
            }
        },
        Command::Completions { shell } => {
            written(docs::completions(shell, &mut std::io::stdout().lock()))
        }
        Command::Man { command, dir } => match (command, dir) {
            (_, Some(dir)) => done(docs::man_dir(&dir)),
            (command, None) => match docs::page(command.as_deref()) {
                Ok(page) => written(std::io::Write::write_all(
                    &mut std::io::stdout().lock(),
                    &page,
                )),
                Err(e) => done(Err(e)),
            },
        },
        Command::Send(send) => {
            // The `send` subcommand matched, so its matches exist.
            let Some(send_matches) = matches.subcommand_matches("send") else {
                return ExitCode::from(ErrorKind::Internal.exit_code());
            };
            match send::run(&send, send_matches) {
                Ok(outcome) => match print_outcome(&outcome, send.output.json) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        print_error(&e, &Report::default(), send.output.json);
                        ExitCode::from(e.kind().exit_code())
                    }
                },
                Err(failure) => {
                    print_error(&failure.error, &failure.report, send.output.json);
                    ExitCode::from(failure.error.kind().exit_code())
                }
            }
        }
        Command::Batch(batch) => match batch::run(&batch) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                print_error(&e, &Report::default(), false);
                ExitCode::from(e.kind().exit_code())
            }
        },
        Command::Suppress(command) => {
            let json = matches!(&command, args::SuppressCommand::List { json: true, .. });
            match suppress::run(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    print_error(&e, &Report::default(), json);
                    ExitCode::from(e.kind().exit_code())
                }
            }
        }
        Command::Outbox(command) => {
            let json = match &command {
                OutboxCommand::List { common, .. }
                | OutboxCommand::Flush { common, .. }
                | OutboxCommand::Drop { common, .. } => common.json,
            };
            match outbox::run(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    print_error(&e, &Report::default(), json);
                    ExitCode::from(e.kind().exit_code())
                }
            }
        }
    }
}

/// Help and version exit 0; every other clap error is a usage error (64, not clap's 2).
fn clap_exit(e: clap::Error, wants_json: bool) -> ExitCode {
    use clap::error::ErrorKind as K;
    if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if matches!(e.kind(), K::DisplayHelpOnMissingArgumentOrSubcommand) {
        let _ = e.print();
        return ExitCode::from(ErrorKind::Usage.exit_code());
    }
    if wants_json {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or("invalid arguments");
        let message = first.trim_start_matches("error: ");
        print_error(&Error::usage(message), &Report::default(), true);
    } else {
        let _ = e.print();
    }
    ExitCode::from(ErrorKind::Usage.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_exits_70() {
        // The default hook prints this panic's message to the test's stderr.
        assert_eq!(exit_70_on_panic(|| panic!("boom")), ExitCode::from(70));
        assert_eq!(exit_70_on_panic(|| ExitCode::SUCCESS), ExitCode::SUCCESS);
    }
}
