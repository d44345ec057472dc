#!/usr/bin/env bash
# The send step of the envoi GitHub Action (action.yml at the repository root): turns the
# action's inputs (INPUT_* variables, set from `inputs` by the step's `env:`, never spliced
# into this script: script injection) into one `envoi send --json` and its JSON into the
# step outputs `status` and `message_id`. The names are action-send-mail's, so a workflow
# moves over by changing `uses:`; docs/github-action.md maps each one.
#
# Exit codes are envoi's (docs/exit-codes.md): 64 for an input this script refuses, 78 for
# `ignore_cert`, else whatever `envoi send` returned.
set -euo pipefail

# Every output is written, also on failure, so that `if: steps.mail.outputs.status == …`
# works after a failed step (with continue-on-error).
status=error
message_id=
# shellcheck disable=SC2329 # run by the EXIT trap
write_outputs() {
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    printf 'status=%s\nmessage_id=%s\n' "$status" "$message_id" >>"$GITHUB_OUTPUT"
  fi
}
trap write_outputs EXIT

# The data of a workflow command (`::name props::DATA`), escaped as @actions/core's
# escapeData does: the runner un-escapes %0D, %0A and %25 in it. Unescaped, a newline in an
# input would end our line and start any command of its own (`::stop-commands::`,
# `::add-mask::`), and a mask would register a different secret than the one given.
escape_data() {
  local s=${1//'%'/'%25'}
  s=${s//$'\r'/'%0D'}
  printf '%s' "${s//$'\n'/'%0A'}"
}

# A refused input: a GitHub error annotation (shown on the run's summary) and the exit code.
# The message quotes inputs, so it is escaped; `title=envoi` is ours and needs no escaping.
refuse() {
  local code=$1
  shift
  printf '::error title=envoi::%s\n' "$(escape_data "$*")"
  exit "$code"
}

# The password is masked before anything else runs, line by line (a mask is one line), so
# that no later log line (ours, envoi's, a shell trace) can show it; each line escaped, so
# that the runner, which un-escapes it, masks the very text (a password may hold `%0A`).
if [ -n "${INPUT_PASSWORD:-}" ]; then
  while IFS= read -r line; do
    if [ -n "$line" ]; then printf '::add-mask::%s\n' "$(escape_data "$line")"; fi
  done <<<"$INPUT_PASSWORD"
fi

is_true() {
  case "$2" in
    true | True | TRUE) return 0 ;;
    false | False | FALSE | '') return 1 ;;
    *) refuse 64 "$1: \"$2\" is not true or false" ;;
  esac
}

# RFC 3986 percent-encoding of every byte outside the unreserved set, for the parts of the
# connection URL (user name, host, query values) that come from inputs.
urlencode() {
  local LC_ALL=C
  local s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9._~-]) out+=$c ;;
      # Under LC_ALL=C a byte over 127 prints as a negative number: its last two digits.
      *) printf -v c '%02X' "'$c" && out+="%${c: -2}" ;;
    esac
  done
  printf '%s' "$out"
}

