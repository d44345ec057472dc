//! DKIM signatures (RFC 6376): a `DKIM-Signature` header prepended to the final bytes
//! of a message, made with `ring` (rsa-sha256, or ed25519-sha256 by RFC 8463).
//!
//! Canonicalization is relaxed/relaxed: header fields and body lines survive the
//! whitespace changes and refolding relays make. The signed fields are those of
//! [`SIGNED_FIELDS`] present in the message, and `From` once more than it appears
//! (oversigning), so a second From added on the way breaks the signature. Everything
//! here is a pure function of the message, the key and the time.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::digest::{Context, SHA256, digest};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};

use crate::error::{Error, ErrorKind, Result};
use crate::message::attached_file::StreamError;
use crate::message::bytes::MessageBytes;

/// The header fields signed when the message has them, in this order.
/// The list headers of a bulk message (`batch --unsubscribe-url`, `--list-id`) are among
/// them: RFC 8058 §4 requires List-Unsubscribe and List-Unsubscribe-Post to be covered by
/// a valid signature, and Gmail ignores a one-click link that is not.
pub const SIGNED_FIELDS: [&str; 14] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Reply-To",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Longest line of the DKIM-Signature header written here (RFC 5322's recommended 78).
const MAX_LINE: usize = 78;

/// Smallest RSA key DKIM allows (RFC 8301 §3.2).
const MIN_RSA_BITS: usize = 1024;

/// A private key that signs DKIM: RSA or Ed25519.
pub struct DkimKey(Key);

enum Key {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DkimKey({})", self.algorithm())
    }
}

impl DkimKey {
    /// Reads a PEM private key: RSA as PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`), Ed25519 as PKCS#8. The error says, in plain words,
    /// what the text is and what was expected.
    pub fn from_pem(pem: &[u8]) -> std::result::Result<DkimKey, String> {
        const EXPECTED: &str = "expected an unencrypted PEM private key: RSA (\"BEGIN PRIVATE \
                                KEY\" or \"BEGIN RSA PRIVATE KEY\") or Ed25519 (\"BEGIN PRIVATE \
                                KEY\"), as `openssl genpkey` writes it";
        let text = std::str::from_utf8(pem).map_err(|_| format!("not text; {EXPECTED}"))?;
        let (label, der) = pem_block(text).ok_or_else(|| format!("no PEM block; {EXPECTED}"))?;
        let key = match label {
            "PRIVATE KEY" => match Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
                Ok(ed) => Key::Ed25519(ed),
                Err(_) => Key::Rsa(RsaKeyPair::from_pkcs8(&der).map_err(|e| rsa_rejected(&e))?),
            },
            "RSA PRIVATE KEY" => {
                if text.contains("Proc-Type:") {
                    return Err(format!("an encrypted key; {EXPECTED}"));
                }
                Key::Rsa(RsaKeyPair::from_der(&der).map_err(|e| rsa_rejected(&e))?)
            }
            "ENCRYPTED PRIVATE KEY" => return Err(format!("an encrypted key; {EXPECTED}")),
            other => return Err(format!("a PEM block of type {other:?}; {EXPECTED}")),
        };
        if let Key::Rsa(rsa) = &key {
            let bits = rsa.public().modulus_len() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "an RSA key of {bits} bits; DKIM needs at least {MIN_RSA_BITS} (RFC 8301), \
                     2048 recommended"
                ));
            }
        }
        Ok(DkimKey(key))
    }

    /// `rsa-sha256` or `ed25519-sha256`: the `a=` tag.
    pub fn algorithm(&self) -> &'static str {
        match self.0 {
            Key::Rsa(_) => "rsa-sha256",
            Key::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// The signature of `data` (the canonical header fields), as the `b=` tag carries it.
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>> {
        match &self.0 {
            Key::Rsa(rsa) => {
                let mut signature = vec![0; rsa.public().modulus_len()];
                rsa.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    data,
                    &mut signature,
                )
                .map_err(|_| {
                    Error::new(ErrorKind::Internal, "the RSA key could not sign (a bug)")
                })?;
                Ok(signature)
            }
            // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data.
            Key::Ed25519(ed) => Ok(ed.sign(digest(&SHA256, data).as_ref()).as_ref().to_vec()),
        }
    }

    /// The public key as a DNS TXT record (`v=DKIM1; k=…; p=…`) to publish at
    /// `SELECTOR._domainkey.DOMAIN`.
    pub fn dns_record(&self) -> String {
        let b64 = &base64::engine::general_purpose::STANDARD;
        match &self.0 {
            Key::Rsa(rsa) => format!(
                "v=DKIM1; k=rsa; p={}",
                b64.encode(rsa_spki(rsa.public().as_ref()))
            ),
            Key::Ed25519(ed) => format!(
                "v=DKIM1; k=ed25519; p={}",
                b64.encode(ed.public_key().as_ref())
            ),
        }
    }
}

