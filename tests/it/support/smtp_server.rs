//! An in-process SMTP server for integration tests.
//!
//! The `mailin` crate is the protocol state machine: it parses every command line and decides
//! every reply. This module only wires sockets and rustls (STARTTLS and implicit TLS) around it,
//! supplies the `mailin::Handler` (credential check, configured RCPT refusals, recording), and
//! records what the client sent. Blocking std threads: one accept thread, one per connection.
//!
//! `tests/it/support/mod.rs` declares it next to `certs` (this file refers to `super::certs`):
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
//! - A handler error at the final dot leaves mailin in its DATA state (every later line would be
//!   message content), so the DATA tempfail fault lets mailin accept and rewrites the reply.
//!
//! Fault injection (the `ServerOptions` fields from `tempfail_transactions` on, all off by
//! default) is kept apart from the protocol: mailin still parses every line, and the faults only
//! replace, delay or withhold replies, or close the socket. The settings live in [`Faults`];
//! the hooks are marked `Fault:` in the code. `ehlo_extra` is not a fault but a reply rewrite:
//! the extra keywords are appended to mailin's EHLO reply, and the MAIL FROM parameters the
//! server then advertises (`SMTPUTF8`, `SIZE=`, plus `BODY=`) are stripped before mailin sees the
//! line and recorded in [`Received::mail_params`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
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
/// Longest time a connection is kept open without replies (silent greeting, hang after DATA)
/// when neither the client closes it nor the server is dropped.
const HANG_LIMIT: Duration = Duration::from_secs(30);
/// How often waits (hangs, reply delays) check whether the server was dropped.
const POLL: Duration = Duration::from_millis(20);

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
    /// Extra EHLO keywords, appended to mailin's list in order (e.g. `"SMTPUTF8"`,
    /// `"SIZE 1000"`). Advertising `SMTPUTF8` (or `SIZE`) also makes the server accept that
    /// MAIL FROM parameter; see [`Received::mail_params`]. `SIZE` is advertised, not enforced.
    pub ehlo_extra: Vec<String>,

    // ----- Fault injection (all off by default) -----
    /// Fault: the first N MAIL FROM commands that would be accepted (counted across all
    /// connections) are answered `451 4.3.0 try again later`; later ones behave normally.
    pub tempfail_transactions: usize,
    /// Fault: like `tempfail_transactions` (and counted after them), but the 451 says
    /// `4.7.1 rate limit exceeded, slow down`, as a throttling provider does.
    pub throttle_transactions: usize,
    /// Fault: the final dot of the first N transactions (across all connections) is answered
    /// `451 4.3.0 try again later` and the message is not recorded anywhere.
    pub tempfail_data_transactions: usize,
    /// Fault: after N accepted RCPTs in one transaction, further RCPTs are answered
    /// `452 4.5.3 too many recipients` (RFC 5321 §4.5.3.1.10) and are not accepted.
    pub max_rcpts_per_transaction: Option<usize>,
    /// Fault: accept the connection (and, for implicit TLS, complete the handshake) but never
    /// send the greeting.
    pub silent_greeting: bool,
    /// Fault: after the final dot, never answer. The message is recorded in
    /// [`TestServer::unacknowledged`]; the socket stays open until the client closes it, the
    /// server is dropped, or 30 s pass.
    pub hang_after_data: bool,
    /// Fault: close the connection right after the first line following `354` (nothing is
    /// recorded as delivered).
    pub drop_during_data: bool,
    /// Fault: read the whole message and the final dot, record it in
    /// [`TestServer::unacknowledged`] (not `messages()`), then close without replying.
    /// Takes precedence over `hang_after_data`.
    pub drop_after_final_dot: bool,
    /// Fault: a command with this verb (ASCII case-insensitive, e.g. `"MAIL"`, `"RCPT"`,
    /// `"DATA"`, `"EHLO"`) is answered `421 4.3.2 shutting down` and the connection is closed,
    /// on every connection. The command is recorded in the transcript but not processed.
    pub reply_421_at: Option<&'static str>,
    /// Fault: once N messages were delivered on a connection, its next MAIL is answered
    /// `421 4.3.2 shutting down` and the connection is closed (a provider cutting long
    /// sessions).
    pub reply_421_after_messages: Option<usize>,
    /// Fault: right after answering the final dot of the Nth message of a connection, the
    /// server closes it without a word (an idle or session-length cut).
    pub close_after_messages: Option<usize>,
    /// Fault: when STARTTLS is answered with 220, these bytes are written in the same write
    /// right after the 220 line, before the handshake (STARTTLS response injection,
    /// CVE-2021-22947 class), e.g. `b"250-evil\r\n250 AUTH PLAIN\r\n"`.
    pub inject_after_starttls: Option<Vec<u8>>,
    /// Fault: wait this long before every reply, greeting included.
    pub delay_replies: Option<Duration>,
    /// Fault: the EHLO reply is written one byte at a time, this long before each byte (a
    /// server, or someone in between, that drips its answer to hold the client).
    pub drip_ehlo: Option<Duration>,
    /// Fault: wait this long before the greeting alone (a server that delays it to
    /// catch spam software that talks first).
    pub delay_greeting: Option<Duration>,
    /// Listen on this address instead of 127.0.0.1 on a free port (a well-known port such
    /// as 465, on an address of the loopback range no other test uses).
    pub listen: Option<SocketAddr>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            security: Security::Plain,
            auth: None,
            advertise_starttls: true,
            refuse_rcpt: Vec::new(),
            pki: None,
            ehlo_extra: Vec::new(),
            tempfail_transactions: 0,
            throttle_transactions: 0,
            tempfail_data_transactions: 0,
            max_rcpts_per_transaction: None,
            silent_greeting: false,
            hang_after_data: false,
            drop_during_data: false,
            drop_after_final_dot: false,
            reply_421_at: None,
            reply_421_after_messages: None,
            close_after_messages: None,
            inject_after_starttls: None,
            delay_replies: None,
            drip_ehlo: None,
            delay_greeting: None,
            listen: None,
        }
    }
}

