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

/// The binary under test: cargo's, or HELIX_TEST_BIN (a copy, when several checkouts share one target
/// dir and overwrite each other's `target/debug/helix`).
fn helix_bin() -> std::path::PathBuf {
    std::env::var_os("HELIX_TEST_BIN").map(Into::into).unwrap_or_else(|| env!("CARGO_BIN_EXE_helix").into())
}

fn helix(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(helix_bin());
    cmd.env_clear().env("HELIX_DATA_DIR", data_dir).env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// Start `helix serve` on a free port; returns the process, its URL and every stdout line up to the hint.
fn serve(data_dir: &std::path::Path) -> (Serve, String, Vec<String>) {
    serve_with(data_dir, &[], "127.0.0.1:0")
}

/// `serve`, with more environment and a chosen address.
fn serve_with(data_dir: &std::path::Path, env: &[(&str, &str)], listen: &str) -> (Serve, String, Vec<String>) {
    let mut child = helix(data_dir)
        .envs(env.iter().copied())
        .args(["serve", "--listen", listen])
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

/// POST `body` as JSON with `token`; the HTTP status.
fn post_status(token: &str, body: &serde_json::Value, url: &str) -> String {
    let auth = format!("Authorization: Bearer {token}");
    let body = body.to_string();
    curl_status(&["-X", "POST", "-H", &auth, "-H", "content-type: application/json", "-d", &body, url])
}

/// GET with `token`; the HTTP status.
fn get_status(token: &str, url: &str) -> String {
    curl_status(&["-H", &format!("Authorization: Bearer {token}"), url])
}

/// PUT `body` with `token`; the HTTP status.
fn put_status(token: &str, body: &str, url: &str) -> String {
    curl_status(&["-X", "PUT", "-H", &format!("Authorization: Bearer {token}"), "--data-binary", body, url])
}

/// The digest of "foo", the blob the first tests publish.
const FOO: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

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
    assert_eq!(get_status(admin, &format!("{url}/v1/status")), "200");

    let out = helix(dir.path())
        .args(["teams", "token", "--user", "ada", "--role", "publisher", "--workspace-id", "demo", "--ttl", "1h"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let publisher = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(publisher.starts_with("hlx_"));
    let blob_url = format!("{url}/v1/workspaces/demo/blobs/{FOO}");
    assert_eq!(put_status(&publisher, "foo", &blob_url), "201");
    assert_eq!(put_status(&publisher, "foo", &format!("{url}/v1/workspaces/other/blobs/{FOO}")), "403");

    let list = helix(dir.path()).args(["teams", "list"]).output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.contains("ada") && list.contains("active"), "{list}");
    assert!(!list.contains(&publisher) && !list.contains(admin), "no secret in the listing");
    let sha = helix_core::domain::BearerToken::parse(&publisher).unwrap().sha256();
    let out = helix(dir.path()).args(["teams", "revoke", "--sha256", &sha]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("revoked tok_"));
    assert_eq!(put_status(&publisher, "foo", &blob_url), "401", "refused on its next request");
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
    let json = helix(dir.path()).args(["teams", "list", "--json"]).output().unwrap();
    let records: Vec<serde_json::Value> =
        String::from_utf8_lossy(&json.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["state"] == "active" && r["sha256"].as_str().unwrap().len() == 64));
    assert!(!String::from_utf8_lossy(&json.stdout).contains("hlx_"), "never a secret");

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
    let run = |token: &str, args: &[&str]| {
        let out = client(dir.path(), &url, token).args(args).output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        (out.status.code(), stdout, stderr)
    };

    let (code, stdout, _) = run(&admin, &["status", "--json"]);
    assert_eq!(code, Some(0), "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&doc["reachable"], &doc["ready"], &doc["status"]["frozen"]),
        (&json!(true), &json!(true), &json!(false))
    );
    assert_eq!((&doc["whoami"]["role"], &doc["status"]["meta_backend"]), (&json!("admin"), &json!("sqlite")));
    assert!(!stdout.contains(&admin), "never the secret");
    let (code, stdout, _) = run(&admin, &["status"]);
    assert_eq!(code, Some(0));
    assert!(stdout.lines().any(|l| l.starts_with("frozen") && l.ends_with("no")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("whoami") && l.contains("admin on *")), "{stdout}");

    // 3 more tokens: 4 token.issue events in all, walked with every page (the first is the bootstrap's).
    for n in 0..3 {
        issue_token(dir.path(), &format!("u{n}"), "viewer");
    }
    let (code, stdout, stderr) = run(&admin, &["audit", "query", "--since", "1d", "--action", "token.issue", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 4, "{stdout}");
    assert!(events.iter().all(|e| e["action"] == "token.issue"));
    let (_, plain, _) = run(&admin, &["audit", "query", "--workspace", "demo"]);
    assert_eq!(plain.lines().count(), 3, "{plain}");

    // Refused: exit 1, one line with the reason. Unreachable: exit 3, registry_unreachable.
    let viewer = issue_token(dir.path(), "v", "viewer");
    let (code, _, stderr) = run(&viewer, &["audit", "query", "--workspace", "demo"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("helix: insufficient_role (403)") && stderr.lines().count() == 1, "{stderr}");
    let dead = client(dir.path(), "http://127.0.0.1:9", &admin).args(["status"]).output().unwrap();
    let stderr = String::from_utf8(dead.stderr).unwrap();
    assert_eq!(dead.status.code(), Some(3), "{stderr}");
    assert!(stderr.starts_with("helix: registry_unreachable") && stderr.lines().count() == 1, "{stderr}");
    // Unreachable, the local posture is still printed: URL, why, the override, what is pending.
    let stdout = String::from_utf8(dead.stdout).unwrap();
    let row = |name: &str| stdout.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
    assert!(row("registry").ends_with("http://127.0.0.1:9"), "{stdout}");
    assert!(row("reachable").contains("NO") && row("reachable").contains("onnect"), "{stdout}");
    assert!(row("governance (client)").contains("fail closed"), "{stdout}");
    assert!(row("pending unreported exports").contains("0 for this registry"), "{stdout}");
    let allow = [("HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT", "1")];
    let overridden = client(dir.path(), "http://127.0.0.1:9", &admin)
        .envs(allow)
        .args(["export", "demo/model@1", "--reason", "registry down, deadline"])
        .output()
        .unwrap();
    assert!(overridden.status.success(), "{}", String::from_utf8_lossy(&overridden.stderr));
    let dead =
        client(dir.path(), "http://127.0.0.1:9", &admin).envs(allow).args(["status", "--json"]).output().unwrap();
    assert_eq!(dead.status.code(), Some(3));
    let doc: serde_json::Value = serde_json::from_slice(&dead.stdout).unwrap();
    assert_eq!(
        (&doc["reachable"], &doc["local"]["allow_unregistered_export"], &doc["local"]["pending_unreported_exports"]),
        (&json!(false), &json!(true), &json!(1)),
        "{doc}"
    );
    let plain_http = client(dir.path(), "http://registry.example", &admin).args(["status"]).output().unwrap();
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
    assert_eq!(put_status(&ada, "foo", &format!("{url}/v1/workspaces/demo/blobs/{FOO}")), "201");
    for v in ["1", "2"] {
        let manifest = json!({"schema": "helix.bundle.v1", "name": "model", "version": v,
            "files": [{"path": "f", "digest": FOO, "size": 3}]});
        let path = format!("{url}/v1/workspaces/demo/bundles/model/versions/{v}");
        assert_eq!(put_status(&ada, &manifest.to_string(), &path), "201");
    }
    let gov = |token: &str, args: &[&str]| {
        let out = client(dir.path(), &url, token).arg("governance").args(args).output().unwrap();
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

/// The blocks marked `<!-- drill -->` in `doc` (a path from the repository root), in order.
fn drilled_blocks(doc: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("{}/../{doc}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "<!-- drill -->" {
            // A block may be indented (inside a list item): its lines lose that indentation.
            let fence = lines.next().unwrap_or_default();
            assert_eq!(fence.trim(), "```sh", "{doc}: a drill marker stands right before a ```sh block");
            let indent = fence.len() - fence.trim_start().len();
            let block: Vec<&str> = lines
                .by_ref()
                .take_while(|l| l.trim() != "```")
                .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
                .collect();
            blocks.push(block.join("\n"));
        }
    }
    blocks
}

/// Run `blocks` in order, as written, in one bash (`set -euo pipefail`) against a fresh `helix serve`,
/// as its first-start admin (HELIX_URL, HELIX_TOKEN, HELIX_DATA_DIR), with `helix` on PATH and
/// `cargo run -q -p helix-cli --` running that same binary (what it builds). With `fail_on_http`,
/// `curl` fails on any HTTP error. Returns the exit status, stdout and stderr together, and the
/// working directory.
fn drill(blocks: &[String], fail_on_http: bool) -> (bool, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    // The data dir and the working folder side by side (a backup inside the data dir is refused).
    let data = dir.path().join("data");
    let (_server, url, lines) = serve(&data);
    let admin = lines.iter().find_map(|l| l.strip_prefix("admin token: ")).expect("admin token").to_owned();
    let curl = if fail_on_http { "curl() { command curl --fail-with-body \"$@\"; }\n" } else { "" };
    let cargo = "cargo() { if [ \"${1-} ${2-} ${3-} ${4-} ${5-}\" = 'run -q -p helix-cli --' ]; then shift 5; helix \"$@\"; \
                 else echo \"drill: unexpected cargo $*\" >&2; return 1; fi; }\n";
    let script = format!(
        "set -euo pipefail\n{curl}{cargo}{}\n",
        blocks
            .iter()
            .enumerate()
            .map(|(i, b)| format!("echo '>>> block {}'\n{b}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let bin_dir = helix_bin().parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(&work)
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("HELIX_URL", &url)
        .env("HELIX_TOKEN", &admin)
        .env("HELIX_DATA_DIR", &data)
        .output()
        .unwrap();
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said, dir)
}

/// The runbook cannot rot: every block marked `<!-- drill -->` in docs/runbook.md runs, in order and as
/// written, against a fresh `helix serve`, with `curl` failing on any HTTP error, and must succeed.
#[test]
fn the_runbooks_marked_command_blocks_run_as_written_against_helix_serve() {
    let blocks = drilled_blocks("docs/runbook.md");
    assert!(blocks.len() >= 18, "the runbook's drilled blocks: {}", blocks.len());
    let (ok, said, dir) = drill(&blocks, true);
    assert!(ok, "a runbook block failed:\n{said}");
    assert!(said.contains("\"frozen\":true"), "the freeze block froze the registry:\n{said}");
    assert!(
        said.contains("\"reason\":\"INC-43: team-a CI token leaked\",\"suspended\":true"),
        "the suspend block suspended team-a:\n{said}"
    );
    assert!(said.contains("\"action\":\"workspace.suspend\""), "the actor search found the suspension:\n{said}");
    assert!(said.contains("workspace team-a is now not suspended"), "the CLI lifted it:\n{said}");
    assert!(said.contains("ok: 1 day(s)"), "the evidence verified:\n{said}");
    assert!(said.contains("smoke passed: 16 steps"), "the backup drill ran the smoke with a restore:\n{said}");
    assert!(said.contains("UNREGISTERED EXPORT of demo/model@1"), "the override warned:\n{said}");
    let work = dir.path().join("work");
    assert!(work.join("evidence").is_dir() && work.join("exports.jsonl").is_file() && work.join("keys.json").is_file());
}

/// The README's tour, governance lifecycle and audit blocks run as written against a fresh `helix
/// serve` (their curl calls show refusals on purpose, so HTTP errors do not stop them; what each
/// block must have done is checked on its output).
#[test]
fn the_readmes_tour_runs_as_written() {
    let blocks = drilled_blocks("README.md");
    assert_eq!(blocks.len(), 3, "the tour, the governance lifecycle, the audit trail");
    let (ok, said, _dir) = drill(&blocks, false);
    assert!(ok, "a README block failed:\n{said}");
    for expected in [
        "\"ready\":true",
        "hello helix",
        "307 -> http://127.0.0.1:",
        "pushed demo/results@1: 2 file(s)",
        "identical",
        "\"reason\":\"token_revoked\"",
        "\"reason\":\"not_approved\"",
        "\"governance\":\"approved\"",
        "{\"annotations\":{},\"files\":[{\"digest\":\"sha256:",
        "ok: 3 receipt(s) of demo/demo-model@1.0 from seq 1, state exported",
        "ok: 1 day(s)",
    ] {
        assert!(said.contains(expected), "the README's blocks did not print {expected:?}:\n{said}");
    }
}

/// A client command as a user runs it: HELIX_URL, HELIX_TOKEN, its own state dir.
fn client(data_dir: &std::path::Path, url: &str, token: &str) -> Command {
    let mut cmd = helix(data_dir);
    cmd.env("HELIX_URL", url).env("HELIX_TOKEN", token).env("HELIX_STATE_DIR", data_dir.join("client-state"));
    cmd
}

/// `cmd`, run by bash under `ulimit -n limit` (same program, arguments and environment).
fn with_open_file_limit(cmd: &Command, limit: u32) -> Command {
    let mut shell = Command::new("bash");
    shell
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))))
        .args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), cmd.get_program().to_str().unwrap()])
        .args(cmd.get_args());
    shell
}

