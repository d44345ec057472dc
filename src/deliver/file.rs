//! The file transport: a profile with `transport = "file"` writes each message into a
//! directory instead of sending it (for tests, previews and a pickup directory).

use std::io;
use std::path::{Path, PathBuf};

use crate::deliver::observe::Observer;
use crate::deliver::outcome::{BatchSent, Failure};
use crate::deliver::retry::Policy;
use crate::deliver::transport::Transport;
use crate::durable;
use crate::error::{Error, Result};
use crate::message::{Prepared, StreamError};

/// A folder as a transport: each message becomes a file in it.
pub(crate) struct FileTransport {
    pub(crate) dir: PathBuf,
}

impl Transport for FileTransport {
    fn send(
        &mut self,
        prepared: &Prepared,
        _policy: &Policy,
        _observer: &mut dyn Observer,
    ) -> Result<BatchSent, Failure> {
        Ok(BatchSent::Saved(save_to_dir(&self.dir, prepared)?))
    }

    fn sibling(&self) -> Box<dyn Transport> {
        Box::new(FileTransport {
            dir: self.dir.clone(),
        })
    }
}

/// Writes the message as `<dir>/<id>.eml` (temp file, fsync, rename, fsync of the
/// directory) and returns the path.
fn save_to_dir(dir: &Path, prepared: &Prepared) -> Result<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{AttachedFile, MessageBytes};

    fn prepared(bytes: MessageBytes) -> Prepared {
        Prepared {
            message_id: "<1.a@example.com>".into(),
            envelope: lettre::address::Envelope::new(
                Some("a@example.com".parse().unwrap()),
                vec!["b@example.com".parse().unwrap()],
            )
            .unwrap(),
            bytes,
        }
    }

    /// The saved file is the whole message, attached files included; one that went
    /// missing leaves neither a message nor a temporary file behind.
    #[test]
    fn attached_files_are_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let attached = dir.path().join("a.bin");
        std::fs::write(&attached, [0xff; 3]).unwrap();
        let mut bytes = MessageBytes::from(b"Subject: x\r\n\r\n".to_vec());
        bytes.push_file(AttachedFile::open("--attach", &attached).unwrap());
        let out = dir.path().join("out");
        let path = save_to_dir(&out, &prepared(bytes.clone())).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"Subject: x\r\n\r\n////");
        std::fs::remove_file(&path).unwrap();

        std::fs::remove_file(&attached).unwrap();
        let err = save_to_dir(&out, &prepared(bytes)).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::NoInput, "{err}");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "left behind");
    }
}
