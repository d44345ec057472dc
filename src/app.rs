//! The process entry point: parse, run, report, exit with the documented code.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command, OutboxArgs, OutboxCommand};
use crate::config;
use crate::dispatch::Report;
use crate::error::{Error, ErrorKind, Result};
use crate::flush::{self, FlushOptions};
use crate::outbox::{Folder, Outbox};
use crate::output::{print_entries, print_error, print_flush, print_outcome};

/// Runs envoi with `args` (program name first) and returns the exit code.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let wants_json = args.iter().any(|a| a == "--json");
    let matches = match Cli::command().try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => return clap_exit(e, wants_json),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e, wants_json),
    };
    match cli.command {
        Command::Send(send) => {
            // The `send` subcommand matched, so its matches exist.
            let Some(send_matches) = matches.subcommand_matches("send") else {
                return ExitCode::from(ErrorKind::Internal.exit_code());
            };
            match crate::send::run(&send, send_matches) {
                Ok(outcome) => {
                    print_outcome(&outcome, send.json);
                    ExitCode::SUCCESS
                }
                Err(failure) => {
                    print_error(&failure.error, &failure.report, send.json);
                    ExitCode::from(failure.error.kind().exit_code())
                }
            }
        }
        Command::Outbox(command) => {
            let json = match &command {
                OutboxCommand::List { common, .. }
                | OutboxCommand::Flush { common, .. }
                | OutboxCommand::Drop { common, .. } => common.json,
            };
            match outbox(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    print_error(&e, &Report::default(), json);
                    ExitCode::from(e.kind().exit_code())
                }
            }
        }
    }
}

/// `envoi outbox list|flush|drop`.
fn outbox(command: OutboxCommand) -> Result<()> {
    let open = |common: &OutboxArgs| {
        let dir = config::outbox_dir(common.outbox_dir.as_deref(), None)?;
        Outbox::open(&dir)
    };
    match command {
        OutboxCommand::List { failed, common } => {
            let outbox = open(&common)?;
            let folder = if failed {
                Folder::Failed
            } else {
                Folder::Queue
            };
            let entries = outbox
                .ids(folder)?
                .into_iter()
                .filter_map(|id| match outbox.peek(folder, &id) {
                    Ok(state) => state.map(|s| (id, s)),
                    Err(e) => {
                        eprintln!("envoi: warning: skipping outbox entry {id}: {e}");
                        None
                    }
                })
                .collect::<Vec<_>>();
            print_entries(&entries, common.json);
        }
        OutboxCommand::Flush {
            all,
            lifetime_days,
            config,
            verbose,
            common,
        } => {
            let outbox = open(&common)?;
            let options = FlushOptions {
                all,
                lifetime: Duration::from_secs(lifetime_days * 86_400),
                config,
                verbose,
            };
            print_flush(&flush::flush(&outbox, &options)?, common.json);
        }
        OutboxCommand::Drop { id, common } => {
            let outbox = open(&common)?;
            flush::drop_entry(&outbox, &id)?;
            if !common.json {
                println!("dropped {id}");
            } else {
                println!("{}", serde_json::json!({"status": "dropped", "id": id}));
            }
        }
    }
    Ok(())
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