/// One mail transaction: in [`TestServer::messages`] the final dot was answered with 250; in
/// [`TestServer::unacknowledged`] the server got the final dot but never replied.
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
    /// MAIL FROM parameters as sent (e.g. `"SMTPUTF8"`, `"BODY=8BITMIME"`), in order.
    pub mail_params: Vec<String>,
    /// When the final dot arrived (for rate limits: gaps between messages, never totals).
    pub at: Instant,
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
        let advertised = |keyword: &str| {
            opts.ehlo_extra.iter().any(|extra| {
                extra
                    .split_whitespace()
                    .next()
                    .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
            })
        };
        let config = Arc::new(Config {
            implicit_tls: opts.security == Security::ImplicitTls,
            starttls_offered,
            plaintext_auth: opts.security == Security::Plain || !starttls_offered,
            accept_smtputf8_param: advertised("SMTPUTF8"),
            accept_size_param: advertised("SIZE"),
            auth: opts.auth,
            refuse_rcpt: opts.refuse_rcpt,
            ehlo_extra: opts.ehlo_extra,
            tls_config,
            faults: Faults {
                tempfail_transactions: opts.tempfail_transactions,
                throttle_transactions: opts.throttle_transactions,
                tempfail_data_transactions: opts.tempfail_data_transactions,
                max_rcpts_per_transaction: opts.max_rcpts_per_transaction,
                silent_greeting: opts.silent_greeting,
                hang_after_data: opts.hang_after_data,
                drop_during_data: opts.drop_during_data,
                drop_after_final_dot: opts.drop_after_final_dot,
                reply_421_at: opts.reply_421_at,
                reply_421_after_messages: opts.reply_421_after_messages,
                close_after_messages: opts.close_after_messages,
                inject_after_starttls: opts.inject_after_starttls,
                delay_replies: opts.delay_replies,
                delay_greeting: opts.delay_greeting,
                drip_ehlo: opts.drip_ehlo,
            },
        });

        let listen = opts
            .listen
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("bind {listen}: {e}"));
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

    /// Completed DATA transactions (final dot answered 250), in completion order.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.records().messages.clone()
    }

    /// Transactions whose final dot the server received but never answered
    /// (`drop_after_final_dot`, `hang_after_data`), in arrival order. The client cannot know
    /// whether these were delivered.
    pub fn unacknowledged(&self) -> Vec<Received> {
        self.shared.records().unacknowledged.clone()
    }

    /// Every command line the client sent, in arrival order across connections, with the
    /// trailing CRLF removed (a line that ended in a bare LF keeps its `\n`). DATA content and
    /// its terminating `.` are excluded; AUTH commands and SASL continuation lines (base64) are
    /// included verbatim. Bytes a client pipelined after STARTTLS are discarded unread (and
    /// noted in [`errors`](Self::errors)); so is whatever a client sends while the server hangs
    /// (`silent_greeting`, `hang_after_data`).
    pub fn transcript(&self) -> Vec<String> {
        self.shared.records().transcript.clone()
    }

    /// The address each accepted connection came from, in order: a proxy's when the
    /// client went through one.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.shared.records().peers.clone()
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
    /// `SMTPUTF8` is in `ehlo_extra`, so the MAIL parameter is accepted.
    accept_smtputf8_param: bool,
    /// `SIZE` is in `ehlo_extra`, so the MAIL parameter `SIZE=<n>` is accepted.
    accept_size_param: bool,
    auth: Option<(String, String)>,
    refuse_rcpt: Vec<(String, u16)>,
    ehlo_extra: Vec<String>,
    tls_config: Option<Arc<ServerConfig>>,
    faults: Faults,
}

