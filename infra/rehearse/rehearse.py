"""`make rehearse`: the deploy rehearsal, offline, on the emulator (docs/deploy.md, "Deploy rehearsal").

 1. `sam package` the functions' zips (the debug builds `make test` made) into the emulator's S3;
 2. translate the packaged SAM template to plain CloudFormation offline (aws-sam-translator) and create
    it as a stack on the emulator's CloudFormation: CREATE_COMPLETE, and the resource types the
    emulator skips are exactly infra/rehearse/skipped-types.txt; apply what it skipped or dropped
    through each service's API with the template's values and read every setting back;
 3. create a second stack from the same template (it must succeed) and check that no physical name the
    template fixes is the same in two stacks;
 4. run every function binary from the zip the stack's code points at, with the environment the stack
    resolved for it, under a Lambda Runtime API, behind a stand-in for API Gateway whose routes are the
    stack's HTTP API's; check each route reaches a function that serves it; drive `helix smoke`, every
    other route and the scheduled audit export;
 5. evaluate every AWS call the functions made, offline, as AWS would (policy.py): fail on a denied
    call, on a grant nothing used that is not on infra/rehearse/unused-grants.txt, and on a negative
    control (a call no function may make) that is not denied;
 6. prove the checks can fail: a grant removed, an unused grant added, a name fixed, two routes
    swapped, the pre-D1 bucket policy and every partition-key scope narrowed to nothing must each be
    caught.
Exit 0 when all holds; 1 with the reasons otherwise."""

import argparse
import base64
import copy
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
# moto warns (stdout and warnings) for every type its CloudFormation skips: the rehearsal checks that
# list itself (skipped-types.txt).
import logging  # noqa: E402
import warnings  # noqa: E402
warnings.filterwarnings("ignore", message="Tried to parse")
logging.getLogger("moto").setLevel(logging.ERROR)
logging.getLogger("samtranslator").setLevel(logging.ERROR)
sys.path.insert(0, HERE)

from emu import ACCOUNT, REGION, Emulator  # noqa: E402
import cfn as cfnmod  # noqa: E402
import gateway as gw  # noqa: E402
import policy  # noqa: E402
import stack as stackmod  # noqa: E402
from uploads import chunked_upload  # noqa: E402
import webhook as webhookmod  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
STACK, STACK2 = "helix-rehearsal", "helix-rehearsal-2"
ARTIFACTS = "helix-rehearsal-artifacts"
HTTP_INSTANCES = 2
# The first stack, the one the functions run on, locks what the registry writes (per-object retention,
# the PutObjectRetention grants); the second keeps every default.
# VerifyInlineMax below the chunked upload's size (one part and a byte): its `complete` answers 202 and the
# status polls verify it, so the policy judge sees the asynchronous verification's calls (uploads.py).
STACK_PARAMS = {"ObjectLockMode": "GOVERNANCE", "ObjectLockDays": "1", "ConsoleOrigin": "https://console.rehearsal.example",
                "VerifyInlineMax": "5242880"}
WORK = None


class Report:
    def __init__(self):
        self.started = time.monotonic()
        self.failures = []

    def phase(self, name, detail=""):
        print(f"[{time.monotonic() - self.started:6.1f} s] {name}{': ' + detail if detail else ''}", flush=True)

    def fail(self, msg):
        print(f"  FAIL {msg}", flush=True)
        self.failures.append(msg)


def read_list(name):
    """Lines of a checked-in list, without comments; `entry  # reason` keeps the entry."""
    out = {}
    with open(os.path.join(HERE, name)) as f:
        for line in f:
            if line.lstrip().startswith("#"):
                continue
            entry, _, reason = line.partition("  # ")
            if entry.strip():
                out[entry.strip()] = reason.strip()
    return out


