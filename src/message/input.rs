//! Reading the files a send needs: body, payload, attachments, images. `-` is standard
//! input, which can feed only one of them.
//!
//! Only regular files are read: a FIFO, a device (`/dev/zero`) or a directory could hang
//! a cron job forever or fill its memory. What is read into memory is capped
//! ([`MAX_STDIN`] for a body or a payload); attachments and images are streamed.
//!
//! A path that comes from message data (a CSV field in a batch `--attach` template, an
//! `<img src>` in an HTML body) is [`Confine`]d to a folder: the data chooses the file,
//! so it must not be able to choose `/etc/shadow` or `../../.ssh/id_ed25519`.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::message::attached_file::AttachedFile;
use crate::message::email::AttachmentData;
use crate::ownership::ReadError;

/// The most envoi reads of a body, a text, a payload or a template, from a file or
/// standard input: 64 MiB, more than any mail server takes.
pub const MAX_STDIN: u64 = 64 << 20;

/// The most envoi reads of a `--vars-file`: 16 MiB of variables is far past any template.
pub const MAX_VARS: u64 = 16 << 20;

/// True for the path `-`, which means standard input.
pub fn is_stdin(path: &Path) -> bool {
    path == Path::new("-")
}

/// Reads a whole regular file (or standard input for `-`), naming the flag on failure
/// (exit 66; 65 when it holds more than [`MAX_STDIN`]).
pub fn read_bytes(label: &str, path: &Path) -> Result<Vec<u8>> {
    read_capped(label, path, MAX_STDIN)
}

/// Reads a whole regular file (or standard input for `-`) of at most `cap` bytes,
/// naming the flag on failure: 66 when it cannot be read or is not a regular file, 65
/// when it holds more than `cap` (the cap is in the error). Never more than `cap + 1`
/// bytes are held, whatever the file's size.
pub fn read_capped(label: &str, path: &Path, cap: u64) -> Result<Vec<u8>> {
    let shown = path.display().to_string();
    let no_input = |e: std::io::Error| {
        Error::new(
            ErrorKind::NoInput,
            format!("{label}: cannot read {shown:?}: {e}"),
        )
    };
    let too_big = |what: &str| {
        Error::invalid(format!(
            "{label}: {what} holds more than {} MiB, the most envoi reads for it",
            cap >> 20
        ))
    };
    let mut buf = Vec::new();
    if is_stdin(path) {
        std::io::stdin()
            .take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(no_input)?;
        if buf.len() as u64 > cap {
            return Err(too_big("standard input"));
        }
        return Ok(buf);
    }
    crate::ownership::read_regular(path, cap).map_err(|e| match e {
        ReadError::TooLarge(_) => too_big(&format!("{shown:?}")),
        ReadError::Io(_) | ReadError::NotRegular(_) => Error::new(
            ErrorKind::NoInput,
            format!("{label}: cannot read {shown:?}: {e}"),
        ),
    })
}

/// Whether a program piped or redirected something into standard input (a pipe, a
/// socket or a regular file), rather than leaving it a terminal or a device such as
/// `/dev/null`: then `send` without a body flag takes it as the body, as mail(1) does.
#[cfg(unix)]
pub fn stdin_is_piped() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    // A duplicate of descriptor 0, asked what it is; a closed stdin has none.
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd).metadata().is_ok_and(|meta| {
        let kind = meta.file_type();
        kind.is_file() || kind.is_fifo() || kind.is_socket()
    })
}

/// Whether standard input is something other than a terminal (where the kind of file
/// cannot be asked as on Unix).
#[cfg(not(unix))]
pub fn stdin_is_piped() -> bool {
    use std::io::IsTerminal;
    !std::io::stdin().is_terminal()
}

/// The folder of a file named on the command line, where the relative paths in it are
/// taken from: its parent, or the current folder (also for standard input, `-`).
pub fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !is_stdin(path) && !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The folders a path that comes from message data may name a file under: the input's
/// own folder first, and any the user added (`--image-root`). A path is inside when it
/// lies under one of them both as written (`..` resolved, an absolute path taken as
/// is) and once every symbolic link is followed; anything else is refused (65) before
/// the file is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confine {
    roots: Vec<PathBuf>,
    /// How the user allows another folder, for the error (`--image-root DIR`).
    hint: &'static str,
}

impl Confine {
    /// Paths confined to `root` and the `extra` folders; `hint` ends the error of a
    /// path outside them (what would allow it).
    pub fn new(root: PathBuf, extra: &[PathBuf], hint: &'static str) -> Confine {
        let mut roots = vec![root];
        roots.extend(extra.iter().cloned());
        Confine { roots, hint }
    }

    /// The first folder: where relative paths are taken from.
    pub fn base(&self) -> &Path {
        &self.roots[0]
    }

