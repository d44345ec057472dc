//! SASL XOAUTH2 and OAUTHBEARER against aiosmtpd speaking them as Gmail and Microsoft 365
//! do: the exact bytes of each mechanism, the token sources, and a refused token answered
//! the way those servers wait for (a reply to the `334 <JSON>` challenge) so the run ends
//! with 77 and the provider's reason, never a timeout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::certs::TestPki;
use crate::support::envoi::{Config, ExpectExit, envoi};
use crate::support::external::{Aiosmtpd, AiosmtpdOptions, TokenEndpoint, TokenEndpointOptions};

const MAILBOX: &str = "bot@example.com";
const TOKEN: &str = "ya29.canary-token-5f2c";

/// An aiosmtpd server under STARTTLS accepting `TOKEN` for `MAILBOX`, and a config for it
/// whose profile logs in with `auth` and the extra `lines`.
fn server(dir: &Path, auth: &str, lines: &[&str]) -> Option<(Aiosmtpd, PathBuf)> {
    let pki = Arc::new(TestPki::new());
    let ca = pki.write_ca(dir);
    let server = Aiosmtpd::start(AiosmtpdOptions {
        security: "starttls",
        auth: None,
        refuse_rcpt: vec![],
        cert_key: Some(pki.write_leaf(dir)),
        oauth: Some((MAILBOX.into(), vec![TOKEN.into()])),
        auth_reply: None,
        mail_reply: None,
    })?;
    let mut config = Config::new(server.port(), "starttls")
        .trust(&ca)
        .line(&format!("username = \"{MAILBOX}\""))
        .line(&format!("auth = \"{auth}\""));
    for line in lines {
        config = config.line(line);
    }
    let config = config.write(dir);
    Some((server, config))
}

/// `envoi send -v` through `config`, with `$MAIL_TOKEN` set to `token`.
fn send(dir: &Path, config: &Path, token: &str) -> assert_cmd::Command {
    let mut cmd = envoi(dir);
    cmd.env("MAIL_TOKEN", token)
        .arg("send")
        .arg("--config")
        .arg(config)
        .args([
            "--to",
            "dev@example.com",
            "--subject",
            "token",
            "--body",
            "hi",
            "-v",
        ]);
    cmd
}

#[test]
fn xoauth2_and_oauthbearer_log_in_with_the_exact_sasl_message() {
    for auth in ["xoauth2", "oauthbearer"] {
        for source in [
            "token_env = \"MAIL_TOKEN\"",
            "token_command = \"printf '%s\\\\n' \\\"$MAIL_TOKEN\\\"\"",
        ] {
            eprintln!("case: {auth} with {source}");
            let dir = TempDir::new().expect("temp dir");
            let Some((server, config)) = server(dir.path(), auth, &[source]) else {
                return;
            };
            let run = send(dir.path(), &config, TOKEN).expect_exit(0);
            assert!(
                !run.output().contains(TOKEN),
                "the token was printed: {run}"
            );
            let messages = server.messages();
            assert_eq!(messages.len(), 1, "{run}\n{}", server.log());
            assert_eq!(messages[0].auth_user.as_deref(), Some(MAILBOX));
            assert!(messages[0].tls, "logged in without TLS");
            let sasl = server.sasl();
            assert_eq!(sasl.len(), 1, "{sasl:?}");
            let expected = match auth {
                "xoauth2" => format!("user={MAILBOX}\x01auth=Bearer {TOKEN}\x01\x01"),
                _ => format!(
                    "n,a={MAILBOX},\x01host=localhost\x01port={}\x01auth=Bearer {TOKEN}\x01\x01",
                    server.port()
                ),
            };
            assert_eq!(sasl[0].message.as_deref(), Some(expected.as_str()));
            assert!(sasl[0].ok);
        }
    }
}

