#!/usr/bin/env bash
# Start moto server on a free 127.0.0.1 port, bootstrap the bucket (versioned), the two tables and
# a P-256 signing key, and write the environment to use into localstack/.state/env.
# Usage: localstack/start.sh   then   source localstack/.state/env   ...   localstack/stop.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/localstack/.state"
mkdir -p "$state"
"$root/localstack/venv.sh"
if [ -f "$state/moto.pid" ] && kill -0 "$(cat "$state/moto.pid")" 2>/dev/null; then
  echo "localstack: emulator already running (pid $(cat "$state/moto.pid"))" >&2
  cat "$state/env"
  exit 0
fi
port=$("$root/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# moto with DynamoDB isolated (localstack/emulator.py): the same emulator the tests use.
nohup "$root/.venv/bin/python" "$root/localstack/emulator.py" 127.0.0.1 "$port" >"$state/moto.log" 2>&1 &
echo $! >"$state/moto.pid"
endpoint="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "$endpoint/moto-api/" 2>/dev/null; then break; fi
  sleep 0.1
done
curl -fsS -o /dev/null "$endpoint/moto-api/" || { echo "localstack: moto did not start; see $state/moto.log" >&2; exit 1; }
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
"$root/.venv/bin/python" "$root/localstack/bootstrap.py" "$endpoint" >"$state/env"
echo "localstack: moto on $endpoint (pid $(cat "$state/moto.pid")); environment:" >&2
cat "$state/env"
