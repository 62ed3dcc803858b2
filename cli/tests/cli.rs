//! The `helix` binary as an operator uses it: first start prints an admin token once; `teams token`
//! writes into the same data dir while the server runs; bad configuration fails at start, naming
//! the variable.

use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn helix(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_helix"));
    cmd.env_clear().env("HELIX_DATA_DIR", data_dir).env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// Start `helix serve` on a free port; returns the process, its URL and every stdout line up to the hint.
fn serve(data_dir: &std::path::Path) -> (Serve, String, Vec<String>) {
    let mut child = helix(data_dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.starts_with("Stop with Ctrl-C") || line.contains("(existing;");
        lines.push(line);
        if done {
            break;
        }
    }
    let url = lines[0].rsplit(' ').next().unwrap().to_owned();
    (Serve(child), url, lines)
}

/// `helix teams token` into `data_dir` for workspace `demo`; the secret.
fn issue_token(data_dir: &std::path::Path, user: &str, role: &str) -> String {
    let out = helix(data_dir)
        .args(["teams", "token", "--user", user, "--role", role, "--workspace-id", "demo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn curl_status(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]).args(args).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn first_start_prints_an_admin_token_once_and_teams_token_writes_to_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url, lines) = serve(dir.path());
    let token_line = lines.iter().find(|l| l.starts_with("admin token: hlx_")).expect("admin token line");
    let admin = token_line.trim_start_matches("admin token: ");
    assert_eq!(admin.len(), 47);
    assert_eq!(curl_status(&["-H", &format!("Authorization: Bearer {admin}"), &format!("{url}/v1/status")]), "200");

    let out = helix(dir.path())
        .args(["teams", "token", "--user", "ada", "--role", "publisher", "--workspace-id", "demo", "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let publisher = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(publisher.starts_with("hlx_"));
    let digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    let auth = format!("Authorization: Bearer {publisher}");
    let blob_url = format!("{url}/v1/workspaces/demo/blobs/{digest}");
    assert_eq!(curl_status(&["-X", "PUT", "-H", &auth, "--data-binary", "foo", &blob_url]), "201");
    assert_eq!(
        curl_status(&[
            "-X",
            "PUT",
            "-H",
            &auth,
            "--data-binary",
            "foo",
            &format!("{url}/v1/workspaces/other/blobs/{digest}")
        ]),
        "403"
    );

    let list = helix(dir.path()).args(["teams", "list"]).output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.contains("ada") && list.contains("active"), "{list}");
    assert!(!list.contains(&publisher) && !list.contains(admin), "no secret in the listing");
    let sha = helix_core::domain::BearerToken::parse(&publisher).unwrap().sha256();
    let out = helix(dir.path()).args(["teams", "revoke", "--sha256", &sha]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("revoked tok_"));
    assert_eq!(
        curl_status(&["-X", "PUT", "-H", &auth, "--data-binary", "foo", &blob_url]),
        "401",
        "refused on its next request"
    );
    drop(server);

    let (_server, _, lines) = serve(dir.path());
    assert!(!lines.iter().any(|l| l.contains("hlx_")), "a restart prints no token: {lines:?}");
}

/// `helix teams list` aligns its columns to the widest cell, and a reader that stops early (`| head -1`)
/// ends it quietly: exit 0, no panic.
#[test]
fn teams_list_aligns_its_columns_and_survives_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    for user in ["ada", "a-very-long-user-name-from-the-idp"] {
        let out = helix(dir.path())
            .args(["teams", "token", "--user", user, "--role", "publisher", "--workspace-id", "demo"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let list = helix(dir.path()).args(["teams", "list"]).output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    let sha_column: Vec<usize> = lines.iter().map(|l| l.rfind(' ').unwrap()).collect();
    assert!(sha_column.iter().all(|c| *c == sha_column[0]), "the last column starts at one offset:\n{list}");

    // Many rows into a pipe whose reader has gone: the write fails with EPIPE, not a panic.
    for i in 0..20 {
        let user = format!("user-{i}");
        let out = helix(dir.path())
            .args(["teams", "token", "--user", &user, "--role", "viewer", "--workspace-id", "demo"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let mut child =
        helix(dir.path()).args(["teams", "list"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn bad_configuration_fails_at_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = helix(dir.path()).env("HELIX_GOVERNANCE_MODE", "sometimes").args(["serve"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("HELIX_GOVERNANCE_MODE"), "{err}");
    let out = helix(dir.path())
        .args(["teams", "token", "--user", "u", "--role", "root", "--workspace-id", "*"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("unknown role"));
}

/// The client commands against a running registry: `status` (never a secret), `audit query` across
/// pages, and one-line errors with the registry's reason and an exit status by whose fault it was.
#[test]
fn status_and_audit_query_answer_from_a_registry_and_fail_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, lines) = serve(dir.path());
    let admin = lines.iter().find_map(|l| l.strip_prefix("admin token: ")).expect("admin token").to_owned();
    let client = |token: &str, args: &[&str]| {
        let out = helix(dir.path()).env("HELIX_URL", &url).env("HELIX_TOKEN", token).args(args).output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        (out.status.code(), stdout, stderr)
    };

    let (code, stdout, _) = client(&admin, &["status", "--json"]);
    assert_eq!(code, Some(0), "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&doc["reachable"], &doc["ready"], &doc["status"]["frozen"]),
        (&json!(true), &json!(true), &json!(false))
    );
    assert_eq!((&doc["whoami"]["role"], &doc["status"]["meta_backend"]), (&json!("admin"), &json!("sqlite")));
    assert!(!stdout.contains(&admin), "never the secret");
    let (code, stdout, _) = client(&admin, &["status"]);
    assert_eq!(code, Some(0));
    assert!(stdout.lines().any(|l| l.starts_with("frozen") && l.ends_with("no")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("whoami") && l.contains("admin on *")), "{stdout}");

    // 3 more tokens: 4 token.issue events in all, walked with every page (the first is the bootstrap's).
    for n in 0..3 {
        issue_token(dir.path(), &format!("u{n}"), "viewer");
    }
    let (code, stdout, stderr) =
        client(&admin, &["audit", "query", "--since", "1d", "--action", "token.issue", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 4, "{stdout}");
    assert!(events.iter().all(|e| e["action"] == "token.issue"));
    let (_, plain, _) = client(&admin, &["audit", "query", "--workspace", "demo"]);
    assert_eq!(plain.lines().count(), 3, "{plain}");

    // Refused: exit 1, one line with the reason. Unreachable: exit 3, registry_unreachable.
    let viewer = issue_token(dir.path(), "v", "viewer");
    let (code, _, stderr) = client(&viewer, &["audit", "query", "--workspace", "demo"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("helix: insufficient_role (403)") && stderr.lines().count() == 1, "{stderr}");
    let dead = helix(dir.path())
        .env("HELIX_URL", "http://127.0.0.1:9")
        .env("HELIX_TOKEN", &admin)
        .args(["status"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(dead.stderr).unwrap();
    assert_eq!(dead.status.code(), Some(3), "{stderr}");
    assert!(stderr.starts_with("helix: registry_unreachable") && stderr.lines().count() == 1, "{stderr}");
    let plain_http = helix(dir.path()).env("HELIX_URL", "http://registry.example").args(["status"]).output().unwrap();
    assert_eq!(plain_http.status.code(), Some(1), "http only on loopback");
}

/// `helix governance approve|reject|waive` against a running registry: identity and role from the
/// token, the receipt summarised in one line, idempotent, refusals with the registry's reason.
#[test]
fn governance_decisions_from_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, _) = serve(dir.path());
    let token = |user: &str, role: &str| issue_token(dir.path(), user, role);
    let (ada, grace, linus) =
        (token("ada", "publisher"), token("grace", "approver"), token("linus", "safety_reviewer"));
    let digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    let auth = format!("Authorization: Bearer {ada}");
    assert_eq!(
        curl_status(&[
            "-X",
            "PUT",
            "-H",
            &auth,
            "--data-binary",
            "foo",
            &format!("{url}/v1/workspaces/demo/blobs/{digest}")
        ]),
        "201"
    );
    for v in ["1", "2"] {
        let manifest = json!({"schema": "helix.bundle.v1", "name": "model", "version": v,
            "files": [{"path": "f", "digest": digest, "size": 3}]});
        let path = format!("{url}/v1/workspaces/demo/bundles/model/versions/{v}");
        assert_eq!(curl_status(&["-X", "PUT", "-H", &auth, "--data-binary", &manifest.to_string(), &path]), "201");
    }
    let gov = |token: &str, args: &[&str]| {
        let out = helix(dir.path())
            .env("HELIX_URL", &url)
            .env("HELIX_TOKEN", token)
            .arg("governance")
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, stdout, stderr) = gov(&grace, &["approve", "demo/model@1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("approval receipt seq 1 for demo/model@1: submitted -> approved by grace (approver)"),
        "{stdout}"
    );
    assert_eq!(gov(&grace, &["approve", "demo/model@1"]).1, stdout, "the same decision again: the same receipt");
    let (code, _, stderr) = gov(&ada, &["approve", "demo/model@2"]);
    assert_eq!(code, Some(1));
    assert!(stderr.starts_with("helix: insufficient_role (403)"), "{stderr}");
    let (code, _, stderr) = gov(&grace, &["approve", "demo/model"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("expected WORKSPACE/NAME@VERSION"), "{stderr}");

    // A waiver names the export transition the ledger shows, with a justification from a file.
    let ledger = Command::new("curl")
        .args([
            "-s",
            "-H",
            &format!("Authorization: Bearer {linus}"),
            &format!("{url}/v1/workspaces/demo/bundles/model/versions/2/governance"),
        ])
        .output()
        .unwrap();
    let ledger: serde_json::Value = serde_json::from_slice(&ledger.stdout).unwrap();
    let transition = ledger["export_transition"].as_str().expect("export_transition").to_owned();
    let why = dir.path().join("why.txt");
    std::fs::write(&why, "INC-7: the model is needed for the recall").unwrap();
    let just = format!("@{}", why.display());
    let (code, stdout, stderr) = gov(
        &linus,
        &[
            "waive",
            "demo/model@2",
            "--transition",
            &transition,
            "--justification",
            &just,
            "--expires-in",
            "2h",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["seq"], 1);
    let (code, stdout, _) = gov(&grace, &["reject", "demo/model@1"]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("rejection receipt seq 2 for demo/model@1: approved -> rejected"), "{stdout}");
    let (code, _, stderr) = gov(&linus, &["approve", "demo/model@1"]);
    assert_eq!(code, Some(1));
    assert!(stderr.starts_with("helix: version_rejected (409)"), "a rejection is final: {stderr}");
}

/// The runbook cannot rot: every block marked `<!-- drill -->` in docs/runbook.md runs, in order and as
/// written, in one shell against a fresh `helix serve` (with `helix` on PATH and `curl` failing on any
/// HTTP error), and must succeed.
#[test]
fn the_runbooks_marked_command_blocks_run_as_written_against_helix_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, lines) = serve(dir.path());
    let admin = lines.iter().find_map(|l| l.strip_prefix("admin token: ")).expect("admin token").to_owned();
    let runbook = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/runbook.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = runbook.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "<!-- drill -->" {
            assert_eq!(lines.next(), Some("```sh"), "a drill marker stands right before a ```sh block");
            blocks.push(lines.by_ref().take_while(|l| *l != "```").collect::<Vec<_>>().join("\n"));
        }
    }
    assert!(blocks.len() >= 10, "the runbook's drilled blocks: {}", blocks.len());
    let script = format!(
        "set -euo pipefail\ncurl() {{ command curl --fail-with-body \"$@\"; }}\n{}\n",
        blocks
            .iter()
            .enumerate()
            .map(|(i, b)| format!("echo '>>> block {}'\n{b}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_helix")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(&work)
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("HELIX_URL", &url)
        .env("HELIX_TOKEN", &admin)
        .env("HELIX_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "a runbook block failed:\n{said}");
    assert!(said.contains("\"frozen\":true"), "the freeze block froze the registry:\n{said}");
    assert!(said.contains("ok: 1 day(s)"), "the evidence verified:\n{said}");
    assert!(work.join("evidence").is_dir() && work.join("exports.jsonl").is_file() && work.join("keys.json").is_file());
}
