#!/usr/bin/env bash
# Builds envoi's two Debian packages with cargo-deb (metadata: [package.metadata.deb] in
# Cargo.toml), lists them, and fails unless each holds what it must:
#   envoi      the binary, the man pages (envoi.1, envoi-COMMAND.1), bash/zsh/fish completions,
#              README, example config, docs/
#   envoi-mta  the links /usr/sbin/sendmail and /usr/lib/sendmail to /usr/bin/envoi, the
#              system spool's systemd units (packaging/systemd/) and the maintainer scripts
#              that make the user envoi and the spool (packaging/debian/mta/);
#              Provides/Conflicts/Replaces mail-transport-agent; Depends on this very envoi
#              (and adduser, for the postinst)
# Then it unpacks both into a temporary directory (dpkg-deb -x, no dpkg database involved)
# and runs the unpacked binary, directly and through the unpacked sendmail link, checks
# the unpacked units with `systemd-analyze verify` (it needs no running systemd), and, as
# root, runs envoi-mta's maintainer scripts in a private mount namespace (unshare -m) over
# copies of /etc and /var: the machine itself is never changed.
#
# It NEVER installs them: envoi-mta conflicts with every other MTA, so installing it would
# remove the machine's Postfix (which the tests use), Exim or msmtp-mta.
#
# Needs: cargo-deb (`cargo install cargo-deb --locked`; or CARGO_DEB=/path/to/cargo-deb),
# dpkg-deb, and dpkg-shlibdeps (dpkg-dev) for the Depends line. Writes target/assets/ (the
# generated man page and completions) and target/debian/*.deb. Offline once crates are fetched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# `cargo deb` unless a given cargo-deb binary (CI's pinned one) is to run.
if [ -n "${CARGO_DEB:-}" ]; then deb_cmd=("$CARGO_DEB"); else deb_cmd=(cargo deb); fi
"${deb_cmd[@]}" --version >/dev/null 2>&1 ||
  { echo "deb.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "deb.sh: dpkg-deb is missing (Debian's dpkg)" >&2; exit 1; }

unpacked=""
trap '[ -z "$unpacked" ] || rm -rf "$unpacked"' EXIT

# 1. The binary, built once: both cargo-deb runs below take it as it is (--no-build).
# ENVOI_DEB_PROFILE=dev packages the debug build instead of the release one: CI checks the
# packages' layout with it, since the release build (LTO, one codegen unit) alone took
# five minutes there and proves nothing the layout check needs.
profile="${ENVOI_DEB_PROFILE:-release}"
cargo build --profile "$profile" --locked
# cargo-deb reads "target/release/" in Cargo.toml as the real target dir and profile; so
# does this (Cargo's dev profile lives in target/debug).
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
case "$profile" in dev) profile_dir=debug ;; *) profile_dir="$profile" ;; esac
envoi="$target_dir/$profile_dir/envoi"
[ -x "$envoi" ] || { echo "deb.sh: no binary at $envoi" >&2; exit 1; }

# 2. The man page and completions, printed by that binary (from the same clap definitions as
# --help), at the paths Cargo.toml's assets name. Build output: target/ is not in git.
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets"
"$envoi" man --dir "$assets/man" >/dev/null
"$envoi" completions bash >"$assets/envoi.bash"
"$envoi" completions zsh >"$assets/_envoi"
"$envoi" completions fish >"$assets/envoi.fish"

# 3. The packages. cargo-deb prints the path of the .deb it wrote on stdout, its progress on
# stderr.
envoi_deb=$("${deb_cmd[@]}" --profile "$profile" --no-build --locked)
mta_deb=$("${deb_cmd[@]}" --profile "$profile" --variant mta --no-build --locked)

# 4. What is in them.
failed=0
# must LISTING ERE WHAT: a line of LISTING matches ERE, else WHAT is reported missing.
must() { grep -Eq -- "$2" <<<"$1" || { echo "deb.sh: MISSING $3 (no line matches $2)" >&2; failed=1; }; }
# must_not LISTING ERE WHAT: no line of LISTING matches ERE.
must_not() { ! grep -Eq -- "$2" <<<"$1" || { echo "deb.sh: UNWANTED $3 (a line matches $2)" >&2; failed=1; }; }

for deb in "$envoi_deb" "$mta_deb"; do
  printf '\n=== %s ===\n' "$deb"
  dpkg-deb -I "$deb"
  echo
  dpkg-deb -c "$deb"
done
echo

version=$(dpkg-deb -f "$envoi_deb" Version)
files=$(dpkg-deb -c "$envoi_deb")
control=$(dpkg-deb -f "$envoi_deb")
must "$control" '^Package: envoi$' "envoi: Package"
must "$control" '^Depends: .*libc6' "envoi: Depends on libc6 (from dpkg-shlibdeps)"
must_not "$control" 'mail-transport-agent' "envoi: any relation to mail-transport-agent"
must "$files" '^-rwxr-xr-x .* \./usr/bin/envoi$' "envoi: /usr/bin/envoi"
must "$files" '^-rw-r--r-- .* \./usr/share/man/man1/envoi\.1\.gz$' "envoi: the man page"
# One page per subcommand; the list is the binary's own (envoi.1 names each in SEE ALSO).
for page in "$assets"/man/envoi-*.1; do
  page=$(basename "$page")
  must "$files" "^-rw-r--r-- .* \\./usr/share/man/man1/${page//./\\.}\\.gz\$" "envoi: $page"
