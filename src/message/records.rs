//! The records of `envoi batch`, read one at a time: JSON Lines of connector payloads
//! (the schema of `send --input`), or a CSV mail merge whose columns fill templates.
//!
//! A record that cannot be read or checked is an `Err` with its line number; the next
//! one is read all the same. Only a failure of the input itself (an I/O error) ends the
//! reading. Nothing is held beyond the record being read, and a record is capped at
//! [`MAX_RECORD`]: a longer one is `invalid` and skipped to the next line end without
//! being held (`batch /dev/zero` from standard input runs in constant memory).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use minijinja::{Environment, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::message::draft::{AttachmentDraft, AttachmentSource, Draft, Images, Sourced, Text};
use crate::message::input::Confine;
use crate::message::template::Vars;
use crate::message::{payload, template};

/// The most one record (a JSON Lines line, a CSV record) may hold: 64 MiB, as much as
/// `send` reads from standard input, more than any mail server takes in one message.
pub const MAX_RECORD: usize = 64 << 20;

/// One record: its line (of the first line, for a CSV record spanning several), and its
/// message or why it has none.
#[derive(Debug)]
pub struct Record {
    /// 1-based line number in the input.
    pub line: u64,
    /// What the record holds, hashed ([`record_hash`]): `batch --resume` knows a record
    /// by this, not by its line, which moves when the input is edited.
    pub hash: u64,
    /// The whole SHA-256 of the same content ([`record_digest`]): a batch split across
    /// workers (`--campaign`) knows a record by this in the shared ledger, where a
    /// collision would silently skip a record. `None` for a record too long to be read.
    pub digest: Option<[u8; 32]>,
    /// The message, not yet checked beyond what reading it needed.
    pub draft: Result<Draft>,
    /// The recipients as the record gives them (a JSON Lines `To`, the CSV recipient
    /// cell), unchecked, when they can be read: a result line names them even for a
    /// record that is invalid, so it can be found without its line number.
    pub to: Vec<String>,
    /// What the record's own templates see (`batch --unsubscribe-url`): a CSV row's
    /// non-empty UTF-8 cells by column, a JSON Lines record's top-level fields by name
    /// (`To`, `Subject`…). Empty unless the reader was asked to keep them
    /// ([`JsonLines::keep_vars`], [`CsvMerge::keep_vars`]), or the record is unreadable.
    pub vars: template::Vars,
}

/// The templates of a CSV mail merge and where the recipient is.
#[derive(Debug, Clone, Default)]
pub struct Merge {
    /// `--subject`.
    pub subject: Option<String>,
    /// `--body` or the contents of `--body-file`.
    pub body: Option<String>,
    /// `--html`: the body is HTML, and column values in it are HTML-escaped.
    pub html: bool,
    /// The column that holds the recipients (`--to-column`, default `to`).
    pub to_column: String,
    /// `--attach`: paths, each a template (`invoices/{{ number }}.pdf`); `;type=MIME`
    /// after one sets its content type. What a row puts in one may only name a file
    /// under the folder the template's fixed start names (`invoices/`), or, for a
    /// template with no folder of its own (`{{ path }}`), under [`Merge::input_folder`].
    pub attach: Vec<String>,
    /// The input file's folder, where a row's `{{ path }}` may name files; `None` for
    /// standard input, which has no folder: such a template is then refused (64).
    pub input_folder: Option<PathBuf>,
    /// `--embed-images`, `--image-root`: whether the local images of an HTML body are
    /// embedded, and from where.
    pub images: Images,
    /// The body template's folder (`--body-file`'s, else the current one): where its
    /// images are taken from.
    pub body_folder: PathBuf,
}

/// Reads records one at a time.
pub enum Records<R: BufRead> {
    /// JSON Lines.
    Jsonl(JsonLines<R>),
    /// CSV with a header row.
    Csv(Box<CsvMerge<R>>),
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        match self {
            Records::Jsonl(r) => r.next(),
            Records::Csv(r) => r.next(),
        }
    }
}

/// A short hash of a record's content: the first 64 bits of its SHA-256. Enough to tell
/// the records of one batch apart (a chance collision among a million records is about
/// one in 10^7); a collision an author of the data crafts costs 2^32 work and only makes
/// one of their own records count as sent.
pub fn record_hash(parts: &[&[u8]]) -> u64 {
    short_hash(&record_digest(parts))
}

/// The first 64 bits of a [`record_digest`]: its [`record_hash`].
pub fn short_hash(digest: &[u8; 32]) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The SHA-256 of a record's content, each part preceded by its length.
pub fn record_digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        // Each part's length first, so ("ab", "c") and ("a", "bc") differ.
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let digest = context.finish();
    let mut all = [0; 32];
    all.copy_from_slice(digest.as_ref());
    all
}

/// What [`read_line_capped`] read.
#[derive(Debug, PartialEq, Eq)]
pub enum CappedLine {
    /// The input has ended.
    End,
    /// A line, now in the buffer (with its `\n`, if it had one).
    Line,
    /// A line longer than the cap: skipped to its end; the buffer is empty.
    TooLong,
}

