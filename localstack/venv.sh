#!/usr/bin/env bash
# The project venv (.venv) with the emulator (moto server), installed once.
exec "$(dirname "$0")/../scripts/venv.sh" .venv localstack/requirements.txt
