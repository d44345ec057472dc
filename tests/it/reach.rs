//! Network reach (issue 17): SMTP through real proxies on loopback — Debian's tinyproxy
//! (HTTP CONNECT) and dante (SOCKS5) — and Happy Eyeballs between a black-holed IPv6
//! address and a live IPv4 one. Each proxy connects onwards from its own loopback address,
//! so the server's record of where a connection came from proves the traffic went through
//! the proxy; the proxy's own log shows the tunnel it made.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mail_parser::MessageParser;
use tempfile::TempDir;

use crate::support::USER;
use crate::support::certs::TestPki;
use crate::support::envoi::{Config, ExpectExit, Run, assert_no_secret, envoi, hermetic_env};
use crate::support::namespaces;
use crate::support::proxies::{DANTE_FROM, Proxy, TINYPROXY_FROM};
use crate::support::smtp_server::{Security, ServerOptions, TestServer};

/// A STARTTLS server that wants the canary login, and its CA's file in `dir`.
fn starttls_server(dir: &Path) -> (TestServer, PathBuf) {
    let pki = Arc::new(TestPki::new());
    let ca = pki.write_ca(dir);
    let server = TestServer::start(ServerOptions {
        security: Security::StartTls,
        auth: Some((USER.into(), crate::support::PASSWORD.into())),
        pki: Some(pki),
        ..ServerOptions::default()
    });
    (server, ca)
}

/// A config for `server` (host `localhost`, STARTTLS, the canary login, `ca` trusted)
/// with `extra` lines.
fn starttls_config(dir: &Path, server: &TestServer, ca: &Path, extra: &str) -> PathBuf {
    Config::new(server.port(), "starttls")
        .login()
        .trust(ca)
        .line(extra)
        .write(dir)
}

/// A config for a plain server at `host:port` (no login, no TLS), with `extra` lines.
fn plain_config(dir: &Path, host: &str, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "default = \"test\"\n[profiles.test]\nhost = \"{host}\"\nport = {port}\n\
             security = \"none\"\nfrom = \"Envoi Test <sender@example.com>\"\n\
             timeout_secs = 10\n{extra}\n"
        ),
    )
    .expect("write config");
    path
}

/// `envoi send` of one small message along `config`, no retries.
fn send(home: &Path, config: &Path) -> assert_cmd::Command {
    let mut cmd = envoi(home);
    cmd.env("ENVOI_TEST_PASSWORD", crate::support::PASSWORD)
        .args(["send", "--config"])
        .arg(config)
        .args(["--to", "rcpt@example.com", "--subject", "reach"])
        .args(["--body", "through", "--retries", "0"]);
    cmd
}

/// Every connection the server accepted came from `from`, and there was at least one.
#[track_caller]
fn all_from(server: &TestServer, from: &str) {
    let peers = server.peers();
    assert!(!peers.is_empty(), "no connection reached the server");
    assert!(
        peers.iter().all(|p| p.ip().to_string() == from),
        "a connection did not come from the proxy at {from}: {peers:?}"
    );
}

/// The only message the server holds, its body decoded.
#[track_caller]
fn only_body(server: &TestServer) -> String {
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "expected one message");
    let parsed = MessageParser::default()
        .parse(&messages[0].data)
        .expect("a MIME message");
    parsed.body_text(0).expect("a text body").trim().to_owned()
}

#[test]
fn starttls_runs_inside_an_http_connect_tunnel_of_tinyproxy() {
    let dir = TempDir::new().unwrap();
    let (server, ca) = starttls_server(dir.path());
    let Some(proxy) = Proxy::tinyproxy(dir.path(), &[server.port()], None) else {
        return;
    };
    let proxy_line = format!("proxy = \"http://127.0.0.1:{}\"", proxy.port);
    let config = starttls_config(dir.path(), &server, &ca, &proxy_line);
    let run = send(dir.path(), &config).arg("-v").expect_exit(0);
    let message = &server.messages()[0];
    assert!(message.tls, "the message crossed the tunnel without TLS");
    assert_eq!(message.authenticated_as.as_deref(), Some(USER));
    assert_eq!(only_body(&server), "through");
    all_from(&server, TINYPROXY_FROM);
    assert!(
        proxy.logged(&format!("CONNECT localhost:{} HTTP/1.1", server.port())),
        "{}",
        proxy.log()
    );
    assert!(
        run.stderr.contains(&format!(
            "through the proxy http://127.0.0.1:{}",
            proxy.port
        )),
        "{run}"
    );
    assert_no_secret(&run.output());

    // `envoi check` says it went through the proxy, and where.
    let mut check = envoi(dir.path());
    let run = check
        .env("ENVOI_TEST_PASSWORD", crate::support::PASSWORD)
        .args(["check", "--json", "--config"])
        .arg(&config)
        .expect_exit(0);
    let json = run.json();
    assert_eq!(
        json["proxy"],
        format!("http://127.0.0.1:{}", proxy.port),
        "{json}"
    );
    assert_eq!(
        json["address"],
        format!("127.0.0.1:{}", proxy.port),
        "{json}"
    );
    all_from(&server, TINYPROXY_FROM);
}

