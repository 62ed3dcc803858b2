#!/usr/bin/env bash
# Put promtool (Prometheus's own checker, from Debian's `prometheus` package) at .tools/promtool, once,
# without installing the package: `apt-get download` and unpack only the binary. The metrics test runs it
# over real /metrics output. Prints the path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.tools/promtool"
if [ ! -x "$out" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || {
    echo "promtool.sh: apt-get download prometheus failed (run apt-get update?)" >&2
    exit 1
  }
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p "$root/.tools"
  cp "$tmp/x/usr/bin/promtool" "$out.$$"
  mv -f "$out.$$" "$out"
fi
echo "$out"
