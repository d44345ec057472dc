//! A TCP connection to a host name, as RFC 8305 (Happy Eyeballs v2) says for a client
//! that resolves with the system resolver: its addresses ordered with the families
//! interleaved, starting with the first one returned (§4); the next attempt started
//! 250 ms after the previous one (§5), or as soon as it fails; the first to connect
//! kept, the others dropped. Each attempt has its own thread (std has no non-blocking
//! connect with a timeout), so a black-holed first address costs 250 ms, not the
//! connect timeout.
//!
//! Also here: the bounded reads and writes of a proxy's handshake ([`Step`]), and the
//! words of a proxy's failure ([`ProxyError`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::ErrorKind;

/// The Connection Attempt Delay of RFC 8305 §5 (its recommended value).
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// The addresses of `host:port` as the system resolver returns them, then interleaved
/// by family starting with the first one's (RFC 8305 §4, First Address Family Count 1).
pub(crate) fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let found: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if found.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the host name has no address",
        ));
    }
    Ok(interleave(found))
}

/// `found` with the families alternating, each family in its own order, starting with
/// the family of the first address.
fn interleave(found: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v6 = found.first().is_some_and(SocketAddr::is_ipv6);
    let (mut first, mut second): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut ordered = Vec::with_capacity(first.len() + second.len());
    first.reverse();
    second.reverse();
    while !first.is_empty() || !second.is_empty() {
        ordered.extend(first.pop());
        ordered.extend(second.pop());
    }
    ordered
}

/// Connects to one of `addresses` (in that order of preference) by Happy Eyeballs:
/// each attempt may take `timeout`, and nothing goes on past `deadline`. The error, when
/// none connects, is the last attempt's (a timeout when time ran out first).
pub(crate) fn connect(
    addresses: &[SocketAddr],
    timeout: Duration,
    deadline: Option<Instant>,
) -> io::Result<TcpStream> {
    // One address (an IP literal, or a name with one): nothing to race, so no thread.
    if let [address] = addresses {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        let limit = deadline.map_or(timeout, |d| timeout.min(d - now));
        return TcpStream::connect_timeout(address, limit);
    }
    let (done, results) = mpsc::channel::<io::Result<TcpStream>>();
    let mut next = addresses.iter().peekable();
    let mut running = 0usize;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
    // When the next attempt may start, and when the last one started must have ended.
    let mut next_start = Instant::now();
    let mut last_end = Instant::now();
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        if now >= next_start
            && let Some(address) = next.next()
        {
            let limit = deadline.map_or(timeout, |d| timeout.min(d - now));
            let address = *address;
            let done = done.clone();
            // Detached: a late connection is dropped when its send finds no receiver,
            // and an attempt ends by itself within `limit`.
            std::thread::spawn(move || {
                let _ = done.send(TcpStream::connect_timeout(&address, limit));
            });
            running += 1;
            next_start = now + ATTEMPT_DELAY;
            last_end = last_end.max(now + limit);
        }
        if running == 0 && next.peek().is_none() {
            return Err(last);
        }
        // Until an attempt ends, or the next may start; past the last attempt's own
        // limit only by a margin for its thread to report.
        let mut wait_until = if next.peek().is_some() {
            next_start
        } else {
            last_end + REPORT_MARGIN
        };
        if let Some(d) = deadline {
            wait_until = wait_until.min(d);
        }
        match results.recv_timeout(wait_until.saturating_duration_since(now)) {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => {
                running -= 1;
                last = e;
                // A failure lets the next address start at once.
                next_start = Instant::now();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if next.peek().is_none() && Instant::now() >= last_end + REPORT_MARGIN {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
            }
            // Not while `done` is held here; said for completeness.
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(last),
        }
    }
}

/// How long after an attempt's own limit its thread may take to report it.
const REPORT_MARGIN: Duration = Duration::from_millis(200);

