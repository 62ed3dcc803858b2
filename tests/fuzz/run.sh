#!/usr/bin/env bash
# Fuzz the API description: Schemathesis (every check, a fixed seed) over docs/openapi.yaml against a
# fresh `helix serve` on 127.0.0.1, in three phases: every operation but the two that disable the
# caller's own token and the freeze switch, then those two with a token of their own, then the freeze
# switch alone (a frozen registry refuses every change). Any failure or 5xx fails the run.
#   tests/fuzz/run.sh HELIX_BINARY [MAX_EXAMPLES] [SEED]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
helix=$1
examples=${2:-100}
seed=${3:-20261201}
"$root/scripts/venv.sh" .venv-fuzz tests/fuzz/requirements.txt
st="$root/.venv-fuzz/bin/schemathesis"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HELIX_DATA_DIR="$work/data" RUST_LOG=warn "$helix" serve --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 100); do
  grep -q '^admin token: ' "$work/serve.log" && break
  sleep 0.1
done
admin=$(sed -n 's/^admin token: //p' "$work/serve.log")
[ -n "$admin" ] || { cat "$work/serve.log"; echo "fuzz: helix serve did not start" >&2; exit 1; }
url="http://127.0.0.1:$port"
run() {
  "$st" --no-color --config-file "$root/tests/fuzz/schemathesis.toml" run "$root/docs/openapi.yaml" --url "$url" \
    --checks all --seed "$seed" --max-examples "$examples" --workers 1 "$@"
}
run -H "Authorization: Bearer $admin" --exclude-path-regex '^(/v1/tokens/(rotate|\{id\}/revoke)|/v1/admin/.*)$'
# The second phase's own token: rotating or revoking it must not lock out the first phase.
second=$(curl -sf -X POST -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
  -d '{"user":"fuzz-rotate","role":"admin","workspace_id":"*"}' "$url/v1/tokens" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
run -H "Authorization: Bearer $second" --include-path-regex '^/v1/tokens/(rotate|\{id\}/revoke)$'
run -H "Authorization: Bearer $admin" --include-path-regex '^/v1/admin/'
