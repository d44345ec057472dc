#!/usr/bin/env bash
# Benchmark envoi against its peers on loopback, each scenario's commands in the same hyperfine
# invocation so that the figures are comparable on a noisy machine: quote ratios, not absolute
# times. The scenarios follow issue 10's list. See bench/README.md.
#
#   bash bench/bench.sh                 # all five scenarios, default counts (below)
#   RUNS=50 bash bench/bench.sh         # quicker
#   BENCH_SCENARIOS=25 bash bench/bench.sh   # only scenarios 2 and 5
#
# 1: one ~1 KB message, one recipient, to smtp-sink: envoi vs curl vs msmtp (median, whole
#    process).
# 2: the same with STARTTLS + AUTH PLAIN, to a private Postfix (smtpd with STARTTLS required
#    and SASL through a private Dovecot's auth socket, see bench/private-postfix.sh) with a
#    throwaway CA made at run time: envoi vs curl vs msmtp.
# 3: one random attachment of ATTACH_MIB MiB to smtp-sink: wall time and peak RSS, envoi vs
#    curl vs s-nail vs msmtp (msmtp cannot attach: it sends the same file as a prepared MIME
#    message).
# 4: BATCH_MSGS messages of ~2 KB to smtp-sink: `envoi batch` with 1 session (and 4 with
#    --concurrency, when envoi has it) vs `smtp-source -d -s 1` and `-s 4` vs a Python smtplib
#    loop on one connection.
# 5: the same BATCH_MSGS into the private Postfix's disk queue (discard transport):
#    `envoi batch` vs `smtp-source -d` (1 session, and 4 when envoi has --concurrency).
# 6: peak RSS of `envoi batch` over FLAT_SMALL and FLAT_BIG records.
# 7: one ~1 KB message over HTTPS to a loopback Microsoft Graph sendMail endpoint (the tests'
#    tests/it/support/mail_api.py, which follows Graph's MIME contract): `envoi send` through a
#    `transport = "graph"` profile vs curl POSTing the same kind of body (base64 MIME).
# 8: one batch split across workers through a private PostgreSQL (initdb on loopback): FLEET_MSGS
#    records of ~2 KB to smtp-sink by 1 worker vs 3 at once (`--campaign`, FLEET_SESSIONS
#    sessions each), records/s; the ledger's cost per record (1 worker with `--campaign` vs a
#    plain batch) and per message (`send --idempotency-key`, PostgreSQL vs the file ledger).
set -euo pipefail

# --- envoi's command line: the only place to change when its flags change -------------------
# @PORT@, @BODY@ and @ATTACH@ are filled in below; hyperfine splits this like a shell would.
ENVOI_SEND_ARGS="send --smtp-url 'smtp://127.0.0.1:@PORT@?security=none' --from s@example.test --to r@example.test --subject bench --body-file @BODY@"
ENVOI_ATTACH_ARGS="--attach @ATTACH@"
# Scenario 2: --smtp-url cannot name a CA file, so a profile in a private config file
# (@TLSCONFIG@: host, port, security = "starttls", username, password_env = "ENVOI_PASSWORD",
# ca_file; written below) carries the connection.
ENVOI_TLS_ARGS="send --config @TLSCONFIG@ --profile bench --to r@example.test --subject bench --body-file @BODY@"
# @RECORDS@ is a JSON Lines file of BATCH_MSGS payloads; one session carries them all.
ENVOI_BATCH_ARGS="batch --smtp-url 'smtp://127.0.0.1:@PORT@?security=none' --from s@example.test --per-session @MSGS@ --report @REPORT@ @RECORDS@"
# Added to ENVOI_BATCH_ARGS for 4 sessions at once, only when `envoi batch --help` has it.
ENVOI_CONCURRENCY_FLAG="--concurrency"
# Scenario 7: @GRAPHCONFIG@ holds a graph profile (api_url on loopback, ca_file, token_env).
ENVOI_GRAPH_ARGS="send --config @GRAPHCONFIG@ --profile graph --to r@example.test --subject bench --body-file @BODY@"
# ----------------------------------------------------------------------------------------------

WARMUP=${WARMUP:-20}
RUNS=${RUNS:-200}
ATTACH_RUNS=${ATTACH_RUNS:-10}
ATTACH_MIB=${ATTACH_MIB:-10}
BATCH_MSGS=${BATCH_MSGS:-1000}
BATCH_RUNS=${BATCH_RUNS:-10}
# Scenario 5 is slow (every message is fsynced into Postfix's queue): fewer runs.
POSTFIX_RUNS=${POSTFIX_RUNS:-5}
# Scenario 6: peak memory of `envoi batch` over FLAT_SMALL and FLAT_BIG records (one run each).
FLAT_SMALL=${FLAT_SMALL:-1000}
FLAT_BIG=${FLAT_BIG:-1000000}
# Scenario 7: the loopback Graph endpoint is a Python server: fewer runs than scenario 1.
GRAPH_RUNS=${GRAPH_RUNS:-100}
# Scenario 8: records per run, sessions per worker, runs per variant (median), sends per ledger.
FLEET_MSGS=${FLEET_MSGS:-10000}
FLEET_SESSIONS=${FLEET_SESSIONS:-2}
FLEET_RUNS=${FLEET_RUNS:-3}
LEDGER_SENDS=${LEDGER_SENDS:-200}
# Scenario 8's PostgreSQL: fsync on (what a real ledger pays); off shows the protocol's own cost.
FLEET_PG_FSYNC=${FLEET_PG_FSYNC:-on}
BENCH_SCENARIOS=${BENCH_SCENARIOS:-12345678}
# Set BENCH_INSTALL=0 to never call apt-get (then missing tools are skipped or fatal).
BENCH_INSTALL=${BENCH_INSTALL:-1}
# Set BENCH_SKIP_ENVOI=1 to bench the peers only (e.g. while `envoi send` does not work yet).
BENCH_SKIP_ENVOI=${BENCH_SKIP_ENVOI:-0}
# Set ENVOI_BIN to an envoi binary to bench it instead of building this tree.
ENVOI_BIN=${ENVOI_BIN:-}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUT_DIR=${OUT_DIR:-$ROOT/target/bench}
mkdir -p "$OUT_DIR"
export DEBIAN_FRONTEND=noninteractive
# shellcheck source=bench/private-postfix.sh
. "$ROOT/bench/private-postfix.sh"

say() { printf '\n== %s ==\n' "$*"; }
want() { [[ $BENCH_SCENARIOS == *$1* ]]; }