/// One step of a proxy's handshake over `tcp`: every read and write bounded by what is
/// left before `ends`, however the proxy spreads its bytes.
pub(super) struct Step<'a> {
    tcp: &'a TcpStream,
    ends: Instant,
}

impl<'a> Step<'a> {
    /// A step over `tcp` that must end within `timeout` and before `deadline`.
    pub(super) fn new(tcp: &'a TcpStream, timeout: Duration, deadline: Option<Instant>) -> Self {
        let mut ends = Instant::now() + timeout;
        if let Some(d) = deadline {
            ends = ends.min(d);
        }
        Step { tcp, ends }
    }

    fn left(&self) -> io::Result<Duration> {
        match self.ends.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(io::Error::from(io::ErrorKind::TimedOut)),
        }
    }
}

/// A socket timeout as what it is: std reports it as `WouldBlock` on Unix.
fn timed_out<T>(result: io::Result<T>) -> io::Result<T> {
    result.map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => io::Error::from(io::ErrorKind::TimedOut),
        _ => e,
    })
}

impl Read for Step<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.left()?))?;
        let mut tcp = self.tcp;
        timed_out(tcp.read(buf))
    }
}

impl Write for Step<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.left()?))?;
        let mut tcp = self.tcp;
        timed_out(tcp.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What went wrong on the way through a proxy, in words that name it, with the socket's
/// error when there was one (its words, and whether the deadline passed, are the
/// caller's to tell).
#[derive(Debug)]
pub(crate) struct ProxyError {
    /// 75 when the proxy cannot be reached or fails on its way, 69 when it refuses the
    /// destination, 77 when it refuses envoi's login.
    pub(crate) kind: ErrorKind,
    /// "the proxy socks5h://127.0.0.1:1080 refused the tunnel to …".
    pub(crate) words: String,
    /// The socket's error that ended it, if one did.
    pub(crate) cause: Option<io::Error>,
}

impl ProxyError {
    /// A failure described by `words`, with no socket error behind it.
    pub(super) fn new(kind: ErrorKind, words: String) -> ProxyError {
        ProxyError {
            kind,
            words,
            cause: None,
        }
    }

    /// The socket failed while `words` was going on: temporary.
    pub(super) fn io(words: String, cause: io::Error) -> ProxyError {
        ProxyError {
            kind: ErrorKind::Temporary,
            words,
            cause: Some(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn the_families_alternate_starting_with_the_first() {
        let found = [
            "[::1]:1",
            "[::2]:1",
            "[::3]:1",
            "127.0.0.1:1",
            "127.0.0.2:1",
        ]
        .map(addr);
        let ordered: Vec<String> = interleave(found.to_vec())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ordered,
            [
                "[::1]:1",
                "127.0.0.1:1",
                "[::2]:1",
                "127.0.0.2:1",
                "[::3]:1"
            ]
        );
        let v4_first = ["127.0.0.1:1", "[::1]:1", "127.0.0.2:1"].map(addr);
        assert_eq!(
            interleave(v4_first.to_vec()),
            ["127.0.0.1:1", "[::1]:1", "127.0.0.2:1"].map(addr)
        );
    }

    #[test]
    fn a_refused_address_passes_on_at_once_and_a_live_one_wins() {
        let live = TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let refused = closed.local_addr().expect("address");
        drop(closed);
        let started = Instant::now();
        let tcp = connect(
            &[refused, live.local_addr().expect("address")],
            Duration::from_secs(5),
            None,
        )
        .expect("the live address connects");
        assert_eq!(tcp.peer_addr().ok(), live.local_addr().ok());
        assert!(started.elapsed() < ATTEMPT_DELAY, "{:?}", started.elapsed());
    }

    #[test]
    fn nothing_but_refusals_is_the_last_refusal() {
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let refused = closed.local_addr().expect("address");
        drop(closed);
        let e = connect(&[refused, refused], Duration::from_secs(5), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}
