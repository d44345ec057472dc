//! The byte stream under a session: TCP, then maybe TLS, with a read buffer envoi owns.
//!
//! Owning the buffer is what makes STARTTLS safe: after the server's `220` envoi can see
//! whether any byte is still unread — bytes sent before the handshake, which a man in the
//! middle may have written — and refuse to go on (RFC 3207 §6). lettre's connection keeps
//! such bytes and reads them as if they had come over TLS.

use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::reply::{MAX_LINE, Reply, ReplyParser};
use crate::deliver::net::{self, ReachError, Via};

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
    /// A TLS record came where the plain-text greeting was expected (a TLS alert, most
    /// likely): the port speaks implicit TLS.
    TlsNotPlainText,
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> WireError {
        WireError::Io(e)
    }
}

/// The inner error of an [`io::Error`] (kind `TimedOut`) when the operation's deadline
/// passed in the middle of a read or write: told apart from a plain timeout so the
/// message can say which limit was reached.
#[derive(Debug)]
pub(crate) struct DeadlinePassed;

impl std::fmt::Display for DeadlinePassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the deadline passed while the server was still answering")
    }
}

impl std::error::Error for DeadlinePassed {}

/// Whether `e` is the operation's deadline passing (rather than one step's timeout).
pub(crate) fn is_deadline(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<DeadlinePassed>().is_some())
}

/// How far a socket timeout may be from what is left before the step must end before
/// it is set again: a dripping server costs one `setsockopt` per this much, not per
/// byte, and a reply one only now and then, at the price of a step ending at most this
/// much early or late.
const SLACK: Duration = Duration::from_millis(50);

/// The time limits of a connection: a step (one reply, one TLS handshake) must end
/// within the command timeout, and everything within the operation's deadline.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// The longest one step may take (`timeout_secs`).
    timeout: Duration,
    /// When the whole operation must be over (`--timeout`, a record's or an entry's).
    deadline: Option<Instant>,
    /// When the step in progress must be over; `None` between steps, when each write
    /// may take `timeout` (a large message is written in many).
    step_ends: Option<Instant>,
}

impl Bounds {
    /// What is left before the next read or write must end; an error once nothing is.
    fn left(&self) -> io::Result<Duration> {
        let now = Instant::now();
        let mut until = self.step_ends.unwrap_or(now + self.timeout);
        if let Some(deadline) = self.deadline {
            until = until.min(deadline);
        }
        match until.checked_duration_since(now) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(self.out_of_time()),
        }
    }

    /// The error for a read or write that ran out of time: the deadline's when it has
    /// passed (give or take the slack of the socket timeout), else a plain timeout.
    fn out_of_time(&self) -> io::Error {
        if self.deadline.is_some_and(|d| Instant::now() + SLACK >= d) {
            io::Error::new(io::ErrorKind::TimedOut, DeadlinePassed)
        } else {
            io::Error::from(io::ErrorKind::TimedOut)
        }
    }

    /// A socket timeout that elapsed is reported as [`Bounds::out_of_time`] says.
    fn timed<T>(&self, result: io::Result<T>) -> io::Result<T> {
        match result {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(self.out_of_time())
            }
            other => other,
        }
    }

    /// [`Bounds::timed`] for an error alone.
    fn timed_error(&self, e: io::Error) -> io::Error {
        match self.timed::<()>(Err(e)) {
            Err(e) => e,
            Ok(()) => io::Error::from(io::ErrorKind::TimedOut),
        }
    }
}

/// The TCP socket, bounding every read and write by its [`Bounds`]. The bound is set
/// before each system call, so a server that sends one byte at a time cannot stretch
/// it (a socket timeout alone restarts with every byte). TLS runs over this, so its
/// record reads, and the handshake, are bounded the same way.
struct Socket {
    tcp: TcpStream,
    bounds: Bounds,
    /// The read and write timeouts the socket has now.
    read_set: Option<Duration>,
    write_set: Option<Duration>,
}

impl Socket {
    fn new(tcp: TcpStream, bounds: Bounds) -> Socket {
        Socket {
            tcp,
            bounds,
            read_set: None,
            write_set: None,
        }
    }
}

