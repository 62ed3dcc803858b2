"""The Python/boto3 baseline for `make bench`: a custom-runtime Lambda doing the same set-up as the
health function (S3, DynamoDB and KMS clients built at init) and, per invocation, the same four
readiness calls (HeadBucket, GetItem on each table, GetPublicKey), driven by the same Runtime API
emulator. Run with the project venv's Python, which has boto3 (a dependency of moto)."""
import json
import os
import time
import urllib.request

import boto3
from botocore.config import Config

config = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
s3 = boto3.client("s3", config=config.merge(Config(s3={"addressing_style": "path"})))
ddb = boto3.client("dynamodb", config=config)
kms = boto3.client("kms", config=config)
bucket = os.environ["HELIX_S3_BUCKET"]
table = os.environ["HELIX_TABLE"]
audit_table = os.environ["HELIX_AUDIT_TABLE"]
key_id = os.environ["HELIX_KMS_KEY_ID"]
base = "http://%s/2018-06-01/runtime/invocation" % os.environ["AWS_LAMBDA_RUNTIME_API"]

PROBES = [
    ("blob_store", lambda: s3.head_bucket(Bucket=bucket)),
    ("meta_store", lambda: ddb.get_item(TableName=table, Key={"pk": {"S": "HEALTH#probe"}, "sk": {"S": "HEALTH"}})),
    ("audit_log", lambda: ddb.get_item(TableName=audit_table, Key={"stream": {"S": "~probe"}, "seq": {"N": "0"}})),
    ("signer", lambda: kms.get_public_key(KeyId=key_id)),
]


def readiness():
    deps = []
    for name, probe in PROBES:
        started = time.perf_counter()
        try:
            probe()
            ok = True
        except Exception:  # a failed probe is reported, never raised
            ok = False
        deps.append({"name": name, "ok": ok, "ms": round((time.perf_counter() - started) * 1000, 1)})
    ready = all(d["ok"] for d in deps)
    body = json.dumps({"ready": ready, "dependencies": deps})
    return {"statusCode": 200 if ready else 503, "headers": {"content-type": "application/json"}, "body": body}


while True:
    with urllib.request.urlopen(base + "/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        json.load(r)
    answer = json.dumps(readiness()).encode()
    urllib.request.urlopen(urllib.request.Request("%s/%s/response" % (base, request_id), data=answer, method="POST"))
