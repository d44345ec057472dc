//! `envoi outbox list|flush|drop`: the outbox is found exactly as `send` finds it.

use std::time::Duration;

use envoi::deliver::Transcript;
use envoi::error::Result;
use envoi::outbox::{FlushOptions, Folder, Outbox, drop_entry, flush};
use envoi::profile::{Env, Flags, Resolved, resolve_outbox};

use crate::cli::args::{OutboxArgs, OutboxCommand};
use crate::cli::render::{Notices, print_dropped, print_entries, print_flush, transcript, warning};

/// Runs one outbox command.
pub fn run(command: OutboxCommand) -> Result<()> {
    match command {
        OutboxCommand::List { failed, common } => {
            let (outbox, _) = open(&common, None)?;
            let folder = if failed {
                Folder::Failed
            } else {
                Folder::Queue
            };
            let mut entries = Vec::new();
            for id in outbox.ids(folder)? {
                match outbox.peek(folder, &id) {
                    Ok(Some(state)) => entries.push((id, state)),
                    Ok(None) => {}
                    Err(e) => warning(&format!("skipping outbox entry {id}: {e}")),
                }
            }
            print_entries(&entries, failed, common.json);
        }
        OutboxCommand::Flush {
            all,
            lifetime_days,
            verbose,
            log,
            spool,
            common,
        } => {
            let (outbox, resolved) = match spool {
                Some(dir) => take_spool(&dir, &common, log)?,
                None => open(&common, log)?,
            };
            let options = FlushOptions {
                all,
                lifetime: Duration::from_secs(lifetime_days * 86_400),
                transcript: verbose.then_some(transcript as Transcript),
            };
            let summary = flush(&outbox, &resolved, &options, &mut Notices)?;
            print_flush(&summary, common.json);
        }
        OutboxCommand::Drop { id, common } => {
            let (outbox, _) = open(&common, None)?;
            drop_entry(&outbox, &id)?;
            print_dropped(&id, common.json);
        }
    }
    Ok(())
}

/// `flush --spool DIR`: the connection the spooled messages go through (the profile
/// they are checked against), its outbox, and every message of the spool moved into it;
/// each file set aside is one line on stderr. `log` is flush's `--log`.
#[cfg(unix)]
fn take_spool(
    dir: &std::path::Path,
    common: &OutboxArgs,
    log: Option<String>,
) -> Result<(Outbox, Resolved)> {
    let flags = Flags {
        log,
        ..common.flags()
    };
    let resolved = envoi::profile::resolve(&flags, &Env::from_process()?)?;
    let outbox = Outbox::open(resolved.outbox_dir()?)?;
    let mut say = |line: &str| eprintln!("envoi: {line}");
    envoi::outbox::spool::ingest(dir, &outbox, resolved.connection()?, &mut say)?;
    Ok((outbox, resolved))
}

/// The system spool is a Unix folder (its modes, its owners' uids).
#[cfg(not(unix))]
fn take_spool(
    _: &std::path::Path,
    _: &OutboxArgs,
    _: Option<String>,
) -> Result<(Outbox, Resolved)> {
    Err(envoi::error::Error::usage(
        "--spool: the system spool is for Unix machines",
    ))
}

/// The outbox the flags, the environment and the profile name; `log` is flush's
/// `--log`.
fn open(common: &OutboxArgs, log: Option<String>) -> Result<(Outbox, Resolved)> {
    let flags = Flags {
        log,
        ..common.flags()
    };
    let resolved = resolve_outbox(&flags, &Env::from_process()?)?;
    Ok((Outbox::open(resolved.outbox_dir()?)?, resolved))
}
