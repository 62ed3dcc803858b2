#!/usr/bin/env bash
# Run a command with a fresh emulator: start, export its environment, run, always stop.
# The command's exit status is returned; an emulator that cannot start is a failure, never a skip.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
trap '"$here/stop.sh"' EXIT
"$here/start.sh" >/dev/null
set -a
# shellcheck disable=SC1091
. "$here/.state/env"
set +a
"$@"
