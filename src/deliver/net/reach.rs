//! A TCP stream to a server: directly by Happy Eyeballs, or through a tunnel of a SOCKS5
//! or HTTP proxy (itself reached by Happy Eyeballs). Whatever runs over the stream (SMTP,
//! TLS with the certificate checked against the server's name) does not know the
//! difference.

use std::io;
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::profile::{Password, Proxy, ProxyKind};

use super::connect::{ProxyError, connect, resolve};
use super::{http, socks5};

/// Why no stream was opened.
#[derive(Debug)]
pub(crate) enum ReachError {
    /// Connecting straight to the server failed (resolving its name included).
    Direct(io::Error),
    /// The proxy could not be reached, failed, or refused.
    Proxy(ProxyError),
}

/// A proxy and its login's password, fetched.
pub(crate) type Via<'a> = (&'a Proxy, Option<&'a Password>);

/// Opens a stream to `host:port`, through `via` when given. Each connection attempt and
/// the proxy's handshake may take `timeout`; nothing goes on past `deadline`.
pub(crate) fn open(
    host: &str,
    port: u16,
    via: Option<Via<'_>>,
    timeout: Duration,
    deadline: Option<Instant>,
) -> Result<TcpStream, ReachError> {
    let Some((proxy, password)) = via else {
        let addresses = resolve(host, port).map_err(ReachError::Direct)?;
        return connect(&addresses, timeout, deadline).map_err(ReachError::Direct);
    };
    let unreachable = |e| {
        ReachError::Proxy(ProxyError::io(
            format!("the proxy {proxy} could not be reached"),
            e,
        ))
    };
    let addresses = resolve(&proxy.host, proxy.port).map_err(unreachable)?;
    let tcp = connect(&addresses, timeout, deadline).map_err(unreachable)?;
    let login = proxy
        .login
        .as_ref()
        .map(|(user, _)| (user.as_str(), password.map_or("", |p| p.expose())));
    let bounds = (timeout, deadline);
    let literal = host.parse::<IpAddr>().ok();
    let tunnelled = match proxy.kind {
        ProxyKind::Http => http::tunnel(&tcp, proxy, login, host, port, bounds),
        ProxyKind::Socks5h => {
            let destination = match literal {
                Some(ip) => socks5::Destination::Ip(ip),
                None => socks5::Destination::Name(host),
            };
            socks5::tunnel(&tcp, proxy, login, destination, port, bounds)
        }
        ProxyKind::Socks5 => {
            // envoi resolves; the proxy gets the first address in Happy Eyeballs order.
            let ip = match literal {
                Some(ip) => ip,
                None => resolve(host, port)
                    .map_err(ReachError::Direct)?
                    .first()
                    .map(|a| a.ip())
                    .ok_or_else(|| {
                        ReachError::Direct(io::Error::new(
                            io::ErrorKind::NotFound,
                            "the host name has no address",
                        ))
                    })?,
            };
            socks5::tunnel(
                &tcp,
                proxy,
                login,
                socks5::Destination::Ip(ip),
                port,
                bounds,
            )
        }
    };
    match tunnelled {
        Ok(()) => {
            // The handshake's socket timeouts are the session's to set from now on.
            let _ = tcp.set_read_timeout(None);
            let _ = tcp.set_write_timeout(None);
            Ok(tcp)
        }
        Err(e) => {
            let _ = tcp.shutdown(std::net::Shutdown::Both);
            Err(ReachError::Proxy(e))
        }
    }
}
