//! Network reach of the HTTPS transports (issue 17): Microsoft Graph, the Gmail API and an
//! `[oauth2]` token endpoint reached through the same real proxies as SMTP (Debian's
//! tinyproxy for HTTP CONNECT, dante for SOCKS5), chosen by the `proxy` key or by
//! `HTTPS_PROXY` / `NO_PROXY`. The proxy's own log shows the tunnel it made; the loopback
//! API server (`support/mail_api.py`) records the message that came through it.
//!
//! The environment's proxies never apply to a loopback host, so those tests name the API
//! by a name that only dante's own `/etc/hosts` knows (127.0.0.1 there), and pin the
//! server's certificate (the pin is the whole trust, whatever the name).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mail_parser::MessageParser;
use tempfile::TempDir;

use crate::reach::black_hole_v6;
use crate::support::certs::TestPki;
use crate::support::envoi::{ExpectExit, Run, assert_no_secret, envoi, hermetic_env};
use crate::support::external::{TokenEndpoint, TokenEndpointOptions};
use crate::support::mail_api::{GMAIL, MAILBOX, MailApi, MailApiOptions};
use crate::support::namespaces;
use crate::support::proxies::Proxy;

/// The bearer token the API server accepts (token_env).
const TOKEN: &str = "canary-reach-token-5d2e";

/// The API's name that only dante's `/etc/hosts` knows.
const PROXY_ONLY_API: &str = "api.proxy-only.test";

/// A temp dir, the test PKI with its CA written there, and the API server serving its leaf.
fn start(pki: &TestPki) -> Option<(TempDir, PathBuf, MailApi)> {
    let dir = TempDir::new().expect("temp dir");
    let ca = pki.write_ca(dir.path());
    let leaf = pki.write_leaf(dir.path());
    let server = MailApi::start(MailApiOptions::new(leaf, TOKEN))?;
    Some((dir, ca, server))
}

/// Writes a config whose default profile `api` is `transport` to `api_url` from `from`,
/// with `token_env = "API_TOKEN"` unless `extra` gives a token source, and `extra` lines.
fn config(dir: &Path, transport: &str, from: &str, api_url: &str, extra: &[String]) -> PathBuf {
    let path = dir.join("config.toml");
    let mut text = format!(
        "default = \"api\"\n[profiles.api]\ntransport = \"{transport}\"\n\
         from = \"Reports <{from}>\"\napi_url = \"{api_url}\"\ntimeout_secs = 10\n"
    );
    if !extra.iter().any(|l| l.contains("oauth2")) {
        text.push_str("token_env = \"API_TOKEN\"\n");
    }
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(&path, text).expect("write the config");
    path
}

/// `envoi <sub> --config <config>` with `$API_TOKEN` set.
fn cmd(home: &Path, config: &Path, sub: &str) -> assert_cmd::Command {
    let mut cmd = envoi(home);
    cmd.env("API_TOKEN", TOKEN)
        .arg(sub)
        .arg("--config")
        .arg(config);
    cmd
}

/// `envoi config show --config <config>`.
fn show(home: &Path, config: &Path) -> assert_cmd::Command {
    let mut cmd = envoi(home);
    cmd.env("API_TOKEN", TOKEN)
        .args(["config", "show", "--config"])
        .arg(config);
    cmd
}

/// `envoi send` of one small message, no retries.
fn send(home: &Path, config: &Path) -> assert_cmd::Command {
    let mut cmd = cmd(home, config, "send");
    cmd.args(["--to", "ann@example.net", "--subject", "Nightly"])
        .args(["--body", "through the proxy", "--retries", "0"]);
    cmd
}

/// The one message the server accepted: its subject and body, parsed.
#[track_caller]
fn accepted_body(server: &MailApi) -> String {
    let (request, bytes) = server.only_accepted();
    assert_eq!(request.method, "POST");
    let parsed = MessageParser::default().parse(&bytes).expect("a message");
    assert_eq!(parsed.subject(), Some("Nightly"));
    parsed.body_text(0).expect("a text body").trim().to_owned()
}

/// The port of a loopback URL `scheme://127.0.0.1:PORT[/path]`.
fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// The API server's port.
fn api_port(server: &MailApi) -> u16 {
    port_of(&server.gmail_url())
}

/// A hosts file naming `name` each of `addresses` in turn (and 127.0.0.1 localhost).
fn hosts_file(dir: &Path, name: &str, addresses: &[&str]) -> PathBuf {
    let path = dir.join("hosts");
    let text: String = addresses.iter().map(|a| format!("{a} {name}\n")).collect();
    std::fs::write(&path, format!("127.0.0.1 localhost\n{text}")).expect("write hosts");
    path
}

/// The `key  value  (origin)` line of `config show` for `key`.
#[track_caller]
fn shown(run: &Run, key: &str) -> String {
    run.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no {key} line: {run}"))
        .to_owned()
}

