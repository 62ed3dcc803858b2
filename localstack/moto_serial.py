"""moto server that handles one request at a time: `python moto_serial.py HOST PORT`.

moto's TransactWriteItems is not isolated: it snapshots the tables, applies the items, and on a
cancellation restores the snapshot, erasing any transaction another thread committed in between.
DynamoDB itself is atomic. Drills that put concurrent writers through an outage (tests/src/cases/
faults.rs) run on this serial server, so a lost write is the registry's fault, never the emulator's.
"""
import sys

from werkzeug.serving import run_simple

from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    run_simple(
        host,
        port,
        DomainDispatcherApplication(create_backend_app),
        threaded=False,
        request_handler=MotoRequestHandler,
    )
