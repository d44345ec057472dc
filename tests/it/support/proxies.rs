//! Real proxies on loopback for the network-reach tests: Debian's `tinyproxy` (HTTP
//! CONNECT) and `dante-server` (`danted`, SOCKS5), each started with its own config file
//! and log in the test's directory, on a free port of 127.0.0.1, and stopped (kill + wait)
//! when dropped. Each connects onwards *from its own loopback address* (tinyproxy's `Bind`,
//! dante's `external`), so the SMTP server can tell a proxied connection from envoi's own
//! (which comes from 127.0.0.1).
//!
//! When a program is missing, `start` notes it and returns `None`, unless `CI` or
//! `ENVOI_REQUIRE_EXTERNAL` is set (`.ci/run` installs both), in which case it panics.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::external::require_external;

/// The address tinyproxy connects onwards from.
pub const TINYPROXY_FROM: &str = "127.0.0.2";
/// The address dante connects onwards from.
pub const DANTE_FROM: &str = "127.0.0.3";

/// A free port of 127.0.0.1 (free when this returns; the proxy binds it next).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Waits until something accepts on 127.0.0.1:`port`; panics with `log` after 10 s.
fn wait_listening(child: &mut Child, port: u16, what: &str, log: &Path) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "{what} did not listen on 127.0.0.1:{port} within 10 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A running proxy: its port and its log file.
pub struct Proxy {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Proxy {
    /// Everything the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the log holds `needle` within 5 s (a worker process may write a line
    /// after the client has finished).
    pub fn logged(&self, needle: &str) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Debian's `tinyproxy` in the foreground, letting 127.0.0.1 CONNECT to the ports
    /// `connect_ports` only (with a Basic login when `login` is given), logging each
    /// CONNECT into `dir`.
    pub fn tinyproxy(
        dir: &Path,
        connect_ports: &[u16],
        login: Option<(&str, &str)>,
    ) -> Option<Proxy> {
        let program = Path::new("/usr/bin/tinyproxy");
        if !require_external("tinyproxy", program.exists()) {
            return None;
        }
        let port = free_port();
        let log = dir.join("tinyproxy.log");
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nBind {TINYPROXY_FROM}\nTimeout 30\n\
             LogFile \"{}\"\nLogLevel Connect\nMaxClients 20\nAllow 127.0.0.1\n",
            log.display()
        );
        for p in connect_ports {
            config.push_str(&format!("ConnectPort {p}\n"));
        }
        if let Some((user, password)) = login {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let path = dir.join("tinyproxy.conf");
        std::fs::write(&path, config).expect("write tinyproxy.conf");
        let mut child = Command::new(program)
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tinyproxy");
        wait_listening(&mut child, port, "tinyproxy", &log);
        Some(Proxy { child, port, log })
    }

    /// Debian's `danted` (SOCKS5, no authentication), logging each CONNECT into `dir`.
    /// With `hosts`, it runs in a mount namespace of its own where that file is
    /// `/etc/hosts`: it can then resolve names that envoi cannot, which proves that a
    /// `socks5h://` name was resolved by the proxy.
    pub fn dante(dir: &Path, hosts: Option<&Path>) -> Option<Proxy> {
        let program = Path::new("/usr/sbin/danted");
        if !require_external("danted (dante-server)", program.exists()) {
            return None;
        }
        if hosts.is_some() && !super::namespaces::available() {
            return None;
        }
        let port = free_port();
        let log = dir.join("danted.log");
        // danted runs as root here (CI is root): the same user for both of its roles.
        let config = format!(
            "logoutput: {}\ninternal: 127.0.0.1 port = {port}\nexternal: {DANTE_FROM}\n\
             clientmethod: none\nsocksmethod: none\nuser.privileged: root\n\
             user.unprivileged: root\n\
             client pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: connect error\n}}\n\
             socks pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  command: connect\n  \
             log: connect error\n}}\n",
            log.display()
        );
        let path = dir.join("danted.conf");
        std::fs::write(&path, config).expect("write danted.conf");
        let pid = dir.join("danted.pid");
        let mut command = match hosts {
            Some(hosts) => {
                let mut c = super::namespaces::with_hosts(hosts);
                c.arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut child = command
            .arg("-f")
            .arg(&path)
            .arg("-p")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start danted");
        wait_listening(&mut child, port, "danted", &log);
        Some(Proxy { child, port, log })
    }
}

impl Drop for Proxy {
    /// SIGTERM first, so that danted's workers leave with it; SIGKILL after 2 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
