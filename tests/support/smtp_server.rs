//! An in-process SMTP server for integration tests.
//!
//! The `mailin` crate is the protocol state machine: it parses every command line and decides
//! every reply. This module only wires sockets and rustls (STARTTLS and implicit TLS) around it,
//! supplies the `mailin::Handler` (credential check, configured RCPT refusals, recording), and
//! records what the client sent. Blocking std threads: one accept thread, one per connection.
//!
//! Use it from a test binary with `mod support;` (`tests/support/mod.rs` declares `certs` and
//! `smtp_server`), or with `#[path]` declarations of both files side by side at the crate root
//! (this file refers to `super::certs`):
//!
//! ```ignore
//! let server = TestServer::start(ServerOptions::default());
//! // ... run the client against 127.0.0.1:server.port() ...
//! assert!(server.wait_idle(Duration::from_secs(5)));
//! assert_eq!(server.messages()[0].rcpt_to, ["bob@example.com"]);
//! ```
//!
//! Behaviour of mailin 0.6.5 that tests should know about:
//! - Lines must end in CRLF. A command ending in a bare LF is answered `500 Syntax error`; a DATA
//!   line ending in a bare LF is stored as is; the DATA terminator is only `.\r\n`.
//! - DATA lines reach the handler one line at a time with their line ending and with one leading
//!   `.` removed (un-dot-stuffing); the terminator is not passed on.
//! - EHLO advertises only `8BITMIME`, `STARTTLS` (when offered) and `AUTH PLAIN LOGIN` (when
//!   allowed). No SIZE, PIPELINING, SMTPUTF8, DSN or ENHANCEDSTATUSCODES.
//! - `MAIL FROM:` accepts only a non-empty path plus an optional `BODY=7BIT|8BITMIME`; a null
//!   reverse path `<>` or any other parameter (SIZE=, SMTPUTF8, RET=) is a `500 Syntax error`.
//!   `RCPT TO:` accepts no parameters at all.
//! - When AUTH is enabled it is mandatory: MAIL before a successful AUTH gets `503`, and HELO
//!   gets `550 Bad HELO`. After AUTH, RSET or a new EHLO makes mailin require AUTH again.
//! - AUTH is advertised and accepted only over TLS, unless `insecure_enable_plaintext_auth()`
//!   is set; this harness sets it whenever the connection will not be TLS (see
//!   [`ServerOptions::auth`]).
//! - In the post-EHLO state of an AUTH-enabled session mailin answers STARTTLS with "220 Ready
//!   to start TLS" even when STARTTLS was never offered (or TLS is already active). The harness
//!   overrides that one case with `454 4.7.0 TLS not available` instead of upgrading.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder, response};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::certs::TestPki;

/// Read/write timeout on every accepted socket, so a stuck client cannot hang a test.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest line (command or DATA line, ending included) read before the connection is closed.
const MAX_LINE: usize = 1024 * 1024;
/// Name used in the greeting.
const SERVER_NAME: &str = "localhost";

/// How the client must reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plaintext only; STARTTLS is never offered.
    Plain,
    /// Plaintext greeting, STARTTLS offered (unless `advertise_starttls` is false).
    StartTls,
    /// TLS handshake right after accept (SMTPS, "port 465" style).
    ImplicitTls,
}

/// Configuration for [`TestServer::start`].
#[derive(Clone)]
pub struct ServerOptions {
    /// Transport security.
    pub security: Security,
    /// Accepted `(username, password)`. When set, AUTH PLAIN and LOGIN are enabled and AUTH is
    /// required before MAIL. AUTH is advertised after TLS when the connection will be TLS
    /// (StartTls with STARTTLS offered: only after the upgrade; ImplicitTls: at once). When the
    /// connection stays plaintext (Plain, or StartTls with `advertise_starttls: false`) AUTH is
    /// advertised and accepted in plaintext, like a misconfigured or downgrading server, so a
    /// test can prove the client refuses to send credentials there.
    pub auth: Option<(String, String)>,
    /// Offer STARTTLS (only meaningful for [`Security::StartTls`]). `false` simulates a server
    /// (or a stripping attacker) without STARTTLS: a client that requires TLS must give up.
    pub advertise_starttls: bool,
    /// `RCPT TO:<addr>` for a listed address (ASCII case-insensitive) is answered with the
    /// given code; every other recipient is accepted.
    pub refuse_rcpt: Vec<(String, u16)>,
    /// Certificate to serve; required for StartTls and ImplicitTls.
    pub pki: Option<Arc<TestPki>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            security: Security::Plain,
            auth: None,
            advertise_starttls: true,
            refuse_rcpt: Vec::new(),
            pki: None,
        }
    }
}

