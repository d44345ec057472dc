#!/bin/sh
# Installs envoi's release binary from GitHub Releases (or a mirror laid out the same way):
# picks the archive for this machine, verifies it against the release's SHA256SUMS, and
# installs it atomically. Never uses sudo: it writes only into the directories it is given.
#
#   curl -fsSL https://github.com/envoi-dev/envoi/releases/latest/download/install.sh | sh
#   sh install.sh [--version V] [--prefix DIR] [--bin-dir DIR] [--base-url URL] [--target T]
#
# Environment equivalents (a flag wins over its variable): ENVOI_VERSION, ENVOI_PREFIX,
# ENVOI_INSTALL_DIR (the bin dir), ENVOI_INSTALL_BASE_URL, ENVOI_TARGET.
#
# Where things go:
#   default          the binary to $HOME/.local/bin, man pages to $HOME/.local/share/man/man1
#   --prefix DIR     DIR/bin, DIR/share/man/man1, and completions under DIR/share
#   --bin-dir DIR    the binary only, to DIR (with --prefix too: the binary to DIR, the rest
#                    under the prefix)
# On success, stderr says "envoi VERSION installed to PATH" and stdout holds PATH alone, so
# that a caller can capture it: envoi=$(sh install.sh).
#
# Layout of a release (docs/install.md): BASE/download/vVERSION/FILE for a pinned version,
# BASE/latest/download/FILE for the newest; FILE is envoi-TARGET.tar.gz (envoi-TARGET.zip on
# Windows) or SHA256SUMS. POSIX sh (dash, busybox ash, bash, zsh's sh mode).
set -eu

# The release location; the real owner is set here at release time.
ENVOI_DEFAULT_BASE_URL="https://github.com/envoi-dev/envoi/releases"

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}
usage_error() {
  say "$*"
  say "usage: sh install.sh [--version V] [--prefix DIR] [--bin-dir DIR] [--base-url URL] [--target T]"
  exit 64
}

version=${ENVOI_VERSION:-latest}
prefix=${ENVOI_PREFIX:-}
bin_dir=${ENVOI_INSTALL_DIR:-}
base_url=${ENVOI_INSTALL_BASE_URL:-$ENVOI_DEFAULT_BASE_URL}
target=${ENVOI_TARGET:-}
bin_dir_flag=""

# Each flag takes its value as the next word or after "=".
while [ $# -gt 0 ]; do
  flag=$1
  case $flag in
  -h | --help)
    # The comment block at the top of this file (not there when piped into sh).
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" 2>/dev/null ||
      say "see https://github.com/envoi-dev/envoi/blob/main/docs/install.md"
    exit 0
    ;;
  --*=*)
    value=${flag#*=}
    flag=${flag%%=*}
    shift
    ;;
  --version | --prefix | --bin-dir | --base-url | --target)
    [ $# -ge 2 ] || usage_error "$flag needs a value"
    value=$2
    shift 2
    ;;
  *) usage_error "unknown argument: $flag" ;;
  esac
  case $flag in
  --version) version=$value ;;
  --prefix)
    prefix=$value
    # The flag beats ENVOI_INSTALL_DIR too: PREFIX/bin, unless --bin-dir is also given.
    [ -n "$bin_dir_flag" ] || bin_dir=""
    ;;
  --bin-dir)
    bin_dir=$value
    bin_dir_flag=1
    ;;
  --base-url) base_url=$value ;;
  --target) target=$value ;;
  *) usage_error "unknown flag: $flag" ;;
  esac
done

# The version: "latest", or 1.2.3 / v1.2.3 (a pre-release suffix such as -rc.1 allowed). It
# becomes part of a URL, so nothing else is let through.
case $version in
latest) release_path=latest/download ;;
"" | *[!0-9A-Za-z.+-]* | [!0-9v]*) usage_error "--version / ENVOI_VERSION must be latest, 1.2.3 or v1.2.3, not '$version'" ;;
*)
  version=${version#v}
  case $version in
  [0-9]*.[0-9]*.[0-9]*) ;;
  *) usage_error "--version / ENVOI_VERSION must be latest, 1.2.3 or v1.2.3, not 'v$version'" ;;
  esac
  release_path=download/v$version
  ;;