/// Files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { found.extend(files_under(&path)) } else { found.push(path) }
    }
    found
}

/// A source tree of `n` small files in nested folders, two equal files, and one large file (above
/// the registry's inline limit of 64 KiB in these tests, so it goes through the presigned path).
fn source_tree(root: &std::path::Path, n: usize, large: usize) {
    for i in 0..n {
        let dir = root.join(format!("part-{}/deep", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}.txt")), format!("file {i}\n").repeat(i % 13 + 1)).unwrap();
    }
    std::fs::write(root.join("same-a"), b"same").unwrap();
    std::fs::write(root.join("same-b"), b"same").unwrap();
    let big: Vec<u8> = (0..large).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(root.join("model.bin"), big).unwrap();
}

fn json_out(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

const SMALL_INLINE: [(&str, &str); 1] = [("HELIX_INLINE_MAX", "65536")];

/// `helix push SRC` as `demo/model@1`, as `token`; its JSON answer (the push must succeed).
fn push_model(data: &std::path::Path, url: &str, token: &str, src: &std::path::Path) -> serde_json::Value {
    json_out(
        &client(data, url, token)
            .args(["push", src.to_str().unwrap(), "--workspace", "demo", "--name", "model", "--version", "1", "--json"])
            .output()
            .unwrap(),
    )
}

/// `push_model`, then approved by another user (an approver of `demo`).
fn push_approved_model(data: &std::path::Path, url: &str, publisher: &str, src: &std::path::Path) {
    push_model(data, url, publisher, src);
    let approver = issue_token(data, "bob", "approver");
    let approved = client(data, url, &approver).args(["governance", "approve", "demo/model@1"]).output().unwrap();
    assert!(approved.status.success(), "{}", String::from_utf8_lossy(&approved.stderr));
}

/// A fresh `helix serve` with the 64 KiB inline limit, its admin token and a publisher of `demo`:
/// (temp dir, data dir, server, URL, admin, publisher).
fn small_inline_registry() -> (tempfile::TempDir, std::path::PathBuf, Serve, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, url, lines) = serve_with(&data, &SMALL_INLINE, "127.0.0.1:0");
    let admin = lines.iter().find_map(|l| l.strip_prefix("admin token: ")).unwrap().to_owned();
    let publisher = issue_token(&data, "ada", "publisher");
    (dir, data, server, url, admin, publisher)
}

#[test]
fn push_and_pull_round_trip_hundreds_of_files_and_a_large_one() {
    let (dir, data, _server, url, _, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    source_tree(&src, 300, 3 * 1024 * 1024 + 17);

    // A symlink is refused before anything is uploaded, and so is a path the manifest rules refuse.
    std::os::unix::fs::symlink("/etc/hostname", src.join("part-0/link")).unwrap();
    std::fs::write(src.join("bad\\name"), b"x").unwrap();
    let push = |args: &[&str]| {
        client(&data, &url, &publisher)
            .args(["push", src.to_str().unwrap(), "--workspace", "demo", "--name", "model"])
            .args(args)
            .output()
            .unwrap()
    };
    let refused = push(&["--version", "1"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("nothing was uploaded") && err.contains("part-0/link: a symlink"), "{err}");
    assert!(files_under(&data.join("blobs")).is_empty(), "nothing reached the store");
    std::fs::remove_file(src.join("part-0/link")).unwrap();
    let refused = push(&["--version", "1"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        refused.status.code() == Some(1) && err.contains("nothing was uploaded") && err.contains("bad\\\\name"),
        "{err}"
    );
    assert!(files_under(&data.join("blobs")).is_empty());
    std::fs::remove_file(src.join("bad\\name")).unwrap();

    let first = push(&["--version", "1", "--json"]);
    assert!(first.stderr.is_empty(), "no progress drawn when stderr is not a terminal");
    let first = json_out(&first);
    assert_eq!((first["files"].as_u64(), first["uploaded_files"].as_u64()), (Some(303), Some(302)), "{first}");
    assert_eq!(first["state"], "submitted");
    // Again: everything is already there; the same registration answers.
    let again = json_out(&push(&["--version", "1", "--json"]));
    assert_eq!((again["uploaded_files"].as_u64(), again["present_files"].as_u64()), (Some(0), Some(302)));
    assert_eq!(again["manifest_digest"], first["manifest_digest"]);

    let out = dir.path().join("out");
    // Under a limit of 64 open files: 303 files in 8 folders need a handle per folder, not per file.
    let mut pull = client(&data, &url, &publisher);
    pull.args(["pull", "demo/model@1", out.to_str().unwrap(), "--json"]);
    let pulled = json_out(&with_open_file_limit(&pull, 64).output().unwrap());
    assert_eq!(
        (pulled["downloaded_files"].as_u64(), pulled["manifest_digest"].clone()),
        (Some(303), first["manifest_digest"].clone())
    );
    let diff = Command::new("diff").args(["-r", src.to_str().unwrap(), out.to_str().unwrap()]).status().unwrap();
    assert!(diff.success(), "the pulled tree equals the pushed one");
    // A re-run keeps what is in place; a file changed locally is refused, not overwritten.
    let kept = json_out(
        &client(&data, &url, &publisher)
            .args(["pull", "demo/model@1", out.to_str().unwrap(), "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!((kept["downloaded_files"].as_u64(), kept["kept_files"].as_u64()), (Some(0), Some(303)));
    std::fs::write(out.join("same-a"), b"SAME").unwrap();
    let clash = client(&data, &url, &publisher).args(["pull", "demo/model@1", out.to_str().unwrap()]).output().unwrap();
    assert_eq!(clash.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&clash.stderr).contains("exists with other content"));
    assert_eq!(std::fs::read(out.join("same-a")).unwrap(), b"SAME");
}

#[test]
fn an_interrupted_push_resumes_and_uploads_only_what_is_missing() {
    let (dir, data, _server, url, _, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    // 400 files: the manifest stays under the 64 KiB body limit these tests set.
    source_tree(&src, 400, 1024);
    let push = || {
        let mut cmd = client(&data, &url, &publisher);
        cmd.args(["push", src.to_str().unwrap(), "--workspace", "demo", "--name", "model", "--version", "1"])
            .args(["--jobs", "1", "--json"]);
        cmd
    };
    // Killed once some blobs are stored, long before the 403 files are through.
    let mut first = push().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while files_under(&data.join("blobs")).len() < 20 {
        assert!(std::time::Instant::now() < deadline, "the push stored nothing");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let stored = files_under(&data.join("blobs")).len();
    assert!(stored < 400, "the push was interrupted midway ({stored} stored)");
    let version = format!("{url}/v1/workspaces/demo/bundles/model/versions/1");
    assert_eq!(get_status(&publisher, &version), "404", "not registered yet");

    // What the registry holds linked (an exact counter), whatever the store holds beside it.
    let metrics = Command::new("curl").args(["-s", &format!("{url}/metrics")]).output().unwrap();
    let linked: u64 = String::from_utf8_lossy(&metrics.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("helix_blobs "))
        .expect("helix_blobs")
        .trim()
        .parse()
        .unwrap();
    assert!(linked > 0);

    let resumed = json_out(&push().output().unwrap());
    let (uploaded, present) = (resumed["uploaded_files"].as_u64().unwrap(), resumed["present_files"].as_u64().unwrap());
    assert_eq!(uploaded + present, 402, "{resumed}");
    assert_eq!(present, linked, "only what was missing was uploaded: {resumed}");
    assert_eq!(get_status(&publisher, &version), "200");
}

#[test]
fn a_tampered_download_is_refused_and_leaves_no_file() {
    let (dir, data, _server, url, _, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    source_tree(&src, 3, 200_000);
    push_model(&data, &url, &publisher, &src);
    // The large blob's stored bytes change (same size): the store is lax, the client is not.
    let big = src.join("model.bin");
    let digest = helix_core::domain::Digest::of(&std::fs::read(&big).unwrap()).hex().to_owned();
    let stored = files_under(&data.join("blobs")).into_iter().find(|p| p.to_string_lossy().contains(&digest)).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&stored, bytes).unwrap();

    let out = dir.path().join("out");
    let pulled =
        client(&data, &url, &publisher).args(["pull", "demo/model@1", out.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&pulled.stderr);
    assert_eq!(pulled.status.code(), Some(1), "{err}");
    assert!(err.contains("digest_mismatch: model.bin"), "{err}");
    assert!(!out.join("model.bin").exists(), "no file under its final name");
    let leftovers: Vec<_> =
        files_under(&out).into_iter().filter(|p| p.to_string_lossy().contains(".helix-part-")).collect();
    assert!(leftovers.is_empty(), "no partial file left: {leftovers:?}");
}

#[test]
fn export_fails_closed_when_unreachable_and_the_override_is_reported_when_the_registry_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, url, lines) = serve(&data);
    let admin = lines.iter().find_map(|l| l.strip_prefix("admin token: ")).unwrap().to_owned();
    let publisher = issue_token(&data, "ada", "publisher");
    let src = dir.path().join("src");
    source_tree(&src, 2, 10);
    push_approved_model(&data, &url, &publisher, &src);
    // The official export: receipt saved, verifiable offline; proof URLs printed.
    let receipt = dir.path().join("receipt.json");
    let exported = client(&data, &url, &publisher)
        .args(["export", "demo/model@1", "--receipt", receipt.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&exported.stdout);
    assert!(
        exported.status.success() && text.contains("governance: approved") && text.contains("/v1/proofs/demo/"),
        "{text}"
    );
    let verified =
        helix(&data).args(["governance", "verify", receipt.to_str().unwrap(), "--registry", &url]).output().unwrap();
    assert!(String::from_utf8_lossy(&verified.stdout).starts_with("ok: 1 receipt(s) of demo/model@1"));
    let verified = helix(&data)
        .args(["governance", "verify", receipt.to_str().unwrap(), "--registry", &url, "--json"])
        .output()
        .unwrap();
    let verified: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!((verified["ok"].as_bool(), verified["receipts"].as_u64()), (Some(true), Some(1)));

    drop(server);
    let export = |env: &[(&str, &str)], args: &[&str]| {
        client(&data, &url, &publisher)
            .envs(env.iter().copied())
            .args(["export", "demo/model@1"])
            .args(args)
            .output()
            .unwrap()
    };
    let closed = export(&[], &[]);
    assert_eq!(closed.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&closed.stderr).starts_with("helix: registry_unreachable: "));
    let pending = data.join("client-state/unregistered-exports/pending");
    let allow = [("HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT", "1")];
    let no_reason = export(&allow, &[]);
    assert_eq!(no_reason.status.code(), Some(1), "the override needs a reason");
    assert!(files_under(&pending).is_empty());
    let overridden = export(&allow, &["--reason", "partner deadline; registry down"]);
    let warning = String::from_utf8_lossy(&overridden.stderr);
    assert!(overridden.status.success() && warning.contains("UNREGISTERED EXPORT of demo/model@1"), "{warning}");
    let records = files_under(&pending);
    assert_eq!(records.len(), 1);
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(record["reason"], "partner deadline; registry down");

    // The registry answers again (same address): the next client command reports the record, once.
    let listen = url.trim_start_matches("http://");
    let (_server, _, _) = serve_with(&data, &[], listen);
    let status = client(&data, &url, &publisher).arg("status").output().unwrap();
    assert!(String::from_utf8_lossy(&status.stderr).contains("reported the unregistered export"));
    assert!(files_under(&pending).is_empty());
    assert_eq!(files_under(&data.join("client-state/unregistered-exports/reported")).len(), 1);
    let events = client(&data, &url, &admin)
        .args(["audit", "query", "--workspace", "demo", "--action", "bundle.export_unregistered", "--json"])
        .output()
        .unwrap();
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&events.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1, "recorded once");
    assert_eq!(
        (events[0]["outcome"].as_str(), events[0]["details"]["id"].clone()),
        (Some("warned"), record["id"].clone())
    );
    assert!(events[0]["actor"].as_str().unwrap().starts_with("ada@"));
    // The same report again (a client that crashed before moving its record) is not recorded twice.
    let body = serde_json::json!({"id": record["id"], "exported_at": record["exported_at"], "local_user": "x",
        "host": "h", "reason": "r", "error": "e"});
    let path = format!("{url}/v1/workspaces/demo/bundles/model/versions/1/unregistered-exports");
    assert_eq!(post_status(&publisher, &body, &path), "200");
}

#[test]
fn the_override_never_covers_an_answer_only_an_unreachable_registry() {
    let (dir, data, _server, url, admin, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    source_tree(&src, 1, 100_000);
    push_approved_model(&data, &url, &publisher, &src);
    let pending = data.join("client-state/unregistered-exports/pending");
    let export = |reason: &str| {
        client(&data, &url, &publisher)
            .env("HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT", "1")
            .args(["export", "demo/model@1", "--reason", reason])
            .output()
            .unwrap()
    };

    // A frozen registry answered: no override.
    let freeze = serde_json::json!({"reason": "drill"});
    assert_eq!(post_status(&admin, &freeze, &format!("{url}/v1/admin/freeze")), "200");
    let frozen = export("the registry is frozen");
    assert_eq!(frozen.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&frozen.stderr).starts_with("helix: registry_frozen (503)"));
    let unfreeze = serde_json::json!({"reason": "drill over"});
    assert_eq!(post_status(&admin, &unfreeze, &format!("{url}/v1/admin/unfreeze")), "200");

    // Stored bytes that fail their integrity check: an answer, not an outage.
    let stored =
        files_under(&data.join("blobs")).into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    let corrupt = export("bytes are corrupt");
    let err = String::from_utf8_lossy(&corrupt.stderr);
    assert!(corrupt.status.code() == Some(3) && err.starts_with("helix: blob_integrity_error (500)"), "{err}");
    assert!(files_under(&pending).is_empty(), "no override was recorded for an answer");

    // Unreachable, but a reason the registry would refuse to record: refused here, nothing written.
    let dead = client(&data, "http://127.0.0.1:9", &publisher)
        .env("HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT", "1")
        .args(["export", "demo/model@1", "--reason", "two\nlines"])
        .output()
        .unwrap();
    assert_eq!(dead.status.code(), Some(1), "{}", String::from_utf8_lossy(&dead.stderr));
    assert!(files_under(&pending).is_empty());
}

#[test]
fn pull_writes_only_under_its_destination_and_push_refuses_partial_downloads() {
    let (dir, data, _server, url, _, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let long = "L".repeat(250);
    std::fs::write(src.join("sub").join(&long), b"a 250-byte name").unwrap();
    std::fs::write(src.join("sub/b.txt"), b"b").unwrap();
    push_model(&data, &url, &publisher, &src);
    // A symlink planted where a folder of the bundle goes: refused, nothing written through it.
    let out = dir.path().join("out");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("sub")).unwrap();
    let pulled =
        client(&data, &url, &publisher).args(["pull", "demo/model@1", out.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&pulled.stderr);
    assert!(pulled.status.code() == Some(1) && err.contains("is in the way (not a folder)"), "{err}");
    assert!(files_under(&elsewhere).is_empty(), "nothing was written through the symlink");
    std::fs::remove_file(out.join("sub")).unwrap();
    // A 250-byte file name still has room for its temporary file.
    let pulled = json_out(
        &client(&data, &url, &publisher)
            .args(["pull", "demo/model@1", out.to_str().unwrap(), "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(pulled["downloaded_files"], 2);
    assert_eq!(std::fs::read(out.join("sub").join(&long)).unwrap(), b"a 250-byte name");

    // What an interrupted pull may leave is never published.
    std::fs::write(out.join("sub/.helix-part-0123456789ab"), b"half").unwrap();
    let pushed = client(&data, &url, &publisher)
        .args(["push", out.to_str().unwrap(), "--workspace", "demo", "--name", "copy", "--version", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&pushed.stderr);
    assert!(
        pushed.status.code() == Some(1) && err.contains("a partial download left by an interrupted helix pull"),
        "{err}"
    );
}

#[test]
fn backup_and_restore_refuse_what_they_cannot_prove() {
    let (dir, data, _server, url, _, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    source_tree(&src, 20, 100_000);
    push_model(&data, &url, &publisher, &src);
    // The blob folder moved to another disk behind a symlink: still backed up.
    let moved = dir.path().join("bigdisk");
    std::fs::create_dir(&moved).unwrap();
    std::fs::rename(data.join("blobs/sha256"), moved.join("sha256")).unwrap();
    std::os::unix::fs::symlink(moved.join("sha256"), data.join("blobs/sha256")).unwrap();
    let backup =
        |out: &std::path::Path| helix(&data).args(["backup", "--out", out.to_str().unwrap()]).output().unwrap();
    let inside = backup(&data.join("blobs/nightly"));
    assert_eq!(inside.status.code(), Some(1), "a backup inside the data dir would copy itself");
    assert!(!data.join("blobs/nightly").exists());
    let good = dir.path().join("backup");
    let made = backup(&good);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(
        String::from_utf8_lossy(&made.stdout).contains("23 blob file(s)"),
        "{}",
        String::from_utf8_lossy(&made.stdout)
    );
    assert!(!good.join("blobs/uploads").exists() && !good.join("blobs/tmp").exists(), "scratch and staging left out");

    let restore = |from: &std::path::Path, into: &std::path::Path| {
        helix(into).args(["restore", "--from", from.to_str().unwrap()]).output().unwrap()
    };
    let copy_of_backup = |name: &str| {
        let copy = dir.path().join(name);
        assert!(
            Command::new("cp").args(["-r", good.to_str().unwrap(), copy.to_str().unwrap()]).status().unwrap().success()
        );
        copy
    };
    // A blob with one byte changed, a linked blob missing, a replaced key: each refused, nothing restored.
    let flipped = copy_of_backup("flipped");
    let blob = files_under(&flipped.join("blobs/sha256")).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let missing = copy_of_backup("missing");
    std::fs::remove_file(files_under(&missing.join("blobs/sha256")).into_iter().next().unwrap()).unwrap();
    let stowaway = copy_of_backup("stowaway");
    std::fs::write(stowaway.join("authorized_keys"), b"ssh-ed25519 AAAA...").unwrap();
    let rekeyed = copy_of_backup("rekeyed");
    std::fs::write(
        rekeyed.join("signing-key.pem"),
        b"-----BEGIN PRIVATE KEY-----\nnot ours\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    // A staged upload with a forged checksum record (`complete` would trust it and link wrong bytes
    // under a digest), and a folder the blob store does not have: restore cannot verify either.
    let staged = copy_of_backup("staged");
    std::fs::create_dir_all(staged.join("blobs/uploads/demo")).unwrap();
    std::fs::write(staged.join("blobs/uploads/demo/up_1"), b"not the bytes of the digest").unwrap();
    std::fs::write(staged.join("blobs/uploads/demo/up_1.sha256"), format!("sha256:{}", "ab".repeat(32))).unwrap();
    let extra_folder = copy_of_backup("extra-folder");
    std::fs::create_dir_all(extra_folder.join("blobs/elsewhere")).unwrap();
    std::fs::write(extra_folder.join("blobs/elsewhere/x"), b"x").unwrap();
    for (case, why) in [
        (&flipped, "not the digest its name says"),
        (&stowaway, "not part of a helix backup"),
        (&staged, "staging state"),
        (&extra_folder, "not part of a helix backup"),
        (&missing, "missing from"),
        (&rekeyed, "not what the backup recorded"),
    ] {
        let target = dir.path().join(format!("restored-{}", case.file_name().unwrap().to_str().unwrap()));
        let refused = restore(case, &target);
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(refused.status.code() == Some(1) && err.contains(why), "{}: {err}", case.display());
        assert!(!target.exists(), "nothing restored from {}", case.display());
    }
    let target = dir.path().join("restored");
    let restored = restore(&good, &target);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    assert!(String::from_utf8_lossy(&restored.stdout).contains("23 blob file(s) checked"));
    // Never over data.
    let again = restore(&good, &target);
    assert!(again.status.code() == Some(1) && String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

#[test]
fn helix_freeze_writes_the_switch_straight_into_the_store() {
    let (dir, data, _server, url, _, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    source_tree(&src, 1, 10);
    let frozen = helix(&data).args(["freeze", "--reason", "INC-1: tables restored, not checked yet"]).output().unwrap();
    assert!(String::from_utf8_lossy(&frozen.stdout).starts_with("the registry is now frozen: INC-1"));
    let push = client(&data, &url, &publisher)
        .args(["push", src.to_str().unwrap(), "--workspace", "demo", "--name", "model", "--version", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&push.stderr);
    assert!(push.status.code() == Some(3) && err.contains("registry_frozen"), "{err}");
    let again = helix(&data).args(["freeze", "--reason", "again"]).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("the registry is already frozen: INC-1"));
    let thawed = helix(&data).args(["unfreeze", "--reason", "checked"]).output().unwrap();
    assert!(String::from_utf8_lossy(&thawed.stdout).starts_with("the registry is now not frozen"));
    push_model(&data, &url, &publisher, &src);
}

#[test]
fn pull_keeps_a_bounded_number_of_folders_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, url, _) = serve(&data);
    let publisher = issue_token(&data, "ada", "publisher");
    let src = dir.path().join("src");
    for i in 0..2000 {
        let folder = src.join(format!("d{}/f{i}", i % 10));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("x.txt"), b"same bytes").unwrap();
    }
    push_model(&data, &url, &publisher, &src);
    let dest = dir.path().join("copy");
    let mut pull = client(&data, &url, &publisher);
    pull.args(["pull", "demo/model@1", dest.to_str().unwrap(), "--json"]);
    let pulled = with_open_file_limit(&pull, 256).output().unwrap();
    let answer = json_out(&pulled);
    assert_eq!((answer["files"].as_u64(), answer["downloaded_files"].as_u64()), (Some(2000), Some(2000)));
    assert_eq!(files_under(&dest).len(), 2000);
    // A re-run checks every file in place under the same limit.
    let again = json_out(&with_open_file_limit(&pull, 256).output().unwrap());
    assert_eq!(again["kept_files"].as_u64(), Some(2000));
}

#[test]
fn smoke_takes_its_token_from_the_environment_or_a_file_never_from_argv() {
    let dir = tempfile::tempdir().unwrap();
    let smoke = |args: &[&str]| {
        let out = helix(dir.path()).args(["smoke", "--url", "http://127.0.0.1:9"]).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = smoke(&["--token", "hx_secret_in_argv"]);
    assert_eq!(code, Some(2), "a usage error: {err}");
    assert!(err.contains("HELIX_TOKEN") && err.contains("--token-file") && !err.contains("hx_secret_in_argv"), "{err}");
    let file = dir.path().join("token");
    std::fs::write(&file, "hx_from_a_file\n").unwrap();
    // The token was read: the run starts, and fails at its first step (nothing listens there).
    let (code, err) = smoke(&["--token-file", file.to_str().unwrap()]);
    assert!(code == Some(1) && err.contains("smoke failed at step ready"), "{err}");
    std::fs::write(&file, "").unwrap();
    let (code, err) = smoke(&["--token-file", file.to_str().unwrap()]);
    assert!(code == Some(2) && err.contains("empty"), "{err}");
}

#[test]
fn push_asks_the_registry_before_hashing_and_every_refusal_names_its_reason() {
    let (dir, data, _server, url, admin, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    source_tree(&src, 3, 10);
    let push = |token: &str, ws: &str, src: &std::path::Path| {
        let out = client(&data, &url, token)
            .args(["push", src.to_str().unwrap(), "--workspace", ws, "--name", "model", "--version", "1"])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // A workspace the token does not cover: the reason, not a bare `http_403 (403): `.
    let (code, err) = push(&publisher, "other", &src);
    assert!(
        code == Some(1) && err.starts_with("helix: forbidden_workspace (403): this token is for workspace demo"),
        "{err}"
    );
    let viewer = issue_token(&data, "val", "viewer");
    let (code, err) = push(&viewer, "demo", &src);
    assert!(code == Some(1) && err.contains("insufficient_role (403): pushing needs a publisher"), "{err}");
    push_model(&data, &url, &publisher, &src);
    // The version exists: refused before a byte of the new content is uploaded.
    let changed = dir.path().join("changed");
    std::fs::create_dir(&changed).unwrap();
    std::fs::write(changed.join("new.txt"), b"content never uploaded").unwrap();
    let (code, err) = push(&publisher, "demo", &changed);
    assert!(code == Some(1) && err.contains("version_exists (409)"), "{err}");
    let digest = format!("sha256:{}", helix_core::domain::Digest::of(b"content never uploaded").hex());
    let head = curl_status(&[
        "-I",
        "-H",
        &format!("Authorization: Bearer {admin}"),
        &format!("{url}/v1/workspaces/demo/blobs/{digest}"),
    ]);
    assert_eq!(head, "404", "no orphan upload");
}

#[test]
fn teams_token_outside_the_data_dir_refuses_instead_of_creating_a_second_store() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let mut cmd = helix(dir.path());
    cmd.env_remove("HELIX_DATA_DIR").current_dir(&elsewhere);
    let out =
        cmd.args(["teams", "token", "--user", "u", "--role", "viewer", "--workspace-id", "demo"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("set HELIX_DATA_DIR") && err.lines().count() == 1, "{err}");
    assert!(!elsewhere.join(".helix").exists(), "no second store");
    let mut freeze = helix(dir.path());
    let frozen = freeze.env_remove("HELIX_DATA_DIR").current_dir(&elsewhere).args(["freeze", "--reason", "x"]);
    assert_eq!(frozen.output().unwrap().status.code(), Some(1));
    assert!(!elsewhere.join(".helix").exists(), "no second store");
}

#[test]
fn a_re_export_never_overwrites_a_receipt_and_many_proof_urls_are_summarised() {
    let (dir, data, _server, url, _, publisher) = small_inline_registry();
    let src = dir.path().join("src");
    source_tree(&src, 20, 10);
    push_approved_model(&data, &url, &publisher, &src);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let export = |args: &[&str]| {
        let out = client(&data, &url, &publisher)
            .current_dir(&work)
            .args(["export", "demo/model@1"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let first = export(&[]);
    assert!(first.lines().count() <= 3 && first.contains("23 file proof URL(s)"), "summarised:\n{first}");
    let second = export(&["--urls", "urls.tsv"]);
    assert!(
        second.contains("saved to model-1.export-receipt-2.json") && second.contains("written to urls.tsv"),
        "{second}"
    );
    let receipt =
        |name: &str| -> serde_json::Value { serde_json::from_slice(&std::fs::read(work.join(name)).unwrap()).unwrap() };
    assert_ne!(
        receipt("model-1.export-receipt.json"),
        receipt("model-1.export-receipt-2.json"),
        "the first receipt is kept"
    );
    let urls = std::fs::read_to_string(work.join("urls.tsv")).unwrap();
    assert_eq!(urls.lines().count(), 24, "the manifest and every file");
}

#[test]
fn audit_query_answers_the_common_questions_as_the_help_says() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, _) = serve(dir.path());
    let approver = issue_token(dir.path(), "grace", "approver");
    let query = |args: &[&str]| {
        let out = client(dir.path(), &url, &approver).args(["audit", "query"]).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No --workspace: the token's own (demo), with relative times as the help writes them.
    let (code, stdout, stderr) = query(&["--since", "30m ago", "--action", "token.issue"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.lines().count() == 1 && stdout.contains("token.issue"), "{stdout}");
    let (code, stdout, stderr) = query(&["--since", "2d ago", "--until", "1d ago"]);
    assert_eq!((code, stdout.trim()), (Some(0), "no events"), "{stderr}");
}

#[test]
fn every_help_entry_has_a_description() {
    let dir = tempfile::tempdir().unwrap();
    let commands = [
        "serve",
        "status",
        "push",
        "pull",
        "smoke",
        "freeze",
        "unfreeze",
        "backup",
        "restore",
        "export",
        "teams token",
        "teams revoke",
        "teams list",
        "teams suspend",
        "teams unsuspend",
        "keys list",
        "keys retire",
        "governance approve",
        "governance reject",
        "governance waive",
        "governance verify",
        "audit query",
        "audit export",
        "audit verify",
    ];
    let mut bare = Vec::new();
    for command in commands {
        let out = helix(dir.path()).args(command.split(' ')).arg("--help").output().unwrap();
        assert!(out.status.success(), "{command}");
        let help = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = help.lines().collect();
        let is_entry = |line: &str| {
            let entry = line.trim();
            line.starts_with("  ") && (entry.starts_with('-') || entry.starts_with('<'))
        };
        for (i, line) in lines.iter().enumerate() {
            let entry = line.trim();
            // An entry is its flag or argument, then its description: after at least two spaces, or
            // (when clap puts every description on the next line) on the next, deeper-indented line.
            let indent = |l: &str| l.len() - l.trim_start().len();
            let next_line =
                lines.get(i + 1).filter(|n| !n.trim().is_empty() && !is_entry(n) && indent(n) > indent(line));
            if is_entry(line) && !entry.contains("  ") && next_line.is_none() {
                bare.push(format!("{command}: {entry}"));
            }
        }
    }
    assert!(bare.is_empty(), "no description:\n{}", bare.join("\n"));
}