/// A refused token: the client answers the JSON challenge at once (empty line for
/// XOAUTH2, ^A for OAUTHBEARER), gets the 535, and exits 77 with the provider's reason;
/// not retried, nothing sent, well before the 10 s command timeout.
#[test]
fn a_refused_token_is_77_at_once_with_the_providers_reason() {
    for auth in ["xoauth2", "oauthbearer"] {
        let dir = TempDir::new().expect("temp dir");
        let Some((server, config)) = server(dir.path(), auth, &["token_env = \"MAIL_TOKEN\""])
        else {
            return;
        };
        let started = Instant::now();
        let run = send(dir.path(), &config, "expired-token").expect_exit(77);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{auth}: waited for a timeout instead of answering the challenge: {run}"
        );
        assert!(run.stderr.contains("\"status\":\"401\""), "{auth}: {run}");
        assert!(run.stderr.contains("535"), "{auth}: {run}");
        assert!(!run.stderr.contains("retrying"), "{auth}: {run}");
        assert!(!run.output().contains("expired-token"), "{auth}: {run}");
        assert!(server.messages().is_empty());
        let sasl = server.sasl();
        assert_eq!(sasl.len(), 2, "{auth}: {sasl:?}");
        assert!(!sasl[0].ok);
        assert!(
            sasl[1].mechanism.ends_with("error reply") && sasl[1].ok,
            "{auth}: the challenge was not answered as the mechanism requires: {sasl:?}"
        );
    }
}

/// Token keys are checked like password keys: the wrong kind of secret, or none, is
/// named (78) before anything connects.
#[test]
fn token_keys_that_do_not_fit_auth_are_configuration_errors() {
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "xoauth2",
            &["password_env = \"MAIL_TOKEN\""],
            "logs in with a token, not a password",
        ),
        ("oauthbearer", &[], "needs token_env, token_command"),
        (
            "password",
            &["[profiles.test.oauth2]", "flow = \"client_credentials\""],
            "[profiles.test.oauth2] is for auth",
        ),
        (
            "xoauth2",
            &[
                "token_env = \"MAIL_TOKEN\"",
                "[profiles.test.oauth2]",
                "flow = \"client_credentials\"",
            ],
            "not both",
        ),
        (
            "xoauth2",
            &["token_env = \"MAIL_TOKEN\"", "token_command = \"true\""],
            "only one of token_env and token_command",
        ),
        (
            "password",
            &["token_env = \"MAIL_TOKEN\""],
            "token_env is for auth",
        ),
    ];
    for (auth, lines, says) in cases {
        let dir = TempDir::new().expect("temp dir");
        let path = Config::new(9, "starttls")
            .line(&format!("username = \"{MAILBOX}\""))
            .line(&format!("auth = \"{auth}\""))
            .write(dir.path());
        let text = std::fs::read_to_string(&path).expect("config") + &lines.join("\n") + "\n";
        std::fs::write(&path, text).expect("config");
        let run = send(dir.path(), &path, TOKEN).expect_exit(78);
        assert!(run.stderr.contains(says), "{auth} {lines:?}: {run}");
    }
}

// ---------------------------------------------------------------------------------------------
// [profiles.NAME.oauth2]: envoi fetches the token itself from a loopback HTTPS endpoint
// (tests/it/support/oauth2_endpoint.py, RFC 6749) that issues at-native-1, at-native-2, …;
// the aiosmtpd server accepts exactly those for MAILBOX.
// ---------------------------------------------------------------------------------------------

const CLIENT_ID: &str = "envoi-test-app";
const CLIENT_SECRET: &str = "Canary-Client-Secret-9b1e";
const FIRST_REFRESH: &str = "rt-first-canary-4c7a";
const PREFIX: &str = "at-native-";
const SCOPE: &str = "https://outlook.office365.com/.default";

/// A token endpoint and an SMTP server sharing one test CA, and a config whose profile
/// logs in with XOAUTH2 and a `[profiles.test.oauth2]` table of `flow` (plus `extra`
/// lines in it); `token_url` replaces the endpoint's URL when given.
struct Native {
    dir: TempDir,
    endpoint: TokenEndpoint,
    smtp: Aiosmtpd,
    config: PathBuf,
}

fn native(flow: &str, expires_in: u64, token_url: Option<&str>) -> Option<Native> {
    native_with(flow, expires_in, token_url, None, true)
}

/// A temp HOME with a test CA, a token endpoint knowing `refresh_token` (issuing
/// `PREFIX1`, `PREFIX2`, … living `expires_in` s; answering every request `fail_status`
/// when given), and an SMTP server under STARTTLS taking the first nine of those tokens.
fn servers(
    refresh_token: Option<&str>,
    expires_in: u64,
    fail_status: Option<u16>,
) -> Option<(TempDir, PathBuf, TokenEndpoint, Aiosmtpd)> {
    let dir = TempDir::new().expect("temp dir");
    let pki = TestPki::new();
    let ca = pki.write_ca(dir.path());
    let leaf = pki.write_leaf(dir.path());
    let endpoint = TokenEndpoint::start(TokenEndpointOptions {
        cert_key: leaf.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        refresh_token: refresh_token.map(str::to_owned),
        token_prefix: PREFIX.into(),
        expires_in,
        fail_status,
    })?;
    let smtp = Aiosmtpd::start(AiosmtpdOptions {
        security: "starttls",
        auth: None,
        refuse_rcpt: vec![],
        cert_key: Some(leaf),
        oauth: Some((
            MAILBOX.into(),
            (1..=9).map(|n| format!("{PREFIX}{n}")).collect(),
        )),
        auth_reply: None,
        mail_reply: None,
    })?;
    Some((dir, ca, endpoint, smtp))
}

