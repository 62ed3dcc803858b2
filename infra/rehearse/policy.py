"""Offline IAM evaluation of the calls the functions made, as AWS would evaluate them.

Each recorded call becomes one or more authorization requests (action, resource ARN, condition keys):
DynamoDB per item (a transaction's Put is PutItem on its table, with dynamodb:LeadingKeys of that
item; BatchGetItem carries every key it reads), KMS on the key's ARN, S3 per REST operation with the
s3:* condition keys the request carries. A request is allowed when a statement of the function's role
allows it and no statement of the role, the bucket policy or the table's resource policy denies it.
aws:SecureTransport is modelled as true (Lambda reaches AWS over HTTPS; the emulator is plain HTTP).

One rule is AWS's documented behaviour rather than policy logic (S3 user guide, "Enforce conditional
writes on Amazon S3 buckets"): with a bucket policy that enforces conditional writes, "you can't
perform copy operations to the bucket or prefix specified in your bucket policy. CopyObject requests
without an If-None-Match or If-Match HTTP header fail with a 403 Access Denied error. CopyObject
requests made with those HTTP headers fail with a 501 Not Implemented response."
"""

import fnmatch
import re

from emu import ACCOUNT, REGION


class Request:
    __slots__ = ("who", "action", "resource", "context", "what", "copy")

    def __init__(self, who, action, resource, context, what, copy=False):
        self.who, self.action, self.resource, self.context, self.what, self.copy = who, action, resource, context, what, copy

    def __repr__(self):
        ctx = " ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.who}: {self.action} on {self.resource} {ctx} ({self.what})"


def _scalar(av):
    (t, v), = av.items()
    return str(v)


