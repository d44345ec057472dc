//! Whose a file is and who else may read or change it, checked before envoi trusts a
//! file it did not make in this run: the outbox and its entries, a config file that
//! holds or points to a secret or runs a command, a DKIM key, the OAuth2 token cache.
//! And the one bounded reader ([`read_regular`]) of the files envoi opens on the user's
//! or a config's behalf (a body, `--vars-file`, `--config`, `ca_file`, `dkim_key_file`,
//! the token cache), and the checks on a state file ([`check_state_file`]).
//!
//! The rules (msmtp's, extended): whoever can change such a file can make envoi send
//! the user's password to a server of their choosing, or run a command as the user, so
//! it must belong to the user who runs envoi (or to root, for a shared file under
//! `/etc`) and no one else may write it; a file that holds a secret must not be
//! readable by others either. Errors are 78 and say whose the file is and the fix.
//!
//! Owners are checked where the platform tells envoi its user id without `unsafe`
//! (see [`effective_uid`]), modes wherever files have them: on Unix (Linux, macOS, the
//! BSDs). Elsewhere (Windows) neither is checked: a file's ACL decides who may read it,
//! and envoi does not read ACLs. Not checked there, exactly: who owns a file or folder,
//! who else may change it, who else may read a file holding a secret, and a state file's
//! extra names (hard links). envoi does not refuse for that (a user's profile folder is
//! private to them by default), but it says so: the files outside that folder that hold
//! or lead to a secret are named once, at the end of the run ([`unchecked_warning`]).

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The most envoi reads of a file a config names: 1 MiB holds any config, CA bundle,
/// key or token cache, and stops `/dev/zero` or a huge file from filling memory.
pub const MAX_NAMED_FILE: u64 = 1 << 20;

/// This process's effective user id, read without `unsafe`: from Linux's
/// `/proc/self/status` (the `Uid:` line's second field, which is exact even for a
/// set-uid program, where the owner of `/proc/self` is not), else as the owner of a file
/// this process creates in the temporary folder (a new file takes the effective uid on
/// every Unix). `None` when neither works (and elsewhere than Unix): owners are then not
/// checked, only modes. Read once: a flush checks every entry's files.
pub fn effective_uid() -> Option<u32> {
    #[cfg(unix)]
    {
        static UID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
        *UID.get_or_init(|| proc_status_uid().or_else(created_file_uid))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(unix)]
fn proc_status_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(unix)]
fn created_file_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let path = std::env::temp_dir().join(format!(
        ".envoi-uid-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .ok()?;
    let uid = file.metadata().ok().map(|m| m.uid());
    let _ = std::fs::remove_file(&path);
    uid
}

/// The files this run trusted without the owner and mode checks, where the platform has
/// none (Windows): each as "PATH (what it is)", once.
#[cfg(not(unix))]
static UNCHECKED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Notes a file that holds or leads to a secret, trusted unchecked (see [`UNCHECKED`]),
/// unless it is under the user's profile folder (`%USERPROFILE%`), which Windows' default
/// ACL keeps private to them and administrators: there is envoi's own config, outbox and
/// token cache, and a warning on every run would only teach users to ignore it.
#[cfg(not(unix))]
fn note_unchecked(path: &Path, what: &str) {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let profile = std::env::var_os("USERPROFILE").filter(|p| !p.is_empty());
    if profile.is_some_and(|profile| path.starts_with(profile)) {
        return;
    }
    let line = format!("{} ({what})", path.display());
    // A panic elsewhere while the list was held leaves it usable: it is only names.
    let mut files = UNCHECKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !files.contains(&line) {
        files.push(line);
    }
}

/// The warning for the files of a secret that this run trusted without knowing who else
/// may read or change them, because the platform has no Unix owner and mode (Windows);
/// `None` when there were none, always on Unix. The binary prints it once, at the end of
/// the run: the library prints nothing.
pub fn unchecked_warning() -> Option<String> {
    #[cfg(not(unix))]
    let files = std::mem::take(
        &mut *UNCHECKED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    #[cfg(unix)]
    let files = Vec::new();
    warning_for(&files)
}

/// [`unchecked_warning`]'s text for these files.
fn warning_for(files: &[String]) -> Option<String> {
    if files.is_empty() {
        return None;
    }
    Some(format!(
        "not checked on this system: who else may read or change {} (envoi checks a file's \
         owner and mode on Unix only, not Windows ACLs); keep such files under your profile \
         folder (%USERPROFILE%), which only you and administrators can open, or restrict \
         each one: icacls FILE /inheritance:r /grant:r \"%USERNAME%:F\"",
        files.join(", ")
    ))
}

/// Who may own a trusted file besides the user who runs envoi.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Only that user: what envoi writes itself (the outbox, the token cache, a key).
    Me,
    /// That user or root: a config file may be a shared one under `/etc`.
    MeOrRoot,
}

/// A folder envoi keeps state in (`what`, e.g. "the outbox folder") must belong to this
/// user and be writable by no one else; `instead` says how to use another folder.
pub fn check_owned_dir(dir: &Path, what: &str, instead: &str) -> Result<()> {
    #[cfg(unix)]
    {
        let meta = std::fs::metadata(dir)
            .map_err(|e| Error::config(format!("cannot stat {what} {}: {e}", dir.display())))?;
        check_owner(dir, &meta, what, Owner::Me, instead)?;
        check_not_shared_writable(
            dir,
            &meta,
            what,
            "they could put files there that envoi would act on",
            ("chmod go-w", &format!(", or {instead}")),
        )?;
    }
    #[cfg(not(unix))]
    let _ = (dir, what, instead);
    Ok(())
}

/// A file or folder must belong to this user (or root, with [`Owner::MeOrRoot`]); `what`
/// names it in the error ("the outbox entry", "the DKIM key file (dkim_key_file)") and
/// `instead` says what else to do than chown it.
pub fn check_owned(path: &Path, what: &str, owner: Owner, instead: &str) -> Result<()> {
    #[cfg(unix)]
    {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::config(format!("cannot stat {what} {}: {e}", path.display())))?;
        check_owner(path, &meta, what, owner, instead)?;
    }
    #[cfg(not(unix))]
    let _ = (path, what, owner, instead);
    Ok(())
}

