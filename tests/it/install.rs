//! `install.sh` and `packaging/dist.sh` (issue 19, "Install anywhere"): the archives dist.sh
//! packs from the debug binary are served by a loopback HTTP mirror laid out like GitHub
//! Releases (`download/vVERSION/FILE`, `latest/download/FILE`), and install.sh, run by
//! /bin/sh (dash here), installs from it. What is asserted: the paths the mirror was asked
//! for, the files on disk, and the installed binary running.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use assert_cmd::Command;
use tempfile::TempDir;

use crate::support::envoi::{ExpectExit, Run};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// This machine's Linux target: the archive install.sh picks by itself here.
fn host_target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// Another target, packed into the same folder so that SHA256SUMS holds two lines.
fn other_target() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "x86_64-unknown-linux-gnu"
    } else {
        "aarch64-unknown-linux-gnu"
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `bash packaging/dist.sh --binary <debug envoi> --target TARGET --out DIR` and returns
/// the archive path it printed.
fn dist(target: &str, out: &Path) -> PathBuf {
    let run = Command::new("bash")
        .current_dir(repo_root())
        .arg("packaging/dist.sh")
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_envoi"))
        .args(["--target", target])
        .arg("--out")
        .arg(out)
        .timeout(Duration::from_secs(300))
        .expect_exit(0);
    let printed = run.stdout.trim_end();
    assert!(
        !printed.contains('\n'),
        "dist.sh printed more than the path: {run}"
    );
    PathBuf::from(printed)
}

/// The release folder dist.sh made, once per test process: the host's archive, another
/// target's, and their SHA256SUMS (the debug binary is large: gzip takes seconds).
fn release_files() -> &'static Path {
    static FILES: OnceLock<PathBuf> = OnceLock::new();
    FILES.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("install-release");
        let _ = std::fs::remove_dir_all(&out);
        dist(&host_target(), &out);
        dist(other_target(), &out);
        // Packed again: its line is replaced, not added.
        dist(&host_target(), &out);
        out
    })
}

/// A mirror: a folder laid out as GitHub Releases, served on loopback.
struct Mirror {
    root: TempDir,
    server: HttpServer,
}

impl Mirror {
    /// `latest/download/` and `download/vVERSION/` each holding the host's archive and the
    /// SHA256SUMS of [`release_files`] (copies: a test may corrupt them).
    fn new() -> Mirror {
        let root = TempDir::new().unwrap();
        for dir in [
            "latest/download".to_string(),
            format!("download/v{VERSION}"),
        ] {
            let dir = root.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            // The other target's archive is never asked for: only its line in SHA256SUMS.
            for name in [
                format!("envoi-{}.tar.gz", host_target()),
                "SHA256SUMS".into(),
            ] {
                std::fs::copy(release_files().join(&name), dir.join(&name)).unwrap();
            }
        }
        let server = HttpServer::start(root.path().to_path_buf());
        Mirror { root, server }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    fn file(&self, path: &str) -> PathBuf {
        self.root.path().join(path)
    }
}

/// `sh install.sh ARGS` with only PATH, HOME and ENVOI_INSTALL_BASE_URL (the mirror) set.
fn install(home: &Path, mirror: &Mirror, path: &str) -> Command {
    // /bin/sh by its path: PATH is the test's, and may hold no sh.
    let mut cmd = Command::new("/bin/sh");
    cmd.current_dir(home)
        .arg(repo_root().join("install.sh"))
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("ENVOI_INSTALL_BASE_URL", mirror.url())
        .timeout(Duration::from_secs(120));
    cmd
}

const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The installed binary runs: `--version`, and a `--dry-run` send that builds a message.
fn assert_runs(binary: &Path) {
    let run = Command::new(binary)
        .env_clear()
        .arg("--version")
        .expect_exit(0);
    assert_eq!(run.stdout.trim(), format!("envoi {VERSION}"), "{run}");
    let home = TempDir::new().unwrap();
    let run = Command::new(binary)
        .env_clear()
        .env("HOME", home.path())
        .args(["send", "--smtp-url", "smtp://127.0.0.1:25?security=none"])
        .args(["--from", "ci@example.com", "--to", "dev@example.com"])
        .args(["--subject", "installed", "--body", "it runs", "--dry-run"])
        .write_stdin("")
        .expect_exit(0);
    assert!(run.stdout.contains("Subject: installed"), "{run}");
    assert!(run.stderr.contains("nothing was sent"), "{run}");
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, into: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, into);
            } else {
                into.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    files
}