/// Reads one line into `buf` (cleared first), holding at most `cap` bytes of it: a
/// longer line is read on to its end and dropped, so a line without end (`/dev/zero`)
/// takes constant memory, not all of it.
pub fn read_line_capped<R: BufRead>(
    input: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<CappedLine> {
    buf.clear();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    if input.take(limit).read_until(b'\n', buf)? == 0 {
        return Ok(CappedLine::End);
    }
    if buf.len() <= cap || buf.last() == Some(&b'\n') && buf.len() == cap + 1 {
        return Ok(CappedLine::Line);
    }
    // Over the cap: give the memory back, and skip to the end of the line.
    *buf = Vec::new();
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(CappedLine::TooLong);
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(end) => {
                input.consume(end + 1);
                return Ok(CappedLine::TooLong);
            }
            None => {
                let all = chunk.len();
                input.consume(all);
            }
        }
    }
}

/// The error of a record over the cap.
fn too_long(cap: usize) -> Error {
    Error::invalid(format!(
        "the record is longer than {} (the most one record may hold); it was skipped",
        size(cap)
    ))
}

/// A cap in words: MiB when it is a whole number of them.
fn size(cap: usize) -> String {
    if cap >= 1 << 20 && cap.is_multiple_of(1 << 20) {
        format!("{} MiB", cap >> 20)
    } else {
        format!("{cap} bytes")
    }
}

/// JSON Lines: one connector payload a line; blank lines are skipped.
pub struct JsonLines<R> {
    input: R,
    line: u64,
    buf: Vec<u8>,
    cap: usize,
    images: Images,
    folder: PathBuf,
    keep_vars: bool,
}

impl<R: BufRead> JsonLines<R> {
    /// Reads payloads from `input`, each up to [`MAX_RECORD`]. Their bodies' local images
    /// are left as they are (see [`JsonLines::images`]).
    pub fn new(input: R) -> JsonLines<R> {
        JsonLines::capped(input, MAX_RECORD)
    }

    /// Reads payloads from `input`, each up to `cap` bytes.
    fn capped(input: R, cap: usize) -> JsonLines<R> {
        JsonLines {
            input,
            line: 0,
            buf: Vec::new(),
            cap,
            images: Images::default(),
            folder: PathBuf::from("."),
            keep_vars: false,
        }
    }

    /// Keeps each record's top-level fields in [`Record::vars`] (read a second time, so
    /// only when a template needs them).
    pub fn keep_vars(self, keep: bool) -> JsonLines<R> {
        JsonLines {
            keep_vars: keep,
            ..self
        }
    }

    /// How the records' local images are embedded (`--embed-images`, `--image-root`);
    /// `folder` is the input's, where they are taken from.
    pub fn images(self, images: Images, folder: PathBuf) -> JsonLines<R> {
        JsonLines {
            images,
            folder,
            ..self
        }
    }

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            let read = read_line_capped(&mut self.input, &mut self.buf, self.cap);
            let too_long = match read {
                Ok(CappedLine::End) => return None,
                Ok(CappedLine::Line) => false,
                Ok(CappedLine::TooLong) => true,
                Err(e) => {
                    return Some(Err(Error::new(
                        ErrorKind::NoInput,
                        format!("cannot read the batch after line {}: {e}", self.line),
                    )));
                }
            };
            self.line += 1;
            let label = format!("line {}", self.line);
            if too_long {
                let e = too_long_at(&label, self.cap);
                return Some(Ok(Record {
                    line: self.line,
                    hash: 0,
                    digest: None,
                    draft: Err(e),
                    to: Vec::new(),
                    vars: Vars::new(),
                }));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // The line as the record, without its line end (CRLF or LF): a file saved
            // again with other line ends holds the same records.
            let end = self.buf.len()
                - self
                    .buf
                    .iter()
                    .rev()
                    .take_while(|b| matches!(b, b'\n' | b'\r'))
                    .count();
            let draft = payload::parse_record(&label, &self.buf).map(|draft| Draft {
                images: self.images.clone(),
                ..draft.body_is_data(self.folder.clone())
            });
            let to = match &draft {
                Ok(draft) => draft.to.as_ref().map(|to| to.value.clone()),
                // Read again, leniently, only for a record that failed.
                Err(_) => serde_json::from_slice::<serde_json::Value>(&self.buf)
                    .ok()
                    .and_then(|v| v.get("To")?.as_str().map(|to| vec![to.to_owned()])),
            };
            let digest = record_digest(&[&self.buf[..end]]);
            let vars = if self.keep_vars {
                serde_json::from_slice::<Vars>(&self.buf).unwrap_or_default()
            } else {
                Vars::new()
            };
            return Some(Ok(Record {
                line: self.line,
                hash: short_hash(&digest),
                digest: Some(digest),
                draft,
                to: to.unwrap_or_default(),
                vars,
            }));
        }
    }
}

/// [`too_long`], at a line.
fn too_long_at(label: &str, cap: usize) -> Error {
    let e = too_long(cap);
    Error::new(e.kind(), format!("{label}: {}", e.message()))
}

