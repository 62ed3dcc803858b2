//! `helix status` and `helix audit query` against a running registry: answers across pages, the
//! questions the help shows, and one-line errors with an exit status by whose fault it was.

mod common;

use serde_json::json;

use common::*;

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
    assert_eq!(plain_http.status.code(), Some(2), "http only on loopback: a usage error");
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

    // --actor is the whole actor: ada's events, never ada-lee's; a bare user name matches nothing,
    // and the reader is told how actors are written.
    let ada = issue_token(dir.path(), "ada", "publisher");
    let ada_lee = issue_token(dir.path(), "ada-lee", "publisher");
    let bar = "sha256:fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9";
    for (token, body, digest) in [(&ada, "foo", FOO), (&ada_lee, "bar", bar)] {
        assert_eq!(put_status(token, body, &format!("{url}/v1/workspaces/demo/blobs/{digest}")), "201");
    }
    let (_, events, _) = query(&["--action", "blob.link", "--json"]);
    let linked: Vec<serde_json::Value> = events.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ada_actor = linked.iter().map(|e| e["actor"].as_str().unwrap()).find(|a| a.starts_with("ada@")).unwrap();
    let (code, stdout, stderr) = query(&["--actor", ada_actor]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.lines().count() == 1 && stdout.contains(ada_actor) && !stdout.contains("ada-lee"), "{stdout}");
    for bare in ["ada", "ada@"] {
        let (code, stdout, stderr) = query(&["--actor", bare]);
        assert_eq!((code, stdout.trim()), (Some(0), "no events"), "{bare}: {stderr}");
        assert!(stderr.contains("matched whole") && stderr.contains("user@credential"), "{bare}: {stderr}");
    }
}
