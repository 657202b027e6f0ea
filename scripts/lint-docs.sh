#!/usr/bin/env bash
# The README and docs/ must stand on their own in a clone: no link or path
# that leaves the repository (`../` from the root, absolute paths of the
# machine they were written on), and every relative link names a file that exists.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
if grep -nE '(\(|`)\.\./|/work/|/shared/' README.md; then
  echo "lint-docs: README.md points outside the repository (above)" >&2
  status=1
fi
for doc in README.md ARCHITECTURE.md docs/*.md; do
  dir=$(dirname "$doc")
  while IFS= read -r target; do
    target=${target%%#*}
    [[ -z "$target" || "$target" == http* || "$target" == mailto:* ]] && continue
    resolved=$(realpath -m "$dir/$target")
    if [[ "$resolved" != "$PWD"/* || ! -e "$resolved" ]]; then
      echo "lint-docs: $doc links to $target, which is not a file of the repository" >&2
      status=1
    fi
  done < <(grep -oE '\]\([^)]+\)' "$doc" | sed -E 's/^\]\((.*)\)$/\1/')
done
exit "$status"
