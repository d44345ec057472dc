//! The records of `envoi batch`, read one at a time: JSON Lines of connector payloads
//! (the schema of `send --input`), or a CSV mail merge whose columns fill templates.
//!
//! A record that cannot be read or checked is an `Err` with its line number; the next
//! one is read all the same. Only a failure of the input itself (an I/O error) ends the
//! reading. Nothing is held beyond the record being read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;

use minijinja::{Environment, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::message::draft::{AttachmentDraft, AttachmentSource, Draft, Sourced, Text};
use crate::message::{payload, template};

/// One record: its line (of the first line, for a CSV record spanning several), and its
/// message or why it has none.
#[derive(Debug)]
pub struct Record {
    /// 1-based line number in the input.
    pub line: u64,
    /// The message, not yet checked beyond what reading it needed.
    pub draft: Result<Draft>,
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
    /// after one sets its content type.
    pub attach: Vec<String>,
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

/// JSON Lines: one connector payload a line; blank lines are skipped.
pub struct JsonLines<R> {
    input: R,
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> JsonLines<R> {
    /// Reads payloads from `input`.
    pub fn new(input: R) -> JsonLines<R> {
        JsonLines {
            input,
            line: 0,
            buf: Vec::new(),
        }
    }

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            self.buf.clear();
            match self.input.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    return Some(Err(Error::new(
                        ErrorKind::NoInput,
                        format!("cannot read the batch after line {}: {e}", self.line),
                    )));
                }
            }
            self.line += 1;
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let label = format!("line {}", self.line);
            return Some(Ok(Record {
                line: self.line,
                draft: payload::parse_record(&label, &self.buf),
            }));
        }
    }
}

/// A CSV mail merge: each row's columns are the variables of the templates.
///
/// An empty cell is an undefined variable, like a missing one: `{{ name }}` fails the
/// row, named, rather than send "Dear ,"; `{{ name | default("customer") }}` allows it.
pub struct CsvMerge<R> {
    reader: csv::Reader<R>,
    columns: Vec<String>,
    to: usize,
    env: Environment<'static>,
    uses: BTreeMap<String, BTreeSet<String>>,
    /// The names of the `--attach` templates, in order, with their content types.
    attach: Vec<(String, Option<String>)>,
    html: bool,
    record: csv::ByteRecord,
}

/// The templates' names in the environment, as errors show them.
const SUBJECT: &str = "--subject";
const BODY: &str = "--body";
const BODY_HTML: &str = "--body.html";

impl<R: BufRead> CsvMerge<R> {
    /// Reads the header row and compiles the templates: a syntax error, or a recipient
    /// column that is not in the header, is a usage error (64) before any record.
    pub fn new(input: R, merge: Merge) -> Result<CsvMerge<R>> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(input);
        let header = reader.byte_headers().map_err(|e| {
            Error::new(
                ErrorKind::InvalidData,
                format!("the CSV header row cannot be read: {e}"),
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
            attach.push((name.clone(), content_type));
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
            reader,
            columns,
            to,
            env,
            uses,
            attach,
            html: merge.html,
            record: csv::ByteRecord::new(),
        })
    }

    fn next(&mut self) -> Option<Result<Record>> {
        let line = self.reader.position().line();
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(line, |p| p.line());
                Some(Ok(Record {
                    line,
                    draft: self.draft(line),
                }))
            }
            Err(e) if e.is_io_error() => Some(Err(Error::new(
                ErrorKind::NoInput,
                format!("cannot read the batch after line {line}: {e}"),
            ))),
            Err(e) => Some(Ok(Record {
                line: e.position().map_or(line, csv::Position::line),
                draft: Err(Error::invalid(format!("not a CSV record: {e}"))),
            })),
        }
    }

    /// The row's message: recipients from the recipient column, subject and body from
    /// the templates.
    fn draft(&self, line: u64) -> Result<Draft> {
        if self.record.len() > self.columns.len() {
            return Err(Error::invalid(format!(
                "line {line}: {} fields, but the header names {} columns",
                self.record.len(),
                self.columns.len()
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
            template.render(&context).map(Some).map_err(|e| {
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
                    Error::invalid(format!("line {line}: {}: {e}", flag(name)))
                }
            })
        };
        let subject = render(SUBJECT)?;
        let body = render(if self.html { BODY_HTML } else { BODY })?;
        let label = |what: &str| format!("line {line}: {what}");
        let mut attachments = Vec::new();
        for (name, content_type) in &self.attach {
            let Some(path) = render(name)? else { continue };
            attachments.push(AttachmentDraft {
                label: format!("line {line}: {name} {path:?}"),
                source: AttachmentSource::Path(PathBuf::from(path)),
                file_name: None,
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
            ..Draft::default()
        })
    }
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
            attach: Vec::new(),
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
}