#[test]
fn dist_packs_the_contract_layout_and_keeps_other_targets_sums() {
    let files = release_files();
    let host = host_target();
    let archive = files.join(format!("envoi-{host}.tar.gz"));
    let listing = Command::new("tar").arg("-tzf").arg(&archive).expect_exit(0);
    let entries: Vec<&str> = listing.stdout.lines().collect();
    for want in [
        "envoi",
        "README.md",
        "config.example.toml",
        "man/envoi.1",
        "man/envoi-send.1",
        "man/envoi-sendmail.1",
        "completions/envoi.bash",
        "completions/_envoi",
        "completions/envoi.fish",
    ] {
        let want = format!("envoi-{host}/{want}");
        assert!(
            entries.contains(&want.as_str()),
            "{want} missing from {entries:?}"
        );
    }
    assert!(
        entries
            .iter()
            .all(|e| e.starts_with(&format!("envoi-{host}/"))),
        "one top folder: {entries:?}"
    );

    // SHA256SUMS: one line per target (packing the host's twice replaced its line), each the
    // sha256sum of the file beside it.
    let sums = std::fs::read_to_string(files.join("SHA256SUMS")).unwrap();
    let names: Vec<&str> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    let mut want = vec![
        format!("envoi-{host}.tar.gz"),
        format!("envoi-{}.tar.gz", other_target()),
    ];
    want.sort();
    assert_eq!(names, want, "{sums}");
    Command::new("sha256sum")
        .current_dir(files)
        .args(["--check", "--strict", "SHA256SUMS"])
        .expect_exit(0);
}

#[test]
fn installs_the_latest_release_from_a_mirror_and_it_runs() {
    let mirror = Mirror::new();
    let home = TempDir::new().unwrap();
    let prefix = home.path().join("opt/envoi");
    let run = install(home.path(), &mirror, SYSTEM_PATH)
        .arg("--prefix")
        .arg(&prefix)
        .expect_exit(0);

    // stdout: the installed binary's path alone, for `envoi=$(sh install.sh)`.
    let binary = prefix.join("bin/envoi");
    assert_eq!(run.stdout, format!("{}\n", binary.display()), "{run}");
    assert!(
        run.stderr.contains(&format!(
            "envoi {VERSION} installed to {}",
            binary.display()
        )),
        "{run}"
    );
    assert!(run.stderr.contains("is not on your PATH"), "{run}");
    let host = host_target();
    assert_eq!(
        mirror.server.requests(),
        [
            format!("/latest/download/envoi-{host}.tar.gz"),
            "/latest/download/SHA256SUMS".into()
        ]
    );
    assert_runs(&binary);

    let installed = files_under(&prefix);
    for want in [
        "bin/envoi",
        "share/man/man1/envoi.1",
        "share/man/man1/envoi-send.1",
        "share/bash-completion/completions/envoi",
        "share/zsh/site-functions/_envoi",
        "share/fish/vendor_completions.d/envoi.fish",
    ] {
        assert!(
            installed.contains(&want.to_string()),
            "{want} not in {installed:?}"
        );
    }
    // Nothing written outside the prefix (HOME holds only it), no temporary file left.
    assert_eq!(
        files_under(home.path())
            .iter()
            .filter(|f| !f.starts_with("opt/envoi/"))
            .count(),
        0
    );
    assert!(
        installed.iter().all(|f| !f.contains(".install.")),
        "{installed:?}"
    );
}

#[test]
fn a_pinned_version_fetches_that_versions_path() {
    let mirror = Mirror::new();
    let home = TempDir::new().unwrap();
    let bin_dir = home.path().join(".local/bin");
    let host = host_target();
    let pinned = [
        format!("/download/v{VERSION}/envoi-{host}.tar.gz"),
        format!("/download/v{VERSION}/SHA256SUMS"),
    ];

    // ENVOI_VERSION with a "v"; no prefix: ~/.local/bin, and that dir is on PATH here.
    let path = format!("{}:{SYSTEM_PATH}", bin_dir.display());
    let run = install(home.path(), &mirror, &path)
        .env("ENVOI_VERSION", format!("v{VERSION}"))
        .expect_exit(0);
    assert_eq!(
        run.stdout,
        format!("{}\n", bin_dir.join("envoi").display()),
        "{run}"
    );
    assert!(!run.stderr.contains("not on your PATH"), "{run}");
    assert_eq!(mirror.server.take_requests(), pinned);
    assert_runs(&bin_dir.join("envoi"));
    assert!(home.path().join(".local/share/man/man1/envoi.1").is_file());

    // The flag (without "v") wins over the environment; installing again replaces the binary.
    let before = std::fs::metadata(bin_dir.join("envoi")).unwrap();
    let run = install(home.path(), &mirror, &path)
        .env("ENVOI_VERSION", "9.9.9")
        .args(["--version", VERSION])
        .expect_exit(0);
    assert_eq!(mirror.server.take_requests(), pinned, "{run}");
    let after = std::fs::metadata(bin_dir.join("envoi")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        before.ino(),
        after.ino(),
        "replaced by a rename, not rewritten in place"
    );
    assert_eq!(files_under(&bin_dir), ["envoi"]);

    // A version the mirror does not have: an error naming the URL, exit 1.
    let run = install(home.path(), &mirror, &path)
        .args(["--version", "9.9.9"])
        .expect_exit(1);
    assert!(
        run.stderr.contains(&format!(
            "{}/download/v9.9.9/envoi-{host}.tar.gz",
            mirror.url()
        )),
        "{run}"
    );
    // Not a version at all: a usage error before any download.
    mirror.server.take_requests();
    let run = install(home.path(), &mirror, &path)
        .args(["--version", "../../evil"])
        .expect_exit(64);
    assert!(
        run.stderr.contains("must be latest, 1.2.3 or v1.2.3"),
        "{run}"
    );
    assert!(mirror.server.requests().is_empty());
}

