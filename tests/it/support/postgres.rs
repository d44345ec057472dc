//! A private PostgreSQL cluster for the shared-ledger tests (`ledger::`, `workers::`):
//! made once per test binary with `initdb` in a temp folder on a loopback port (SCRAM
//! password, TLS with the test CA, as the postgres user when the tests run as root). The
//! cluster stops, and its folder goes, when this test binary ends.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::certs::TestPki;

/// The ledger user's password: it must never appear in anything envoi prints.
pub const LEDGER_PASSWORD: &str = "Ledger-Canary-5e1b9";

/// The cluster's superuser, whom envoi logs in as.
pub const LEDGER_USER: &str = "envoi";

/// The private cluster, started once per test binary.
pub struct Cluster {
    pub port: u16,
    /// The CA of the server's TLS certificate (for 127.0.0.1 and localhost).
    pub ca: PathBuf,
}

pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start_cluster)
}

/// The newest installed PostgreSQL's programs (Debian's `postgresql` package).
pub fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "the ledger tests need PostgreSQL's initdb and postgres: apt-get install postgresql \
         (.ci/run does)",
    )
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A user and group id by name, with `id`.
fn id_of(flag: &str, name: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, name])
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no user {name}: {out:?}"))
}

/// A loopback port nothing listens on (bound, then let go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `program` run as the cluster's owner: the postgres user when the tests run as root
/// (postgres refuses to run as root), else this user.
fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut cmd = Command::new("/usr/bin/setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn start_cluster() -> Cluster {
    let bin = pg_bin();
    let root = is_root();
    // Kept past this function: the watcher below removes it when the tests end.
    let dir = tempfile::Builder::new()
        .prefix("envoi-ledger-pg-")
        .tempdir()
        .unwrap()
        .keep();
    let pwfile = dir.join("pw");
    fs::write(&pwfile, LEDGER_PASSWORD).unwrap();
    let pki = TestPki::new();
    let ca = pki.write_ca(&dir);
    let (cert, key) = pki.write_leaf(&dir);
    // postgres refuses a key others can read.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    if root {
        let (uid, gid) = (id_of("-u", "postgres"), id_of("-g", "postgres"));
        for path in [&dir, &pwfile, &cert, &key] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }
    let data = dir.join("data");
    let out = as_owner(root, &bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-U", LEDGER_USER, "--auth=scram-sha-256", "-E", "UTF8"])
        .args(["--no-sync", "--no-instructions"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    // The server, and a watcher that stops it and removes the folder once this test
    // process is gone (a OnceLock is never dropped, so nothing else would).
    let postgres = format!(
        "{} {} -D '{}' -p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
         -c fsync=off -c max_connections=60 -c ssl=on -c ssl_cert_file='{}' \
         -c ssl_key_file='{}'",
        if root {
            "/usr/bin/setpriv --reuid=postgres --regid=postgres --clear-groups --"
        } else {
            ""
        },
        bin.join("postgres").display(),
        data.display(),
        cert.display(),
        key.display(),
    );
    let script = format!(
        "{postgres} >'{log}' 2>&1 & pg=$!\n\
         while [ -d /proc/{owner} ] && kill -0 $pg 2>/dev/null; do sleep 0.5; done\n\
         kill -INT $pg 2>/dev/null; wait $pg; rm -rf '{dir}'\n",
        log = dir.join("server.log").display(),
        owner = std::process::id(),
        dir = dir.display(),
    );
    // In the background of a shell that ends at once: the watcher is nobody's child
    // here, so it outlives this process and leaves no zombie.
    let started = Command::new("/bin/sh")
        .args(["-c", &format!("( {script} ) &")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start postgres");
    assert!(started.success(), "the shell that starts postgres failed");
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Cluster { port, ca };
        }
        assert!(
            Instant::now() < ready_by,
            "postgres did not start: {}",
            fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The ledger URL of the test cluster (TLS off: loopback only).
pub fn ledger_url() -> String {
    format!(
        "postgres://{LEDGER_USER}@127.0.0.1:{}/postgres?sslmode=disable",
        cluster().port
    )
}