#[test]
fn graph_sends_through_a_tinyproxy_connect_tunnel_and_check_and_show_say_so() {
    let pki = TestPki::new();
    let Some((dir, ca, server)) = start(&pki) else {
        return;
    };
    let Some(proxy) = Proxy::tinyproxy(dir.path(), &[api_port(&server)], None) else {
        return;
    };
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let config = config(
        dir.path(),
        "graph",
        MAILBOX,
        &server.graph_url(),
        &[
            format!("ca_file = \"{}\"", ca.display()),
            format!("proxy = \"{proxy_url}\""),
        ],
    );
    let run = send(dir.path(), &config).arg("-v").expect_exit(0);
    assert_eq!(accepted_body(&server), "through the proxy");
    assert!(
        run.stderr
            .contains(&format!("Microsoft Graph through the proxy {proxy_url}")),
        "{run}"
    );
    assert!(
        proxy.logged(&format!("CONNECT 127.0.0.1:{} HTTP/1.1", api_port(&server))),
        "{}",
        proxy.log()
    );
    assert_no_secret(&run.output());
    assert!(!run.output().contains(TOKEN), "{run}");

    // `envoi check` went through the proxy too, and says so.
    let before = proxy.log().matches("CONNECT 127.0.0.1").count();
    let run = cmd(dir.path(), &config, "check").expect_exit(0);
    assert!(
        run.stdout
            .contains(&format!("(through the proxy {proxy_url})")),
        "{run}"
    );
    let json = cmd(dir.path(), &config, "check")
        .arg("--json")
        .expect_exit(0)
        .json();
    assert_eq!(json["proxy"], proxy_url.as_str(), "{json}");
    assert!(proxy.log().matches("CONNECT 127.0.0.1").count() >= before + 2);

    // `config show` names the proxy and the file as its origin.
    let run = show(dir.path(), &config).expect_exit(0);
    let line = shown(&run, "proxy");
    assert!(line.contains(&proxy_url) && line.contains("file"), "{line}");
}

#[test]
fn a_tunnel_the_proxy_refuses_is_69_naming_the_proxy_and_nothing_reaches_the_api() {
    let pki = TestPki::new();
    let Some((dir, ca, server)) = start(&pki) else {
        return;
    };
    // tinyproxy may CONNECT to another port only.
    let Some(proxy) = Proxy::tinyproxy(dir.path(), &[api_port(&server).wrapping_add(1)], None)
    else {
        return;
    };
    let config = config(
        dir.path(),
        "graph",
        MAILBOX,
        &server.graph_url(),
        &[
            format!("ca_file = \"{}\"", ca.display()),
            format!("proxy = \"http://127.0.0.1:{}\"", proxy.port),
        ],
    );
    let run = send(dir.path(), &config).expect_exit(69);
    let words = format!(
        "cannot reach Microsoft Graph at {}: the proxy http://127.0.0.1:{} refused the tunnel \
         to 127.0.0.1:{}: 403 Access violation",
        server.graph_url(),
        proxy.port,
        api_port(&server)
    );
    assert!(run.stderr.contains(&words), "{run}");
    assert!(server.requests().is_empty(), "a request got through");
}

#[test]
fn gmail_goes_through_dante_by_https_proxy_socks5h_and_no_proxy_excludes_the_host() {
    let pki = TestPki::new();
    let Some((dir, _ca, server)) = start(&pki) else {
        return;
    };
    let hosts = hosts_file(dir.path(), PROXY_ONLY_API, &["127.0.0.1"]);
    let Some(proxy) = Proxy::dante(dir.path(), Some(&hosts)) else {
        return;
    };
    assert!(
        (PROXY_ONLY_API, 443)
            .to_socket_addrs()
            .map_or(true, |mut a| a.next().is_none()),
        "{PROXY_ONLY_API} must not resolve outside the proxy"
    );
    // No proxy key: the environment decides. The name is not loopback, so HTTPS_PROXY
    // applies; the certificate is pinned, as it does not name it.
    let api_url = format!("https://{PROXY_ONLY_API}:{}", api_port(&server));
    let config = config(
        dir.path(),
        "gmail",
        GMAIL,
        &api_url,
        &[format!("tls_fingerprint = \"{}\"", pki.leaf_fingerprint())],
    );
    let https_proxy = format!("socks5h://127.0.0.1:{}", proxy.port);
    send(dir.path(), &config)
        .env("HTTPS_PROXY", &https_proxy)
        // HTTPS_PROXY comes first; a broken ALL_PROXY would fail the send.
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .expect_exit(0);
    assert_eq!(accepted_body(&server), "through the proxy");
    // dante resolved the name: it logs the tunnel to 127.0.0.1.
    let tunnel = format!("127.0.0.1.{}", api_port(&server));
    assert!(proxy.logged(&tunnel), "{}", proxy.log());

    // `config show` names the variable as the proxy's origin.
    let run = show(dir.path(), &config)
        .env("HTTPS_PROXY", &https_proxy)
        .expect_exit(0);
    let line = shown(&run, "proxy");
    assert!(
        line.contains(&https_proxy) && line.contains("$HTTPS_PROXY"),
        "{line}"
    );

    // NO_PROXY names the host's domain: envoi connects directly, and cannot resolve it.
    let before = proxy.log().matches(&tunnel).count();
    let run = send(dir.path(), &config)
        .env("HTTPS_PROXY", &https_proxy)
        .env("NO_PROXY", "localhost,.proxy-only.test")
        .expect_exit(75);
    assert!(
        run.stderr.contains("cannot reach the Gmail API") && !run.stderr.contains("the proxy"),
        "{run}"
    );
    assert_eq!(
        proxy.log().matches(&tunnel).count(),
        before,
        "{}",
        proxy.log()
    );
    assert_eq!(server.sends().len(), 1);
}

