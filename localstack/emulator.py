"""The project's AWS emulator: moto's threaded server with DynamoDB isolated.

    python localstack/emulator.py HOST PORT [--serial]

moto 5.2.5 does not isolate DynamoDB requests that run on different threads. Its TransactWriteItems
snapshots the tables (a deep copy), applies the items one by one and, if any is cancelled, puts the
snapshot back: meanwhile another thread may snapshot the half-applied state (a cancelled Put then
survives) or commit something the restore erases; a deep copy of a table another thread is writing
can also raise, which moto answers with an HTML 500. DynamoDB itself is atomic and isolated.
localstack/repro_transactions.py shows it with boto3 alone (docs/decisions.md has the numbers).

Here every DynamoDB request (X-Amz-Target DynamoDB_* and DynamoDBStreams_*) and every reset of the
emulator's state runs behind one lock, one at a time; S3 and KMS requests stay concurrent. Both the
tests (localstack/with-emulator.sh, tests/src/lib.rs PrivateMoto) and `make emulator-start` run this
file, so the emulator a user starts behaves like the one the tests use. `--serial` serves one request
of any service at a time.
"""

import argparse
import os
import signal
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app


def is_serialised(environ) -> bool:
    """DynamoDB requests and resets of the whole emulator's state."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    return target.startswith("DynamoDB") or environ.get("PATH_INFO", "").startswith("/moto-api/reset")


class IsolatedDynamoDB:
    """WSGI middleware: the serialised requests run (and are answered in full) under one lock."""

    def __init__(self, app, serial: bool = False):
        self.app = app
        self.serial = serial
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if not (self.serial or is_serialised(environ)):
            return self.app(environ, start_response)
        with self.lock:
            result = self.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        return [body]


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
