//! Reaching a server over TCP, for any protocol above: Happy Eyeballs between its
//! addresses (`connect`), and the tunnels of a SOCKS5 (`socks5`) or HTTP CONNECT (`http`)
//! proxy; `reach` chooses between them. std only: a thread per connection attempt, no
//! async runtime.
//!
//! The files, each importing only those listed before it: `connect`, `socks5`, `http`,
//! `reach`.

mod connect;
mod http;
mod reach;
mod socks5;

pub(crate) use connect::ProxyError;
pub(crate) use reach::{ReachError, Via, open};
