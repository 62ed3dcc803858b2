#!/usr/bin/env bash
# LocalStack ready hook: the same resources as bootstrap.py, from the same table definitions
# (tables/*.json beside this script; the template test checks them against infra/template.yaml).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
awslocal s3api create-bucket --bucket helix-blobs
awslocal s3api put-bucket-versioning --bucket helix-blobs --versioning-configuration Status=Enabled
for t in meta audit; do
  awslocal dynamodb create-table --table-name "helix-$t" --cli-input-json "file://$here/tables/$t.json"
done
awslocal kms create-key --key-spec ECC_NIST_P256 --key-usage SIGN_VERIFY --description "helix signer" \
  --query KeyMetadata.KeyId --output text > /tmp/helix-kms-key-id
echo "helix: LocalStack ready; HELIX_KMS_KEY_ID=$(cat /tmp/helix-kms-key-id)"