/// [`native`], with an endpoint that answers every request `fail_status`, and without
/// `ca_file` when not `trust`.
fn native_with(
    flow: &str,
    expires_in: u64,
    token_url: Option<&str>,
    fail_status: Option<u16>,
    trust: bool,
) -> Option<Native> {
    let (dir, ca, endpoint, smtp) = servers(Some(FIRST_REFRESH), expires_in, fail_status)?;
    let url = token_url.map_or_else(|| endpoint.url(), str::to_owned);
    let mut config = Config::new(smtp.port(), "starttls");
    if trust {
        config = config.trust(&ca);
    }
    config = config
        .line(&format!("username = \"{MAILBOX}\""))
        .line("auth = \"xoauth2\"")
        .line("[profiles.test.oauth2]")
        .line(&format!("flow = \"{flow}\""))
        .line(&format!("token_url = \"{url}\""))
        .line(&format!("client_id = \"{CLIENT_ID}\""))
        .line("client_secret_env = \"OAUTH_SECRET\"")
        .line(&format!("scope = \"{SCOPE}\""));
    if flow == "refresh_token" {
        config = config.line("refresh_token_env = \"OAUTH_REFRESH\"");
    }
    let config = config.write(dir.path());
    Some(Native {
        dir,
        endpoint,
        smtp,
        config,
    })
}

impl Native {
    /// `envoi send -v` with the client secret `secret` and the first refresh token in
    /// the environment.
    fn send(&self, secret: &str) -> assert_cmd::Command {
        let mut cmd = send(self.dir.path(), &self.config, "unused");
        cmd.env("OAUTH_SECRET", secret)
            .env("OAUTH_REFRESH", FIRST_REFRESH);
        cmd
    }

    /// The bearer token of each SASL message the SMTP server got, in order.
    fn tokens_used(&self) -> Vec<String> {
        self.smtp
            .sasl()
            .iter()
            .filter_map(|r| r.message.as_deref())
            .filter_map(|m| m.split("auth=Bearer ").nth(1))
            .map(|t| t.trim_end_matches('\x01').to_owned())
            .collect()
    }

