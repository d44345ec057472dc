#!/usr/bin/env bash
# Fuzz envoi's untrusted-input parsers with cargo-fuzz (libFuzzer), each target for a bounded
# time, on the committed seed corpus. Exits 1 if any target crashes (a panic is a bug: the
# targets assert envoi's invariants, see fuzz/fuzz_targets/*.rs), printing the reproducer;
# any other non-zero exit means the targets could not be built.
#
#   bash bench/fuzz.sh                          # every target, 60 s each
#   FUZZ_SECONDS=600 bash bench/fuzz.sh payload # one target, 10 minutes
#   bash bench/fuzz.sh --check [target...]      # CI: build and replay only (no fuzzing)
#   bash bench/fuzz.sh --pending [target...]    # which known open bugs still crash
#
# --check builds the targets with plain `cargo build --locked` (stable Rust, no cargo-fuzz, no
# sanitizer, no RUSTC_BOOTSTRAP), which proves they compile against envoi's current API, then
# runs each file of fuzz/regressions/<target>/ and fuzz/corpus/<target>/ through its target
# once (a fraction of a second). It builds into $CARGO_TARGET_DIR, else the root target/, so it
# shares compiled dependencies with the main crate's builds. Without coverage instrumentation
# libFuzzer only executes the given inputs, which is all a replay needs; the targets'
# assertions and debug assertions are on, as under cargo fuzz.
#
# Settings (environment):
#   FUZZ_SECONDS    time per target, in seconds (default 60)
#   FUZZ_SANITIZER  address (default) or none (about 1.5x faster; the code is safe Rust)
#   FUZZ_MAX_LEN    longest input libFuzzer makes, in bytes (default 4096)
#   FUZZ_TIMEOUT    one input running longer than this many seconds is a failure (default 10)
#   FUZZ_WORK       where the growing corpus is kept between runs
#                   (default fuzz/target/corpus-work/<target>; never committed)
#
# Toolchain: cargo-fuzz builds with -Zsanitizer and other unstable flags. The machines have
# stable Rust only, so RUSTC_BOOTSTRAP=1 lets stable rustc accept them (on nightly it changes
# nothing). cargo-fuzz itself is installed from crates.io when missing.
#
# Before fuzzing, each file in fuzz/regressions/<target>/ is replayed: those are inputs that
# once crashed; a fixed bug keeps its file there as a regression test.
#
# fuzz/pending/<target>/ holds crashers of bugs that are known and not fixed yet (named after
# the audit case). Nothing replays them but --pending, which runs each one on its own and
# says which now pass: move those to fuzz/regressions/<target>/.
#
# Reproduce a crash:  RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>
# Shrink it:          RUSTC_BOOTSTRAP=1 cargo fuzz tmin <target> <file>
# Minimise a corpus:  RUSTC_BOOTSTRAP=1 cargo fuzz cmin <target> fuzz/corpus/<target>
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
FUZZ_MAX_LEN=${FUZZ_MAX_LEN:-4096}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}
CARGO_FUZZ_VERSION=0.13.2
CHECK_ONLY=0
PENDING=0
if [ "${1:-}" = --check ]; then CHECK_ONLY=1; shift; fi
if [ "${1:-}" = --pending ]; then CHECK_ONLY=1; PENDING=1; shift; fi
# Every fuzz/fuzz_targets/<name>.rs is the [[bin]] <name> in fuzz/Cargo.toml (cargo fuzz add
# writes both).
ALL_TARGETS=()
for f in "$ROOT"/fuzz/fuzz_targets/*.rs; do
  if [ -f "$f" ]; then ALL_TARGETS+=("$(basename "$f" .rs)"); fi
done
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
for t in "${TARGETS[@]}"; do
  if [ ! -f "$ROOT/fuzz/fuzz_targets/$t.rs" ]; then
    echo "no fuzz target named $t (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
  fi
done

say() { printf '\n== %s ==\n' "$*"; }

# Inputs a target must survive in any mode: known crashers first, then the seeds.
replay_inputs() {
  local d
  for d in "$ROOT/fuzz/regressions/$1" "$ROOT/fuzz/corpus/$1"; do
    if [ -d "$d" ]; then find "$d" -type f | LC_ALL=C sort; fi
  done
}

if [ "$CHECK_ONLY" = 1 ]; then
  target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
  say "build (plain cargo build, all targets)"
  cargo build --manifest-path "$ROOT/fuzz/Cargo.toml" --locked --target-dir "$target_dir"
  replay_log=$(mktemp -t envoi-fuzz-replay.XXXXXX)
  trap 'rm -f "$replay_log"' EXIT
  failed=()
  if [ "$PENDING" = 1 ]; then
    for t in "${TARGETS[@]}"; do
      for f in "$ROOT/fuzz/pending/$t"/*; do
        [ -f "$f" ] || continue
        if timeout 60 "$target_dir/debug/$t" "$f" >"$replay_log" 2>&1; then
          echo "passes now: fuzz/pending/$t/$(basename "$f")  (move it to fuzz/regressions/$t/)"
        else
          echo "still crashes: fuzz/pending/$t/$(basename "$f")"
          grep -a -m1 -A1 'panicked at' "$replay_log" | cut -c1-300 || true
          failed+=("$t/$(basename "$f")")
        fi
      done
    done
    if [ "${#failed[@]}" -gt 0 ]; then exit 1; fi
    exit 0
  fi
  for t in "${TARGETS[@]}"; do
    bin=$target_dir/debug/$t
    mapfile -t inputs < <(replay_inputs "$t")
    if [ "${#inputs[@]}" -eq 0 ]; then
      echo "$t: no inputs to replay"
      continue
    fi
    # libFuzzer runs each file once and stops at the first crash (exit 77 for a panic).
    if timeout 300 "$bin" "${inputs[@]}" >"$replay_log" 2>&1; then
      echo "$t: ${#inputs[@]} inputs replayed, no crash"
      pending=0
      if [ -d "$ROOT/fuzz/pending/$t" ]; then
        pending=$(find "$ROOT/fuzz/pending/$t" -type f | wc -l)
      fi
      if [ "$pending" -gt 0 ]; then
        echo "  ($pending inputs of known open bugs in fuzz/pending/$t not replayed: see --pending)"
      fi
    else
      grep -a -m1 -A1 'panicked at' "$replay_log" | cut -c1-300 || true
      input=$(sed -n 's/^Running: //p' "$replay_log" | tail -1)
      echo "CRASH in $t on ${input#"$ROOT"/}"
      echo "reproduce: ${bin#"$ROOT"/} ${input#"$ROOT"/}   (or: RUSTC_BOOTSTRAP=1 cargo fuzz run $t ${input#"$ROOT"/})"
      failed+=("$t")
    fi
  done
  if [ "${#failed[@]}" -gt 0 ]; then exit 1; fi
  exit 0
fi

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
echo "$(cargo fuzz --version), $(rustc --version)"

# cargo fuzz builds in release mode with debug assertions on.
FUZZ_FLAGS=(--sanitizer "$FUZZ_SANITIZER")
if [ "$FUZZ_SANITIZER" = address ]; then export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"; fi
BIN_DIR=$ROOT/fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release

say "build (${TARGETS[*]})"
for t in "${TARGETS[@]}"; do
  cargo fuzz build "${FUZZ_FLAGS[@]}" "$t"
done

crashes=()
summary=()

for t in "${TARGETS[@]}"; do
  say "$t: replaying fuzz/regressions/$t"
  n=0
  for f in "$ROOT/fuzz/regressions/$t"/*; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    if ! "$BIN_DIR/$t" "$f" >"$ROOT/fuzz/target/replay.log" 2>&1; then
      grep -a -m1 -A1 'panicked at' "$ROOT/fuzz/target/replay.log" | cut -c1-300 || true
      echo "STILL CRASHES: fuzz/regressions/$t/$(basename "$f")"
      crashes+=("$t: fuzz/regressions/$t/$(basename "$f") (known regression input)")
    fi
  done
  echo "$n regression inputs replayed"
done

for t in "${TARGETS[@]}"; do
  work=${FUZZ_WORK:-$ROOT/fuzz/target/corpus-work}/$t
  artifacts=$ROOT/fuzz/artifacts/$t
  mkdir -p "$work" "$artifacts"
  log=$ROOT/fuzz/target/fuzz-$t.log
  dict=()
  [ -f "$ROOT/fuzz/dict/$t.dict" ] && dict=("-dict=$ROOT/fuzz/dict/$t.dict")
  say "$t: fuzzing for ${FUZZ_SECONDS}s (log: ${log#"$ROOT"/})"
  # New inputs go to $work (the first directory); the committed seeds are only read.
  set +e
  cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "$work" "$ROOT/fuzz/corpus/$t" -- \
    -max_total_time="$FUZZ_SECONDS" -max_len="$FUZZ_MAX_LEN" -timeout="$FUZZ_TIMEOUT" \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "${dict[@]}" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -aoE 'cov: [0-9]+' "$log" | tail -1)
  if [ "$rc" -ne 0 ]; then
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    grep -a -m1 -A1 -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$log" | cut -c1-400 || true
    if [ -z "$artifact" ]; then
      tail -n 40 "$log"
      artifact="(no reproducer written; see ${log#"$ROOT"/})"
    fi
    echo "CRASH in $t: $artifact"
    echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t $artifact"
    crashes+=("$t: $artifact")
    summary+=("$t: CRASH after ${execs:-?} runs")
  else
    summary+=("$t: ok, ${execs:-?} runs in ${FUZZ_SECONDS}s, ${rate:-?} exec/s, ${cov:-cov: ?}, $(find "$work" -type f | wc -l) corpus files")
  fi
done

say "summary"
printf '%s\n' "${summary[@]}"
if [ "${#crashes[@]}" -gt 0 ]; then
  echo
  echo "crashes:"
  printf '  %s\n' "${crashes[@]}"
  exit 1
fi
echo "no crash"