/// Why ring refused an RSA key, in words.
fn rsa_rejected(e: &ring::error::KeyRejected) -> String {
    match e.to_string().as_str() {
        "TooSmall" => "an RSA key that is too small: envoi signs with RSA keys of 2048 to 8192 \
                       bits (RFC 8301 forbids under 1024); make one with `openssl genpkey \
                       -algorithm RSA -pkeyopt rsa_keygen_bits:2048`"
            .into(),
        "TooLarge" => "an RSA key over 8192 bits; use 2048 to 4096 bits".into(),
        other => format!(
            "not an RSA or Ed25519 private key envoi can use ({other}); expected PKCS#8 \
             (\"BEGIN PRIVATE KEY\") or PKCS#1 (\"BEGIN RSA PRIVATE KEY\")"
        ),
    }
}

/// The first PEM block of `text`: its label and its decoded bytes.
fn pem_block(text: &str) -> Option<(&str, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = &rest[..label_end];
    let body = &rest[label_end + 5..];
    let end = body.find(&format!("-----END {label}-----"))?;
    let encoded: String = body[..end]
        .lines()
        .filter(|l| !l.contains(':'))
        .flat_map(str::chars)
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    Some((label, der))
}

/// A PKCS#1 RSAPublicKey wrapped as a SubjectPublicKeyInfo (what `p=` usually holds).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption, NULL }.
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0];
    bit_string.extend_from_slice(pkcs1);
    let mut inner = ALGORITHM.to_vec();
    inner.extend(der_tlv(0x03, &bit_string));
    der_tlv(0x30, &inner)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Who signs: the `d=` domain, the `s=` selector and the key.
#[derive(Debug)]
pub struct Signer {
    domain: String,
    selector: String,
    key: DkimKey,
}

impl Signer {
    /// A signer for `domain` and `selector`; each must be a DNS name (letters, digits,
    /// `-`, `_`, dot-separated labels), which also keeps them from adding tags.
    pub fn new(domain: &str, selector: &str, key: DkimKey) -> std::result::Result<Signer, String> {
        check_names(domain, selector)?;
        Ok(Signer {
            domain: domain.to_ascii_lowercase(),
            selector: selector.to_owned(),
            key,
        })
    }

