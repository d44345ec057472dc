#!/usr/bin/env bash
# Packs envoi's release archive for one target, as install.sh and the GitHub Action expect it
# (docs/install.md, "Release layout"):
#
#   bash packaging/dist.sh [--binary PATH] [--target TARGET] --out DIR
#
# writes DIR/envoi-TARGET.tar.gz (envoi-TARGET.zip for a Windows target) holding one folder
# envoi-TARGET/ with the binary, README.md, LICENSE-* (if any), config.example.toml, man/
# (the pages `envoi man --dir` writes) and completions/ (envoi.bash, _envoi, envoi.fish); then
# (re)writes DIR/SHA256SUMS with the archive's line, keeping the other archives' lines. Prints
# the archive's path on stdout, its progress on stderr.
#
# --binary packs an already-built binary (the tests pack the debug build this way). Without it
# the release binary is built for --target: a Linux gnu target with cargo-zigbuild against
# glibc 2.17 (the portable baseline: pip install ziglang cargo-zigbuild), any other with plain
# cargo on its native machine. The man pages and completions are printed by the packed binary
# itself, so it must run here: pack on the target's own machine (the release workflow does).
# --target defaults to the host's triple (rustc -vV).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The glibc version the Linux binaries are linked against: old enough for every maintained
# distribution (RHEL/CentOS 7 and newer); proven in docs/install.md.
GLIBC_BASELINE=2.17

die() {
  echo "dist.sh: $*" >&2
  exit 1
}
usage() {
  echo "dist.sh: $*" >&2
  echo "usage: bash packaging/dist.sh [--binary PATH] [--target TARGET] --out DIR" >&2
  exit 64
}

binary="" target="" out=""
while [ $# -gt 0 ]; do
  case $1 in
  --binary | --target | --out)
    [ $# -ge 2 ] || usage "$1 needs a value"
    case $1 in
    --binary) binary=$2 ;;
    --target) target=$2 ;;
    --out) out=$2 ;;
    esac
    shift 2
    ;;
  *) usage "unknown argument: $1" ;;
  esac
done
[ -n "$out" ] || usage "--out DIR is required"
if [ -z "$target" ]; then
  target=$(rustc -vV | sed -n 's/^host: //p')
  [ -n "$target" ] || die "cannot tell the host's target from rustc -vV: give --target"
fi
case $target in
*[!0-9A-Za-z_.-]* | "") usage "--target is not a target triple: '$target'" ;;
esac
case $target in
*-windows-*) exe=envoi.exe archive=envoi-$target.zip ;;
*) exe=envoi archive=envoi-$target.tar.gz ;;
esac

if [ -z "$binary" ]; then
  # Relative to the repository root (no .cargo/config.toml moves it): cargo metadata's
  # absolute path is JSON-escaped on Windows.
  target_dir=${CARGO_TARGET_DIR:-target}
  case $target in
  *-linux-gnu)
    command -v cargo-zigbuild >/dev/null ||
      die "cargo-zigbuild is missing: pip install ziglang cargo-zigbuild (or give --binary)"
    # The suffix asks zig for that glibc's symbol versions; the output dir is the plain triple.
    echo "dist.sh: cargo zigbuild --release --target $target.$GLIBC_BASELINE" >&2
    cargo zigbuild --release --locked --target "$target.$GLIBC_BASELINE" >&2
    ;;
  *)
    echo "dist.sh: cargo build --release --target $target" >&2
    cargo build --release --locked --target "$target" >&2
    ;;
  esac
  binary=$target_dir/$target/release/$exe
fi
[ -f "$binary" ] || die "no binary at $binary"

# The highest glibc symbol version a Linux binary needs, when objdump can tell: a binary
# built without zig needs the build machine's glibc and would not run on older systems.
case $target in
*-linux-gnu)
  if command -v objdump >/dev/null; then
    needs=$(objdump -T "$binary" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -n 1 || true)
    echo "dist.sh: $binary needs ${needs:-no versioned glibc symbol}" >&2
  fi
  ;;
esac

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d -t envoi-dist.XXXXXX)
trap 'rm -rf "$stage"' EXIT
name=envoi-$target
dir=$stage/$name
mkdir -p "$dir/man" "$dir/completions"

cp "$binary" "$dir/$exe"
chmod 755 "$dir/$exe"
cp README.md config.example.toml "$dir/"
for license in LICENSE-*; do
  if [ -f "$license" ]; then cp "$license" "$dir/"; fi
done
"$dir/$exe" man --dir "$dir/man" >/dev/null ||
  die "$binary cannot run here to print its man pages: pack it on a $target machine"
"$dir/$exe" completions bash >"$dir/completions/envoi.bash"
"$dir/$exe" completions zsh >"$dir/completions/_envoi"
"$dir/$exe" completions fish >"$dir/completions/envoi.fish"
chmod -R u=rwX,go=rX "$dir"

# The archive, written beside its final name and renamed, so a mirror never serves half of one.
# Named to end as the archive does: 7-Zip chooses an extension for a name without one.
part=$out/.part.$archive
case $archive in
*.zip)
  rm -f "$part"
  if command -v zip >/dev/null; then
    (cd "$stage" && zip -qr -X "$part" "$name")
  elif command -v 7z >/dev/null; then
    (cd "$stage" && 7z a -tzip -bd "$part" "$name" >/dev/null)
  else
    py=$(command -v python3 || command -v python) || die "no zip, 7z or python to write $archive"
    (cd "$stage" && "$py" -m zipfile -c "$part" "$name")
  fi
  ;;
*)
  # GNU tar: no user or group names of the build machine in the archive.
  owner=()
  if tar --version 2>/dev/null | grep -q GNU; then owner=(--owner=0 --group=0 --numeric-owner); fi
  # (The empty array spelled so for macOS's bash 3.2, where "${owner[@]}" is unbound.)
  (cd "$stage" && tar -cf - ${owner[@]+"${owner[@]}"} "$name" | gzip -n >"$part")
  ;;
esac
mv -f "$part" "$out/$archive"

# SHA256SUMS: this archive's line replaces any old one; the other archives' lines are kept
# (one release's archives are packed on different machines and gathered in one folder).
if command -v sha256sum >/dev/null; then
  sum=$(cd "$out" && sha256sum "$archive")
else
  sum=$(cd "$out" && shasum -a 256 "$archive")
fi
sums=$out/SHA256SUMS
{
  if [ -f "$sums" ]; then awk -v f="$archive" '$2 != f && $2 != "*" f' "$sums"; fi
  printf '%s\n' "$sum"
} | LC_ALL=C sort -k 2 >"$sums.part"
mv -f "$sums.part" "$sums"
echo "dist.sh: wrote $out/$archive and its line in $sums" >&2
printf '%s\n' "$out/$archive"