    /// The cache files of the run's HOME (`~/.cache/envoi`, XDG_CACHE_HOME being unset).
    fn cache_files(&self) -> Vec<PathBuf> {
        let dir = self.dir.path().join(".cache/envoi");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .map(|e| e.expect("cache entry").path())
                    .filter(|p| p.extension().is_some_and(|e| e == "json"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// The one cache file, parsed.
    fn cache(&self) -> serde_json::Value {
        let files = self.cache_files();
        assert_eq!(files.len(), 1, "{files:?}");
        let text = std::fs::read_to_string(&files[0]).expect("read the cache");
        serde_json::from_str(&text).expect("the cache is JSON")
    }

    fn assert_private_cache(&self) {
        use std::os::unix::fs::PermissionsExt;
        for file in self.cache_files() {
            let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }
}

/// No secret of the test in what envoi printed.
fn assert_no_oauth_secret(run: &impl std::fmt::Display, output: &str) {
    for secret in [CLIENT_SECRET, FIRST_REFRESH, "rt-rotated-", PREFIX] {
        assert!(!output.contains(secret), "{secret} was printed: {run}");
    }
}

/// client_credentials: the first send asks the endpoint (one request: the right grant,
/// client, secret and scope) and logs in with the token it issued; the second send takes
/// it from the cache (still one request) and the server sees the same token. -v says
/// which, never the token; the cache file is 0600.
#[test]
fn client_credentials_fetches_once_then_uses_the_cache() {
    let Some(n) = native("client_credentials", 3600, None) else {
        return;
    };
    let first = n.send(CLIENT_SECRET).expect_exit(0);
    assert!(
        first.stderr.contains("fetched from https://127.0.0.1:"),
        "{first}"
    );
    assert_no_oauth_secret(&first, &first.output());
    let requests = n.endpoint.requests();
    assert_eq!(requests.len(), 1, "{requests:?}\n{}", n.endpoint.log());
    let r = &requests[0];
    assert_eq!(r.grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(r.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(r.secret_ok, Some(true));
    assert_eq!(r.scope.as_deref(), Some(SCOPE));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.access_token.as_deref(),
        Some(format!("{PREFIX}1").as_str())
    );

    let second = n.send(CLIENT_SECRET).expect_exit(0);
    assert!(second.stderr.contains("from the cache"), "{second}");
    assert_no_oauth_secret(&second, &second.output());
    assert_eq!(
        n.endpoint.requests().len(),
        1,
        "the cached token was not used"
    );

    assert_eq!(
        n.tokens_used(),
        [format!("{PREFIX}1"), format!("{PREFIX}1")]
    );
    assert!(n.smtp.sasl().iter().all(|r| r.ok));
    let messages = n.smtp.messages();
    assert_eq!(messages.len(), 2);
    assert!(
        messages
            .iter()
            .all(|m| m.auth_user.as_deref() == Some(MAILBOX))
    );
    n.assert_private_cache();
    assert_eq!(n.cache()["access_token"], format!("{PREFIX}1"));
}

/// A cached token with less than a minute left is not used: with expires_in = 65 the
/// second send (right after the first; up to 4 s later would do) reuses it, the third
/// (5 s later) refreshes with the rotated refresh token and logs in with the new access
/// token.
#[test]
fn an_expired_cached_token_is_refreshed() {
    let Some(n) = native("refresh_token", 65, None) else {
        return;
    };
    n.send(CLIENT_SECRET).expect_exit(0);
    let second = n.send(CLIENT_SECRET).expect_exit(0);
    assert!(second.stderr.contains("from the cache"), "{second}");
    assert_eq!(n.endpoint.requests().len(), 1);
    std::thread::sleep(Duration::from_millis(5100));
    let third = n.send(CLIENT_SECRET).expect_exit(0);
    assert!(third.stderr.contains("fetched from"), "{third}");
    assert_no_oauth_secret(&third, &third.output());
    let requests = n.endpoint.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].refresh_token.as_deref(), Some(FIRST_REFRESH));
    assert_eq!(requests[1].refresh_token.as_deref(), Some("rt-rotated-1"));
    assert!(requests.iter().all(|r| r.status == 200));
    assert_eq!(
        n.tokens_used(),
        [
            format!("{PREFIX}1"),
            format!("{PREFIX}1"),
            format!("{PREFIX}2")
        ]
    );
    assert_eq!(n.smtp.messages().len(), 3);
}

/// Rotation: with tokens that are never reused (expires_in 30 < the 60 s margin), two
/// sends in a row each refresh with the latest refresh token (the configured one, then
/// the one the first answer rotated in), and the cache ends with the newest. The
/// configured, now spent, refresh token is refused by the endpoint (invalid_grant): a run
/// with an empty cache exits 77 with the endpoint's words, and sends nothing.
#[test]
fn a_rotated_refresh_token_replaces_the_old_one_at_once() {
    let Some(n) = native("refresh_token", 30, None) else {
        return;
    };
    n.send(CLIENT_SECRET).expect_exit(0);
    n.send(CLIENT_SECRET).expect_exit(0);
    let requests = n.endpoint.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].refresh_token.as_deref(), Some(FIRST_REFRESH));
    assert_eq!(
        requests[0].new_refresh_token.as_deref(),
        Some("rt-rotated-1")
    );
    assert_eq!(requests[1].refresh_token.as_deref(), Some("rt-rotated-1"));
    assert_eq!(
        requests[1].new_refresh_token.as_deref(),
        Some("rt-rotated-2")
    );
    assert_eq!(n.cache()["refresh_token"], "rt-rotated-2");
    assert_eq!(
        n.tokens_used(),
        [format!("{PREFIX}1"), format!("{PREFIX}2")]
    );
    n.assert_private_cache();

    let elsewhere = n.dir.path().join("other-cache");
    let stale = n
        .send(CLIENT_SECRET)
        .env("XDG_CACHE_HOME", &elsewhere)
        .expect_exit(77);
    assert!(stale.stderr.contains("invalid_grant"), "{stale}");
    assert!(stale.stderr.contains("AADSTS70000"), "{stale}");
    assert_no_oauth_secret(&stale, &stale.output());
    let requests = n.endpoint.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].refresh_token.as_deref(), Some(FIRST_REFRESH));
    assert_eq!(requests[2].error.as_deref(), Some("invalid_grant"));
    assert_eq!(n.smtp.messages().len(), 2, "the refused run sent something");
}