/// The input of a CSV reader, which stops it at the cap: the csv crate gathers a record
/// whatever its length, so this hands it no more than `cap` bytes past the start of the
/// record being read, then fails its read (the [`CsvMerge`] then skips to the next line
/// and starts a new reader there).
///
/// It also counts the physical lines, because the csv crate's `Position::line()` is one
/// short after a CRLF line end and names the first blank line before a record instead of
/// the record's (BurntSushi/rust-csv#395, #208): a user told "line 137" would fix the
/// wrong customer. The crate's byte offsets are right, so a record's line is counted
/// here from where its reading starts: the line ends before that offset, and those of the
/// line ends (and blank lines) the reader skips from there to the record's first byte.
struct Capped<R> {
    input: R,
    /// Bytes handed to the CSV reader, or skipped, since the input began.
    handed: u64,
    /// Where the reader may read to: the record's start plus the cap.
    limit: u64,
    /// Line ends among the bytes handed or skipped.
    newlines: u64,
    /// The last read failed at the limit.
    over: bool,
    /// The line of the record being read, as far as [`Capped::record_at`] could tell.
    line: u64,
    /// The offsets of the CR and LF bytes (true: LF) of the last bytes handed. The CSV
    /// reader (a `BufReader`) asks for more only once it has used all it had, so a record
    /// yet to be read starts at or after them: nothing older is needed, and this holds
    /// one buffer's worth at most.
    ends: VecDeque<(u64, bool)>,
    /// The line ends at the start of the record being read that were not yet handed when
    /// its reading began; `None` once a byte of the record itself came.
    leading: Option<u64>,
}

impl<R: BufRead> Read for Capped<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.handed);
        if room == 0 && !out.is_empty() {
            self.over = true;
            return Err(io::Error::other("the record is over the cap"));
        }
        let most = out.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.input.read(&mut out[..most])?;
        self.ends.clear();
        for (i, &b) in out[..n].iter().enumerate() {
            if matches!(b, b'\r' | b'\n') {
                self.ends.push_back((self.handed + i as u64, b == b'\n'));
            } else if self.leading.is_some() {
                // The record's first byte: its line is known.
                self.leading_done();
            }
            if b == b'\n' {
                self.newlines += 1;
                if let Some(leading) = &mut self.leading {
                    *leading += 1;
                }
            }
        }
        self.handed += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> Capped<R> {
    fn new(input: R, cap: usize) -> Capped<R> {
        Capped {
            input,
            handed: 0,
            limit: cap as u64,
            newlines: 0,
            over: false,
            ends: VecDeque::new(),
            leading: None,
            line: 0,
        }
    }

    /// The reader starts a record at byte `start`: works out its line as far as the
    /// bytes handed tell; [`Capped::line`] has it once the record was read.
    fn record_at(&mut self, start: u64) {
        let after = self.ends.partition_point(|&(at, _)| at < start);
        let later = self.ends.range(after..).filter(|&&(_, lf)| lf).count() as u64;
        let before = self.newlines - later;
        // The line ends the reader skips from `start` on: a run of CR and LF bytes.
        let mut at = start;
        let mut skipped = 0;
        for &(offset, lf) in self.ends.range(after..) {
            if offset != at {
                break;
            }
            skipped += u64::from(lf);
            at += 1;
        }
        self.line = before + skipped + 1;
        // The run may go on in bytes not handed yet.
        self.leading = (at == self.handed).then_some(0);
    }

    /// The record's first byte came: the line ends before it are all counted.
    fn leading_done(&mut self) {
        if let Some(more) = self.leading.take() {
            self.line += more;
        }
    }

    /// The 1-based line of the record read last.
    fn line(&mut self) -> u64 {
        self.leading_done();
        self.line
    }

    /// Skips to the end of the line and past it.
    fn skip_line(&mut self) -> io::Result<()> {
        loop {
            let chunk = self.input.fill_buf()?;
            if chunk.is_empty() {
                return Ok(());
            }
            let (n, found) = match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => (end + 1, true),
                None => (chunk.len(), false),
            };
            self.input.consume(n);
            self.handed += n as u64;
            if found {
                self.newlines += 1;
                return Ok(());
            }
        }
    }
}

/// A CSV reader over `input` as [`CsvMerge`] reads it: ragged rows allowed (checked per
/// row), the header row read only once, by the first reader.
fn csv_reader<R: BufRead>(input: Capped<R>, headers: bool) -> csv::Reader<Capped<R>> {
    csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(headers)
        .from_reader(input)
}

/// A CSV mail merge: each row's columns are the variables of the templates.
///
/// An empty cell is an undefined variable, like a missing one: `{{ name }}` fails the
/// row, named, rather than send "Dear ,"; `{{ name | default("customer") }}` allows it.
pub struct CsvMerge<R> {
    /// `None` only after the input failed while a record over the cap was skipped.
    reader: Option<csv::Reader<Capped<R>>>,
    /// Bytes before the current reader's first.
    bytes_before: u64,
    cap: usize,
    columns: Vec<String>,
    to: usize,
    env: Environment<'static>,
    uses: BTreeMap<String, BTreeSet<String>>,
    /// The `--attach` templates, in order: name, content type, and where the rendered
    /// path must stay (`Literal` for a fixed path, which no row chooses).
    attach: Vec<(String, Option<String>, AttachRoot)>,
    html: bool,
    images: Images,
    body_folder: PathBuf,
    record: csv::ByteRecord,
    keep_vars: bool,
}