    /// The key's algorithm (`a=`).
    pub fn algorithm(&self) -> &'static str {
        self.key.algorithm()
    }

    /// `message` (RFC 5322, CRLF line endings) with its DKIM-Signature header, signed at
    /// `now`, inserted before its first line (in place: a large message is not copied).
    /// A message without From cannot be signed (65); an attached file that cannot be
    /// read is 66.
    pub fn sign(&self, mut message: MessageBytes, now: SystemTime) -> Result<MessageBytes> {
        let header = self.header(&message, now)?;
        message.prepend(header.as_bytes());
        Ok(message)
    }

    /// The DKIM-Signature header field of `message` signed at `now`, folded, ending in
    /// CRLF. The body is hashed as it is written, attached files read a chunk at a time.
    pub fn header(&self, message: &MessageBytes, now: SystemTime) -> Result<String> {
        let (fields, body) = split(message.head());
        let mut body_hash = Context::new(&SHA256);
        let mut canonical = RelaxedBody::new(|piece: &[u8]| body_hash.update(piece));
        canonical.update(body);
        message
            .write_after_head(&mut canonical)
            .map_err(StreamError::into_error)?;
        canonical.finish();
        let body_hash = body_hash.finish();
        let mut names: Vec<String> = Vec::new();
        for wanted in SIGNED_FIELDS {
            let count = fields
                .iter()
                .filter(|f| field_name(f).eq_ignore_ascii_case(wanted.as_bytes()))
                .count();
            names.extend(std::iter::repeat_n(wanted.to_ascii_lowercase(), count));
        }
        if !names.iter().any(|n| n == "from") {
            return Err(Error::invalid(
                "the message has no From header, so it cannot be DKIM-signed",
            ));
        }
        // Oversigning: one more From than there are, so none can be added; the same for
        // the one-click unsubscribe fields when present (RFC 8058 §4), so a forwarder
        // cannot put a link of its own above the signed one.
        for field in ["from", "list-unsubscribe", "list-unsubscribe-post"] {
            if names.iter().any(|n| n == field) {
                names.push(field.into());
            }
        }

        let b64 = &base64::engine::general_purpose::STANDARD;
        let t = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut header = Folder::new("DKIM-Signature:");
        for tag in [
            "v=1;".to_owned(),
            format!("a={};", self.key.algorithm()),
            "c=relaxed/relaxed;".to_owned(),
            format!("d={};", self.domain),
            format!("s={};", self.selector),
            format!("t={t};"),
        ] {
            header.atom(&tag, true);
        }
        let last = names.len() - 1;
        for (i, name) in names.iter().enumerate() {
            match i {
                0 if i == last => header.atom(&format!("h={name};"), true),
                0 => header.atom(&format!("h={name}:"), true),
                _ if i == last => header.atom(&format!("{name};"), false),
                _ => header.atom(&format!("{name}:"), false),
            }
        }
        header.atom(&format!("bh={};", b64.encode(body_hash)), true);
        header.atom("b=", true);

        let mut data = Vec::new();
        for field in select(&fields, &names) {
            data.extend(relaxed_header(field));
            data.extend_from_slice(b"\r\n");
        }
        data.extend(relaxed_header(header.text.as_bytes()));
        let signature = b64.encode(self.key.sign(&data)?);
        header.fill(&signature);

        header.text.push_str("\r\n");
        Ok(header.text)
    }
}

