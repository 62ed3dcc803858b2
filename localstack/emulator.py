"""The project's AWS emulator: moto's threaded server with DynamoDB isolated.

    python localstack/emulator.py HOST PORT [--serial]

moto 5.2.5 does not isolate DynamoDB requests that run on different threads. Its TransactWriteItems
snapshots the tables (a deep copy), applies the items one by one and, if any is cancelled, puts the
snapshot back: meanwhile another thread may snapshot the half-applied state (a cancelled Put then
survives) or commit something the restore erases; a deep copy of a table another thread is writing
can also raise, which moto answers with an HTML 500. DynamoDB itself is atomic and isolated.
localstack/repro_transactions.py shows it with boto3 alone (docs/decisions.md has the numbers).

Here every DynamoDB request (X-Amz-Target DynamoDB_* and DynamoDBStreams_*) and every reset of the
emulator's state runs behind one lock, one at a time in arrival order; S3 and KMS requests stay
concurrent. moto also ignores TransactWriteItems' ClientRequestToken, which DynamoDB makes idempotent
for ten minutes: a client that re-sends a transaction whose answer it did not get (the registry does,
shared/src/adapters/dynamo.rs `transact`) would apply it twice or see it cancelled by itself. Here a
re-send with the same token and the same body within ten minutes gets the first success again,
without writing; the same token with another body is IdempotentParameterMismatchException. Both the
tests (localstack/with-emulator.sh, tests/src/lib.rs PrivateMoto) and `make emulator-start` run this
file, so the emulator a user starts behaves like the one the tests use. `--serial` serves one request
of any service at a time.
"""

import argparse
import hashlib
import io
import json
import os
import signal
import sys
import threading
import time

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app


def is_serialised(environ) -> bool:
    """DynamoDB requests and resets of the whole emulator's state."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    return target.startswith("DynamoDB") or environ.get("PATH_INFO", "").startswith("/moto-api/reset")


class FifoLock:
    """A lock granted in arrival order (threading.Lock may pass a waiter over again and again)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.next_ticket = 0
        self.serving = 0

    def __enter__(self):
        with self.cond:
            ticket = self.next_ticket
            self.next_ticket += 1
            self.cond.wait_for(lambda: self.serving == ticket)

    def __exit__(self, *_):
        with self.cond:
            self.serving += 1
            self.cond.notify_all()


IDEMPOTENCY_SECONDS = 600


class IsolatedDynamoDB:
    """WSGI middleware: the serialised requests run (and are answered in full) under one lock;
    TransactWriteItems honours ClientRequestToken as DynamoDB does."""

    def __init__(self, app, serial: bool = False):
        self.app = app
        self.serial = serial
        self.lock = FifoLock()
        self.transactions = {}  # token -> (when, sha256 of the body, status, headers, answer)

    def __call__(self, environ, start_response):
        if not (self.serial or is_serialised(environ)):
            return self.app(environ, start_response)
        token = None
        if environ.get("HTTP_X_AMZ_TARGET", "").endswith(".TransactWriteItems") and environ.get("CONTENT_LENGTH"):
            body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
            environ["wsgi.input"] = io.BytesIO(body)
            try:
                token = json.loads(body).get("ClientRequestToken")
            except ValueError:
                token = None
            digest = hashlib.sha256(body).hexdigest()
        with self.lock:
            if token is not None:
                now = time.monotonic()
                for t in [t for t, v in self.transactions.items() if now - v[0] > IDEMPOTENCY_SECONDS]:
                    del self.transactions[t]
                seen = self.transactions.get(token)
                if seen is not None and seen[1] == digest:
                    start_response(seen[2], seen[3])
                    return [seen[4]]
                if seen is not None:
                    answer = json.dumps({
                        "__type": "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException",
                        "message": "the client request token was used with another request",
                    }).encode()
                    start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.0"),
                                                       ("Content-Length", str(len(answer)))])
                    return [answer]
            answered = []

            def recording_start_response(status, headers, exc_info=None):
                answered.append((status, list(headers)))
                return start_response(status, headers, exc_info)

            result = self.app(environ, recording_start_response)
            try:
                body_out = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if token is not None and answered and answered[0][0].startswith("200"):
                self.transactions[token] = (time.monotonic(), digest, answered[0][0], answered[0][1], body_out)
        return [body_out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--serial", action="store_true", help="one request of any service at a time")
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = IsolatedDynamoDB(DomainDispatcherApplication(create_backend_app), serial=args.serial)
    run_simple(args.host, args.port, app, threaded=not args.serial, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
