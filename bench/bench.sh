#!/usr/bin/env bash
# Benchmark envoi against its peers (curl; msmtp when available), all sending to Postfix's
# smtp-sink on a free 127.0.0.1 port, in the same hyperfine invocation so that the figures are
# comparable on a noisy machine: quote ratios, not absolute times. See bench/README.md.
#
#   bash bench/bench.sh                 # defaults: WARMUP=20 RUNS=200 ATTACH_RUNS=10 ATTACH_MIB=10
#   RUNS=50 bash bench/bench.sh         # quicker
#
# Scenario 1: one ~1 KB message, one recipient (whole-process time, median).
# Scenario 2: one random attachment of ATTACH_MIB MiB (wall time and peak RSS).
# Scenario 3: BATCH_MSGS messages of ~2 KB over one session: `envoi batch` vs
#             `smtp-source -d -s 1` vs a Python smtplib loop (whole-process time, median).
#   BENCH_SCENARIOS=3 bash bench/bench.sh   # only scenario 3
set -euo pipefail

# --- envoi's command line: the only place to change when its flags change -------------------
# @PORT@, @BODY@ and @ATTACH@ are filled in below; hyperfine splits this like a shell would.
ENVOI_SEND_ARGS="send --smtp-url 'smtp://127.0.0.1:@PORT@?security=none' --from s@example.test --to r@example.test --subject bench --body-file @BODY@"
ENVOI_ATTACH_ARGS="--attach @ATTACH@"
# @RECORDS@ is a JSON Lines file of BATCH_MSGS payloads; one session carries them all.
ENVOI_BATCH_ARGS="batch --smtp-url 'smtp://127.0.0.1:@PORT@?security=none' --from s@example.test --per-session @MSGS@ --report @REPORT@ @RECORDS@"
# ----------------------------------------------------------------------------------------------

WARMUP=${WARMUP:-20}
RUNS=${RUNS:-200}
ATTACH_RUNS=${ATTACH_RUNS:-10}
ATTACH_MIB=${ATTACH_MIB:-10}
BATCH_MSGS=${BATCH_MSGS:-1000}
BATCH_RUNS=${BATCH_RUNS:-10}
BENCH_SCENARIOS=${BENCH_SCENARIOS:-123}
# Set BENCH_INSTALL=0 to never call apt-get (then missing tools are skipped or fatal).
BENCH_INSTALL=${BENCH_INSTALL:-1}
# Set BENCH_SKIP_ENVOI=1 to bench the peers only (e.g. while `envoi send` does not work yet).
BENCH_SKIP_ENVOI=${BENCH_SKIP_ENVOI:-0}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUT_DIR=${OUT_DIR:-$ROOT/target/bench}
mkdir -p "$OUT_DIR"
export DEBIAN_FRONTEND=noninteractive

say() { printf '\n== %s ==\n' "$*"; }

apt_install() {
  [ "$BENCH_INSTALL" = 1 ] && [ "$(id -u)" = 0 ] || return 1
  echo "installing $* with apt-get"
  apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1; }
}

find_smtp_sink() { command -v smtp-sink 2>/dev/null || { [ -x /usr/sbin/smtp-sink ] && echo /usr/sbin/smtp-sink; } || true; }

say "tools"
command -v hyperfine >/dev/null || apt_install hyperfine || { echo "hyperfine is required" >&2; exit 1; }
[ -x /usr/bin/time ] || apt_install time || { echo "/usr/bin/time (package time) is required" >&2; exit 1; }
command -v msmtp >/dev/null || apt_install msmtp || echo "msmtp not available: skipped"
if [ -z "$(find_smtp_sink)" ]; then
  echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections 2>/dev/null || true
  apt_install postfix || { echo "smtp-sink (package postfix) is required" >&2; exit 1; }
  # The package must not leave an MTA running.
  if /usr/sbin/postfix status >/dev/null 2>&1; then /usr/sbin/postfix stop >/dev/null 2>&1 || true; fi
fi
SMTP_SINK=$(find_smtp_sink)
hyperfine --version
curl --version | head -n 1
if command -v msmtp >/dev/null; then msmtp --version | head -n 1; fi
echo "smtp-sink: $SMTP_SINK ($(dpkg-query -W -f='${Version}' postfix 2>/dev/null || echo '?'))"

