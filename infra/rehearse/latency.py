"""Warm latency through the gateway (issue 20 §3; `make bench`, docs/performance.md).

The rehearsal's stack runs every function as Lambda runs it (release binaries when `make bench` asks),
behind the stand-in for API Gateway, on the emulator. This module times, from one client with a
kept-alive connection, N requests each of a small blob GET, a small new blob PUT, an approval and an
export through that gateway, then the same through `helix serve` with the AWS adapters on the same
emulator, the same tables, bucket and key. Each request is timed from its first byte sent to the last
byte of its answer. A few requests of each kind run first, uncounted, so every function instance has
answered once (its cold start is `lambda-bench`'s figure, not this one).

What the two columns share (the emulator, in this Python process, the client) and what only the first
pays (the gateway's event translation and the Runtime API hop, both Python here; API Gateway and the
Lambda service on AWS) is written beside the figures."""

import collections
import hashlib
import http.client
import json
import os
import subprocess
import threading
import time
import urllib.parse

KINDS = ("GET blob (64 B)", "PUT new blob (64 B)", "POST approve", "POST export")
WARMUP = 8


class Client:
    """One kept-alive HTTP/1.1 connection; reconnects when the server closed it."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.conn = None

    def call(self, method, path, body=None, token=None, content_type=None):
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                started = time.perf_counter()
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                took = time.perf_counter() - started
                if r.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, data, took
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _want(what, answer, ok=(200, 201)):
    status, data, took = answer
    if status not in ok:
        raise RuntimeError(f"latency: {what}: {status} {data[:300]!r}")
    return json.loads(data) if data[:1] == b"{" else data, took


def _token(c, admin, ws, user, role):
    body = json.dumps({"user": user, "role": role, "workspace_id": ws, "ttl_seconds": 3600}).encode()
    issued, _ = _want(f"issue a {role} token", c.call("POST", "/v1/tokens", body, admin))
    return issued.get("token") or issued.get("secret")


class Target:
    """One registry to time (the gateway, or `helix serve`), with its own workspace and tokens."""

    def __init__(self, base, admin, ws):
        self.c, self.ws = Client(base), ws
        self.pub = _token(self.c, admin, ws, "latency-publisher", "publisher")
        self.approver = _token(self.c, admin, ws, "latency-approver", "approver")
        self.blobs = []

    def put(self, i):
        blob = hashlib.sha256(f"{self.ws} {i} {time.time_ns()}".encode()).digest() * 2
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        _, took = _want("PUT blob", self.c.call("PUT", f"/v1/workspaces/{self.ws}/blobs/{digest}", blob, self.pub,
                                                "application/octet-stream"))
        self.blobs.append((digest, len(blob)))
        return took

    def get(self, i):
        digest, size = self.blobs[i]
        status, data, took = self.c.call("GET", f"/v1/workspaces/{self.ws}/blobs/{digest}", token=self.pub)
        if status != 200 or len(data) != size:
            raise RuntimeError(f"latency: GET blob: {status} ({len(data)} bytes)")
        return took

    def register(self, i):
        digest, size = self.blobs[0]
        manifest = {"schema": "helix.bundle.v1", "name": "latency", "version": str(i + 1),
                    "files": [{"path": "a.bin", "digest": digest, "size": size}]}
        return _want("PUT bundle version", self.c.call("PUT", f"/v1/workspaces/{self.ws}/bundles/latency/versions/{i + 1}",
                                                       json.dumps(manifest).encode(), self.pub))[1]

    def decide(self, i, action):
        return _want(f"POST {action}", self.c.call("POST", f"/v1/workspaces/{self.ws}/bundles/latency/versions/{i + 1}/{action}",
                                                   b"{}", self.approver))[1]


def _store_calls(calls):
    """{akid: Counter of operations}: DynamoDB's by their target, S3's by method."""
    out = {}
    for c in calls:
        op = c.target.split(".", 1)[-1] if c.target else f"S3 {c.method}"
        out.setdefault(c.akid, collections.Counter())[op] += 1
    return out


def measure(targets, n, recorder):
    """N timed requests of each kind, the targets taking turns request by request (so the emulator's
    growing tables weigh on both alike); returns ({target: {kind: [seconds, ...]}}, {target: {kind:
    Counter of store operations per request}}) (the gateway's functions sign as themselves, `helix
    serve` as `helix-serve`)."""
    times = {name: {k: [] for k in KINDS} for name in targets}
    ops = {name: {} for name in targets}
    steps = ((KINDS[1], Target.put), (KINDS[0], Target.get), (None, Target.register),
             (KINDS[2], lambda t, i: t.decide(i, "approve")), (KINDS[3], lambda t, i: t.decide(i, "export")))
    for kind, step in steps:
        first = len(recorder.calls)
        for i in range(n + WARMUP):
            for name, target in targets.items():
                took = step(target, i)
                if kind and i >= WARMUP:
                    times[name][kind].append(took)
        if kind:
            by_akid = _store_calls(recorder.calls[first:])
            for name in targets:
                total = collections.Counter()
                for akid, counter in by_akid.items():
                    if (akid == "helix-serve") == (name == "serve"):
                        total += counter
                ops[name][kind] = {op: count / (n + WARMUP) for op, count in total.items()}
    return times, ops


def percentile(values, p):
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)]


def serve(helix, env, log_path):
    """`helix serve` with the AWS adapters on the stack's stores; returns (process, url)."""
    log = open(log_path, "wb")
    proc = subprocess.Popen([helix, "serve", "--listen", "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, stderr=log)
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"latency: helix serve did not start: {line!r} (log {log_path})")
    # Whatever else it prints goes to its log (a full pipe would stall it).
    threading.Thread(target=lambda: [log.write(b) for b in proc.stdout], daemon=True).start()
    return proc, line.rsplit(" ", 1)[-1].strip()


def serve_env(functions_env, emulator_url, region):
    """The stack's HELIX_* settings of every function, the AWS adapters, the emulator's endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELIX_", "AWS_"))}
    for variables in functions_env:
        # Not notify's delivery settings (a secret's ARN is for Lambda: `helix serve` refuses it).
        env.update({k: str(v) for k, v in variables.items()
                    if k.startswith("HELIX_") and not k.startswith(("HELIX_WEBHOOK", "HELIX_EVENT_BUS"))})
    env.update(HELIX_BLOB_BACKEND="s3", HELIX_META_BACKEND="dynamodb", HELIX_SIGNER_BACKEND="kms",
               HELIX_LOG_FORMAT="json", AWS_ENDPOINT_URL=emulator_url, AWS_REGION=region,
               AWS_ACCESS_KEY_ID="helix-serve", AWS_SECRET_ACCESS_KEY="rehearsal")
    env.pop("HELIX_PUBLIC_URL", None)
    return env


def run(gateway_url, admin, helix, serve_env, n, out, log_dir, profile, recorder):
    proc, url = serve(helix, serve_env, os.path.join(log_dir, "helix-serve.log"))
    try:
        rows, ops = measure({"gateway": Target(gateway_url, admin, "latency-gateway"),
                             "serve": Target(url, admin, "latency-serve")}, n, recorder)
    finally:
        proc.terminate()
        proc.wait(10)
    ms = lambda s: f"{s * 1000:.1f}"  # noqa: E731
    lines = [f"Warm latency, {n} requests of each kind after {WARMUP} uncounted, one client, a kept-alive connection to each, taking turns; "
             f"functions: {profile} builds; stores: the rehearsal's emulator (moto, in the rehearsal's process).", "",
             "| request | gateway + Lambda runtime: p50 ms | p99 ms | `helix serve` (AWS adapters): p50 ms | p99 ms |",
             "|---|---|---|---|---|"]
    for kind in KINDS:
        g, s = rows["gateway"][kind], rows["serve"][kind]
        lines.append(f"| {kind} | {ms(percentile(g, 50))} | {ms(percentile(g, 99))} | {ms(percentile(s, 50))} | {ms(percentile(s, 99))} |")
    lines += ["", "Store requests per request (counted at the emulator, mean over the timed and uncounted ones):", "",
              "| request | gateway + Lambda runtime | `helix serve` |", "|---|---|---|"]
    fmt = lambda c: f"{sum(c.values()):.2f}: " + ", ".join(f"{op} {v:.2f}" for op, v in sorted(c.items()))  # noqa: E731
    for kind in KINDS:
        lines.append(f"| {kind} | {fmt(ops['gateway'][kind])} | {fmt(ops['serve'][kind])} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(text)
    return text