esac
base_url=${base_url%/}
case $base_url in
https://* | http://*) ;;
*) usage_error "--base-url / ENVOI_INSTALL_BASE_URL must start with https:// (or http:// for a local mirror), not '$base_url'" ;;
esac

# The target: the one given, else this machine's.
if [ -z "$target" ]; then
  os=$(uname -s)
  arch=$(uname -m)
  case $arch in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) die "no release archive for this processor ($arch): build from source with cargo install --locked envoi" ;;
  esac
  case $os in
  Linux)
    # The Linux archives are linked against glibc; a musl-only system (Alpine) cannot run them.
    if [ -e /lib/ld-musl-x86_64.so.1 ] || [ -e /lib/ld-musl-aarch64.so.1 ]; then
      if [ ! -e /lib64/ld-linux-x86-64.so.2 ] && [ ! -e /lib/ld-linux-aarch64.so.1 ]; then
        die "this Linux has musl, not glibc, and the release binaries need glibc 2.17 or newer: build from source with cargo install --locked envoi (or install Alpine's gcompat)"
      fi
    fi
    target=$arch-unknown-linux-gnu
    ;;
  Darwin)
    # A shell under Rosetta reports x86_64 on Apple silicon: take the native binary.
    if [ "$arch" = x86_64 ] && [ "$(sysctl -n sysctl.proc_translated 2>/dev/null || true)" = 1 ]; then
      arch=aarch64
    fi
    target=$arch-apple-darwin
    ;;
  MINGW* | MSYS* | CYGWIN* | Windows_NT) target=x86_64-pc-windows-msvc ;;
  *) die "no release archive for this system ($os): build from source with cargo install --locked envoi" ;;
  esac
fi
case $target in
*-windows-*)
  archive=envoi-$target.zip
  exe=envoi.exe
  ;;
*)
  archive=envoi-$target.tar.gz
  exe=envoi
  ;;
esac
case $target in
*[!0-9A-Za-z_.-]*) usage_error "--target / ENVOI_TARGET is not a target triple: '$target'" ;;
esac

# Where it goes.
if [ -z "$bin_dir" ]; then
  if [ -n "$prefix" ]; then
    bin_dir=$prefix/bin
  else
    [ -n "${HOME:-}" ] || die "HOME is not set: give --prefix DIR or --bin-dir DIR"
    prefix=$HOME/.local
    bin_dir=$prefix/bin
    # Default: man pages beside, where man finds them for a PATH entry of ~/.local/bin.
  fi
  share_dir=$prefix/share
else
  # --bin-dir alone: the binary, nothing else.
  share_dir=${prefix:+$prefix/share}
fi

# Downloads URL to FILE: curl, else wget. Over https, a redirect may not downgrade to http.
download() {
  if command -v curl >/dev/null 2>&1; then
    case $1 in
    https://*) curl -fsSL --proto =https --proto-redir =https --retry 3 --connect-timeout 20 -o "$2" "$1" ;;
    *) curl -fsSL --retry 3 --connect-timeout 20 -o "$2" "$1" ;;
    esac
  elif command -v wget >/dev/null 2>&1; then
    wget -q -T 60 -t 3 -O "$2" "$1"
  else
    die "neither curl nor wget is installed: install one of them"
  fi
}

# The SHA-256 tool: sha256sum, else shasum, else openssl. Chosen before any download.
if command -v sha256sum >/dev/null 2>&1; then
  sha256_tool=sha256sum
elif command -v shasum >/dev/null 2>&1; then
  sha256_tool=shasum
elif command -v openssl >/dev/null 2>&1; then
  sha256_tool=openssl
else
  die "no SHA-256 tool (sha256sum, shasum or openssl) to verify the download with: install one of them"
fi
# Prints the SHA-256 of FILE in lower-case hex.
sha256_of() {
  case $sha256_tool in
  sha256sum) sha256sum "$1" | awk '{ print $1 }' ;;
  shasum) shasum -a 256 "$1" | awk '{ print $1 }' ;;
  *) openssl dgst -sha256 "$1" | awk '{ print $NF }' ;;
  esac | tr 'A-F' 'a-f'
}

