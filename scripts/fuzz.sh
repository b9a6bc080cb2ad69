#!/usr/bin/env bash
# Fuzz everything a peer's bytes reach before relay (fuzz/fuzz_targets/*.rs), each target
# for a bounded time, and fail on any crash or broken invariant.
#
#   scripts/fuzz.sh                        # CI: 60 s in all, split between the targets
#   scripts/fuzz.sh --total-seconds 60
#   scripts/fuzz.sh --seconds-per-target 600 --keep-corpus   # the long run of RELIABILITY.md
#   scripts/fuzz.sh --reseed-only          # only rebuild the seed corpus
#
# Options:
#   --total-seconds N        fuzzing time for all targets together (default 60)
#   --seconds-per-target N   fuzzing time for each target (overrides --total-seconds)
#   --targets a,b            only these targets (default: every file in fuzz/fuzz_targets)
#   --keep-corpus            add the inputs found to fuzz/corpus/TARGET (default: a scratch
#                            copy, so a CI run leaves the tree as it was)
#   --log-dir DIR            where libFuzzer's output goes (default target/fuzz-logs)
#   --reseed-only            write the seeds and stop
#
# Installs cargo-fuzz (pinned) into .tools/cargo-fuzz when missing. The machine has a
# stable toolchain only; cargo-fuzz passes -Z flags, which RUSTC_BOOTSTRAP=1 lets the
# stable compiler accept.
#
# Seeds: fuzz/seeds/messages.jsonl (one message a line: the tests of src/protocol/ and
# the protocol notes), every JSON message quoted in docs/PROTOCOL.md (re-read on each run),
# and fuzz/seeds/queries.txt with every `?name=value` query in docs/PROTOCOL.md. Seed files are named by content hash, so reseeding is
# idempotent.
#
# Exit code: 0 when every target ran its time without a crash; 1 on a crash (the input is
# in fuzz/artifacts/TARGET/ and printed in hex); 2 on a usage or build error.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

total=60
per_target=""
targets=""
keep=0
log_dir="$repo/target/fuzz-logs"
reseed_only=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --total-seconds) total="$2"; shift 2 ;;
    --seconds-per-target) per_target="$2"; shift 2 ;;
    --targets) targets="$2"; shift 2 ;;
    --keep-corpus) keep=1; shift ;;
    --log-dir) log_dir="$2"; shift 2 ;;
    --reseed-only) reseed_only=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

if [[ -z "$targets" ]]; then
  targets="$(for f in fuzz/fuzz_targets/*.rs; do basename "$f" .rs; done | paste -sd, -)"
fi
IFS=, read -r -a target_list <<<"$targets"
n=${#target_list[@]}
if [[ -z "$per_target" ]]; then
  per_target=$(( total / n ))
  (( per_target >= 1 )) || per_target=1
fi

# --- seeds ----------------------------------------------------------------------------
hash_of() { sha1sum | cut -c1-16; }

# write_seed DIR CONTENT-ON-STDIN: one corpus file named by its content.
write_seed() {
  local dir="$1" tmp
  tmp="$(mktemp)"
  cat >"$tmp"
  mv "$tmp" "$dir/seed-$(hash_of <"$tmp")"
  chmod 644 "$dir/seed-"*
}

# Every JSON object quoted in a Markdown file: `{...}` code spans, and lines of fenced
# blocks that start with `{`. Placeholders (`"join":J`) make invalid JSON: fine seeds too.
messages_in_markdown() {
  awk '
    /^[[:space:]]*```/ { fenced = !fenced; next }
    fenced && /^[[:space:]]*\{/ { print; next }
    !fenced {
      line = $0
      while (match(line, /`\{[^`]*\}`/)) {
        print substr(line, RSTART + 1, RLENGTH - 2)
        line = substr(line, RSTART + RLENGTH)
      }
    }
  ' "$1"
}

