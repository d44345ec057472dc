#!/usr/bin/env bash
# The install step of the envoi GitHub Action (action.yml): installs the envoi release
# ENVOI_VERSION (x.y.z, vx.y.z or latest) with the repository's install.sh, which checks
# its SHA-256 (and reads ENVOI_INSTALL_BASE_URL, for a mirror), into the job's temporary
# folder, and puts that folder on the PATH of the job's later steps (GITHUB_PATH).
# A second use of the action in the same job finds the binary there and downloads nothing.
set -euo pipefail

version=${ENVOI_VERSION:-latest}
re='^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$'
if [ "$version" != latest ] && ! [[ "$version" =~ $re ]]; then
  # Escaped as a workflow command's data (send.sh's escape_data): a newline in the input
  # must not start a command of its own.
  shown=${version//'%'/'%25'}
  shown=${shown//$'\r'/'%0D'}
  shown=${shown//$'\n'/'%0A'}
  printf '::error title=envoi::version: "%s" is not a version (1.2.3, v1.2.3 or latest)\n' "$shown"
  exit 64
fi
bin="${RUNNER_TEMP:?RUNNER_TEMP is set by the runner}/envoi-${version#v}/bin"
if [ "$version" != latest ] && [ "$("$bin/envoi" --version 2>/dev/null)" = "envoi ${version#v}" ]; then
  echo "envoi ${version#v} is already installed in $bin"
else
  # install.sh prints the installed binary's path on stdout, its messages on stderr; the
  # folder is on PATH for it, since GITHUB_PATH puts it there (else it would say to).
  PATH="$bin:$PATH" ENVOI_VERSION=$version sh "$GITHUB_ACTION_PATH/install.sh" --bin-dir "$bin" >/dev/null
fi
# On Windows (Git Bash) the runner reads GITHUB_PATH as Windows paths.
if command -v cygpath >/dev/null 2>&1; then bin=$(cygpath -w "$bin"); fi
printf '%s\n' "$bin" >>"$GITHUB_PATH"
