//! A SOCKS5 client (RFC 1928) for one CONNECT, with no authentication (method 0x00) or a
//! user name and password (RFC 1929). Every reply has a fixed or length-prefixed size,
//! read exactly; nothing more.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::error::ErrorKind;
use crate::profile::Proxy;

use super::connect::{ProxyError, Step};

/// Where the tunnel goes: an address envoi resolved (`socks5://`), or a name the proxy
/// resolves (`socks5h://`).
pub(super) enum Destination<'a> {
    /// An IP address.
    Ip(IpAddr),
    /// A host name, at most 255 octets.
    Name(&'a str),
}

/// Asks the SOCKS5 proxy at the other end of `tcp` for a tunnel to `destination:port`,
/// logging in as `login` when given; all within `timeout` and before `deadline`.
pub(super) fn tunnel(
    tcp: &TcpStream,
    proxy: &Proxy,
    login: Option<(&str, &str)>,
    destination: Destination<'_>,
    port: u16,
    (timeout, deadline): (Duration, Option<Instant>),
) -> Result<(), ProxyError> {
    let target = match &destination {
        Destination::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Destination::Ip(ip) => format!("{ip}:{port}"),
        Destination::Name(name) => format!("{name}:{port}"),
    };
    let mut step = Step::new(tcp, timeout, deadline);
    let broken = |e| ProxyError::io(format!("the SOCKS5 proxy {proxy} failed"), e);
    let methods: &[u8] = if login.is_some() {
        &[5, 2, 0, 2]
    } else {
        &[5, 1, 0]
    };
    step.write_all(methods).map_err(broken)?;
    let mut chosen = [0u8; 2];
    step.read_exact(&mut chosen).map_err(broken)?;
    if chosen[0] != 5 {
        return Err(not_socks5(proxy));
    }
    match (chosen[1], login) {
        (0, _) => {}
        (2, Some((user, password))) => {
            let (user, password) = (user.as_bytes(), password.as_bytes());
            let (Ok(ulen), Ok(plen)) = (u8::try_from(user.len()), u8::try_from(password.len()))
            else {
                return Err(ProxyError::new(
                    ErrorKind::Config,
                    format!(
                        "the proxy {proxy}: SOCKS5 takes a user name and a password of at most \
                         255 octets each"
                    ),
                ));
            };
            let mut request = vec![1, ulen];
            request.extend_from_slice(user);
            request.push(plen);
            request.extend_from_slice(password);
            step.write_all(&request).map_err(broken)?;
            let mut status = [0u8; 2];
            step.read_exact(&mut status).map_err(broken)?;
            if status[1] != 0 {
                return Err(ProxyError::new(
                    ErrorKind::AuthRefused,
                    format!(
                        "the proxy {proxy} refused the user name and password \
                         (proxy_password_env)"
                    ),
                ));
            }
        }
        (0xFF | 2, _) => {
            return Err(ProxyError::new(
                ErrorKind::AuthRefused,
                format!(
                    "the proxy {proxy} wants a login envoi does not have: {}",
                    if login.is_some() {
                        "it accepts neither none nor a user name and password"
                    } else {
                        "give it one as socks5h://USER@host:port with proxy_password_env"
                    }
                ),
            ));
        }
        (other, _) => {
            return Err(ProxyError::new(
                ErrorKind::Temporary,
                format!("the proxy {proxy} chose SOCKS5 method {other}, which envoi did not offer"),
            ));
        }
    }
    let mut request = vec![5, 1, 0];
    match destination {
        Destination::Ip(IpAddr::V4(ip)) => {
            request.push(1);
            request.extend_from_slice(&ip.octets());
        }
        Destination::Ip(IpAddr::V6(ip)) => {
            request.push(4);
            request.extend_from_slice(&ip.octets());
        }
        Destination::Name(name) => {
            let Ok(len) = u8::try_from(name.len()) else {
                return Err(ProxyError::new(
                    ErrorKind::Config,
                    format!("the host name {name:?} is too long for SOCKS5 (255 octets)"),
                ));
            };
            request.push(3);
            request.push(len);
            request.extend_from_slice(name.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    step.write_all(&request).map_err(broken)?;
    let mut head = [0u8; 4];
    step.read_exact(&mut head).map_err(broken)?;
    if head[0] != 5 {
        return Err(not_socks5(proxy));
    }
    if head[1] != 0 {
        let (kind, why) = reply_words(head[1]);
        return Err(ProxyError::new(
            kind,
            format!("the proxy {proxy} refused the tunnel to {target}: {why}"),
        ));
    }
    // The address the proxy bound: read and dropped, so the next byte is the server's.
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            step.read_exact(&mut len).map_err(broken)?;
            usize::from(len[0]) + 2
        }
        _ => return Err(not_socks5(proxy)),
    };
    let mut bound = [0u8; 255 + 2];
    step.read_exact(&mut bound[..rest]).map_err(broken)?;
    Ok(())
}

fn not_socks5(proxy: &Proxy) -> ProxyError {
    ProxyError::new(
        ErrorKind::Temporary,
        format!("the proxy {proxy} does not answer as a SOCKS5 proxy (is it an HTTP proxy?)"),
    )
}

/// A SOCKS5 reply code (RFC 1928 §6) in words, and what it means for envoi: the proxy's
/// rules refusing the destination is 69; the proxy failing to reach it is temporary, as
/// the same failure without a proxy would be.
fn reply_words(code: u8) -> (ErrorKind, String) {
    let (kind, words) = match code {
        1 => (ErrorKind::Temporary, "general SOCKS server failure"),
        2 => (ErrorKind::Unavailable, "connection not allowed by ruleset"),
        3 => (ErrorKind::Temporary, "network unreachable"),
        4 => (ErrorKind::Temporary, "host unreachable"),
        5 => (ErrorKind::Temporary, "connection refused"),
        6 => (ErrorKind::Temporary, "TTL expired"),
        7 => (ErrorKind::Unavailable, "command not supported"),
        8 => (ErrorKind::Unavailable, "address type not supported"),
        _ => (ErrorKind::Temporary, "an unknown SOCKS5 reply"),
    };
    (kind, format!("{words} (SOCKS5 reply {code})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{PasswordSource, ProxyKind};
    use std::io::Read;
    use std::net::TcpListener;

    /// A SOCKS5 peer on loopback that wants RFC 1929's login `bot`/`pw`, checks the
    /// request for `mail.example:587` by name, answers success and writes `220 hi`.
    fn peer() -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let handle = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().expect("accept");
            let mut greeting = [0u8; 4];
            c.read_exact(&mut greeting).expect("greeting");
            assert_eq!(
                greeting,
                [5, 2, 0, 2],
                "no authentication and user/password"
            );
            c.write_all(&[5, 2]).expect("choose");
            let mut head = [0u8; 2];
            c.read_exact(&mut head).expect("auth head");
            let mut user = vec![0u8; usize::from(head[1])];
            c.read_exact(&mut user).expect("user");
            let mut plen = [0u8; 1];
            c.read_exact(&mut plen).expect("plen");
            let mut password = vec![0u8; usize::from(plen[0])];
            c.read_exact(&mut password).expect("password");
            let ok = user == b"bot" && password == b"pw";
            c.write_all(&[1, u8::from(!ok)]).expect("status");
            if !ok {
                return Vec::new();
            }
            let mut request = [0u8; 5];
            c.read_exact(&mut request).expect("request");
            let mut rest = vec![0u8; usize::from(request[4]) + 2];
            c.read_exact(&mut rest).expect("name and port");
            c.write_all(&[
                5, 0, 0, 1, 127, 0, 0, 1, 0, 25, b'2', b'2', b'0', b' ', b'h', b'i',
            ])
            .expect("reply and greeting");
            [&request[..], &rest[..]].concat()
        });
        (port, handle)
    }

    fn proxy(port: u16) -> Proxy {
        Proxy {
            kind: ProxyKind::Socks5h,
            host: "127.0.0.1".into(),
            port,
            login: Some(("bot".into(), PasswordSource::Env("UNUSED".into()))),
        }
    }

    #[test]
    fn a_login_then_a_name_then_the_servers_bytes_untouched() {
        let (port, handle) = peer();
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let bounds = (Duration::from_secs(5), None);
        tunnel(
            &tcp,
            &proxy(port),
            Some(("bot", "pw")),
            Destination::Name("mail.example"),
            587,
            bounds,
        )
        .expect("a tunnel");
        let mut greeting = [0u8; 6];
        (&tcp)
            .read_exact(&mut greeting)
            .expect("the server's bytes");
        assert_eq!(&greeting, b"220 hi");
        let request = handle.join().expect("peer");
        assert_eq!(&request[..5], &[5, 1, 0, 3, 12]);
        assert_eq!(&request[5..17], b"mail.example");
        assert_eq!(&request[17..], &587u16.to_be_bytes());
    }

    #[test]
    fn a_refused_login_is_77_in_words() {
        let (port, handle) = peer();
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let e = tunnel(
            &tcp,
            &proxy(port),
            Some(("bot", "nope")),
            Destination::Name("mail.example"),
            587,
            (Duration::from_secs(5), None),
        )
        .expect_err("refused");
        assert_eq!(e.kind, ErrorKind::AuthRefused);
        assert!(
            e.words.contains("refused the user name and password"),
            "{}",
            e.words
        );
        handle.join().expect("peer");
    }
}