def build_zips(work, target_dir, functions, profile="debug"):
    for fn in functions:
        binary = os.path.join(target_dir, profile, fn)
        if not os.path.exists(binary):
            raise SystemExit(f"rehearse: {binary} is missing: run `cargo build -p {fn}` (make rehearse does)")
        os.makedirs(os.path.join(work, "build", fn), exist_ok=True)
        # Debug symbols stripped (the zip stays under Lambda's 50 MB and uploads faster); the code is the
        # same build the tests ran.
        stripped = os.path.join(work, "build", fn, "bootstrap")
        subprocess.run(["strip", "-o", stripped, binary], check=True)
        with zipfile.ZipFile(os.path.join(work, "build", fn, "bootstrap.zip"), "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            info = zipfile.ZipInfo("bootstrap")
            info.external_attr = 0o755 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(stripped, "rb") as b:
                z.writestr(info, b.read())
        os.remove(stripped)


def sam_package(emu, work):
    env = dict(os.environ, AWS_ENDPOINT_URL=emu.url, AWS_ACCESS_KEY_ID="rehearsal", AWS_SECRET_ACCESS_KEY="rehearsal",
               AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION, SAM_CLI_TELEMETRY="0")
    sam = os.path.join(ROOT, ".venv-infra", "bin", "sam")
    out = subprocess.run([sam, "package", "--template-file", "template.yaml", "--s3-bucket", ARTIFACTS,
                          "--output-template-file", "packaged.yaml", "--region", REGION, "--force-upload"],
                         cwd=work, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise stackmod.Failure(f"sam package failed: {out.stderr[-2000:]}")
    with open(os.path.join(work, "packaged.yaml")) as f:
        return f.read()


def physical_resolver(template, stack):
    class Fake(dict):
        def __missing__(self, k):
            return f"{stack}-{k}-PHYSICAL"
    return cfnmod.Resolver(template, stack, {}, Fake())


def check_unmodelled(template):
    """What the evaluator does not model must not be in the template (it would pass unjudged)."""
    for logical, res in template["Resources"].items():
        if res["Type"] == "AWS::S3::Bucket":
            for rule in res["Properties"].get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", []):
                if "KMSMasterKeyID" in rule.get("ServerSideEncryptionByDefault", {}):
                    raise stackmod.Failure(f"{logical}: a customer-managed SSE-KMS key needs kms:GenerateDataKey/Decrypt "
                                           "on every object call, which infra/rehearse/policy.py does not model")


def role_statements(emu, template, physical):
    """function logical id -> the statements of its role as the emulator's IAM holds them."""
    iam = emu.client("iam")
    roles = {}
    for logical, res in template["Resources"].items():
        if res["Type"] != "AWS::Lambda::Function":
            continue
        role_logical = res["Properties"]["Role"]["Fn::GetAtt"][0]
        role = physical[role_logical]
        props = template["Resources"][role_logical]["Properties"]
        extra = [a for a in props.get("ManagedPolicyArns", []) if not str(a).endswith("/AWSLambdaBasicExecutionRole")]
        attached = [k for k, r in template["Resources"].items() if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
                    and {"Ref": role_logical} in r["Properties"].get("Roles", [])]
        if extra or attached or "PermissionsBoundary" in props:
            raise SystemExit(f"{logical}: managed policies {extra + attached} or a permissions boundary are not evaluated "
                             "offline (moto's CloudFormation drops ManagedPolicyArns); write the statements inline")
        stmts = []
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            if isinstance(doc, str):  # moto may hold the document as JSON or as a Python literal
                try:
                    doc = json.loads(doc)
                except ValueError:
                    import ast
                    doc = ast.literal_eval(doc)
            stmts += policy._list(doc["Statement"])
        roles[logical] = stmts
    return roles


def logical_form(text, physical):
    names = dict(physical)
    names.update({k + "#name": v.rsplit("/", 1)[-1] for k, v in physical.items() if v.startswith("http")})
    for logical, pid in sorted(names.items(), key=lambda kv: -len(kv[1])):
        logical = logical.split("#", 1)[0]
        if len(pid) > 6:
            text = text.replace(pid, "${" + logical + "}")
    # A stream's label is its creation time: named, not spelled.
    return re.sub(r"(:table/[^/]+/stream/)\d{4}-\d\d-\d\dT[\d:.]+", r"\1${StreamLabel}", text)


class Api:
    def __init__(self, url, token):
        self.url, self.token = url, token

    def call(self, method, path, body=None, token=True, raw=None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {self.token if token is True else token}")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                content = r.read()
                try:
                    return r.status, (json.loads(content) if content[:1] in (b"{", b"[") else content)
                except ValueError:
                    # A framed batch answer: a JSON header line, then bytes.
                    return r.status, content
        except urllib.error.HTTPError as e:
            content = e.read()
            try:
                return e.code, json.loads(content)
            except ValueError:
                return e.code, content


def fill(route_path):
    values = {"ws": "rehearsal-probe", "digest": "sha256:" + "0" * 64, "name": "probe", "version": "1", "id": "tok_probe"}
    out = route_path
    for k, v in values.items():
        out = out.replace("{" + k + "}", v)
    return out


def probe_routes(api, routes, label="route"):
    """Each route, without a token: a function that does not serve the route answers 404 before it
    authenticates; the one that serves it answers 401 (or its public answer)."""
    wrong = []
    for key, fn in sorted(routes.items()):
        method, path = key.split(" ", 1)
        status, body = api.call(method, fill(path), token=False, raw=b"" if method in ("POST", "PUT") else None)
        if path.startswith("/console"):
            # The console answers its page or a plain-text 404; an API function answers a problem.
            misrouted = isinstance(body, dict)
        else:
            # An API function that does not serve the route: a `not_found` problem; the console: text.
            misrouted = status == 404 and (method == "HEAD" or not isinstance(body, dict) or body.get("reason") == "not_found")
        if misrouted and not path.startswith("/v1/proofs"):
            wrong.append(f"{label} {key} reaches {fn}, which does not serve it (404 before authentication)")
    return wrong


# The rehearsal's VerifyFunction hashes at most this much per step (HELIX_VERIFY_STEP_BYTES, added to the
# environment the stack resolved): the rehearsal's file (one 64 MiB part and a byte) takes several invocations, each putting the
# next step's event on the bus, as a file of many gigabytes does on AWS.
VERIFY_STEP_BYTES = 16 * 1024 * 1024
VERIFY = {}


def verify_bus_queue(emu, physical):
    """The verify bus's events, also routed to a queue the rehearsal reads (moto sends no event to a
    Lambda target): the stack's own rule (VerifyFunction's Step event) holds the pattern used here."""
    events, sqs, lam = emu.client("events"), emu.client("sqs"), emu.client("lambda")
    bus = lam.get_function_configuration(FunctionName=physical["VerifyFunction"])["Environment"]["Variables"]["HELIX_VERIFY_BUS_NAME"]
    rules = events.list_rules(EventBusName=bus)["Rules"]
    if len(rules) != 1:
        raise stackmod.Failure(f"the verify bus {bus} has {len(rules)} rules, not the stack's one: {rules}")
    stack_rule = stackmod.RULE_TARGETS.get("VerifyFunctionStep", {})
    targets = [x["Arn"] for x in stack_rule.get("targets", [])]
    want = physical.get("VerifyFunctionAliaslive")
    if stack_rule.get("bus") != bus or targets != [want]:
        raise stackmod.Failure(f"the verify bus's rule {stack_rule} does not target VerifyFunction's live alias {want} on {bus}")
    queue = sqs.create_queue(QueueName="rehearsal-verify-steps")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="rehearsal-verify-steps", EventBusName=bus, EventPattern=rules[0]["EventPattern"])
    events.put_targets(Rule="rehearsal-verify-steps", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    VERIFY.update(queue=queue, bus=bus, sqs=sqs, emu=emu)
    return bus


def drive_verify(report, functions):
    """What the verify bus's rule does on AWS: each event put on the bus (by complete, then by each step)
    to an invocation of VerifyFunction, until no event is left; the last step's answer."""
    sqs, queue = VERIFY["sqs"], VERIFY["queue"]
    last, invocations = None, 0
    while invocations < 50:
        msgs = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            break
        for m in msgs:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            event = json.loads(m["Body"])
            try:
                last = json.loads(functions["VerifyFunction"].api.invoke(event, 900))
            except Exception as e:  # noqa: BLE001
                report.fail(f"VerifyFunction: {e}")
                return None
            invocations += 1
    VERIFY["invocations"] = invocations
    if invocations < 2:
        report.fail(f"VerifyFunction ran {invocations} times: the file was to take several steps")
    # Every event came from complete (publish) or a step that left the job running (verify): one each.
    put = {who: sum(len(c.body.get("Entries", [])) for c in VERIFY["emu"].recorder.calls
                    if c.akid == who and c.target == "AWSEvents.PutEvents" and c.body)
           for who in ("PublishFunction", "VerifyFunction")}
    if put != {"PublishFunction": 1, "VerifyFunction": invocations - 1}:
        report.fail(f"verify bus events put {put}, for {invocations} invocations")
    report.phase("unattended verification", f"{invocations} VerifyFunction invocations, one per event on {VERIFY['bus']}: {last}")
    return last


def drive(api, helix, env, report, functions):
    """helix smoke, then every other route, then the scheduled export."""
    out = subprocess.run([helix, "smoke", "--url", api.url], env=dict(env, HELIX_TOKEN=api.token),
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        report.fail(f"helix smoke: {out.stdout[-1500:]} {out.stderr[-1500:]}")
    else:
        report.phase("helix smoke", out.stderr.strip().splitlines()[-1])
    ws = "rehearsal"

    def want(label, status_body, ok=(200,)):
        status, body = status_body
        if status not in ok:
            report.fail(f"{label}: {status} {str(body)[:300]}")
        return body

    want("GET /v1/whoami", api.call("GET", "/v1/whoami"))
    want("GET /v1/tokens", api.call("GET", "/v1/tokens"))
    issued = want("POST /v1/tokens", api.call("POST", "/v1/tokens", {"user": "rehearsal-publisher", "role": "publisher", "workspace_id": ws, "ttl_seconds": 3600}), (200, 201))
    approver = want("POST /v1/tokens (approver)", api.call("POST", "/v1/tokens", {"user": "rehearsal-approver", "role": "approver", "workspace_id": ws, "ttl_seconds": 3600}), (200, 201))
    safety = want("POST /v1/tokens (safety)", api.call("POST", "/v1/tokens", {"user": "rehearsal-safety", "role": "safety_reviewer", "workspace_id": ws, "ttl_seconds": 3600}), (200, 201))
    pub = issued.get("token") or issued.get("secret")
    blob = b"rehearsal blob"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    want("PUT blob", api.call("PUT", f"/v1/workspaces/{ws}/blobs/{digest}", raw=blob, token=pub, headers={"Content-Type": "application/octet-stream"}), (200, 201))
    want("HEAD blob", api.call("HEAD", f"/v1/workspaces/{ws}/blobs/{digest}", token=pub))
    chunked_upload(api, ws, pub, want, report, lambda: drive_verify(report, functions))
    # Batches: which digests the workspace lacks (BatchGetItem of links), many blobs in one request
    # (TransactWriteItems of links and events), many blobs in one framed answer.
    batch_blob = b"rehearsal batch blob"
    batch_digest = "sha256:" + hashlib.sha256(batch_blob).hexdigest()
    want("POST missing-blobs", api.call("POST", f"/v1/workspaces/{ws}/missing-blobs", {"digests": [digest, batch_digest]}, token=pub))
    frame = json.dumps({"blobs": [{"digest": batch_digest, "size": len(batch_blob)}]}).encode() + b"\n" + batch_blob
    want("POST blob-batches", api.call("POST", f"/v1/workspaces/{ws}/blob-batches", raw=frame, token=pub, headers={"Content-Type": "application/vnd.helix.blob-batch"}))
    want("POST blob-fetches", api.call("POST", f"/v1/workspaces/{ws}/blob-fetches", {"digests": [digest, batch_digest]}, token=pub))
    for version in ("1", "2"):
        manifest = {"schema": "helix.bundle.v1", "name": "probe", "version": version, "files": [{"path": "a.txt", "digest": digest, "size": len(blob)}]}
        want(f"PUT bundle version {version}", api.call("PUT", f"/v1/workspaces/{ws}/bundles/probe/versions/{version}", manifest, token=pub), (200, 201))
    # The same version again: answered from the version already there, with its governance state.
    want("PUT bundle version again", api.call("PUT", f"/v1/workspaces/{ws}/bundles/probe/versions/1", manifest | {"version": "1"}, token=pub), (200, 201))
    want("GET bundles", api.call("GET", f"/v1/workspaces/{ws}/bundles", token=pub))
    want("GET bundles ?state=", api.call("GET", f"/v1/workspaces/{ws}/bundles?state=submitted", token=pub))
    want("GET /v1/workspaces", api.call("GET", "/v1/workspaces"))
    want("GET /v1/governance/pending", api.call("GET", "/v1/governance/pending", token=approver.get("token") or approver.get("secret")))
    want("GET bundle version", api.call("GET", f"/v1/workspaces/{ws}/bundles/probe/versions/1", token=pub))
    gov = want("GET governance", api.call("GET", f"/v1/workspaces/{ws}/bundles/probe/versions/2/governance", token=pub))
    want("POST reject", api.call("POST", f"/v1/workspaces/{ws}/bundles/probe/versions/2/reject", {}, token=approver.get("token") or approver.get("secret")), (200, 201))
    transition = (gov or {}).get("transition") if isinstance(gov, dict) else None
    if transition:
        want("POST waivers", api.call("POST", f"/v1/workspaces/{ws}/bundles/probe/versions/1/waivers",
                                      {"transition": transition, "scope": "export", "justification": "rehearsal", "expires_in_seconds": 600},
                                      token=safety.get("token") or safety.get("secret")), (200, 201, 409))
    else:
        want("POST waivers", api.call("POST", f"/v1/workspaces/{ws}/bundles/probe/versions/1/waivers",
                                      {"transition": digest, "scope": "export", "justification": "rehearsal"},
                                      token=safety.get("token") or safety.get("secret")), (200, 201, 400, 409))
    want("POST unregistered-exports", api.call("POST", f"/v1/workspaces/{ws}/bundles/probe/versions/1/unregistered-exports",
                                               {"id": "uex_" + "ab" * 16, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "local_user": "r",
                                                "host": "h", "reason": "offline", "error": "none"}, token=pub), (200, 201, 202))
    want("POST approve", api.call("POST", f"/v1/workspaces/{ws}/bundles/probe/versions/1/approve", {}, token=approver.get("token") or approver.get("secret")), (200, 201))
    exported = api.call("POST", f"/v1/workspaces/{ws}/bundles/probe/versions/1/export", {}, token=approver.get("token") or approver.get("secret"))
    want("POST export", exported, (200, 201))
    proof = None
    if isinstance(exported[1], dict):
        text = json.dumps(exported[1])
        i = text.find("/v1/proofs/")
        if i >= 0:
            proof = text[i:text.find('"', i)]
    if proof:
        want("GET proof", api.call("GET", proof, token=False), (200, 302, 307))
    else:
        want("GET proof (forged)", api.call("GET", f"/v1/proofs/{ws}/{digest}?manifest=x&exp=1&sig=x", token=False), (400, 403))
    # A version with a ledger, put again: publish verifies the ledger's head (kms:GetPublicKey).
    want("PUT bundle version with a ledger", api.call("PUT", f"/v1/workspaces/{ws}/bundles/probe/versions/1", manifest | {"version": "1"}, token=pub), (200, 201))
    want("GET /v1/governance/public-key", api.call("GET", "/v1/governance/public-key", token=False))
    want("GET /v1/status", api.call("GET", "/v1/status"))
    # The console: the page and an asset, without a credential (the page asks for one).
    want("GET /console", api.call("GET", "/console", token=False))
    want("GET /console/app.js", api.call("GET", "/console/app.js", token=False))
    want("GET /readyz", api.call("GET", "/readyz", token=False))
    want("GET /metrics", api.call("GET", "/metrics", token=False), (200, 401))
    want("GET /v1/audit", api.call("GET", f"/v1/audit?workspace={ws}"))
    want("GET /v1/audit?action", api.call("GET", f"/v1/audit?workspace={ws}&action=bundle.export"))
    want("GET /v1/audit?actor", api.call("GET", "/v1/audit?actor=ops-bootstrap@cli"))
    want("POST freeze", api.call("POST", "/v1/admin/freeze", {"reason": "rehearsal"}))
    want("POST unfreeze", api.call("POST", "/v1/admin/unfreeze", {"reason": "rehearsal"}))
    want("POST suspend", api.call("POST", "/v1/admin/workspaces/rehearsal-scratch/suspend", {"reason": "rehearsal"}))
    want("POST unsuspend", api.call("POST", "/v1/admin/workspaces/rehearsal-scratch/unsuspend", {"reason": "rehearsal"}))
    rotated = want("POST rotate", api.call("POST", "/v1/tokens/rotate", {}, token=pub), (200, 201))
    rid = (rotated or {}).get("id") if isinstance(rotated, dict) else None
    want("POST revoke", api.call("POST", f"/v1/tokens/{rid or issued.get('id')}/revoke", {}), (200, 201))
    read_records(api, ws, report, functions)
    # The scheduled export, as EventBridge Scheduler invokes it (the template's Input).
    export_fn = functions["AuditExportFunction"]
    try:
        answer = export_fn.api.invoke({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, 300)
        report.phase("scheduled audit export", answer.decode()[:200])
    except Exception as e:  # noqa: BLE001
        report.fail(f"scheduled audit export: {e}")


def read_records(api, ws, report, functions):
    """Who read what: the emulator's logs deliver no subscription, so the read records the fetch function
    really logged are sent to AuditIngestFunction as CloudWatch Logs would (gzip, base64, one log event
    each), twice (delivery is at least once); the second must append nothing, and the reads must then be
    in the workspace's audit trail."""
    with open(os.path.join(WORK, "logs", "FetchFunction.log"), "rb") as f:
        lines = [line.decode() for line in f.read().splitlines() if b'"message":"helix.read"' in line]
    if not lines:
        report.fail("the fetch function logged no read record")
        return
    body = {"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": f"/helix/{STACK}/fetch",
            "logStream": "2026/12/04/[$LATEST]0123456789abcdef", "subscriptionFilters": ["FetchReadRecords"],
            "logEvents": [{"id": f"{37600000 + i}", "timestamp": int(time.time() * 1000), "message": m} for i, m in enumerate(lines)]}
    event = {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(body).encode())).decode()}}
    ingest = functions["AuditIngestFunction"]
    try:
        first = json.loads(ingest.api.invoke(event, 120))
        again = json.loads(ingest.api.invoke(event, 120))
    except Exception as e:  # noqa: BLE001
        report.fail(f"audit-ingest: {e}")
        return
    if first.get("appended") != len(lines) or again.get("appended") != 0:
        report.fail(f"audit-ingest: {len(lines)} records appended {first}, then redelivered {again}")
    status, page = api.call("GET", f"/v1/audit?workspace={ws}&action=blob.read")
    if status != 200 or not (isinstance(page, dict) and page.get("events")):
        report.fail(f"GET /v1/audit?action=blob.read: {status} {str(page)[:300]}")
    report.phase("read records ingested", f"{len(lines)} records from the fetch function's log, once each ({again})")


def drive_notify(emu, report, functions, physical, template):
    """The stream's event source mapping, which the emulator does not drive: the audit table's stream read
    as Lambda's poller reads it (DescribeStream, GetShardIterator, GetRecords), the records passed through
    the mapping's filter pattern, in batches of its BatchSize, invoked on notify; every event it puts on
    the stack's bus must arrive there (a rule to a queue the rehearsal reads). notify's own calls are
    judged with the others."""
    ddb, streams, events, sqs = (emu.client(s) for s in ("dynamodb", "dynamodbstreams", "events", "sqs"))
    arn = ddb.describe_table(TableName=physical["AuditTable"])["Table"].get("LatestStreamArn")
    if not arn:
        return report.fail("the audit table has no stream (StreamSpecification)")
    mapping = template["Resources"]["NotifyStreamMapping"]["Properties"]
    pattern = json.loads(mapping["FilterCriteria"]["Filters"][0]["Pattern"])
    actions = set(pattern["dynamodb"]["NewImage"]["action"]["S"])
    records = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            out = streams.get_records(ShardIterator=it, Limit=1000)
            records += out["Records"]
            it = out.get("NextShardIterator") if out["Records"] else None
    passed = [dict(r, eventSourceARN=arn, dynamodb=dict(r["dynamodb"], ApproximateCreationDateTime=int(r["dynamodb"]["ApproximateCreationDateTime"].timestamp())))
              for r in records
              if r["eventName"] in pattern["eventName"] and r["dynamodb"].get("NewImage", {}).get("action", {}).get("S") in actions]
    if not passed:
        return report.fail(f"no governance event among the audit stream's {len(records)} records")
    conf = emu.client("lambda").get_function_configuration(FunctionName=physical["NotifyFunction"])
    bus = conf["Environment"]["Variables"]["HELIX_EVENT_BUS_NAME"]
    queue = sqs.create_queue(QueueName="rehearsal-notified")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="rehearsal-all", EventBusName=bus, EventPattern=json.dumps({"source": ["helix.registry"]}))
    events.put_targets(Rule="rehearsal-all", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    batch = int(mapping.get("BatchSize", 100))
    for i in range(0, len(passed), batch):
        try:
            answer = json.loads(functions["NotifyFunction"].api.invoke({"Records": passed[i:i + batch]}, 60))
        except Exception as e:  # noqa: BLE001
            return report.fail(f"notify: {e}")
        if answer.get("batchItemFailures") != []:
            report.fail(f"notify reported failed records: {answer}")
    put = sum(len(c.body.get("Entries", [])) for c in emu.recorder.calls
              if c.akid == "NotifyFunction" and c.target == "AWSEvents.PutEvents" and c.body)
    got = []
    for _ in range(20):
        msgs = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        got += [json.loads(m["Body"]) for m in msgs]
        if not msgs and len(got) >= put:
            break
    types = sorted({e.get("detail-type") for e in got})
    if put == 0 or len(got) != put or any(e.get("source") != "helix.registry" for e in got):
        report.fail(f"notify put {put} events on {bus}; {len(got)} arrived: {types}")
    for want in ("Version Approved", "Version Rejected", "Registry Frozen", "Workspace Suspended"):
        if want not in types:
            report.fail(f"no '{want}' event on the bus: {types}")
    report.phase("audit stream to notify to the bus", f"{len(records)} stream records, {len(passed)} passed the filter, "
                 f"{put} events put, {len(got)} arrived: {', '.join(types)}")
    return [e.get("detail", {}).get("id") for e in got]


def main():
    ap = argparse.ArgumentParser(description="offline deploy rehearsal")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "rehearse"))
    ap.add_argument("--profile", default="debug", help="the functions' build: debug (make rehearse) or lambda-release (make bench)")
    ap.add_argument("--helix", help="the helix binary (operator commands, and helix serve for --latency); default: the --profile build's")
    ap.add_argument("--latency", type=int, metavar="N", help="instead of the checks: warm latency of N requests per kind (latency.py)")
    ap.add_argument("--latency-out", default=os.path.join(ROOT, "target", "bench", "latency.md"))
    args = ap.parse_args()
    report = Report()
    work = os.path.abspath(args.work)
    global WORK
    WORK = work
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "logs"))
    functions_dirs = sorted(os.listdir(os.path.join(ROOT, "functions")))
    emu = Emulator()
    started = []
    try:
        report.phase("emulator", emu.url)
        build_zips(work, args.target_dir, functions_dirs, args.profile)
        shutil.copy(os.path.join(ROOT, "infra", "template.yaml"), os.path.join(work, "template.yaml"))
        emu.client("s3").create_bucket(Bucket=ARTIFACTS)
        packaged = sam_package(emu, work)
        report.phase("sam package", f"{len(functions_dirs)} zips uploaded")
        template = cfnmod.translate(packaged, {})
        with open(os.path.join(work, "cloudformation.json"), "w") as f:
            json.dump(template, f, indent=1)
        check_unmodelled(template)
        report.phase("SAM translated offline", f"{len(template['Resources'])} resources")

        # The signed webhook, configured as docs/deploy.md says: a secret first, its ARN to the stack.
        hook = webhookmod.Receiver()
        started.append(hook)
        STACK_PARAMS.update(WebhookUrl=hook.url, WebhookSecretArn=webhookmod.create_secret(emu))
        params = {STACK: STACK_PARAMS, STACK2: {}}
        resolver_for = lambda name, phys: cfnmod.Resolver(template, name, params[name], phys)  # noqa: E731
        physical, skipped = stackmod.create(emu, STACK, template, STACK_PARAMS, resolver_for)
        stackmod.check_skipped(skipped, set(read_list("skipped-types.txt")))
        report.phase(f"stack {STACK} ({', '.join(f'{k}={v}' for k, v in STACK_PARAMS.items())})", f"CREATE_COMPLETE, {len(physical)} resources; skipped as expected: {sorted(set(skipped.values()))}")
        resolver = cfnmod.Resolver(template, STACK, STACK_PARAMS, physical)
        api_id, applied = stackmod.apply_skipped(emu, resolver, physical, skipped)
        for m in stackmod.MISMATCHES:
            report.fail(m)
        report.phase("skipped settings applied and read back", f"{applied} settings")

        physical2, _ = stackmod.create(emu, STACK2, template, {}, resolver_for)
        clashes = stackmod.explicit_names(template, lambda s: physical_resolver(template, s))
        for c in clashes:
            report.fail(f"second stack: {c}")
        report.phase(f"stack {STACK2}", f"CREATE_COMPLETE, {len(physical2)} resources; {len(clashes)} fixed names shared")

        # The functions, from the zips the stack points at, with the environment the stack resolved.
        lam, s3 = emu.client("lambda"), emu.client("s3")
        functions, arns = {}, {}
        for logical, res in template["Resources"].items():
            if res["Type"] != "AWS::Lambda::Function":
                continue
            code = res["Properties"]["Code"]
            zipped = s3.get_object(Bucket=code["S3Bucket"], Key=code["S3Key"])["Body"].read()
            run_dir = os.path.join(work, "run", logical)
            zipfile.ZipFile(io.BytesIO(zipped)).extractall(run_dir)
            bootstrap = os.path.join(run_dir, "bootstrap")
            os.chmod(bootstrap, 0o755)
            conf = lam.get_function_configuration(FunctionName=physical[logical])
            arns[conf["FunctionArn"]] = logical
            instances = 1 if logical in ("AuditExportFunction", "AuditIngestFunction", "NotifyFunction", "VerifyFunction") else HTTP_INSTANCES
            extra = {"AWS_ENDPOINT_URL": emu.url, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
            if logical == "VerifyFunction":
                extra["HELIX_VERIFY_STEP_BYTES"] = str(VERIFY_STEP_BYTES)
            functions[logical] = gw.Function(logical, physical[logical], conf["FunctionArn"], bootstrap,
                                             {k: str(v) for k, v in conf["Environment"]["Variables"].items()}, conf["Timeout"], instances,
                                             os.path.join(work, "logs"), extra)
            started.append(functions[logical])
        routes = stackmod.routes(emu, api_id, arns)
        gateway = gw.Gateway(routes, functions, api_id)
        started.append(gateway)
        report.phase("functions running behind the gateway", f"{len(functions)} functions, {len(routes)} routes, {gateway.url}")
        for _ in range(100):
            if Api(gateway.url, None).call("GET", "/healthz", token=False)[0] == 200:
                break
            time.sleep(0.1)

        # The first admin token, as docs/deploy.md bootstraps it (straight into the stack's tables).
        helix = args.helix or os.path.join(args.target_dir, args.profile, "helix")
        env_tables = lam.get_function_configuration(FunctionName=physical["TokenFunction"])["Environment"]["Variables"]
        op_env = dict(os.environ, HELIX_META_BACKEND="dynamodb", HELIX_TABLE=env_tables["HELIX_TABLE"],
                      HELIX_AUDIT_TABLE=env_tables["HELIX_AUDIT_TABLE"], AWS_ENDPOINT_URL=emu.url, AWS_REGION=REGION,
                      AWS_ACCESS_KEY_ID="operator", AWS_SECRET_ACCESS_KEY="operator", HELIX_LOG_FORMAT="json")
        out = subprocess.run([helix, "teams", "token", "--user", "ops-bootstrap", "--role", "admin", "--workspace-id", "*", "--ttl", "1h"],
                             env=op_env, capture_output=True, text=True)
        if out.returncode != 0:
            raise stackmod.Failure(f"bootstrap token: {out.stderr[-800:]}")
        api = Api(gateway.url, out.stdout.strip().splitlines()[-1])
        if args.latency:
            import latency
            env = latency.serve_env([f["Environment"]["Variables"] for f in lam.list_functions()["Functions"]
                                     if f["FunctionName"] in physical.values()], emu.url, REGION)
            latency.run(gateway.url, api.token, helix, env, args.latency, args.latency_out, os.path.join(work, "logs"), args.profile,
                        emu.recorder)
            return

        for w in probe_routes(api, routes):
            report.fail(w)
        report.phase("every route reaches a function that serves it", f"{len(routes)} routes")
        verify_bus_queue(emu, physical)
        client_env = {k: v for k, v in os.environ.items() if not k.startswith(("HELIX_", "AWS_"))}
        drive(api, helix, client_env, report, functions)
        answered = {k for k, _, _ in gateway.answers}
        unreached = sorted(set(routes) - answered)
        if unreached:
            report.fail(f"routes never exercised: {unreached}")
        errors = [(k, s) for k, _, s in gateway.answers if s >= 500]
        if errors:
            report.fail(f"5xx answers through the gateway: {errors[:10]}")
        dead = [f.logical for f in functions.values() if not f.alive()]
        if dead:
            report.fail(f"function processes exited: {dead} (logs in {work}/logs)")
        report.phase("routes exercised", f"{len(answered)} of {len(routes)}, {len(gateway.answers)} requests")

        ids = drive_notify(emu, report, functions, physical, template)
        for f in webhookmod.check(hook, ids or []):
            report.fail(f)
        report.phase("signed webhooks from notify", f"{len(hook.got)} deliveries of {len(set(ids or []))} events, each signed with the key read from {webhookmod.SECRET_NAME}")
        for f in stackmod.console_downloads(gateway.url, emu, physical, STACK_PARAMS["ConsoleOrigin"]):
            report.fail(f)
        report.phase("console downloads from the bucket", f"connect-src names the bucket's presigned origin; CORS lets {STACK_PARAMS['ConsoleOrigin']} read, no other origin")

        # Every AWS call the functions made, evaluated offline.
        calls = [c for c in emu.recorder.calls if c.akid in functions]
        emu.recorder.enabled = False
        evaluate(report, emu, template, physical, resolver, calls)

        # Prove the checks can fail.
        mutations(report, emu, template, physical, resolver, calls, api, routes, gateway)
    except stackmod.Failure as e:
        report.fail(str(e))
    finally:
        for s in started:
            s.stop()
        emu.stop()
    took = time.monotonic() - report.started
    if report.failures:
        print(f"\nrehearse: FAILED in {took:.0f} s ({len(report.failures)} problems; work dir {work}):")
        for f in report.failures:
            print(f"  - {f}")
        sys.exit(1)
    print(f"\nrehearse: passed in {took:.0f} s")


def tables_info(emu, template, physical):
    ddb = emu.client("dynamodb")
    hash_keys, index_keys, policies = {}, {}, {}
    for logical, res in template["Resources"].items():
        if res["Type"] != "AWS::DynamoDB::Table":
            continue
        desc = ddb.describe_table(TableName=physical[logical])["Table"]
        hk = lambda schema: next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH")  # noqa: E731
        hash_keys[desc["TableName"]] = hk(desc["KeySchema"])
        for g in desc.get("GlobalSecondaryIndexes", []):
            index_keys[(desc["TableName"], g["IndexName"])] = hk(g["KeySchema"])
        rp = res["Properties"].get("ResourcePolicy")
        if rp:
            doc = json.loads(ddb.get_resource_policy(ResourceArn=desc["TableArn"])["Policy"])
            policies[desc["TableArn"]] = policy._list(doc["Statement"])
    return hash_keys, index_keys, policies


def evaluator_for(emu, template, physical, resolver, bucket_policy=None, roles=None):
    hash_keys, index_keys, table_policies = tables_info(emu, template, physical)
    bucket = physical["BlobBucket"]
    if bucket_policy is None:
        bucket_policy = policy._list(stackmod.POLICIES[bucket]["Statement"])
    roles = roles if roles is not None else role_statements(emu, template, physical)
    return policy.Mapper(hash_keys, index_keys), policy.Evaluator(roles, f"arn:aws:s3:::{bucket}", bucket_policy, table_policies)


def judge(mapper, ev, calls):
    denied = []
    for c in calls:
        try:
            reqs = mapper.map(c.akid, c)
        except ValueError as e:  # a call the evaluator cannot judge is a failure, never a pass
            denied.append(f"{c.akid}: {c.method} {c.path} {c.target}: {e}")
            continue
        for req in reqs:
            try:
                why = ev.decide(req)
            except ValueError as e:
                why = str(e)
            if why:
                denied.append(f"{req!r}: {why}")
    return sorted(set(denied))


def unused(ev, physical):
    allowed = read_list("unused-grants.txt")
    out = []
    for who, i, action, resource in ev.grants():
        if (who, i, action, resource) in ev.used:
            continue
        cond = ev.roles[who][i].get("Condition")
        entry = f"{who} {action} {logical_form(resource, physical)}" + (f" if {json.dumps(cond, sort_keys=True)}" if cond else "")
        if entry not in allowed:
            out.append(entry)
    return sorted(set(out))


NEGATIVE = [
    # (function, action, resource template, context): calls no function may make.
    ("PublishFunction", "dynamodb:PutItem", "meta", {"dynamodb:LeadingKeys": ["TOKEN#forged"]}),
    ("PublishFunction", "dynamodb:PutItem", "meta", {"dynamodb:LeadingKeys": ["GOV#forged"]}),
    ("PublishFunction", "kms:Sign", "key", {}),
    ("PublishFunction", "s3:DeleteObject", "blobs/sha256:x", {}),
    ("PublishFunction", "s3:PutObject", "blobs/sha256:x", {"s3:ObjectCreationOperation": "true"}),
    ("FetchFunction", "s3:PutObject", "blobs/sha256:x", {"s3:ObjectCreationOperation": "true", "s3:if-none-match": "*"}),
    ("FetchFunction", "kms:Sign", "key", {}),
    ("TokenFunction", "kms:Sign", "key", {}),
    ("TokenFunction", "s3:GetObject", "blobs/sha256:x", {}),
    ("WaiveFunction", "dynamodb:PutItem", "meta", {"dynamodb:LeadingKeys": ["WS#x"]}),
    ("WaiveFunction", "dynamodb:UpdateItem", "audit", {"dynamodb:LeadingKeys": ["x"]}),
    ("WaiveFunction", "s3:PutObject", "audit/x", {"s3:ObjectCreationOperation": "true", "s3:if-none-match": "*"}),
    ("AuditExportFunction", "dynamodb:DeleteItem", "audit", {"dynamodb:LeadingKeys": ["x"]}),
    ("AuditExportFunction", "s3:PutObject", "audit/x", {"s3:ObjectCreationOperation": "true"}),
    ("AuditExportFunction", "s3:DeleteObject", "audit/x", {}),
    ("HealthFunction", "dynamodb:PutItem", "meta", {"dynamodb:LeadingKeys": ["SUSPENDED"]}),
    ("AuditFunction", "s3:GetObject", "blobs/sha256:x", {}),
    ("MetricsFunction", "dynamodb:Query", "audit", {"dynamodb:LeadingKeys": ["*"]}),
    ("NotifyFunction", "dynamodb:PutItem", "audit", {"dynamodb:LeadingKeys": ["x"]}),
    ("NotifyFunction", "dynamodb:Query", "audit", {"dynamodb:LeadingKeys": ["x"]}),
    ("NotifyFunction", "kms:Sign", "key", {}),
    ("NotifyFunction", "secretsmanager:GetSecretValue", "another-secret", {}),
    ("NotifyFunction", "secretsmanager:PutSecretValue", "webhook-secret", {}),
    ("PublishFunction", "secretsmanager:GetSecretValue", "webhook-secret", {}),
]


def negative_controls(ev, physical):
    key_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{physical['SigningKey']}" if not physical["SigningKey"].startswith("arn:") else physical["SigningKey"]
    arns = {"meta": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{physical['MetaTable']}",
            "audit": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{physical['AuditTable']}", "key": key_arn,
            "webhook-secret": STACK_PARAMS["WebhookSecretArn"],
            "another-secret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:another-AbCdEf"}
    allowed = []
    for who, action, res, ctx in NEGATIVE:
        arn = arns.get(res) or f"arn:aws:s3:::{physical['BlobBucket']}/{res}"
        req = policy.Request(who, action, arn, dict(ctx, **({"aws:SecureTransport": "true"} if action.startswith("s3:") else {})), "negative control")
        if ev.decide(req, mark=False) is None:
            allowed.append(repr(req))
    return allowed


def evaluate(report, emu, template, physical, resolver, calls):
    mapper, ev = evaluator_for(emu, template, physical, resolver)
    denied = judge(mapper, ev, calls)
    for d in denied:
        report.fail(f"denied as AWS would deny it: {d}")
    for u in unused(ev, physical):
        report.fail(f"unused grant (use it, drop it, or list it with a reason in infra/rehearse/unused-grants.txt): {u}")
    for n in negative_controls(ev, physical):
        report.fail(f"negative control allowed: {n}")
    by_fn, by_op = {}, {}
    for c in calls:
        by_fn[c.akid] = by_fn.get(c.akid, 0) + 1
        try:
            reqs = mapper.map(c.akid, c)
        except ValueError:
            continue
        for req in reqs:
            k = f"{c.akid} {req.what} {req.action} {logical_form(req.resource, physical).split('/sha256')[0]}"
            by_op[k] = by_op.get(k, 0) + 1
    with open(os.path.join(WORK, "calls.txt"), "w") as f:
        f.write("".join(f"{n:6d} {k}\n" for k, n in sorted(by_op.items(), key=lambda kv: -kv[1])))
    report.phase("AWS calls evaluated offline", f"{len(calls)} calls ({', '.join(f'{k} {v}' for k, v in sorted(by_fn.items()))}); "
                 f"{len(denied)} denied; {len(NEGATIVE)} negative controls")


def mutations(report, emu, template, physical, resolver, calls, api, routes, gateway):
    caught = []
    # 1. A function missing a grant it uses: drop publish's S3 statement that covers blobs/.
    roles = role_statements(emu, template, physical)
    cut = copy.deepcopy(roles)
    cut["PublishFunction"] = [s for s in cut["PublishFunction"]
                              if not (s.get("Effect") == "Allow" and "s3:PutObject" in policy._list(s.get("Action", []))
                                      and any("/blobs/" in r for r in policy._list(s.get("Resource", []))))]
    mapper, ev = evaluator_for(emu, template, physical, resolver, roles=cut)
    caught.append(("a missing grant", bool(judge(mapper, ev, calls))))
    # 2. An unused grant not on the list.
    extra = copy.deepcopy(roles)
    extra["FetchFunction"].append({"Effect": "Allow", "Action": "dynamodb:DeleteItem",
                                   "Resource": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{physical['MetaTable']}"})
    mapper, ev = evaluator_for(emu, template, physical, resolver, roles=extra)
    judge(mapper, ev, calls)
    caught.append(("an unused grant", any("FetchFunction dynamodb:DeleteItem" in u for u in unused(ev, physical))))
    # 3. A second stack that collides: a log group with a fixed name.
    fixed = copy.deepcopy(template)
    fixed["Resources"]["FetchLogs"]["Properties"]["LogGroupName"] = "/helix/fetch"
    caught.append(("a colliding second stack", bool(stackmod.explicit_names(fixed, lambda s: physical_resolver(fixed, s)))))
    # 4. A route wired to the wrong function: two routes' targets swapped.
    keys = ["GET /v1/whoami", "GET /v1/audit"]
    swapped = dict(routes)
    swapped[keys[0]], swapped[keys[1]] = routes[keys[1]], routes[keys[0]]
    shadow = gw.Gateway(swapped, gateway.functions, gateway.api_id)
    wrong = probe_routes(Api(shadow.url, None), {k: swapped[k] for k in keys}, "swapped")
    shadow.stop()
    caught.append(("a route wired to the wrong function", len(wrong) == 2))
    # 5. The bucket policy before D1: PutObject into blobs/ denied whenever If-None-Match is absent.
    old = copy.deepcopy(policy._list(stackmod.POLICIES[physical["BlobBucket"]]["Statement"]))
    for s in old:
        cond = s.get("Condition", {})
        if "Bool" in cond and "s3:ObjectCreationOperation" in cond["Bool"]:
            del cond["Bool"]
    mapper, ev = evaluator_for(emu, template, physical, resolver, bucket_policy=old)
    caught.append(("a bucket policy that blocks the promote", bool(judge(mapper, ev, calls))))
    # 6. Partition-key scopes that admit nothing: every call that relied on one must now be denied.
    narrow = copy.deepcopy(roles)
    for stmts in narrow.values():
        for st in stmts:
            for op, tests in st.get("Condition", {}).items():
                if "dynamodb:LeadingKeys" in tests:
                    tests["dynamodb:LeadingKeys"] = ["NOTHING#*"]
    mapper, ev = evaluator_for(emu, template, physical, resolver, roles=narrow)
    caught.append(("a partition-key scope that admits nothing", any("LeadingKeys" in d for d in judge(mapper, ev, calls))))
    for what, ok in caught:
        if not ok:
            report.fail(f"self-test: {what} was not caught")
    report.phase("self-tests", ", ".join(f"{w}: {'caught' if ok else 'MISSED'}" for w, ok in caught))


if __name__ == "__main__":
    main()