    /// The file `path` names (relative to the current folder, or absolute), with every
    /// link followed, when it lies under one of the folders; `given` is the path as the
    /// data wrote it, for the error. 65 when it leads out of them (by `..`, by being
    /// absolute, or through a symbolic link), 66 when it does not exist.
    pub fn check(&self, label: &str, given: &str, path: &Path) -> Result<PathBuf> {
        let cwd = std::env::current_dir().map_err(|e| {
            Error::new(
                ErrorKind::NoInput,
                format!("{label}: the current folder cannot be read: {e}"),
            )
        })?;
        let outside = |how: &str| {
            let folders: Vec<String> = self
                .roots
                .iter()
                .map(|r| format!("{:?}", r.display().to_string()))
                .collect();
            Error::invalid(format!(
                "{label}: {given:?} leads outside {}{how}: a path from message data may only \
                 name a file under that folder (no absolute path, no .., no symbolic link \
                 out of it); {}",
                folders.join(" or "),
                self.hint
            ))
        };
        let written = lexical(&cwd.join(path));
        if !self
            .roots
            .iter()
            .any(|root| written.starts_with(lexical(&cwd.join(root))))
        {
            return Err(outside(""));
        }
        let real = std::fs::canonicalize(&written).map_err(|e| {
            Error::new(
                ErrorKind::NoInput,
                format!("{label}: cannot read {given:?}: {e}"),
            )
        })?;
        let inside = self.roots.iter().any(|root| {
            std::fs::canonicalize(cwd.join(root)).is_ok_and(|root| real.starts_with(root))
        });
        if !inside {
            return Err(outside(" through a symbolic link"));
        }
        Ok(real)
    }
}

/// `path` with `.` and `..` resolved by its words alone, no file system asked (`/a/b/..`
/// → `/a`; `..` at the root stays at the root).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What an attachment given by its path holds: standard input is read now (it can be
/// read only once); a regular file is opened and measured, and read only when the
/// message is written, so its size never counts in memory (see [`AttachedFile`]).
pub fn attachment_data(label: &str, path: &Path) -> Result<AttachmentData> {
    if is_stdin(path) {
        return read_bytes(label, path).map(AttachmentData::Bytes);
    }
    AttachedFile::open(label, path).map(AttachmentData::File)
}

/// The files an `--attach` value names: itself, or, when it holds a glob pattern (`*`,
/// `?`, `[`) and no file of that very name exists, every regular file the pattern
/// matches, in sorted order, each once (the glob crate: `*` stays within a folder, `**`
/// crosses folders). A pattern that matches nothing is 66, naming it, so a missing
/// build artefact stops the send instead of going unnoticed; a malformed pattern is 64.
pub fn attachment_paths(label: &str, value: &str) -> Result<Vec<PathBuf>> {
    let literal = PathBuf::from(value);
    let is_pattern = value.contains(['*', '?', '[']);
    if !is_pattern || is_stdin(&literal) || literal.exists() {
        return Ok(vec![literal]);
    }
    let matches = glob::glob(value)
        .map_err(|e| Error::usage(format!("{label}: {value:?} is not a valid pattern: {e}")))?;
    let mut paths: Vec<PathBuf> = matches
        .filter_map(std::result::Result::ok)
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths.dedup();
    if paths.is_empty() {
        return Err(Error::new(
            ErrorKind::NoInput,
            format!("{label}: the pattern {value:?} matches no file"),
        ));
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// T12: devices and FIFOs are refused before a byte is read.
    #[test]
    fn t12_only_regular_files_are_read() {
        for path in ["/dev/zero", "/dev/null", "/"] {
            let err = read_bytes("--body-file", Path::new(path)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NoInput, "{path}");
            assert!(
                err.message().starts_with("--body-file: cannot read"),
                "{err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body.txt");
        std::fs::write(&file, "hi").unwrap();
        assert_eq!(read_bytes("--body-file", &file).unwrap(), b"hi");
    }

    /// A file over its cap is 65 naming the cap, and no more than the cap is read.
    #[test]
    fn a_file_over_its_cap_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vars.json");
        std::fs::write(&file, vec![b' '; (2 << 20) + 1]).unwrap();
        let err = read_capped("--vars-file", &file, 2 << 20).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.message().contains("more than 2 MiB"), "{err}");
        assert_eq!(
            read_capped("--vars-file", &file, 4 << 20).unwrap().len(),
            (2 << 20) + 1
        );
    }

    #[test]
    fn folders_and_lexical_paths() {
        assert_eq!(folder_of(Path::new("out/r.md")), Path::new("out"));
        assert_eq!(folder_of(Path::new("r.md")), Path::new("."));
        assert_eq!(folder_of(Path::new("-")), Path::new("."));
        assert_eq!(lexical(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
        assert_eq!(lexical(Path::new("/../../etc")), Path::new("/etc"));
    }
}