/// `--bin-dir` alone: the binary there and nothing else (no man pages, no completions);
/// `--base-url` wins over `ENVOI_INSTALL_BASE_URL`, and `--target` over `ENVOI_TARGET`.
#[test]
fn a_bin_dir_alone_gets_the_binary_only_and_flags_win() {
    let mirror = Mirror::new();
    let home = TempDir::new().unwrap();
    let bin_dir = home.path().join("tools/bin");
    let run = install(home.path(), &mirror, SYSTEM_PATH)
        .env("ENVOI_INSTALL_BASE_URL", "http://127.0.0.1:9/nowhere")
        .env("ENVOI_TARGET", "riscv64gc-unknown-linux-gnu")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .args(["--base-url", &mirror.url(), "--target", &host_target()])
        .expect_exit(0);
    assert_eq!(
        run.stdout,
        format!("{}\n", bin_dir.join("envoi").display()),
        "{run}"
    );
    assert_eq!(files_under(home.path()), ["tools/bin/envoi"]);
    assert_runs(&bin_dir.join("envoi"));

    // --prefix beats ENVOI_INSTALL_DIR: PREFIX/bin.
    let prefix = home.path().join("prefix");
    let run = install(home.path(), &mirror, SYSTEM_PATH)
        .env("ENVOI_INSTALL_DIR", &bin_dir)
        .arg("--prefix")
        .arg(&prefix)
        .expect_exit(0);
    assert_eq!(
        run.stdout,
        format!("{}\n", prefix.join("bin/envoi").display()),
        "{run}"
    );
    // -h prints the header comment of the script, not the script.
    let run = install(home.path(), &mirror, SYSTEM_PATH)
        .arg("-h")
        .expect_exit(0);
    assert!(run.stdout.contains("ENVOI_INSTALL_BASE_URL"), "{run}");
    assert!(!run.stdout.contains("set -eu"), "{run}");
}

/// The Windows archive: a zip holding `envoi.exe`, which install.sh unpacks (with unzip)
/// when given that target. The Linux debug binary stands in for the .exe: only the packing
/// and unpacking are under test, and it runs here.
#[test]
fn a_windows_zip_is_packed_and_installed() {
    let target = "x86_64-pc-windows-msvc";
    let release = TempDir::new().unwrap();
    let archive = dist(target, release.path());
    assert_eq!(archive, release.path().join(format!("envoi-{target}.zip")));
    let listing = Command::new("unzip")
        .arg("-Z1")
        .arg(&archive)
        .expect_exit(0);
    for want in [
        "envoi.exe",
        "README.md",
        "man/envoi.1",
        "completions/_envoi",
    ] {
        let want = format!("envoi-{target}/{want}");
        assert!(
            listing.stdout.lines().any(|l| l == want),
            "{want} not in {listing}"
        );
    }

    let mirror = Mirror::new();
    let dir = mirror.file("latest/download");
    for name in [format!("envoi-{target}.zip"), "SHA256SUMS".into()] {
        std::fs::copy(release.path().join(&name), dir.join(&name)).unwrap();
    }
    let home = TempDir::new().unwrap();
    let prefix = home.path().join("prefix");
    let run = install(home.path(), &mirror, SYSTEM_PATH)
        .env("ENVOI_TARGET", target)
        .arg("--prefix")
        .arg(&prefix)
        .expect_exit(0);
    let exe = prefix.join("bin/envoi.exe");
    assert_eq!(run.stdout, format!("{}\n", exe.display()), "{run}");
    assert_eq!(
        mirror.server.requests(),
        [
            format!("/latest/download/envoi-{target}.zip"),
            "/latest/download/SHA256SUMS".into()
        ]
    );
    assert_runs(&exe);
    assert!(prefix.join("share/man/man1/envoi-send.1").is_file());
}

