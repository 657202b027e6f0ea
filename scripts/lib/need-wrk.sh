# shellcheck shell=bash
# Sourced by the benchmarks (scripts/bench.sh, scripts/bench-scale.sh):
#
#   need_wrk
#
# returns when wrk is on PATH; installs Debian's wrk package first when it is
# missing and this runs as root with apt-get; otherwise stops the run through
# the caller's `die`, saying how to install it.

need_wrk() {
  command -v wrk >/dev/null 2>&1 && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "wrk is missing; installing Debian's wrk package" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >&2 ||
      die "could not install wrk"
  else
    die "wrk is not installed; install it (Debian/Ubuntu: sudo apt-get install wrk) and run again"
  fi
}