#[test]
fn a_native_oauth2_token_is_fetched_through_the_profiles_proxy() {
    let pki = TestPki::new();
    let dir = TempDir::new().expect("temp dir");
    let ca = pki.write_ca(dir.path());
    let leaf = pki.write_leaf(dir.path());
    let Some(endpoint) = TokenEndpoint::start(TokenEndpointOptions {
        cert_key: leaf.clone(),
        client_id: "envoi-app".into(),
        client_secret: "Canary-Client-Secret-91".into(),
        refresh_token: None,
        token_prefix: "at-".into(),
        expires_in: 3600,
        fail_status: None,
    }) else {
        return;
    };
    let Some(server) = MailApi::start(MailApiOptions::new(leaf, "at-1")) else {
        return;
    };
    let token_port = port_of(&endpoint.url());
    let Some(proxy) = Proxy::tinyproxy(dir.path(), &[api_port(&server), token_port], None) else {
        return;
    };
    let config = config(
        dir.path(),
        "graph",
        MAILBOX,
        &server.graph_url(),
        &[
            format!("ca_file = \"{}\"", ca.display()),
            format!("proxy = \"http://127.0.0.1:{}\"", proxy.port),
            "[profiles.api.oauth2]".into(),
            "flow = \"client_credentials\"".into(),
            format!("token_url = \"{}\"", endpoint.url()),
            "client_id = \"envoi-app\"".into(),
            "client_secret_env = \"APP_SECRET\"".into(),
            "scope = \"https://graph.microsoft.com/.default\"".into(),
        ],
    );
    let run = send(dir.path(), &config)
        .env("APP_SECRET", "Canary-Client-Secret-91")
        .expect_exit(0);
    assert_eq!(endpoint.requests().len(), 1, "{run}");
    assert_eq!(accepted_body(&server), "through the proxy");
    assert_eq!(server.sends()[0].token.as_deref(), Some("at-1"));
    for port in [token_port, api_port(&server)] {
        assert!(
            proxy.logged(&format!("CONNECT 127.0.0.1:{port} HTTP/1.1")),
            "no tunnel to {port}: {}",
            proxy.log()
        );
    }
    assert!(
        !run.output().contains("at-1") && !run.output().contains("Canary-Client"),
        "{run}"
    );
}

#[test]
fn happy_eyeballs_takes_graph_past_a_black_holed_ipv6_address_in_well_under_the_timeout() {
    if !namespaces::available() {
        return;
    }
    let pki = TestPki::new();
    let Some((dir, _ca, server)) = start(&pki) else {
        return;
    };
    // The API on 127.0.0.1:P, a black hole on [::1]:P, one name for both, IPv6 first.
    let port = api_port(&server);
    let mut hole = black_hole_v6(port);
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    // Fill the accept queue until an attempt times out: from then on every SYN is dropped.
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
    assert!(black_holed, "[::1]:{port} answers: not a black hole");
    let name = "graph.both.test";
    let hosts = hosts_file(dir.path(), name, &["::1", "127.0.0.1"]);
    let config = config(
        dir.path(),
        "graph",
        MAILBOX,
        &format!("https://{name}:{port}/v1.0"),
        &[format!("tls_fingerprint = \"{}\"", pki.leaf_fingerprint())],
    );
    let mut command = namespaces::with_hosts(&hosts);
    command
        .arg(assert_cmd::cargo::cargo_bin("envoi"))
        .env_clear()
        .envs(hermetic_env(dir.path()))
        .env("API_TOKEN", TOKEN)
        .args(["send", "--config"])
        .arg(&config)
        .args(["--to", "ann@example.net", "--subject", "Nightly"])
        .args(["--body", "through the proxy", "--retries", "0"]);
    let (run, took) = Run::timed(&format!("envoi send ({name})"), &mut command);
    let run = run.expect(0);
    // timeout_secs is 10: trying the addresses one after the other would wait that long.
    assert!(took < Duration::from_secs(3), "took {took:?}\n{run}");
    assert_eq!(accepted_body(&server), "through the proxy");
    let _ = hole.kill();
    let _ = hole.wait();
}
