//! `envoi check`: the connection doctor. It resolves the connection exactly as `send`
//! does, then connects, secures, says EHLO and logs in, and sends no mail.

use std::time::Duration;

use envoi::deliver::{ServerReport, check};
use envoi::error::{Error, Result};
use envoi::profile::{Env, resolve};

use crate::cli::args::CheckArgs;

/// Runs the check.
pub fn run(args: &CheckArgs) -> Result<ServerReport> {
    let resolved = resolve(&args.flags(), &Env::from_process()?)?;
    let Some(connection) = &resolved.connection else {
        return Err(Error::config(
            "no connection: give --profile or --smtp-url (or $ENVOI_SMTP_URL), or set \
             `default` in the config file",
        ));
    };
    check(&connection.profile, Duration::from_secs(args.timeout))
}
