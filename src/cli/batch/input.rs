//! What a batch reads: its input file (or standard input) and the records in it.

use std::fs::File;
use std::io::{self, BufRead, BufReader};

use envoi::draft::Images;
use envoi::error::{Error, ErrorKind, Result};
use envoi::message::input::{folder_of, is_stdin, read_bytes};
use envoi::message::records::{CsvMerge, JsonLines, Merge, Records};
use envoi::ownership::{ReadError, open_regular};

use crate::cli::args::{BatchArgs, BatchFormat};

/// The records' format: `--format`, else the file's extension.
pub(super) fn format(args: &BatchArgs) -> Result<BatchFormat> {
    if let Some(format) = args.format {
        return Ok(format);
    }
    let extension = args
        .input()
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("jsonl" | "ndjson") => Ok(BatchFormat::Jsonl),
        Some("csv") => Ok(BatchFormat::Csv),
        _ if is_stdin(args.input()) => Err(Error::usage(
            "reading records from standard input: give --format jsonl or --format csv",
        )),
        _ => Err(Error::usage(format!(
            "{:?}: cannot tell the format from the file name (.jsonl, .ndjson or .csv): give \
             --format jsonl or --format csv",
            args.input()
        ))),
    }
}

/// The input. Whichever sender takes the
/// next record reads it, so the reader moves between threads: standard input goes
/// through its handle, not a lock held by one thread. FILE must be a regular file
/// (BA14): a device (`/dev/zero`) never ends and a FIFO can hang the batch; `-` reads
/// standard input, whatever it is. Neither `--report` nor `--resume` may be the input
/// itself (BA13): the batch would read its own result lines as records, without end.
pub(super) fn open_input(args: &BatchArgs) -> Result<Input> {
    if is_stdin(args.input()) {
        return Ok(Box::new(BufReader::with_capacity(64 << 10, io::stdin())));
    }
    // Looked at before it is opened (opening a FIFO waits for a writer) and after.
    let (file, meta) = open_regular(args.input()).map_err(|e| match e {
        ReadError::NotRegular(what) => Error::new(
            ErrorKind::NoInput,
            format!(
                "FILE {:?}: it is {what}; give a file of records, or - to read them from \
                 standard input",
                args.input()
            ),
        ),
        e => Error::new(
            ErrorKind::NoInput,
            format!("FILE: cannot read {:?}: {e}", args.input()),
        ),
    })?;
    let id = file_id(&meta);
    for (flag, path) in [("--report", &args.report), ("--resume", &args.resume)] {
        let Some(path) = path else { continue };
        if let Ok(other) = std::fs::metadata(path)
            && file_id(&other) == id
        {
            return Err(Error::usage(format!(
                "{flag} {path:?} is the input FILE itself: the batch would read its own result \
                 lines as records; give the report another name"
            )));
        }
    }
    Ok(Box::new(BufReader::with_capacity(64 << 10, file)))
}

/// A file's device and inode: two paths name the same file when these match.
#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Whether `path` names the open `file`.
pub(super) fn same_file(path: &std::path::Path, file: &File) -> bool {
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => file_id(&a).is_some() && file_id(&a) == file_id(&b),
        _ => false,
    }
}

/// What the records are read from.
pub(super) type Input = Box<dyn BufRead + Send>;

/// The record reader for the input.
pub(super) fn records(
    args: &BatchArgs,
    format: BatchFormat,
    input: Input,
) -> Result<Records<Input>> {
    match format {
        BatchFormat::Jsonl => {
            for (given, flag) in [
                (args.subject.is_some(), "--subject"),
                (args.body.is_some() || args.body_file.is_some(), "--body"),
                (args.html, "--html"),
                (!args.attach.is_empty(), "--attach"),
            ] {
                if given {
                    return Err(Error::usage(format!(
                        "{flag} is for CSV records; a JSON Lines record carries its own \
                         Subject, Body, IsHtml and Attachments"
                    )));
                }
            }
            Ok(Records::Jsonl(
                JsonLines::new(input)
                    .images(images(args), folder_of(args.input()))
                    .keep_vars(super::bulk::Bulk::needs_vars(args)),
            ))
        }
        BatchFormat::Csv => {
            let body = match &args.body_file {
                Some(path) => {
                    if is_stdin(path) && is_stdin(args.input()) {
                        return Err(Error::usage(
                            "--body-file - and FILE - would both read standard input",
                        ));
                    }
                    let bytes = read_bytes("--body-file", path)?;
                    Some(String::from_utf8(bytes).map_err(|_| {
                        Error::invalid(format!("--body-file {path:?}: not UTF-8 text"))
                    })?)
                }
                None => args.body.clone(),
            };
            let merge = Merge {
                subject: args.subject.clone(),
                body,
                html: args.html,
                to_column: args.to_column.clone(),
                attach: args.attach.clone(),
                input_folder: (!is_stdin(args.input())).then(|| folder_of(args.input())),
                images: images(args),
                body_folder: args
                    .body_file
                    .as_deref()
                    .map_or_else(|| ".".into(), folder_of),
            };
            Ok(Records::Csv(Box::new(
                CsvMerge::new(input, merge)?.keep_vars(super::bulk::Bulk::needs_vars(args)),
            )))
        }
    }
}

/// `--embed-images` and `--image-root`: which local images of the records' HTML bodies
/// are embedded.
fn images(args: &BatchArgs) -> Images {
    Images {
        embed_data: args.embed_images,
        roots: args.image_root.clone(),
    }
}
