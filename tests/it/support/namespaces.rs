//! A command whose `/etc/hosts` (or another system path) is a file of the test's:
//! `unshare -m` (a mount namespace of its own, root only) and a bind mount over it there,
//! so the system resolver (glibc's `files` source) answers a test name as the test says,
//! or the system's CA bundle holds the test's CA, for that process alone.
//!
//! When namespaces cannot be made (not root, no `unshare`), [`available`] notes it and
//! says false, unless `CI` or `ENVOI_REQUIRE_EXTERNAL` is set (CI runs as root), in which
//! case it panics.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::external::require_external;

/// Whether [`with_hosts`] works here: tried once, with a real bind mount.
pub fn available() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    let works = *WORKS.get_or_init(|| {
        Command::new("unshare")
            .args(["-m", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    require_external("unshare -m with a bind mount (root)", works)
}

/// A command that runs its program (the first argument added to it) with `hosts` as its
/// `/etc/hosts`.
pub fn with_hosts(hosts: &Path) -> Command {
    with_bind("/etc/hosts", hosts)
}

/// A command that runs its program (the first argument added to it) with `source` (a
/// file or a folder of the test's) mounted over `target`, for that process alone.
pub fn with_bind(target: &str, source: &Path) -> Command {
    let mut command = Command::new("unshare");
    command
        .args([
            "-m",
            "sh",
            "-c",
            "mount --bind \"$0\" \"$1\" && shift && exec \"$@\"",
        ])
        .arg(source)
        .arg(target);
    command
}
