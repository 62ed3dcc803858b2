#!/usr/bin/env python3
"""Requests a `helix push` (and a `helix pull`) of many small files makes to the registry, counted at the
registry: `helix serve` (embedded backend) logs one `request` line per API request it answers, each of
which is one API Gateway request and one Lambda invocation on the AWS path (small files never take a
presigned URL). 10,000 files of 512 B to 8.5 KiB (44 MiB in 100 folders) by default, the files of
scripts/transfer-bench.py. Also the wall time of each command. Writes a markdown table.

    scripts/push-requests.py --helix target/debug/helix --out target/bench/push-requests.md
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


def requests_in(log, start):
    """Request lines of the server log from byte offset `start`: their count by route, and the new offset."""
    with open(log) as f:
        f.seek(start)
        text = f.read()
        end = f.tell()
    by_route = collections.Counter()
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        fields = event.get("fields", {})
        if fields.get("message") == "request":
            by_route["%s" % fields.get("route", "-")] += 1
    return by_route, end


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--helix", required=True)
    p.add_argument("--small-files", type=int, default=10000)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    helix = os.path.abspath(args.helix)
    work = tempfile.mkdtemp(prefix="helix-push-requests-")
    try:
        data, small = os.path.join(work, "data"), os.path.join(work, "small")
        for i in range(args.small_files):
            d = os.path.join(small, "part-%03d" % (i % 100))
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "f%05d.bin" % i), "wb") as f:
                f.write(os.urandom(512 + (i * 7919) % 8192))
        small_bytes = sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(small) for n in ns)
        log = os.path.join(work, "serve.log")
        env = dict(os.environ, HELIX_DATA_DIR=data, RUST_LOG="info")
        server = subprocess.Popen([helix, "serve", "--listen", "127.0.0.1:0"], env=env,
                                  stdout=subprocess.PIPE, stderr=open(log, "w"))
        url, admin = None, None
        for line in server.stdout:
            line = line.decode().strip()
            if line.startswith("Helix Registry listening on "):
                url = line.rsplit(" ", 1)[1]
            if line.startswith("admin token: "):
                admin = line.split(": ", 1)[1]
            if line.startswith("Stop with Ctrl-C"):
                break
        client = dict(os.environ, HELIX_URL=url, HELIX_TOKEN=admin, HELIX_STATE_DIR=os.path.join(work, "state"))
        _, offset = requests_in(log, 0)
        rows = []
        dest = os.path.join(work, "pulled")
        for label, cmd in [
            ("push", ["push", small, "--workspace", "bench", "--name", "small", "--version", "1"]),
            ("push again (nothing to send)", ["push", small, "--workspace", "bench", "--name", "small", "--version", "1"]),
            ("pull", ["pull", "bench/small@1", dest]),
        ]:
            started = time.monotonic()
            subprocess.run([helix] + cmd + ["--jobs", str(args.jobs), "--json"], env=client, check=True,
                           stdout=subprocess.DEVNULL)
            seconds = time.monotonic() - started
            time.sleep(0.2)  # the last request's log line
            by_route, offset = requests_in(log, offset)
            rows.append((label, seconds, by_route))
        server.terminate()
        server.wait()
        lines = [
            "%d files, %.0f MiB; `--jobs %d`; `helix serve` on the embedded backend, same machine." % (
                args.small_files, small_bytes / (1 << 20), args.jobs),
            "",
            "| command | time | requests to the registry | by route |",
            "|---|---|---|---|",
        ]
        for label, seconds, by_route in rows:
            routes = "; ".join("%s: %d" % (r, n) for r, n in sorted(by_route.items(), key=lambda x: -x[1]))
            lines.append("| %s | %.2f s | %d | %s |" % (label, seconds, sum(by_route.values()), routes))
        lines.append("")
        lines.append("Command: `%s`." % " ".join(sys.argv))
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
