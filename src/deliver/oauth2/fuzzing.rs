//! The token endpoint's answer as envoi reads it, for the `token_response` fuzz target
//! (`fuzz/`). Not part of the API.

use crate::error::Result;

/// The endpoint the errors name.
pub const TOKEN_URL: &str = "https://login.example/oauth2/token";

/// What a good answer gave.
pub struct Token {
    /// The bearer token.
    pub access_token: String,
    /// Its lifetime in seconds, when the endpoint said.
    pub expires_in: Option<u64>,
    /// A new refresh token, when the endpoint rotated it.
    pub refresh_token: Option<String>,
}

/// An answer of the token endpoint at [`TOKEN_URL`] with HTTP `status` and body `text`
/// → a token, or the error envoi reports; `secrets` are what envoi sent (they must
/// never be shown).
pub fn token_answer(status: u16, text: &str, secrets: &[String]) -> Result<Token> {
    super::endpoint::interpret(TOKEN_URL, status, text, secrets).map(|granted| Token {
        access_token: granted.access_token,
        expires_in: granted.expires_in,
        refresh_token: granted.refresh_token,
    })
}