apt_install() {
  [ "$BENCH_INSTALL" = 1 ] && [ "$(id -u)" = 0 ] || return 1
  echo "installing $* with apt-get"
  timeout 600 apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 ||
    { timeout 600 apt-get update -q >/dev/null 2>&1 && timeout 600 apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1; }
}

find_smtp_sink() { command -v smtp-sink 2>/dev/null || { [ -x /usr/sbin/smtp-sink ] && echo /usr/sbin/smtp-sink; } || true; }

say "tools"
command -v hyperfine >/dev/null || apt_install hyperfine || { echo "hyperfine is required" >&2; exit 1; }
[ -x /usr/bin/time ] || apt_install time || { echo "/usr/bin/time (package time) is required" >&2; exit 1; }
command -v msmtp >/dev/null || apt_install msmtp || echo "msmtp not available: skipped"
if want 3; then command -v s-nail >/dev/null || apt_install s-nail || echo "s-nail not available: skipped"; fi
if [ -z "$(find_smtp_sink)" ]; then
  echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections 2>/dev/null || true
  apt_install postfix || { echo "smtp-sink (package postfix) is required" >&2; exit 1; }
  # The package must not leave an MTA running.
  if /usr/sbin/postfix status >/dev/null 2>&1; then /usr/sbin/postfix stop >/dev/null 2>&1 || true; fi
fi
# Scenario 8 runs a private PostgreSQL cluster (Debian's postgresql: initdb and postgres).
pg_bin() { find /usr/lib/postgresql -maxdepth 3 -name initdb -path '*/bin/*' 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname; }
if want 8 && [ -z "$(pg_bin)" ]; then
  apt_install postgresql || echo "PostgreSQL (initdb) not available: scenario 8 skipped"
fi
# Scenarios 2 and 5 run a private Postfix (and, for SASL, a private Dovecot): root only.
PF_OK=0
if want 2 || want 5; then
  if [ "$(id -u)" != 0 ]; then
    echo "scenarios 2 and 5 need root (a private Postfix): skipped"
  else
    if ! command -v dovecot >/dev/null; then
      if apt_install dovecot-core; then
        # Like Postfix above: the package must not leave its own daemon running.
        if [ -s /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
          timeout 30 doveadm stop >/dev/null 2>&1 || true
        fi
      fi
    fi
    if ! command -v dovecot >/dev/null; then
      echo "dovecot (package dovecot-core, for SASL) not available: scenarios 2 and 5 skipped"
    elif ! command -v openssl >/dev/null; then
      echo "openssl not available: scenarios 2 and 5 skipped"
    else
      PF_OK=1
    fi
  fi
fi
SMTP_SINK=$(find_smtp_sink)
hyperfine --version
curl --version | head -n 1
if command -v msmtp >/dev/null; then msmtp --version | head -n 1; fi
if command -v s-nail >/dev/null; then s-nail -V 2>&1 | head -n 1; fi
echo "smtp-sink: $SMTP_SINK ($(dpkg-query -W -f='${Version}' postfix 2>/dev/null || echo '?'))"
if [ "$PF_OK" = 1 ]; then
  echo "postfix $(postconf -d -h mail_version 2>/dev/null || echo '?'), $(dovecot --version 2>/dev/null | sed 's/^/dovecot /')"
fi
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), load $(cut -d' ' -f1-3 /proc/loadavg), WARMUP=$WARMUP RUNS=$RUNS ATTACH_RUNS=$ATTACH_RUNS BATCH_RUNS=$BATCH_RUNS POSTFIX_RUNS=$POSTFIX_RUNS"

