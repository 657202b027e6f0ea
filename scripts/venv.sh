#!/usr/bin/env bash
# The project's Python tools live in one virtual environment, .venv at the
# repository root, created on first use and reused after. Packages come from
# PyPI.
#
#   scripts/venv.sh require MODULE PACKAGE [MODULE PACKAGE...]
#       makes sure each MODULE imports, pip-installing PACKAGE when it does
#       not; prints the venv's python path.
#
# Other scripts source this file for ensure_venv and venv_require. Runs that
# overlap (parallel tests) take turns through a lock file.
set -euo pipefail

VENV_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$VENV_ROOT/.venv"

# Creates .venv unless it already works. Debian's python3 needs the
# python3-venv package for `python3 -m venv` (ensurepip); without it, falls
# back to virtualenv from PyPI.
ensure_venv() {
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    return
  fi
  command -v python3 >/dev/null || { echo "venv: python3 is required" >&2; exit 1; }
  echo "venv: creating $VENV" >&2
  rm -rf "$VENV"
  if python3 -m venv "$VENV" >/dev/null 2>&1; then
    return
  fi
  rm -rf "$VENV"
  echo "venv: 'python3 -m venv' failed (ensurepip missing?); trying virtualenv" >&2
  if ! python3 -m virtualenv --version >/dev/null 2>&1; then
    python3 -m pip install --quiet --user virtualenv >/dev/null 2>&1 ||
      python3 -m pip install --quiet --user --break-system-packages virtualenv >/dev/null 2>&1 || true
  fi
  if ! python3 -m virtualenv --quiet "$VENV" >&2; then
    rm -rf "$VENV"
    echo "venv: cannot create a Python virtual environment at $VENV." >&2
    echo "  On Debian/Ubuntu: apt-get install python3-venv  (or python3-pip, then rerun)" >&2
    exit 1
  fi
}

# pip-installs PACKAGE into .venv unless MODULE is already importable there.
venv_require() {
  local module="$1" package="$2"
  if ! "$VENV/bin/python" -c "import $module" >/dev/null 2>&1; then
    echo "venv: installing $package into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$package" >&2
  fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  [[ "${1:-}" == require ]] || { echo "usage: $0 require MODULE PACKAGE [MODULE PACKAGE...]" >&2; exit 2; }
  shift
  mkdir -p "$VENV_ROOT/target"
  exec 9>"$VENV_ROOT/target/.venv.lock"
  flock 9
  ensure_venv
  while (($# >= 2)); do
    venv_require "$1" "$2"
    shift 2
  done
  echo "$VENV/bin/python"
fi