WORK=$(mktemp -d -t envoi-bench.XXXXXX)
SINK_PIDS=()
cleanup() {
  local pid
  for pid in "${SINK_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/home"

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
# Scenario 3: BATCH_MSGS payloads of ~2 KB, and the same loop in Python's smtplib.
python3 - "$WORK" "$BATCH_MSGS" <<'EOF'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
body = "x" * 70 + "\n"
body *= 28                                        # 28 * 71 = 1988 bytes
with open(f"{work}/batch.jsonl", "w") as f:
    for i in range(n):
        f.write(json.dumps({"To": f"r{i}@example.test", "Subject": f"bench {i}", "Body": body}) + "\n")
open(f"{work}/smtplib_loop.py", "w").write(f"""import smtplib, sys
body = {body!r}.replace("\\n", "\\r\\n")
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
for i in range({n}):
    s.sendmail("s@example.test", [f"r{{i}}@example.test"],
               f"From: s@example.test\\r\\nTo: r{{i}}@example.test\\r\\nSubject: bench {{i}}\\r\\n\\r\\n" + body)
s.quit()
""")
EOF
head -c $((ATTACH_MIB * 1024 * 1024)) /dev/urandom >"$WORK/file.bin"
stat -c "%s bytes  %n" "$WORK/body.txt" "$WORK/small.eml" "$WORK/file.bin"

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

fill() { # fill ARGS: substitute the file placeholders (@PORT@ is filled when run)
  local s=$1
  s=${s//@BODY@/$WORK/body.txt}
  s=${s//@ATTACH@/$WORK/file.bin}
  s=${s//@RECORDS@/$WORK/batch.jsonl}
  s=${s//@REPORT@/$WORK/batch.report.jsonl}
  s=${s//@MSGS@/$BATCH_MSGS}
  printf '%s' "$s"
}

ENVOI=""
if [ "$BENCH_SKIP_ENVOI" != 1 ]; then
  say "build envoi (release)"
  if cargo build --release --locked -q; then
    ENVOI="env -i PATH=$PATH HOME=$WORK/home ${CARGO_TARGET_DIR:-$ROOT/target}/release/envoi"
  else
    echo "WARNING: envoi did not build: benchmarking the peers only" >&2
  fi
fi

# Candidate commands: NAME|COMMAND (hyperfine -N splits COMMAND like a POSIX shell).
CURL="curl -sS --max-time 60 --url smtp://127.0.0.1:@PORT@ --mail-from s@example.test --mail-rcpt r@example.test"
small=("curl|$CURL -T $WORK/small.eml")
[ -n "$ENVOI" ] && small+=("envoi|$ENVOI $(fill "$ENVOI_SEND_ARGS")")
# msmtp reads the message from stdin only, so it goes through sh (adds ~1 ms of dash start-up).
command -v msmtp >/dev/null &&
  small+=("msmtp|sh -c 'exec msmtp --host=127.0.0.1 --port=@PORT@ --from=s@example.test r@example.test < $WORK/small.eml'")
SMTP_SOURCE=$(command -v smtp-source || { [ -x /usr/sbin/smtp-source ] && echo /usr/sbin/smtp-source; } || true)
many=("python-smtplib|python3 $WORK/smtplib_loop.py @PORT@")
[ -n "$SMTP_SOURCE" ] &&
  many=("smtp-source|$SMTP_SOURCE -d -s 1 -m $BATCH_MSGS -l 2048 -f s@example.test -t r@example.test 127.0.0.1:@PORT@" "${many[@]}")
[ -n "$ENVOI" ] && many+=("envoi-batch|$ENVOI $(fill "$ENVOI_BATCH_ARGS")")
attach=("curl|$CURL -H 'Subject: bench' -H 'From: s@example.test' -H 'To: r@example.test' -F '=@$WORK/file.bin;encoder=base64'")
[ -n "$ENVOI" ] && attach+=("envoi|$ENVOI $(fill "$ENVOI_SEND_ARGS") $(fill "$ENVOI_ATTACH_ARGS")")

# check SCENARIO MIN_BYTES: keeps only the commands that, run once against the dumping sink,
# exit 0 and deliver exactly one message of at least MIN_BYTES (a command that fails or sends
# nothing would make the timings meaningless).
check() {
  local -n list=$1
  local min_bytes=$2 kept=() entry before after size
  for entry in "${list[@]}"; do
    before=$(find "$WORK/dumps" -type f | wc -l)
    if eval "timeout 120 $(with_port "$CHECK_PORT" "${entry#*|}")" >"$WORK/check.log" 2>&1; then
      after=$(find "$WORK/dumps" -type f | wc -l)
      size=$(find "$WORK/dumps" -type f -printf '%T@ %s\n' | sort -n | tail -n 1 | cut -d' ' -f2)
      if [ "$after" -eq $((before + 1)) ] && [ "${size:-0}" -ge "$min_bytes" ]; then
        echo "checked: ${entry%%|*} delivered one message ($size bytes in the sink's dump)"
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
  [ "${#list[@]}" -gt 0 ] || { echo "no command of this scenario works" >&2; exit 1; }
}
# check_many: like check, but each command must deliver exactly BATCH_MSGS messages.
check_many() {
  local kept=() entry before after
  for entry in "${many[@]}"; do
    before=$(find "$WORK/dumps" -type f | wc -l)
    if eval "timeout 300 $(with_port "$CHECK_PORT" "${entry#*|}")" >"$WORK/check.log" 2>&1; then
      after=$(find "$WORK/dumps" -type f | wc -l)
      if [ "$after" -eq $((before + BATCH_MSGS)) ]; then
        echo "checked: ${entry%%|*} delivered $BATCH_MSGS messages"
        kept+=("$entry")
        continue
      fi
      echo "WARNING: ${entry%%|*} exited 0 but delivered $((after - before)) message(s), left out" >&2
    else
      echo "WARNING: ${entry%%|*} failed, left out:" >&2
      sed 's/^/    /' "$WORK/check.log" | tail -n 5 >&2
    fi
  done
  many=("${kept[@]}")
  [ "${#many[@]}" -gt 0 ] || { echo "no command of scenario 3 works" >&2; exit 1; }
}
# with_port PORT ENTRY: the entry with @PORT@ filled in.
with_port() { printf '%s' "${2//@PORT@/$1}"; }

run_hyperfine() { # run_hyperfine JSON WARMUP RUNS ENTRIES...
  local json=$1 warmup=$2 runs=$3 args=() entry
  shift 3
  for entry in "$@"; do args+=(-n "${entry%%|*}" "$(with_port "$PORT" "${entry#*|}")"); done
  timeout 1800 hyperfine -N --style basic --warmup "$warmup" --runs "$runs" --export-json "$json" "${args[@]}"
}

summary() { # summary JSON [RSS_FILE]: medians and ratios to curl from hyperfine's JSON
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
    line = f"  {name:6} median {r['median'] * 1000:8.1f} ms  (mean {r['mean'] * 1000:.1f} ± {r['stddev'] * 1000:.1f} ms)"
    if name in rss:
        line += f"  peak RSS {rss[name] / 1024:6.1f} MiB"
    if base and name != "curl":
        line += f"  {name}/curl = {r['median'] / base:.2f}"
    print(line)
EOF
}

summary_many() { # summary_many JSON: medians, messages/s and ratios to smtp-source
  python3 - "$1" "$BATCH_MSGS" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
n = int(sys.argv[2])
base = {r["command"]: r["median"] for r in res}.get("smtp-source")
for r in res:
    name = r["command"]
    line = f"  {name:14} median {r['median'] * 1000:8.1f} ms  {n / r['median']:8.0f} msg/s"
    if base and name != "smtp-source":
        line += f"  speed vs smtp-source = {base / r['median']:.2f}x"
    print(line)
EOF
}

S1="" S2="" S3=""
if [[ $BENCH_SCENARIOS == *1* ]]; then
say "scenario 1: one ~1 KB message (warmup $WARMUP, runs $RUNS)"
check small 1000
run_hyperfine "$OUT_DIR/small.json" "$WARMUP" "$RUNS" "${small[@]}"
S1=$(summary "$OUT_DIR/small.json")
fi

if [[ $BENCH_SCENARIOS == *2* ]]; then
say "scenario 2: one $ATTACH_MIB MiB random attachment (runs $ATTACH_RUNS)"
check attach $((ATTACH_MIB * 1024 * 1024))
run_hyperfine "$OUT_DIR/attach.json" 2 "$ATTACH_RUNS" "${attach[@]}"
# Peak RSS: the largest of 3 runs under GNU time.
: >"$OUT_DIR/attach-rss.txt"
for entry in "${attach[@]}"; do
  max=0
  for _ in 1 2 3; do
    eval "timeout 120 /usr/bin/time -f %M -o $WORK/rss $(with_port "$PORT" "${entry#*|}")" >/dev/null 2>&1
    kib=$(tail -n 1 "$WORK/rss")
    [ "$kib" -gt "$max" ] && max=$kib
  done
  echo "${entry%%|*} $max" >>"$OUT_DIR/attach-rss.txt"
done
S2=$(summary "$OUT_DIR/attach.json" "$OUT_DIR/attach-rss.txt")
fi

if [[ $BENCH_SCENARIOS == *3* ]]; then
say "scenario 3: $BATCH_MSGS messages of ~2 KB over one session (runs $BATCH_RUNS)"
check_many
run_hyperfine "$OUT_DIR/many.json" 1 "$BATCH_RUNS" "${many[@]}"
S3=$(summary_many "$OUT_DIR/many.json")
fi

say "summary (smtp-sink on loopback; JSON in ${OUT_DIR#"$ROOT"/})"
if [ -n "$S1" ]; then echo "one ~1 KB message:"; echo "$S1"; fi
if [ -n "$S2" ]; then echo "one $ATTACH_MIB MiB attachment:"; echo "$S2"; fi
if [ -n "$S3" ]; then echo "$BATCH_MSGS messages of ~2 KB over one session:"; echo "$S3"; fi