WORK=$(mktemp -d -t envoi-bench.XXXXXX)
SINK_PIDS=()
cleanup() {
  local pid
  pf_stop
  for pid in "${SINK_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/home"
# Every command, envoi and its peers alike, runs in one clean environment: nothing but PATH,
# a HOME of its own (no ~/.config/envoi, ~/.curlrc or ~/.msmtprc of the machine's) and the
# secrets of BENCH_ENV. hyperfine itself runs under it, so no tool pays for a wrapper the
# others do not: an `env -i` in front of envoi alone cost it an exec (~0.9 ms here, a
# quarter of scenario 1) that curl never paid.
BENCH_ENV=()
clean_env() { env -i "PATH=$PATH" "HOME=$WORK/home" "${BENCH_ENV[@]}" "$@"; }

say "inputs"
# ~1 KB of text for the body, and the same as a complete message (CRLF) for curl/msmtp.
python3 - "$WORK" <<'EOF'
import sys
work = sys.argv[1]
line = "The quick brown fox jumps over the lazy dog, again and again, for the benchmark.\n"
body = line * 13                                  # 13 * 82 = 1066 bytes
open(f"{work}/body.txt", "w").write(body)
head = ("From: s@example.test\nTo: r@example.test\nSubject: bench\n"
        "Date: Thu, 26 Nov 2026 12:00:00 +0000\nMessage-ID: <bench@example.test>\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n")
open(f"{work}/small.eml", "wb").write((head + body).replace("\n", "\r\n").encode())
EOF
# Scenarios 4 and 5: BATCH_MSGS payloads of ~2 KB, and the same loop in Python's smtplib.
python3 - "$WORK" "$BATCH_MSGS" <<'EOF'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
body = "x" * 70 + "\n"
body *= 28                                        # 28 * 71 = 1988 bytes
open(f"{work}/batch-body.txt", "w").write(body)
with open(f"{work}/batch.jsonl", "w") as f:
    for i in range(n):
        f.write(json.dumps({"To": f"r{i}@example.test", "Subject": f"bench {i}", "Body": body}) + "\n")
# The same records to one recipient, as smtp-source sends (scenario 5's server share).
with open(f"{work}/batch-one-rcpt.jsonl", "w") as f:
    for i in range(n):
        f.write(json.dumps({"To": "r@example.test", "Subject": f"bench {i}", "Body": body}) + "\n")
open(f"{work}/smtplib_loop.py", "w").write(f"""import smtplib, sys
body = {body!r}.replace("\\n", "\\r\\n")
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
for i in range({n}):
    s.sendmail("s@example.test", [f"r{{i}}@example.test"],
               f"From: s@example.test\\r\\nTo: r{{i}}@example.test\\r\\nSubject: bench {{i}}\\r\\n\\r\\n" + body)
s.quit()
""")
EOF
# Scenario 6: the same payloads from a generator, never written to disk whole.
cat >"$WORK/gen_records.py" <<'EOF'
import json, sys
body = ("x" * 70 + "\n") * 28
out = sys.stdout
for i in range(int(sys.argv[1])):
    out.write(json.dumps({"To": f"r{i}@example.test", "Subject": f"bench {i}", "Body": body}) + "\n")
EOF
head -c $((ATTACH_MIB * 1024 * 1024)) /dev/urandom >"$WORK/file.bin"
# Scenario 3, msmtp: the same file as a complete MIME message (base64, 76-column CRLF lines),
# built beforehand as in the performance notes (msmtp has no attachment option).
python3 - "$WORK" <<'EOF'
import base64, sys
work = sys.argv[1]
body = open(f"{work}/body.txt").read().replace("\n", "\r\n")
b64 = base64.encodebytes(open(f"{work}/file.bin", "rb").read()).replace(b"\n", b"\r\n")
head = ("From: s@example.test\r\nTo: r@example.test\r\nSubject: bench\r\n"
        "Date: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <big@example.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0undary\"\r\n\r\n"
        "--b0undary\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body +
        "\r\n--b0undary\r\nContent-Type: application/octet-stream\r\n"
        "Content-Disposition: attachment; filename=\"file.bin\"\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n")
with open(f"{work}/big.eml", "wb") as f:
    f.write(head.encode() + b64 + b"\r\n--b0undary--\r\n")
EOF
stat -c "%s bytes  %n" "$WORK/body.txt" "$WORK/small.eml" "$WORK/file.bin" "$WORK/big.eml"

say "smtp-sink"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sink_user=()
[ "$(id -u)" = 0 ] && sink_user=(-u nobody)
# start_sink LOG ARGS...: starts smtp-sink on a free port, sets SINK_PORT.
start_sink() {
  local log=$1 pid
  shift
  for _try in 1 2 3 4 5; do
    SINK_PORT=$(free_port)
    "$SMTP_SINK" -4 -t 30 "${sink_user[@]}" "$@" "127.0.0.1:$SINK_PORT" 1000 2>"$log" &
    pid=$!
    SINK_PIDS+=("$pid")
    for _ in $(seq 100); do # up to 10 s
      if (exec 3<>"/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null; then
        echo "smtp-sink $* pid $pid on 127.0.0.1:$SINK_PORT"
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  echo "smtp-sink did not start:" >&2
  cat "$log" >&2
  exit 1
}
# The timed runs go to a sink that keeps nothing (as in the performance notes)...
start_sink "$WORK/sink.log"
PORT=$SINK_PORT
# ...and each command is first checked once against a sink that dumps what arrives.
# As root the sink runs as nobody, which must reach and write the dump dir.
mkdir -p "$WORK/dumps"
chmod 755 "$WORK"
chmod 777 "$WORK/dumps"
start_sink "$WORK/check-sink.log" -d "$WORK/dumps/msg."
CHECK_PORT=$SINK_PORT

# Scenarios 2 and 5: a throwaway CA and a server certificate for 127.0.0.1 it signed, a
# throwaway password, and the private Postfix + Dovecot (stopped by cleanup).
TLS_USER=bench
TLS_PASS=""
if [ "$PF_OK" = 1 ]; then
  say "private Postfix (STARTTLS + AUTH via Dovecot; disk queue; discard transport)"
  mkdir -p "$WORK/tls"
  (
    cd "$WORK/tls"
    timeout 60 openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=envoi bench CA" \
      -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.pem 2>/dev/null
    timeout 60 openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:false" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >server.ext
    timeout 60 openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.pem 2>/dev/null
    chgrp postfix server.key
    chmod 640 server.key
  )
  chmod 755 "$WORK/tls"
  TLS_PASS="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
  PF_PORT=$(free_port)
  PF_TLS_PORT=$(free_port)
  if pf_start "$WORK/postfix" "$PF_PORT" "$PF_TLS_PORT" "$WORK/tls/server.pem" "$WORK/tls/server.key" "$TLS_USER" "$TLS_PASS"; then
    echo "private Postfix on 127.0.0.1:$PF_PORT (plain) and 127.0.0.1:$PF_TLS_PORT (STARTTLS + AUTH required), in $WORK/postfix"
  else
    echo "WARNING: the private Postfix did not start: scenarios 2 and 5 skipped" >&2
    pf_stop
    PF_OK=0
  fi
fi

fill() { # fill ARGS: substitute the file placeholders (@PORT@ is filled when run)
  local s=$1
  s=${s//@BODY@/$WORK/body.txt}
  s=${s//@ATTACH@/$WORK/file.bin}
  s=${s//@RECORDS@/$WORK/batch.jsonl}
  s=${s//@REPORT@/$WORK/batch.report.jsonl}
  s=${s//@MSGS@/$BATCH_MSGS}
  s=${s//@TLSCONFIG@/$WORK/envoi-tls.toml}
  s=${s//@GRAPHCONFIG@/$WORK/envoi-graph.toml}
  printf '%s' "$s"
}

ENVOI_EXE=""
if [ "$BENCH_SKIP_ENVOI" != 1 ]; then
  if [ -n "$ENVOI_BIN" ]; then
    ENVOI_EXE=$ENVOI_BIN
    echo "envoi: $ENVOI_EXE (ENVOI_BIN, not built here)"
  else
    say "build envoi (release)"
    if timeout 3600 cargo build --release --locked -q; then
      ENVOI_EXE=${CARGO_TARGET_DIR:-$ROOT/target}/release/envoi
    else
      echo "WARNING: envoi did not build: benchmarking the peers only" >&2
    fi
  fi
fi
ENVOI=""
ENVOI_CONCURRENCY=""
if [ -n "$ENVOI_EXE" ]; then
  ENVOI="$ENVOI_EXE"
  "$ENVOI_EXE" --version 2>/dev/null || true
  if timeout 30 "$ENVOI_EXE" batch --help 2>/dev/null | grep -q -e "$ENVOI_CONCURRENCY_FLAG"; then
    ENVOI_CONCURRENCY="$ENVOI_CONCURRENCY_FLAG 4"
  fi
fi

# Candidate commands: NAME|COMMAND (hyperfine -N splits COMMAND like a POSIX shell).
CURL="curl -sS --max-time 60 --url smtp://127.0.0.1:@PORT@ --mail-from s@example.test --mail-rcpt r@example.test"
small=("curl|$CURL -T $WORK/small.eml")
[ -n "$ENVOI" ] && small+=("envoi|$ENVOI $(fill "$ENVOI_SEND_ARGS")")
# msmtp reads the message from stdin only, so it goes through sh (adds ~1 ms of dash start-up).
command -v msmtp >/dev/null &&
  small+=("msmtp|sh -c 'exec msmtp --host=127.0.0.1 --port=@PORT@ --from=s@example.test r@example.test < $WORK/small.eml'")

# Scenario 2: each client trusts the throwaway CA and logs in as TLS_USER.
tls=()
if [ "$PF_OK" = 1 ]; then
  tls=("curl|$CURL --ssl-reqd --cacert $WORK/tls/ca.pem --user $TLS_USER:$TLS_PASS -T $WORK/small.eml")
  if [ -n "$ENVOI" ]; then
    cat >"$WORK/envoi-tls.toml" <<EOF
[profiles.bench]
host = "127.0.0.1"
port = $PF_TLS_PORT
security = "starttls"
username = "$TLS_USER"
password_env = "ENVOI_PASSWORD"
ca_file = "$WORK/tls/ca.pem"
from = "s@example.test"
timeout_secs = 30
EOF
    BENCH_ENV+=("ENVOI_PASSWORD=$TLS_PASS")
    tls+=("envoi|$ENVOI_EXE $(fill "$ENVOI_TLS_ARGS")")
  fi
  if command -v msmtp >/dev/null; then
    # msmtp keeps the password in its (private) configuration file, as its users do.
    printf '%s\n' "account default" "host 127.0.0.1" "from s@example.test" "tls on" "tls_starttls on" \
      "tls_trust_file $WORK/tls/ca.pem" "auth on" "user $TLS_USER" "password $TLS_PASS" >"$WORK/msmtprc-tls"
    chmod 600 "$WORK/msmtprc-tls"
    tls+=("msmtp|sh -c 'exec msmtp -C $WORK/msmtprc-tls --port=@PORT@ r@example.test < $WORK/small.eml'")
  fi
fi

attach=("curl|$CURL -H 'Subject: bench' -H 'From: s@example.test' -H 'To: r@example.test' -F '=@$WORK/file.bin;encoder=base64'")
[ -n "$ENVOI" ] && attach+=("envoi|$ENVOI $(fill "$ENVOI_SEND_ARGS") $(fill "$ENVOI_ATTACH_ARGS")")
# s-nail and msmtp read the body / the message from stdin: through sh, as in scenario 1.
command -v s-nail >/dev/null &&
  attach+=("s-nail|sh -c 'exec s-nail -:/ -S v15-compat -S sendwait -S nosave -S mta=smtp://127.0.0.1:@PORT@ -S smtp-auth=none -S from=s@example.test -s bench -a $WORK/file.bin r@example.test < $WORK/body.txt'")
command -v msmtp >/dev/null &&
  attach+=("msmtp|sh -c 'exec msmtp --host=127.0.0.1 --port=@PORT@ --from=s@example.test r@example.test < $WORK/big.eml'")

SMTP_SOURCE=$(command -v smtp-source || { [ -x /usr/sbin/smtp-source ] && echo /usr/sbin/smtp-source; } || true)
source_cmd() { # source_cmd SESSIONS: smtp-source reusing each of SESSIONS connections
  echo "smtp-source -d -s $1|$SMTP_SOURCE -d -s $1 -m $BATCH_MSGS -l 2048 -f s@example.test -t r@example.test 127.0.0.1:@PORT@"
}
# Scenario 4 (to smtp-sink) and 5 (into Postfix).
many=()
into_postfix=()
if [ -n "$SMTP_SOURCE" ]; then
  many+=("$(source_cmd 1)" "$(source_cmd 4)")
  into_postfix+=("$(source_cmd 1)")
  # The server's share of scenario 5: smtp-source sending one of envoi's own messages (its
  # whole header set; -F wants LF line ends and adds the CRLFs) instead of its bare one.
  if [ -n "$ENVOI_EXE" ] && clean_env "$ENVOI_EXE" send --dry-run --from s@example.test \
    --to r0@example.test --subject "bench 0" --body-file "$WORK/batch-body.txt" 2>/dev/null |
    tr -d '\r' >"$WORK/envoi-message.eml" && [ -s "$WORK/envoi-message.eml" ]; then
    into_postfix+=("smtp-source -F envoi's message|$SMTP_SOURCE -d -s 1 -m $BATCH_MSGS -F $WORK/envoi-message.eml -f s@example.test -t r@example.test 127.0.0.1:@PORT@")
  fi
fi
many+=("python smtplib|python3 $WORK/smtplib_loop.py @PORT@")
if [ -n "$ENVOI" ]; then
  many+=("envoi batch|$ENVOI $(fill "$ENVOI_BATCH_ARGS")")
  into_postfix+=("envoi batch|$ENVOI $(fill "$ENVOI_BATCH_ARGS")")
  into_postfix+=("envoi batch, one recipient|$ENVOI $(fill "$ENVOI_BATCH_ARGS" | sed "s|batch.jsonl|batch-one-rcpt.jsonl|")")
  if [ -n "$ENVOI_CONCURRENCY" ]; then
    many+=("envoi batch $ENVOI_CONCURRENCY|$ENVOI $(fill "$ENVOI_BATCH_ARGS") $ENVOI_CONCURRENCY")
    [ -n "$SMTP_SOURCE" ] && into_postfix+=("$(source_cmd 4)")
    into_postfix+=("envoi batch $ENVOI_CONCURRENCY|$ENVOI $(fill "$ENVOI_BATCH_ARGS") $ENVOI_CONCURRENCY")
  fi
fi
CONCURRENCY_NOTE=""
if [ -n "$ENVOI" ] && [ -z "$ENVOI_CONCURRENCY" ]; then
  CONCURRENCY_NOTE="skipped: envoi batch has no $ENVOI_CONCURRENCY_FLAG yet"
fi

# with_port PORT ENTRY: the entry with @PORT@ filled in.
with_port() { printf '%s' "${2//@PORT@/$1}"; }

# check LIST N MIN_BYTES: keeps only the commands that, run once against the dumping sink,
# exit 0 and deliver exactly N messages, the last of at least MIN_BYTES (a command that fails
# or sends too little would make the timings meaningless).
check() {
  local -n list=$1
  local n=$2 min_bytes=$3 kept=() entry before after size
  for entry in "${list[@]}"; do
    before=$(find "$WORK/dumps" -type f | wc -l)
    if eval "clean_env timeout 300 $(with_port "$CHECK_PORT" "${entry#*|}")" >"$WORK/check.log" 2>&1; then
      after=$(find "$WORK/dumps" -type f | wc -l)
      size=$(find "$WORK/dumps" -type f -printf '%T@ %s\n' | sort -n | tail -n 1 | cut -d' ' -f2)
      if [ "$after" -eq $((before + n)) ] && [ "${size:-0}" -ge "$min_bytes" ]; then
        echo "checked: ${entry%%|*} delivered $n message(s) (the last $size bytes in the sink's dump)"
        kept+=("$entry")
        continue
      fi
      echo "WARNING: ${entry%%|*} exited 0 but delivered $((after - before)) message(s) (last ${size:-0} bytes), left out" >&2
    else
      echo "WARNING: ${entry%%|*} failed, left out:" >&2
      sed 's/^/    /' "$WORK/check.log" | tail -n 5 >&2
    fi
  done
  list=("${kept[@]}")
  [ "${#list[@]}" -gt 0 ] || { echo "no command of $1 works" >&2; exit 1; }
}
# check_pf LIST PORT N AUTH MIN_BYTES: keeps the commands that, run once against the private
# Postfix on PORT, exit 0 and have exactly N messages accepted and discarded (counted in
# Postfix's own log), the last of at least MIN_BYTES; with AUTH=1 each of the N must also have
# been queued in a session that authenticated as TLS_USER (smtpd logs sasl_username per
# message; the STARTTLS listener refuses RCPT without AUTH and AUTH without TLS anyway).
check_pf() {
  local -n pf_list=$1
  local port=$2 n=$3 auth=$4 min_bytes=$5 kept=() entry sent0 auth0 sent auths size
  for entry in "${pf_list[@]}"; do
    pf_wait_empty 120 || true
    sent0=$(pf_count ' status=sent ')
    auth0=$(pf_count "sasl_username=$TLS_USER\$")
    if eval "clean_env timeout 300 $(with_port "$port" "${entry#*|}")" >"$WORK/check.log" 2>&1; then
      pf_wait_sent $((sent0 + n)) 120 || true
      sleep 1 # a message beyond N would show now
      pf_wait_empty 120 || true
      sent=$(($(pf_count ' status=sent ') - sent0))
      auths=$(($(pf_count "sasl_username=$TLS_USER\$") - auth0))
      size=$(grep -o ' size=[0-9]*' "$PF_DIR/log/maillog" | tail -n 1 | cut -d= -f2)
      if [ "$sent" -eq "$n" ] && [ "${size:-0}" -ge "$min_bytes" ] && { [ "$auth" = 0 ] || [ "$auths" -eq "$n" ]; }; then
        if [ "$auth" = 1 ]; then
          echo "checked: ${entry%%|*} authenticated as $TLS_USER over STARTTLS; Postfix accepted and discarded $n message(s) (last $size bytes)"
        else
          echo "checked: ${entry%%|*}: Postfix accepted and discarded $n message(s)"
        fi
        kept+=("$entry")
        continue
      fi
      echo "WARNING: ${entry%%|*} exited 0 but Postfix logged $sent message(s) discarded, $auths authenticated (want $n), left out" >&2
    else
      echo "WARNING: ${entry%%|*} failed, left out:" >&2
      sed 's/^/    /' "$WORK/check.log" | tail -n 5 >&2
    fi
  done
  pf_list=("${kept[@]}")
  [ "${#pf_list[@]}" -gt 0 ] || { echo "no command of $1 works" >&2; exit 1; }
}

run_hyperfine() { # run_hyperfine PORT JSON WARMUP RUNS ENTRIES...
  local port=$1 json=$2 warmup=$3 runs=$4 args=() entry
  shift 4
  for entry in "$@"; do args+=(-n "${entry%%|*}" "$(with_port "$port" "${entry#*|}")"); done
  clean_env timeout 3600 hyperfine -N --style basic --warmup "$warmup" --runs "$runs" --export-json "$json" "${args[@]}"
}

summary() { # summary JSON [RSS_FILE]: medians, ratios to curl, and peak RSS (ratio to s-nail)
  python3 - "$@" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
rss = {}
if len(sys.argv) > 2:
    for line in open(sys.argv[2]):
        name, kib = line.split()
        rss[name] = int(kib)
med = {r["command"]: r["median"] for r in res}
base = med.get("curl")
for r in res:
    name = r["command"]
    line = f"  {name:6} median {r['median'] * 1000:8.1f} ms  (min {r['min'] * 1000:.1f}, mean {r['mean'] * 1000:.1f} ± {r['stddev'] * 1000:.1f} ms)"
    if base and name != "curl":
        line += f"  {name}/curl = {r['median'] / base:.2f}"
    if name in rss:
        line += f"  peak RSS {rss[name] / 1024:6.1f} MiB"
        if "s-nail" in rss and name != "s-nail":
            line += f" ({name}/s-nail = {rss[name] / rss['s-nail']:.2f})"
    print(line)
if "envoi" in rss and "s-nail" in rss:
    ratio = rss["envoi"] / rss["s-nail"]
    print(f"  target: envoi peak RSS <= 2x s-nail's: {ratio:.2f}x, {'met' if ratio <= 2 else 'NOT met'}")
EOF
}

# summary_many JSON BASE [WANT A B]...: medians, messages/s and speed relative to BASE, then
# for each target "A at least WANT x B's speed" whether it is met.
summary_many() {
  python3 - "$BATCH_MSGS" "$@" <<'EOF'
import json, sys
n = int(sys.argv[1])
res = json.load(open(sys.argv[2]))["results"]
base_name = sys.argv[3]
targets = sys.argv[4:]
med = {r["command"]: r["median"] for r in res}
base = med.get(base_name)
width = max(len(r["command"]) for r in res)
for r in res:
    name = r["command"]
    line = f"  {name:{width}} median {r['median'] * 1000:8.1f} ms  {n / r['median']:8.0f} msg/s"
    if base and name != base_name:
        line += f"  speed vs {base_name} = {base / r['median']:.2f}x"
    print(line)
for i in range(0, len(targets), 3):
    want, a, b = float(targets[i]), targets[i + 1], targets[i + 2]
    if a in med and b in med:
        ratio = med[b] / med[a]
        print(f"  target: {a} >= {want}x {b}'s speed: {ratio:.2f}x, {'met' if ratio >= want else 'NOT met'}")
EOF
}

S1="" S2="" S3="" S4="" S5="" S6=""
if want 1; then
  say "scenario 1: one ~1 KB message (warmup $WARMUP, runs $RUNS)"
  check small 1 1000
  run_hyperfine "$PORT" "$OUT_DIR/small.json" "$WARMUP" "$RUNS" "${small[@]}"
  S1=$(summary "$OUT_DIR/small.json")
fi

if want 2 && [ "$PF_OK" = 1 ]; then
  say "scenario 2: one ~1 KB message, STARTTLS + AUTH, private Postfix (warmup $WARMUP, runs $RUNS)"
  check_pf tls "$PF_TLS_PORT" 1 1 1000
  run_hyperfine "$PF_TLS_PORT" "$OUT_DIR/tls.json" "$WARMUP" "$RUNS" "${tls[@]}"
  S2=$(summary "$OUT_DIR/tls.json")
  pf_wait_empty 120 || true
  S2+=$'\n'"  (Postfix logged $(pf_count "sasl_username=$TLS_USER\$") authenticated messages in all, checks and warmups included)"
elif want 2; then
  S2="  skipped (see the tools section above)"
fi

if want 3; then
  say "scenario 3: one $ATTACH_MIB MiB random attachment (runs $ATTACH_RUNS)"
  check attach 1 $((ATTACH_MIB * 1024 * 1024))
  run_hyperfine "$PORT" "$OUT_DIR/attach.json" 2 "$ATTACH_RUNS" "${attach[@]}"
  # Peak RSS: the largest of 3 runs under GNU time.
  : >"$OUT_DIR/attach-rss.txt"
  for entry in "${attach[@]}"; do
    max=0
    for _ in 1 2 3; do
      eval "clean_env timeout 120 /usr/bin/time -f %M -o $WORK/rss $(with_port "$PORT" "${entry#*|}")" >/dev/null 2>&1
      kib=$(tail -n 1 "$WORK/rss")
      [ "$kib" -gt "$max" ] && max=$kib
    done
    echo "${entry%%|*} $max" >>"$OUT_DIR/attach-rss.txt"
  done
  S3=$(summary "$OUT_DIR/attach.json" "$OUT_DIR/attach-rss.txt")
fi

if want 4; then
  say "scenario 4: $BATCH_MSGS messages of ~2 KB to smtp-sink (runs $BATCH_RUNS)"
  [ -z "$CONCURRENCY_NOTE" ] || echo "envoi batch, 4 sessions: $CONCURRENCY_NOTE"
  check many "$BATCH_MSGS" 1000
  run_hyperfine "$PORT" "$OUT_DIR/many.json" 1 "$BATCH_RUNS" "${many[@]}"
  S4=$(summary_many "$OUT_DIR/many.json" "smtp-source -d -s 1" \
    0.5 "envoi batch" "smtp-source -d -s 1" 0.5 "envoi batch $ENVOI_CONCURRENCY" "smtp-source -d -s 4")
  [ -z "$CONCURRENCY_NOTE" ] || S4+=$'\n'"  envoi batch, 4 sessions: $CONCURRENCY_NOTE"
fi

if want 5 && [ "$PF_OK" = 1 ]; then
  say "scenario 5: $BATCH_MSGS messages of ~2 KB into the private Postfix (runs $POSTFIX_RUNS)"
  [ -z "$CONCURRENCY_NOTE" ] || echo "envoi batch, 4 sessions: $CONCURRENCY_NOTE"
  check_pf into_postfix "$PF_PORT" "$BATCH_MSGS" 0 1000
  pf_wait_empty 120 || true
  sent0=$(pf_count ' status=sent ')
  run_hyperfine "$PF_PORT" "$OUT_DIR/postfix.json" 1 "$POSTFIX_RUNS" "${into_postfix[@]}"
  # The timed runs must have been delivered in full too (1 warmup + POSTFIX_RUNS each).
  expect=$((sent0 + (1 + POSTFIX_RUNS) * ${#into_postfix[@]} * BATCH_MSGS))
  pf_wait_sent "$expect" 300 || true
  sleep 1
  got=$(($(pf_count ' status=sent ') - sent0))
  S5=$(summary_many "$OUT_DIR/postfix.json" "smtp-source -d -s 1" \
    0.9 "envoi batch" "smtp-source -d -s 1" 0.9 "envoi batch $ENVOI_CONCURRENCY" "smtp-source -d -s 4")
  S5+=$'\n'"  Postfix accepted and discarded $got of the $((expect - sent0)) messages of the timed runs"
  [ "$got" -eq $((expect - sent0)) ] || S5+=" (MISMATCH)"
  [ -z "$CONCURRENCY_NOTE" ] || S5+=$'\n'"  envoi batch, 4 sessions: $CONCURRENCY_NOTE"
elif want 5; then
  S5="  skipped (see the tools section above)"
fi

# flat_run N NAME EXTRA...: envoi batch over N generated records on stdin to the timed sink,
# its peak RSS (KiB) into FLAT_KIB; the report in $WORK/flat-N.jsonl.
flat_run() {
  local n=$1 name=$2
  shift 2
  # shellcheck disable=SC2086 # $ENVOI is a command line
  if ! python3 "$WORK/gen_records.py" "$n" |
    clean_env /usr/bin/time -f %M -o "$WORK/flat.rss" timeout 7200 $ENVOI batch \
      --smtp-url "smtp://127.0.0.1:$PORT?security=none" --from s@example.test --format jsonl \
      --report "$WORK/flat-$n.jsonl" "$@" - >/dev/null 2>"$WORK/flat.err"; then
    echo "WARNING: $name failed:" >&2
    tail -n 5 "$WORK/flat.err" >&2
    return 1
  fi
  FLAT_KIB=$(tail -n 1 "$WORK/flat.rss")
  echo "$name: peak RSS $FLAT_KIB KiB; $(tail -n 1 "$WORK/flat.err")"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

if want 6 && [ -n "$ENVOI" ]; then
  say "scenario 6: peak RSS of envoi batch over $FLAT_SMALL and $FLAT_BIG records (one run each)"
  S6=""
  if flat_run "$FLAT_SMALL" "envoi batch, $FLAT_SMALL records" --per-session 100; then
    small_kib=$FLAT_KIB
    small_sent=$(grep -c '"status":"sent"' "$WORK/flat-$FLAT_SMALL.jsonl" || true)
    if flat_run "$FLAT_BIG" "envoi batch, $FLAT_BIG records" --per-session 100; then
      big_kib=$FLAT_KIB
      big_sent=$(grep -c '"status":"sent"' "$WORK/flat-$FLAT_BIG.jsonl" || true)
      verdict=$(awk -v a="$big_kib" -v b="$small_kib" 'BEGIN { r = a / b; printf "%.2fx: %s", r, (r <= 1.25 ? "flat" : "GROWS") }')
      S6="  $FLAT_SMALL records: $(mib "$small_kib") ($small_sent sent); $FLAT_BIG records: $(mib "$big_kib") ($big_sent sent); $verdict"
      [ "$small_sent" -eq "$FLAT_SMALL" ] && [ "$big_sent" -eq "$FLAT_BIG" ] || S6+=" (NOT every record was sent)"
      # The same input again with --resume over the big report: every record is skipped,
      # so this is what holding a million-line report's lines costs.
      cp "$WORK/flat-$FLAT_BIG.jsonl" "$WORK/flat-earlier.jsonl"
      if flat_run "$FLAT_BIG" "envoi batch --resume over the $FLAT_BIG-line report" \
        --per-session 100 --resume "$WORK/flat-earlier.jsonl"; then
        S6+=$'\n'"  --resume over the $FLAT_BIG-line report (all skipped): $(mib "$FLAT_KIB")"
      fi
      rm -f "$WORK/flat-$FLAT_BIG.jsonl" "$WORK/flat-earlier.jsonl"
    fi
  fi
  [ -n "$S6" ] || S6="  failed (see above)"
fi

# Scenario 7: the tests' loopback Graph endpoint over HTTPS with a throwaway CA of its own.
S7=""
if want 7 && [ -n "$ENVOI" ]; then
  say "scenario 7: one ~1 KB message to a loopback Graph sendMail endpoint (warmup $WARMUP, runs $GRAPH_RUNS)"
  mkdir -p "$WORK/graph-tls" "$WORK/graph-out"
  (
    cd "$WORK/graph-tls"
    timeout 60 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=envoi bench graph CA" -addext "basicConstraints=critical,CA:true" \
      -addext "keyUsage=critical,keyCertSign" -keyout ca.key -out ca.pem 2>/dev/null
    timeout 60 openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
      -keyout server.key -out server.csr 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1" "basicConstraints=critical,CA:false" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
    timeout 60 openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out leaf.pem 2>/dev/null
    cat leaf.pem ca.pem >server.pem
  )
  GRAPH_TOKEN="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
  # The server prints READY <port>; its stdin is a pipe kept open by this shell (fd 8), so it
  # also stops when the script dies.
  coproc GRAPH { exec python3 "$ROOT/tests/it/support/mail_api.py" --cert "$WORK/graph-tls/server.pem" \
    --key "$WORK/graph-tls/server.key" --out "$WORK/graph-out" --token "$GRAPH_TOKEN" \
    --mailbox s@example.test --exit-on-stdin-eof 2>"$WORK/graph.log"; }
  SINK_PIDS+=("$GRAPH_PID")
  read -r -t 30 ready GRAPH_PORT <&"${GRAPH[0]}" || true
  if [ "${ready:-}" != READY ]; then
    S7="  skipped: the loopback Graph endpoint did not start ($(tail -n 1 "$WORK/graph.log"))"
  else
    cat >"$WORK/envoi-graph.toml" <<EOF
[profiles.graph]
transport = "graph"
api_url = "https://127.0.0.1:$GRAPH_PORT/v1.0"
ca_file = "$WORK/graph-tls/ca.pem"
token_env = "GRAPH_TOKEN"
from = "s@example.test"
timeout_secs = 30
EOF
    base64 -w0 "$WORK/small.eml" >"$WORK/small.b64"
    graph=("curl|curl -sS --fail --max-time 60 --cacert $WORK/graph-tls/ca.pem -H 'Authorization: Bearer $GRAPH_TOKEN' -H 'Content-Type: text/plain' --data-binary @$WORK/small.b64 https://127.0.0.1:@PORT@/v1.0/users/s@example.test/sendMail"
      "envoi|$ENVOI_EXE $(fill "$ENVOI_GRAPH_ARGS")")
    BENCH_ENV+=("GRAPH_TOKEN=$GRAPH_TOKEN")
    # Each command once first: it must exit 0 and have exactly one request answered 202
    # whose decoded message holds the body (the endpoint writes what it decoded).
    kept=()
    for entry in "${graph[@]}"; do
      before=$(grep -c '"status": 202' "$WORK/graph-out/requests.jsonl" 2>/dev/null || true)
      if eval "clean_env timeout 120 $(with_port "$GRAPH_PORT" "${entry#*|}")" >"$WORK/check.log" 2>&1 &&
        [ "$(grep -c '"status": 202' "$WORK/graph-out/requests.jsonl")" -eq $((${before:-0} + 1)) ]; then
        echo "checked: ${entry%%|*}: the endpoint answered 202 to one request"
        kept+=("$entry")
      else
        echo "WARNING: ${entry%%|*} failed or was not accepted, left out:" >&2
        tail -n 5 "$WORK/check.log" >&2
      fi
    done
    if [ "${#kept[@]}" -eq 2 ]; then
      run_hyperfine "$GRAPH_PORT" "$OUT_DIR/graph.json" "$WARMUP" "$GRAPH_RUNS" "${kept[@]}"
      S7=$(summary "$OUT_DIR/graph.json")
      S7+=$'\n'"  (the endpoint answered 202 to $(grep -c '"status": 202' "$WORK/graph-out/requests.jsonl") requests in all, checks and warmups included)"
    else
      S7="  failed (see above)"
    fi
  fi
elif want 7; then
  S7="  skipped: no envoi to bench"
fi

# Scenario 8: a private PostgreSQL cluster (trust auth, loopback only, in $WORK/pg), the
# workers of one campaign at once, timed from the first start to the last exit.
S8=""
# pg_start: starts the cluster; sets PG_URL. Root runs it as the postgres user.
pg_start() {
  local bin as=() ready=0
  bin=$(pg_bin)
  [ -n "$bin" ] || return 1
  mkdir -p "$WORK/pg"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$WORK/pg"
    as=(setpriv --reuid=postgres --regid=postgres --clear-groups --)
  fi
  "${as[@]}" "$bin/initdb" -D "$WORK/pg/data" -U envoi --auth=trust -E UTF8 --no-sync >"$WORK/pg-init.log" 2>&1 ||
    { tail -n 5 "$WORK/pg-init.log" >&2; return 1; }
  PG_PORT=$(free_port)
  "${as[@]}" "$bin/postgres" -D "$WORK/pg/data" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories= -c max_connections=100 -c fsync="$FLEET_PG_FSYNC" >"$WORK/pg.log" 2>&1 &
  SINK_PIDS+=("$!")
  for _ in $(seq 300); do # up to 30 s
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then ready=1; break; fi
    sleep 0.1
  done
  [ "$ready" = 1 ] || { tail -n 5 "$WORK/pg.log" >&2; return 1; }
  PG_URL="postgres://envoi@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
}
# fleet_run WORKERS ARGS...: WORKERS `envoi batch` at once over fleet.jsonl to the timed sink,
# each with ARGS and its own report; prints the seconds, and checks that the reports' `sent`
# lines add up to FLEET_MSGS (every record once).
fleet_run() {
  local workers=$1 i start end sent=0 failed=0 pids=()
  shift
  rm -f "$WORK"/fleet-*.report.jsonl
  start=$(date +%s.%N)
  for i in $(seq "$workers"); do
    # shellcheck disable=SC2086 # $ENVOI is a command line
    clean_env timeout 3600 $ENVOI batch --smtp-url "smtp://127.0.0.1:$PORT?security=none" \
      --from s@example.test --concurrency "$FLEET_SESSIONS" --per-session 100 \
      --report "$WORK/fleet-$i.report.jsonl" "$@" "$WORK/fleet.jsonl" >/dev/null 2>"$WORK/fleet-$i.err" &
    pids+=("$!")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { failed=1; tail -n 3 "$WORK/fleet-$((i + 1)).err" >&2; }
  done
  end=$(date +%s.%N)
  for i in $(seq "$workers"); do
    sent=$((sent + $(grep -c '"status":"sent"' "$WORK/fleet-$i.report.jsonl" || true)))
  done
  [ "$failed" = 0 ] && [ "$sent" -eq "$FLEET_MSGS" ] || { echo "WARNING: $workers worker(s): $sent of $FLEET_MSGS sent" >&2; return 1; }
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }'
}
# median_of COMMAND...: the median of FLEET_RUNS runs' seconds.
median_of() {
  local runs=() t
  for _ in $(seq "$FLEET_RUNS"); do
    t=$("$@") || return 1
    runs+=("$t")
  done
  printf '%s\n' "${runs[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
# sends_time LEDGER_ARGS...: seconds for LEDGER_SENDS `envoi send` in a row, each with its own key
# (none when LEDGER_ARGS is "none").
sends_time() {
  local i start end key_args=()
  start=$(date +%s.%N)
  for i in $(seq "$LEDGER_SENDS"); do
    [ "$1" = none ] || key_args=(--idempotency-key "bench-$RANDOM-$i-$start" "$@")
    # shellcheck disable=SC2086,SC2046 # command lines, split as hyperfine -N would
    clean_env $ENVOI $(with_port "$PORT" "$(fill "$ENVOI_SEND_ARGS")" | tr -d "'") "${key_args[@]}" >/dev/null 2>>"$WORK/sends.err" ||
      { echo "WARNING: a send failed: $(tail -n 1 "$WORK/sends.err")" >&2; return 1; }
  done
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }'
}
if want 8 && [ -n "$ENVOI" ]; then
  say "scenario 8: $FLEET_MSGS records, 1 worker vs 3 through a PostgreSQL ledger (fsync=$FLEET_PG_FSYNC; $FLEET_RUNS runs each, median)"
  if ! pg_start; then
    S8="  skipped: PostgreSQL did not start (or is not installed)"
  else
    python3 "$WORK/gen_records.py" "$FLEET_MSGS" >"$WORK/fleet.jsonl"
    # A fresh campaign each run: a campaign already sent sends nothing.
    campaign() { fleet_run "$1" --ledger "$PG_URL" --campaign "bench-$1-$RANDOM$RANDOM"; }
    if plain=$(median_of fleet_run 1) && one=$(median_of campaign 1) && three=$(median_of campaign 3); then
      echo "plain batch ${plain}s, --campaign 1 worker ${one}s, 3 workers ${three}s"
      S8=$(awk -v n="$FLEET_MSGS" -v p="$plain" -v o="$one" -v t="$three" -v s="$FLEET_SESSIONS" 'BEGIN {
        printf "  plain batch, 1 worker x %d sessions: %.0f records/s\n", s, n / p
        printf "  --campaign, 1 worker x %d sessions: %.0f records/s (the ledger: +%.2f ms per record, %.2fx the plain batch'"'"'s time)\n", s, n / o, (o - p) * 1000 / n, o / p
        printf "  --campaign, 3 workers x %d sessions: %.0f records/s, %.2fx 1 worker; every record sent once", s, n / t, o / t }')
    else
      S8="  failed (see above)"
    fi
    mkdir -p "$WORK/outbox"
    if none=$(sends_time none) && file=$(sends_time --outbox-dir "$WORK/outbox") && pg=$(sends_time --ledger "$PG_URL"); then
      echo "$LEDGER_SENDS sends: no key ${none}s, file ledger ${file}s, PostgreSQL ledger ${pg}s"
      S8+=$'\n'$(awk -v n="$LEDGER_SENDS" -v a="$none" -v f="$file" -v g="$pg" 'BEGIN {
        printf "  send --idempotency-key, %d sends in a row: %.2f ms each without a key; the file ledger +%.2f ms, PostgreSQL +%.2f ms (%.1fx the file ledger'"'"'s cost)", n, a * 1000 / n, (f - a) * 1000 / n, (g - a) * 1000 / n, (g - a) / ((f - a) > 0 ? (f - a) : 1e-9) }')
    else
      S8+=$'\n'"  send --idempotency-key: failed (see above)"
    fi
  fi
elif want 8; then
  S8="  skipped: no envoi to bench"
fi

say "summary (loopback; JSON in ${OUT_DIR#"$ROOT"/}; $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), load $(cut -d' ' -f1-3 /proc/loadavg))"
if [ -n "$S1" ]; then echo "1. one ~1 KB message (smtp-sink, runs $RUNS):"; echo "$S1"; fi
if [ -n "$S2" ]; then echo "2. one ~1 KB message, STARTTLS + AUTH (private Postfix, runs $RUNS):"; echo "$S2"; fi
if [ -n "$S3" ]; then echo "3. one $ATTACH_MIB MiB attachment (smtp-sink, runs $ATTACH_RUNS):"; echo "$S3"; fi
if [ -n "$S4" ]; then echo "4. $BATCH_MSGS messages of ~2 KB (smtp-sink, runs $BATCH_RUNS):"; echo "$S4"; fi
if [ -n "$S5" ]; then echo "5. $BATCH_MSGS messages of ~2 KB into Postfix's disk queue (runs $POSTFIX_RUNS):"; echo "$S5"; fi
if [ -n "$S6" ]; then echo "6. peak RSS of envoi batch, $FLAT_SMALL vs $FLAT_BIG records of ~2 KB (smtp-sink, 1 run each):"; echo "$S6"; fi
if [ -n "$S7" ]; then echo "7. one ~1 KB message over HTTPS to a loopback Graph sendMail endpoint (runs $GRAPH_RUNS):"; echo "$S7"; fi
if [ -n "$S8" ]; then echo "8. $FLEET_MSGS records of ~2 KB, workers of one --campaign through PostgreSQL (fsync=$FLEET_PG_FSYNC; smtp-sink, median of $FLEET_RUNS):"; echo "$S8"; fi
