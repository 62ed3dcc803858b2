//! Lambda conformance: each function *binary* runs as a real process against the Runtime API
//! emulator (crate::runtime_api), with the AWS adapters on the emulator, and answers real-shaped
//! API Gateway v2 events. This proves the binaries work as Lambdas, not only as libraries.

use std::time::Duration;

use helix_core::domain::Role;
use serde_json::{Value, json};

use crate::runtime_api::{FunctionProcess, Outcome, RuntimeApi, apigw_event, fixture, function_binaries};
use crate::{Backend, TestEnv};

const PLACEHOLDER: &str = "hlx_EXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPL";
const INIT_TIMEOUT: Duration = Duration::from_secs(20);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A function binary started against its own Runtime API, with the test environment's variables.
async fn start(env: &TestEnv, function: &str, extra: &[(&str, &str)]) -> (RuntimeApi, FunctionProcess) {
    let mut vars = env.lambda_env();
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    start_with(function, &vars).await
}

async fn start_with(function: &str, vars: &[(String, String)]) -> (RuntimeApi, FunctionProcess) {
    let dir = tokio::task::spawn_blocking(|| function_binaries().clone()).await.unwrap();
    let api = RuntimeApi::start().await;
    let process = FunctionProcess::spawn(&dir.join(function), &[], &api, vars);
    (api, process)
}

async fn ready(api: &RuntimeApi, process: &FunctionProcess, function: &str) {
    if api.first_poll(INIT_TIMEOUT).await.is_none() {
        panic!("{function}: never polled the Runtime API; output:\n{}", process.output());
    }
}

/// The API Gateway response a function posted, or a panic with its output.
async fn call(api: &RuntimeApi, process: &FunctionProcess, event: &Value) -> Value {
    match api.invoke(event, CALL_TIMEOUT).await {
        Outcome::Response(r) => r,
        Outcome::Error(e) => panic!("function reported an error: {e}\noutput:\n{}", process.output()),
    }
}

fn body_json(resp: &Value) -> Value {
    let body = resp["body"].as_str().unwrap_or_else(|| panic!("no body: {resp}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {resp}"))
}