/// Sets `timeout` on the socket through `set` unless what it has now (`current`) is
/// within [`SLACK`] of it.
fn arm(
    current: &mut Option<Duration>,
    timeout: Duration,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let timeout = timeout.max(Duration::from_millis(1));
    if current.is_some_and(|c| c.abs_diff(timeout) <= SLACK) {
        return Ok(());
    }
    // Forgotten first: after a failure the socket's timeout is unknown.
    *current = None;
    set(Some(timeout))?;
    *current = Some(timeout);
    Ok(())
}

/// ACKs at once what was just read, rather than up to 40 ms later.
///
/// Postfix's smtpd writes with Nagle on: after STARTTLS it writes the TLS 1.3 session
/// ticket, then the EHLO reply, and the kernel holds the reply until the ticket is
/// ACKed. Linux delays that ACK (an interactive connection ACKs with its next command),
/// and envoi's next command waits for the reply: 40 ms lost, in most TLS sessions
/// (issue 18, bench scenario 2). `TCP_QUICKACK` is not sticky, so it is set after each
/// read that got bytes; setting it sends the pending ACK. A failure only costs time.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn ack_now(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
}

/// Other systems have no `TCP_QUICKACK`; their delayed ACK is left as it is.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn ack_now(_tcp: &TcpStream) {}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.bounds.left()?;
        let tcp = &self.tcp;
        arm(&mut self.read_set, left, |t| tcp.set_read_timeout(t))?;
        let result = self.tcp.read(buf);
        if matches!(result, Ok(n) if n > 0) {
            ack_now(&self.tcp);
        }
        self.bounds.timed(result)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.bounds.left()?;
        let tcp = &self.tcp;
        arm(&mut self.write_set, left, |t| tcp.set_write_timeout(t))?;
        let result = self.tcp.write(buf);
        self.bounds.timed(result)
    }

    /// rustls hands its queued TLS records over as one slice each: one `writev`, so
    /// they leave in one segment (with `TCP_NODELAY`, each `write` is a segment).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let left = self.bounds.left()?;
        let tcp = &self.tcp;
        arm(&mut self.write_set, left, |t| tcp.set_write_timeout(t))?;
        let result = self.tcp.write_vectored(bufs);
        self.bounds.timed(result)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

enum Stream {
    Plain(Socket),
    Tls(Box<StreamOwned<ClientConnection, Socket>>),
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
}

/// How much the DATA writer gathers before each write: large writes, few syscalls.
const WRITE_BUFFER: usize = 64 * 1024;

impl Conn {
    /// Connects to `host:port` (through `via`, a proxy, when given) by Happy Eyeballs:
    /// each attempt, and a proxy's handshake, within `timeout` and before `deadline`;
    /// from then on each reply, and each write, takes at most `timeout`, and nothing
    /// goes on past `deadline`.
    pub(crate) fn connect(
        host: &str,
        port: u16,
        via: Option<Via<'_>>,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<Conn, ReachError> {
        let bounds = Bounds {
            timeout,
            deadline,
            step_ends: None,
        };
        // The deadline's own error when it is what ended the attempt.
        let timed = |e: ReachError| match e {
            ReachError::Direct(io) => ReachError::Direct(bounds.timed_error(io)),
            ReachError::Proxy(mut proxy) => {
                proxy.cause = proxy.cause.map(|io| bounds.timed_error(io));
                ReachError::Proxy(proxy)
            }
        };
        if let Err(e) = bounds.left() {
            return Err(ReachError::Direct(e));
        }
        let tcp = net::open(host, port, via, timeout, deadline).map_err(timed)?;
        // Commands wait for their replies anyway; never let Nagle hold a tail.
        tcp.set_nodelay(true).map_err(ReachError::Direct)?;
        Ok(Conn {
            stream: Stream::Plain(Socket::new(tcp, bounds)),
            unread: Vec::new(),
        })
    }

