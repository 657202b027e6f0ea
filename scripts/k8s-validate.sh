#!/usr/bin/env bash
# Validates the Kubernetes manifests in k8s/ offline:
#   1. kubernetes-validate --strict against the Kubernetes 1.30 schemas, on
#      every k8s/*.yaml except kustomization.yaml (not a Kubernetes resource);
#      an error, a warning (e.g. an apiVersion/kind with no schema) or a file
#      with no resource at all is a failure;
#   2. yamllint -s (warnings count) with the repository's .yamllint;
#   3. kustomization.yaml lists every other k8s/*.yaml, and nothing else.
# The tools come from PyPI into .venv (created on first use, reused after);
# kubernetes-validate ships the schemas, so validation itself is offline.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.30.0}"
# ensure_venv and venv_require: the project's shared Python venv (.venv).
# shellcheck source=scripts/venv.sh
source scripts/venv.sh

ensure_venv
venv_require kubernetes_validate "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
venv_require yamllint "yamllint==${YAMLLINT_VERSION:-1.38.0}"

shopt -s nullglob
manifests=()
for file in k8s/*.yaml; do
  [[ "$(basename "$file")" == kustomization.yaml ]] || manifests+=("$file")
done
if ((${#manifests[@]} == 0)); then
  echo "k8s-validate: no manifests found in k8s/" >&2
  exit 1
fi

failures=0
fail() {
  echo "k8s-validate: FAIL: $*" >&2
  failures=$((failures + 1))
}

echo "== kubernetes-validate --strict -k $KUBERNETES_VERSION"
# Options go before the file names: everything after the first file is taken
# as a file name. It prints one line per resource:
#   INFO <file> passed for resource <kind>/<name> against version <v>
#   WARN <file> Couldn't find schema for <kind>/<apiVersion> in <v>...  (exit code 0!)
#   ERROR <file> did not validate for resource <kind>/<name> against version <v>: <path>: <message>
for file in "${manifests[@]}"; do
  rc=0
  output="$("$VENV/bin/kubernetes-validate" --strict -k "$KUBERNETES_VERSION" "$file" 2>&1)" || rc=$?
  printf '%s\n' "$output"
  if ((rc != 0)); then
    fail "$file: kubernetes-validate exited with $rc"
  elif grep -q 'WARN' <<<"$output"; then
    fail "$file: kubernetes-validate warned (a warning means the resource was not validated)"
  elif ! grep -q '^INFO .* passed for resource ' <<<"$output"; then
    fail "$file: no Kubernetes resource was validated (empty file?)"
  fi
done

echo "== yamllint -s (config: .yamllint)"
if "$VENV/bin/yamllint" -s -c .yamllint k8s/*.yaml; then
  echo "yamllint: ${#manifests[@]} manifests and kustomization.yaml are clean"
else
  fail "yamllint reported problems (see above)"
fi

echo "== kustomization.yaml lists every manifest"
if ! "$VENV/bin/python" - "${manifests[@]}" <<'PY'; then
import os
import sys

import yaml

with open("k8s/kustomization.yaml") as f:
    kustomization = yaml.safe_load(f)
listed = kustomization.get("resources") or []
present = [os.path.basename(p) for p in sys.argv[1:]]
ok = True
for name in sorted(set(present) - set(listed)):
    print(f"k8s/{name} is not listed in kustomization.yaml resources")
    ok = False
for name in sorted(set(listed) - set(present)):
    print(f"kustomization.yaml lists {name}, which is not in k8s/")
    ok = False
for name in sorted({n for n in listed if listed.count(n) > 1}):
    print(f"kustomization.yaml lists {name} more than once")
    ok = False
if ok:
    print(f"kustomization.yaml lists all {len(present)} manifests")
sys.exit(0 if ok else 1)
PY
  fail "kustomization.yaml resources do not match k8s/*.yaml"
fi

if ((failures > 0)); then
  echo "k8s-validate: $failures check(s) FAILED" >&2
  exit 1
fi
echo "k8s-validate: all checks passed"
