//! The byte stream under a session: TCP, then maybe TLS, with a read buffer envoi owns.
//!
//! Owning the buffer is what makes STARTTLS safe: after the server's `220` envoi can see
//! whether any byte is still unread — bytes sent before the handshake, which a man in the
//! middle may have written — and refuse to go on (RFC 3207 §6). lettre's connection keeps
//! such bytes and reads them as if they had come over TLS.

use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::reply::{MAX_LINE, Reply, ReplyParser};

/// A failure on the wire: the socket's, or the server breaking the protocol.
#[derive(Debug)]
pub(crate) enum WireError {
    /// Connecting, reading or writing failed (a timeout included).
    Io(io::Error),
    /// The server sent something that is not SMTP, or too much of it.
    Protocol(String),
    /// The TLS handshake got plain text back: the server's first line (an SMTP
    /// greeting, most likely), made printable. The port does not speak implicit TLS.
    PlainTextNotTls(String),
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> WireError {
        WireError::Io(e)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// One connection to a server.
pub(crate) struct Conn {
    stream: Stream,
    /// Bytes read from the stream and not yet taken as a reply line.
    unread: Vec<u8>,
    /// The read and write timeout the socket has, so that setting the same one again
    /// (every command of a batch) costs no system call.
    timeout: Option<Duration>,
}

/// How much the DATA writer gathers before each write: large writes, few syscalls.
const WRITE_BUFFER: usize = 64 * 1024;

impl Conn {
    /// Connects to the first address of `host:port` that answers within `timeout`.
    pub(crate) fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<Conn> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
        for address in (host, port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&address, timeout) {
                Ok(tcp) => {
                    // Commands wait for their replies anyway; never let Nagle hold a tail.
                    tcp.set_nodelay(true)?;
                    return Ok(Conn {
                        stream: Stream::Plain(tcp),
                        unread: Vec::new(),
                        timeout: None,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }

    /// Bounds every following read and write.
    pub(crate) fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = Some(timeout.max(Duration::from_millis(1)));
        if timeout != self.timeout {
            // Forgotten first: after a failure the socket's timeouts are unknown.
            self.timeout = None;
            self.tcp().set_read_timeout(timeout)?;
            self.tcp().set_write_timeout(timeout)?;
            self.timeout = timeout;
        }
        Ok(())
    }

    /// The address connected to.
    pub(crate) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.tcp().peer_addr().ok()
    }

    /// The TLS version and cipher suite, once TLS is up.
    pub(crate) fn tls(&self) -> Option<(String, String)> {
        let Stream::Tls(tls) = &self.stream else {
            return None;
        };
        let version = tls.conn.protocol_version().map(|v| format!("{v:?}"))?;
        let suite = tls
            .conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))?;
        Some((version.replace('_', "."), suite))
    }

    /// The server's own certificate (DER), once TLS is up.
    pub(crate) fn peer_certificate(&self) -> Option<Vec<u8>> {
        let Stream::Tls(tls) = &self.stream else {
            return None;
        };
        Some(tls.conn.peer_certificates()?.first()?.as_ref().to_vec())
    }

    /// True when the server sent bytes that no reply has taken yet.
    pub(crate) fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }

    /// Performs the TLS handshake for `name` over this (plain) connection; from then on
    /// everything goes through TLS.
    pub(crate) fn upgrade(
        &mut self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<(), WireError> {
        let Stream::Plain(tcp) = &self.stream else {
            return Err(WireError::Protocol("TLS inside TLS".into()));
        };
        // A second handle to the same socket (timeouts included) for the TLS stream.
        let mut tcp = tcp.try_clone()?;
        let mut tls =
            ClientConnection::new(config, name).map_err(|e| WireError::Io(io::Error::other(e)))?;
        let mut watched = FirstBytes {
            tcp: &mut tcp,
            seen: Vec::new(),
        };
        while tls.is_handshaking() {
            if let Err(e) = tls.complete_io(&mut watched) {
                return Err(match watched.plain_text_line() {
                    Some(line) => WireError::PlainTextNotTls(line),
                    None => WireError::Io(e),
                });
            }
        }
        self.stream = Stream::Tls(Box::new(StreamOwned::new(tls, tcp)));
        Ok(())
    }

    /// Writes `bytes` and flushes them.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// A writer for a large payload: gathered into big writes; flush it when done.
    pub(crate) fn writer(&mut self) -> BufWriter<impl Write + '_> {
        BufWriter::with_capacity(WRITE_BUFFER, &mut self.stream)
    }

    /// Reads one whole reply, never holding more than [`MAX_LINE`] octets of one line.
    pub(crate) fn read_reply(&mut self) -> Result<Reply, WireError> {
        let mut parser = ReplyParser::default();
        loop {
            if let Some(end) = self.unread.iter().position(|b| *b == b'\n') {
                if end + 1 > MAX_LINE {
                    return Err(too_long());
                }
                let mut line: Vec<u8> = self.unread.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                match parser.line(&line) {
                    Ok(Some(reply)) => return Ok(reply),
                    Ok(None) => continue,
                    Err(why) => return Err(WireError::Protocol(why)),
                }
            }
            if self.unread.len() >= MAX_LINE {
                return Err(too_long());
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(WireError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
            self.unread.extend_from_slice(&chunk[..n]);
        }
    }

    /// Ends the connection at once, without a word: after a timeout or an error, a QUIT
    /// would only wait again.
    pub(crate) fn shutdown(&self) {
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
}

/// The socket during a handshake, keeping the first bytes the server sent: when the
/// handshake fails they tell a plain-text SMTP greeting (`220 …`) from a broken TLS
/// server, so "wrong security for this port" can be said in words.
struct FirstBytes<'a> {
    tcp: &'a mut TcpStream,
    seen: Vec<u8>,
}

/// How much of the server's first bytes is kept: one greeting line's worth.
const FIRST_BYTES: usize = 128;

impl FirstBytes<'_> {
    /// The first line, when the server sent text that starts as an SMTP reply does
    /// (three digits, then a space, a hyphen or the end); TLS records never do.
    fn plain_text_line(&self) -> Option<String> {
        let digits = self.seen.get(..3)?;
        let after = self.seen.get(3).copied();
        if !digits.iter().all(u8::is_ascii_digit)
            || !matches!(after, None | Some(b' ' | b'-' | b'\r'))
        {
            return None;
        }
        let line = self.seen.split(|b| *b == b'\n').next().unwrap_or_default();
        let text = String::from_utf8_lossy(line);
        Some(super::printable(text.trim_end()))
    }
}

impl Read for FirstBytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        let room = FIRST_BYTES.saturating_sub(self.seen.len());
        self.seen.extend_from_slice(&buf[..n.min(room)]);
        Ok(n)
    }
}

impl Write for FirstBytes<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

fn too_long() -> WireError {
    WireError::Protocol(format!("a reply line longer than {MAX_LINE} octets"))
}