/// The templates' names in the environment, as errors show them.
const SUBJECT: &str = "--subject";
const BODY: &str = "--body";
const BODY_HTML: &str = "--body.html";

impl<R: BufRead> CsvMerge<R> {
    /// Reads the header row and compiles the templates: a syntax error, or a recipient
    /// column that is not in the header, is a usage error (64) before any record.
    pub fn new(input: R, merge: Merge) -> Result<CsvMerge<R>> {
        CsvMerge::capped(input, merge, MAX_RECORD)
    }

    /// [`CsvMerge::new`], with records (and the header row) of up to `cap` bytes.
    fn capped(input: R, merge: Merge, cap: usize) -> Result<CsvMerge<R>> {
        let mut reader = csv_reader(Capped::new(input, cap), true);
        let header = reader.byte_headers().cloned();
        let header = header.map_err(|e| {
            let why = if reader.get_ref().over {
                format!("it is longer than {}", size(cap))
            } else {
                e.to_string()
            };
            Error::new(
                ErrorKind::InvalidData,
                format!("the CSV header row cannot be read: {why}"),
            )
        })?;
        let columns: Vec<String> = header
            .iter()
            .map(|c| String::from_utf8_lossy(c).trim().to_owned())
            .collect();
        if columns.iter().all(String::is_empty) {
            return Err(Error::invalid(
                "the CSV input is empty: its first line must be a header row naming the columns",
            ));
        }
        let to = columns
            .iter()
            .position(|c| *c == merge.to_column)
            .ok_or_else(|| {
                // Quoted: the names are the data's, and may hold control characters.
                let names: Vec<String> = columns.iter().map(|c| format!("{c:?}")).collect();
                Error::usage(format!(
                    "--to-column {:?}: the CSV header has no such column (it has: {})",
                    merge.to_column,
                    names.join(", ")
                ))
            })?;
        let mut env = template::strict_env();
        let mut uses = BTreeMap::new();
        let body_name = if merge.html { BODY_HTML } else { BODY };
        let mut templates = vec![
            (SUBJECT.to_owned(), merge.subject),
            (body_name.to_owned(), merge.body),
        ];
        let mut attach = Vec::new();
        for (i, value) in merge.attach.into_iter().enumerate() {
            let (path, content_type) = match value.rsplit_once(";type=") {
                Some((path, mime)) => (path.to_owned(), Some(mime.to_owned())),
                None => (value, None),
            };
            let name = format!("--attach #{}", i + 1);
            let root = attach_root(&name, &path, merge.input_folder.as_deref())?;
            attach.push((name.clone(), content_type, root));
            templates.push((name, Some(path)));
        }
        for (name, source) in templates {
            let Some(source) = source else { continue };
            env.add_template_owned(name.clone(), source)
                .map_err(|e| Error::usage(format!("{}: not a valid template: {e}", flag(&name))))?;
            let template = env
                .get_template(&name)
                .map_err(|e| Error::usage(format!("{}: {e}", flag(&name))))?;
            let used = template.undeclared_variables(false).into_iter().collect();
            uses.insert(name, used);
        }
        Ok(CsvMerge {
            reader: Some(reader),
            bytes_before: 0,
            cap,
            columns,
            to,
            env,
            uses,
            attach,
            html: merge.html,
            images: merge.images,
            body_folder: merge.body_folder,
            record: csv::ByteRecord::new(),
            keep_vars: false,
        })
    }

    /// Keeps each row's cells in [`Record::vars`], as the templates see them.
    pub fn keep_vars(self, keep: bool) -> CsvMerge<R> {
        CsvMerge {
            keep_vars: keep,
            ..self
        }
    }

    /// The row's non-empty UTF-8 cells by column (a cell that is not UTF-8 fails the
    /// row's draft, which says so).
    fn vars(&self) -> Vars {
        if !self.keep_vars {
            return Vars::new();
        }
        self.columns
            .iter()
            .zip(self.record.iter())
            .filter(|(_, cell)| !cell.is_empty())
            .filter_map(|(name, cell)| {
                let text = std::str::from_utf8(cell).ok()?;
                Some((name.clone(), serde_json::Value::String(text.to_owned())))
            })
            .collect()
    }

    fn next(&mut self) -> Option<Result<Record>> {
        let reader = self.reader.as_mut()?;
        // The record starts where the last one ended: it may take `cap` bytes from there.
        let start = self.bytes_before + reader.position().byte();
        reader.get_mut().limit = start.saturating_add(self.cap as u64);
        reader.get_mut().record_at(start);
        let read = reader.read_byte_record(&mut self.record);
        let line = reader.get_mut().line();
        match read {
            Ok(false) => None,
            Ok(true) => {
                let digest = self.digest();
                Some(Ok(Record {
                    line,
                    hash: short_hash(&digest),
                    digest: Some(digest),
                    draft: self.draft(line),
                    to: self.to(),
                    vars: self.vars(),
                }))
            }
            Err(_) if reader.get_ref().over => Some(self.skip_too_long(line)),
            Err(e) if e.is_io_error() => Some(Err(Error::new(
                ErrorKind::NoInput,
                format!("cannot read the batch after line {}: {e}", line - 1),
            ))),
            Err(e) => Some(Ok(Record {
                line,
                hash: self.hash(),
                digest: Some(self.digest()),
                draft: Err(Error::invalid(format!("not a CSV record: {e}"))),
                to: self.to(),
                vars: Vars::new(),
            })),
        }
    }

