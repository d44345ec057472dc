//! SASL over an open session (RFC 4954): PLAIN or LOGIN with a password, XOAUTH2 or
//! OAUTHBEARER (RFC 7628) with a bearer token.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::error::{Error, ErrorKind, Result};
use crate::profile::{Auth, Password};

use super::fail::{negative, with_hint};
use super::reply::{Reply, printable};
use super::session::SmtpSession;

impl SmtpSession {
    /// AUTH PLAIN, else LOGIN, as the server offers (RFC 4954).
    pub(super) fn login(&mut self, user: &str, password: &Password) -> Result<()> {
        let refused = |reply: &Reply, server: &str| {
            if reply.code >= 500 {
                Error::new(
                    ErrorKind::AuthRefused,
                    with_hint(
                        format!(
                            "{server} refused the login for user {user:?}: {} {}",
                            reply.code,
                            printable(reply.text())
                        ),
                        reply,
                    ),
                )
            } else {
                negative("AUTH", reply)
            }
        };
        self.hidden.extend([
            password.clone(),
            Password::new(BASE64.encode(password.expose())),
            Password::new(BASE64.encode(format!("\0{user}\0{}", password.expose()))),
        ]);
        let reply = if self.caps.offers_auth("PLAIN") {
            let token = BASE64.encode(format!("\0{user}\0{}", password.expose()));
            self.secret_command(&format!("AUTH PLAIN {token}"), "AUTH PLAIN [redacted]")?
        } else if self.caps.offers_auth("LOGIN") {
            let reply = self.command("AUTH LOGIN", "AUTH")?;
            if reply.code != 334 {
                return Err(refused(&reply, &self.server));
            }
            let reply = self.secret_command(&BASE64.encode(user), "[redacted: user name]")?;
            if reply.code != 334 {
                return Err(refused(&reply, &self.server));
            }
            self.secret_command(&BASE64.encode(password.expose()), "[redacted]")?
        } else {
            return Err(Error::new(
                ErrorKind::AuthRefused,
                format!(
                    "{} offers no login method envoi supports (PLAIN, LOGIN); it offers: {}",
                    self.server,
                    if self.caps.auth.is_empty() {
                        "none".to_owned()
                    } else {
                        self.caps.auth.join(" ")
                    }
                ),
            ));
        };
        if reply.code != 235 {
            return Err(refused(&reply, &self.server));
        }
        Ok(())
    }

    /// SASL XOAUTH2 or OAUTHBEARER (RFC 7628) with a bearer token, driven here rather
    /// than by a library because the failure path matters: a refused token is answered
    /// `334 <base64 JSON>`, and the server waits for the client's reply to it (an empty
    /// line for XOAUTH2, `^A` for OAUTHBEARER) before its `535`. Answering at once turns
    /// a bad token into a prompt 77 with the provider's reason instead of a timeout.
    pub(super) fn bearer_login(
        &mut self,
        auth: Auth,
        user: &str,
        token: &Password,
        host: &str,
        port: u16,
    ) -> Result<()> {
        let (mechanism, response, after_error) = match auth {
            Auth::Oauthbearer => (
                "OAUTHBEARER",
                format!(
                    "n,a={},\x01host={host}\x01port={port}\x01auth=Bearer {}\x01\x01",
                    gs2_escape(user),
                    token.expose()
                ),
                BASE64.encode("\x01"),
            ),
            Auth::Xoauth2 | Auth::Password => (
                "XOAUTH2",
                format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose()),
                String::new(),
            ),
        };
        if !self.caps.offers_auth(mechanism) {
            return Err(Error::new(
                ErrorKind::AuthRefused,
                format!(
                    "{} does not offer AUTH {mechanism} (auth = \"{}\"); it offers: {}",
                    self.server,
                    auth.name(),
                    if self.caps.auth.is_empty() {
                        "none".to_owned()
                    } else {
                        self.caps.auth.join(" ")
                    }
                ),
            ));
        }
        self.hidden
            .extend([token.clone(), Password::new(BASE64.encode(&response))]);
        let mut reply = self.secret_command(
            &format!("AUTH {mechanism} {}", BASE64.encode(response)),
            &format!("AUTH {mechanism} [redacted]"),
        )?;
        let mut reason = None;
        if reply.code == 334 {
            // The provider's reason, as JSON (`{"status":"401","schemes":"bearer",…}`).
            reason = BASE64
                .decode(reply.text().trim())
                .ok()
                .map(|json| printable(self.redact(&String::from_utf8_lossy(&json))));
            reply = self.command(&after_error, "AUTH")?;
        }
        if reply.code == 235 {
            return Ok(());
        }
        if reply.code < 500 && reply.code != 334 {
            return Err(negative("AUTH", &reply));
        }
        Err(Error::new(
            ErrorKind::AuthRefused,
            with_hint(
                format!(
                    "{} refused the {mechanism} token for user {user:?}: {} {}{}",
                    self.server,
                    reply.code,
                    printable(reply.text()),
                    reason
                        .map(|r| format!(" (the server said: {r})"))
                        .unwrap_or_default()
                ),
                &reply,
            ),
        ))
    }
}

/// RFC 5801 §4: in a GS2 header's authzid, `,` is `=2C` and `=` is `=3D`.
fn gs2_escape(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gs2_escapes_comma_and_equals() {
        assert_eq!(gs2_escape("a,b=c@x"), "a=2Cb=3Dc@x");
        assert_eq!(gs2_escape("bot@example.com"), "bot@example.com");
    }
}