/// Checks that `domain` (`d=`) and `selector` (`s=`) are DNS names in ASCII, which also
/// keeps them from adding tags; the error names the profile key.
pub fn check_names(domain: &str, selector: &str) -> std::result::Result<(), String> {
    for (what, value) in [("dkim_domain", domain), ("dkim_selector", selector)] {
        if !is_dns_name(value) {
            return Err(format!(
                "{what} {value:?} must be a DNS name in ASCII (letters, digits, '-', '_' and \
                 dots; an international domain in its xn-- form)"
            ));
        }
    }
    Ok(())
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A header written line by line, folded before an atom that would pass [`MAX_LINE`].
struct Folder {
    text: String,
    line: usize,
}

impl Folder {
    fn new(start: &str) -> Folder {
        Folder {
            text: start.to_owned(),
            line: start.len(),
        }
    }

    /// Appends `atom`, after a space when `spaced`, or on a new line when it would not fit.
    fn atom(&mut self, atom: &str, spaced: bool) {
        let need = atom.len() + usize::from(spaced);
        if self.line + need > MAX_LINE && self.line > 1 {
            self.text.push_str("\r\n ");
            self.line = 1;
        } else if spaced {
            self.text.push(' ');
            self.line += 1;
        }
        self.text.push_str(atom);
        self.line += atom.len();
    }

    /// Appends `value` (ASCII, no spaces) filling each line, folding where it is full.
    fn fill(&mut self, value: &str) {
        let mut rest = value;
        while !rest.is_empty() {
            let room = MAX_LINE.saturating_sub(self.line);
            if room == 0 {
                self.text.push_str("\r\n ");
                self.line = 1;
                continue;
            }
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.text.push_str(now);
            self.line += now.len();
            rest = later;
        }
    }
}

/// The header fields of `message` (each with its continuation lines, without the final
/// CRLF) and its body (after the empty line; empty when there is none).
fn split(message: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut field_start: Option<usize> = None;
    let mut at = 0;
    while at < message.len() {
        let end = find_crlf(&message[at..]).map(|i| at + i);
        let line_end = end.unwrap_or(message.len());
        let line = &message[at..line_end];
        if line.is_empty() {
            if let Some(start) = field_start.take() {
                fields.push(&message[start..at - 2]);
            }
            return (fields, &message[(line_end + 2).min(message.len())..]);
        }
        let continues = matches!(line[0], b' ' | b'\t');
        if !continues {
            if let Some(start) = field_start.take() {
                fields.push(&message[start..at - 2]);
            }
            field_start = Some(at);
        }
        at = match end {
            Some(end) => end + 2,
            None => message.len(),
        };
        if end.is_none()
            && let Some(start) = field_start.take()
        {
            fields.push(&message[start..line_end]);
        }
    }
    if let Some(start) = field_start {
        fields.push(&message[start..message.len().saturating_sub(2).max(start)]);
    }
    (fields, &[])
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// A field's name as written (before the colon, trailing whitespace removed).
fn field_name(field: &[u8]) -> &[u8] {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    trim_end_wsp(&field[..colon])
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_end_wsp(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., last] = bytes
        && is_wsp(*last)
    {
        bytes = rest;
    }
    bytes
}

/// The fields `names` sign, in that order: for each name the last instance not yet used
/// (RFC 6376 §5.4.2); a name with none left (an oversigned one) adds nothing.
fn select<'m>(fields: &[&'m [u8]], names: &[String]) -> Vec<&'m [u8]> {
    let mut used = vec![false; fields.len()];
    let mut out = Vec::new();
    for name in names {
        let found = (0..fields.len())
            .rev()
            .find(|&i| !used[i] && field_name(fields[i]).eq_ignore_ascii_case(name.as_bytes()));
        if let Some(i) = found {
            used[i] = true;
            out.push(fields[i]);
        }
    }
    out
}

/// A header field in the relaxed form (RFC 6376 §3.4.2), without the CRLF: the name in
/// lower case, the value unfolded, each run of whitespace one space, none at either end
/// or around the colon.
fn relaxed_header(field: &[u8]) -> Vec<u8> {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    let mut out: Vec<u8> = trim_end_wsp(&field[..colon]).to_ascii_lowercase();
    out.push(b':');
    let value = field.get(colon + 1..).unwrap_or_default();
    let mut pending_space = false;
    let mut started = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => pending_space = true,
            _ => {
                if pending_space && started {
                    out.push(b' ');
                }
                pending_space = false;
                started = true;
                out.push(b);
            }
        }
    }
    out
}

/// The body in the relaxed form (RFC 6376 §3.4.4), given to `out` piece by piece as the
/// body comes in pieces (attached files are read a chunk at a time): each run of
/// whitespace one space, none at the end of a line, no empty lines at the end, and a
/// last line ending in CRLF; an empty body (or one of empty lines only) gives nothing.
struct RelaxedBody<F: FnMut(&[u8])> {
    out: F,
    /// The start of a line that a piece ended in (a CRLF may be split between pieces).
    partial: Vec<u8>,
    /// Empty lines held back until a line with text follows: trailing ones never do.
    empty_lines: usize,
    /// One canonical line, reused.
    line_out: Vec<u8>,
}

impl<F: FnMut(&[u8])> RelaxedBody<F> {
    fn new(out: F) -> RelaxedBody<F> {
        RelaxedBody {
            out,
            partial: Vec::new(),
            empty_lines: 0,
            line_out: Vec::new(),
        }
    }