done
must "$files" '^-rw-r--r-- .* \./usr/share/bash-completion/completions/envoi$' "envoi: bash completion"
must "$files" '^-rw-r--r-- .* \./usr/share/zsh/vendor-completions/_envoi$' "envoi: zsh completion"
must "$files" '^-rw-r--r-- .* \./usr/share/fish/vendor_completions\.d/envoi\.fish$' "envoi: fish completion"
must "$files" ' \./usr/share/doc/envoi/README\.md$' "envoi: README.md"
must "$files" ' \./usr/share/doc/envoi/config\.example\.toml$' "envoi: config.example.toml"
must "$files" ' \./usr/share/doc/envoi/docs/microsoft-365\.md$' "envoi: the guides (docs/)"
must "$files" ' \./usr/share/doc/envoi/copyright$' "envoi: copyright"
# (envoi-sendmail.1.gz, the page of `envoi sendmail`, is envoi's own.)
must_not "$files" '\./usr/(s?bin|lib)/sendmail( |$)' "envoi: a sendmail link (it belongs to envoi-mta)"

files=$(dpkg-deb -c "$mta_deb")
control=$(dpkg-deb -f "$mta_deb")
must "$control" '^Package: envoi-mta$' "envoi-mta: Package"
# Compared as strings, not patterns (a Debian version may hold + or ~).
same() { [ "$1" = "$2" ] || { echo "deb.sh: WRONG $3: '$1', should be '$2'" >&2; failed=1; }; }
same "$(dpkg-deb -f "$mta_deb" Version)" "$version" "envoi-mta: Version"
# Cargo.toml repeats the version in this Depends (cargo-deb has no variable for it).
same "$(dpkg-deb -f "$mta_deb" Depends)" "adduser, envoi (= $version)" \
  "envoi-mta: Depends (update the mta variant's depends in Cargo.toml)"
must "$control" '^Provides: mail-transport-agent$' "envoi-mta: Provides mail-transport-agent"
must "$control" '^Conflicts: mail-transport-agent$' "envoi-mta: Conflicts mail-transport-agent"
must "$control" '^Replaces: mail-transport-agent$' "envoi-mta: Replaces mail-transport-agent"
must "$files" '^lrwxrwxrwx .* \./usr/sbin/sendmail -> \.\./bin/envoi$' "envoi-mta: /usr/sbin/sendmail link"
must "$files" '^lrwxrwxrwx .* \./usr/lib/sendmail -> \.\./sbin/sendmail$' "envoi-mta: /usr/lib/sendmail link"
must_not "$files" '^-.* \./usr/((bin|sbin)/|lib/[^/]+$)' "envoi-mta: a regular file in usr/bin, usr/sbin or usr/lib"
for unit in envoi-spool.service envoi-spool.path envoi-spool.timer; do
  must "$files" "^-rw-r--r-- .* \\./usr/lib/systemd/system/${unit//./\\.}\$" "envoi-mta: $unit"
done
# The maintainer scripts: the user envoi and the spool's modes, and the units enabled.
scripts=$(dpkg-deb -I "$mta_deb")
for script in postinst prerm postrm; do
  must "$scripts" " $script( |$)" "envoi-mta: the $script script"
done
postinst=$(dpkg-deb --ctrl-tarfile "$mta_deb" | tar -xO ./postinst)
must "$postinst" 'adduser --system --group .* envoi$' "envoi-mta postinst: the user envoi"
must "$postinst" 'install -d -o envoi -g envoi -m 3733 /var/spool/envoi$' "envoi-mta postinst: the spool, 3733"
must "$postinst" 'deb-systemd-helper enable envoi-spool\.path envoi-spool\.timer' "envoi-mta postinst: the units enabled"

# 5. Both unpacked side by side, as dpkg would lay them out: the man page is gzipped roff,
# the binary runs, and called through the packaged sendmail link it is in sendmail mode
# (argv[0] = .../sendmail), where -bp (print the queue) is a usage error, 64.
unpacked=$(mktemp -d -t envoi-deb.XXXXXX)
dpkg-deb -x "$envoi_deb" "$unpacked"
dpkg-deb -x "$mta_deb" "$unpacked"
root=$unpacked
if ! gzip -dc "$root/usr/share/man/man1/envoi.1.gz" | head -n 5 | grep -q '^\.TH'; then
  echo "deb.sh: the packaged man page is not gzipped roff" >&2; failed=1
fi
if [ "$(readlink -f "$root/usr/sbin/sendmail")" != "$(readlink -f "$root/usr/bin/envoi")" ] ||
  [ "$(readlink -f "$root/usr/lib/sendmail")" != "$(readlink -f "$root/usr/bin/envoi")" ]; then
  echo "deb.sh: the unpacked sendmail links do not lead to usr/bin/envoi" >&2; failed=1
