//! `sent_copy = { imap = "imaps://imap.example.com", folder = "Sent" }`: where a copy of
//! each message sent through the profile is filed (IMAP APPEND), checked when the profile
//! is built. The copy itself is the delivery layer's (`deliver::imap`), and when to make
//! it the outbox layer's (`outbox::sent_copy`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::profile::fingerprint::{Fingerprint, profile_pin};

/// The `sent_copy` table exactly as the file spells it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SentCopyEntry {
    imap: Option<String>,
    folder: Option<String>,
    force: Option<bool>,
    ca_file: Option<PathBuf>,
    tls_fingerprint: Option<String>,
}

/// Where the copy of a sent message goes, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCopy {
    /// The IMAP server's host name or address.
    pub host: String,
    /// Its port (993 for `imaps://`, 143 for `imap://`, unless the URL gives one).
    pub port: u16,
    /// `imaps://`: TLS from the first byte; `imap://`: STARTTLS, required. There is no
    /// plain-text IMAP: the login would cross the network in clear.
    pub implicit_tls: bool,
    /// The folder, as written (ASCII); `None`: the folder marked `\Sent` (RFC 6154), else
    /// one named "Sent".
    pub folder: Option<String>,
    /// Copy even where the provider files submissions in Sent itself (Gmail, Microsoft
    /// 365), which would make two copies.
    pub force: bool,
    /// Extra trusted roots for the IMAP server (the table's `ca_file`, else the profile's).
    pub ca_file: Option<PathBuf>,
    /// The one certificate the IMAP server may present (the table's own: a pin is per
    /// server, so the SMTP server's is never reused).
    pub tls_fingerprint: Option<Fingerprint>,
}

impl SentCopy {
    /// The server as a URL, as `config show` says it.
    pub fn url(&self) -> String {
        let scheme = if self.implicit_tls { "imaps" } else { "imap" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl SentCopyEntry {
    /// Checks the table of profile `name`; `profile_ca` is the profile's `ca_file`.
    pub(super) fn check(self, name: &str, profile_ca: Option<&PathBuf>) -> Result<SentCopy> {
        let bad = |what: String| Error::config(format!("profile {name:?}: sent_copy: {what}"));
        let url = self.imap.ok_or_else(|| {
            bad(
                "imap is missing: give the IMAP server as imap = \"imaps://imap.example.com\""
                    .into(),
            )
        })?;
        let (implicit_tls, rest) = if let Some(rest) = url.strip_prefix("imaps://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("imap://") {
            (false, rest)
        } else {
            return Err(bad(format!(
                "imap {url:?} must start with imaps:// (TLS, port 993) or imap:// (STARTTLS, \
                 port 143)"
            )));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad(format!(
                "imap {url:?} must be only a server and maybe a port, like \
                 imaps://imap.example.com:993 (the user and password are the profile's, the \
                 folder goes in folder = \"…\")"
            )));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| {
            bad(format!(
                "imap {url:?}: the port is not a number from 1 to 65535"
            ))
        })?;
        let port = port.unwrap_or(if implicit_tls { 993 } else { 143 });
        if let Some(folder) = &self.folder {
            check_folder(folder).map_err(|why| bad(format!("folder {folder:?} {why}")))?;
        }
        let tls_fingerprint = profile_pin(
            name,
            self.tls_fingerprint.as_deref(),
            self.ca_file.is_some(),
        )
        .map_err(|e| {
            Error::config(
                e.message()
                    .replace("tls_fingerprint", "sent_copy.tls_fingerprint"),
            )
        })?;
        let ca_file = match (&self.ca_file, &tls_fingerprint) {
            (Some(file), _) => Some(file.clone()),
            // The pin is the whole trust: the profile's CA is not consulted.
            (None, Some(_)) => None,
            (None, None) => profile_ca.cloned(),
        };
        Ok(SentCopy {
            host,
            port,
            implicit_tls,
            folder: self.folder,
            force: self.force.unwrap_or(false),
            ca_file,
            tls_fingerprint,
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; `None` for a port that is not one.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => None,
    };
    Some((host.to_owned(), port))
}

/// A folder name envoi can put in an IMAP command: printable ASCII, not empty. A name
/// with other characters would need modified UTF-7 (RFC 3501 §5.1.3), which envoi does
/// not write: such a folder is best found by its `\Sent` mark (leave `folder` out).
pub(crate) fn check_folder(folder: &str) -> std::result::Result<(), &'static str> {
    if folder.is_empty() {
        return Err("is empty: leave folder out to use the folder marked \\Sent");
    }
    if !folder.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(
            "has characters other than printable ASCII, which IMAP spells in modified \
             UTF-7 and envoi does not: leave folder out, so that the folder the server marks \
             \\Sent is found, or give the name as the server lists it",
        );
    }
    if folder.contains('&') {
        return Err(
            "contains '&', which starts a modified UTF-7 sequence in IMAP: write it as the \
             server lists it (\"&-\" for '&'), or leave folder out",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(imap: &str) -> SentCopyEntry {
        SentCopyEntry {
            imap: Some(imap.to_owned()),
            ..SentCopyEntry::default()
        }
    }

    #[test]
    fn urls_give_host_port_and_tls() {
        let c = entry("imaps://imap.example.com").check("p", None).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.implicit_tls),
            ("imap.example.com", 993, true)
        );
        let c = entry("imap://127.0.0.1:1143/").check("p", None).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.implicit_tls),
            ("127.0.0.1", 1143, false)
        );
        let c = entry("imaps://[::1]:994").check("p", None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 994));
    }

    #[test]
    fn wrong_urls_and_folders_are_named() {
        for url in [
            "http://x",
            "imaps://",
            "imaps://u@x",
            "imaps://x:0",
            "imaps://x/Sent",
        ] {
            let e = entry(url).check("p", None).unwrap_err();
            assert!(e.message().contains("sent_copy: imap"), "{url}: {e}");
        }
        let e = SentCopyEntry {
            folder: Some("Gesendete Objekte é".into()),
            ..entry("imaps://x")
        }
        .check("p", None)
        .unwrap_err();
        assert!(e.message().contains("modified UTF-7"), "{e}");
    }

    #[test]
    fn the_profile_ca_is_used_unless_the_table_pins_or_names_its_own() {
        let profile_ca = PathBuf::from("/ca.pem");
        let c = entry("imaps://x").check("p", Some(&profile_ca)).unwrap();
        assert_eq!(c.ca_file, Some(profile_ca.clone()));
        let pinned = SentCopyEntry {
            tls_fingerprint: Some("AB".repeat(32)),
            ..entry("imaps://x")
        }
        .check("p", Some(&profile_ca))
        .unwrap();
        assert_eq!(pinned.ca_file, None);
        assert!(pinned.tls_fingerprint.is_some());
    }

    #[test]
    fn gmail_and_microsoft_365_hosts_file_their_own_copy() {
        use crate::profile::config::profile_from_url;
        for (url, files) in [
            ("smtp://smtp.gmail.com:587", true),
            ("smtps://SMTP.Office365.com.", true),
            ("smtp://smtp-mail.outlook.com", true),
            ("smtp://mail.example.net", false),
            ("smtp://gmail.com.example.net", false),
        ] {
            let profile = profile_from_url(url).unwrap();
            assert_eq!(profile.files_sent_itself().is_some(), files, "{url}");
        }
    }
}
