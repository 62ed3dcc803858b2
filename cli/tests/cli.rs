//! The `helix` binary as an operator uses it: first start prints an admin token once; `teams token`
//! writes into the same data dir while the server runs; bad configuration fails at start, naming
//! the variable; every `--help` entry says what it does. The other themes have their own files
//! (transfer, governance, audit, operator, docs_drill); the helpers they share are in `common`.

mod common;

use std::process::Stdio;

use common::*;

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
        "pack",
        "verify-pack",
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

/// A registry URL the client cannot use is a usage error (exit 2, one line naming HELIX_URL), not a
/// failure of the registry (1) or of the network (3): unparseable, another scheme, http off loopback,
/// or none at all.
#[test]
fn a_bad_helix_url_is_a_usage_error_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (url, commands) in [
        ("not a url", vec![vec!["status"], vec!["audit", "query"]]),
        ("ftp://127.0.0.1/", vec![vec!["status"], vec!["pull", "demo/model@1", "x"]]),
        ("http://registry.example", vec![vec!["governance", "approve", "demo/model@1"]]),
        ("", vec![vec!["status"]]),
    ] {
        for args in commands {
            let mut cmd = helix(dir.path());
            if !url.is_empty() {
                cmd.env("HELIX_URL", url);
            }
            let out = cmd.env("HELIX_TOKEN", "x").args(&args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{url:?} {args:?}: {err}");
            assert!(err.starts_with("helix: HELIX_URL") && err.lines().count() == 1, "{url:?} {args:?}: {err}");
        }
    }
}

/// A malformed `WS/N@V` of `helix pull` is a usage error (exit 2, one line saying what is expected),
/// refused before the registry is asked (no registry answers at this URL).
#[test]
fn a_malformed_bundle_of_pull_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for bundle in ["demo/bad-ref", "no-workspace@1", "demo/Bad Name@1"] {
        let out = helix(dir.path())
            .env("HELIX_URL", "http://127.0.0.1:9")
            .env("HELIX_TOKEN", "x")
            .args(["pull", bundle, "x"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bundle:?}: {err}");
        assert!(err.contains("expected WORKSPACE/NAME@VERSION") && err.lines().count() == 1, "{bundle:?}: {err}");
    }
}

/// `helix --help` lists the commands in the order a newcomer meets them: the server, the registry's
/// posture, publish and fetch, decide, export and check, the trail; the operator's commands last.
#[test]
fn help_lists_commands_in_the_order_a_newcomer_meets_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = helix(dir.path()).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let expected = [
        "serve",
        "status",
        "push",
        "pull",
        "governance",
        "export",
        "pack",
        "verify-pack",
        "audit",
        "smoke",
        "teams",
        "keys",
        "freeze",
        "unfreeze",
        "backup",
        "restore",
        "help",
    ];
    assert_eq!(listed, expected, "{help}");
    let waive = helix(dir.path()).args(["governance", "waive", "--help"]).output().unwrap();
    let waive = String::from_utf8(waive.stdout).unwrap();
    let scope = waive.lines().skip_while(|l| !l.contains("--scope")).take(4).collect::<Vec<_>>().join(" ");
    assert!(scope.contains("export_unapproved") && scope.contains("never approves"), "{waive}");
}