/// Four envoi runs at once with an empty cache: the lock makes one of them refresh and
/// the others take its token from the cache, so the one-time refresh token is spent once
/// and every run succeeds.
#[test]
fn concurrent_runs_refresh_once() {
    let Some(n) = native("refresh_token", 3600, None) else {
        return;
    };
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| n.send(CLIENT_SECRET).expect_exit(0)))
            .collect();
        for run in runs {
            run.join().expect("a send thread");
        }
    });
    let requests = n.endpoint.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].status, 200);
    assert_eq!(n.tokens_used(), vec![format!("{PREFIX}1"); 4]);
    assert_eq!(n.smtp.messages().len(), 4);
    assert_eq!(n.cache()["refresh_token"], "rt-rotated-1");
}

/// A wrong client secret: the endpoint answers 401 invalid_client; envoi exits 77 with
/// the endpoint's words and prints neither secret; nothing reaches the SMTP server.
#[test]
fn a_bad_client_secret_is_77_with_the_endpoints_words() {
    let Some(n) = native("client_credentials", 3600, None) else {
        return;
    };
    let wrong = "Wrong-Secret-Canary-31f0";
    let run = n.send(wrong).expect_exit(77);
    assert!(run.stderr.contains("invalid_client"), "{run}");
    assert!(run.stderr.contains("AADSTS7000215"), "{run}");
    assert!(
        !run.output().contains(wrong),
        "the secret was printed: {run}"
    );
    assert_no_oauth_secret(&run, &run.output());
    let requests = n.endpoint.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].secret_ok, Some(false));
    assert_eq!(requests[0].status, 401);
    assert!(n.smtp.sasl().is_empty());
    assert!(n.smtp.transcript().is_empty(), "{}", n.smtp.transcript());
    assert!(n.cache_files().is_empty());
}

/// A token_url in plain http to another machine is a configuration error (78) naming
/// the key, found before anything is sent anywhere.
#[test]
fn plain_http_to_another_machine_is_78() {
    let Some(n) = native(
        "client_credentials",
        3600,
        Some("http://login.example.com/token"),
    ) else {
        return;
    };
    let run = n.send(CLIENT_SECRET).expect_exit(78);
    assert!(run.stderr.contains("oauth2.token_url"), "{run}");
    assert!(run.stderr.contains("plain http"), "{run}");
    assert!(n.endpoint.requests().is_empty());
    assert!(n.smtp.transcript().is_empty(), "{}", n.smtp.transcript());
}

/// An endpoint nobody listens on: 75 (try again later), and no SMTP connection.
#[test]
fn an_unreachable_endpoint_is_75() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("port").port();
    drop(closed);
    let url = format!("https://127.0.0.1:{port}/token");
    let Some(n) = native("client_credentials", 3600, Some(&url)) else {
        return;
    };
    let run = n.send(CLIENT_SECRET).expect_exit(75);
    assert!(
        run.stderr.contains("cannot reach the token endpoint"),
        "{run}"
    );
    assert_no_oauth_secret(&run, &run.output());
    assert!(n.endpoint.requests().is_empty());
    assert!(n.smtp.transcript().is_empty(), "{}", n.smtp.transcript());
}

/// An endpoint in trouble (503) is 75, try again later, with its status; nothing is sent.
#[test]
fn an_endpoint_answering_5xx_is_75() {
    let Some(n) = native_with("client_credentials", 3600, None, Some(503), true) else {
        return;
    };
    let run = n.send(CLIENT_SECRET).expect_exit(75);
    assert!(run.stderr.contains("HTTP 503"), "{run}");
    assert_no_oauth_secret(&run, &run.output());
    let requests = n.endpoint.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].status, 503);
    assert!(n.smtp.transcript().is_empty(), "{}", n.smtp.transcript());
    assert!(n.cache_files().is_empty());
}

/// The token endpoint's certificate is checked like the SMTP server's: signed by a CA
/// the profile does not trust (no ca_file) it is 77 "unknown issuer", before the client
/// secret is sent (the endpoint logs no request) and before any SMTP connection.
#[test]
fn an_untrusted_endpoint_certificate_is_77_before_the_secret_is_sent() {
    let Some(n) = native_with("client_credentials", 3600, None, None, false) else {
        return;
    };
    let run = n.send(CLIENT_SECRET).expect_exit(77);
    assert!(run.stderr.contains("unknown issuer"), "{run}");
    assert!(n.endpoint.requests().is_empty());
    assert!(n.smtp.transcript().is_empty(), "{}", n.smtp.transcript());
}

