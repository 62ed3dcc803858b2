"""A stand-in for API Gateway (HTTP API, payload 2.0) in front of the Lambda Runtime API: each function
binary runs as Lambda runs it (polling /2018-06-01/runtime/invocation/next), with the environment
the stack resolved for it; requests are routed by the routes the stack's HTTP API holds.

Modelled limits (AWS documentation): HTTP API request payload 10 MB; a synchronous Lambda response
6 MB; the integration timeout 30 s (the functions' own Timeout is 29 s)."""

import base64
import http.server
import json
import os
import queue
import re
import subprocess
import threading
import time
import uuid

REQUEST_MAX = 10 * 1024 * 1024
RESPONSE_MAX = 6 * 1024 * 1024
INTEGRATION_TIMEOUT = 30


class Invocation:
    def __init__(self, event, deadline_s):
        self.id = str(uuid.uuid4())
        self.event = event
        self.deadline_ms = int((time.time() + deadline_s) * 1000)
        self.done = threading.Event()
        self.response = None
        self.error = None


class RuntimeApi:
    """The Lambda Runtime API for one function (every instance of it polls the same queue)."""

    def __init__(self, name, arn):
        self.name, self.arn = name, arn
        self.pending = queue.Queue()
        self.running = {}
        self.init_errors = []
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle on, the second waits for the
            # client's delayed ACK (~40 ms a request).
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def reply(self, code, body=b"", headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    return self.reply(404)
                inv = host.pending.get()
                host.running[inv.id] = inv
                self.reply(200, json.dumps(inv.event).encode(), [
                    ("Lambda-Runtime-Aws-Request-Id", inv.id),
                    ("Lambda-Runtime-Deadline-Ms", str(inv.deadline_ms)),
                    ("Lambda-Runtime-Invoked-Function-Arn", host.arn),
                    ("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000;Sampled=0"),
                    ("Content-Type", "application/json")])

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                m = re.match(r".*/runtime/invocation/([^/]+)/(response|error)$", self.path)
                if m:
                    inv = host.running.pop(m.group(1), None)
                    if inv is not None:
                        if m.group(2) == "response":
                            inv.response = body
                        else:
                            inv.error = body.decode(errors="replace") or "error"
                        inv.done.set()
                    return self.reply(202, b"{}")
                if self.path.endswith("/runtime/init/error"):
                    host.init_errors.append(body.decode(errors="replace"))
                    return self.reply(202, b"{}")
                self.reply(404)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def invoke(self, event, timeout):
        inv = Invocation(event, timeout)
        self.pending.put(inv)
        if not inv.done.wait(timeout):
            raise TimeoutError(f"{self.name}: no answer in {timeout} s")
        if inv.error is not None:
            raise RuntimeError(f"{self.name}: function error: {inv.error[:500]}")
        return inv.response


class Function:
    def __init__(self, logical, physical, arn, bootstrap, environment, timeout, instances, log_dir, extra_env):
        self.logical, self.timeout = logical, timeout
        self.api = RuntimeApi(logical, arn)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **environment, **extra_env,
               "AWS_LAMBDA_RUNTIME_API": self.api.address, "AWS_LAMBDA_FUNCTION_NAME": physical,
               "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
               "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{physical}", "_HANDLER": "bootstrap",
               "LAMBDA_TASK_ROOT": os.path.dirname(bootstrap),
               # Each function signs with its own access key id: the recorder knows who made a call.
               "AWS_ACCESS_KEY_ID": logical, "AWS_SECRET_ACCESS_KEY": "rehearsal", "AWS_SESSION_TOKEN": "rehearsal"}
        self.log = open(os.path.join(log_dir, f"{logical}.log"), "ab")
        self.procs = [subprocess.Popen([bootstrap], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                       cwd=os.path.dirname(bootstrap)) for _ in range(instances)]

    def alive(self):
        return all(p.poll() is None for p in self.procs)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        self.api.server.shutdown()
        self.log.close()


def _pattern(route_path):
    parts = []
    for seg in route_path.strip("/").split("/"):
        m = re.fullmatch(r"\{(\w+)(\+?)\}", seg)
        # A greedy variable ({name+}, the last segment) takes the rest of the path, slashes included.
        parts.append(f"(?P<{m.group(1)}>{'.+' if m.group(2) else '[^/]+'})" if m else re.escape(seg))
    return re.compile("^/" + "/".join(parts) + "$")