/// One completed mail transaction (the final dot was answered with 250).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Reverse-path as the client gave it, without `<>`.
    pub mail_from: String,
    /// Accepted forward-paths in order, without `<>`.
    pub rcpt_to: Vec<String>,
    /// Message bytes after un-dot-stuffing, line endings as sent, without the terminator.
    pub data: Vec<u8>,
    /// DATA bytes exactly as on the wire (dot-stuffing included), without the terminator.
    pub raw_data: Vec<u8>,
    /// Username of a successful AUTH on this connection, if any.
    pub authenticated_as: Option<String>,
    /// Whether the transaction happened over TLS.
    pub tls: bool,
}

/// A running in-process SMTP server on `127.0.0.1`; stops accepting when dropped.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and starts the accept loop in a background thread.
    ///
    /// Panics if a TLS mode is requested without `pki`.
    pub fn start(opts: ServerOptions) -> TestServer {
        let tls_config = match (opts.security, &opts.pki) {
            (Security::Plain, _) => None,
            (_, Some(pki)) => Some(pki.server_config()),
            (security, None) => panic!("ServerOptions::pki is required for {security:?}"),
        };
        let starttls_offered = opts.security == Security::StartTls && opts.advertise_starttls;
        let config = Arc::new(Config {
            implicit_tls: opts.security == Security::ImplicitTls,
            starttls_offered,
            plaintext_auth: opts.security == Security::Plain || !starttls_offered,
            auth: opts.auth,
            refuse_rcpt: opts.refuse_rcpt,
            tls_config,
        });

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address of listener");
        let shared = Arc::new(Shared::default());
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("smtp-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, config, accept_shared))
            .expect("spawn accept thread");
        TestServer {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Completed DATA transactions, in completion order.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.records().messages.clone()
    }

    /// Every command line the client sent, in arrival order across connections, with the
    /// trailing CRLF removed (a line that ended in a bare LF keeps its `\n`). DATA content and
    /// its terminating `.` are excluded; AUTH commands and SASL continuation lines (base64) are
    /// included verbatim. Bytes a client pipelined after STARTTLS are discarded unread (and
    /// noted in [`errors`](Self::errors)).
    pub fn transcript(&self) -> Vec<String> {
        self.shared.records().transcript.clone()
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connection-level problems seen so far: TLS handshake failures (e.g. a client rejecting
    /// the certificate), I/O errors, timeouts, over-long lines, bytes discarded at STARTTLS.
    /// A clean disconnect is not an error.
    pub fn errors(&self) -> Vec<String> {
        self.shared.records().errors.clone()
    }

    /// Waits until no connection is being served, at most `timeout`; returns whether that
    /// happened. Call it after the client finished, before reading the transcript of a
    /// connection's last lines (e.g. QUIT) or [`errors`](Self::errors).
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut active = lock(&self.shared.active);
        while *active > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            active = self
                .shared
                .idle
                .wait_timeout(active, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the loop sees the flag; join only if that worked.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok()
            && let Some(handle) = self.accept_thread.take()
        {
            let _ = handle.join();
        }
        // End connections still open so their threads exit instead of waiting for a timeout.
        for stream in lock(&self.shared.live).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.wait_idle(Duration::from_secs(2));
    }
}

//----- Shared state ------------------------------------------------------------------------

/// Settings derived from [`ServerOptions`], shared by all connections.
struct Config {
    implicit_tls: bool,
    starttls_offered: bool,
    plaintext_auth: bool,
    auth: Option<(String, String)>,
    refuse_rcpt: Vec<(String, u16)>,
    tls_config: Option<Arc<ServerConfig>>,
}

#[derive(Default)]
struct Records {
    messages: Vec<Received>,
    transcript: Vec<String>,
    errors: Vec<String>,
}

#[derive(Default)]
struct Shared {
    records: Mutex<Records>,
    connections: AtomicUsize,
    next_id: AtomicU64,
    stop: AtomicBool,
    /// Clones of open sockets, to shut them down when the server is dropped.
    live: Mutex<HashMap<u64, TcpStream>>,
    /// Number of connection threads still running.
    active: Mutex<usize>,
    idle: Condvar,
}

impl Shared {
    fn records(&self) -> MutexGuard<'_, Records> {
        lock(&self.records)
    }

    fn error(&self, msg: String) {
        self.records().errors.push(msg);
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test must not cascade into the harness).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks a connection finished however its thread ends (return or panic).
struct ActiveGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        lock(&self.shared.live).remove(&self.id);
        *lock(&self.shared.active) -= 1;
        self.shared.idle.notify_all();
    }
}

//----- Accept loop ---------------------------------------------------------------------------

fn accept_loop(listener: TcpListener, config: Arc<Config>, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                shared.error(format!("accept failed: {e}"));
                // Avoid spinning on a persistent error such as fd exhaustion.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.live).insert(id, clone);
        }
        *lock(&shared.active) += 1;
        let guard = ActiveGuard {
            shared: Arc::clone(&shared),
            id,
        };
        let config = Arc::clone(&config);
        let spawned = thread::Builder::new()
            .name(format!("smtp-conn-{id}"))
            .spawn(move || {
                let shared = Arc::clone(&guard.shared);
                if let Err(e) = serve(stream, &config, &shared) {
                    shared.error(format!("connection {id}: {e}"));
                }
                drop(guard);
            });
        if let Err(e) = spawned {
            // The closure (and with it the guard) was dropped, so the counters are consistent.
            shared.error(format!("spawn connection thread: {e}"));
        }
    }
}