/// `envoi config show` lists the oauth2 settings, the tenant as the URL it stands for,
/// and the client secret by its source only.
#[test]
fn config_show_lists_the_oauth2_settings_without_the_secret() {
    let dir = TempDir::new().expect("temp dir");
    let inline = "Canary-Inline-Secret-77aa";
    let config = Config::new(587, "starttls")
        .line(&format!("username = \"{MAILBOX}\""))
        .line("auth = \"xoauth2\"")
        .line("[profiles.test.oauth2]")
        .line("flow = \"client_credentials\"")
        .line("tenant = \"contoso.onmicrosoft.com\"")
        .line(&format!("client_id = \"{CLIENT_ID}\""))
        .line(&format!("client_secret = \"{inline}\""))
        .line(&format!("scope = \"{SCOPE}\""))
        .write(dir.path());
    let run = envoi(dir.path())
        .args(["config", "show", "--config"])
        .arg(&config)
        .expect_exit(0);
    for expected in [
        "oauth2.flow",
        "client_credentials",
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
        CLIENT_ID,
        SCOPE,
        "in the config file (hidden)",
        ".cache/envoi",
    ] {
        assert!(run.stdout.contains(expected), "{expected}: {run}");
    }
    assert!(
        !run.output().contains(inline),
        "the secret was shown: {run}"
    );
}

/// A cached token the server refuses before its time is up (revoked early, a password
/// change): envoi forgets it, fetches a new one, and the same run delivers; without
/// that every send would be refused until the token expired.
#[test]
fn a_cached_token_the_server_refuses_is_replaced_in_the_same_run() {
    let Some(n) = native("client_credentials", 3600, None) else {
        return;
    };
    n.send(CLIENT_SECRET).expect_exit(0);
    // Revoke the cached token: the SMTP server accepts only at-native-1..9.
    let file = &n.cache_files()[0];
    let mut cache = n.cache();
    cache["access_token"] = "at-revoked".into();
    std::fs::write(file, cache.to_string()).expect("write the cache");

    let run = n.send(CLIENT_SECRET).expect_exit(0);
    assert!(
        run.stderr.contains("refused the cached OAuth2 token"),
        "{run}"
    );
    assert_no_oauth_secret(&run, &run.output());
    assert_eq!(n.endpoint.requests().len(), 2, "no new token was fetched");
    assert_eq!(
        n.tokens_used(),
        [
            format!("{PREFIX}1"),
            "at-revoked".into(),
            format!("{PREFIX}2")
        ]
    );
    assert_eq!(n.smtp.messages().len(), 2, "{run}");
    assert_eq!(n.cache()["access_token"], format!("{PREFIX}2"));
}

/// A batch outlives its token: with tokens that may be used for 1 s (expires_in 61, a
/// minute of margin) and sessions 2 s apart (`--per-session 1 --rate 30/m`), each session
/// logs in with a token fetched for it, not the one the batch started with.
#[test]
fn a_batch_takes_a_current_token_for_each_session() {
    let Some(n) = native("client_credentials", 61, None) else {
        return;
    };
    let records: String = (1..=3)
        .map(|i| format!("{{\"To\":\"r{i}@example.com\",\"Subject\":\"m{i}\",\"Body\":\"x\"}}\n"))
        .collect();
    let file = n.dir.path().join("mail.jsonl");
    std::fs::write(&file, records).expect("write the records");
    let run = envoi(n.dir.path())
        .env("OAUTH_SECRET", CLIENT_SECRET)
        .arg("batch")
        .arg("--config")
        .arg(&n.config)
        .args(["--from", MAILBOX, "--per-session", "1", "--rate", "30/m"])
        .arg(&file)
        .expect_exit(0);
    assert!(
        run.stderr.contains("sent 3") && run.stderr.contains("3 sessions"),
        "{run}"
    );
    assert_no_oauth_secret(&run, &run.output());
    assert_eq!(
        n.tokens_used(),
        (1..=3).map(|i| format!("{PREFIX}{i}")).collect::<Vec<_>>(),
        "one current token per session"
    );
    assert_eq!(n.endpoint.requests().len(), 3);
    assert_eq!(n.smtp.messages().len(), 3);
}

