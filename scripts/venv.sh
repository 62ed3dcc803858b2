#!/usr/bin/env bash
# Create or update a project-local, git-ignored Python venv from a pinned requirements file, once:
#   scripts/venv.sh VENV_DIR REQUIREMENTS_FILE
# A stamp per requirements file records what is installed; a changed file reinstalls.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/$1"
req="$root/$2"
stamp="$venv/.helix-$(basename "$req")"
if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
echo "venv: installing $2 into $1" >&2
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# --no-compile: Python compiles (and caches) only the modules a run imports, not every file installed
# (a third of the install's CPU, while cargo builds beside it in `make test`).
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-compile -r "$req"
cp "$req" "$stamp"
