"""The rehearsal's chunked upload (docs/decisions.md, "Chunked uploads"): the publish function's
multipart calls on `uploads/`, made as `helix push` makes them, for the policy judge to see; then its
verification, unattended (docs/decisions.md, "Unattended verification on AWS"): the verify bus's events
delivered to VerifyFunction, no status poll advancing the job."""

import hashlib
import os
import urllib.error
import urllib.request


def chunked_upload(api, ws, pub, want, report, verify_steps):
    """A file of two parts (one of `upload_part_size`, one byte): CreateMultipartUpload, a presigned
    UploadPart with its SHA-256, ListParts when the plan is asked again; `complete` answers 202 and puts
    the first step event on the verify bus; `verify_steps()` delivers the bus's events to VerifyFunction
    until the job ends (CompleteMultipartUpload, the ranged re-hash, the promote, the plan's removal,
    each step putting the next one's event) and returns the last step's answer."""
    status = want("GET /v1/status (part size)", api.call("GET", "/v1/status"))
    part = int(status.get("upload_part_size", 0)) if isinstance(status, dict) else 0
    if part <= 0:
        report.fail(f"/v1/status has no upload_part_size: {str(status)[:300]}")
        return
    big = os.urandom(part + 1)
    pieces = [big[:part], big[part:]]
    sha = ["sha256:" + hashlib.sha256(p).hexdigest() for p in pieces]
    big_digest = "sha256:" + hashlib.sha256(big).hexdigest()
    path = f"/v1/workspaces/{ws}/uploads"
    plan = want("POST uploads (parts)", api.call("POST", path, {"digest": big_digest, "size": len(big), "part_sha256": sha}, token=pub))
    if not isinstance(plan, dict) or len(plan.get("parts", [])) != 2:
        report.fail(f"POST uploads (parts): not two parts: {str(plan)[:300]}")
        return

    def put_part(p):
        req = urllib.request.Request(p["url"], data=pieces[p["number"] - 1], method=p["method"])
        # Not urllib's default form type: moto would read the part's bytes as a form.
        req.add_header("Content-Type", "application/octet-stream")
        for k, v in p["headers"]:
            if k.lower() not in ("host", "content-length"):
                req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status
        except urllib.error.HTTPError as e:
            report.fail(f"UploadPart {p['number']}: {e.code} {e.read()[:300]}")
            return e.code

    put_part(plan["parts"][0])
    again = want("POST uploads (resume)", api.call("POST", path, {"digest": big_digest, "size": len(big), "part_sha256": sha,
                                                                  "upload_id": plan["upload_id"]}, token=pub))
    if not isinstance(again, dict) or again.get("parts_stored") != [1]:
        report.fail(f"POST uploads (resume): not part 1 stored: {str(again)[:300]}")
        return
    for p in again["parts"]:
        put_part(p)
    # Above the stack's VerifyInlineMax: 202 and the first step's event on the verify bus; VerifyFunction
    # verifies the file (ranged GetObjects of the joined upload, the job's state in the meta table's
    # VERIFY# partition) and links it, one invocation per event. No status poll is made until it ended.
    started = want("POST complete (parts)", api.call("POST", f"{path}/{big_digest}/complete", {"upload_id": plan["upload_id"]}, token=pub), (202,))
    url = started.get("status_url") if isinstance(started, dict) else None
    if not url:
        report.fail(f"POST complete (parts): no status_url: {str(started)[:300]}")
        return
    last = verify_steps()
    if not (isinstance(last, dict) and last.get("state") == "linked" and last.get("verified_bytes") == len(big)):
        report.fail(f"VerifyFunction: the job did not end linked: {str(last)[:300]}")
        return
    status, body = api.call("GET", url, token=pub)
    if status != 200 or not (isinstance(body, dict) and body.get("state") == "linked" and body.get("verified_bytes") == len(big)):
        report.fail(f"GET status (after the unattended verification): {status} {str(body)[:300]}")
    want("GET the verified blob", api.call("GET", f"/v1/workspaces/{ws}/blobs/{big_digest}", token=pub, headers={"Range": "bytes=0-0"}), (200, 206, 307))
