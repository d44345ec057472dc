//! The system spool: how a user who may not read the system profile's secret still
//! sends mail, as Postfix's `maildrop` + `postdrop`, nullmailer's queue and dma's spool do.
//!
//! Sendmail mode, run by such a user, [`drop_message`]s the message and its sendmail
//! arguments into a folder owned by the service user (`envoi`, mode 3733: anyone may
//! create a file there, no one but the owner may list it, and the sticky bit stops a user
//! from removing or renaming another's file). Each file has an unguessable name, mode
//! 0640 in the folder's group, and is written under a temporary name, fsync'ed and
//! renamed, so the flush never sees half a message. Who sent it is the file's owner, which
//! the kernel records: nothing written inside is believed about that.
//!
//! `envoi outbox flush --spool DIR`, run as the service user that can read the secret,
//! [`ingest`]s each file: it checks it (a regular file of one name, its owner a known
//! user, under the size cap, a message and its arguments), applies the sender policy
//! (a user sends as themself, or as the profile's `from`), and moves it into
//! the service's outbox, whose flush then sends it with its retries. A file that fails a
//! check is moved to `DIR/bad/`, never sent. The outbox entry carries the spool file's name
//! as its idempotency key, and the spool file is removed only after the entry is durable,
//! so a crash anywhere loses nothing and queues nothing twice.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::message::check::escape_controls;
use crate::message::given::{self, SetFromHeader, Submission};
use crate::message::{address, date_value};
use crate::outbox::flush::enqueue_spooled;
use crate::outbox::idempotency;
use crate::outbox::queue::Outbox;
use crate::outbox::submit::{Signing, prepare_given};
use crate::ownership::{self, Owner};
use crate::profile::Connection;
use crate::profile::RecipientPolicy;

/// The spool envoi-mta's maintainer scripts make, and sendmail mode drops into when
/// `$ENVOI_SPOOL_DIR` names no other.
pub const SPOOL_DIR: &str = "/var/spool/envoi";

/// The largest message the spool takes: the drop refuses a larger one (65), the flush sets
/// aside a larger file. 25 MiB is more than any relay accepts (Gmail and Microsoft 365
/// take 25 and 35 MB after base64), and keeps a user from filling the disk with one file.
pub const MAX_SPOOLED: u64 = 25 << 20;

/// The first line of every spool file: what it is, and its format's version.
const MAGIC: &[u8] = b"envoi-spool 1\n";

/// The most the line of arguments may take.
const MAX_ARGS_LINE: usize = 64 << 10;

/// Where a flush sets aside what it will not send, inside the spool.
const BAD: &str = "bad";

/// What a temporary file's name starts with while it is written.
const TMP_PREFIX: &str = ".tmp-";

/// A temporary file older than this was left by a drop that died: removed.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

/// The sendmail arguments a spooled message keeps: the flush applies them under the
/// profile's policy, as sendmail mode would have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Recipients given as arguments.
    pub recipients: Vec<String>,
    /// `-t`.
    pub from_headers: bool,
    /// `-f`/`-r`: honoured only where the policy lets the user choose (never another
    /// address than their own).
    pub envelope_from: Option<String>,
    /// `-F`.
    pub full_name: Option<String>,
}

/// 128 random bits from the system's generator, in hex: a name no other user can guess
/// to take first.
fn random_name() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::new(ErrorKind::Temporary, "the system gave no random bytes"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `message` with `request` into the spool `dir` durably and returns the file's
/// path: 65 when it is over [`MAX_SPOOLED`], 69 when the spool is missing or closed to
/// this user, 75 when the disk refuses the write.
pub fn drop_message(dir: &Path, request: &Request, message: &[u8]) -> Result<PathBuf> {
    if message.len() as u64 > MAX_SPOOLED {
        return Err(Error::invalid(format!(
            "the message is larger than {} MiB, the most the system spool {} takes",
            MAX_SPOOLED >> 20,
            dir.display()
        )));
    }
    let name = random_name()?;
    let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
    let path = dir.join(&name);
    let cannot = |what: &str, e: io::Error| {
        let kind = match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => ErrorKind::Unavailable,
            _ => ErrorKind::Temporary,
        };
        let fix = match kind {
            ErrorKind::Unavailable => {
                "; the system spool is made by the envoi-mta package (docs/sendmail.md, \
                 \"One sendmail for every user\")"
            }
            _ => "",
        };
        Error::new(
            kind,
            format!("cannot {what} the system spool {}: {e}{fix}", dir.display()),
        )
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&tmp)
        .map_err(|e| cannot("write into", e))?;
    let args =
        serde_json::to_vec(request).map_err(|e| cannot("write into", io::Error::other(e)))?;
    let written = file
        .write_all(MAGIC)
        .and_then(|()| file.write_all(&args))
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.write_all(message))
        // The umask may have taken the group's read: the flush service reads by group.
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(0o640)))
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(cannot("write into", e));
    }
    // The folder cannot be fsync'ed: it is not readable by the user (as Postfix's
    // maildrop is not); the file's own data is on disk, and a crash of the process
    // after the rename loses nothing.
    Ok(path)
}

