#!/usr/bin/env python3
"""`helix push` and `helix pull` against `helix serve` on the embedded backend, beside `sha256sum` of the
same bytes on the same machine: one large file (1 GiB by default) and many small ones (10,000 by
default). Also a blob GET of the large file through `helix serve` (the 307 to its local presigned URL,
with curl) and the server-side latency of the upload's `complete`. The peer of the small files: the
distribution registry (Debian's `docker-registry`, 2.8) receiving the same files as one tar layer (tar,
SHA-256, one monolithic blob upload), when it is installed (`apt-get install docker-registry`). Peak RSS of each client run is the
child's (GNU time's maximum resident set); the server's is its VmHWM (/proc) before it stops. Writes a
markdown table.

    scripts/transfer-bench.py --helix target/release/helix --out target/bench/transfer.md
    # issue 19's large file: 6 GiB, no small files, the pulled bytes' SHA-256 checked against the source's
    scripts/transfer-bench.py --helix target/release/helix --large-mib 6144 --small-files 0 --verify \
      --out target/bench/transfer-6g.md

A run needs about three times the large file's size on the disk of the temp folder (the source, the
stored blob, the pulled copy): with less free space it is skipped (a line in --out says so).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import socket
import time
import urllib.request


def peak_rss(cmd, env=None, cwd=None):
    """Seconds and peak RSS (MiB) of `cmd` alone, measured by GNU time in its own process."""
    started = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, env=env, cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if out.returncode != 0:
        sys.stderr.write(out.stderr.decode(errors="replace"))
        raise SystemExit("%s: exit status %d" % (" ".join(cmd), out.returncode))
    seconds = time.monotonic() - started
    rss_kib = int(out.stderr.decode().strip().splitlines()[-1])
    return seconds, rss_kib / 1024.0, out.stdout.decode()


def distribution_peer(src, work):
    """Seconds the distribution registry takes to receive `src` as one tar layer (tar + SHA-256 + the
    blob's monolithic upload: POST, then PUT with the digest), or None when it is not installed."""
    registry = shutil.which("docker-registry")
    if registry is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = os.path.join(work, "distribution")
    config = os.path.join(work, "distribution.yml")
    with open(config, "w") as f:
        f.write("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n"
                "http:\n  addr: 127.0.0.1:%d\n" % (root, port))
    proc = subprocess.Popen([registry, "serve", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = "http://127.0.0.1:%d" % port
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/v2/", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        layer = os.path.join(work, "layer.tar")
        subprocess.run(["sync"])
        started = time.monotonic()
        subprocess.run(["tar", "-cf", layer, "-C", src, "."], check=True)
        h = hashlib.sha256()
        with open(layer, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        post = urllib.request.Request(base + "/v2/bench/small/blobs/uploads/", method="POST", data=b"")
        location = urllib.request.urlopen(post).headers["Location"]
        location = location if location.startswith("http") else base + location
        sep = "&" if "?" in location else "?"
        with open(layer, "rb") as f:
            put = urllib.request.Request(location + sep + "digest=sha256:" + h.hexdigest(), method="PUT", data=f,
                                         headers={"Content-Type": "application/octet-stream",
                                                  "Content-Length": str(os.path.getsize(layer))})
            status = urllib.request.urlopen(put).status
        seconds = time.monotonic() - started
        if status != 201:
            raise SystemExit("distribution answered %d to the layer's upload" % status)
        return seconds
    finally:
        proc.terminate()
        proc.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--helix", required=True)
    p.add_argument("--large-mib", type=int, default=1024)
    p.add_argument("--small-files", type=int, default=10000)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--verify", action="store_true",
                   help="check the pulled large file's SHA-256 (sha256sum) against the source's")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    helix = os.path.abspath(args.helix)
    needed = 3 * (args.large_mib << 20) + (1 << 30)
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < needed:
        line = "Skipped: %.1f GiB free in %s, a run of %d MiB needs %.1f GiB." % (
            free / (1 << 30), tempfile.gettempdir(), args.large_mib, needed / (1 << 30))
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(line + "\n")
        print(line)
        return
    work = tempfile.mkdtemp(prefix="helix-transfer-bench-")
    try:
        data = os.path.join(work, "data")
        large = os.path.join(work, "large")
        small = os.path.join(work, "small")
        os.makedirs(large)
        # Incompressible bytes, written once (urandom in 1 MiB pieces).
        with open(os.path.join(large, "model.bin"), "wb") as f:
            for _ in range(args.large_mib):
                f.write(os.urandom(1 << 20))
        for i in range(args.small_files):
            d = os.path.join(small, "part-%03d" % (i % 100))
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "f%05d.bin" % i), "wb") as f:
                f.write(os.urandom(512 + (i * 7919) % 8192))
        small_bytes = sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(small) for n in ns)

        env = dict(os.environ, HELIX_DATA_DIR=data, RUST_LOG="info")
        server = subprocess.Popen([helix, "serve", "--listen", "127.0.0.1:0"], env=env,
                                  stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serve.log"), "w"))
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
        rows = []
        source_digest = "sha256:" + subprocess.run(["sha256sum", os.path.join(large, "model.bin")], check=True,
                                                   stdout=subprocess.PIPE).stdout.decode().split()[0]
        verified = None

        def sha256sum(path):
            cmd = ["sh", "-c", "find . -type f -print0 | xargs -0 sha256sum > /dev/null"]
            subprocess.run(["sync"])
            return peak_rss(cmd, cwd=path)[0]

        workloads = [("1 large file", large, args.large_mib << 20, 1)]
        if args.small_files > 0:
            workloads.append(("%d small files" % args.small_files, small, small_bytes, args.small_files))
        peer = distribution_peer(small, work) if args.small_files > 0 else None
        for label, src, size, files in workloads:
            name = "large" if files == 1 else "small"
            base = sha256sum(src)
            push_s, push_rss, push_out = peak_rss(
                [helix, "push", src, "--workspace", "bench", "--name", name, "--version", "1", "--jobs", str(args.jobs), "--json"],
                env=client)
            pushed = json.loads(push_out)
            dest = os.path.join(work, "pulled-" + name)
            pull_s, pull_rss, _ = peak_rss(
                [helix, "pull", "bench/%s@1" % name, dest, "--jobs", str(args.jobs), "--json"], env=client)
            again_s, _, _ = peak_rss(
                [helix, "push", src, "--workspace", "bench", "--name", name, "--version", "1", "--json"], env=client)
            rows.append((label, size, files, base, push_s, push_rss, pushed["upload_seconds"], pull_s, pull_rss, again_s))
            if files == 1 and args.verify:
                got = subprocess.run(["sha256sum", os.path.join(dest, "model.bin")], check=True,
                                     stdout=subprocess.PIPE).stdout.decode().split()[0]
                verified = "sha256:" + got == source_digest
                if not verified:
                    print("the pulled file's SHA-256 is sha256:%s, the source's %s" % (got, source_digest), file=sys.stderr)
            shutil.rmtree(dest)

        # A blob GET of the large file through helix serve: the 307, then the local presigned URL.
        get_s, _, _ = peak_rss(["curl", "-sfL", "-o", "/dev/null", "-H", "Authorization: Bearer " + admin,
                                url + "/v1/workspaces/bench/blobs/" + source_digest])
        server_rss = None
        with open("/proc/%d/status" % server.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    server_rss = int(line.split()[1]) / 1024.0
        server.terminate()
        server.wait()
        complete_ms = [json.loads(l)["fields"]["latency_ms"] for l in open(os.path.join(work, "serve.log"))
                       if '"route":"POST /v1/workspaces/{ws}/uploads/{digest}/complete"' in l]

        mib = lambda n: n / (1 << 20)
        lines = [
            "| workload | bytes | sha256sum | helix push | push RSS | push vs sha256sum | helix pull | pull RSS | pull vs sha256sum | push again (nothing to send) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, size, files, base, push_s, push_rss, up_s, pull_s, pull_rss, again_s in rows:
            lines.append("| %s | %.0f MiB | %.2f s (%.0f MiB/s) | %.2f s (%.0f MiB/s; upload %.2f s) | %.0f MiB | %.2f× | %.2f s (%.0f MiB/s) | %.0f MiB | %.2f× | %.2f s |" % (
                label, mib(size), base, mib(size) / base, push_s, mib(size) / push_s, up_s, push_rss, base / push_s,
                pull_s, mib(size) / pull_s, pull_rss, base / pull_s, again_s))
        lines.append("")
        if args.small_files > 0:
            small_push = [r[4] for r in rows if r[2] > 1][0]
            if peer is None:
                lines.append("Peer of the small files not measured: the distribution registry is not installed "
                             "(`apt-get install docker-registry`).")
            else:
                lines.append("Peer, same run: the distribution registry (docker-registry 2.8) receiving the %d small "
                             "files as one tar layer (tar, SHA-256, one blob upload): %.2f s; `helix push` took %.1f× that."
                             % (args.small_files, peer, small_push / peer))
        lines.append("Blob GET of the large file through `helix serve` (307, then its local presigned URL; curl): %.2f s (%.0f MiB/s)."
                     % (get_s, args.large_mib / get_s))
        if complete_ms:
            lines.append("`complete` of the large upload (server latency): %.0f ms." % max(complete_ms))
        if server_rss is not None:
            lines.append("`helix serve` peak RSS (VmHWM) over the whole run: %.0f MiB." % server_rss)
        if verified is not None:
            lines.append("Pulled large file's SHA-256 %s the source's (%s)." % ("equals" if verified else "DIFFERS FROM",
                                                                              source_digest))
        lines.append("")
        lines.append("Machine: %d CPUs; `--jobs %d`; figures are one run each (`%s`)." % (os.cpu_count(), args.jobs, " ".join(sys.argv)))
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines))
        if verified is False:
            sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
