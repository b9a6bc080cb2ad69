# shellcheck shell=bash
# What the scripts share: installing what a script needs, only where it is
# missing. Source it (it changes no shell option of the caller):
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
#   need_apt PKG...          Debian packages that are not installed yet, in one
#                            `apt-get install`; `apt-get update` runs once per run
#                            (exported to child scripts), and only when something
#                            is missing
#   need_cmd CMD PKG         the Debian package PKG, unless CMD is on PATH already
#   need_pip -r FILE         the Python packages of FILE (or need_pip SPEC...), unless
#                            every one is installed at a version it allows ($PYTHON,
#                            default python3)
#   need_npm DIR [SPEC...]   DIR's npm packages (`npm ci` from its lock file, unless
#                            node_modules matches it), or the SPECs into DIR
#   need_cargo_install CRATE VERSION ROOT [BIN]
#                            the crate's BIN (default CRATE) into ROOT/bin at VERSION
#                            (a requirement such as '~0.15' is met by any build in
#                            ROOT); CARGO_INSTALL_LIMIT=SECONDS bounds the build,
#                            CARGO_TARGET_DIR keeps it between runs
#
# Each returns non-zero when it could not install; the caller decides whether that is
# fatal (`need_apt redis-server || exit 1`). Messages go to stderr, prefixed with the
# script's name (LIB_NAME to change it).

lib_log() { printf '%s: %s\n' "${LIB_NAME:-$(basename "$0" .sh)}" "$*" >&2; }

# Runs a command as root (sudo when not root).
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    lib_log "needs root to run: $*"
    return 1
  fi
}

apt_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

need_apt() {
  local missing=() p
  for p in "$@"; do apt_installed "$p" || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    lib_log "cannot install ${missing[*]}: no apt-get on this machine"
    return 1
  fi
  if [[ -z "${SIGNAL_APT_UPDATED:-}" ]]; then
    lib_log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
    export SIGNAL_APT_UPDATED=1
  fi
  lib_log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

need_cmd() {
  command -v "$1" >/dev/null 2>&1 && return 0
  need_apt "$2" || return 1
  command -v "$1" >/dev/null 2>&1 || { lib_log "$2 is installed but $1 is not on PATH"; return 1; }
}

need_pip() {
  local python="${PYTHON:-python3}"
  need_cmd "$python" python3 || return 1
  # Whether every requirement is installed at a version it allows.
  if "$python" - "$@" >/dev/null 2>&1 <<'PY'; then return 0; fi
import re, sys
from importlib import metadata

def key(v):
    return [int(m.group()) if m else 0 for m in (re.match(r"\d+", p) for p in v.split("."))]

def allows(op, want, have):
    h, w = key(have), key(want)
    n = max(len(h), len(w))
    h, w = h + [0] * (n - len(h)), w + [0] * (n - len(w))
    return {">=": h >= w, ">": h > w, "<=": h <= w, "<": h < w,
            "==": h == w, "!=": h != w, "~=": h >= w}.get(op, True)

args = sys.argv[1:]
specs = []
if args[:1] == ["-r"]:
    for line in open(args[1]):
        line = line.split("#", 1)[0].strip()
        if line:
            specs.append(line)
else:
    specs = args
for spec in specs:
    spec = spec.split(";", 1)[0]
    name = re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].strip()
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        sys.exit(1)
    for op, want in re.findall(r"(>=|<=|==|!=|~=|>|<)\s*([\w.*]+)", spec):
        if not allows(op, want.rstrip(".*"), have):
            sys.exit(1)
PY
  if ! "$python" -m pip --version >/dev/null 2>&1; then
    need_apt python3-pip || return 1
  fi
  lib_log "pip install $*"
  "$python" -m pip install -q --disable-pip-version-check "$@" \
    || "$python" -m pip install -q --disable-pip-version-check --break-system-packages "$@"
}

need_npm() {
  local dir="$1" spec name missing=()
  shift
  need_cmd node nodejs || return 1
  need_cmd npm npm || return 1
  if [[ $# -eq 0 ]]; then
    # node_modules/.package-lock.json is what npm last installed there.
    if [[ -f "$dir/node_modules/.package-lock.json" \
          && ! "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]]; then
      return 0
    fi
    lib_log "npm ci ($dir)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    return
  fi
  for spec in "$@"; do
    name="${spec%@*}"                 # peer@^1 -> peer; @scope/x@1 -> @scope/x
    [[ -z "$name" ]] && name="$spec"  # @scope/x (no version)
    [[ -f "$dir/node_modules/$name/package.json" ]] || missing+=("$spec")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  lib_log "npm install ${missing[*]} (into $dir)"
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "${missing[@]}" >&2
}

need_cargo_install() {
  local crate="$1" version="$2" root="$3" bin="${4:-$1}"
  if [[ -x "$root/bin/$bin" ]]; then
    case "$version" in
      [0-9]*) grep -qF "\"$crate $version " "$root/.crates.toml" 2>/dev/null && return 0 ;;
      *) return 0 ;;
    esac
  fi
  need_cmd cargo cargo || return 1
  lib_log "cargo install $crate $version into $root${CARGO_INSTALL_LIMIT:+ (at most ${CARGO_INSTALL_LIMIT} s)}"
  local cmd=(cargo install --quiet --locked --root "$root" --version "$version" "$crate")
  if [[ -n "${CARGO_INSTALL_LIMIT:-}" ]]; then
    timeout "$CARGO_INSTALL_LIMIT" "${cmd[@]}" >&2 || true
  else
    "${cmd[@]}" >&2 || true
  fi
  [[ -x "$root/bin/$bin" ]]
}
