//! `envoi suppress add|remove|list|import`: the suppression list of the profile
//! (`suppress = "/path"`), which `envoi batch` reads before each run and adds hard
//! bounces to ([`envoi::outbox::suppress`]).

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use envoi::error::{Error, Result};
use envoi::message::input::read_bytes;
use envoi::outbox::suppress::{self, SuppressList};
use envoi::profile::{Env, resolve};

use crate::cli::args::{ConnectionArgs, SuppressCommand};

/// The most bad lines an import names.
const NAMED: usize = 5;

/// Runs one `envoi suppress` command.
pub fn run(command: SuppressCommand) -> Result<()> {
    match command {
        SuppressCommand::Add {
            address,
            reason,
            connection,
        } => {
            let path = list_path(&connection)?;
            let address = suppress::parse_address("ADDRESS", &address)?;
            let added = suppress::add(&path, &[(address.clone(), reason)], SystemTime::now())?;
            if added.is_empty() {
                eprintln!("envoi: {address} is on the suppression list already");
            } else {
                eprintln!("envoi: added {address} to {}", path.display());
            }
            Ok(())
        }
        SuppressCommand::Remove {
            address,
            connection,
        } => {
            let path = list_path(&connection)?;
            // Read as `add` reads it (display name dropped, the domain as the list keeps
            // it), so what was added can be removed the same way; 65 for no address.
            let address = suppress::parse_address("ADDRESS", &address)?;
            if suppress::remove(&path, &address)? {
                eprintln!("envoi: removed {address} from {}", path.display());
            } else {
                eprintln!("envoi: {address} was not on the suppression list");
            }
            Ok(())
        }
        SuppressCommand::List { json, connection } => {
            let path = list_path(&connection)?;
            let list = SuppressList::load(&path)?;
            let mut out = std::io::stdout().lock();
            let written = if json {
                let entries: Vec<_> = list.entries().collect();
                serde_json::to_writer(&mut out, &entries)
                    .map_err(std::io::Error::other)
                    .and_then(|()| writeln!(out))
            } else {
                list.entries()
                    .try_for_each(|e| writeln!(out, "{}\t{}\t{}", e.address, e.added, e.reason))
            };
            match written {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::new(
                    envoi::error::ErrorKind::Temporary,
                    format!("cannot write to standard output: {e}"),
                )),
                _ => Ok(()),
            }
        }
        SuppressCommand::Import {
            file,
            reason,
            connection,
        } => {
            let path = list_path(&connection)?;
            let bytes = read_bytes("FILE", &file)?;
            let text = String::from_utf8_lossy(&bytes);
            let mut addresses = Vec::new();
            let mut bad = Vec::new();
            for (n, line) in text.lines().enumerate() {
                // A line of a list file itself (address, tab, date, reason) is taken too.
                let field = line.split('\t').next().unwrap_or_default().trim();
                if field.is_empty() || field.starts_with('#') {
                    continue;
                }
                match suppress::parse_address(&format!("line {}", n + 1), field) {
                    Ok(address) => addresses.push((address, reason.clone())),
                    Err(e) => bad.push(e.message().to_owned()),
                }
            }
            if !bad.is_empty() {
                let count = bad.len();
                let more = if count > NAMED {
                    format!(" (and {} more)", count - NAMED)
                } else {
                    String::new()
                };
                bad.truncate(NAMED);
                return Err(Error::invalid(format!(
                    "FILE {}: {count} line(s) are not one address each, so nothing was \
                     imported: {}{more}; fix or remove them and import again",
                    file.display(),
                    bad.join("; ")
                )));
            }
            let given = addresses.len();
            let added = suppress::add(&path, &addresses, SystemTime::now())?;
            eprintln!(
                "envoi: imported {} new address(es) into {} ({} already on it)",
                added.len(),
                path.display(),
                given - added.len()
            );
            Ok(())
        }
    }
}

/// The profile's `suppress` path (its own, else the config file's top-level one); 78
/// when neither is set.
fn list_path(connection: &ConnectionArgs) -> Result<PathBuf> {
    let resolved = resolve(&connection.flags(), &Env::from_process()?)?;
    let connection = resolved.connection()?;
    connection.profile.suppress.clone().ok_or_else(|| {
        Error::config(format!(
            "profile {:?} has no suppression list: set suppress = \"/path/to/suppress.tsv\" \
             in its [profiles.{}] table or at the top of the config file",
            connection.name, connection.name
        ))
    })
}