/// Refused, exit 1, and nothing at all installed: no bin dir, no man page.
fn assert_refused(run: &Run, prefix: &Path, why: &str) {
    assert!(run.stderr.contains(why), "{run}");
    assert!(run.stderr.contains("nothing installed"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(!prefix.exists(), "{:?} left behind", files_under(prefix));
}

#[test]
fn a_corrupted_archive_or_a_missing_sum_is_refused() {
    let mirror = Mirror::new();
    let home = TempDir::new().unwrap();
    let prefix = home.path().join("prefix");
    let host = host_target();

    // One byte of the archive changed.
    let archive = mirror.file(&format!("latest/download/envoi-{host}.tar.gz"));
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&archive, bytes).unwrap();
    let run = install(home.path(), &mirror, SYSTEM_PATH)
        .arg("--prefix")
        .arg(&prefix)
        .expect_exit(1);
    assert_refused(&run, &prefix, "SHA256SUMS says");

    // The pinned release's SHA256SUMS lacks the host's line (only the other target's).
    let sums = mirror.file(&format!("download/v{VERSION}/SHA256SUMS"));
    let text = std::fs::read_to_string(&sums).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains(&host))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(kept.lines().count(), 1, "{text}");
    std::fs::write(&sums, kept).unwrap();
    let run = install(home.path(), &mirror, SYSTEM_PATH)
        .arg("--prefix")
        .arg(&prefix)
        .args(["--version", VERSION])
        .expect_exit(1);
    assert_refused(
        &run,
        &prefix,
        &format!("has no line for envoi-{host}.tar.gz"),
    );
}

/// A directory of links to the given commands only, for a PATH without curl or sha256sum.
fn path_with_only(dir: &Path, commands: &[&str]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    for command in commands {
        let found = ["/usr/local/bin", "/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(command))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{command} is not installed"));
        std::os::unix::fs::symlink(found, dir.join(command)).unwrap();
    }
    dir.display().to_string()
}

/// Without curl and without sha256sum/shasum: wget downloads and openssl verifies, and a
/// corrupted archive is still refused.
#[test]
fn wget_and_openssl_are_the_fallbacks() {
    let mirror = Mirror::new();
    let home = TempDir::new().unwrap();
    let tools = [
        "uname", "mktemp", "rm", "mkdir", "cp", "mv", "chmod", "awk", "tr", "sed", "gzip", "tar",
        "wget", "openssl",
    ];
    let path = path_with_only(&home.path().join("tools"), &tools);
    let prefix = home.path().join("prefix");
    let run = install(home.path(), &mirror, &path)
        .arg("--prefix")
        .arg(&prefix)
        .expect_exit(0);
    assert_runs(&prefix.join("bin/envoi"));
    assert_eq!(mirror.server.take_requests().len(), 2, "{run}");

    let archive = mirror.file(&format!("latest/download/envoi-{}.tar.gz", host_target()));
    let mut bytes = std::fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&archive, bytes).unwrap();
    let other = home.path().join("other");
    let run = install(home.path(), &mirror, &path)
        .arg("--prefix")
        .arg(&other)
        .expect_exit(1);
    assert_refused(&run, &other, "SHA256SUMS says");
}

/// A loopback HTTP/1.1 server for static files, one connection at a time, that records each
/// GET's path. `Connection: close` on every answer; 404 for anything but a file under root.
struct HttpServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    fn start(root: PathBuf) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        // A client that hangs up early is its own business.
                        let _ = serve(&root, stream, &requests);
                    }
                }
            })
        };
        HttpServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(root: &Path, stream: TcpStream, requests: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers, up to the blank line (bounded: 100 lines).
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut words = request_line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let mut stream = stream;
    if method != "GET" {
        return stream.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    requests.lock().unwrap().push(path.to_string());
    let file = path
        .strip_prefix('/')
        .filter(|p| !p.split('/').any(|part| part == ".." || part.is_empty()))
        .map(|p| root.join(p))
        .filter(|p| p.is_file());
    match file {
        Some(file) => {
            let body = std::fs::read(file)?;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)
        }
        None => stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    }
}

/// install.sh is POSIX sh: dash parses it, and so does bash in POSIX mode.
#[test]
fn install_sh_parses_as_posix_sh() {
    let script = repo_root().join("install.sh");
    assert!(
        StdCommand::new("/bin/sh")
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap()
            .success()
    );
    let run = Command::new("bash")
        .args(["--posix", "-n"])
        .arg(&script)
        .expect_exit(0);
    assert!(run.stderr.is_empty(), "{run}");
}
