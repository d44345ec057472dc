//! The reply reader and the EHLO keyword reader, for the `smtp_reply` fuzz target
//! (`fuzz/`): what a hostile server's bytes become inside envoi. Not part of the API.

use super::reply::{MAX_LINE, ReplyParser, printable};
use super::session::Capabilities;

/// One reply as a session takes it in.
#[derive(Debug)]
pub struct Heard {
    /// The three-digit code.
    pub code: u16,
    /// Each line's text, without the code and separator.
    pub lines: Vec<String>,
    /// The text errors and RCPT reports show (`printable(reply.text())`).
    pub shown: String,
    /// Read as an EHLO answer: the keywords `envoi check` lists.
    pub extensions: Vec<String>,
    /// Read as an EHLO answer: the SASL mechanisms offered.
    pub auth: Vec<String>,
    /// Read as an EHLO answer: the SIZE limit.
    pub size: Option<u64>,
}

/// Every reply in `stream`, read one after another as a session reads them, up to the
/// first that fails (as the error text a session would get) or the end of the input.
///
/// The framing repeats `Conn::read_reply`'s, which needs a socket: a line ends at LF (a
/// CR before it is dropped) and may be at most 4096 octets (`MAX_LINE`), LF included.
pub fn server_replies(stream: &[u8]) -> Vec<Result<Heard, String>> {
    let mut heard = Vec::new();
    let mut rest = stream;
    let mut parser = ReplyParser::default();
    loop {
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            if rest.len() >= MAX_LINE {
                heard.push(Err(format!("a reply line longer than {MAX_LINE} octets")));
            }
            return heard;
        };
        if end + 1 > MAX_LINE {
            heard.push(Err(format!("a reply line longer than {MAX_LINE} octets")));
            return heard;
        }
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        rest = &rest[end + 1..];
        match parser.line(line) {
            Ok(None) => {}
            Ok(Some(reply)) => {
                let caps = Capabilities::parse(&reply);
                heard.push(Ok(Heard {
                    code: reply.code,
                    shown: printable(reply.text()),
                    extensions: Capabilities::extensions(&reply),
                    auth: caps.auth,
                    size: caps.size,
                    lines: reply.lines,
                }));
                parser = ReplyParser::default();
            }
            Err(why) => {
                heard.push(Err(why));
                return heard;
            }
        }
    }
}
