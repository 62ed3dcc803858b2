"""Reproduce moto's non-isolated TransactWriteItems with boto3 alone, no registry code:

    .venv/bin/python localstack/repro_transactions.py [--rounds N] [--writers N]

Starts two emulators on free 127.0.0.1 ports: moto 5.2.5's own threaded server (`moto_server`) and
localstack/emulator.py (the same moto, DynamoDB requests one at a time). Each round, N writers send
at once the transaction a blob link is in the registry (shared/src/adapters/dynamo.rs `commit`):

    Put   meta  LINK                      if attribute_not_exists(pk)   (the same key for everyone)
    Put   audit stream=S, seq=1+writer    if attribute_not_exists(seq)
    Update meta COUNTER#(writer mod 4)    ADD links 1

Exactly one can commit (the LINK condition); every other is cancelled and, on DynamoDB, applies
nothing. So after a round the audit stream must hold as many events as transactions committed and
the counters must sum to that number. Then as many rounds of `helix push --jobs 4` of 100 new files
(4 writers, each link its own blob with the next seq of one stream, retried on a lost seq): every link
and one event per link must be there, and no request may fail. Last, one transaction re-sent with
its ClientRequestToken must succeed twice and write once. A round that breaks this is an anomaly. Exit status: 0 when the
isolated emulator has no anomaly (whatever the stock server does), 1 otherwise.
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import boto3
import botocore.config
from botocore.exceptions import ClientError

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, log) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"emulator {cmd} did not start")


def client(endpoint: str):
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(retries={"max_attempts": 1}, max_pool_connections=4),
    )


def one_round(endpoint: str, round_no: int, writers: int) -> dict:
    ddb = client(endpoint)
    meta, audit = f"meta-{round_no}", f"audit-{round_no}"
    ddb.create_table(
        TableName=meta,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    ddb.create_table(
        TableName=audit,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "stream", "AttributeType": "S"}, {"AttributeName": "seq", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "stream", "KeyType": "HASH"}, {"AttributeName": "seq", "KeyType": "RANGE"}],
    )
    clients = [client(endpoint) for _ in range(writers)]
    barrier = threading.Barrier(writers)
    outcomes: list[str] = [""] * writers

    def writer(i: int) -> None:
        items = [
            {"Put": {"TableName": meta, "Item": {"pk": {"S": "WS#team-a"}, "sk": {"S": "LINK#sha256:abc"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": audit, "Item": {"stream": {"S": "team-a"}, "seq": {"N": str(1 + i)},
                                                  "action": {"S": "blob.link"}, "writer": {"N": str(i)}},
                     "ConditionExpression": "attribute_not_exists(seq)"}},
            {"Update": {"TableName": meta, "Key": {"pk": {"S": f"COUNTER#{i % 4}"}, "sk": {"S": "SHARD"}},
                        "UpdateExpression": "ADD links :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        ]
        barrier.wait()
        try:
            clients[i].transact_write_items(TransactItems=items)
            outcomes[i] = "committed"
        except ClientError as e:
            outcomes[i] = e.response["Error"]["Code"]
        except Exception as e:  # a non-AWS answer (moto's HTML 500)
            outcomes[i] = type(e).__name__

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = ddb.query(TableName=audit, KeyConditionExpression="#s = :s", ExpressionAttributeNames={"#s": "stream"},
                       ExpressionAttributeValues={":s": {"S": "team-a"}}, ConsistentRead=True)["Items"]
    links = ddb.scan(TableName=meta, FilterExpression="begins_with(sk, :l)",
                     ExpressionAttributeValues={":l": {"S": "LINK#"}}, ConsistentRead=True)["Items"]
    counters = ddb.scan(TableName=meta, FilterExpression="sk = :s", ExpressionAttributeValues={":s": {"S": "SHARD"}},
                        ConsistentRead=True)["Items"]
    committed = outcomes.count("committed")
    counter_sum = sum(int(c.get("links", {"N": "0"})["N"]) for c in counters)
    other = sorted({o for o in outcomes if o not in ("committed", "TransactionCanceledException")})
    return {
        "committed": committed,
        "events": len(events),
        "links": len(links),
        "counters": counter_sum,
        "other_errors": other,
        "anomaly": not (committed == 1 == len(links) and len(events) == committed == counter_sum and not other),
    }


def push_round(endpoint: str, round_no: int, writers: int, blobs: int) -> dict:
    """`helix push --jobs N` of `blobs` new files: N writers each link their own blobs into one
    workspace, each link with its event in the workspace's stream (seq = head + 1, retried with the
    new head when another writer took that seq, as the registry's `commit` does). Afterwards every
    link and exactly one event per link must be there."""
    ddb = client(endpoint)
    meta, audit = f"push-meta-{round_no}", f"push-audit-{round_no}"
    ddb.create_table(
        TableName=meta,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    ddb.create_table(
        TableName=audit,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "stream", "AttributeType": "S"}, {"AttributeName": "seq", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "stream", "KeyType": "HASH"}, {"AttributeName": "seq", "KeyType": "RANGE"}],
    )
    errors: list[str] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        c = client(endpoint)
        for b in range(w, blobs, writers):
            for _attempt in range(50):
                head = c.query(TableName=audit, KeyConditionExpression="#s = :s", ExpressionAttributeNames={"#s": "stream"},
                               ExpressionAttributeValues={":s": {"S": "team-a"}}, ScanIndexForward=False, Limit=1,
                               ConsistentRead=True)["Items"]
                seq = 1 + (int(head[0]["seq"]["N"]) if head else 0)
                items = [
                    {"Put": {"TableName": meta, "Item": {"pk": {"S": "WS#team-a"}, "sk": {"S": f"LINK#{b}"}},
                             "ConditionExpression": "attribute_not_exists(pk)"}},
                    {"Put": {"TableName": audit, "Item": {"stream": {"S": "team-a"}, "seq": {"N": str(seq)},
                                                          "blob": {"N": str(b)}},
                             "ConditionExpression": "attribute_not_exists(seq)"}},
                    {"Update": {"TableName": meta, "Key": {"pk": {"S": f"COUNTER#{b % 4}"}, "sk": {"S": "SHARD"}},
                                "UpdateExpression": "ADD links :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
                ]
                try:
                    c.transact_write_items(TransactItems=items)
                    break
                except ClientError as e:
                    code = e.response["Error"]["Code"]
                    if code != "TransactionCanceledException":
                        with lock:
                            errors.append(f"{code} (HTTP {e.response['ResponseMetadata'].get('HTTPStatusCode')})")
                except Exception as e:  # a non-AWS answer (moto's HTML 500)
                    with lock:
                        errors.append(type(e).__name__)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    links = ddb.scan(TableName=meta, FilterExpression="begins_with(sk, :l)",
                     ExpressionAttributeValues={":l": {"S": "LINK#"}}, ConsistentRead=True)["Items"]
    events = ddb.query(TableName=audit, KeyConditionExpression="#s = :s", ExpressionAttributeNames={"#s": "stream"},
                       ExpressionAttributeValues={":s": {"S": "team-a"}}, ConsistentRead=True)["Items"]
    linked_events = [e["blob"]["N"] for e in events]
    return {
        "links": len(links),
        "events": len(events),
        "duplicate_events": len(linked_events) - len(set(linked_events)),
        "errors": sorted(set(errors)),
        "error_count": len(errors),
        "anomaly": not (len(links) == blobs == len(events) and not errors),
    }


def resend_round(endpoint: str, round_no: int) -> dict:
    """A transaction re-sent with its ClientRequestToken (a client that lost the first answer, as the
    registry's `transact` does): DynamoDB answers success again without writing."""
    ddb = client(endpoint)
    table = f"resend-{round_no}"
    ddb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    items = [
        {"Put": {"TableName": table, "Item": {"pk": {"S": "EVENT#1"}}, "ConditionExpression": "attribute_not_exists(pk)"}},
        {"Update": {"TableName": table, "Key": {"pk": {"S": "COUNTER"}}, "UpdateExpression": "ADD n :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}}}},
    ]
    answers = []
    for _ in range(2):
        try:
            ddb.transact_write_items(TransactItems=items, ClientRequestToken=f"token-{round_no}")
            answers.append("committed")
        except ClientError as e:
            answers.append(e.response["Error"]["Code"])
    counter = ddb.get_item(TableName=table, Key={"pk": {"S": "COUNTER"}}, ConsistentRead=True)["Item"]["n"]["N"]
    return {"answers": answers, "counter": int(counter), "anomaly": answers != ["committed"] * 2 or counter != "1"}


def run(name: str, cmd: list[str], port: int, rounds: int, writers: int, log) -> int:
    proc = start(cmd, port, log)
    endpoint = f"http://127.0.0.1:{port}"
    anomalies = 0
    try:
        for r in range(rounds):
            res = one_round(endpoint, r, writers)
            anomalies += res["anomaly"]
            flag = "ANOMALY" if res["anomaly"] else "ok"
            print(f"{name:<9} one blob, {writers} writers, round {r + 1:>2}: {res['committed']} committed, "
                  f"{res['events']} events, {res['links']} links, counters {res['counters']}, "
                  f"other errors {res['other_errors']}  {flag}", flush=True)
        for r in range(rounds):
            res = push_round(endpoint, r, 4, 100)
            anomalies += res["anomaly"]
            flag = "ANOMALY" if res["anomaly"] else "ok"
            print(f"{name:<9} 100 blobs, 4 writers, round {r + 1:>2}: {res['links']} links, {res['events']} events "
                  f"({res['duplicate_events']} duplicates), {res['error_count']} errors {res['errors']}  {flag}",
                  flush=True)
        res = resend_round(endpoint, 0)
        anomalies += res["anomaly"]
        print(f"{name:<9} a transaction re-sent with its token: answers {res['answers']}, counter "
              f"{res['counter']}  {'ANOMALY' if res['anomaly'] else 'ok'}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # moto's own server may hang in a broken transaction
            proc.kill()
            proc.wait()
    print(f"{name:<9} {anomalies} of {2 * rounds + 1} rounds broke isolation or idempotency", flush=True)
    return anomalies


def main() -> None:
    parser = argparse.ArgumentParser(description="moto TransactWriteItems isolation")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--log", default=os.devnull, help="where the emulators' own logs go")
    parser.add_argument("--isolated-only", action="store_true", help="only localstack/emulator.py")
    args = parser.parse_args()
    with open(args.log, "ab") as log:
        p1, p2 = free_port(), free_port()
        if not args.isolated_only:
            run("threaded", [os.path.join(VENV_BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(p1)], p1,
                args.rounds, args.writers, log)
        isolated = run("isolated", [sys.executable, os.path.join(HERE, "emulator.py"), "127.0.0.1", str(p2)], p2,
                       args.rounds, args.writers, log)
    sys.exit(1 if isolated else 0)


if __name__ == "__main__":
    main()