class Mapper:
    """Turns recorded calls into authorization requests."""

    def __init__(self, hash_keys, index_hash_keys, lsi=None):
        self.lsi = lsi or {}  # table name -> local secondary index names (partition key = the table's)
        self.hash_keys = hash_keys  # table name -> partition key attribute
        self.index_hash_keys = index_hash_keys  # (table, index) -> partition key attribute

    def table_arn(self, table, index=None):
        arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"
        return f"{arn}/index/{index}" if index else arn

    def leading(self, table, key):
        # Never [] for an item: ForAllValues over an empty set is true, so a key we fail to read
        # would pass every dynamodb:LeadingKeys condition.
        attr = self.hash_keys.get(table)
        if attr is None or not key or attr not in key:
            raise ValueError(f"no partition key value for {table} in {key!r}: dynamodb:LeadingKeys unknown")
        return [_scalar(key[attr])]

    def query_leading(self, body):
        table, index = body["TableName"], body.get("IndexName")
        attr = self.index_hash_keys.get((table, index), self.hash_keys.get(table) if index in self.lsi.get(table, ()) else None) \
            if index else self.hash_keys.get(table)
        names = body.get("ExpressionAttributeNames", {})
        values = body.get("ExpressionAttributeValues", {})
        if "KeyConditions" in body and attr in body["KeyConditions"]:
            return [_scalar(body["KeyConditions"][attr]["AttributeValueList"][0])]
        expr = body.get("KeyConditionExpression", "")
        pairs = re.findall(r"([#\w]+)\s*=\s*(:\w+)", expr) + [(n, v) for v, n in re.findall(r"(:\w+)\s*=\s*([#\w]+)", expr)]
        for name, value in pairs:
            if names.get(name, name) == attr and value in values:
                return [_scalar(values[value])]
        raise ValueError(f"no partition key equality for {attr} in {body!r}: dynamodb:LeadingKeys unknown")

    def map(self, who, call):
        target = call.target
        if target.startswith("DynamoDB_"):
            return self.dynamodb(who, target.split(".", 1)[1], call.body or {})
        if target.startswith("TrentService."):
            key = (call.body or {}).get("KeyId", "")
            arn = key if key.startswith("arn:") else f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key}"
            return [Request(who, "kms:" + target.split(".", 1)[1], arn, {}, target)]
        if target.startswith("secretsmanager."):
            secret = (call.body or {}).get("SecretId", "")
            arn = secret if secret.startswith("arn:") else f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret}"
            return [Request(who, "secretsmanager:" + target.split(".", 1)[1], arn, {}, target)]
        if target.startswith("AWSEvents."):
            op = target.split(".", 1)[1]
            if op != "PutEvents":
                raise ValueError(f"EventBridge {op} is not modelled")
            out = []
            for entry in (call.body or {}).get("Entries", []):
                bus = entry.get("EventBusName") or "default"
                arn = bus if bus.startswith("arn:") else f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}"
                out.append(Request(who, "events:PutEvents", arn, {}, target))
            if not out:
                raise ValueError("PutEvents without entries")
            return out
        return self.s3(who, call)

    def dynamodb(self, who, op, body):
        out = []

        def req(action, table, leading, index=None, what=op):
            if table.startswith("arn:"):  # TableName may be the table's ARN
                raise ValueError(f"TableName as an ARN is not modelled: {table}")
            ctx = {"dynamodb:LeadingKeys": leading} if leading else {}  # Scan: the key is absent
            out.append(Request(who, "dynamodb:" + action, self.table_arn(table, index), ctx, what))

        if op in ("GetItem", "DeleteItem", "UpdateItem"):
            req(op, body["TableName"], self.leading(body["TableName"], body["Key"]))
        elif op == "PutItem":
            req(op, body["TableName"], self.leading(body["TableName"], body["Item"]))
        elif op == "Query":
            req(op, body["TableName"], self.query_leading(body), body.get("IndexName"))
        elif op == "Scan":
            req(op, body["TableName"], [], body.get("IndexName"))
        elif op in ("BatchGetItem", "BatchWriteItem"):
            for table, spec in body["RequestItems"].items():
                keys = spec["Keys"] if op == "BatchGetItem" else [
                    (w.get("PutRequest", {}).get("Item") or w.get("DeleteRequest", {}).get("Key")) for w in spec]
                req(op, table, sorted({v for k in keys for v in self.leading(table, k)}))
        elif op == "TransactWriteItems":
            kinds = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}
            for item in body["TransactItems"]:
                (kind, spec), = item.items()
                key = spec.get("Item") if kind == "Put" else spec.get("Key")
                req(kinds[kind], spec["TableName"], self.leading(spec["TableName"], key), what=f"{op}/{kind}")
        elif op == "TransactGetItems":
            for item in body["TransactItems"]:
                spec = item["Get"]
                req("GetItem", spec["TableName"], self.leading(spec["TableName"], spec["Key"]), what=f"{op}/Get")
        else:
            req(op, body.get("TableName", "*"), [])
        return out

    def s3(self, who, call):
        path = call.path.lstrip("/")
        bucket, _, key = path.partition("/")
        q = call.query
        h = call.headers
        base = {"aws:SecureTransport": "true"}
        if not key:
            arn = f"arn:aws:s3:::{bucket}"
            if call.method in ("GET", "HEAD") and not (set(q) - {"list-type", "prefix", "max-keys", "continuation-token", "delimiter", "encoding-type", "start-after", "fetch-owner"}):
                ctx = dict(base, **({"s3:prefix": q["prefix"][0]} if "prefix" in q else {}))
                return [Request(who, "s3:ListBucket", arn, ctx, "ListObjectsV2" if call.method == "GET" else "HeadBucket")]
            sub = next(iter(q), "")
            action = {"versions": "s3:ListBucketVersions", "uploads": "s3:ListBucketMultipartUploads",
                      "location": "s3:GetBucketLocation"}.get(sub, f"s3:{call.method}Bucket?{sub}")
            return [Request(who, action, arn, base, f"{call.method} ?{sub}")]
        arn = f"arn:aws:s3:::{bucket}/{key}"
        ctx = dict(base)
        if "if-none-match" in h:
            ctx["s3:if-none-match"] = h["if-none-match"]
        if "if-match" in h:
            ctx["s3:if-match"] = h["if-match"]
        versioned = "versionId" in q
        copy_source = h.get("x-amz-copy-source")
        out = []

        def source_read():
            src = copy_source.split("?", 1)
            s_bucket_key = re.sub(r"^/", "", src[0])
            import urllib.parse
            s_arn = "arn:aws:s3:::" + urllib.parse.unquote(s_bucket_key)
            action = "s3:GetObjectVersion" if len(src) > 1 and "versionId=" in src[1] else "s3:GetObject"
            out.append(Request(who, action, s_arn, dict(base), "copy source"))

        IGNORED = {"x-id", "versionId", "partNumber"} | {k for k in q if k.lower().startswith(("x-amz-", "response-"))}
        sub = {k for k in q} - IGNORED
        SUB = {("GET", "tagging"): "GetObjectTagging", ("PUT", "tagging"): "PutObjectTagging",
               ("DELETE", "tagging"): "DeleteObjectTagging", ("GET", "acl"): "GetObjectAcl", ("PUT", "acl"): "PutObjectAcl",
               ("GET", "legal-hold"): "GetObjectLegalHold", ("PUT", "legal-hold"): "PutObjectLegalHold",
               ("GET", "attributes"): "GetObjectAttributes", ("POST", "restore"): "RestoreObject"}
        for (m, s), a in SUB.items():
            if call.method == m and s in sub:
                if versioned and a in ("GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging", "GetObjectAcl", "PutObjectAcl", "GetObjectAttributes"):
                    a = a.replace("Object", "ObjectVersion", 1)
                return [Request(who, "s3:" + a, arn, ctx, a)]
        if sub - {"retention", "uploads", "uploadId"}:
            raise ValueError(f"S3 sub-resource {sorted(sub)} on {call.method} is not modelled (infra/rehearse/policy.py)")
        if h.get("x-amz-bypass-governance-retention", "").lower() == "true":
            out.append(Request(who, "s3:BypassGovernanceRetention", arn, dict(ctx), "x-amz-bypass-governance-retention"))
        if call.method in ("PUT", "POST") and "uploadId" not in q:
            if "x-amz-tagging" in h:
                out.append(Request(who, "s3:PutObjectTagging", arn, dict(ctx), "x-amz-tagging"))
            if "x-amz-acl" in h or any(k.startswith("x-amz-grant-") for k in h):
                out.append(Request(who, "s3:PutObjectAcl", arn, dict(ctx), "x-amz-acl/x-amz-grant-*"))
            if "x-amz-object-lock-legal-hold" in h:
                out.append(Request(who, "s3:PutObjectLegalHold", arn, dict(ctx), "x-amz-object-lock-legal-hold"))
        if call.method == "PUT":
            if "retention" in q:
                out.append(Request(who, "s3:PutObjectRetention", arn, ctx, "PutObjectRetention"))
            elif "tagging" in q:
                out.append(Request(who, "s3:PutObjectTagging", arn, ctx, "PutObjectTagging"))
            elif "uploadId" in q:
                ctx["s3:ObjectCreationOperation"] = "false"
                what = "UploadPartCopy" if copy_source else "UploadPart"
                if copy_source:
                    ctx["s3:x-amz-copy-source"] = copy_source
                    source_read()
                out.append(Request(who, "s3:PutObject", arn, ctx, what))
            else:
                ctx["s3:ObjectCreationOperation"] = "true"
                if copy_source:
                    ctx["s3:x-amz-copy-source"] = copy_source
                    source_read()
                if "x-amz-object-lock-mode" in h or "x-amz-object-lock-retain-until-date" in h:
                    ctx["s3:object-lock-mode"] = h.get("x-amz-object-lock-mode", "")
                    out.append(Request(who, "s3:PutObjectRetention", arn, dict(ctx), "PutObject with retention"))
                out.append(Request(who, "s3:PutObject", arn, ctx, "CopyObject" if copy_source else "PutObject", copy=bool(copy_source)))
        elif call.method == "POST":
            if "uploads" in q:
                ctx["s3:ObjectCreationOperation"] = "false"
                if "x-amz-object-lock-mode" in h or "x-amz-object-lock-retain-until-date" in h:
                    out.append(Request(who, "s3:PutObjectRetention", arn, dict(ctx), "CreateMultipartUpload with retention"))
                out.append(Request(who, "s3:PutObject", arn, ctx, "CreateMultipartUpload"))
            elif "uploadId" in q:
                ctx["s3:ObjectCreationOperation"] = "true"
                out.append(Request(who, "s3:PutObject", arn, ctx, "CompleteMultipartUpload"))
            else:
                out.append(Request(who, f"s3:POST?{next(iter(q), '')}", arn, ctx, "POST"))
        elif call.method in ("GET", "HEAD"):
            if "uploadId" in q:
                out.append(Request(who, "s3:ListMultipartUploadParts", arn, ctx, "ListParts"))
            elif "retention" in q:
                out.append(Request(who, "s3:GetObjectRetention", arn, ctx, "GetObjectRetention"))
            else:
                action = "s3:GetObjectVersion" if versioned else "s3:GetObject"
                out.append(Request(who, action, arn, ctx, "GetObject" if call.method == "GET" else "HeadObject"))
                if call.status == 404:
                    # S3 answers a missing key with 404 only to a caller allowed s3:ListBucket on the
                    # bucket, else with 403 (S3 API reference, GetObject/HeadObject "Permissions").
                    out.append(Request(who, "s3:ListBucket", f"arn:aws:s3:::{bucket}", dict(base),
                                       "404 for a missing key (403 without s3:ListBucket)"))
        elif call.method == "DELETE":
            if "uploadId" in q:
                out.append(Request(who, "s3:AbortMultipartUpload", arn, ctx, "AbortMultipartUpload"))
            else:
                out.append(Request(who, "s3:DeleteObjectVersion" if versioned else "s3:DeleteObject", arn, ctx, "DeleteObject"))
        return out