# action-send-mail reads `body`, `html_body` and `subject` from a file when they start with
# file:// (the rest is a path, relative to the working directory). Only a file of the
# workspace, outside any .git folder: an input (a pull request's title, say) must not mail
# out the runner's files, such as .git/config, which holds the checkout token. Sets
# REPLY to the file's real path (symbolic links resolved, so that none leads out), which
# is what is read: never the path as given, which could be swapped after the check.
# Returns 1 when the value is no file:// one.
workspace_file() {
  local input=$1 path given root real lower
  case "$2" in file://*) given=${2#file://} ;; *) return 1 ;; esac
  [ -f "$given" ] || refuse 66 "$input: $given (from file://) is not a file"
  # ./ first: realpath never reads a path as an option.
  case "$given" in /*) path=$given ;; *) path=./$given ;; esac
  root=${GITHUB_WORKSPACE:-$PWD}
  real=$(realpath "$path") || refuse 66 "$input: cannot resolve file://$given"
  root=$(realpath "$root") || refuse 66 "$input: cannot resolve the workspace $root"
  case "$real" in
    "${root%/}"/*) ;;
    *) refuse 64 "$input: file://$given is outside the workspace ($root), once links are followed: file:// reads only the workspace's files" ;;
  esac
  # Any case: .GIT is .git on macOS's and Windows' file systems.
  lower=$(printf '%s' "$real/" | tr '[:upper:]' '[:lower:]')
  case "$lower" in
    */.git/*) refuse 64 "$input: file://$given is inside a .git folder (which holds the checkout token): file:// reads no .git file" ;;
  esac
  REPLY=$real
}

if is_true ignore_cert "${INPUT_IGNORE_CERT:-}"; then
  refuse 78 "ignore_cert: envoi never turns certificate checks off (anyone on the path could \
read the password and the mail). Give tls_fingerprint: the SHA-256 of the server's \
certificate (openssl s_client -connect HOST:PORT </dev/null | openssl x509 -noout \
-fingerprint -sha256), or ca_file: the PEM file of the CA that signed it; and remove ignore_cert."
fi

args=(send --json)

# --- Where to: url, server_address (action-send-mail's inputs), profile, or the job's own
# ENVOI_SMTP_URL / ENVOI_CONFIG when none is given.
url=${INPUT_URL:-}
server=${INPUT_SERVER_ADDRESS:-}
given=0
for v in "$url" "$server" "${INPUT_PROFILE:-}"; do
  if [ -n "$v" ]; then given=$((given + 1)); fi
done
if [ "$given" -gt 1 ]; then
  refuse 64 "give one of url, server_address and profile, not several"
fi
query=()
if [ -n "${INPUT_CA_FILE:-}" ]; then query+=("ca_file=$(urlencode "$INPUT_CA_FILE")"); fi
if [ -n "${INPUT_TLS_FINGERPRINT:-}" ]; then
  query+=("tls_fingerprint=$(urlencode "$INPUT_TLS_FINGERPRINT")")
fi
if [ -n "$server" ]; then
  port=${INPUT_SERVER_PORT:-}
  case "$port" in '' | *[!0-9]*) [ -z "$port" ] || refuse 64 "server_port: \"$port\" is not a port number" ;; esac
  # action-send-mail: secure defaults to true on port 465. envoi's `smtp://` is STARTTLS,
  # required (never a silent fall back to plaintext); a relay without TLS needs
  # url: smtp://HOST:25?security=none.
  if [ -n "${INPUT_SECURE:-}" ]; then
    if is_true secure "$INPUT_SECURE"; then scheme=smtps; else scheme=smtp; fi
  elif [ "$port" = 465 ]; then
    scheme=smtps
  else
    scheme=smtp
  fi
  case "$server" in
    *:*) host="[${server#[}" && host="${host%]}]" ;;
    *) host=$(urlencode "$server") ;;
  esac
  url="$scheme://"
  if [ -n "${INPUT_USERNAME:-}" ]; then url+="$(urlencode "$INPUT_USERNAME")@"; fi
  url+=$host
  if [ -n "$port" ]; then url+=":$port"; fi
elif [ -n "${INPUT_SERVER_PORT:-}${INPUT_SECURE:-}${INPUT_USERNAME:-}" ]; then
  refuse 64 "server_port, secure and username go with server_address (with url, put them in the URL)"
fi
if [ -n "$url" ]; then
  if [ "${#query[@]}" -gt 0 ]; then
    case "$url" in *\?*) sep='&' ;; *) sep='?' ;; esac
    for q in "${query[@]}"; do
      url+="$sep$q"
      sep='&'
    done
  fi
  args+=("--smtp-url=$url")
elif [ "${#query[@]}" -gt 0 ]; then
  refuse 64 "ca_file and tls_fingerprint go with server_address or url (a profile has keys of the same names)"
fi
if [ -n "${INPUT_PROFILE:-}" ]; then args+=("--profile=$INPUT_PROFILE"); fi
if [ -n "${INPUT_CONFIG:-}" ]; then args+=("--config=$INPUT_CONFIG"); fi
# envoi reads the secret from the environment, never from its command line: the password
# of an SMTP login, or the bearer token of a graph:// / gmail:// URL or ?auth=xoauth2.
if [ -n "${INPUT_PASSWORD:-}" ]; then
  export ENVOI_PASSWORD="$INPUT_PASSWORD" ENVOI_TOKEN="$INPUT_PASSWORD"
fi

# --- Who
from=${INPUT_FROM:-}
if [ -n "$from" ] && [[ "$from" != *@* ]]; then
  # action-send-mail: a bare name is sent as "name" <username>.
  [[ "${INPUT_USERNAME:-}" == *@* ]] ||
    refuse 64 "from: \"$from\" has no address; write it as \"$from <address>\" (a bare name takes the address from username, which is not one)"
  name=${from//\\/\\\\}
  from="\"${name//\"/\\\"}\" <$INPUT_USERNAME>"
fi
if [ -n "$from" ]; then args+=("--from=$from"); fi
for pair in to:TO cc:CC bcc:BCC reply_to:REPLY_TO; do
  name=${pair%%:*}
  var=INPUT_${pair#*:}
  value=${!var:-}
  # One address a line (a YAML block) is a list too.
  value=${value//$'\r'/}
  value=${value//$'\n'/,}
  value=${value%,}
  if [ -z "$value" ]; then continue; fi
  # envoi reads "@FILE" as a file of addresses; an input is addresses, never a file name.
  case "${value#"${value%%[![:space:]]*}"}" in
    @*) refuse 64 "$name: \"$value\" starts with @: give the addresses themselves" ;;
  esac
  args+=("--${name//_/-}=$value")
done

# --- What
work=$(mktemp -d "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/envoi-action.XXXXXX")
# The bodies written below are the workflow's text: gone with the step.
trap 'rm -rf "$work"; write_outputs' EXIT

# Sets REPLY to the path of a body given as file://PATH (input $1, value $3), or of a file
# ($2 in the step's folder) holding the literal text. Not in a $( ): a refusal must reach
# the log and end the step.
text_file() {
  if ! workspace_file "$1" "$3"; then
    printf '%s' "$3" >"$work/$2"
    REPLY=$work/$2
  fi
}

subject=${INPUT_SUBJECT:-}
if workspace_file subject "$subject"; then
  subject=$(<"$REPLY")
fi
args+=("--subject=$subject")
body=${INPUT_BODY:-}
html=${INPUT_HTML_BODY:-}
if [ -n "$html" ]; then
  if is_true convert_markdown "${INPUT_CONVERT_MARKDOWN:-}"; then
    args+=(--markdown)
  else
    args+=(--html)
  fi
  text_file html_body html "$html"
  args+=("--body-file=$REPLY")
  if [ -n "$body" ]; then
    text_file body text "$body"
    args+=("--text-file=$REPLY")
  fi
elif [ -n "$body" ]; then
  # As in action-send-mail, convert_markdown converts html_body only.
  text_file body text "$body"
  args+=("--body-file=$REPLY")
else
  args+=("--body=")
fi
if [ -n "${INPUT_IN_REPLY_TO:-}" ]; then
  args+=("--header=In-Reply-To: $INPUT_IN_REPLY_TO" "--header=References: $INPUT_IN_REPLY_TO")
fi
if [ -n "${INPUT_PRIORITY:-}" ]; then args+=("--importance=$INPUT_PRIORITY"); fi

# attachments: comma-separated paths or globs (** included), relative to the working
# directory. A glob that matches no file is an error, as a missing file is: a report that
# silently goes without its attachment is worse than a failed step.
if [ -n "${INPUT_ATTACHMENTS:-}" ]; then
  shopt -s nullglob
  # ** needs bash 4 (macOS's /bin/bash is 3.2; its runners put Homebrew's bash first).
  globstar=0
  if shopt -s globstar 2>/dev/null; then globstar=1; fi
  IFS=, read -r -a patterns <<<"$INPUT_ATTACHMENTS"
  for pattern in "${patterns[@]}"; do
    pattern=${pattern#"${pattern%%[![:space:]]*}"}
    pattern=${pattern%"${pattern##*[![:space:]]}"}
    if [ -z "$pattern" ]; then continue; fi
    # An input names files: - is a file of that name, never envoi's standard input.
    if [ "$pattern" = - ]; then pattern=./-; fi
    # envoi's rule (docs/send.md): a value that names an existing file is that file, even
    # with * ? [ in its name (report[1].pdf), never a pattern.
    if [ -e "$pattern" ]; then
      args+=("--attach=$pattern")
      continue
    fi
    case "$pattern" in
      *[*?[]*)
        if [ "$globstar" = 0 ] && [[ "$pattern" == *'**'* ]]; then
          refuse 64 "attachments: $pattern needs bash 4 or newer for **; this bash is $BASH_VERSION"
        fi
        found=0
        IFS= # the glob is expanded, never split on spaces
        for f in $pattern; do
          if [ -f "$f" ]; then
            # Each match exists, so envoi takes it as it is, not as a pattern again; a
            # file named - is ./-, not standard input.
            case "$f" in
              -) f=./- ;;
              *\;type=*) refuse 64 "attachments: $f (matched by $pattern) has ;type= in its name, which envoi reads as a content type; rename it" ;;
            esac
            args+=("--attach=$f")
            found=$((found + 1))
          fi
        done
        unset IFS
        [ "$found" -gt 0 ] || refuse 66 "attachments: $pattern matches no file (in $PWD)"
        ;;
      *) args+=("--attach=$pattern") ;;
    esac
  done
fi

# --- How
key=${INPUT_IDEMPOTENCY_KEY:-}
if [ -n "$key" ]; then args+=("--idempotency-key=$key"); fi
if [ -n "${INPUT_OUTBOX_DIR:-}" ]; then args+=("--outbox-dir=$INPUT_OUTBOX_DIR"); fi
if is_true dry_run "${INPUT_DRY_RUN:-}"; then args+=(--dry-run); fi

rc=0
envoi "${args[@]}" >"$work/result.json" || rc=$?
# One JSON object on one line, read up to 64 KiB (a dry run's holds the message, attachments
# and all); status and message_id are its first two fields (src/cli/render.rs), and a
# Message-ID holds neither quotes nor backslashes.
json=$(head -c 65536 "$work/result.json")
re='^\{"status":"([a-z_]+)"(,"message_id":"([^"\\]*)")?'
if [[ "$json" =~ $re ]]; then
  status=${BASH_REMATCH[1]}
  message_id=${BASH_REMATCH[3]}
fi
if [ "$status" = dry_run ]; then
  # A dry run's JSON holds the whole message: its first 64 KiB go to the log.
  printf '%s\n' "$json"
fi
exit "$rc"