    /// The record at `line` is over the cap: skips to the end of the line the reader
    /// stopped in, and reads on from the next with a new reader. The old reader holds
    /// nothing unread: it asks its input for more only once it has used all it had.
    fn skip_too_long(&mut self, line: u64) -> Result<Record> {
        self.record = csv::ByteRecord::new();
        let mut input = self.reader.take().map(csv::Reader::into_inner);
        if let Some(input) = &mut input {
            input.skip_line().map_err(|e| {
                Error::new(
                    ErrorKind::NoInput,
                    format!("cannot read the batch after line {line}: {e}"),
                )
            })?;
            input.over = false;
            self.bytes_before = input.handed;
        }
        self.reader = input.map(|input| csv_reader(input, false));
        Ok(Record {
            line,
            hash: 0,
            digest: None,
            draft: Err(too_long_at(&format!("line {line}"), self.cap)),
            to: Vec::new(),
            vars: Vars::new(),
        })
    }

    /// The row's recipient cell as it is, when it has one.
    fn to(&self) -> Vec<String> {
        self.record
            .get(self.to)
            .filter(|cell| !cell.is_empty())
            .map(|cell| vec![String::from_utf8_lossy(cell).into_owned()])
            .unwrap_or_default()
    }

    /// The row's short hash ([`CsvMerge::digest`]).
    fn hash(&self) -> u64 {
        short_hash(&self.digest())
    }

    /// The row's SHA-256: its non-empty cells with their column names, in column-name
    /// order. That is what the templates see, so a re-exported CSV with its columns in
    /// another order, or an empty column added, holds the same records.
    fn digest(&self) -> [u8; 32] {
        let mut cells: Vec<(&[u8], &[u8])> = self
            .columns
            .iter()
            .map(|c| c.as_bytes())
            .chain(std::iter::repeat(&b""[..]))
            .zip(self.record.iter())
            .filter(|(_, cell)| !cell.is_empty())
            .collect();
        cells.sort_unstable();
        let parts: Vec<&[u8]> = cells
            .iter()
            .flat_map(|&(name, cell)| [name, cell])
            .collect();
        record_digest(&parts)
    }

    /// The row's message: recipients from the recipient column, subject and body from
    /// the templates.
    fn draft(&self, line: u64) -> Result<Draft> {
        if self.record.len() > self.columns.len() {
            return Err(Error::invalid(format!(
                "line {line}: {} fields, but the header names {}",
                self.record.len(),
                match self.columns.len() {
                    1 => "1 column".to_owned(),
                    n => format!("{n} columns"),
                }
            )));
        }
        let mut vars = BTreeMap::new();
        for (name, cell) in self.columns.iter().zip(self.record.iter()) {
            let text = std::str::from_utf8(cell).map_err(|_| {
                Error::invalid(format!("line {line}: column {name:?} is not UTF-8"))
            })?;
            if !text.is_empty() {
                vars.insert(name.clone(), text.to_owned());
            }
        }
        let to = match vars.get(&self.columns[self.to]) {
            Some(to) => to.clone(),
            None => {
                return Err(Error::usage(format!(
                    "line {line}: no recipient: the column {:?} is empty",
                    self.columns[self.to]
                )));
            }
        };
        let context = Value::from_serialize(&vars);
        let render = |name: &str| -> Result<Option<String>> {
            let Ok(template) = self.env.get_template(name) else {
                return Ok(None);
            };
            template::render_bounded(&template, &context)
                .map(Some)
                .map_err(|e| {
                    let e = match e {
                        template::Bounded::TooLarge => {
                            return template::too_large(&format!("line {line}: {}", flag(name)));
                        }
                        template::Bounded::Engine(e) => e,
                    };
                    let undefined: Vec<&str> = self
                        .uses
                        .get(name)
                        .into_iter()
                        .flatten()
                        .filter(|v| !vars.contains_key(*v))
                        .map(String::as_str)
                        .collect();
                    if e.kind() == minijinja::ErrorKind::UndefinedError && !undefined.is_empty() {
                        Error::invalid(format!(
                            "line {line}: {}: {} (the column is missing or empty in this row)",
                            flag(name),
                            template::undefined(&undefined)
                        ))
                    } else {
                        let why = if e.kind() == minijinja::ErrorKind::OutOfFuel {
                            template::describe(&e)
                        } else {
                            e.to_string()
                        };
                        Error::invalid(format!("line {line}: {}: {why}", flag(name)))
                    }
                })
        };
        let subject = render(SUBJECT)?;
        let body = render(if self.html { BODY_HTML } else { BODY })?;
        let label = |what: &str| format!("line {line}: {what}");
        let mut attachments = Vec::new();
        for (name, content_type, root) in &self.attach {
            let Some(path) = render(name)? else { continue };
            let label = format!("line {line}: {name} {path:?}");
            let given = PathBuf::from(&path);
            let file_name = given.file_name().map(|n| n.to_string_lossy().into_owned());
            let confined = |folder: &PathBuf, given: &Path| {
                Confine::new(folder.clone(), &[], ATTACH_HINT).check(
                    &format!("line {line}: {name}"),
                    &path,
                    given,
                )
            };
            let source = match root {
                AttachRoot::Literal => given,
                AttachRoot::Fixed(folder) => confined(folder, &given)?,
                // The row's value is a path in the input's folder, as an image's is.
                AttachRoot::Input(folder) => confined(folder, &folder.join(&given))?,
            };
            attachments.push(AttachmentDraft {
                label,
                source: AttachmentSource::Path(source),
                file_name,
                content_type: content_type.clone(),
                content_id: None,
            });
        }
        Ok(Draft {
            to: Some(Sourced::new(
                label(&format!("column {:?}", self.columns[self.to])),
                vec![to],
            )),
            subject: subject.map(|s| Sourced::new(label(SUBJECT), s)),
            body: body.map(|b| Sourced::new(label(BODY), Text::Inline(b))),
            is_html: self.html.then_some(true),
            attachments: (!attachments.is_empty()).then_some(attachments),
            images: self.images.clone(),
            ..Draft::default()
        }
        .body_is_data(self.body_folder.clone()))
    }
}