#[test]
fn a_tunnel_tinyproxy_refuses_is_69_in_words_and_nothing_is_sent() {
    let dir = TempDir::new().unwrap();
    let (server, ca) = starttls_server(dir.path());
    // tinyproxy may CONNECT to another port only.
    let Some(proxy) = Proxy::tinyproxy(dir.path(), &[server.port().wrapping_add(1)], None) else {
        return;
    };
    let proxy_line = format!("proxy = \"http://127.0.0.1:{}\"", proxy.port);
    let config = starttls_config(dir.path(), &server, &ca, &proxy_line);
    let run = send(dir.path(), &config).expect_exit(69);
    let words = format!(
        "connecting to localhost:{port}: the proxy http://127.0.0.1:{proxy} refused the tunnel \
         to localhost:{port}: 403 Access violation",
        port = server.port(),
        proxy = proxy.port
    );
    assert!(run.stderr.contains(&words), "{run}");
    assert_eq!(
        server.connections(),
        0,
        "the proxy let a connection through"
    );
    assert!(
        proxy.logged(&format!("CONNECT localhost:{} HTTP/1.1", server.port())),
        "{}",
        proxy.log()
    );
}

#[test]
fn a_proxy_login_comes_from_proxy_password_env_and_a_wrong_one_is_77() {
    let dir = TempDir::new().unwrap();
    let (server, ca) = starttls_server(dir.path());
    let Some(proxy) = Proxy::tinyproxy(dir.path(), &[server.port()], Some(("bot", "Pr0xy-S3cret")))
    else {
        return;
    };
    let lines = format!(
        "proxy = \"http://bot@127.0.0.1:{}\"\nproxy_password_env = \"ENVOI_TEST_PROXY_PASSWORD\"",
        proxy.port
    );
    let config = starttls_config(dir.path(), &server, &ca, &lines);
    let run = send(dir.path(), &config)
        .env("ENVOI_TEST_PROXY_PASSWORD", "Pr0xy-S3cret")
        .arg("-v")
        .expect_exit(0);
    assert!(!run.output().contains("Pr0xy-S3cret"), "{run}");
    assert!(
        !run.output().contains("bot@"),
        "the proxy's user shown: {run}"
    );
    all_from(&server, TINYPROXY_FROM);
    assert_eq!(server.messages().len(), 1);

    let run = send(dir.path(), &config)
        .env("ENVOI_TEST_PROXY_PASSWORD", "Wr0ng-Pw-91")
        .expect_exit(77);
    assert!(
        run.stderr.contains(&format!(
            "the proxy http://127.0.0.1:{} refused the tunnel to localhost:{}: 401",
            proxy.port,
            server.port()
        )),
        "{run}"
    );
    assert!(run.stderr.contains("proxy_password_env"), "{run}");
    assert!(!run.output().contains("Wr0ng-Pw-91"), "{run}");
    // Without the variable: 78 before anything is sent, naming it.
    let run = send(dir.path(), &config).expect_exit(78);
    assert!(run.stderr.contains("ENVOI_TEST_PROXY_PASSWORD"), "{run}");
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn a_proxy_that_cannot_be_reached_is_75_and_a_bad_one_78() {
    let dir = TempDir::new().unwrap();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = TestServer::start(ServerOptions::default());
    let line = format!("proxy = \"socks5h://127.0.0.1:{closed}\"");
    let config = plain_config(dir.path(), "localhost", server.port(), &line);
    let run = send(dir.path(), &config).expect_exit(75);
    assert!(
        run.stderr.contains(&format!(
            "the proxy socks5h://127.0.0.1:{closed} could not be reached: Connection refused"
        )),
        "{run}"
    );
    let config = plain_config(
        dir.path(),
        "localhost",
        server.port(),
        "proxy = \"socks5h://me:hunter2@127.0.0.1:1080\"",
    );
    let run = send(dir.path(), &config).expect_exit(78);
    assert!(
        run.stderr
            .contains("a password in the proxy URL is refused"),
        "{run}"
    );
    assert!(!run.output().contains("hunter2"), "{run}");
    let config = plain_config(
        dir.path(),
        "localhost",
        server.port(),
        "proxy = \"https://p:443\"",
    );
    let run = send(dir.path(), &config).expect_exit(78);
    assert!(run.stderr.contains("proxy scheme \"https\""), "{run}");
    assert_eq!(server.connections(), 0);
}

/// A hosts file in `dir` naming `name` with `addresses`, in that order.
fn hosts_file(dir: &Path, name: &str, addresses: &[&str]) -> PathBuf {
    let path = dir.join("hosts");
    let text: String = addresses.iter().map(|a| format!("{a} {name}\n")).collect();
    std::fs::write(&path, format!("127.0.0.1 localhost\n{text}")).expect("write hosts");
    path
}

/// The name only dante's own `/etc/hosts` knows.
const PROXY_ONLY_NAME: &str = "smtp.proxy-only.test";

#[test]
fn socks5_through_dante_envoi_resolving_and_socks5h_the_proxy_resolving() {
    let dir = TempDir::new().unwrap();
    let hosts = hosts_file(dir.path(), PROXY_ONLY_NAME, &["127.0.0.1"]);
    let Some(proxy) = Proxy::dante(dir.path(), Some(&hosts)) else {
        return;
    };
    let server = TestServer::start(ServerOptions::default());

    // socks5://: envoi resolves localhost and asks for the address.
    let line = format!("proxy = \"socks5://127.0.0.1:{}\"", proxy.port);
    let config = plain_config(dir.path(), "localhost", server.port(), &line);
    let run = send(dir.path(), &config).arg("-v").expect_exit(0);
    assert!(
        run.stderr.contains(&format!(
            "through the proxy socks5://127.0.0.1:{}",
            proxy.port
        )),
        "{run}"
    );
    all_from(&server, DANTE_FROM);
    assert_eq!(only_body(&server), "through");
    assert!(
        proxy.logged(&format!("-> {DANTE_FROM}."))
            && proxy.logged(&format!(" 127.0.0.1.{}", server.port())),
        "dante logged no tunnel to the server: {}",
        proxy.log()
    );

    // socks5h://: a name envoi cannot resolve (this process's /etc/hosts lacks it) goes
    // to the proxy as a name, and the proxy's resolver finds it.
    assert!(
        (PROXY_ONLY_NAME, 25).to_socket_addrs_fails(),
        "{PROXY_ONLY_NAME} must not resolve outside the proxy"
    );
    let line = format!("proxy = \"socks5h://127.0.0.1:{}\"", proxy.port);
    let config = plain_config(dir.path(), PROXY_ONLY_NAME, server.port(), &line);
    send(dir.path(), &config).expect_exit(0);
    assert_eq!(server.messages().len(), 2);
    all_from(&server, DANTE_FROM);

    // The same name with socks5://: envoi must resolve it, and cannot.
    let line = format!("proxy = \"socks5://127.0.0.1:{}\"", proxy.port);
    let config = plain_config(dir.path(), PROXY_ONLY_NAME, server.port(), &line);
    send(dir.path(), &config).expect_exit(75);
    assert_eq!(server.messages().len(), 2);
}

/// A name that does not resolve here.
trait Unresolvable {
    fn to_socket_addrs_fails(&self) -> bool;
}

impl Unresolvable for (&str, u16) {
    fn to_socket_addrs_fails(&self) -> bool {
        std::net::ToSocketAddrs::to_socket_addrs(self).is_err()
    }
}

#[test]
fn all_proxy_is_honoured_and_no_proxy_excludes_the_host() {
    let dir = TempDir::new().unwrap();
    let hosts = hosts_file(dir.path(), PROXY_ONLY_NAME, &["127.0.0.1"]);
    let Some(proxy) = Proxy::dante(dir.path(), Some(&hosts)) else {
        return;
    };
    let server = TestServer::start(ServerOptions::default());
    // No proxy key: the environment decides.
    let config = plain_config(dir.path(), PROXY_ONLY_NAME, server.port(), "");
    let all_proxy = format!("socks5h://127.0.0.1:{}", proxy.port);
    send(dir.path(), &config)
        .env("ALL_PROXY", &all_proxy)
        .expect_exit(0);
    all_from(&server, DANTE_FROM);
    assert_eq!(server.messages().len(), 1);

    // `config show` names the variable as the proxy's origin.
    let run = envoi(dir.path())
        .env("ALL_PROXY", &all_proxy)
        .args(["config", "show", "--config"])
        .arg(&config)
        .expect_exit(0);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("proxy "))
        .unwrap_or_else(|| panic!("no proxy line: {run}"));
    assert!(
        line.contains(&all_proxy) && line.contains("$ALL_PROXY"),
        "{line}"
    );

    // NO_PROXY names the host's domain: envoi connects directly, and cannot resolve it.
    assert!(proxy.logged("tcp/connect ["), "{}", proxy.log());
    let before = proxy.log().matches("tcp/connect [").count();
    let run = send(dir.path(), &config)
        .env("ALL_PROXY", &all_proxy)
        .env("NO_PROXY", "localhost,.proxy-only.test")
        .arg("-v")
        .expect_exit(75);
    assert!(!run.stderr.contains("through the proxy"), "{run}");
    // proxy = "none" turns the environment off the same way.
    let none = plain_config(
        dir.path(),
        PROXY_ONLY_NAME,
        server.port(),
        "proxy = \"none\"",
    );
    send(dir.path(), &none)
        .env("ALL_PROXY", &all_proxy)
        .expect_exit(75);
    assert_eq!(proxy.log().matches("tcp/connect [").count(), before);
    assert_eq!(server.messages().len(), 1);
}