def _list(v):
    return v if isinstance(v, list) else [v]


def _like(pattern, value):
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


MODELLED_KEYS = {"aws:securetransport", "dynamodb:leadingkeys", "s3:prefix", "s3:if-none-match", "s3:if-match",
                 "s3:objectcreationoperation", "s3:x-amz-copy-source", "s3:object-lock-mode"}


def _condition(cond, ctx):
    ctx = {k.lower(): v for k, v in ctx.items()}
    for op, tests in cond.items():
        for key, want in tests.items():
            if key.lower() not in MODELLED_KEYS:
                raise ValueError(f"condition key {key} is not modelled (infra/rehearse/policy.py)")
            want = [str(w).lower() if isinstance(w, bool) else str(w) for w in _list(want)]
            have = ctx.get(key.lower())
            if have == []:
                have = None  # an empty multivalued key is an absent key (Null true, ForAnyValue false)
            if op == "Null":
                if (have is None) != (want[0] == "true"):
                    return False
                continue
            qualifier, _, base = op.rpartition(":")
            if_exists = base.endswith("IfExists")
            base = base.removesuffix("IfExists")
            values = have if isinstance(have, list) else ([] if have is None else [have])
            if qualifier == "ForAllValues":
                if not all(any(_match(base, w, v) for w in want) for v in values):
                    return False
                continue
            if qualifier == "ForAnyValue":
                if not any(any(_match(base, w, v) for w in want) for v in values):
                    return False
                continue
            if have is None:
                if if_exists:
                    continue
                if base.startswith(("StringNot", "ArnNot")):
                    continue
                return False
            negative = "Not" in base
            positive = base.replace("Not", "")
            hit = any(_match(positive, w, v) for w in want for v in values)
            if hit == negative:
                return False
    return True


