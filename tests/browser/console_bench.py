#!/usr/bin/env python3
"""The console's size and first-view time (`make bench`; docs/performance.md, "The console").

Against a fresh `helix serve` with 20 versions waiting, in headless Chromium with the cache disabled
(every load fetches every asset):
- size: every asset the page loads (as the browser reports them), raw and gzip -9, against the
  issue's goal (all assets <= 150 KB gzipped);
- first usable view, from the browser's navigation timing: the sign-in page (`helix-first-view`, the
  first view rendered) and, signed in, "Waiting for me" with its 20 rows (`helix-pending-ready`), each
  over --runs fresh navigations: median and worst, with DOMContentLoaded and the load event.

    tests/browser/console_bench.py --helix target/release/helix --runs 15 --out target/bench/console.md
"""

import argparse
import gzip
import pathlib
import statistics
import sys
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from console import Console, Registry  # noqa: E402

TIMING = (
    "const n = performance.getEntriesByType('navigation')[0];"
    "const m = (k) => { const e = performance.getEntriesByName(k)[0]; return e ? e.startTime : null; };"
    "return {first_view: m('helix-first-view'), pending_ready: m('helix-pending-ready'),"
    " dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd};"
)


def summary(values):
    return f"{statistics.median(values):.0f} ms (worst {max(values):.0f} ms)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helix", required=True)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", default="target/bench/console.md")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    reg = Registry(args.helix)
    ui = None
    try:
        ada, _ = reg.token("ada", "approver", "team-a")
        grace, _ = reg.token("grace", "approver", "team-a")
        for v in range(1, 21):
            reg.register(ada, "team-a", "model", str(v))
        ui = Console(reg.url, out.parent)
        ui.d.execute_cdp_cmd("Network.enable", {})
        ui.d.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})

        # Size: the page and every asset it loaded from the console.
        ui.d.get(reg.url + "/console/#/signin")
        ui.visible("#token-input")
        urls = [reg.url + "/console/"] + ui.d.execute_script(
            "return performance.getEntriesByType('resource').map(r => r.name)"
            ".filter(n => n.includes('/console/'));")
        rows, raw_total, gz_total = [], 0, 0
        for url in urls:
            with urllib.request.urlopen(url) as resp:
                body = resp.read()
            gz = len(gzip.compress(body, 9))
            rows.append((url.split("/console/")[1] or "(page)", len(body), gz))
            raw_total += len(body)
            gz_total += gz

        # First usable view: the sign-in page, then "Waiting for me" signed in.
        signin, signin_load, pending, pending_load = [], [], [], []
        for _ in range(args.runs):
            ui.d.get("about:blank")
            ui.d.get(reg.url + "/console/#/signin")
            ui.visible("#token-input")
            t = ui.d.execute_script(TIMING)
            signin.append(t["first_view"])
            signin_load.append(t["load"])
        ui.d.execute_script("sessionStorage.setItem('helix.token', arguments[0])", grace)
        for _ in range(args.runs):
            ui.d.get("about:blank")
            ui.d.get(reg.url + "/console/#/pending")
            ui.text("#pending-table", "model@20")
            ui.wait.until(lambda d: d.execute_script(TIMING)["pending_ready"] is not None)
            t = ui.d.execute_script(TIMING)
            pending.append(t["pending_ready"])
            pending_load.append(t["load"])
        version = ui.d.capabilities.get("browserVersion", "?")
    finally:
        if ui:
            ui.close()
        reg.close()

    lines = [
        f"Console assets as served by `helix serve` ({args.helix}); headless Chromium {version}, cache disabled,",
        f"{args.runs} navigations per view.",
        "",
        "| asset | bytes | gzip -9 |",
        "|---|---|---|",
        *[f"| {name} | {raw:,} | {gz:,} |" for name, raw, gz in rows],
        f"| **all ({len(rows)} files)** | **{raw_total:,}** | **{gz_total:,}** "
        f"(goal <= 150 KB: {gz_total / 150_000:.0%}) |",
        "",
        "| first usable view (navigation start to) | median (worst) | load event |",
        "|---|---|---|",
        f"| sign-in page rendered | {summary(signin)} | {summary(signin_load)} |",
        f"| signed in: Waiting for me with 20 versions | {summary(pending)} | {summary(pending_load)} |",
    ]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if gz_total > 150_000:
        raise SystemExit(f"console bench: the assets are {gz_total} bytes gzipped, over the 150 KB goal")


if __name__ == "__main__":
    sys.exit(main())
