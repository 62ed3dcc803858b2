"""The rehearsal's emulator: the project's moto (localstack/emulator.py, DynamoDB isolated) in this
process, with CloudFormation, two fixes for moto bugs that would stop the stack from being usable, and
a recorder in front of every request (the calls the functions make, evaluated afterwards in policy.py).

moto gaps worked around (documented in docs/decisions.md, "Deploy rehearsal"):
- its CloudFormation has no AWS::Lambda::Alias, and a Lambda permission on an alias then fails the
  whole stack (KeyError): such a permission is skipped; the alias is created through the Lambda API;
- a CloudFormation-created AWS::KMS::Key always becomes SYMMETRIC_DEFAULT/ENCRYPT_DECRYPT, and its
  KeyPolicy (an object) breaks every later KMS call on the key with a 500: the key is created with the
  template's KeySpec, KeyUsage and policy (as JSON text).
"""

import io
import json
import os
import socket
import sys
import threading
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "localstack"))

# moto's server answers every request with a permissive CORS header unless told not to; the rehearsal
# checks the bucket's own CORS rule (stack.console_downloads), as S3 applies it.
os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "1"
import emulator as project_emulator  # noqa: E402  (localstack/emulator.py)
from moto.kms import models as kms_models  # noqa: E402
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402


def _key_from_cloudformation(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    backend = kms_models.kms_backends[account_id][region_name]
    props = cloudformation_json["Properties"]
    policy = props.get("KeyPolicy")
    key = backend.create_key(
        policy=json.dumps(policy) if isinstance(policy, dict) else policy,
        key_usage=props.get("KeyUsage", "ENCRYPT_DECRYPT"),
        key_spec=props.get("KeySpec", "SYMMETRIC_DEFAULT"),
        description=props.get("Description"),
        tags=props.get("Tags", []),
    )
    key.enabled = props.get("Enabled", True)
    return key


kms_models.Key.create_from_cloudformation_json = classmethod(_key_from_cloudformation)

from moto.awslambda import models as lambda_models  # noqa: E402

_permission_from_cloudformation = lambda_models.Permission.create_from_cloudformation_json.__func__


def _permission_tolerating_aliases(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    # moto's CloudFormation has no AWS::Lambda::Alias: a permission on the `live` alias arrives without a
    # FunctionName. The alias is created afterwards (stack.apply_skipped); the gateway stand-in invokes
    # the functions itself, so the permission's statement is not needed to run them.
    if not cloudformation_json.get("Properties", {}).get("FunctionName"):
        return lambda_models.Permission(region=region_name)
    return _permission_from_cloudformation(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)


lambda_models.Permission.create_from_cloudformation_json = classmethod(_permission_tolerating_aliases)

from moto.events import models as events_models  # noqa: E402

_rule_from_cloudformation = events_models.Rule.create_from_cloudformation_json.__func__


def _rule_tolerating_aliases(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    # The same for an EventBridge rule whose target is the `live` alias (VerifyFunction's Step event): the
    # target arrives without an Arn. The rule is created without it (moto's PutEvents would fail on a Lambda
    # target: it delivers only to queues, logs and buses); stack.apply_skipped checks the target.
    props = cloudformation_json.get("Properties", {})
    targets = props.get("Targets") or []
    kept = [t for t in targets if t.get("Arn")]
    if len(kept) != len(targets):
        cloudformation_json = dict(cloudformation_json, Properties=dict(props, Targets=kept))
    return _rule_from_cloudformation(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)


events_models.Rule.create_from_cloudformation_json = classmethod(_rule_tolerating_aliases)


class Call:
    """One request as AWS would see it: who signed it, what, and the parts policies look at."""

    __slots__ = ("akid", "method", "host", "path", "query", "headers", "body", "status")

    def __init__(self, akid, method, host, path, query, headers, body):
        self.akid, self.method, self.host, self.path = akid, method, host, path
        self.query, self.headers, self.body, self.status = query, headers, body, None

    @property
    def target(self):
        return self.headers.get("x-amz-target", "")


def _access_key(environ, query):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in auth:
        return auth.split("Credential=", 1)[1].split("/", 1)[0]
    cred = query.get("X-Amz-Credential", [""])[0]  # a presigned URL: the signer's key
    return cred.split("/", 1)[0] if cred else ""


class Recorder:
    """WSGI middleware: keeps every request (signer, method, path, query, headers, JSON body) and its
    status. Bodies other than JSON (object bytes) are not kept."""

    def __init__(self, app):
        self.app = app
        self.calls = []
        self.lock = threading.Lock()
        self.enabled = True

    def __call__(self, environ, start_response):
        if not self.enabled or environ.get("PATH_INFO", "").startswith("/moto-api"):
            return self.app(environ, start_response)
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        body = None
        if "x-amz-target" in headers and environ.get("CONTENT_LENGTH"):
            raw = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
            environ["wsgi.input"] = io.BytesIO(raw)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        call = Call(_access_key(environ, query), environ["REQUEST_METHOD"], headers.get("host", ""),
                    environ.get("PATH_INFO", ""), query, headers, body)  # WSGI has decoded the path once

        def recording(status, hdrs, exc_info=None):
            call.status = int(status.split(" ", 1)[0])
            return start_response(status, hdrs, exc_info)

        with self.lock:
            self.calls.append(call)
        return self.app(environ, recording)


class Emulator:
    def __init__(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        os.environ["MOTO_PORT"] = str(self.port)
        self.recorder = Recorder(project_emulator.IsolatedDynamoDB(project_emulator.ListPartsRoot(DomainDispatcherApplication(create_backend_app))))
        self.server = make_server("127.0.0.1", self.port, self.recorder, threaded=True)
        self.server.RequestHandlerClass.log_request = lambda *a, **k: None
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, service, akid="rehearsal"):
        import boto3
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, aws_access_key_id=akid,
                            aws_secret_access_key="rehearsal")

    def stop(self):
        self.server.shutdown()


REGION = "us-east-1"
ACCOUNT = "123456789012"
