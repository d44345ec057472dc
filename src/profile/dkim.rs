//! A profile's DKIM settings (`dkim_selector`, `dkim_domain`, `dkim_key_file`) and the
//! key file behind them: a secret, so it must be private, like a config file holding a
//! password.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::message::dkim::{DkimKey, Signer, check_names};
use crate::ownership::{self, Owner};

/// How a profile signs: all three `dkim_*` keys, checked; the key file is read only when
/// a message is signed ([`Dkim::signer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dkim {
    /// `d=`: the domain whose DNS publishes the public key.
    pub domain: String,
    /// `s=`: the record is at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The PEM private key.
    pub key_file: PathBuf,
}

impl Dkim {
    /// The settings of profile `name`: all three keys or none (78 naming the missing
    /// one); the domain and selector must be DNS names.
    pub(super) fn from_keys(
        name: &str,
        selector: Option<&str>,
        domain: Option<&str>,
        key_file: Option<&Path>,
    ) -> Result<Option<Dkim>> {
        let given = [
            ("dkim_selector", selector.is_some()),
            ("dkim_domain", domain.is_some()),
            ("dkim_key_file", key_file.is_some()),
        ];
        let (Some(selector), Some(domain), Some(key_file)) = (selector, domain, key_file) else {
            if given.iter().all(|(_, set)| !set) {
                return Ok(None);
            }
            let missing: Vec<&str> = given
                .iter()
                .filter(|(_, set)| !set)
                .map(|(key, _)| *key)
                .collect();
            return Err(Error::config(format!(
                "profile {name:?}: DKIM signing needs dkim_selector, dkim_domain and \
                 dkim_key_file; {} is missing",
                missing.join(" and ")
            )));
        };
        check_names(domain, selector)
            .map_err(|why| Error::config(format!("profile {name:?}: {why}")))?;
        Ok(Some(Dkim {
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            key_file: key_file.to_owned(),
        }))
    }

    /// Reads the key file and makes the signer; any problem is 78 naming the file. The
    /// file must be a regular file (a FIFO must not hang a send, nor `/dev/zero` fill
    /// memory) of at most 1 MiB, belong to this user (or root; DK02) and be
    /// readable by no one else.
    pub fn signer(&self) -> Result<Signer> {
        let path = &self.key_file;
        let unreadable = |why: &dyn std::fmt::Display| {
            Error::config(format!(
                "cannot read the DKIM key file {} (dkim_key_file): {why}",
                path.display()
            ))
        };
        // Read first, so a FIFO or a folder is refused as what it is (DK04), not for
        // its mode; the key is used only once its owner and mode pass.
        let pem = ownership::read_named(path).map_err(|e| unreadable(&e))?;
        ownership::check_private_file(path, WHAT, "a private key")?;
        ownership::check_owned(path, WHAT, Owner::MeOrRoot, "use a key file of your own")?;
        let key = DkimKey::from_pem(&pem).map_err(|why| {
            Error::config(format!(
                "the DKIM key file {} (dkim_key_file) holds {why}",
                path.display()
            ))
        })?;
        Signer::new(&self.domain, &self.selector, key).map_err(Error::config)
    }
}

/// How errors name the key file.
const WHAT: &str = "the DKIM key file (dkim_key_file)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn all_three_keys_or_none() {
        let path = Path::new("/k.pem");
        assert_eq!(Dkim::from_keys("p", None, None, None).unwrap(), None);
        let full = Dkim::from_keys("p", Some("s1"), Some("example.com"), Some(path))
            .unwrap()
            .unwrap();
        assert_eq!(full.domain, "example.com");
        let err = Dkim::from_keys("p", Some("s1"), None, Some(path)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("dkim_domain is missing"), "{err}");
        let err = Dkim::from_keys("p", None, None, Some(path)).unwrap_err();
        assert!(
            err.message()
                .contains("dkim_selector and dkim_domain is missing"),
            "{err}"
        );
        let err = Dkim::from_keys("p", Some("a b"), Some("example.com"), Some(path)).unwrap_err();
        assert!(err.message().contains("dkim_selector"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_must_be_private_and_a_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "not a key").unwrap();
        let dkim = Dkim {
            domain: "example.com".into(),
            selector: "s".into(),
            key_file: path.clone(),
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = dkim.signer().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = dkim.signer().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("k.pem"), "{err}");
        assert!(err.message().contains("expected"), "{err}");
        let missing = Dkim {
            key_file: dir.path().join("none.pem"),
            ..dkim
        };
        assert_eq!(missing.signer().unwrap_err().kind(), ErrorKind::Config);
    }
}