def _match(op, want, value):
    if op == "StringEquals":
        return want == value
    if op in ("StringEqualsIgnoreCase",):
        return want.lower() == value.lower()
    if op in ("StringLike", "ArnLike", "ArnEquals"):  # ArnEquals takes wildcards as ArnLike does
        return _like(want, value)
    if op == "Bool":
        return want.lower() == str(value).lower()
    raise ValueError(f"condition operator {op} is not modelled (infra/rehearse/policy.py)")


def _actions_match(stmt_actions, action):
    return any(_like(a.lower(), action.lower()) for a in _list(stmt_actions))


def statement_applies(stmt, req):
    if "Action" in stmt and not _actions_match(stmt["Action"], req.action):
        return False
    if "NotAction" in stmt and _actions_match(stmt["NotAction"], req.action):
        return False
    if "Resource" in stmt and not any(_like(r, req.resource) for r in _list(stmt["Resource"])):
        return False
    if "NotResource" in stmt and any(_like(r, req.resource) for r in _list(stmt["NotResource"])):
        return False
    return _condition(stmt.get("Condition", {}), req.context)


def _enforces_conditional_writes(stmt):
    cond = stmt.get("Condition", {})
    keys = {k for tests in cond.values() for k in tests}
    return stmt.get("Effect") == "Deny" and _actions_match(stmt.get("Action", []), "s3:PutObject") and \
        bool(keys & {"s3:if-none-match", "s3:if-match"})


