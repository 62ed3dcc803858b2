#!/usr/bin/env python3
"""The console in a real browser (issue 18): headless Chromium, driven by Selenium, against a fresh
`helix serve` on 127.0.0.1 whose OIDC issuer is a small test identity provider on 127.0.0.1
(tests/src/bin/test-idp.rs). Every flow: sign in with the identity provider (authorization code with
PKCE; a forged state and a wrong verifier refused first) and with a pasted token, see a pending version, open it
and see its receipts verified in the browser, approve as a second user, see self_approval refused for
the registrant, waive, export, search the audit trail, revoke a token, freeze and see the banner, sign
out. After each view: the browser logged no error, axe-core finds no serious or critical violation,
and a screenshot is saved under the output folder.

    tests/browser/console.py --helix target/debug/helix [--idp target/debug/test-idp] --out target/console
"""

import argparse
import hashlib
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

HERE = pathlib.Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"


class Idp:
    """The test identity provider: its issuer URL is the first line it prints, its token endpoint the
    second. Its token endpoint is on another origin (a second port), as Cognito's and Google's are."""

    def __init__(self, binary):
        self.proc = subprocess.Popen([binary, "--client-id", "helix-console", "--audience", "helix", "--token-elsewhere"],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("issuer: "):
            raise SystemExit(f"browser: the test identity provider did not start: {line!r}")
        self.url = line.split()[1]
        self.token_endpoint = self.proc.stdout.readline().split()[-1]
        assert self.token_endpoint.startswith("http://127.0.0.1:") and not self.token_endpoint.startswith(self.url + "/"), \
            f"the token endpoint {self.token_endpoint} is on another origin than {self.url}"

    def logouts(self):
        """Who signed out at its end_session_endpoint, in order."""
        with urllib.request.urlopen(self.url + "/logouts") as resp:
            return json.loads(resp.read())

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


class Registry:
    def __init__(self, helix, extra_env=None):
        self.dir = tempfile.TemporaryDirectory()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(os.path.join(self.dir.name, "serve.log"), "w+")
        env = dict(os.environ, HELIX_DATA_DIR=os.path.join(self.dir.name, "data"), RUST_LOG="warn",
                   **(extra_env or {}))
        self.proc = subprocess.Popen([helix, "serve", "--listen", f"127.0.0.1:{port}"], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        for _ in range(300):
            self.log.seek(0)
            m = re.search(r"^admin token: (\S+)$", self.log.read(), re.M)
            if m:
                self.admin = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.log.seek(0)
        raise SystemExit(f"browser: helix serve did not start:\n{self.log.read()}")

    def call(self, method, path, token, body=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("authorization", f"Bearer {token}")
        if body is not None:
            req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req) as resp:
            text = resp.read()
            return json.loads(text) if text else None

    def token(self, user, role, ws):
        t = self.call("POST", "/v1/tokens", self.admin, {"user": user, "role": role, "workspace_id": ws})
        return t["token"], t["id"]

    def register(self, token, ws, name, version):
        data = f"{name}@{version} {time.time_ns()}".encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.call("PUT", f"/v1/workspaces/{ws}/blobs/{digest}", token, raw=data)
        manifest = {"schema": "helix.bundle.v1", "name": name, "version": version,
                    "files": [{"path": "weights.bin", "digest": digest, "size": len(data)}], "annotations": {}}
        self.call("PUT", f"/v1/workspaces/{ws}/bundles/{name}/versions/{version}", token, manifest)

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.dir.cleanup()


class Console:
    def __init__(self, url, out):
        opts = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1280,1000", "--disable-extensions", "--no-first-run"):
            opts.add_argument(a)
        opts.binary_location = "/usr/bin/chromium"
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.downloads = tempfile.mkdtemp(prefix="helix-console-downloads-")
        self.d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": self.downloads})
        self.d.set_script_timeout(30)
        self.url = url
        self.out = out
        self.wait = WebDriverWait(self.d, 15)
        self.axe = AXE.read_text()
        self.allowed = []  # console errors a step expects (a refusal the page shows)
        self.views = []

    def find(self, css):
        return self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def visible(self, css):
        return self.wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def text(self, css, contains):
        self.wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), contains))
        return self.d.find_element(By.CSS_SELECTOR, css).text

    def press(self, css, key=Keys.ENTER):
        """Activate a control by keyboard: focus it, then Enter (or Space)."""
        el = self.visible(css)
        self.d.execute_script("arguments[0].focus()", el)
        el.send_keys(key)

    def check(self, name):
        """No browser error logged, no serious or critical axe violation, and a screenshot."""
        errors = [e for e in self.d.get_log("browser") if e["level"] == "SEVERE"
                  and not any(a in e["message"] for a in self.allowed)]
        assert not errors, f"{name}: the browser logged errors: {errors}"
        self.d.execute_script(self.axe)
        violations = self.d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations));")
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in violations
               if v["impact"] in ("serious", "critical")]
        assert not bad, f"{name}: axe-core found serious or critical violations: {bad}"
        path = self.out / f"console-{name}.png"
        self.d.save_screenshot(str(path))
        self.views.append(name)
        print(f"browser: {name}: no error logged, axe clean ({len(violations)} minor), {path}")

    def sign_in(self, token, ok=True):
        self.d.get(self.url + "/console/#/signin")
        box = self.visible("#token-input")
        box.clear()
        box.send_keys(token, Keys.ENTER)  # the keyboard submits the form
        if ok:
            self.find("#nav:not([hidden])")

    def oidc_start(self):
        """Press "Sign in with your identity provider" and arrive on its sign-in page."""
        self.d.get(self.url + "/console/#/signin")
        self.press("#oidc-btn")
        self.visible("#idp-continue")
        return self.d.current_url

    def idp_continue(self, user, role, ws):
        """On the identity provider's page: choose who signs in, and go back to the console."""
        for field, value in (("user", user), ("role", role), ("workspace", ws)):
            box = self.visible(f"#idp-{field}")
            box.clear()
            box.send_keys(value)
        self.visible("#idp-continue").click()

    def tamper_pending(self, key, value, login_url):
        """Back on the console's origin (same tab), change the sign-in request this tab started, then
        return to the identity provider's page."""
        self.d.get(self.url + "/console/#/signin")
        self.visible("#token-input")
        self.d.execute_script(
            "const p = JSON.parse(sessionStorage.getItem('helix.oidc.pending'));"
            "p[arguments[0]] = arguments[1]; sessionStorage.setItem('helix.oidc.pending', JSON.stringify(p));",
            key, value)
        self.d.get(login_url)

    def downloaded(self, suffix):
        """The one finished download ending in `suffix`."""
        for _ in range(150):
            done = [p for p in pathlib.Path(self.downloads).iterdir() if p.name.endswith(suffix)]
            if done:
                return done[0]
            time.sleep(0.1)
        raise AssertionError(f"no {suffix} download in {self.downloads}: {os.listdir(self.downloads)}")

    def stored_token(self):
        return self.d.execute_script("return sessionStorage.getItem('helix.token')")

    def sign_out(self):
        self.press("#signout-btn")
        self.visible("#token-input")
        assert self.d.execute_script("return sessionStorage.length") == 0, "sign-out forgets all this tab kept"
        assert not self.d.find_element(By.ID, "nav").is_displayed(), "signed out: no navigation, no identity"

    def close(self):
        self.d.quit()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helix", required=True)
    ap.add_argument("--idp", help="the test identity provider (default: test-idp beside helix)")
    ap.add_argument("--out", default="target/console")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    idp = Idp(args.idp or str(pathlib.Path(args.helix).with_name("test-idp")))
    reg = Registry(args.helix, {"HELIX_OIDC_ISSUER": idp.url, "HELIX_OIDC_AUDIENCE": "helix",
                                "HELIX_OIDC_CLIENT_ID": "helix-console"})
    ui = None
    try:
        ada, ada_id = reg.token("ada", "approver", "team-a")  # registers, so may never approve
        sam, _ = reg.token("sam", "safety_reviewer", "team-a")
        reg.register(ada, "team-a", "model", "1")
        reg.register(ada, "team-a", "model", "2")
        ui = Console(reg.url, out)

        # Sign in (the page, then a bad token, then a good one), all by keyboard.
        ui.d.get(reg.url + "/console/")
        ui.visible("#token-input")
        timing = ui.d.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "const r = performance.getEntriesByType('resource').filter(x => x.name.includes('/console/'));"
            "const m = performance.getEntriesByName('helix-first-view')[0];"
            "return {first_view_ms: m ? m.startTime : null, load_ms: n.loadEventEnd,"
            " bytes: n.encodedBodySize + r.reduce((a, x) => a + x.encodedBodySize, 0), files: 1 + r.length};")
        assert timing["first_view_ms"] is not None, "the first view was marked"
        print(f"browser: first usable view {timing['first_view_ms']:.0f} ms after navigation start "
              f"(load event {timing['load_ms']:.0f} ms), {timing['files']} files, {timing['bytes']} bytes transferred")
        ui.check("signin")
        ui.allowed = ["/v1/whoami - Failed to load resource: the server responded with a status of 401"]
        ui.sign_in("hlx_" + "A" * 43, ok=False)
        ui.text("#signin-error", "not valid")
        ui.allowed = []
        ui.d.get_log("browser")

        # Sign-in with the identity provider refuses a forged state (nothing redeemed) and a wrong
        # PKCE verifier (the identity provider refuses the code), and says so on the page.
        login = ui.oidc_start()
        ui.tamper_pending("state", "forged-state", login)
        ui.idp_continue("grace", "approver", "team-a")
        ui.text("#signin-error", "state does not match")
        assert ui.stored_token() is None, "a forged state signs nobody in"
        ui.allowed = ["/token - Failed to load resource: the server responded with a status of 400"]
        login = ui.oidc_start()
        ui.tamper_pending("verifier", "W" * 64, login)
        ui.idp_continue("grace", "approver", "team-a")
        ui.text("#signin-error", "PKCE verification failed")
        assert ui.stored_token() is None, "a wrong verifier signs nobody in"
        assert not ui.d.find_element(By.ID, "nav").is_displayed(), "refused: no navigation"
        assert "code=" not in ui.d.current_url, "the code is gone from the address bar"
        ui.check("signin-oidc-refused")
        ui.allowed = []

        # Waiting for me: grace signs in with the identity provider (authorization code with PKCE) and
        # sees both versions, registered by ada.
        login = ui.oidc_start()
        assert "code_challenge_method=S256" in login and "code_challenge=" in login, login
        ui.idp_continue("grace", "approver", "team-a")
        ui.text("#pending-table", "model@2")
        assert "ada" in ui.d.find_element(By.ID, "pending-table").text
        ui.text("#whoami", "grace · approver · team-a")
        assert ui.stored_token().startswith("eyJ"), "the credential is the identity provider's JWT"
        assert "code=" not in ui.d.current_url, "the code is gone from the address bar"
        ui.check("pending")

        # A version: manifest, state, ledger; grace (signed in with the identity provider, not the
        # registrant) approves it; the receipt is verified in the browser.
        ui.press("a.version-link[href$='/model/1']")
        ui.text("#state", "submitted")
        ui.text("#manifest", "weights.bin")
        ui.press("#approve-btn")
        ui.text("#state", "approved")
        ui.text("#ledger", "verified by key sha256:")
        assert not ui.d.find_elements(By.CSS_SELECTOR, ".failed"), "every receipt verifies"
        ui.check("version")
        # Signing out of an identity-provider session ends it there too (its end_session_endpoint, with
        # the ID token as hint) and comes back to the console, signed out.
        assert idp.logouts() == [], idp.logouts()
        ui.sign_out()
        assert idp.logouts() == ["grace"], f"grace was signed out at the identity provider: {idp.logouts()}"
        assert ui.d.current_url.startswith(reg.url + "/console"), ui.d.current_url

        # The registrant: approving her own version is refused, and the page says why.
        ui.allowed = ["/approve - Failed to load resource: the server responded with a status of 403"]
        ui.sign_in(ada)
        ui.text("#pending-table", "model@2")
        ui.press("a.version-link[href$='/model/2']")
        ui.text("#state", "submitted")
        ui.press("#approve-btn")
        refusal = ui.text("#refusal", "self_approval")
        assert "separation of duties" in refusal, refusal
        ui.check("decide-refused")
        ui.allowed = []
        ui.sign_out()

        # A safety reviewer waives the export of version 2, then exports it.
        ui.sign_in(sam)
        ui.press("a.version-link[href$='/model/2']")
        ui.text("#state", "submitted")
        ui.visible("#waiver-justification").send_keys("Urgent partner drill: reviewed offline by the safety board.")
        ui.press("#waive-btn")
        ui.text("#flash", "Waive: recorded")
        ui.text("#ledger", "waiver")
        ui.text("#ledger", "verified by key sha256:")
        ui.press("#export-btn")
        ui.text("#export-done", "Exported (waived)")
        ui.text("#export-result", "export receipt verified by key")
        assert ui.d.find_elements(By.CSS_SELECTOR, "#proof-urls a"), "proof URLs shown"
        # The evidence pack of that export, downloaded and checked offline against the pinned key.
        ui.press("#pack-btn")
        ui.text("#pack-done", "Downloaded")
        pack = ui.downloaded(".tar")
        pem = pathlib.Path(ui.downloads) / "registry.pem"
        pem.write_text(reg.call("GET", "/v1/governance/public-key", sam)["pem"])
        verified = subprocess.run([args.helix, "verify-pack", str(pack), "--public-key", str(pem)],
                                  capture_output=True, text=True)
        assert verified.returncode == 0, f"the console's pack verifies: {verified.stdout}{verified.stderr}"
        assert "team-a/model@2" in verified.stdout and "1 file(s)" in verified.stdout, verified.stdout
        print(f"browser: evidence pack {pack.name} ({pack.stat().st_size} bytes): {verified.stdout.strip()}")
        data = bytearray(pack.read_bytes())
        at = data.rindex(b"model@2 ")  # the file's content (register() writes "model@2 <ns>")
        data[at] ^= 1
        flipped = pack.with_name("flipped.tar")
        flipped.write_bytes(bytes(data))
        refused = subprocess.run([args.helix, "verify-pack", str(flipped), "--public-key", str(pem)],
                                 capture_output=True, text=True)
        assert refused.returncode == 1 and "files/weights.bin" in refused.stdout + refused.stderr, refused
        ui.check("export")
        ui.sign_out()

        # The admin: audit search, token revocation, freeze and the banner.
        ui.sign_in(reg.admin)
        # Leaving a view before its answer arrives: "Waiting for me" is asked for, its answer held back,
        # and the admin goes to the audit trail meanwhile; the late answer must not replace that view.
        ui.d.execute_script("""
            const real = window.fetch;
            window.helixLate = "waiting";
            window.fetch = (url, init) => String(url).includes("/v1/governance/pending")
              ? new Promise((done) => setTimeout(done, 1500))
                  .then(() => real(url, init))
                  .then((r) => { setTimeout(() => { window.helixLate = "answered"; }, 200); return r; })
              : real(url, init);
            location.hash = "#/admin";
        """)
        ui.visible("#issue-user")
        ui.d.execute_script('location.hash = "#/pending";')
        ui.d.execute_script('location.hash = "#/audit";')
        ui.visible("#audit-workspace")
        WebDriverWait(ui.d, 15).until(lambda d: d.execute_script("return window.helixLate") == "answered")
        assert ui.d.find_elements(By.ID, "audit-workspace"), "a late answer replaced the view the user went to"
        ui.d.get(reg.url + "/console/#/audit")
        ui.visible("#audit-workspace").send_keys("team-a")
        ui.visible("#audit-action").send_keys("governance.approval", Keys.ENTER)
        ui.text("#audit-table", "governance.approval")
        assert "grace@" in ui.d.find_element(By.ID, "audit-table").text
        # Who read what: the version pages opened above are reads on the record.
        ui.visible("#audit-action").clear()
        ui.visible("#audit-action").send_keys("bundle.read", Keys.ENTER)
        ui.text("#audit-table", "bundle.read")
        assert "success" in ui.d.find_element(By.ID, "audit-table").text
        ui.check("audit")
        ui.d.get(reg.url + "/console/#/admin")
        ui.text("#workspaces-table", "team-a")
        ui.press(f"button.revoke-btn[data-id='{ada_id}']")
        ui.text("#admin-done", f"Revoke {ada_id}: done")
        row = [r.text for r in ui.d.find_elements(By.CSS_SELECTOR, "#tokens-table tr") if ada_id in r.text]
        assert row and "revoked" in row[0], row
        ui.visible("#freeze-reason").send_keys("incident drill")
        ui.press("#freeze-btn")
        ui.text("#frozen-banner", "Registry frozen: incident drill")
        ui.check("admin")
        ui.d.get(reg.url + "/console/#/pending")
        ui.text("#frozen-banner", "incident drill")  # on every page
        ui.check("pending-frozen")
        ui.sign_out()
        ui.check("signed-out")
        assert idp.logouts() == ["grace"], "a pasted token's sign-out stays on the console"
    finally:
        if ui:
            ui.close()
        reg.close()
        idp.close()
    print(f"browser: {len(ui.views)} views checked in {time.time() - started:.1f}s: {', '.join(ui.views)}")


if __name__ == "__main__":
    sys.exit(main())
