//! An HTTP proxy's tunnel (CONNECT, RFC 9110 §9.3.6). The answer's head is read one byte
//! at a time up to its blank line, and no further: the bytes after it are the SMTP
//! server's, and must stay in the socket for the session (and for STARTTLS's check that
//! nothing came early). The head is capped at [`MAX_HEAD`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::error::ErrorKind;
use crate::profile::Proxy;

use super::connect::{ProxyError, Step};

/// The most envoi reads of a CONNECT answer's status line and headers.
const MAX_HEAD: usize = 8 * 1024;

/// Asks the HTTP proxy at the other end of `tcp` for a tunnel to `host:port`, with
/// Basic credentials when `login` is given; within `timeout` and before `deadline`.
pub(super) fn tunnel(
    tcp: &TcpStream,
    proxy: &Proxy,
    login: Option<(&str, &str)>,
    host: &str,
    port: u16,
    (timeout, deadline): (Duration, Option<Instant>),
) -> Result<(), ProxyError> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, password)) = login {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
    }
    request.push_str("\r\n");
    let mut step = Step::new(tcp, timeout, deadline);
    let broken = |e| ProxyError::io(format!("the HTTP proxy {proxy} failed"), e);
    step.write_all(request.as_bytes()).map_err(broken)?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if head.len() >= MAX_HEAD {
            return Err(ProxyError::new(
                ErrorKind::Temporary,
                format!(
                    "the HTTP proxy {proxy} sent a CONNECT answer longer than {MAX_HEAD} octets"
                ),
            ));
        }
        match step.read(&mut byte) {
            Ok(0) => {
                return Err(ProxyError::new(
                    ErrorKind::Temporary,
                    format!(
                        "the HTTP proxy {proxy} closed the connection before answering CONNECT"
                    ),
                ));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(broken(e)),
        }
    }
    let status_line = head
        .split(|b| *b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_owned())
        .unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next());
    let code = code
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c));
    let Some(code) = code.filter(|_| version.starts_with("HTTP/1.")) else {
        return Err(ProxyError::new(
            ErrorKind::Temporary,
            format!(
                "the proxy {proxy} does not answer as an HTTP proxy: {:?}",
                printable(&status_line)
            ),
        ));
    };
    if (200..300).contains(&code) {
        return Ok(());
    }
    let reason = printable(parts.next().unwrap_or_default());
    // 407 is the proxy's "who are you" (RFC 9110 §15.5.8); tinyproxy answers a CONNECT
    // without the right login with 401.
    let kind = match code {
        401 | 407 => ErrorKind::AuthRefused,
        400..500 => ErrorKind::Unavailable,
        _ => ErrorKind::Temporary,
    };
    let hint = match (code, login.is_some()) {
        (401 | 407, false) => {
            " (it wants a login: write http://USER@host:port and set proxy_password_env)"
        }
        (401 | 407, true) => " (check the user name and the variable proxy_password_env names)",
        _ => "",
    };
    let status = format!("{code} {reason}");
    Err(ProxyError::new(
        kind,
        format!(
            "the proxy {proxy} refused the tunnel to {target}: {}{hint}",
            status.trim_end()
        ),
    ))
}

/// At most 200 characters of `text`, control characters replaced: it came off the wire.
fn printable(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProxyKind;
    use std::net::TcpListener;

    /// A peer that reads the CONNECT request and then writes `answer` over and over,
    /// `pause` apart, until the client leaves.
    fn peer(answer: &'static [u8], pause: Duration) -> (Proxy, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            let (mut c, _) = listener.accept().expect("accept");
            let mut request = [0u8; 512];
            let _ = c.read(&mut request);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\n");
            while c.write_all(answer).is_ok() {
                std::thread::sleep(pause);
            }
        });
        let proxy = Proxy {
            kind: ProxyKind::Http,
            host: "127.0.0.1".into(),
            port,
            login: None,
        };
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        (proxy, tcp)
    }

    #[test]
    fn an_endless_head_is_cut_at_the_cap() {
        let (proxy, tcp) = peer(
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            Duration::ZERO,
        );
        let e = tunnel(
            &tcp,
            &proxy,
            None,
            "mail.example",
            25,
            (Duration::from_secs(5), None),
        )
        .expect_err("too long");
        assert!(e.words.contains("longer than 8192 octets"), "{}", e.words);
    }

    #[test]
    fn a_dripping_head_cannot_outlast_the_deadline() {
        let (proxy, tcp) = peer(b"X", Duration::from_millis(50));
        let started = Instant::now();
        let deadline = Some(started + Duration::from_millis(600));
        let e = tunnel(
            &tcp,
            &proxy,
            None,
            "mail.example",
            25,
            (Duration::from_secs(30), deadline),
        )
        .expect_err("out of time");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let cause = e.cause.expect("a socket error");
        assert_eq!(cause.kind(), std::io::ErrorKind::TimedOut, "{cause}");
    }
}