    fn socket(&self) -> &Socket {
        match &self.stream {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }

    fn socket_mut(&mut self) -> &mut Socket {
        match &mut self.stream {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => tls.get_mut(),
        }
    }

    fn tcp(&self) -> &TcpStream {
        &self.socket().tcp
    }

    /// From now on nothing goes on past `deadline` (the next message of a batch has its
    /// own).
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.socket_mut().bounds.deadline = deadline;
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
        let Stream::Plain(socket) = &self.stream else {
            return Err(WireError::Protocol("TLS inside TLS".into()));
        };
        // A second handle to the same socket for the TLS stream; the handshake is one
        // step, bounded as a reply is.
        let bounds = Bounds {
            step_ends: Some(Instant::now() + socket.bounds.timeout),
            ..socket.bounds
        };
        let mut socket = Socket::new(socket.tcp.try_clone()?, bounds);
        let mut tls =
            ClientConnection::new(config, name).map_err(|e| WireError::Io(io::Error::other(e)))?;
        let mut watched = FirstBytes {
            socket: &mut socket,
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
        socket.bounds.step_ends = None;
        self.stream = Stream::Tls(Box::new(StreamOwned::new(tls, socket)));
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

    /// Reads one whole reply, never holding more than [`MAX_LINE`] octets of one line,
    /// within one command timeout (however the server spreads its bytes) and before the
    /// deadline.
    pub(crate) fn read_reply(&mut self) -> Result<Reply, WireError> {
        self.read_reply_within(None, false)
    }

    /// Reads the server's greeting as [`Conn::read_reply`] does, but within `window`
    /// when it is shorter than the command timeout; bytes that open a TLS record end it
    /// at once ([`WireError::TlsNotPlainText`]), however few.
    pub(crate) fn read_greeting(&mut self, window: Option<Duration>) -> Result<Reply, WireError> {
        self.read_reply_within(window, true)
    }

    fn read_reply_within(
        &mut self,
        window: Option<Duration>,
        greeting: bool,
    ) -> Result<Reply, WireError> {
        let bounds = &mut self.socket_mut().bounds;
        let step = window.map_or(bounds.timeout, |w| w.min(bounds.timeout));
        bounds.step_ends = Some(Instant::now() + step);
        let reply = self.read_whole_reply(greeting);
        self.socket_mut().bounds.step_ends = None;
        reply
    }

    fn read_whole_reply(&mut self, greeting: bool) -> Result<Reply, WireError> {
        let mut parser = ReplyParser::default();
        loop {
            if greeting && opens_tls_record(&self.unread) {
                return Err(WireError::TlsNotPlainText);
            }
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
            self.fill()?;
        }
    }

    /// Reads one line up to its LF (taken off, with a CR before it), never holding more
    /// than `max` octets of it, within one command timeout and before the deadline: an
    /// IMAP response line (`deliver::imap`).
    pub(crate) fn read_line(&mut self, max: usize) -> Result<Vec<u8>, WireError> {
        self.bounded_step(|conn| {
            loop {
                if let Some(end) = conn.unread.iter().position(|b| *b == b'\n') {
                    if end + 1 > max {
                        return Err(line_too_long(max));
                    }
                    let mut line: Vec<u8> = conn.unread.drain(..=end).collect();
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    return Ok(line);
                }
                if conn.unread.len() >= max {
                    return Err(line_too_long(max));
                }
                conn.fill()?;
            }
        })
    }

    /// Reads exactly `n` octets (an IMAP literal whose size the caller has bounded),
    /// within one command timeout and before the deadline.
    pub(crate) fn read_octets(&mut self, n: usize) -> Result<Vec<u8>, WireError> {
        self.bounded_step(|conn| {
            while conn.unread.len() < n {
                conn.fill()?;
            }
            Ok(conn.unread.drain(..n).collect())
        })
    }

    /// `step` within one command timeout.
    fn bounded_step<T>(
        &mut self,
        step: impl FnOnce(&mut Conn) -> Result<T, WireError>,
    ) -> Result<T, WireError> {
        let bounds = &mut self.socket_mut().bounds;
        bounds.step_ends = Some(Instant::now() + bounds.timeout);
        let done = step(self);
        self.socket_mut().bounds.step_ends = None;
        done
    }

    /// Reads what the server sent next into the buffer; the end of the stream is an error.
    fn fill(&mut self) -> Result<(), WireError> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(WireError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        self.unread.extend_from_slice(&chunk[..n]);
        Ok(())
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
    socket: &'a mut Socket,
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
        Some(super::reply::printable(text.trim_end()))
    }
}

impl Read for FirstBytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        let room = FIRST_BYTES.saturating_sub(self.seen.len());
        self.seen.extend_from_slice(&buf[..n.min(room)]);
        Ok(n)
    }
}

impl Write for FirstBytes<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }

    /// The client's last flight (ChangeCipherSpec and Finished) in one segment.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.socket.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// Whether `bytes` start as a TLS record does: a content type (change cipher spec,