    /// Takes the next piece of the body.
    fn update(&mut self, mut piece: &[u8]) {
        if !self.partial.is_empty() {
            let (end, next) =
                if self.partial.last() == Some(&b'\r') && piece.first() == Some(&b'\n') {
                    self.partial.pop();
                    (0, 1)
                } else {
                    match find_crlf(piece) {
                        Some(i) => (i, i + 2),
                        None => {
                            self.partial.extend_from_slice(piece);
                            return;
                        }
                    }
                };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&piece[..end]);
            self.line(&line);
            line.clear();
            self.partial = line;
            piece = &piece[next..];
        }
        while let Some(i) = find_crlf(piece) {
            self.line(&piece[..i]);
            piece = &piece[i + 2..];
        }
        self.partial.extend_from_slice(piece);
    }

    /// Ends the body: a last line without CRLF counts as a line.
    fn finish(mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
    }

    fn line(&mut self, line: &[u8]) {
        self.line_out.clear();
        let mut pending_space = false;
        for &b in line {
            if is_wsp(b) {
                pending_space = true;
            } else {
                if pending_space {
                    self.line_out.push(b' ');
                }
                pending_space = false;
                self.line_out.push(b);
            }
        }
        if self.line_out.is_empty() {
            self.empty_lines += 1;
            return;
        }
        for _ in 0..self.empty_lines {
            (self.out)(b"\r\n");
        }
        self.empty_lines = 0;
        (self.out)(&self.line_out);
        (self.out)(b"\r\n");
    }
}