/// Deliberate misbehaviour; see the same-named fields of [`ServerOptions`].
#[derive(Clone, Debug, Default)]
struct Faults {
    tempfail_transactions: usize,
    throttle_transactions: usize,
    tempfail_data_transactions: usize,
    max_rcpts_per_transaction: Option<usize>,
    silent_greeting: bool,
    hang_after_data: bool,
    drop_during_data: bool,
    drop_after_final_dot: bool,
    reply_421_at: Option<&'static str>,
    reply_421_after_messages: Option<usize>,
    close_after_messages: Option<usize>,
    inject_after_starttls: Option<Vec<u8>>,
    delay_replies: Option<Duration>,
    delay_greeting: Option<Duration>,
    drip_ehlo: Option<Duration>,
}

impl Faults {
    fn tempfail() -> Response {
        Response::custom(451, "4.3.0 try again later".to_owned())
    }

    fn too_many_recipients() -> Response {
        Response::custom(452, "4.5.3 too many recipients".to_owned())
    }

    fn shutting_down() -> Response {
        Response::custom(421, "4.3.2 shutting down".to_owned())
    }

    /// Whether the final dot goes unanswered (the message is then "unacknowledged").
    fn withholds_data_reply(&self) -> bool {
        self.drop_after_final_dot || self.hang_after_data
    }
}

#[derive(Default)]
struct Records {
    messages: Vec<Received>,
    unacknowledged: Vec<Received>,
    transcript: Vec<String>,
    errors: Vec<String>,
    peers: Vec<SocketAddr>,
}

#[derive(Default)]
struct Shared {
    records: Mutex<Records>,
    connections: AtomicUsize,
    /// MAIL commands that reached the handler, across connections (for the tempfail fault).
    mail_commands: AtomicUsize,
    /// Final dots that reached the handler, across connections (for the DATA tempfail fault).
    data_ends: AtomicUsize,
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
        if let Ok(peer) = stream.peer_addr() {
            shared.records().peers.push(peer);
        }
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

    /// The underlying TCP socket.
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// Closes the TCP connection abruptly (no reply, no TLS close_notify).
    fn abort(&self) {
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
}

/// What the handler decided at the final dot, for the read loop to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataOutcome {
    /// Recorded in `messages`; reply normally.
    Delivered,
    /// Fault: recorded nowhere; reply 451 instead of mailin's 250.
    TempFailed,
    /// Fault: recorded in `unacknowledged`; do not reply.
    Unacknowledged,
}

