//! The docs cannot rot: the command blocks marked `<!-- drill -->` in docs/runbook.md and README.md
//! run, in order and as written, against a fresh `helix serve`, and what each must have done is
//! checked on its output.

mod common;

use std::process::Command;

use common::*;

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
    assert!(said.contains("ok: demo/model@1 (manifest sha256:"), "the partner verified the evidence pack:\n{said}");
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