reseed() {
  local dir=fuzz/corpus/message
  mkdir -p "$dir" fuzz/corpus/query_token
  local sources=(fuzz/seeds/messages.jsonl)
  [[ -f docs/PROTOCOL.md ]] && sources+=(docs/PROTOCOL.md)
  local count=0 msg
  while IFS= read -r msg; do
    [[ -n "$msg" ]] || continue
    # Peer id length byte, then the id, then the frame (see message.rs).
    printf '\x08AbCdEf12%s' "$msg" | write_seed "$dir"
    count=$((count + 1))
  done < <(cat fuzz/seeds/messages.jsonl; [[ -f docs/PROTOCOL.md ]] && messages_in_markdown docs/PROTOCOL.md)
  # A few with other peer ids: empty, one needing JSON escapes.
  printf '\x00{"type":"offer","sdp":"s"}' | write_seed "$dir"
  printf '\x05a"\\\n\xc3{"type":"answer","sdp":"s","from":1}' | write_seed "$dir"
  local q
  while IFS= read -r q; do
    # Twelve bytes of a token, then the query string (see query_token.rs).
    printf 'abcdefghijkl%s' "$q" | write_seed fuzz/corpus/query_token
  done < <(cat fuzz/seeds/queries.txt
           [[ -f docs/PROTOCOL.md ]] && grep -oE '\?[A-Za-z_]+=[^` )"]*' docs/PROTOCOL.md | cut -c2- | sort -u)
  echo "fuzz.sh: seeds from ${sources[*]}: $count messages; corpus now" \
    "$(ls fuzz/corpus/message | wc -l) message, $(ls fuzz/corpus/query_token | wc -l) query_token files" >&2
}

reseed
(( reseed_only )) && exit 0

# --- cargo-fuzz -----------------------------------------------------------------------
. "$repo/scripts/lib.sh"
export PATH="$repo/.tools/cargo-fuzz/bin:$PATH"
cargo fuzz --version >/dev/null 2>&1 \
  || need_cargo_install cargo-fuzz "$CARGO_FUZZ_VERSION" "$repo/.tools/cargo-fuzz" \
  || { echo "fuzz.sh: cannot install cargo-fuzz $CARGO_FUZZ_VERSION" >&2; exit 2; }
export RUSTC_BOOTSTRAP=1

echo "fuzz.sh: building the fuzz targets (release, address sanitizer)" >&2
mkdir -p "$repo/target"
if ! (cd fuzz && cargo fuzz build) >"$repo/target/fuzz-build.log" 2>&1; then
  tail -40 "$repo/target/fuzz-build.log" >&2
  echo "fuzz.sh: build failed" >&2
  exit 2
fi

# --- run ------------------------------------------------------------------------------
mkdir -p "$log_dir"
failed=0
printf '%-14s %8s %14s %10s %8s  %s\n' target seconds executions execs/s corpus result
summary=()
for t in "${target_list[@]}"; do
  seeds="$repo/fuzz/corpus/$t"
  mkdir -p "$seeds"
  if (( keep )); then
    corpus=("$seeds")
  else
    scratch="$(mktemp -d)"
    corpus=("$scratch" "$seeds")
  fi
  dict=()
  [[ -f "fuzz/dict/$t.dict" ]] && dict=("-dict=$repo/fuzz/dict/$t.dict")
  log="$log_dir/$t.log"
  start=$(date +%s)
  set +e
  (cd fuzz && cargo fuzz run "$t" "${corpus[@]}" -- \
      -max_total_time="$per_target" -timeout=10 -rss_limit_mb=4096 \
      -print_final_stats=1 "${dict[@]}") >"$log" 2>&1
  rc=$?
  set -e
  elapsed=$(( $(date +%s) - start ))
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)"
  rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)"
  units="$(ls "${corpus[0]}" | wc -l)"
  if (( rc == 0 )); then
    result=ok
  else
    result="CRASH (exit $rc)"
    failed=1
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|==ERROR' "$log" | head -10 >&2 || true
    for a in $(grep -o '/fuzz/artifacts/[^ ]*' "$log" | sort -u || true); do
      a="$repo${a#"$repo"}"
      [[ -f "$a" ]] || continue
      echo "fuzz.sh: crash input $a (hex): $(od -An -tx1 -v "$a" | tr -d ' \n' | head -c 2000)" >&2
    done
  fi
  [[ -n "${scratch:-}" ]] && rm -rf "$scratch"
  scratch=""
  line="$(printf '%-14s %8s %14s %10s %8s  %s' "$t" "$elapsed" "${execs:-?}" "${rate:-?}" "$units" "$result")"
  echo "$line"
  summary+=("$line")
done

if (( failed )); then
  echo "fuzz.sh: FAILED: a target crashed (logs in $log_dir)" >&2
  exit 1
fi
echo "fuzz.sh: ${#target_list[@]} targets, no crash (logs in $log_dir)"
