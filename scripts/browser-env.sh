#!/usr/bin/env bash
# What the browser suite needs (tests/browser/console.py), installed once: Debian `chromium` and
# `chromium-driver` (apt-get, as root or with sudo), Selenium in a project venv (.venv-browser, pinned
# in tests/browser/requirements.txt) and axe-core from npm (tests/browser/package-lock.json, `npm ci`).
# Fails, never skips, when any of them cannot be installed or the browser cannot start.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "browser: installing chromium and chromium-driver (apt-get)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
scripts/venv.sh .venv-browser tests/browser/requirements.txt
lock=tests/browser/package-lock.json
stamp=tests/browser/node_modules/.helix-package-lock.json
if ! cmp -s "$lock" "$stamp"; then
  echo "browser: installing axe-core (npm ci)" >&2
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null
  cp "$lock" "$stamp"
fi
[ -s tests/browser/node_modules/axe-core/axe.min.js ] || { echo "browser: axe-core is missing" >&2; exit 1; }
chromium --headless=new --no-sandbox --disable-gpu --dump-dom about:blank >/dev/null 2>&1 ||
  { echo "browser: chromium cannot start headless" >&2; exit 1; }
echo "browser: $(chromium --version), $(chromedriver --version | cut -d' ' -f1-2), selenium $(.venv-browser/bin/python -c 'import selenium; print(selenium.__version__)'), axe-core $(node -p 'require("./tests/browser/node_modules/axe-core/package.json").version')"