/// A file that makes envoi send a secret or run a command: owned as `owner` says and
/// writable by no one else; `why` says what it does ("runs a command (password_command)").
pub fn check_trusted_file(path: &Path, what: &str, why: &str, owner: Owner) -> Result<()> {
    #[cfg(unix)]
    {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::config(format!("cannot stat {what} {}: {e}", path.display())))?;
        check_not_shared_writable(path, &meta, what, &format!("it {why}"), ("chmod go-w", ""))?;
        if let Some((uid, me)) = foreign_owner(&meta, owner) {
            return Err(Error::config(format!(
                "{what} {} {why} but belongs to another user (uid {uid}, you are uid {me}); \
                 only a file of your own may do that; run: chown {me} {} (as root), or use \
                 a file of your own",
                path.display(),
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    {
        let _ = owner;
        note_unchecked(path, &format!("{what}, which {why}"));
    }
    Ok(())
}

/// A file that holds a secret (`holds`: "a password", …) must not be readable (or
/// writable) by group or others. One of root's given to another group than root's may be
/// read by that group (0640): a shared file under `/etc` that root gives to a service's
/// group (`root:envoi`, for the spool's flush service) is root's choice of who reads it,
/// as `/etc/shadow` is; others still may not read it, and no one but root may write it.
pub fn check_private_file(path: &Path, what: &str, holds: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::config(format!("cannot stat {what} {}: {e}", path.display())))?;
        let (closed, chmod) = if meta.uid() == 0 && meta.gid() != 0 {
            (0o027, "640")
        } else {
            (0o077, "600")
        };
        if meta.mode() & closed != 0 {
            return Err(Error::config(format!(
                "{what} {} holds {holds} but can be read by others (mode {:o}); run: chmod \
                 {chmod} {}",
                path.display(),
                meta.mode() & 0o777,
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    note_unchecked(path, &format!("{what}, which holds {holds}"));
    Ok(())
}

/// A folder of secrets (the token cache) must be this user's and closed to everyone
/// else (0700): its file names say whose tokens are there.
pub fn check_private_dir(dir: &Path, what: &str, instead: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir)
            .map_err(|e| Error::config(format!("cannot stat {what} {}: {e}", dir.display())))?;
        check_owner(dir, &meta, what, Owner::Me, instead)?;
        if meta.mode() & 0o077 != 0 {
            return Err(Error::config(format!(
                "{what} {} holds secrets but others can open it (mode {:o}); run: chmod 700 {}",
                dir.display(),
                meta.mode() & 0o777,
                dir.display()
            )));
        }
    }
    #[cfg(not(unix))]
    {
        let _ = instead;
        note_unchecked(dir, what);
    }
    Ok(())
}

#[cfg(unix)]
fn check_owner(
    path: &Path,
    meta: &std::fs::Metadata,
    what: &str,
    owner: Owner,
    instead: &str,
) -> Result<()> {
    let Some((uid, me)) = foreign_owner(meta, owner) else {
        return Ok(());
    };
    Err(Error::config(format!(
        "{what} {} belongs to another user (uid {uid}, you are uid {me}); run: chown {me} {} \
         (as root), or {instead}",
        path.display(),
        path.display()
    )))
}

/// `(owner, this user)` when the file's owner is not one `owner` allows; `None` when it
/// is, or when this user's id is unknown.
#[cfg(unix)]
fn foreign_owner(meta: &std::fs::Metadata, owner: Owner) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let me = effective_uid()?;
    let uid = meta.uid();
    (uid != me && !(owner == Owner::MeOrRoot && uid == 0)).then_some((uid, me))
}

/// Refuses (78) a file or folder that group or others can write: `risk` says what they
/// could do with it, `fix` is the `chmod` to run and what may follow it (", or …").
#[cfg(unix)]
fn check_not_shared_writable(
    path: &Path,
    meta: &std::fs::Metadata,
    what: &str,
    risk: &str,
    (chmod, or): (&str, &str),
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if meta.mode() & 0o022 == 0 {
        return Ok(());
    }
    Err(Error::config(format!(
        "{what} {} can be changed by others (mode {:o}), and {risk}; run: {chmod} {}{or}",
        path.display(),
        meta.mode() & 0o777,
        path.display()
    )))
}

/// The checks on a file envoi keeps state in from one run to the next (a batch report,
/// its in-flight marks, the idempotency ledger and its locks), once it is open (`file`,
/// `meta` from the open file, so nothing swapped in after the checks is trusted).
/// `label` names it in errors (`--report`). Each refusal is 78 and comes before anything
/// is changed:
///
/// - it must be a regular file;
/// - it must have one name: through a hard link to someone else's file (root's, for a
///   root batch) envoi would chmod and write that file;
/// - it must be this user's, and writable by no one else (whoever can write it decides
///   what envoi believes was sent).
///
/// One readable by others is then made 0600, and its old mode returned for the caller to
/// say so: the file is the user's own, so tightening it is safe, but silently changing a
/// mode the user may have chosen would surprise them.
pub fn check_state_file(
    label: &str,
    path: &Path,
    file: &std::fs::File,
    meta: &std::fs::Metadata,
) -> Result<Option<u32>> {
    let shown = path.display();
    if let Some(what) = not_regular(meta) {
        return Err(Error::config(format!(
            "{label} {shown}: it is {what}; give the path of a regular file"
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if meta.nlink() != 1 {
            return Err(Error::config(format!(
                "{label} {shown}: it has {} names (hard links); envoi keeps state only in a \
                 file of its own: remove the other links or give another path",
                meta.nlink()
            )));
        }
        check_owner(path, meta, label, Owner::Me, "give another path")?;
        check_not_shared_writable(
            path,
            meta,
            label,
            "what it says decides what envoi sends",
            ("chmod 600", ""),
        )?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o044 == 0 {
            return Ok(None);
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(|e| {
                Error::config(format!(
                    "{label} {shown}: others can read it (mode {mode:o}) and it cannot be made \
                     private: {e}; run: chmod 600 {shown}"
                ))
            })?;
        Ok(Some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(None)
    }
}

/// Why [`read_regular`] (or [`open_regular`]) could not read a file; each caller words it
/// as its own error (its flag or config key, its exit code).
#[derive(Debug)]
pub enum ReadError {
    /// It is not there or not readable (the I/O error).
    Io(std::io::Error),
    /// A directory, FIFO, socket or device: what it is, in words ([`not_regular`]'s).
    NotRegular(&'static str),
    /// Longer than the cap (in bytes) the caller gave.
    TooLarge(u64),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotRegular(what) => write!(f, "it is {what}"),
            ReadError::TooLarge(cap) => write!(
                f,
                "it is larger than {} MiB, the most envoi reads of such a file",
                cap >> 20
            ),
        }
    }
}

/// Opens a regular file, and only that: it is stat'ed before it is opened (opening a FIFO
/// waits for a writer, a device never ends) and again once open (fstat), so a file
/// swapped in between is caught too. The metadata is the open file's.
pub fn open_regular(
    path: &Path,
) -> std::result::Result<(std::fs::File, std::fs::Metadata), ReadError> {
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if let Some(what) = not_regular(&meta) {
        return Err(ReadError::NotRegular(what));
    }
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if let Some(what) = not_regular(&meta) {
        return Err(ReadError::NotRegular(what));
    }
    Ok((file, meta))
}

/// Reads a whole regular file ([`open_regular`]) of at most `cap` bytes: never more than
/// `cap + 1` bytes are held, whatever the file claims to be.
pub fn read_regular(path: &Path, cap: u64) -> std::result::Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > cap {
        return Err(ReadError::TooLarge(cap));
    }
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge(cap));
    }
    Ok(bytes)
}

/// Reads a file a config names: [`read_regular`] up to [`MAX_NAMED_FILE`].
pub fn read_named(path: &Path) -> std::result::Result<Vec<u8>, ReadError> {
    read_regular(path, MAX_NAMED_FILE)
}

/// What a file is when it is not a regular file, in the words of an error ("it is …");
/// `None` for a regular file. The one wording of every such refusal.
pub fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    let kind = meta.file_type();
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else {
        Some("not a regular file (a FIFO, socket or device)")
    }
}

// Two attributes, not `all(test, unix)`: .ci/check-cycles skips a `#[cfg(test)] mod tests`.
#[cfg(unix)]
#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The Windows warning names each file with what it holds, and the fix; nothing to
    /// say is no warning (and on Unix there never is one).
    #[test]
    fn the_unchecked_warning_names_the_files_and_the_fix() {
        assert_eq!(warning_for(&[]), None);
        assert_eq!(unchecked_warning(), None);
        let files = [
            r"C:\Users\me\AppData\Roaming\envoi\config.toml (the config file, which holds a password)".to_string(),
            r"D:\keys\dkim.pem (the DKIM key file, which holds a private key)".to_string(),
        ];
        let text = warning_for(&files).unwrap();
        assert!(
            text.contains(&files[0]) && text.contains(&files[1]),
            "{text}"
        );
        assert!(text.contains("on Unix only"), "{text}");
        assert!(text.contains("icacls FILE /inheritance:r"), "{text}");
    }

    #[test]
    fn named_files_are_regular_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("a.pem");
        std::fs::write(&small, b"x").unwrap();
        assert_eq!(read_named(&small).unwrap(), b"x");
        assert!(matches!(
            read_named(dir.path()),
            Err(ReadError::NotRegular("a directory"))
        ));
        assert!(matches!(
            read_named(Path::new("/dev/zero")),
            Err(ReadError::NotRegular(_))
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; (MAX_NAMED_FILE + 1) as usize]).unwrap();
        assert!(matches!(
            read_named(&big),
            Err(ReadError::TooLarge(MAX_NAMED_FILE))
        ));
    }

    #[test]
    fn a_folder_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_owned_dir(dir.path(), "the outbox folder", "use another").is_ok());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_owned_dir(dir.path(), "the outbox folder", "use another").unwrap_err();
        assert!(err.message().contains("chmod go-w"), "{err}");
        if effective_uid() == Some(0) {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
            let err = check_owned_dir(dir.path(), "the outbox folder", "use another").unwrap_err();
            assert!(
                err.message().contains("belongs to another user (uid 65534"),
                "{err}"
            );
        } else {
            eprintln!("skipped the owner half: it needs root to chown to nobody");
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_effective_uid_is_the_owner_of_a_file_made_now() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine");
        std::fs::write(&path, "").unwrap();
        let owner = std::fs::metadata(&path).unwrap().uid();
        assert_eq!(effective_uid(), Some(owner));
        assert_eq!(created_file_uid(), Some(owner));
    }
}