/// A listener on `[::1]:port` whose accept queue is full: the kernel drops every further
/// SYN, so a connection to it neither succeeds nor fails until its timeout — a
/// black-holed address. A Python process, since std cannot listen with a backlog of 0.
pub(crate) fn black_hole_v6(port: u16) -> Child {
    let script = "import socket, sys, time\n\
        s = socket.socket(socket.AF_INET6)\n\
        s.bind(('::1', int(sys.argv[1])))\n\
        s.listen(0)\n\
        fill = [socket.create_connection(('::1', int(sys.argv[1])))]\n\
        print('READY', flush=True)\n\
        time.sleep(120)\n";
    let mut child = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("the black hole's READY");
    assert_eq!(line.trim(), "READY");
    child
}

#[test]
fn happy_eyeballs_passes_a_black_holed_ipv6_address_in_well_under_the_timeout() {
    if !namespaces::available() {
        return;
    }
    let dir = TempDir::new().unwrap();
    // The server on 127.0.0.1:P, the black hole on [::1]:P, one name for both, IPv6 first.
    let server = TestServer::start(ServerOptions::default());
    let mut hole = black_hole_v6(server.port());
    let v6: SocketAddr = format!("[::1]:{}", server.port()).parse().unwrap();
    // Fill the accept queue until an attempt times out (the kernel holds backlog + 1,
    // and the hole holds one already): from then on every SYN is dropped.
    let mut held = Vec::new();
    let black_holed =
        (0..4).any(
            |_| match TcpStream::connect_timeout(&v6, Duration::from_millis(300)) {
                Ok(tcp) => {
                    held.push(tcp);
                    false
                }
                Err(e) => e.kind() == std::io::ErrorKind::TimedOut,
            },
        );
    assert!(
        black_holed,
        "[::1]:{} answers: not a black hole",
        server.port()
    );
    let hosts = hosts_file(dir.path(), "mail.both.test", &["::1", "127.0.0.1"]);
    let resolved = namespaces::with_hosts(&hosts)
        .args(["getent", "ahosts", "mail.both.test"])
        .output()
        .expect("getent");
    let resolved = String::from_utf8_lossy(&resolved.stdout);
    assert!(
        resolved.starts_with("::1 "),
        "IPv6 must come first: {resolved}"
    );

    let config = plain_config(dir.path(), "mail.both.test", server.port(), "");
    let mut command = namespaces::with_hosts(&hosts);
    command
        .arg(assert_cmd::cargo::cargo_bin("envoi"))
        .env_clear()
        .envs(hermetic_env(dir.path()))
        .args(["send", "-v", "--config"])
        .arg(&config)
        .args(["--to", "rcpt@example.com", "--subject", "eyeballs"])
        .args(["--body", "through", "--retries", "0"]);
    let (run, took) = Run::timed("envoi send (mail.both.test)", &mut command);
    let run = run.expect(0);
    // timeout_secs is 10: trying the addresses one after the other would wait that long.
    assert!(took < Duration::from_secs(3), "took {took:?}\n{run}");
    assert_eq!(only_body(&server), "through");
    let _ = hole.kill();
    let _ = hole.wait();
}
