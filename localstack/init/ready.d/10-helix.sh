#!/usr/bin/env bash
# LocalStack ready hook: the same resources as bootstrap.py, created with awslocal.
set -euo pipefail
awslocal s3api create-bucket --bucket helix-blobs
awslocal s3api put-bucket-versioning --bucket helix-blobs --versioning-configuration Status=Enabled
awslocal dynamodb create-table --table-name helix-meta --billing-mode PAY_PER_REQUEST \
  --attribute-definitions AttributeName=pk,AttributeType=S AttributeName=sk,AttributeType=S \
  --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE
awslocal dynamodb create-table --table-name helix-audit --billing-mode PAY_PER_REQUEST \
  --attribute-definitions AttributeName=stream,AttributeType=S AttributeName=seq,AttributeType=N \
  --key-schema AttributeName=stream,KeyType=HASH AttributeName=seq,KeyType=RANGE
awslocal kms create-key --key-spec ECC_NIST_P256 --key-usage SIGN_VERIFY --description "helix signer" \
  --query KeyMetadata.KeyId --output text > /tmp/helix-kms-key-id
echo "helix: LocalStack ready; HELIX_KMS_KEY_ID=$(cat /tmp/helix-kms-key-id)"
