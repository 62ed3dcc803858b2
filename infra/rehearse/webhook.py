"""The signed webhook on the rehearsed stack: a receiver on 127.0.0.1 that records every delivery, and
the check that notify (reading its key from the Secrets Manager secret the stack names) signed each one
with that key as docs/notifications.md specifies. The template allows only https receivers; the
emulator's CloudFormation does not check AllowedPattern, and notify accepts http on loopback."""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = "rehearsal-webhook-key-0123456789abcdef"
SECRET_NAME = "helix-rehearsal-webhook"


class Receiver:
    def __init__(self):
        self.got = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.got.append((dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def create_secret(emu):
    """The secret holding the webhooks' key, as an operator creates it before the deploy: its ARN."""
    return emu.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString=SECRET)["ARN"]


def check(receiver, ids):
    """What is wrong with the deliveries, given the ids of the events notify put on the bus."""
    failures, seen = [], []
    for headers, body in receiver.got:
        h = {k.lower(): v for k, v in headers.items()}
        want = "sha256=" + hmac.new(SECRET.encode(), h.get("x-helix-timestamp", "").encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, h.get("x-helix-signature", "")):
            failures.append(f"webhook: a delivery not signed with the secret's key: {h.get('x-helix-event-id')}")
        seen.append(json.loads(body)["id"])
    if sorted(set(seen)) != sorted(set(ids)):
        failures.append(f"webhook: {len(set(seen))} distinct events delivered, {len(set(ids))} put on the bus")
    return failures