TEXT = re.compile(r"^(text/|application/(json|problem\+json|x-www-form-urlencoded|yaml))")


class Gateway:
    def __init__(self, routes, functions, api_id):
        """routes: route key ("GET /v1/x/{id}") -> function logical id; functions: logical -> Function."""
        self.table = []
        for key, fn in routes.items():
            method, path = key.split(" ", 1)
            self.table.append((method, path.count("{"), _pattern(path), key, fn))
        self.table.sort(key=lambda r: r[1])  # the most specific (fewest parameters) first
        self.functions, self.api_id = functions, api_id
        self.answers = []  # (route key, function, status)
        gw = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle on, the second waits for the
            # client's delayed ACK (~40 ms a request).
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def handle_any(self):
                gw.handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = handle_any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def match(self, method, path):
        for m, _, pat, key, fn in self.table:
            if m == method and (found := pat.match(path)):
                return key, fn, found.groupdict()
        return None

    @staticmethod
    def send(h, status, body=b"", headers=(), head=False):
        h.send_response(status)
        names = set()
        for k, v in headers:
            h.send_header(k, v)
            names.add(k.lower())
        if "content-length" not in names:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def handle(self, h):
        raw_path, _, raw_query = h.path.partition("?")
        length = int(h.headers.get("Content-Length", 0) or 0)
        if length > REQUEST_MAX:
            return self.send(h, 413, b'{"message":"Request Entity Too Large"}', [("Content-Type", "application/json")])
        body = h.rfile.read(length) if length else b""
        import urllib.parse
        path = urllib.parse.unquote(raw_path) if "%2F" not in raw_path.upper() else raw_path
        found = self.match(h.command, path)
        if found is None:
            return self.send(h, 404, b'{"message":"Not Found"}', [("Content-Type", "application/json")], h.command == "HEAD")
        key, fn, params = found
        headers, cookies = {}, []
        for k, v in h.headers.items():
            if k.lower() == "cookie":
                cookies += [c.strip() for c in v.split(";")]
            else:
                headers[k.lower()] = f"{headers[k.lower()]},{v}" if k.lower() in headers else v
        headers.setdefault("x-forwarded-proto", "https")
        query = {}
        for k, v in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
            query[k] = f"{query[k]},{v}" if k in query else v
        now = time.time()
        binary = bool(body) and not TEXT.match(headers.get("content-type", ""))
        event = {
            "version": "2.0", "routeKey": key, "rawPath": raw_path, "rawQueryString": raw_query,
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012", "apiId": self.api_id,
                "domainName": f"{self.api_id}.execute-api.us-east-1.amazonaws.com", "domainPrefix": self.api_id,
                "http": {"method": h.command, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                         "userAgent": headers.get("user-agent", "")},
                "requestId": uuid.uuid4().hex[:16], "routeKey": key, "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)), "timeEpoch": int(now * 1000)},
            "isBase64Encoded": binary,
        }
        if cookies:
            event["cookies"] = cookies
        if query:
            event["queryStringParameters"] = query
        if params:
            event["pathParameters"] = {k: urllib.parse.unquote(v) for k, v in params.items()}
        if body:
            event["body"] = base64.b64encode(body).decode() if binary else body.decode()
        try:
            raw = self.functions[fn].api.invoke(event, INTEGRATION_TIMEOUT)
        except TimeoutError:
            self.answers.append((key, fn, 504))
            return self.send(h, 504, b'{"message":"Service Unavailable"}', [("Content-Type", "application/json")])
        except RuntimeError:
            self.answers.append((key, fn, 500))
            return self.send(h, 500, b'{"message":"Internal Server Error"}', [("Content-Type", "application/json")])
        if len(raw) > RESPONSE_MAX:
            self.answers.append((key, fn, 502))
            return self.send(h, 502, b'{"message":"Internal Server Error"}', [("Content-Type", "application/json")])
        out = json.loads(raw)
        status = int(out.get("statusCode", 200))
        out_body = out.get("body") or ""
        out_body = base64.b64decode(out_body) if out.get("isBase64Encoded") else out_body.encode()
        hdrs = list((out.get("headers") or {}).items())
        for k, vs in (out.get("multiValueHeaders") or {}).items():
            hdrs += [(k, v) for v in vs]
        hdrs += [("Set-Cookie", c) for c in out.get("cookies") or []]
        self.answers.append((key, fn, status))
        self.send(h, status, out_body, hdrs, h.command == "HEAD")

    def stop(self):
        self.server.shutdown()