/// Whose a spool file is, by its owner's uid: the name in `/etc/passwd`.
fn login_of(uid: u32) -> Option<String> {
    let passwd = ownership::read_regular(Path::new("/etc/passwd"), 16 << 20).ok()?;
    let text = String::from_utf8_lossy(&passwd);
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// Who a spooled message may say it is from, as the profile's keys decide.
#[derive(Debug, Clone)]
struct Policy {
    /// The envelope sender and From address every message of this user goes out with:
    /// the profile's `from` with `allow_from_override = false` (the relay's account
    /// sends everything), else the user's own address, `login@default_domain`.
    sender: String,
    /// The profile's `set_from_header`: `auto` and `on` write [`Policy::sender`] into
    /// From (keeping its display name); `off` refuses a From that is not the sender.
    set_from_header: SetFromHeader,
}

impl Policy {
    fn of(connection: &Connection, login: &str) -> Result<Policy> {
        let keys = &connection.profile.sendmail;
        let sender = match (&connection.profile.from, keys.allow_from_override) {
            (Some(from), false) => from.clone(),
            _ => keys.names.own_address("the spool's sender", login)?,
        };
        Ok(Policy {
            sender,
            set_from_header: keys.set_from_header,
        })
    }
}

/// What one ingest did.
#[derive(Debug, Default)]
pub struct Ingested {
    /// `(spool file, outbox entry)` for each message moved into the outbox.
    pub queued: Vec<(String, String)>,
    /// `(spool file, why)` for each file set aside in `bad/`.
    pub set_aside: Vec<(String, Error)>,
}

/// The spool folder must be this user's (the service user's), with the sticky bit (or
/// users could remove each other's mail) and closed to listing by others.
fn check_spool_dir(dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir).map_err(|e| {
        Error::config(format!(
            "cannot open the spool folder {}: {e}",
            dir.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(Error::config(format!(
            "the spool folder {} is not a folder",
            dir.display()
        )));
    }
    ownership::check_owned(
        dir,
        "the spool folder",
        Owner::Me,
        "run the flush as the spool's owner (the service user, envoi)",
    )?;
    if meta.mode() & 0o1000 == 0 || meta.mode() & 0o004 != 0 {
        return Err(Error::config(format!(
            "the spool folder {} has mode {:o}: it needs the sticky bit (so no user can \
             remove another's mail) and no listing by others; run: chmod 3733 {}",
            dir.display(),
            meta.mode() & 0o7777,
            dir.display()
        )));
    }
    Ok(())
}

/// Moves every message of the spool `dir` into `outbox`, to be sent through `connection`
/// under its sender policy; files that fail a check go to `dir/bad/`, each told to `log`.
/// Errors (78) are about the spool or outbox themselves: nothing is moved then.
pub fn ingest(
    dir: &Path,
    outbox: &Outbox,
    connection: &Connection,
    log: &mut dyn FnMut(&str),
) -> Result<Ingested> {
    check_spool_dir(dir)?;
    let bad = dir.join(BAD);
    match crate::durable::create_private_dir(&bad, false) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::config(format!(
                "cannot create {}: {e}",
                bad.display()
            )));
        }
    }
    // Whoever owned bad/ would read the mail set aside there; a link (a user may create
    // names in the spool) could lead anywhere.
    if fs::symlink_metadata(&bad).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::config(format!(
            "{} is not a folder (a link?): remove it; the flush makes bad/ itself",
            bad.display()
        )));
    }
    ownership::check_owned_dir(&bad, "the spool's bad/ folder", "remove it")?;
    // One ingest at a time: two would both queue a file before either removes it.
    let lock_path = outbox.root().join("spool.lock");
    let lock = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| Error::config(format!("cannot open {}: {e}", lock_path.display())))?;
    let mut done = Ingested::default();
    if lock.try_lock().is_err() {
        return Ok(done);
    }
    // As the file system has them: a name that is not UTF-8 is still moved aside by it.
    let mut names: Vec<std::ffi::OsString> = fs::read_dir(dir)
        .map_err(|e| Error::config(format!("cannot list {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != BAD)
        .collect();
    names.sort();
    let signing = Signing::of(Some(connection))?;
    // The recipient policy of the flush service's profiles (their file's `[policy]`
    // included: the system file, as a rule), as sendmail mode would apply it.
    let recipients = connection
        .profiles()
        .into_iter()
        .fold(RecipientPolicy::default(), |policy, (_, profile)| {
            policy.within(profile.policy.clone())
        });
    for os_name in names {
        let path = dir.join(&os_name);
        let name = os_name.to_string_lossy().into_owned();
        // A user chooses the name: never a line break or escape into the log.
        let shown = escape_controls(&name);
        if name.starts_with(TMP_PREFIX) {
            let stale = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_TMP));
            if stale {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        match take(&path, &name, outbox, connection, &signing, &recipients) {
            Ok(id) => {
                // The entry is durable; a file left here is found by its key next time.
                if let Err(e) = fs::remove_file(&path) {
                    log(&format!(
                        "spool: {shown} is queued as {id} but cannot be removed: {e}"
                    ));
                }
                done.queued.push((name, id));
            }
            Err(Taken::Refused(error)) => {
                let aside = bad.join(&os_name);
                let moved = fs::rename(&path, &aside);
                log(&format!(
                    "spool: {shown} set aside{}, not sent: {}",
                    match &moved {
                        Ok(()) => format!(" in {}", escape_controls(&aside.display().to_string())),
                        Err(e) => format!(" (it cannot be moved to {}: {e})", bad.display()),
                    },
                    escape_controls(error.message())
                ));
                done.set_aside.push((name, error));
            }
            Err(Taken::Stop(error)) => return Err(error),
        }
    }
    Ok(done)
}

/// Why a spool file was not queued.
enum Taken {
    /// It fails a check: set it aside.
    Refused(Error),
    /// The outbox cannot take it now: stop, leave it for the next flush.
    Stop(Error),
}

/// Checks one spool file and queues it; the outbox entry's id.
fn take(
    path: &Path,
    name: &str,
    outbox: &Outbox,
    connection: &Connection,
    signing: &Signing,
    recipients: &RecipientPolicy,
) -> std::result::Result<String, Taken> {
    let refused = |what: String| Taken::Refused(Error::invalid(what));
    if name.len() != 32 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refused(
            "its name is not one sendmail mode gives (32 hex digits)".into(),
        ));
    }
    let key = format!("spool:{name}");
    // Queued (and maybe sent since) by a flush that stopped, or could not remove the file,
    // before it removed the file. Only one ingest runs at a time (the spool lock).
    if let Some(state) = Outbox::find_key_in(outbox.root(), &key).map_err(Taken::Stop)? {
        return Ok(state.message_id);
    }
    if idempotency::recorded(outbox.root(), &key).map_err(Taken::Stop)? {
        return Ok("(sent before)".into());
    }
    let linked = fs::symlink_metadata(path).map_err(|e| refused(format!("cannot stat it: {e}")))?;
    if let Some(what) = ownership::not_regular(&linked) {
        return Err(refused(format!("it is {what}")));
    }
    let (file, meta) =
        ownership::open_regular(path).map_err(|e| refused(format!("cannot open it: {e}")))?;
    // The name must still be the file stat'ed above (no symlink swapped in), and its
    // only name (no hard link to a file the user could not read).
    if (meta.dev(), meta.ino()) != (linked.dev(), linked.ino()) || meta.nlink() != 1 {
        return Err(refused(
            "it changed while being opened, or has other names (hard links)".into(),
        ));
    }
    let uid = meta.uid();
    let login =
        login_of(uid).ok_or_else(|| refused(format!("its owner, uid {uid}, is no user")))?;
    let cap = MAX_SPOOLED + MAX_ARGS_LINE as u64 + MAGIC.len() as u64;
    if meta.len() > cap {
        return Err(refused(format!(
            "it is larger than {} MiB, the spool's cap",
            MAX_SPOOLED >> 20
        )));
    }
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refused(format!("cannot read it: {e}")))?;
    let (request, message) = parse(&bytes).map_err(|e| refused(e.message().to_owned()))?;
    let policy = Policy::of(connection, &login).map_err(Taken::Refused)?;
    // Which user handed it over, as Postfix's pickup writes it: with every user sending
    // as the profile's `from`, this is the one record of who it was.
    let trace = format!(
        "Received: by {} (envoi spool, from userid {uid}) id {name}; {}\n",
        this_host(),
        date_value(SystemTime::now())
    );
    let message = [trace.as_bytes(), message].concat();
    let prepared = prepare(&request, &message, &policy, connection, &login).map_err(|e| {
        Taken::Refused(Error::new(
            e.kind(),
            format!("from {login} (uid {uid}): {e}"),
        ))
    })?;
    let prepared =
        prepare_given(prepared, signing, recipients, SystemTime::now()).map_err(|e| {
            if e.kind() == ErrorKind::InvalidData {
                Taken::Refused(Error::new(
                    e.kind(),
                    format!("from {login} (uid {uid}): {e}"),
                ))
            } else {
                Taken::Stop(e)
            }
        })?;
    enqueue_spooled(outbox, &prepared, connection.route.clone(), &key).map_err(Taken::Stop)
}