class Evaluator:
    """roles: function -> list of identity statements; resource_policies: (arn prefix, statements)."""

    def __init__(self, roles, bucket_arn, bucket_policy, table_policies):
        self.roles, self.bucket_arn = roles, bucket_arn
        self.bucket_policy = bucket_policy
        self.table_policies = table_policies  # table arn -> statements
        self.used = set()  # (function, statement index, action pattern, resource pattern)

    def resource_statements(self, req):
        if req.resource.startswith(self.bucket_arn + "/") or req.resource == self.bucket_arn:
            return self.bucket_policy
        for arn, stmts in self.table_policies.items():
            if req.resource == arn or req.resource.startswith(arn + "/index/"):
                return stmts
        return []

    def decide(self, req, mark=True):
        """None when allowed, else why not."""
        identity = self.roles.get(req.who)
        if identity is None:
            return f"no role for {req.who}"
        resource = self.resource_statements(req)
        if req.copy and req.action == "s3:PutObject":
            for s in resource:
                if _enforces_conditional_writes(s) and any(_like(r, req.resource) for r in _list(s.get("Resource", []))):
                    return (f"CopyObject into a prefix whose bucket policy enforces conditional writes ({s.get('Sid')}): "
                            "AWS answers 403 without If-None-Match/If-Match and 501 Not Implemented with them (S3 user guide, "
                            "'Enforce conditional writes on Amazon S3 buckets')")
        for s in resource + [s for s in identity if s.get("Effect") == "Deny"]:
            if s.get("Effect") == "Deny" and statement_applies(s, req):
                return f"explicitly denied by {s.get('Sid') or 'a statement'}"
        allowed = False
        for i, s in enumerate(identity):
            if s.get("Effect") == "Allow" and statement_applies(s, req):
                allowed = True
                if mark:
                    for a in _list(s.get("Action", [])):
                        if _actions_match(a, req.action):
                            for r in _list(s.get("Resource", [])):
                                if _like(r, req.resource):
                                    self.used.add((req.who, i, a, r))
        return None if allowed else "no statement of the role allows it"

    def grants(self):
        for who, stmts in self.roles.items():
            for i, s in enumerate(stmts):
                if s.get("Effect") == "Allow":
                    if "NotAction" in s or "NotResource" in s:
                        yield who, i, "NotAction/NotResource", "*"  # never marked used: must be listed
                        continue
                    for a in _list(s.get("Action", [])):
                        for r in _list(s.get("Resource", [])):
                            yield who, i, a, r