/// What allows an `--attach` file outside the template's folder, for the error.
const ATTACH_HINT: &str = "the folder is the start of the --attach template before its \
                           first {{ }} (else the input file's folder); name a wider one there";

/// Where what a row fills into an `--attach` template must stay: under the folder the
/// template's fixed start names, else under the input's folder (the data's own, as for
/// images: the current folder would hand a row the user's home). Nothing is checked when
/// the template has no tag, so no row chooses anything.
fn attach_root(name: &str, template: &str, input_folder: Option<&Path>) -> Result<AttachRoot> {
    let Some(start) = ["{{", "{%", "{#"]
        .iter()
        .filter_map(|tag| template.find(tag))
        .min()
    else {
        return Ok(AttachRoot::Literal);
    };
    let fixed = &template[..start];
    if let Some(end) = fixed.rfind('/') {
        return Ok(AttachRoot::Fixed(PathBuf::from(&fixed[..=end])));
    }
    match input_folder {
        Some(folder) => Ok(AttachRoot::Input(folder.to_owned())),
        None => Err(Error::usage(format!(
            "{name} {template:?}: a path from the data may only name a file in the input's \
             folder, and standard input has none: start the template with its folder \
             (--attach 'files/{{{{ f }}}}')"
        ))),
    }
}

/// Where the files an `--attach` template names may lie.
#[derive(Debug, PartialEq, Eq)]
enum AttachRoot {
    /// No template at all: a path the user wrote, not checked.
    Literal,
    /// Under the folder the template starts with (`invoices/` of `invoices/{{ n }}.pdf`).
    Fixed(PathBuf),
    /// The template starts with a value (`{{ path }}`): a path in the input file's
    /// folder, which it must not leave.
    Input(PathBuf),
}