/// Per-connection state shared between the read loop and the mailin handler.
#[derive(Default)]
struct ConnState {
    tls: bool,
    authenticated_as: Option<String>,
    /// Parameters stripped from the MAIL line being processed; committed by `Handler::mail`.
    pending_mail_params: Vec<String>,
    mail_params: Vec<String>,
    /// RCPTs accepted in the current transaction.
    rcpts_accepted: usize,
    mail_from: String,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
    raw_data: Vec<u8>,
    data_outcome: Option<DataOutcome>,
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
    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> Response {
        let faults = &self.config.faults;
        // Fault: tempfail the first N transactions at MAIL.
        let n = self.shared.mail_commands.fetch_add(1, Ordering::SeqCst);
        if n < faults.tempfail_transactions {
            return Faults::tempfail();
        }
        // Fault: throttle the next N at MAIL.
        if n < faults.tempfail_transactions + faults.throttle_transactions {
            return Response::custom(451, "4.7.1 rate limit exceeded, slow down".to_owned());
        }
        let mut conn = self.conn.borrow_mut();
        conn.mail_params = std::mem::take(&mut conn.pending_mail_params);
        conn.rcpts_accepted = 0;
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let mut conn = self.conn.borrow_mut();
        // Fault: recipient limit per transaction.
        if let Some(max) = self.config.faults.max_rcpts_per_transaction
            && conn.rcpts_accepted >= max
        {
            return Faults::too_many_recipients();
        }
        let refusal = self
            .config
            .refuse_rcpt
            .iter()
            .find(|(addr, _)| addr.eq_ignore_ascii_case(to));
        match refusal {
            Some((_, code)) => {
                Response::custom(*code, format!("<{to}> refused by test server (configured)"))
            }
            None => {
                conn.rcpts_accepted += 1;
                response::OK
            }
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        let mut conn = self.conn.borrow_mut();
        conn.mail_from = from.replace('\u{1}', " ");
        conn.rcpt_to = to.iter().map(|t| t.replace('\u{1}', " ")).collect();
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
            mail_params: std::mem::take(&mut conn.mail_params),
            at: Instant::now(),
        };
        let faults = &self.config.faults;
        // Always OK to mailin (an error would leave it in the DATA state); the read loop
        // replaces or withholds the reply according to the outcome.
        let outcome = if self.shared.data_ends.fetch_add(1, Ordering::SeqCst)
            < faults.tempfail_data_transactions
        {
            DataOutcome::TempFailed
        } else if faults.withholds_data_reply() {
            self.shared.records().unacknowledged.push(received);
            DataOutcome::Unacknowledged
        } else {
            self.shared.records().messages.push(received);
            DataOutcome::Delivered
        };
        conn.data_outcome = Some(outcome);
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
/// interact badly with Nagle's algorithm and delayed ACKs), after the `delay_replies` fault.
fn write_reply(
    stream: &mut Stream,
    bytes: &[u8],
    config: &Config,
    shared: &Shared,
) -> Result<(), String> {
    // Fault: slow server.
    if let Some(delay) = config.faults.delay_replies
        && !pause(shared, delay)
    {
        return Err("server dropped while a reply was delayed".to_owned());
    }
    stream
        .write_all(bytes)
        .and_then(|()| stream.flush())
        .map_err(|e| format!("write failed: {e}"))
}

/// Writes a mailin response; see [`write_reply`].
fn write_response(
    stream: &mut Stream,
    res: &Response,
    config: &Config,
    shared: &Shared,
) -> Result<(), String> {
    let bytes = res.buffer().map_err(|e| format!("format reply: {e}"))?;
    write_reply(stream, &bytes, config, shared)
}

/// Sleeps for `duration` unless the server is dropped first; returns whether it slept fully.
fn pause(shared: &Shared, duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep((deadline - now).min(POLL));
    }
}

/// Fault: keeps the connection open without ever replying, discarding whatever the client
/// sends, until the client closes it, the server is dropped, or [`HANG_LIMIT`] passes.
fn hang(stream: &Stream, shared: &Shared) {
    let deadline = Instant::now() + HANG_LIMIT;
    let mut tcp = stream.tcp();
    let mut buf = [0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // Raw TCP even under TLS: the bytes are thrown away anyway.
        if tcp
            .set_read_timeout(Some((deadline - now).min(POLL * 5)))
            .is_err()
        {
            break;
        }
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
}

/// Strips one trailing CRLF for the transcript (a bare LF is kept so tests can see it).
fn transcript_line(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

/// The command verb of a line (first word, ASCII upper-cased).
fn verb(line: &[u8]) -> String {
    let end = line
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).to_ascii_uppercase()
}

/// Appends `extra` keywords to a (multi-line) 250 EHLO reply.
fn ehlo_with_extras(reply: &[u8], extra: &[String]) -> Vec<u8> {
    let text = String::from_utf8_lossy(reply);
    let mut lines: Vec<&str> = text.lines().map(|l| l.get(4..).unwrap_or("")).collect();
    lines.extend(extra.iter().map(String::as_str));
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        let _ = write!(out, "250{sep}{line}\r\n");
    }
    out.into_bytes()
}

/// Splits the parameters off a `MAIL FROM:<path> params...\r\n` line when the server accepts
/// all of them: `BODY=7BIT|8BITMIME` always (mailin advertises 8BITMIME), `SMTPUTF8` and
/// `SIZE=<n>` when advertised through `ehlo_extra`. Returns the line mailin should see and the
/// parameters, or `None` to pass the line on unchanged (no parameters, or one mailin should
/// reject).
fn split_mail_params(line: &[u8], config: &Config) -> Option<(Vec<u8>, Vec<String>)> {
    const PREFIX: &[u8] = b"MAIL FROM:<";
    let body = line.strip_suffix(b"\r\n")?;
    if body.len() < PREFIX.len() || !body[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let close = PREFIX.len() + body[PREFIX.len()..].iter().position(|&b| b == b'>')?;
    let rest = std::str::from_utf8(&body[close + 1..]).ok()?;
    if rest.is_empty() || !rest.starts_with(' ') {
        return None;
    }
    let params: Vec<String> = rest
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    let accepted = |param: &str| {
        let (keyword, value) = param.split_once('=').unwrap_or((param, ""));
        if keyword.eq_ignore_ascii_case("BODY") {
            value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME")
        } else if keyword.eq_ignore_ascii_case("SMTPUTF8") {
            config.accept_smtputf8_param && !param.contains('=')
        } else if keyword.eq_ignore_ascii_case("SIZE") {
            config.accept_size_param
                && !value.is_empty()
                && value.bytes().all(|b| b.is_ascii_digit())
        } else {
            false
        }
    };
    if params.is_empty() || !params.iter().all(|p| accepted(p)) {
        return None;
    }
    let mut stripped = body[..=close].to_vec();
    stripped.extend_from_slice(b"\r\n");
    Some((stripped, params))
}

/// mailin's path ends at a space, so the spaces of a quoted local part (`"john doe"@x`,
/// RFC 5321 §4.1.2) reach it as U+0001; `data_start` puts them back.
fn hide_quoted_spaces(line: &mut [u8]) {
    let mut quoted = false;
    for b in line.iter_mut() {
        match *b {
            b'"' => quoted = !quoted,
            b' ' if quoted => *b = 1,
            _ => {}
        }
    }
}

/// Serves one client until QUIT, disconnect, timeout, error or a fault that ends it.
fn serve(tcp: TcpStream, config: &Arc<Config>, shared: &Arc<Shared>) -> Result<(), String> {
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| tcp.set_nodelay(true))
        .map_err(|e| format!("set socket timeouts: {e}"))?;
    let peer_ip = tcp
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let faults = &config.faults;

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
    // Fault: no greeting.
    if faults.silent_greeting {
        hang(reader.get_ref(), shared);
        return Ok(());
    }
    if let Some(delay) = faults.delay_greeting {
        thread::sleep(delay);
    }
    write_response(reader.get_mut(), &session.greeting(), config, shared)?;

    let mut in_data = false;
    // Messages delivered on this connection (for the session-cut faults).
    let mut delivered_here = 0;
    loop {
        let Some(mut line) = read_line(&mut reader)? else {
            return Ok(());
        };
        // Fault: connection lost in the middle of the message.
        if in_data && faults.drop_during_data {
            reader.get_ref().abort();
            return Ok(());
        }
        let data_end = in_data && line == b".\r\n";
        let verb = if in_data { String::new() } else { verb(&line) };
        if !in_data {
            shared.records().transcript.push(transcript_line(&line));
            // Fault: 421 and close at a given command.
            let cut = verb == "MAIL"
                && faults
                    .reply_421_after_messages
                    .is_some_and(|n| delivered_here >= n);
            if cut
                || faults
                    .reply_421_at
                    .is_some_and(|v| v.eq_ignore_ascii_case(&verb))
            {
                let result =
                    write_response(reader.get_mut(), &Faults::shutting_down(), config, shared);
                reader.get_mut().close();
                return result;
            }
            if verb == "MAIL" {
                let params = match split_mail_params(&line, config) {
                    Some((stripped, params)) => {
                        line = stripped;
                        params
                    }
                    None => Vec::new(),
                };
                conn.borrow_mut().pending_mail_params = params;
            }
            if verb == "MAIL" || verb == "RCPT" {
                hide_quoted_spaces(&mut line);
            }
        } else if !data_end {
            conn.borrow_mut().raw_data.extend_from_slice(&line);
        }

        let res = session.process(&line);

        if data_end {
            in_data = false;
            match conn.borrow_mut().data_outcome.take() {
                // Fault: tempfail at the final dot (mailin itself accepted it).
                Some(DataOutcome::TempFailed) => {
                    write_response(reader.get_mut(), &Faults::tempfail(), config, shared)?;
                    continue;
                }
                // Fault: the final dot is never answered.
                Some(DataOutcome::Unacknowledged) => {
                    if faults.drop_after_final_dot {
                        reader.get_ref().abort();
                    } else {
                        hang(reader.get_ref(), shared);
                    }
                    return Ok(());
                }
                Some(DataOutcome::Delivered) | None => {
                    if res.code == 250 {
                        delivered_here += 1;
                    }
                    // Fault: the session is cut right after this message's 250.
                    if faults.close_after_messages == Some(delivered_here) {
                        write_response(reader.get_mut(), &res, config, shared)?;
                        reader.get_mut().close();
                        return Ok(());
                    }
                }
            }
        } else if !in_data && res.code == 354 {
            in_data = true;
        }

        match res.action {
            Action::NoReply => {}
            // Fault: the EHLO reply drips.
            Action::Reply if verb == "EHLO" && faults.drip_ehlo.is_some() => {
                let bytes = res.buffer().map_err(|e| format!("format reply: {e}"))?;
                let bytes = ehlo_with_extras(&bytes, &config.ehlo_extra);
                let pause_per_byte = faults.drip_ehlo.unwrap_or_default();
                for byte in bytes {
                    if !pause(shared, pause_per_byte) {
                        return Err("server dropped while a reply dripped".to_owned());
                    }
                    let stream = reader.get_mut();
                    if stream
                        .write_all(&[byte])
                        .and_then(|()| stream.flush())
                        .is_err()
                    {
                        // The client gave up: what a dripping server is for.
                        return Ok(());
                    }
                }
            }
            Action::Reply if verb == "EHLO" && res.code == 250 && !config.ehlo_extra.is_empty() => {
                let bytes = res.buffer().map_err(|e| format!("format reply: {e}"))?;
                let bytes = ehlo_with_extras(&bytes, &config.ehlo_extra);
                write_reply(reader.get_mut(), &bytes, config, shared)?;
            }
            Action::Reply => write_response(reader.get_mut(), &res, config, shared)?,
            Action::Close => {
                let result = write_response(reader.get_mut(), &res, config, shared);
                reader.get_mut().close();
                return result;
            }
            Action::UpgradeTls => {
                if !config.starttls_offered || conn.borrow().tls {
                    // mailin bug workaround, see the module documentation.
                    let refusal = Response::custom(454, "4.7.0 TLS not available".to_owned());
                    write_response(reader.get_mut(), &refusal, config, shared)?;
                    continue;
                }
                let mut bytes = res.buffer().map_err(|e| format!("format reply: {e}"))?;
                // Fault: STARTTLS response injection, in the same write as the 220.
                if let Some(injected) = &faults.inject_after_starttls {
                    bytes.extend_from_slice(injected);
                }
                write_reply(reader.get_mut(), &bytes, config, shared)?;
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