//----- One connection ------------------------------------------------------------------------

/// A plaintext or TLS socket.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Stream {
    /// Sends a TLS close_notify if applicable; errors are irrelevant at this point.
    fn close(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}

/// Per-connection state shared between the read loop and the mailin handler.
#[derive(Default)]
struct ConnState {
    tls: bool,
    authenticated_as: Option<String>,
    mail_from: String,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
    raw_data: Vec<u8>,
}

/// The mailin handler: checks credentials, injects refusals, records transactions.
struct ConnHandler {
    conn: Rc<RefCell<ConnState>>,
    config: Arc<Config>,
    shared: Arc<Shared>,
}

impl ConnHandler {
    fn login(&mut self, username: &str, password: &str) -> Response {
        match &self.config.auth {
            Some((user, pass)) if user == username && pass == password => {
                self.conn.borrow_mut().authenticated_as = Some(username.to_owned());
                response::AUTH_OK
            }
            _ => response::INVALID_CREDENTIALS,
        }
    }
}

impl Handler for ConnHandler {
    fn rcpt(&mut self, to: &str) -> Response {
        let refusal = self
            .config
            .refuse_rcpt
            .iter()
            .find(|(addr, _)| addr.eq_ignore_ascii_case(to));
        match refusal {
            Some((_, code)) => {
                Response::custom(*code, format!("<{to}> refused by test server (configured)"))
            }
            None => response::OK,
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        let mut conn = self.conn.borrow_mut();
        conn.mail_from = from.to_owned();
        conn.rcpt_to = to.to_vec();
        conn.data.clear();
        conn.raw_data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.conn.borrow_mut().data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        // Recorded before the 250 is written, so a client that has seen the 250 can rely on
        // messages() containing the transaction.
        let mut conn = self.conn.borrow_mut();
        let received = Received {
            mail_from: std::mem::take(&mut conn.mail_from),
            rcpt_to: std::mem::take(&mut conn.rcpt_to),
            data: std::mem::take(&mut conn.data),
            raw_data: std::mem::take(&mut conn.raw_data),
            authenticated_as: conn.authenticated_as.clone(),
            tls: conn.tls,
        };
        self.shared.records().messages.push(received);
        response::OK
    }

    fn auth_plain(
        &mut self,
        authorization_id: &str,
        authentication_id: &str,
        password: &str,
    ) -> Response {
        if !authorization_id.is_empty() && authorization_id != authentication_id {
            return response::INVALID_CREDENTIALS;
        }
        self.login(authentication_id, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.login(username, password)
    }
}

/// Runs the TLS handshake to completion on `tcp`.
fn tls_handshake(
    tcp: TcpStream,
    config: &Config,
) -> Result<StreamOwned<ServerConnection, TcpStream>, String> {
    let tls_config = config
        .tls_config
        .clone()
        .ok_or_else(|| "TLS requested without a server certificate".to_owned())?;
    let conn = ServerConnection::new(tls_config).map_err(|e| format!("TLS setup: {e}"))?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
    }
    Ok(tls)
}

/// Reads one line ending in LF (or the rest of the stream), at most [`MAX_LINE`] bytes.
/// `Ok(None)` means the client closed the connection at a line boundary.
fn read_line(reader: &mut BufReader<Stream>) -> Result<Option<Vec<u8>>, String> {
    let mut line = Vec::new();
    match reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
    {
        Ok(0) => Ok(None),
        Ok(_) if line.ends_with(b"\n") => Ok(Some(line)),
        Ok(n) if n >= MAX_LINE => Err(format!("line longer than {MAX_LINE} bytes")),
        Ok(n) => Err(format!(
            "client closed the connection mid-line after {n} bytes"
        )),
        // A TLS peer that closes the socket without close_notify, at a line boundary.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && line.is_empty() => Ok(None),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(format!("read timed out after {IO_TIMEOUT:?}"))
        }
        Err(e) => Err(format!("read failed: {e}")),
    }
}