/// The flag a template came from.
fn flag(name: &str) -> &str {
    if name == BODY_HTML { BODY } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(csv: &str, subject: &str, body: &str, html: bool) -> Vec<(u64, Result<Draft>)> {
        let merge = Merge {
            subject: Some(subject.to_owned()),
            body: Some(body.to_owned()),
            html,
            to_column: "to".to_owned(),
            ..Merge::default()
        };
        let records = CsvMerge::new(csv.as_bytes(), merge).unwrap();
        Records::Csv(Box::new(records))
            .map(|r| r.unwrap())
            .map(|r| (r.line, r.draft))
            .collect()
    }

    fn body(draft: &Draft) -> &str {
        match &draft.body.as_ref().unwrap().value {
            Text::Inline(text) => text,
            Text::File(_) => panic!("a file body"),
        }
    }

    #[test]
    fn an_html_body_escapes_the_values_and_a_subject_does_not() {
        let rows = merge(
            "to,name\na@example.com,<b>&\n",
            "{{ name }}",
            "<p>{{ name }}</p>",
            true,
        );
        let draft = rows[0].1.as_ref().unwrap();
        assert_eq!(body(draft), "<p>&lt;b&gt;&amp;</p>");
        assert_eq!(draft.subject.as_ref().unwrap().value, "<b>&");
        assert_eq!(draft.is_html, Some(true));
    }

    #[test]
    fn empty_missing_and_extra_cells() {
        let rows = merge(
            "to,name\na@example.com,\nb@example.com\nc@example.com,C,extra\nd@example.com,D\n",
            "x",
            "{{ name | default('you') }} {{ to }}",
            false,
        );
        let lines: Vec<u64> = rows.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 3, 4, 5]);
        assert_eq!(body(rows[0].1.as_ref().unwrap()), "you a@example.com");
        assert_eq!(body(rows[1].1.as_ref().unwrap()), "you b@example.com");
        let extra = rows[2].1.as_ref().unwrap_err();
        assert!(extra.message().contains("line 4: 3 fields"), "{extra}");
        assert_eq!(body(rows[3].1.as_ref().unwrap()), "D d@example.com");
    }

    #[test]
    fn a_missing_recipient_column_or_a_bad_template_is_refused_before_any_record() {
        let bad_column = Merge {
            to_column: "email".to_owned(),
            ..Merge::default()
        };
        let e = CsvMerge::new("to,name\n".as_bytes(), bad_column)
            .err()
            .unwrap();
        assert!(e.message().contains("--to-column \"email\""), "{e}");
        let bad_template = Merge {
            subject: Some("{{ name".to_owned()),
            to_column: "to".to_owned(),
            ..Merge::default()
        };
        let e = CsvMerge::new("to,name\n".as_bytes(), bad_template)
            .err()
            .unwrap();
        assert!(
            e.message().starts_with("--subject: not a valid template"),
            "{e}"
        );
    }

    /// A source that hands one byte per read, so every line end and blank line falls
    /// across the CSV reader's buffer refills.
    struct Dribble<'a>(&'a [u8]);

    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(out.len()).min(1);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// The csv crate's `Position::line()` is one short after CRLF and names the blank
    /// line before a record (rust-csv#395, #208): each record has its physical line, also
    /// after a quoted field spanning lines, a blank line, and a record over the cap.
    #[test]
    fn csv_records_have_their_physical_line_with_crlf_blank_lines_and_quoted_breaks() {
        let lf = "to,name\na@x.org,A\n\n\nb@x.org,\"B\nsecond line\"\nc@x.org,C\n\n";
        let crlf = lf.replace('\n', "\r\n");
        let expected = [2, 5, 7];
        for text in [lf.to_owned(), crlf] {
            let lines: Vec<u64> = merge(&text, "Hi", "Dear {{ name }}", false)
                .into_iter()
                .map(|(line, _)| line)
                .collect();
            assert_eq!(lines, expected, "{text:?}");
            // The same, one byte a read.
            let input = io::BufReader::with_capacity(1, Dribble(text.as_bytes()));
            let merge = Merge {
                subject: Some("Hi".to_owned()),
                body: Some("Dear {{ name }}".to_owned()),
                to_column: "to".to_owned(),
                ..Merge::default()
            };
            let lines: Vec<u64> = Records::Csv(Box::new(CsvMerge::new(input, merge).unwrap()))
                .map(|r| r.unwrap().line)
                .collect();
            assert_eq!(lines, expected, "one byte a read: {text:?}");
        }
        // The error of a row names its physical line too.
        let crlf = "to,name\r\n\r\na@x.org,\r\n";
        let records = merge(crlf, "Hi", "Dear {{ name }}", false);
        assert_eq!(records[0].0, 3);
        let e = records[0].1.as_ref().unwrap_err();
        assert!(e.message().starts_with("line 3: "), "{e}");
    }

    /// A record that is not valid still names its recipients, for its result line.
    #[test]
    fn a_record_keeps_its_recipients_as_given_even_when_invalid() {
        let input =
            "{\"To\":\"a@example.com\"}\n{\"To\":\"b@example.com\",\"Nope\":1}\n{\"Nope\":1}\n";
        let to: Vec<Vec<String>> = Records::Jsonl(JsonLines::new(input.as_bytes()))
            .map(|r| r.unwrap().to)
            .collect();
        assert_eq!(
            to,
            [
                vec!["a@example.com"],
                vec!["b@example.com"],
                Vec::<&str>::new()
            ]
        );
        let merge = Merge {
            subject: Some("{{ missing }}".to_owned()),
            to_column: "to".to_owned(),
            ..Merge::default()
        };
        let csv = "to,name\nc@example.com,C\n,D\n";
        let records: Vec<Record> =
            Records::Csv(Box::new(CsvMerge::new(csv.as_bytes(), merge).unwrap()))
                .map(|r| r.unwrap())
                .collect();
        assert!(records.iter().all(|r| r.draft.is_err()));
        assert_eq!(records[0].to, ["c@example.com"]);
        assert!(records[1].to.is_empty());
    }

    #[test]
    fn json_lines_skip_blank_lines_and_count_them() {
        let input = "{\"To\":\"a@example.com\"}\n\n  \n{\"Nope\":1}\n";
        let records: Vec<Record> = Records::Jsonl(JsonLines::new(input.as_bytes()))
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].line, 4);
        let e = records[1].draft.as_ref().unwrap_err();
        assert!(
            e.message().starts_with("line 4: not a Send Email payload"),
            "{e}"
        );
    }

    /// BA14: a record over the cap is invalid, named by its line, and the records after
    /// it are read as usual; a line without end is read in constant memory.
    #[test]
    fn ba14_a_jsonl_record_over_the_cap_is_invalid_and_the_next_one_is_read() {
        let long = format!("{{\"To\":\"{}@example.com\"}}", "a".repeat(200));
        let input =
            format!("{{\"To\":\"a@example.com\"}}\n{long}\r\n{{\"To\":\"b@example.com\"}}\n");
        let records: Vec<Record> = Records::Jsonl(JsonLines::capped(input.as_bytes(), 100))
            .map(|r| r.unwrap())
            .collect();
        let lines: Vec<u64> = records.iter().map(|r| r.line).collect();
        assert_eq!(lines, [1, 2, 3]);
        assert!(records[0].draft.is_ok() && records[2].draft.is_ok());
        let e = records[1].draft.as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert!(
            e.message()
                .starts_with("line 2: the record is longer than 100 bytes"),
            "{e}"
        );

        // Exactly at the cap (line end not counted) is still a record.
        let mut buf = Vec::new();
        let mut exact = "12345\n".as_bytes();
        assert_eq!(
            read_line_capped(&mut exact, &mut buf, 5).unwrap(),
            CappedLine::Line
        );
        let mut over = "123456\nnext\n".as_bytes();
        assert_eq!(
            read_line_capped(&mut over, &mut buf, 5).unwrap(),
            CappedLine::TooLong
        );
        assert_eq!(
            read_line_capped(&mut over, &mut buf, 5).unwrap(),
            CappedLine::Line
        );
        assert_eq!(buf, b"next\n");
        assert_eq!(
            read_line_capped(&mut over, &mut buf, 5).unwrap(),
            CappedLine::End
        );

        // 64 MiB of zeros with no line end: skipped, holding no more than the cap.
        let mut zeros = io::BufReader::new(io::repeat(0).take(64 << 20));
        assert_eq!(
            read_line_capped(&mut zeros, &mut buf, 1 << 10).unwrap(),
            CappedLine::TooLong
        );
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn ba14_a_csv_record_over_the_cap_is_invalid_and_the_next_row_keeps_its_line() {
        let merge = Merge {
            subject: Some("{{ name }}".to_owned()),
            body: Some("b".to_owned()),
            to_column: "to".to_owned(),
            ..Merge::default()
        };
        let input = format!(
            "to,name\na@example.com,A\nb@example.com,{}\nc@example.com,\"C\nC\"\nd@example.com,D\n",
            "x".repeat(300)
        );
        let records: Vec<Record> = Records::Csv(Box::new(
            CsvMerge::capped(input.as_bytes(), merge, 64).unwrap(),
        ))
        .map(|r| r.unwrap())
        .collect();
        let lines: Vec<u64> = records.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3, 4, 6]);
        let e = records[1].draft.as_ref().unwrap_err();
        assert!(
            e.message()
                .starts_with("line 3: the record is longer than 64 bytes"),
            "{e}"
        );
        for i in [0, 2, 3] {
            assert!(records[i].draft.is_ok(), "{:?}", records[i]);
        }
        assert_eq!(
            records[3]
                .draft
                .as_ref()
                .unwrap()
                .subject
                .as_ref()
                .unwrap()
                .value,
            "D"
        );
        // A header row over the cap is refused.
        let e = CsvMerge::capped("to,name\n".as_bytes(), Merge::default(), 4)
            .err()
            .unwrap();
        assert!(e.message().contains("longer than 4 bytes"), "{e}");
    }

    /// BA12: a record's hash is its content: the same line elsewhere, or with CRLF, or a
    /// CSV row with its columns reordered or an empty column added, hashes the same.
    #[test]
    fn ba12_a_record_is_known_by_its_content() {
        let jsonl = |input: &str| -> Vec<u64> {
            Records::Jsonl(JsonLines::new(input.as_bytes()))
                .map(|r| r.unwrap().hash)
                .collect()
        };
        let a = r#"{"To":"a@example.com"}"#;
        let b = r#"{"To":"b@example.com"}"#;
        let first = jsonl(&format!("{a}\n{b}\n"));
        assert_ne!(first[0], first[1]);
        assert_eq!(jsonl(&format!("\n{b}\r\n{a}")), [first[1], first[0]]);

        let csv = |input: &str| -> Vec<u64> {
            let merge = Merge {
                to_column: "to".to_owned(),
                ..Merge::default()
            };
            Records::Csv(Box::new(CsvMerge::new(input.as_bytes(), merge).unwrap()))
                .map(|r| r.unwrap().hash)
                .collect()
        };
        let rows = csv("to,name\na@example.com,A\nb@example.com,B\n");
        assert_ne!(rows[0], rows[1]);
        assert_eq!(
            csv("name,note,to\nB,,b@example.com\nA,,a@example.com\n"),
            [rows[1], rows[0]]
        );
        assert_ne!(
            csv("to,nom\na@example.com,A\n")[0],
            rows[0],
            "a renamed column"
        );
    }

    #[test]
    fn an_attach_template_is_confined_to_its_fixed_folder() {
        let root = |template: &str| attach_root("--attach #1", template, Some(Path::new("in")));
        assert_eq!(
            root("invoices/{{ n }}.pdf").unwrap(),
            AttachRoot::Fixed("invoices/".into())
        );
        assert_eq!(
            root("/srv/a/{{ y }}/{{ n }}.pdf").unwrap(),
            AttachRoot::Fixed("/srv/a/".into())
        );
        assert_eq!(root("{{ path }}").unwrap(), AttachRoot::Input("in".into()));
        assert_eq!(
            root("x{% if a %}y{% endif %}").unwrap(),
            AttachRoot::Input("in".into())
        );
        assert_eq!(root("terms.pdf").unwrap(), AttachRoot::Literal);
        let e = attach_root("--attach #1", "{{ path }}", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
    }
}
