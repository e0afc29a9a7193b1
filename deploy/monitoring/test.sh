#!/usr/bin/env bash
# Validate walship's Prometheus rules, their unit tests and the Grafana
# dashboard. Works from any directory; exits non-zero on any failure.
#
# Needs promtool (Debian package `prometheus`) and python3; installs them
# with apt-get when missing (CI runs this as root). Set PROMTOOL=/path to
# use a specific promtool.
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

need_pkgs=()
promtool="${PROMTOOL:-}"
if [[ -z "$promtool" ]]; then
  if command -v promtool >/dev/null 2>&1; then
    promtool="$(command -v promtool)"
  else
    need_pkgs+=(prometheus)
  fi
fi
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)

if ((${#need_pkgs[@]})); then
  echo "==> installing ${need_pkgs[*]}"
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "error: ${need_pkgs[*]} missing and not running as root to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${need_pkgs[@]}"
  # The package may start a prometheus server on systems with an init
  # system; promtool is all we need.
  promtool="${promtool:-$(command -v promtool || true)}"
fi
if [[ -z "$promtool" ]]; then
  echo "error: promtool not found after installing prometheus" >&2
  exit 1
fi
export PROMTOOL="$promtool"

"$promtool" --version 2>&1 | head -n 1

fail=0
step() {
  echo "==> $*"
  if ! "$@"; then
    echo "FAILED: $*" >&2
    fail=1
  fi
}

step "$promtool" check rules walship-alerts.yml
step "$promtool" test rules walship-alerts.test.yml
step python3 -m json.tool walship-dashboard.json /dev/null
step python3 check_dashboard.py walship-dashboard.json --rules walship-alerts.yml

if ((fail)); then
  echo "walship monitoring checks FAILED" >&2
  exit 1
fi
echo "walship monitoring checks passed"