/// Writes a reply in one piece (mailin's `write_to` issues many small writes, which would
/// interact badly with Nagle's algorithm and delayed ACKs).
fn write_response(stream: &mut Stream, res: &Response) -> Result<(), String> {
    res.buffer()
        .and_then(|bytes| stream.write_all(&bytes))
        .and_then(|()| stream.flush())
        .map_err(|e| format!("write failed: {e}"))
}

/// Strips one trailing CRLF for the transcript (a bare LF is kept so tests can see it).
fn transcript_line(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

/// Serves one client until QUIT, disconnect, timeout or error.
fn serve(tcp: TcpStream, config: &Arc<Config>, shared: &Arc<Shared>) -> Result<(), String> {
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| tcp.set_nodelay(true))
        .map_err(|e| format!("set socket timeouts: {e}"))?;
    let peer_ip = tcp
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));

    let conn = Rc::new(RefCell::new(ConnState::default()));
    let mut builder = SessionBuilder::new(SERVER_NAME);
    if config.starttls_offered {
        builder.enable_start_tls();
    }
    if config.auth.is_some() {
        builder
            .enable_auth(AuthMechanism::Plain)
            .enable_auth(AuthMechanism::Login);
        if config.plaintext_auth {
            builder.insecure_enable_plaintext_auth();
        }
    }
    let handler = ConnHandler {
        conn: Rc::clone(&conn),
        config: Arc::clone(config),
        shared: Arc::clone(shared),
    };
    let mut session = builder.build(peer_ip, handler);

    let stream = if config.implicit_tls {
        let tls = tls_handshake(tcp, config)?;
        conn.borrow_mut().tls = true;
        session.tls_active();
        Stream::Tls(Box::new(tls))
    } else {
        Stream::Plain(tcp)
    };
    let mut reader = BufReader::new(stream);
    write_response(reader.get_mut(), &session.greeting())?;

    let mut in_data = false;
    loop {
        let Some(line) = read_line(&mut reader)? else {
            return Ok(());
        };
        let data_end = in_data && line == b".\r\n";
        if !in_data {
            shared.records().transcript.push(transcript_line(&line));
        } else if !data_end {
            conn.borrow_mut().raw_data.extend_from_slice(&line);
        }

        let res = session.process(&line);

        if data_end {
            in_data = false;
        } else if !in_data && res.code == 354 {
            in_data = true;
        }

        match res.action {
            Action::NoReply => {}
            Action::Reply => write_response(reader.get_mut(), &res)?,
            Action::Close => {
                let result = write_response(reader.get_mut(), &res);
                reader.get_mut().close();
                return result;
            }
            Action::UpgradeTls => {
                if !config.starttls_offered || conn.borrow().tls {
                    // mailin bug workaround, see the module documentation.
                    let refusal = Response::custom(454, "4.7.0 TLS not available".to_owned());
                    write_response(reader.get_mut(), &refusal)?;
                    continue;
                }
                write_response(reader.get_mut(), &res)?;
                let pipelined = reader.buffer().len();
                if pipelined > 0 {
                    shared.error(format!(
                        "discarded {pipelined} bytes sent after STARTTLS before the handshake"
                    ));
                }
                // into_inner() drops whatever the BufReader had buffered.
                let Stream::Plain(tcp) = reader.into_inner() else {
                    return Err("STARTTLS on a TLS stream".to_owned());
                };
                let tls = tls_handshake(tcp, config)?;
                conn.borrow_mut().tls = true;
                session.tls_active();
                reader = BufReader::new(Stream::Tls(Box::new(tls)));
            }
        }
    }
}
