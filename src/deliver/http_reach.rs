//! How the HTTPS client reaches a service: by envoi's own [`net::open`], as SMTP does
//! (Happy Eyeballs between the addresses; a SOCKS5, socks5h or HTTP CONNECT proxy when
//! the profile or the environment names one), plugged into ureq as its connector. ureq
//! itself never resolves, connects or proxies: its agent gets a resolver that looks
//! nothing up (the proxy of `socks5h://` resolves the name, and [`net::open`] resolves
//! it otherwise) and `proxy(None)`.
//!
//! A proxy's failure travels through ureq's error as an `io::Error` wrapping
//! [`Unreached`], which `http` takes out again: the same words and exit code (75, 69,
//! 77) as for SMTP.
//!
//! A leaf of `deliver/` apart from `net` and `pinned_tls`; `http` builds its agent here.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::{fmt, io};

use rustls::ClientConfig;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, RustlsConnector,
    Transport,
};

use crate::deliver::net::{self, ProxyError, ReachError};
use crate::deliver::pinned_tls::PinnedTls;
use crate::profile::{Password, Proxy};

/// The longest a connection may take when ureq gives no bound. Never reached by envoi's
/// requests, which all carry their own timeout; said so that "no bound" is not forever.
const UNBOUNDED_CONNECT: Duration = Duration::from_secs(300);

/// An agent with `config`'s settings whose connections are opened by [`net::open`]
/// through `via` (a proxy and its login's password), in TLS by ureq's rustls connector,
/// or by `pinned`'s configuration when the profile pins the certificate.
pub(crate) fn agent(
    config: ureq::config::Config,
    via: Option<(Proxy, Option<Password>)>,
    pinned: Option<Arc<ClientConfig>>,
) -> ureq::Agent {
    let reach = Reach { via };
    match pinned {
        Some(tls) => {
            ureq::Agent::with_parts(config, ().chain(reach).chain(PinnedTls(tls)), NoLookup)
        }
        None => ureq::Agent::with_parts(
            config,
            ().chain(reach).chain(RustlsConnector::default()),
            NoLookup,
        ),
    }
}

/// A proxy's failure to open the tunnel, carried through ureq inside an `io::Error`.
#[derive(Debug)]
pub(crate) struct Unreached(pub(crate) ProxyError);

impl fmt::Display for Unreached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.words)
    }
}

impl std::error::Error for Unreached {}

/// ureq's resolver, which resolves nothing: [`Reach`] (or the proxy) does.
#[derive(Debug)]
struct NoLookup;

impl Resolver for NoLookup {
    fn resolve(
        &self,
        _uri: &Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        Ok(self.empty())
    }
}

/// Opens the TCP stream to the request's host, through the proxy when there is one.
struct Reach {
    via: Option<(Proxy, Option<Password>)>,
}

/// The proxy only: never its password.
impl fmt::Debug for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proxy = self.via.as_ref().map(|(proxy, _)| proxy.to_string());
        f.debug_struct("Reach").field("proxy", &proxy).finish()
    }
}

impl<In: Transport> Connector<In> for Reach {
    type Out = Either<In, Tcp>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(transport) = chained {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = details
            .uri
            .port_u16()
            .unwrap_or(if details.needs_tls() { 443 } else { 80 });
        // What is left of the connect step, bounded by the request's own deadline: each
        // attempt and the proxy's handshake within it, nothing past it.
        let left = *details.timeout.after;
        let timeout = left.min(UNBOUNDED_CONNECT);
        let deadline = Instant::now().checked_add(timeout);
        let via = self
            .via
            .as_ref()
            .map(|(proxy, password)| (proxy, password.as_ref()));
        let stream = net::open(host, port, via, timeout, deadline).map_err(|e| match e {
            ReachError::Direct(io) => ureq::Error::Io(io),
            ReachError::Proxy(proxy) => ureq::Error::Io(io::Error::other(Unreached(proxy))),
        })?;
        let _ = stream.set_nodelay(true);
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        // Not registered for `Agent::shutdown`: envoi never shuts an agent down, every
        // request ends by its own timeout.
        Ok(Some(Either::B(Tcp { stream, buffers })))
    }
}

/// A TCP stream as ureq's transport (ureq keeps its own to itself), each read and write
/// bounded by the timeout ureq gives it.
pub(crate) struct Tcp {
    stream: TcpStream,
    buffers: LazyBuffers,
}

impl fmt::Debug for Tcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tcp")
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}

/// The socket timeout for `timeout`; time already up is ureq's timeout error.
fn socket_timeout(timeout: NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|left| *left))
}

/// A socket's error, a timeout said as ureq's (Unix reports a read timeout as
/// `WouldBlock`).
fn socket_error(e: io::Error, timeout: NextTimeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ureq::Error::Timeout(timeout.reason),
        _ => ureq::Error::Io(e),
    }
}

impl Transport for Tcp {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        self.stream.set_write_timeout(socket_timeout(timeout)?)?;
        let output = &self.buffers.output()[..amount];
        self.stream
            .write_all(output)
            .map_err(|e| socket_error(e, timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        self.stream.set_read_timeout(socket_timeout(timeout)?)?;
        let input = self.buffers.input_append_buf();
        let amount = loop {
            match self.stream.read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => break read.map_err(|e| socket_error(e, timeout))?,
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    /// Whether a pooled connection may be used again: nothing waiting on it (a server
    /// that spoke unasked, or closed it, ended it).
    fn is_open(&mut self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8];
        let idle = matches!(
            self.stream.read(&mut byte),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        );
        idle && self.stream.set_nonblocking(false).is_ok()
    }
}