/// So an attached file's base64 can be written straight into the hash.
impl<F: FnMut(&[u8])> std::io::Write for RelaxedBody<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ED25519, UnparsedPublicKey};

    /// `message` signed, as bytes.
    fn signed(signer: &Signer, message: &[u8], now: SystemTime) -> Result<Vec<u8>> {
        signer.sign(message.to_vec().into(), now)?.to_vec()
    }

    /// The relaxed body, collected; the same whether the body comes whole or in pieces
    /// of any size.
    fn relaxed(body: &[u8]) -> Vec<u8> {
        let in_pieces = |size: usize| {
            let mut out = Vec::new();
            let mut canonical = RelaxedBody::new(|piece: &[u8]| out.extend_from_slice(piece));
            for piece in body.chunks(size) {
                canonical.update(piece);
            }
            canonical.finish();
            out
        };
        let whole = in_pieces(body.len().max(1));
        for size in 1..body.len() {
            assert_eq!(in_pieces(size), whole, "pieces of {size}");
        }
        whole
    }

    /// RFC 8463 Appendix A.2: the signed message (its two signatures dropped).
    const RFC8463_MESSAGE: &str = "From: Joe SixPack <joe@football.example.com>\r\n\
        To: Suzie Q <suzie@shopping.example.net>\r\n\
        Subject: Is dinner ready?\r\n\
        Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n\
        Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n\
        \r\n\
        Hi.\r\n\
        \r\n\
        We lost the game.  Are you hungry yet?\r\n\
        \r\n\
        Joe.\r\n";

    /// RFC 8463 Appendix A.3: the ed25519-sha256 signature header as published.
    const RFC8463_SIGNATURE: &str = "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n \
        d=football.example.com; i=@football.example.com;\r\n \
        q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n \
        subject : date : message-id : from : subject : date;\r\n \
        bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n \
        b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n \
        Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==";

    /// RFC 8463 Appendix A.1 (RFC 8032 §7.1 test 1): the Ed25519 private key (its seed).
    const RFC8463_SEED: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
    const RFC8463_PUBLIC: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    /// The seed as the PKCS#8 PEM `openssl genpkey -algorithm ed25519` writes.
    fn rfc8463_pem() -> String {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend(b64(RFC8463_SEED));
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
    }

    fn tag<'a>(header: &'a str, name: &str) -> &'a str {
        let unfolded = header.split_once(':').unwrap().1;
        unfolded
            .split(';')
            .map(str::trim)
            .find_map(|t| t.strip_prefix(&format!("{name}=")))
            .unwrap()
    }

    /// A verifier of our own for the unit tests (the integration tests use dkimpy):
    /// recomputes bh= and checks b= with `public`.
    fn verify_ed25519(signed: &[u8], public: &[u8]) -> bool {
        let (fields, body) = split(signed);
        let sig = std::str::from_utf8(fields[0]).unwrap();
        let unfolded: String = sig.replace("\r\n", "");
        let bh = base64::engine::general_purpose::STANDARD.encode(digest(&SHA256, &relaxed(body)));
        if tag(&unfolded, "bh") != bh {
            return false;
        }
        let names: Vec<String> = tag(&unfolded, "h")
            .split(':')
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        let b_at = sig.rfind("b=").unwrap();
        let signature = b64(&sig[b_at + 2..].replace(['\r', '\n', ' ', '\t'], ""));
        let mut data = Vec::new();
        for f in select(&fields[1..], &names) {
            data.extend(relaxed_header(f));
            data.extend_from_slice(b"\r\n");
        }
        data.extend(relaxed_header(&fields[0][..b_at + 2]));
        UnparsedPublicKey::new(&ED25519, public)
            .verify(digest(&SHA256, &data).as_ref(), &signature)
            .is_ok()
    }

    #[test]
    fn rfc8463_body_hash_and_key() {
        let (_, body) = split(RFC8463_MESSAGE.as_bytes());
        let bh = base64::engine::general_purpose::STANDARD.encode(digest(&SHA256, &relaxed(body)));
        assert_eq!(bh, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
        let key = DkimKey::from_pem(rfc8463_pem().as_bytes()).unwrap();
        assert_eq!(key.algorithm(), "ed25519-sha256");
        assert_eq!(
            key.dns_record(),
            format!("v=DKIM1; k=ed25519; p={RFC8463_PUBLIC}")
        );
    }

    /// Known answer: the RFC's own ed25519 signature, recomputed with its key over the
    /// RFC's message by this module's canonicalization and header selection.
    #[test]
    fn rfc8463_ed25519_signature_is_reproduced() {
        let signed = format!("{RFC8463_SIGNATURE}\r\n{RFC8463_MESSAGE}");
        let key = DkimKey::from_pem(rfc8463_pem().as_bytes()).unwrap();
        let (fields, _) = split(signed.as_bytes());
        let sig = fields[0];
        let b_at = RFC8463_SIGNATURE.rfind("b=").unwrap();
        let names: Vec<String> = "from:to:subject:date:message-id:from:subject:date"
            .split(':')
            .map(str::to_owned)
            .collect();
        let mut data = Vec::new();
        for f in select(&fields[1..], &names) {
            data.extend(relaxed_header(f));
            data.extend_from_slice(b"\r\n");
        }
        data.extend(relaxed_header(&sig[..b_at + 2]));
        let ours = base64::engine::general_purpose::STANDARD.encode(key.sign(&data).unwrap());
        let published = RFC8463_SIGNATURE[b_at + 2..].replace(['\r', '\n', ' '], "");
        assert_eq!(ours, published);
        assert!(verify_ed25519(signed.as_bytes(), &b64(RFC8463_PUBLIC)));
    }

    /// RFC 8463 Appendix A.3's rsa-sha256 signature (a 1024-bit key, which ring verifies
    /// but will not sign with) checks this module's canonicalization a second way, and
    /// the record's SubjectPublicKeyInfo is what [`rsa_spki`] makes of the bare key.
    #[test]
    fn rfc8463_rsa_signature_verifies() {
        const SIGNATURE: &str = "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n \
            d=football.example.com; i=@football.example.com;\r\n \
            q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n \
            date : message-id : from : subject : date;\r\n \
            bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n \
            b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n \
            DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n \
            dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=";
        const SPKI: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6\
            Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6l\
            HvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";
        let spki = b64(SPKI);
        // SEQUENCE { AlgorithmIdentifier, BIT STRING { 0 unused bits, RSAPublicKey } }.
        let pkcs1 = &spki[22..];
        assert_eq!(rsa_spki(pkcs1), spki);

        let signed = format!("{SIGNATURE}\r\n{RFC8463_MESSAGE}");
        let (fields, _) = split(signed.as_bytes());
        let b_at = SIGNATURE.rfind("b=").unwrap();
        let names: Vec<String> = "from:to:subject:date:message-id:from:subject:date"
            .split(':')
            .map(str::to_owned)
            .collect();
        let mut data = Vec::new();
        for f in select(&fields[1..], &names) {
            data.extend(relaxed_header(f));
            data.extend_from_slice(b"\r\n");
        }
        data.extend(relaxed_header(&fields[0][..b_at + 2]));
        let signature = b64(&SIGNATURE[b_at + 2..].replace(['\r', '\n', ' '], ""));
        let key = UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            pkcs1,
        );
        assert!(key.verify(&data, &signature).is_ok());
        data[0] ^= 1;
        assert!(key.verify(&data, &signature).is_err());
    }

    #[test]
    fn a_signed_message_verifies_and_an_altered_one_does_not() {
        let key = DkimKey::from_pem(rfc8463_pem().as_bytes()).unwrap();
        let signer = Signer::new("Football.Example.com", "brisbane", key).unwrap();
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1528637909);
        let signed = signed(&signer, RFC8463_MESSAGE.as_bytes(), now).unwrap();
        let text = String::from_utf8(signed.clone()).unwrap();
        let header = &text[..text.find("\r\nFrom:").unwrap()];
        assert!(
            header.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"),
            "{header}"
        );
        assert!(header.lines().all(|l| l.len() <= MAX_LINE), "{header}");
        let unfolded = header.replace("\r\n", "");
        assert_eq!(tag(&unfolded, "d"), "football.example.com");
        assert_eq!(tag(&unfolded, "t"), "1528637909");
        assert_eq!(tag(&unfolded, "c"), "relaxed/relaxed");
        assert_eq!(
            tag(&unfolded, "h").replace(' ', ""),
            "from:to:subject:date:message-id:from"
        );
        assert_eq!(
            tag(&unfolded, "bh"),
            "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
        );
        assert!(text.ends_with(RFC8463_MESSAGE));
        let public = b64(RFC8463_PUBLIC);
        assert!(verify_ed25519(&signed, &public));

        let altered = text.replace("hungry", "Hungry");
        assert!(!verify_ed25519(altered.as_bytes(), &public));
        let second_from =
            text.replace("\r\nFrom: ", "\r\nFrom: Mallory <m@evil.example>\r\nFrom: ");
        assert!(!verify_ed25519(second_from.as_bytes(), &public));
        // What relays may do: refold a header, add trailing whitespace.
        let refolded = text
            .replace("\r\nSubject: Is", "\r\nSubject:\r\n\t  Is")
            .replace("Joe.\r\n", "Joe.  \r\n\r\n");
        assert!(verify_ed25519(refolded.as_bytes(), &public));
    }

    /// Any bytes after a From line sign without a panic, and the canonical body never
    /// ends in an empty line.
    #[test]
    fn arbitrary_messages_do_not_panic() {
        let key = DkimKey::from_pem(rfc8463_pem().as_bytes()).unwrap();
        let signer = Signer::new("example.com", "s", key).unwrap();
        let alphabet = b"ab: \t\r\n\r\n\xff";
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..2000 {
            let len = rng.usize(0..60);
            let tail: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(0..alphabet.len())])
                .collect();
            let mut message = b"From: a@example.com\r\n".to_vec();
            message.extend(&tail);
            let signed = signed(&signer, &message, SystemTime::now()).unwrap();
            assert!(signed.ends_with(&message));
            let body = relaxed(&tail);
            assert!(!body.ends_with(b"\r\n\r\n"), "{tail:?}");
        }
    }

    /// RFC 6376 §3.4.6's example, relaxed/relaxed.
    #[test]
    fn rfc6376_canonicalization_example() {
        let message = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
        let (fields, body) = split(message);
        let headers: Vec<u8> = fields
            .iter()
            .flat_map(|f| [relaxed_header(f), b"\r\n".to_vec()].concat())
            .collect();
        assert_eq!(headers, b"a:X\r\nb:Y Z\r\n");
        assert_eq!(relaxed(body), b" C\r\nD E\r\n");
    }

    #[test]
    fn relaxed_header_form() {
        assert_eq!(
            relaxed_header(b"SubJect :  a \t b  \r\n\t c  "),
            b"subject:a b c"
        );
        assert_eq!(relaxed_header(b"X:"), b"x:");
    }

    #[test]
    fn relaxed_body_form() {
        assert_eq!(relaxed(b" a  \t b \r\n\r\n\r\n"), b" a b\r\n");
        assert_eq!(relaxed(b""), b"");
        assert_eq!(relaxed(b"\r\n\r\n"), b"");
        assert_eq!(relaxed(b"no break"), b"no break\r\n");
        assert_eq!(relaxed(b"a\r\n \t \r\n"), b"a\r\n");
        assert_eq!(relaxed(b"a\r\n  \r\nb"), b"a\r\n\r\nb\r\n");
        assert_eq!(relaxed(b"a\r\n\r\nb\r\n"), b"a\r\n\r\nb\r\n");
    }

    #[test]
    fn fields_split_and_select() {
        let (fields, body) = split(b"A: 1\r\nB: 2\r\n  more\r\nA: 3\r\n\r\nbody");
        assert_eq!(fields, [&b"A: 1"[..], b"B: 2\r\n  more", b"A: 3"]);
        assert_eq!(body, b"body");
        let names: Vec<String> = ["a", "a", "a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            select(&fields, &names),
            [&b"A: 3"[..], b"A: 1", b"B: 2\r\n  more"]
        );
        let (fields, body) = split(b"A: 1\r\nB: 2\r\n");
        assert_eq!(fields, [&b"A: 1"[..], b"B: 2"]);
        assert_eq!(body, b"");
        let (fields, body) = split(b"A: 1\r\n\r\n");
        assert_eq!(fields, [&b"A: 1"[..]]);
        assert_eq!(body, b"");
    }

    #[test]
    fn a_message_without_from_is_refused() {
        let key = DkimKey::from_pem(rfc8463_pem().as_bytes()).unwrap();
        let signer = Signer::new("example.com", "s", key).unwrap();
        let err = signed(&signer, b"Subject: x\r\n\r\nbody\r\n", SystemTime::now()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn names_and_keys_are_checked() {
        let key = || DkimKey::from_pem(rfc8463_pem().as_bytes()).unwrap();
        for (domain, selector) in [
            ("exa mple.com", "s"),
            ("bücher.example", "s"),
            ("example.com", "s;x=1"),
            ("example.com", ""),
            ("example..com", "s"),
        ] {
            assert!(
                Signer::new(domain, selector, key()).is_err(),
                "{domain} {selector}"
            );
        }
        assert!(Signer::new("mail.example.com", "2026_01-a", key()).is_ok());
        for (pem, why) in [
            ("not a key", "no PEM block"),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                "\"EC PRIVATE KEY\"",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "not an RSA or Ed25519",
            ),
        ] {
            let err = DkimKey::from_pem(pem.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{pem}: {err}");
        }
    }

    #[test]
    fn long_signatures_fold_within_78() {
        let mut header = Folder::new("DKIM-Signature:");
        header.atom("v=1;", true);
        header.atom("b=", true);
        header.fill(&"A".repeat(344));
        assert!(
            header.text.split("\r\n").all(|l| l.len() <= MAX_LINE),
            "{}",
            header.text
        );
        assert_eq!(header.text.replace("\r\n ", "").matches('A').count(), 344);
    }
}