// ----- envoi auth login | status | logout -----

/// A token endpoint that knows no refresh token until a login, an SMTP server taking
/// its tokens, and a refresh-flow profile whose consent is `consent` (a line of the
/// oauth2 table; `{device}` stands for the endpoint's device authorization URL). The
/// access tokens live 65 s: one minute of margin leaves 5 s of use.
fn login_setup(consent: &str) -> Option<Native> {
    let (dir, ca, endpoint, smtp) = servers(None, 65, None)?;
    let config = Config::new(smtp.port(), "starttls")
        .trust(&ca)
        .line(&format!("username = \"{MAILBOX}\""))
        .line("auth = \"xoauth2\"")
        .line("[profiles.test.oauth2]")
        .line("flow = \"refresh_token\"")
        .line(&format!("token_url = \"{}\"", endpoint.url()))
        .line(&format!("client_id = \"{CLIENT_ID}\""))
        .line("scope = \"https://outlook.office.com/SMTP.Send offline_access\"")
        .line(&consent.replace("{device}", &endpoint.device_code_url()))
        .write(dir.path());
    Some(Native {
        dir,
        endpoint,
        smtp,
        config,
    })
}

impl Native {
    /// `envoi auth <args> --config <config>`.
    fn auth(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = envoi(self.dir.path());
        cmd.arg("auth").args(args).arg("--config").arg(&self.config);
        cmd
    }
}

/// The device flow (Microsoft's): the code is shown, the endpoint polled until the user
/// consented (one `authorization_pending` first), and the refresh token stored. Sends
/// then use the login's tokens, refreshing with its refresh token when the access token
/// runs out; `auth status` says so; `auth logout` forgets them, and a send then names
/// the fix (78).
#[test]
fn auth_login_device_flow_stores_a_refresh_token_that_sends_use() {
    let Some(n) = login_setup("device_code_url = \"{device}\"") else {
        return;
    };
    let login = n.auth(&["login", "--timeout", "60"]).expect_exit(0);
    assert!(
        login
            .stderr
            .contains("open https://login.example.test/device")
            && login.stderr.contains("WDJB-MJHT"),
        "{login}"
    );
    assert_no_oauth_secret(&login, &login.output());
    let requests = n.endpoint.requests();
    let summary: Vec<(&str, Option<&str>, u16)> = requests
        .iter()
        .map(|r| (r.path.as_str(), r.error.as_deref(), r.status))
        .collect();
    assert_eq!(
        summary,
        [
            ("/devicecode", None, 200),
            ("/token", Some("authorization_pending"), 400),
            ("/token", None, 200)
        ],
        "{login}"
    );
    assert_eq!(
        requests[0].scope.as_deref(),
        Some("https://outlook.office.com/SMTP.Send offline_access")
    );
    assert_eq!(n.cache()["refresh_token"], "rt-login-1");
    n.assert_private_cache();

    let status = n.auth(&["status", "--json"]).expect_exit(0).json();
    assert_eq!(status[0]["profile"], "test", "{status}");
    assert_eq!(status[0]["refresh_token"], true);
    assert_eq!(status[0]["from_login"], true);
    assert!(status[0]["access_token_valid_secs"].as_u64().unwrap_or(0) > 0);
    assert!(!status.to_string().contains(PREFIX), "a token in {status}");

    n.send("unused").expect_exit(0);
    std::thread::sleep(Duration::from_millis(5100));
    let refreshed = n.send("unused").expect_exit(0);
    assert!(
        refreshed.stderr.contains("stored by envoi auth login"),
        "{refreshed}"
    );
    let last = n.endpoint.requests().pop().expect("a refresh");
    assert_eq!(last.grant_type.as_deref(), Some("refresh_token"));
    assert_eq!(last.refresh_token.as_deref(), Some("rt-login-1"));
    assert_eq!(
        n.tokens_used(),
        [format!("{PREFIX}1"), format!("{PREFIX}2")]
    );
    assert_eq!(n.cache()["refresh_token"], "rt-rotated-1");

    let logout = n.auth(&["logout"]).expect_exit(0);
    assert!(logout.stderr.contains("forgot"), "{logout}");
    assert!(n.cache_files().is_empty());
    let text = n.auth(&["status"]).expect_exit(0);
    assert!(
        text.stdout.contains("envoi auth login --profile test"),
        "{text}"
    );
    let after = n.send("unused").expect_exit(78);
    assert!(after.stderr.contains("run `envoi auth login`"), "{after}");
    assert_eq!(n.smtp.messages().len(), 2);
}

