//! The file transport: a profile with `transport = "file"` writes each message into a
//! directory instead of sending it (for tests, previews and a pickup directory).

use std::io;
use std::path::{Path, PathBuf};

use crate::durable;
use crate::error::{Error, Result};
use crate::message::{Prepared, StreamError};

/// Writes the message as `<dir>/<id>.eml` (temp file, fsync, rename, fsync of the
/// directory) and returns the path.
pub(crate) fn save_to_dir(dir: &Path, prepared: &Prepared) -> Result<PathBuf> {
    let fail = |e: io::Error| Error::config(format!("dir {}: cannot write: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let name: String = prepared
        .message_id
        .trim_matches(['<', '>'])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{name}.eml"));
    let temp = dir.join(format!(".{name}.eml.tmp"));
    durable::replace_file_with(&path, &temp, |out| prepared.bytes.write_to(out)).map_err(|e| {
        match e {
            StreamError::Source(e) => e,
            StreamError::Sink(e) => fail(e),
        }
    })?;
    Ok(path)
}