tmp=$(mktemp -d 2>/dev/null || mktemp -d -t envoi-install)
[ -d "$tmp" ] || die "cannot make a temporary directory"
staged=""
cleanup() {
  rm -rf "$tmp"
  [ -z "$staged" ] || rm -f "$staged"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

url=$base_url/$release_path
say "downloading $url/$archive"
download "$url/$archive" "$tmp/$archive" || die "could not download $url/$archive (is $target released for version $version?)"
download "$url/SHA256SUMS" "$tmp/SHA256SUMS" || die "could not download $url/SHA256SUMS"

# The archive's line: "HEX  NAME" (or "HEX *NAME", sha256sum's binary mode).
expected=$(awk -v f="$archive" '$2 == f || $2 == "*" f { print $1; exit }' "$tmp/SHA256SUMS" | tr 'A-F' 'a-f')
[ -n "$expected" ] || die "refused: $url/SHA256SUMS has no line for $archive; nothing installed"
actual=$(sha256_of "$tmp/$archive")
[ "$actual" = "$expected" ] ||
  die "refused: $archive has SHA-256 $actual but SHA256SUMS says $expected (a corrupted or tampered download); nothing installed"

mkdir "$tmp/x"
case $archive in
*.zip)
  command -v unzip >/dev/null 2>&1 || die "unzip is missing: install it to unpack $archive"
  unzip -q "$tmp/$archive" -d "$tmp/x" || die "could not unpack $archive"
  ;;
*) (cd "$tmp/x" && gzip -dc "../$archive" | tar -xf -) || die "could not unpack $archive" ;;
esac
dir=$tmp/x/envoi-$target
[ -f "$dir/$exe" ] || die "$archive holds no envoi-$target/$exe"

# The binary: copied to a temporary name in the bin dir, then renamed over any old one, so
# that the bin dir never holds a half-written envoi (a running one keeps its old file).
mkdir -p "$bin_dir" || die "cannot create $bin_dir (give a --prefix or --bin-dir you can write)"
bin_dir=$(cd "$bin_dir" && pwd) || die "cannot enter $bin_dir"
staged=$bin_dir/.$exe.install.$$
cp "$dir/$exe" "$staged" || die "cannot write into $bin_dir (give a --prefix or --bin-dir you can write)"
chmod 755 "$staged"
mv -f "$staged" "$bin_dir/$exe" || die "cannot replace $bin_dir/$exe"
staged=""
dest=$bin_dir/$exe

# Man pages and completions, where there is a share dir.
if [ -n "$share_dir" ]; then
  if [ -d "$dir/man" ]; then
    if ! { mkdir -p "$share_dir/man/man1" && cp "$dir"/man/*.1 "$share_dir/man/man1/"; }; then
      say "could not install the man pages into $share_dir/man/man1"
    fi
  fi
  if [ -d "$dir/completions" ]; then
    for pair in bash-completion/completions:envoi.bash:envoi zsh/site-functions:_envoi:_envoi \
      fish/vendor_completions.d:envoi.fish:envoi.fish; do
      sub=${pair%%:*}
      rest=${pair#*:}
      from=${rest%%:*}
      to=${rest#*:}
      [ -f "$dir/completions/$from" ] || continue
      if ! { mkdir -p "$share_dir/$sub" && cp "$dir/completions/$from" "$share_dir/$sub/$to"; }; then
        say "could not install the $from completion into $share_dir/$sub"
      fi
    done
  fi
fi

# The version it reports (a binary for another target cannot run here: then the one asked).
installed=$("$dest" --version 2>/dev/null | awk '{ print $2; exit }') || installed=""
[ -n "$installed" ] || installed=$version
say "envoi $installed installed to $dest"
case ":${PATH:-}:" in
*":$bin_dir:"*) ;;
*) say "$bin_dir is not on your PATH: add it, e.g. export PATH=\"$bin_dir:\$PATH\" (in CI: echo \"$bin_dir\" >> \"\$GITHUB_PATH\")" ;;
esac
printf '%s\n' "$dest"