/// Reads `path` until `pattern` appears in it (at most 20 s): a spawned envoi's stderr.
fn wait_for_text(path: &Path, pattern: &str) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(pattern) || started.elapsed() > Duration::from_secs(20) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Plays the browser coming back to `redirect_uri` with `query`: the page envoi answers.
fn browser_returns(redirect_uri: &str, query: &str) -> String {
    use std::io::{Read, Write};
    let url = url::Url::parse(redirect_uri).expect("a redirect URI");
    let mut stream = std::net::TcpStream::connect((
        url.host_str().expect("a host"),
        url.port().expect("a port"),
    ))
    .expect("connect to envoi's listener");
    write!(
        stream,
        "GET /?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut page = String::new();
    stream.read_to_string(&mut page).expect("read the page");
    page
}

/// Starts `envoi auth login` of `n` in the background; its stderr file and the consent
/// URL it printed, parsed.
fn start_browser_login(n: &Native) -> (std::process::Child, PathBuf, url::Url) {
    let stderr = n.dir.path().join("login.stderr");
    let child = crate::support::envoi::spawn_envoi(
        n.dir.path(),
        &[
            "auth".into(),
            "login".into(),
            "--timeout".into(),
            "60".into(),
            "--config".into(),
            n.config.clone().into(),
        ],
        std::fs::File::create(n.dir.path().join("login.stdout")).expect("stdout file"),
        std::fs::File::create(&stderr).expect("stderr file"),
    );
    let text = wait_for_text(&stderr, "/authorize?");
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("https://"))
        .unwrap_or_else(|| panic!("no consent URL in: {text}"));
    (
        child,
        stderr,
        url::Url::parse(line).expect("the consent URL parses"),
    )
}

/// The browser flow (Google's): the consent URL carries the client, the redirect to a
/// listener on 127.0.0.1, a state and an S256 PKCE challenge; the browser's return with
/// the code is exchanged with the verifier whose SHA-256 is that challenge; sends then
/// use the tokens.
#[test]
fn auth_login_browser_flow_uses_pkce_and_a_loopback_redirect() {
    let Some(n) = login_setup("auth_url = \"https://127.0.0.1:9/authorize\"") else {
        return;
    };
    let (mut child, stderr, consent) = start_browser_login(&n);
    let param = |name: &str| {
        consent
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no {name} in {consent}"))
    };
    assert_eq!(param("response_type"), "code");
    assert_eq!(param("client_id"), CLIENT_ID);
    assert_eq!(param("code_challenge_method"), "S256");
    let redirect = param("redirect_uri");
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    let page = browser_returns(
        &redirect,
        &format!("code=code-canary-1&state={}", param("state")),
    );
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("signed in"),
        "{page}"
    );
    let status = child.wait().expect("envoi ends");
    let text = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(status.success(), "{status}: {text}");

    let exchange = n.endpoint.requests().pop().expect("the code exchange");
    assert_eq!(exchange.grant_type.as_deref(), Some("authorization_code"));
    assert_eq!(exchange.redirect_uri.as_deref(), Some(redirect.as_str()));
    let verifier = exchange.code_verifier.expect("a PKCE verifier");
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    assert_eq!(challenge, param("code_challenge"));
    assert_eq!(n.cache()["refresh_token"], "rt-login-1");
    n.send("unused").expect_exit(0);
    assert_eq!(n.tokens_used(), [format!("{PREFIX}1")]);
}

/// A browser that comes back with a state envoi did not send (an old tab, a forged
/// link) stores nothing and ends the login with 77.
#[test]
fn auth_login_refuses_a_foreign_state() {
    let Some(n) = login_setup("auth_url = \"https://127.0.0.1:9/authorize\"") else {
        return;
    };
    let (mut child, stderr, consent) = start_browser_login(&n);
    let redirect = consent
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .expect("a redirect_uri");
    let page = browser_returns(&redirect, "code=code-canary-1&state=forged");
    assert!(page.starts_with("HTTP/1.1 400"), "{page}");
    let status = child.wait().expect("envoi ends");
    let text = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert_eq!(status.code(), Some(77), "{text}");
    assert!(text.contains("state envoi did not send"), "{text}");
    assert!(n.endpoint.requests().is_empty(), "the code was exchanged");
    assert!(n.cache_files().is_empty());
}
