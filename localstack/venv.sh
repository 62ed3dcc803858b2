#!/usr/bin/env bash
# Create the project-local, git-ignored Python venv with the emulator, once.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.helix-requirements"
if [ -x "$venv/bin/moto_server" ] && cmp -s "$root/localstack/requirements.txt" "$stamp"; then
  exit 0
fi
echo "localstack: installing the emulator into $venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/localstack/requirements.txt"
cp "$root/localstack/requirements.txt" "$stamp"