/// This machine's name for the Received field, when it is a plain host name.
fn this_host() -> String {
    crate::message::check::this_host_name().unwrap_or_else(|| "localhost".to_owned())
}

/// A spool file's arguments and message.
fn parse(bytes: &[u8]) -> Result<(Request, &[u8])> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| Error::invalid("it is not a spool file (no \"envoi-spool 1\" line)"))?;
    let end = rest
        .iter()
        .take(MAX_ARGS_LINE)
        .position(|b| *b == b'\n')
        .ok_or_else(|| Error::invalid("its line of arguments is missing or too long"))?;
    let request: Request = serde_json::from_slice(&rest[..end])
        .map_err(|e| Error::invalid(format!("its arguments cannot be read: {e}")))?;
    let message = &rest[end + 1..];
    if message.len() as u64 > MAX_SPOOLED {
        return Err(Error::invalid(format!(
            "the message is larger than {} MiB, the spool's cap",
            MAX_SPOOLED >> 20
        )));
    }
    Ok((request, message))
}

/// The message as it goes out: sendmail mode's rules with the sender pinned by `policy`.
/// `-f` is honoured only when it is the sender itself; the From field becomes the sender
/// (its display name kept), or with `set_from_header = "off"` must already be it.
fn prepare(
    request: &Request,
    message: &[u8],
    policy: &Policy,
    connection: &Connection,
    login: &str,
) -> Result<crate::message::Prepared> {
    let given = given::parse(message)?;
    let names = connection.profile.sendmail.names()?;
    if policy.set_from_header == SetFromHeader::Off {
        let written = given
            .from_field()
            .and_then(|value| address::parse_single("From", &value).ok());
        if written.is_none_or(|m| !m.email.to_string().eq_ignore_ascii_case(&policy.sender)) {
            return Err(Error::invalid(format!(
                "its From field is not {}, the only sender {login} may use, and the \
                 profile's set_from_header = \"off\" keeps From as written",
                policy.sender
            )));
        }
    }
    let submission = Submission {
        recipients: &request.recipients,
        from_headers: request.from_headers,
        envelope_from: None,
        full_name: request.full_name.as_deref(),
        profile_from: Some(&policy.sender),
        names: &names,
        // The envelope sender is the policy's, whatever -f says.
        allow_from_override: false,
        set_from_header: match policy.set_from_header {
            SetFromHeader::Off => SetFromHeader::Off,
            SetFromHeader::Auto | SetFromHeader::On => SetFromHeader::On,
        },
        now: SystemTime::now(),
    };
    given.prepare(&submission)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_file_reads_back_and_junk_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let request = Request {
            recipients: vec!["ann@example.com".into()],
            from_headers: true,
            envelope_from: Some("me".into()),
            full_name: None,
        };
        let path = drop_message(dir.path(), &request, b"Subject: s\n\nhi\n").unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 32, "128 bits in hex");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let bytes = fs::read(&path).unwrap();
        let (back, message) = parse(&bytes).unwrap();
        assert_eq!(back, request);
        assert_eq!(message, b"Subject: s\n\nhi\n");
        for junk in [
            &b""[..],
            b"hello",
            b"envoi-spool 1\n{\"x\":1}\nSubject: s\n\nb\n",
        ] {
            assert_eq!(parse(junk).unwrap_err().kind(), ErrorKind::InvalidData);
        }
        let big = vec![b'a'; MAX_SPOOLED as usize + 1];
        assert_eq!(
            drop_message(dir.path(), &request, &big).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
        let missing = drop_message(&dir.path().join("none"), &request, b"x").unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::Unavailable, "{missing}");
    }
}
