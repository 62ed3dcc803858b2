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
concurrent, except S3's conditional writes (a PUT or POST with If-None-Match or If-Match: PutObject,
CompleteMultipartUpload), which S3 documents as atomic (of concurrent conditional writes of one key
one succeeds, the others get 412) and moto checks and writes in two steps: 2 of 32 concurrent
If-None-Match PUTs of one new key were both answered as created on a loaded machine. moto also ignores TransactWriteItems' ClientRequestToken, which DynamoDB makes idempotent
for ten minutes: a client that re-sends a transaction whose answer it did not get (the registry does,
shared/src/adapters/dynamo.rs `transact`) would apply it twice or see it cancelled by itself. Here a
re-send with the same token and the same body within ten minutes gets the first success again,
without writing; the same token with another body is IdempotentParameterMismatchException. Both the
tests (localstack/with-emulator.sh, tests/src/lib.rs PrivateMoto) and `make emulator-start` run this
file, so the emulator a user starts behaves like the one the tests use. `--serial` serves one request
of any service at a time.

moto's TransactWriteItems also deep-copies every table it touches before it applies anything, to put
it back if the transaction is cancelled: the whole table with its stream records, on every
transaction, so a stream of n audit events costs O(n) per append and a test's run grows with the
square of its events (a profile of the emulator suite: most of the emulator's DynamoDB time, with every
other DynamoDB request queued behind it). Here the transaction keeps a copy of only the items it
names and the length of each touched table's stream, and a cancelled transaction puts exactly those
back: the same all-or-nothing outcome, stream records included, at the cost of the items written.
Nothing else runs meanwhile (the DynamoDB lock above). `--log-requests` keeps werkzeug's line per
request (off by default: it is a tenth of the emulator's time under the test suite).

moto 5.2.5 answers ListParts with the root element <ListPartsResponse>; S3 answers <ListPartsResult>,
which is what the SDKs parse (aws-sdk-rust refuses the other: "expected ListPartsResult"). Here the
root of a ListParts answer (a GET with uploadId) is renamed; nothing else in it changes.
"""

import argparse
import copy
import hashlib
import io
import json
import logging
import os
import signal
import sys
import threading
import time

from werkzeug.serving import run_simple

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app


class _TablesNotCopied:
    """`copy` as moto.dynamodb.models sees it: a Table is not deep-copied (transact_write_items'
    whole-table snapshot, which `transact_write_items` below replaces); anything else is."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value, memo=None):
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)


_moto_transact_write_items = DynamoDBBackend.transact_write_items


def _item_key(table, op_type, op):
    """The (hash, range) key an operation of a transaction names, or None when it names none that
    moto could apply (such an operation fails before it writes anything)."""
    try:
        key = op["Item"] if op_type == "Put" else op["Key"]
        hash_value = DynamoType(key[table.hash_key_attr])
        range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    except (KeyError, TypeError):
        return None
    return hash_value, range_value


def transact_write_items(self, transact_items):
    """moto's TransactWriteItems, undone item by item when it does not commit (see the module's doc)."""
    saved = []  # (table, hash, range, a copy of the item before, or None when there was none)
    streams = {}  # id(table) -> (stream shard, its length before)
    for entry in transact_items if isinstance(transact_items, list) else []:
        if not isinstance(entry, dict) or len(entry) != 1:
            continue
        op_type, op = next(iter(entry.items()))
        table = self.tables.get(op.get("TableName")) if isinstance(op, dict) else None
        if table is None:
            continue
        key = _item_key(table, op_type, op)
        if key is None:
            continue
        hash_value, range_value = key
        saved.append((table, hash_value, range_value, copy.deepcopy(table.get_item(hash_value, range_value))))
        if table.stream_shard is not None:
            streams.setdefault(id(table), (table.stream_shard, len(table.stream_shard.items)))
    try:
        return _moto_transact_write_items(self, transact_items)
    except Exception:
        for table, hash_value, range_value, before in reversed(saved):
            if range_value is None:
                if before is None:
                    table.items.pop(hash_value, None)
                else:
                    table.items[hash_value] = before
            elif before is None:
                table.items.get(hash_value, {}).pop(range_value, None)
            else:
                table.items[hash_value][range_value] = before
        for shard, length in streams.values():
            del shard.items[length:]
        raise


dynamodb_models.copy = _TablesNotCopied()
DynamoDBBackend.transact_write_items = transact_write_items


def is_serialised(environ) -> bool:
    """DynamoDB requests, S3 conditional writes and resets of the whole emulator's state."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    conditional_write = environ.get("REQUEST_METHOD") in ("PUT", "POST") and (
        "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ)
    return (target.startswith("DynamoDB") or conditional_write
            or environ.get("PATH_INFO", "").startswith("/moto-api/reset"))


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

            body_out = _whole_body(self.app(environ, recording_start_response))
            if token is not None and answered and answered[0][0].startswith("200"):
                self.transactions[token] = (time.monotonic(), digest, answered[0][0], answered[0][1], body_out)
        return [body_out]


def _whole_body(result):
    """A WSGI answer's bytes, all of them, with the answer closed as WSGI requires."""
    try:
        return b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


class ListPartsRoot:
    """A ListParts answer (GET with `uploadId`) with S3's root element, <ListPartsResult>."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "GET" or "uploadId=" not in environ.get("QUERY_STRING", ""):
            return self.app(environ, start_response)
        answered = []

        def capture(status, headers, exc_info=None):
            answered.append((status, list(headers), exc_info))
            return lambda _data: None

        body = _whole_body(self.app(environ, capture))
        body = body.replace(b"<ListPartsResponse", b"<ListPartsResult", 1).replace(
            b"</ListPartsResponse>", b"</ListPartsResult>", 1)
        status, headers, exc_info = answered[0]
        headers = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in headers]
        start_response(status, headers, exc_info)
        return [body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--serial", action="store_true", help="one request of any service at a time")
    parser.add_argument("--log-requests", action="store_true", help="log a line per request (werkzeug)")
    args = parser.parse_args()
    if not args.log_requests:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = IsolatedDynamoDB(ListPartsRoot(DomainDispatcherApplication(create_backend_app)), serial=args.serial)
    run_simple(args.host, args.port, app, threaded=not args.serial, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