pub async fn function_binaries_serve_api_gateway_events_as_lambdas(b: Backend) {
    assert_eq!(b, Backend::Emulator, "the binaries run in Lambda mode: AWS adapters only");
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let admin = env.token(Role::Admin, "*").await;

    // Start them all at once: each polls its own Runtime API.
    let mut running = Vec::new();
    for f in crate::runtime_api::http_functions() {
        // fetch with a tiny inline limit, so the 3-byte fixture blob is served by a presigned redirect.
        let extra: &[(&str, &str)] = if f == "fetch" { &[("HELIX_INLINE_MAX", "2")] } else { &[] };
        let (api, process) = start(&env, f, extra).await;
        running.push((f, api, process));
    }
    for (f, api, process) in &running {
        ready(api, process, f).await;
    }
    let get = |name: &str| running.iter().find(|(f, _, _)| *f == name).map(|(_, a, p)| (a, p)).unwrap();

    // health: liveness, readiness with every dependency reached over the network.
    let (api, p) = get("health");
    let r = call(api, p, &apigw_event("GET", "/healthz", "/healthz", "", None)).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    let r = call(api, p, &apigw_event("GET", "/readyz", "/readyz", "", None)).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    let readiness = body_json(&r);
    let deps = readiness["dependencies"].as_array().unwrap();
    assert_eq!(deps.len(), 4, "{readiness}");
    assert!(deps.iter().all(|d| d["ok"] == true), "every dependency reached: {readiness}");

    // publish: the put-blob fixture as shipped (unknown token), then with a real one.
    let (api, p) = get("publish");
    let put = fixture("apigw-http-v2-put-blob.json");
    let r = call(api, p, &put).await;
    assert_eq!(r["statusCode"], 401, "{r}");
    assert_eq!(r["headers"]["content-type"], "application/problem+json");
    assert_eq!(body_json(&r)["reason"], "token_invalid");
    let put: Value = serde_json::from_str(&put.to_string().replace(PLACEHOLDER, &publisher)).unwrap();
    let r = call(api, p, &put).await;
    assert_eq!(r["statusCode"], 201, "{r}");
    assert_eq!(env.stored_objects().await, 1, "the object is in the emulator's bucket");
    let events = env.blob_events("team-a").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].request_id, "JKJaYnPLvHcESHB=", "API Gateway's request id reaches the audit event");
    let r = call(api, p, &put).await;
    assert_eq!(r["statusCode"], 200, "a second put of the same bytes: {r}");

    // fetch: inline bytes come back base64-encoded, as API Gateway expects binary bodies.
    let (api, p) = get("fetch");
    let digest = put["pathParameters"]["digest"].as_str().unwrap().to_owned();
    let path = format!("/v1/workspaces/team-a/blobs/{digest}");
    let route = "/v1/workspaces/{ws}/blobs/{digest}";
    let get_fixture: Value =
        serde_json::from_str(&fixture("apigw-http-v2-get-blob.json").to_string().replace(PLACEHOLDER, &publisher))
            .unwrap();
    let r = call(api, p, &get_fixture).await;
    assert_eq!(r["statusCode"], 307, "larger than HELIX_INLINE_MAX (2 bytes here): {r}");
    let location = r["headers"]["location"].as_str().unwrap();
    assert!(location.starts_with(&env.aws.as_ref().unwrap().endpoint), "presigned on the emulator: {location}");
    let r = call(api, p, &apigw_event("GET", route, "/v1/workspaces/Team_A/blobs/x", "", Some(&publisher))).await;
    assert_eq!(r["statusCode"], 400, "{r}");
    // Within the limit, inline: binary bodies go back base64-encoded, as API Gateway expects.
    let (api_f, p_f) = start(&env, "fetch", &[]).await;
    ready(&api_f, &p_f, "fetch").await;
    let r = call(&api_f, &p_f, &apigw_event("GET", route, &path, "", Some(&publisher))).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(r["isBase64Encoded"], true, "{r}");
    assert_eq!(r["body"], "Zm9v", "the bytes of 'foo'");

    // token: whoami for the admin, then an issue that lands in DynamoDB with its audit event.
    let (api, p) = get("token");
    let r = call(api, p, &apigw_event("GET", "/v1/whoami", "/v1/whoami", "", Some(&admin))).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(body_json(&r)["role"], "admin");
    let mut issue = apigw_event("POST", "/v1/tokens", "/v1/tokens", "", Some(&admin));
    issue["headers"]["content-type"] = json!("application/json");
    issue["body"] = json!(json!({"user": "ci-bot", "role": "viewer", "workspace_id": "team-a"}).to_string());
    issue["isBase64Encoded"] = json!(false);
    let r = call(api, p, &issue).await;
    assert_eq!(r["statusCode"], 201, "{r}");
    let secret = body_json(&r)["token"].as_str().unwrap().to_owned();
    let r = call(api, p, &apigw_event("GET", "/v1/whoami", "/v1/whoami", "", Some(&secret))).await;
    assert_eq!(body_json(&r)["user"], "ci-bot", "{r}");

    // waive: the public key receipts are verified with, from KMS, the same the registry signs with.
    let (api_w, p_w) = get("waive");
    let route = "/v1/governance/public-key";
    let r = call(api_w, p_w, &apigw_event("GET", route, route, "", None)).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    let kms_key = env.app.signer.public_key().await.unwrap();
    assert_eq!(body_json(&r)["key_id"], kms_key.key_id.as_str());

    // The official export through waive: proof URLs on API Gateway's own domain, served by fetch
    // without a token (the blob "foo" and its manifest inline, no store header).
    let version = "/v1/workspaces/team-a/bundles/m/versions/1";
    let manifest = json!({"schema": "helix.bundle.v1", "name": "m", "version": "1",
                          "files": [{"path": "foo", "digest": digest, "size": 3}]});
    let registered = env.http.put(env.url(version)).bearer_auth(&publisher).json(&manifest).send().await.unwrap();
    assert_eq!(registered.status(), 201);
    let approver = env.token_of("grace", Role::Approver, "team-a").await;
    let approved = env.http.post(env.url(&format!("{version}/approve"))).bearer_auth(&approver).send().await.unwrap();
    assert_eq!(approved.status(), 201);
    let route = "/v1/workspaces/{ws}/bundles/{name}/versions/{version}/export";
    let export = apigw_event("POST", route, &format!("{version}/export"), "", Some(&publisher));
    let r = call(api_w, p_w, &export).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    let url = body_json(&r)["proof"]["files"][0]["url"].as_str().unwrap().to_owned();
    let (path, query) = url
        .strip_prefix("https://abc123.execute-api.eu-west-1.amazonaws.com")
        .and_then(|u| u.split_once('?'))
        .unwrap_or_else(|| panic!("a proof URL on the API's domain: {url}"));
    let r = call(&api_f, &p_f, &apigw_event("GET", "/v1/proofs/{ws}/{digest}", path, query, None)).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(r["body"], "Zm9v", "the bytes of 'foo'");
    assert!(r["headers"].get("last-modified").is_none(), "{r}");
    let forged = query.replace("exp=", "exp=1");
    let r = call(&api_f, &p_f, &apigw_event("GET", "/v1/proofs/{ws}/{digest}", path, &forged, None)).await;
    assert_eq!((r["statusCode"].as_u64(), body_json(&r)["reason"].as_str()), (Some(403), Some("proof_invalid")), "{r}");

    // audit: team-a's trail, with the publisher's link in it, read through the table.
    let (api_a, p_a) = get("audit");
    let mut search = apigw_event("GET", "/v1/audit", "/v1/audit", "workspace=team-a", Some(&admin));
    search["queryStringParameters"] = json!({"workspace": "team-a"});
    let r = call(api_a, p_a, &search).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert!(body_json(&r)["events"].as_array().unwrap().iter().any(|e| e["action"] == "blob.link"), "{r}");

    // metrics: the exposition, with the publish above and the exported version's manifest counted
    // (exactly, each in its commit).
    let (api_m, p_m) = get("metrics");
    let r = call(api_m, p_m, &apigw_event("GET", "/metrics", "/metrics", "", None)).await;
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(r["headers"]["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        r["body"].as_str().unwrap().contains("\nhelix_blobs 2\n"),
        "the publish's link and the manifest's, counted in their commits: {r}"
    );

    // An event that is not an API Gateway request is reported on /error, and the process goes on.
    match api.invoke(&json!({"not": "an api gateway event"}), CALL_TIMEOUT).await {
        Outcome::Error(e) => assert!(e["errorType"].is_string(), "{e}"),
        Outcome::Response(r) => panic!("a malformed event was answered: {r}"),
    }
    let r = call(api, p, &apigw_event("GET", "/v1/whoami", "/v1/whoami", "", Some(&admin))).await;
    assert_eq!(r["statusCode"], 200, "still serving after a bad event: {r}");

    // One JSON log line per request, carrying the Lambda request id, never the token.
    for (f, _, process) in &running {
        let out = process.output_when(|o| o.contains("\"lambda_request_id\":\"00000000-"), CALL_TIMEOUT).await;
        let lines: Vec<Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        assert!(
            lines
                .iter()
                .any(|l| l["fields"]["lambda_request_id"].as_str().is_some_and(|id| id.starts_with("00000000-"))),
            "{f}: no request log line with the Lambda request id:\n{out}"
        );
        for secret in [&publisher, &admin, &secret] {
            assert!(!out.contains(secret.as_str()), "{f}: a token reached the logs");
        }
    }
}

