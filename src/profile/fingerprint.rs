//! `tls_fingerprint`: the SHA-256 of a server's certificate, written as `openssl x509
//! -noout -fingerprint -sha256` prints it. A person can compare it with what the relay's
//! administrator reads on the relay, then paste it into a profile: that comparison, not a
//! certificate authority, is what makes the certificate trusted.

use std::fmt;

use crate::error::{Error, Result};

/// The SHA-256 of a certificate (its DER bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of the certificate `der`.
    pub fn of(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut bytes = [0; 32];
        // SHA-256 digests are 32 bytes: the lengths always agree.
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }

    /// Reads a fingerprint as openssl prints it (`AB:CD:…`, 32 pairs) or as 64 hex digits
    /// without colons, in either case; the whole openssl line (`sha256
    /// Fingerprint=AB:CD:…`) is taken too, since that is what gets copied. `Err` says what
    /// is wrong, in words.
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let text = text.trim();
        let hex = match text.split_once('=') {
            Some((label, hex)) if label.trim().eq_ignore_ascii_case("sha256 fingerprint") => {
                hex.trim()
            }
            Some((label, _)) if label.trim().to_ascii_lowercase().ends_with("fingerprint") => {
                return Err(format!("{label:?} is not a SHA-256 fingerprint"));
            }
            _ => text,
        };
        let digits: String = if hex.contains(':') {
            let pairs: Vec<&str> = hex.split(':').collect();
            if let Some(odd) = pairs.iter().find(|p| p.len() != 2) {
                return Err(format!(
                    "{odd:?} is not two hex digits (give 32 pairs like AB:CD:…, or 64 hex \
                     digits)"
                ));
            }
            pairs.concat()
        } else {
            hex.to_owned()
        };
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(format!("{c:?} is not a hex digit"));
        }
        match digits.len() {
            64 => {}
            40 => {
                return Err(
                    "that is a SHA-1 fingerprint (20 bytes); give the SHA-256 one \
                            (openssl x509 -noout -fingerprint -sha256)"
                        .into(),
                );
            }
            n => {
                return Err(format!(
                    "a SHA-256 fingerprint is 32 bytes (64 hex digits), this is {}",
                    if n % 2 == 0 {
                        format!("{} bytes", n / 2)
                    } else {
                        format!("{n} hex digits")
                    }
                ));
            }
        }
        let mut bytes = [0; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.as_bytes().chunks(2)) {
            // Two ASCII hex digits, checked above.
            let pair = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?;
        }
        Ok(Fingerprint(bytes))
    }
}

/// A profile's `tls_fingerprint`, read. A malformed one is a configuration error (78) that
/// names the key and says where the right value comes from; so is one beside `ca_file`,
/// which a pin makes moot: kept, it would read as a second check that is never made.
pub(super) fn profile_pin(
    profile: &str,
    pin: Option<&str>,
    has_ca_file: bool,
) -> Result<Option<Fingerprint>> {
    let Some(text) = pin else {
        return Ok(None);
    };
    if has_ca_file {
        return Err(Error::config(format!(
            "profile {profile:?}: give ca_file or tls_fingerprint, not both: a pinned \
             certificate is trusted without any CA, so ca_file would never be consulted"
        )));
    }
    Fingerprint::parse(text).map(Some).map_err(|why| {
        Error::config(format!(
            "profile {profile:?}: tls_fingerprint {text:?} is not a SHA-256 fingerprint: {why}; \
             read it from the server's certificate with: openssl x509 -noout -fingerprint \
             -sha256 -in cert.pem"
        ))
    })
}

/// As openssl prints it: upper-case hex pairs joined by colons.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

/// The hex of [`Display`](fmt::Display), not 32 decimal numbers: a fingerprint is public,
/// and is compared by eye.
impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf abc | openssl dgst -sha256`, the FIPS 180-2 test vector.
    const ABC: &str = "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:\
                       B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD";

    #[test]
    fn the_fingerprint_of_bytes_is_their_sha256_as_openssl_prints_it() {
        assert_eq!(Fingerprint::of(b"abc").to_string(), ABC);
    }

    #[test]
    fn colons_case_and_the_openssl_label_are_optional() {
        let want = Fingerprint::of(b"abc");
        for text in [
            ABC.to_owned(),
            ABC.to_ascii_lowercase(),
            ABC.replace(':', ""),
            ABC.replace(':', "").to_ascii_lowercase(),
            format!("sha256 Fingerprint={ABC}"),
            format!("SHA256 Fingerprint={ABC}\n"),
            format!("  {ABC}  "),
        ] {
            assert_eq!(Fingerprint::parse(&text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn anything_else_is_refused_in_words() {
        let cases = [
            ("", "64 hex digits"),
            ("AB:CD", "2 bytes"),
            (&ABC[..ABC.len() - 3], "31 bytes"),
            (&format!("{ABC}:00"), "33 bytes"),
            (&ABC.replace(':', "")[1..], "63 hex digits"),
            (&ABC.replacen('B', "G", 1), "'G' is not a hex digit"),
            (&ABC.replace(':', "-"), "'-' is not a hex digit"),
            (&ABC.replacen(':', "::", 1), "\"\" is not two hex digits"),
            (&ABC.replacen(":", "", 1), "\"BA78\" is not two hex digits"),
            (&("AB:".repeat(19) + "AB"), "SHA-1"),
            (&format!("sha1 Fingerprint={ABC}"), "not a SHA-256"),
        ];
        for (text, why) in cases {
            let err = Fingerprint::parse(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_profile_pin_is_read_or_refused_naming_the_key() {
        assert_eq!(profile_pin("p", None, true).unwrap(), None);
        let pin = profile_pin("p", Some(ABC), false).unwrap();
        assert_eq!(pin, Some(Fingerprint::of(b"abc")));
        let err = profile_pin("p", Some("AB:CD"), false).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Config);
        assert!(
            err.message()
                .contains("profile \"p\": tls_fingerprint \"AB:CD\""),
            "{err}"
        );
        assert!(err.message().contains("openssl x509"), "{err}");
        let err = profile_pin("p", Some(ABC), true).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Config);
        assert!(
            err.message()
                .contains("ca_file or tls_fingerprint, not both"),
            "{err}"
        );
    }
}
