//! `envoi batch --status --campaign NAME [FILE]`: how far a campaign split across
//! workers has got, from the shared ledger. A flag, not a `batch status` subcommand:
//! batch's FILE is a positional argument, and a records file may be named `status`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use envoi::error::{Error, ErrorKind, Result};
use envoi::outbox::fleet;
use envoi::profile::Resolved;

use super::input::{format, open_input, records};
use crate::cli::args::BatchArgs;

/// Prints the campaign's counts (with `--json`, one JSON object) and exits 0; the
/// pending count only when FILE is given: the records of it with no row in the ledger.
pub(super) fn run(args: &BatchArgs, resolved: &Resolved) -> Result<u8> {
    let Some(name) = args.campaign.as_deref() else {
        return Err(Error::usage("--status: give --campaign NAME"));
    };
    let deadline = Instant::now() + Duration::from_secs(args.delivery.timeout);
    let mut fleet = fleet::connect(resolved, name, deadline)?;
    let mut counts = fleet.counts()?;
    if args.file.is_some() {
        let claimed = fleet.digests()?;
        let format = format(args)?;
        let records = records(args, format, open_input(args)?)?;
        let mut pending = HashSet::new();
        for record in records {
            if let Some(digest) = record?.digest
                && !claimed.contains(&digest)
            {
                // Identical records are one record of the campaign, sent once.
                pending.insert(digest);
            }
        }
        counts.pending = Some(u64::try_from(pending.len()).unwrap_or(u64::MAX));
    }
    if args.output.json {
        let text = serde_json::to_string(&counts)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("the counts: {e}")))?;
        println!("{text}");
    } else {
        let pending = counts
            .pending
            .map_or_else(String::new, |n| format!(", {n} pending"));
        println!(
            "campaign {} (ledger {}): {} sent, {} failed, {} unknown, {} in flight{pending}",
            counts.campaign,
            fleet.place(),
            counts.sent,
            counts.failed,
            counts.unknown,
            counts.in_flight,
        );
    }
    Ok(0)
}
