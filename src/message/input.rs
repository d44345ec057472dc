//! Reading the files a send needs: body, payload, attachments. `-` is standard input,
//! which can feed only one of them.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// True for the path `-`, which means standard input.
pub fn is_stdin(path: &Path) -> bool {
    path == Path::new("-")
}

/// Reads a whole file (or standard input for `-`), naming the flag on failure (exit 66).
pub fn read_bytes(label: &str, path: &Path) -> Result<Vec<u8>> {
    let result = if is_stdin(path) {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map(|_| buf)
    } else if path.is_dir() {
        Err(std::io::Error::other("it is a directory"))
    } else {
        std::fs::read(path)
    };
    result.map_err(|e| {
        Error::new(
            ErrorKind::NoInput,
            format!("{label}: cannot read {:?}: {e}", path.display().to_string()),
        )
    })
}
