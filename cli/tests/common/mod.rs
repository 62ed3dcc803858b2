//! What the CLI test files share (each file under cli/tests/ is its own crate and declares `mod
//! common;`): the binary under test, a `helix serve` on a free port, tokens, curl, and source trees
//! to push. Not every file uses every helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary under test: cargo's, or HELIX_TEST_BIN (a copy, when several checkouts share one target
/// dir and overwrite each other's `target/debug/helix`).
pub fn helix_bin() -> std::path::PathBuf {
    std::env::var_os("HELIX_TEST_BIN").map(Into::into).unwrap_or_else(|| env!("CARGO_BIN_EXE_helix").into())
}

pub fn helix(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(helix_bin());
    cmd.env_clear().env("HELIX_DATA_DIR", data_dir).env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// Start `helix serve` on a free port; returns the process, its URL and every stdout line up to the hint.
pub fn serve(data_dir: &std::path::Path) -> (Serve, String, Vec<String>) {
    serve_with(data_dir, &[], "127.0.0.1:0")
}

/// `serve`, with more environment and a chosen address.
pub fn serve_with(data_dir: &std::path::Path, env: &[(&str, &str)], listen: &str) -> (Serve, String, Vec<String>) {
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
pub fn issue_token(data_dir: &std::path::Path, user: &str, role: &str) -> String {
    let out = helix(data_dir)
        .args(["teams", "token", "--user", user, "--role", role, "--workspace-id", "demo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// POST `body` as JSON with `token`; the HTTP status.
pub fn post_status(token: &str, body: &serde_json::Value, url: &str) -> String {
    let auth = format!("Authorization: Bearer {token}");
    let body = body.to_string();
    curl_status(&["-X", "POST", "-H", &auth, "-H", "content-type: application/json", "-d", &body, url])
}

/// GET with `token`; the HTTP status.
pub fn get_status(token: &str, url: &str) -> String {
    curl_status(&["-H", &format!("Authorization: Bearer {token}"), url])
}

/// PUT `body` with `token`; the HTTP status.
pub fn put_status(token: &str, body: &str, url: &str) -> String {
    curl_status(&["-X", "PUT", "-H", &format!("Authorization: Bearer {token}"), "--data-binary", body, url])
}

/// The digest of "foo", the blob the first tests publish.
pub const FOO: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

pub fn curl_status(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]).args(args).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// A client command as a user runs it: HELIX_URL, HELIX_TOKEN, its own state dir.
pub fn client(data_dir: &std::path::Path, url: &str, token: &str) -> Command {
    let mut cmd = helix(data_dir);
    cmd.env("HELIX_URL", url).env("HELIX_TOKEN", token).env("HELIX_STATE_DIR", data_dir.join("client-state"));
    cmd
}

/// `cmd`, run by bash under `ulimit -n limit` (same program, arguments and environment).
pub fn with_open_file_limit(cmd: &Command, limit: u32) -> Command {
    let mut shell = Command::new("bash");
    shell
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))))
        .args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), cmd.get_program().to_str().unwrap()])
        .args(cmd.get_args());
    shell
}

/// Files under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { found.extend(files_under(&path)) } else { found.push(path) }
    }
    found
}

/// A source tree of `n` small files in nested folders, two equal files, and one large file (above
/// the registry's inline limit of 64 KiB in these tests, so it goes through the presigned path).
pub fn source_tree(root: &std::path::Path, n: usize, large: usize) {
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

pub fn json_out(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub const SMALL_INLINE: [(&str, &str); 1] = [("HELIX_INLINE_MAX", "65536")];

/// `helix push SRC` as `demo/model@1`, as `token`; its JSON answer (the push must succeed).
pub fn push_model(data: &std::path::Path, url: &str, token: &str, src: &std::path::Path) -> serde_json::Value {
    json_out(
        &client(data, url, token)
            .args(["push", src.to_str().unwrap(), "--workspace", "demo", "--name", "model", "--version", "1", "--json"])
            .output()
            .unwrap(),
    )
}

/// `push_model`, then approved by another user (an approver of `demo`).
pub fn push_approved_model(data: &std::path::Path, url: &str, publisher: &str, src: &std::path::Path) {
    push_model(data, url, publisher, src);
    let approver = issue_token(data, "bob", "approver");
    let approved = client(data, url, &approver).args(["governance", "approve", "demo/model@1"]).output().unwrap();
    assert!(approved.status.success(), "{}", String::from_utf8_lossy(&approved.stderr));
}

/// A fresh `helix serve` with the 64 KiB inline limit, its admin token and a publisher of `demo`:
/// (temp dir, data dir, server, URL, admin, publisher).
pub fn small_inline_registry() -> (tempfile::TempDir, std::path::PathBuf, Serve, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, url, lines) = serve_with(&data, &SMALL_INLINE, "127.0.0.1:0");
    let admin = lines.iter().find_map(|l| l.strip_prefix("admin token: ")).unwrap().to_owned();
    let publisher = issue_token(&data, "ada", "publisher");
    (dir, data, server, url, admin, publisher)
}