/// Bad configuration fails at start with one line naming the variable, before the first poll.
pub async fn function_binary_with_bad_configuration_fails_at_init_naming_the_variable(b: Backend) {
    let env = TestEnv::start(b).await;
    // The console reads no configuration (its assets are in the binary): it has nothing to refuse.
    for f in crate::runtime_api::functions().iter().filter(|f| *f != "console") {
        let (api, mut process) = start(&env, f, &[("HELIX_TABLE", "")]).await;
        let status = process.exit(INIT_TIMEOUT).await.unwrap_or_else(|| panic!("{f}: still running"));
        assert!(!status.success(), "{f}: exited 0");
        assert!(api.first_poll(Duration::from_millis(1)).await.is_none(), "{f}: polled with a bad configuration");
        let out = process.output();
        let line = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["fields"]["message"] == "init failed")
            .unwrap_or_else(|| panic!("{f}: no JSON 'init failed' line:\n{out}"));
        assert_eq!(line["level"], "ERROR");
        let error = line["fields"]["error"].as_str().unwrap();
        assert!(error.starts_with("configuration error: HELIX_TABLE:"), "{f}: the variable is named: {error}");
    }
}

/// AWS calls verify the server certificate against the compiled-in roots: a self-signed endpoint is
/// refused. Naming its certificate in SSL_CERT_FILE (the operator's explicit choice of trust store)
/// makes the same binary trust it. Run through the health binary's `/readyz` (S3 HeadBucket).
pub async fn aws_tls_verifies_certificates_and_trusts_the_host_store_for_custom_endpoints(_b: Backend) {
    let stub = crate::tls_stub::TlsStub::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("stub-ca.pem");
    std::fs::write(&ca, &stub.cert_pem).unwrap();
    let base: Vec<(String, String)> = [
        ("HELIX_S3_BUCKET", "helix-tls"),
        ("HELIX_TABLE", "helix-meta"),
        ("HELIX_AUDIT_TABLE", "helix-audit"),
        ("HELIX_KMS_KEY_ID", "alias/helix"),
        ("AWS_ENDPOINT_URL", stub.url.as_str()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let blob_store = |r: &Value| {
        let deps = body_json(r)["dependencies"].as_array().unwrap().clone();
        deps.into_iter().find(|d| d["name"] == "blob_store").unwrap()
    };
    let readyz = apigw_event("GET", "/readyz", "/readyz", "", None);

    let (api, p) = start_with("health", &base).await;
    ready(&api, &p, "health").await;
    let r = call(&api, &p, &readyz).await;
    assert_eq!(r["statusCode"], 503, "{r}");
    let dep = blob_store(&r);
    assert_eq!(dep["ok"], false, "a self-signed certificate is refused: {dep}");
    assert_eq!(dep["reason"], "blob_store_unavailable");
    assert_eq!(stub.requests(), 0, "no request got past the handshake");
    let out = p.output_when(|o| o.contains("certificate"), CALL_TIMEOUT).await;
    assert!(out.contains("certificate"), "the refusal is logged as a certificate error:\n{out}");

    let mut trusted = base.clone();
    trusted.push(("SSL_CERT_FILE".into(), ca.display().to_string()));
    let (api, p) = start_with("health", &trusted).await;
    ready(&api, &p, "health").await;
    let r = call(&api, &p, &readyz).await;
    assert_eq!(blob_store(&r)["ok"], true, "trusted through SSL_CERT_FILE: {r}\n{}", p.output());
    assert!(stub.requests() >= 1, "HeadBucket reached the endpoint over TLS");

    // A custom endpoint (an S3-compatible such as MinIO behind a private CA) is checked against the
    // host's own trust store, with no variable set: the function runs in a mount namespace whose
    // system bundle (/etc/ssl/certs/ca-certificates.crt) also holds the stub's CA.
    let host_bundle = std::fs::read_to_string(HOST_BUNDLE).expect("the host's CA bundle");
    let bundle = dir.path().join("ca-certificates.crt");
    std::fs::write(&bundle, format!("{host_bundle}\n{}", stub.cert_pem)).unwrap();
    let mount = format!("mount --bind {} {HOST_BUNDLE} && exec \"$0\"", bundle.display());
    let wrapper = ["unshare", "--map-root-user", "--mount", "sh", "-c", mount.as_str()];
    let before = stub.requests();
    let bin = tokio::task::spawn_blocking(|| function_binaries().join("health")).await.unwrap();
    let api = RuntimeApi::start().await;
    let p = FunctionProcess::spawn_via(&wrapper, &bin, &[], &api, &base);
    ready(&api, &p, "health").await;
    let r = call(&api, &p, &readyz).await;
    assert_eq!(blob_store(&r)["ok"], true, "trusted through the host store: {r}\n{}", p.output());
    assert!(stub.requests() > before);
}

/// Where Debian (and the Lambda-like hosts we test on) keep the system CA bundle.
const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The audit-export binary answers the EventBridge scheduled event (tests/fixtures) by exporting the
/// UTC day before its `time` to the bucket, signed with the KMS key; a re-run changes nothing; a day
/// that is not over is refused on /error.
pub async fn audit_export_binary_answers_the_scheduled_event(b: Backend) {
    let env = TestEnv::start(b).await;
    let (api, p) = start(&env, "audit-export", &[]).await;
    ready(&api, &p, "audit-export").await;
    // "Today" is the last day whose 00:15 run may export its previous day (settled 5 minutes after its end).
    let now = time::OffsetDateTime::now_utc();
    let today = (now - helix_core::audit_export::SETTLE).date();
    let yesterday = today.previous_day().unwrap();
    let mut scheduled = fixture("eventbridge-scheduled.json");
    scheduled["time"] = json!(format!("{}T00:15:00Z", helix_core::audit_export::day_string(today)));

    let r = match api.invoke(&scheduled, CALL_TIMEOUT).await {
        Outcome::Response(r) => r,
        Outcome::Error(e) => panic!("function reported an error: {e}\noutput:\n{}", p.output()),
    };
    assert_eq!(r["day"], helix_core::audit_export::day_string(yesterday), "{r}");
    assert_eq!(r["written"], json!(helix_core::audit_export::FILES), "{r}");
    let f = env.aws.as_ref().unwrap();
    let checkpoint_key = helix_core::audit_export::key(yesterday, "checkpoint.json");
    let stored = f.s3.get_object().bucket(&f.bucket).key(&checkpoint_key).send().await.expect("checkpoint in S3");
    let stored = stored.body.collect().await.unwrap().into_bytes();
    let kms_key = env.app.signer.public_key().await.unwrap();
    let statement = helix_core::audit_export::verify_checkpoint(&stored, &kms_key).expect("signed by the KMS key");
    assert!(statement.contains(&helix_core::audit_export::day_string(yesterday)));

    let r = call(&api, &p, &scheduled).await;
    assert_eq!(r["written"], json!([]), "a re-run writes nothing: {r}");
    assert_eq!(r["unchanged"].as_array().unwrap().len(), 3);

    let today_event = json!({"day": helix_core::audit_export::day_string(today)});
    match api.invoke(&today_event, CALL_TIMEOUT).await {
        Outcome::Error(e) => assert!(e["errorMessage"].as_str().unwrap_or_default().contains("not settled"), "{e}"),
        Outcome::Response(r) => panic!("today was exported: {r}"),
    }
    let out = p.output_when(|o| o.contains("\"message\":\"event\""), CALL_TIMEOUT).await;
    assert!(out.contains("\"message\":\"event\""), "one log line per event:\n{out}");
}

/// The console function answers API Gateway's events for its two routes with the assets `helix serve`
/// serves, the strict Content-Security-Policy on every answer, binary-safe bodies, and one JSON log
/// line per request carrying the Lambda request id. It needs no configuration; the OIDC settings, when
/// given, reach `/console/config.json` and the policy's connect-src.
pub async fn console_function_serves_the_assets_with_their_policy(b: Backend) {
    assert_eq!(b, Backend::Emulator, "a function binary, in Lambda mode");
    let (api, process) = start_with("console", &[]).await;
    ready(&api, &process, "console").await;
    let page = call(&api, &process, &apigw_event("GET", "/console", "/console", "", None)).await;
    let script = call(&api, &process, &apigw_event("GET", "/console/{asset+}", "/console/app.js", "", None)).await;
    let missing = call(&api, &process, &apigw_event("GET", "/console/{asset+}", "/console/nope.js", "", None)).await;
    let decoded = |r: &Value| {
        use base64::Engine;
        let body = r["body"].as_str().unwrap_or_default();
        if r["isBase64Encoded"] == true {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(body).unwrap()).unwrap()
        } else {
            body.to_owned()
        }
    };
    for (r, status) in [(&page, 200), (&script, 200), (&missing, 404)] {
        assert_eq!(r["statusCode"], status, "{r}");
        assert_eq!(r["headers"]["content-security-policy"], helix_core::console::CSP, "{r}");
        assert_eq!(r["headers"]["x-frame-options"], "DENY", "{r}");
    }
    assert_eq!(page["headers"]["content-type"], "text/html; charset=utf-8");
    assert!(decoded(&page).contains(r#"src="/console/app.js""#), "the page names its assets by absolute path");
    assert_eq!(decoded(&script).as_bytes(), helix_core::console::ASSETS[1].2, "app.js, byte for byte");
    let request_lines = |out: &str| {
        out.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["fields"]["message"] == "request")
            .count()
    };
    let out = process.output_when(|o| request_lines(o) >= 3, CALL_TIMEOUT).await;
    let lines: Vec<Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let requests = request_lines(&out);
    assert_eq!(requests, 3, "one request line per request:\n{out}");
    assert!(
        lines.iter().any(|l| l["fields"]["lambda_request_id"].as_str().is_some_and(|id| id.starts_with("00000000-"))),
        "{out}"
    );
    let config = call(&api, &process, &apigw_event("GET", "/console/{asset+}", "/console/config.json", "", None)).await;
    assert_eq!(decoded(&config), r#"{"oidc":null}"#, "no sign-in configured: pasted tokens only");

    // With the template's OIDC settings: the sign-in settings at /console/config.json, and the issuer's
    // origin added to connect-src (its discovery document cannot be read here: nothing listens on
    // port 9, so nothing else is added); with the bucket, the origin of its presigned GETs too.
    let vars: Vec<(String, String)> = [
        ("HELIX_OIDC_ISSUER", "http://127.0.0.1:9/realms/helix"),
        ("HELIX_OIDC_AUDIENCE", "helix"),
        ("HELIX_OIDC_CLIENT_ID", "helix-console"),
        ("HELIX_S3_BUCKET", "helix-blobs-1a2b"),
        ("HELIX_S3_ENDPOINT_URL", "http://127.0.0.1:45123"),
        ("AWS_REGION", "eu-west-1"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let (api, process) = start_with("console", &vars).await;
    ready(&api, &process, "console").await;
    let config = call(&api, &process, &apigw_event("GET", "/console/{asset+}", "/console/config.json", "", None)).await;
    let settings: Value = serde_json::from_str(&decoded(&config)).unwrap();
    assert_eq!(settings["oidc"]["client_id"], "helix-console", "{config}");
    assert_eq!(settings["oidc"]["issuer"], "http://127.0.0.1:9/realms/helix");
    let csp = config["headers"]["content-security-policy"].as_str().unwrap_or_default();
    let connect = "connect-src 'self' http://127.0.0.1:9 http://127.0.0.1:45123";
    assert_eq!(csp, helix_core::console::CSP.replace("connect-src 'self'", connect));
}

/// Who read what on AWS: the fetch binary answers reads with no audit write of its own and logs one
/// read record per read; those log lines, delivered as a CloudWatch Logs subscription event (twice:
/// delivery is at least once), make the audit-ingest binary append each read once, in the stream of
/// the workspace read.
pub async fn read_records_reach_the_audit_trail_through_the_log_subscription_once(b: Backend) {
    let env = TestEnv::start(b).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let reader = env.token_of("rita", Role::Viewer, "team-a").await;
    let outsider = env.token_of("oscar", Role::Viewer, "team-b").await;
    let admin = env.token(Role::Admin, "*").await;
    let (bytes, digest) = super::unique_blob(40);
    assert_eq!(super::api::put_blob(&env, &publisher, "team-a", &digest.to_string(), bytes).await.status(), 201);
    let (fetch_api, fetch) = start(&env, "fetch", &[]).await;
    let (ingest_api, ingest) = start(&env, "audit-ingest", &[]).await;
    ready(&fetch_api, &fetch, "fetch").await;
    ready(&ingest_api, &ingest, "audit-ingest").await;

    let path = format!("/v1/workspaces/team-a/blobs/{digest}");
    let route = "/v1/workspaces/{ws}/blobs/{digest}";
    let mut reads = Vec::new();
    for (method, token, request_id, status) in [
        ("GET", &reader, "apigw-read-get", 200),
        ("HEAD", &reader, "apigw-read-head", 200),
        ("GET", &outsider, "apigw-read-denied", 403),
    ] {
        let mut event = apigw_event(method, route, &path, "", Some(token));
        event["requestContext"]["requestId"] = json!(request_id);
        let r = call(&fetch_api, &fetch, &event).await;
        assert_eq!(r["statusCode"], status, "{r}");
        reads.push(request_id);
    }
    let searched = |action: &'static str| {
        let (env, admin) = (&env, &admin);
        async move {
            let page = super::api::get(env, admin, &format!("/v1/audit?workspace=team-a&action={action}")).await;
            page.json::<Value>().await.unwrap()["events"].as_array().unwrap().clone()
        }
    };
    assert!(searched("blob.read").await.is_empty(), "the fetch function wrote no audit event itself");

    let lines: Vec<(String, String)> = fetch
        .output()
        .lines()
        .filter(|l| l.contains("\"helix.read\""))
        .enumerate()
        .map(|(i, l)| (format!("3760{i:04}"), l.to_owned()))
        .collect();
    assert_eq!(lines.len(), 3, "one read record per read:\n{}", fetch.output());
    let delivery = helix_core::read_ingest::subscription_event("/helix/stack/fetch", &lines);
    let r = call(&ingest_api, &ingest, &delivery).await;
    assert_eq!(r["appended"], 3, "{r}");
    let r = call(&ingest_api, &ingest, &delivery).await;
    assert_eq!((r["appended"].as_u64(), r["already_appended"].as_u64()), (Some(0), Some(3)), "redelivered: {r}");

    let events = searched("blob.read").await;
    assert_eq!(events.len(), 3, "{events:#?}");
    for (id, outcome, method) in [
        ("apigw-read-get", "success", "GET"),
        ("apigw-read-head", "success", "HEAD"),
        ("apigw-read-denied", "denied", "GET"),
    ] {
        let e = events.iter().find(|e| e["request_id"] == id).unwrap_or_else(|| panic!("{id}: {events:#?}"));
        assert_eq!((e["outcome"].as_str(), e["details"]["method"].as_str()), (Some(outcome), Some(method)), "{e}");
        assert_eq!(e["entity_id"], digest.to_string());
    }
    // The outsider's refused read is team-a's: team-b's stream (its token's issue) holds no read.
    let page = super::api::get(&env, &admin, "/v1/audit?workspace=team-b&limit=1000").await.text().await.unwrap();
    assert!(!page.contains("apigw-read-") && !page.contains("blob.read"), "{page}");
}