fi
echo "unpacked usr/bin/envoi --version: $("$root/usr/bin/envoi" --version)"
rc=0
err=$("$root/usr/sbin/sendmail" -bp </dev/null 2>&1 >/dev/null) || rc=$?
echo "unpacked usr/sbin/sendmail -bp: exit $rc: $err"
if [ "$rc" != 64 ] || [[ "$err" != envoi:* ]]; then
  echo "deb.sh: usr/sbin/sendmail -bp should be envoi's usage error (64)" >&2; failed=1
fi

# The units as unpacked, with ExecStart pointed at the unpacked binary (verify checks that
# the command exists; --root would need a whole systemd tree). verify exits 0 on a key it
# cannot parse, so any word it prints is a failure. --man=no: the man page is not installed.
if command -v systemd-analyze >/dev/null; then
  mkdir "$unpacked/units"
  for unit in "$root"/usr/lib/systemd/system/envoi-spool.*; do
    sed "s|^ExecStart=/usr/bin/envoi |ExecStart=$root/usr/bin/envoi |" "$unit" \
      >"$unpacked/units/$(basename "$unit")"
  done
  verify=$(systemd-analyze verify --man=no "$unpacked"/units/envoi-spool.* 2>&1) || failed=1
  if [ -n "$verify" ]; then
    echo "deb.sh: systemd-analyze verify on the units: $verify" >&2; failed=1
  else
    echo "systemd-analyze verify: envoi-spool.service, .path and .timer are clean"
  fi
else
  echo "deb.sh: systemd-analyze is missing (systemd); the units were not verified" >&2; failed=1
fi

# 6. envoi-mta's maintainer scripts, as shipped, run as dpkg would run them on install,
# remove and purge, in a private mount namespace over copies of /etc, /var/lib and
# /var/spool (and the units alone in /usr/lib/systemd/system): the user envoi, the spool's
# modes and the units' enable links are checked there; the machine is left as it was.
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -m true 2>/dev/null; then
  work="$unpacked/maint"
  mkdir -p "$work/control" "$work/varlib" "$work/varspool" "$work/units"
  dpkg-deb -e "$mta_deb" "$work/control"
  cp "$root"/usr/lib/systemd/system/envoi-spool.* "$work/units/"
  # shellcheck disable=SC2016 # expanded by the inner shell
  maint=$(unshare -m --propagation private sh -euc '
    work=$1
    cp -a /etc "$work/etc"
    mount --bind "$work/etc" /etc
    mount --bind "$work/varlib" /var/lib
    mount --bind "$work/varspool" /var/spool
    mount --bind "$work/units" /usr/lib/systemd/system
    run() { DPKG_MAINTSCRIPT_PACKAGE=envoi-mta DPKG_MAINTSCRIPT_NAME=$1 sh "$work/control/$1" "$2" >/dev/null 2>&1; }
    run postinst configure
    echo "user $(getent passwd envoi | cut -d: -f1,6,7)"
    stat -c "mode %a %U %G %n" /var/spool/envoi /var/spool/envoi/bad /var/lib/envoi
    for link in /etc/systemd/system/*.target.wants/envoi-*; do echo "enabled ${link##*/}"; done
    run prerm remove
    run postrm remove
    run postrm purge
    [ -e /var/spool/envoi ] || echo "purged /var/spool/envoi"
    [ -e /var/lib/envoi ] || echo "purged /var/lib/envoi"
  ' sh "$work" 2>&1) || { echo "deb.sh: envoi-mta's maintainer scripts failed: $maint" >&2; failed=1; }
  printf '%s\n' "$maint"
  must "$maint" '^user envoi:/var/lib/envoi:/usr/sbin/nologin$' "envoi-mta postinst: the user envoi"
  must "$maint" '^mode 3733 envoi envoi /var/spool/envoi$' "envoi-mta postinst: the spool, 3733 envoi:envoi"
  must "$maint" '^mode 700 envoi envoi /var/spool/envoi/bad$' "envoi-mta postinst: bad/, 0700"
  must "$maint" '^mode 700 envoi envoi /var/lib/envoi$' "envoi-mta postinst: /var/lib/envoi, 0700"
  must "$maint" '^enabled envoi-spool\.path$' "envoi-mta postinst: envoi-spool.path enabled"
  must "$maint" '^enabled envoi-spool\.timer$' "envoi-mta postinst: envoi-spool.timer enabled"
  must "$maint" '^purged /var/spool/envoi$' "envoi-mta postrm purge: the spool deleted"
  must "$maint" '^purged /var/lib/envoi$' "envoi-mta postrm purge: the outbox deleted"
else
  echo "deb.sh: note: envoi-mta's maintainer scripts were not run (it needs root and unshare -m)"
fi

if [ "$failed" != 0 ]; then
  echo "deb.sh: the packages are not as they should be (above)" >&2
  exit 1
fi
echo "deb.sh: ok: $envoi_deb $mta_deb"