/// alert, handshake, application data) and a major version of 3. No SMTP reply starts
/// with a control character.
fn opens_tls_record(bytes: &[u8]) -> bool {
    matches!(bytes, [0x14..=0x17, 0x03, ..])
}

fn line_too_long(max: usize) -> WireError {
    WireError::Protocol(format!("a response line longer than {max} octets"))
}

fn too_long() -> WireError {
    WireError::Protocol(format!("a reply line longer than {MAX_LINE} octets"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A peer on loopback that writes `220-` and then one byte every 100 ms, never
    /// ending the line; its port.
    fn dripping_peer() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local address").port();
        std::thread::spawn(move || {
            if let Ok((mut peer, _)) = listener.accept() {
                let _ = peer.write_all(b"220-");
                for _ in 0..100 {
                    std::thread::sleep(Duration::from_millis(100));
                    if peer.write_all(b"x").is_err() {
                        break;
                    }
                }
            }
        });
        port
    }

    fn read_from(port: u16, timeout: Duration, deadline: Option<Instant>) -> (io::Error, Duration) {
        let started = Instant::now();
        let mut conn = Conn::connect("127.0.0.1", port, None, timeout, deadline).expect("connect");
        match conn.read_reply() {
            Err(WireError::Io(e)) => (e, started.elapsed()),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    /// A peer on loopback with Nagle on, as Postfix's smtpd is, that answers each
    /// command in two writes (as after STARTTLS it writes a TLS 1.3 session ticket and
    /// then the EHLO reply): the second waits in its kernel until the first is ACKed.
    /// Its port.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn two_write_peer(commands: usize) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local address").port();
        std::thread::spawn(move || {
            let Ok((mut peer, _)) = listener.accept() else {
                return;
            };
            let _ = peer.write_all(b"220 ready\r\n");
            let mut buf = [0u8; 512];
            for _ in 0..commands {
                if !matches!(peer.read(&mut buf), Ok(n) if n > 0) {
                    return;
                }
                let _ = peer.write_all(b"250-first\r\n");
                std::thread::sleep(Duration::from_millis(2));
                let _ = peer.write_all(b"250 second\r\n");
            }
        });
        port
    }

    /// The ~40 ms stall of issue 18 (scenario 2 of bench/README.md): a server's second
    /// small write waits for the ACK of its first, which a client in delayed-ACK mode
    /// holds for 40 ms. envoi ACKs what it reads at once, so no reply waits (where the
    /// system has `TCP_QUICKACK`).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_reply_in_two_writes_does_not_wait_for_a_delayed_ack() {
        const COMMANDS: usize = 6;
        let mut conn = Conn::connect(
            "127.0.0.1",
            two_write_peer(COMMANDS),
            None,
            Duration::from_secs(10),
            None,
        )
        .expect("connect");
        conn.read_greeting(None).expect("greeting");
        let started = Instant::now();
        for _ in 0..COMMANDS {
            conn.send(b"NOOP\r\n").expect("send");
            let reply = conn.read_reply().expect("reply");
            assert_eq!(reply.code, 250);
        }
        let took = started.elapsed();
        // Six replies at 2 ms each without the stall; one 40 ms delayed ACK is enough
        // to fail.
        assert!(
            took < Duration::from_millis(12 * COMMANDS as u64 + 30),
            "{COMMANDS} replies took {took:?}"
        );
    }

    #[test]
    fn a_dripping_reply_cannot_outlast_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(600);
        let (e, took) = read_from(dripping_peer(), Duration::from_secs(30), Some(deadline));
        assert!(is_deadline(&e), "{e}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn a_dripping_reply_cannot_outlast_one_command_timeout() {
        let (e, took) = read_from(dripping_peer(), Duration::from_millis(600), None);
        assert!(
            !is_deadline(&e) && e.kind() == io::ErrorKind::TimedOut,
            "{e}"
        );
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn nothing_starts_after_the_deadline() {
        let past = Instant::now();
        let e = Conn::connect(
            "127.0.0.1",
            dripping_peer(),
            None,
            Duration::from_secs(5),
            Some(past),
        )
        .err()
        .expect("no connection after the deadline");
        let ReachError::Direct(e) = e else {
            panic!("a direct connection's error: {e:?}");
        };
        assert!(is_deadline(&e), "{e}");
    }
}
