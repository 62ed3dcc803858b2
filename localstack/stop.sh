#!/usr/bin/env bash
# Stop the emulator started by start.sh (by its PID file).
set -euo pipefail
state="$(cd "$(dirname "$0")" && pwd)/.state"
if [ -f "$state/moto.pid" ]; then
  pid=$(cat "$state/moto.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$state/moto.pid"
  echo "localstack: emulator stopped" >&2
fi
