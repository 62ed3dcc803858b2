"""Create what Helix needs in an AWS API (moto, LocalStack, or a sandbox account) and print the
environment that points Helix at it. The tables come from init/ready.d/tables/*.json (also the LocalStack
ready hook's; checked against infra/template.yaml by the template test):
  meta table  pk (S) / sk (S)          audit table  stream (S) / seq (N), indexes by-day-shard: day_shard (S) / ord (S), by-action: action_shard (S) / at (S), by-actor: actor (S) / at (S)
  bucket      versioning on            key          ECC_NIST_P256, SIGN_VERIFY
Usage: bootstrap.py ENDPOINT_URL [NAME_PREFIX]"""
import json
import os
import sys

import boto3

endpoint = sys.argv[1]
prefix = sys.argv[2] if len(sys.argv) > 2 else "helix"
kw = dict(endpoint_url=endpoint, region_name="us-east-1")
s3 = boto3.client("s3", **kw)
ddb = boto3.client("dynamodb", **kw)
kms = boto3.client("kms", **kw)

bucket = f"{prefix}-blobs"
s3.create_bucket(Bucket=bucket)
s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

# The table definitions the LocalStack ready hook uses too (the template test checks them against infra/).
tables = os.path.join(os.path.dirname(os.path.abspath(__file__)), "init", "ready.d", "tables")
for t in ("meta", "audit"):
    with open(os.path.join(tables, f"{t}.json")) as f:
        ddb.create_table(TableName=f"{prefix}-{t}", **json.load(f))
key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Description="helix signer")
key_id = key["KeyMetadata"]["KeyId"]

for k, v in [
    ("HELIX_TEST_AWS_ENDPOINT", endpoint),
    ("AWS_ENDPOINT_URL", endpoint),
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
    ("HELIX_BLOB_BACKEND", "s3"),
    ("HELIX_META_BACKEND", "dynamodb"),
    ("HELIX_SIGNER_BACKEND", "kms"),
    ("HELIX_S3_BUCKET", bucket),
    ("HELIX_TABLE", f"{prefix}-meta"),
    ("HELIX_AUDIT_TABLE", f"{prefix}-audit"),
    ("HELIX_KMS_KEY_ID", key_id),
]:
    print(f"export {k}={v}")
