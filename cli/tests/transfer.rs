//! `helix push` and `helix pull` against a running registry: round trips of many files and a large
//! one, resuming an interrupted push, refusing tampered downloads and anything that would write
//! outside the destination, a bounded number of open files, and refusals that name their reason.

mod common;

use std::process::{Command, Stdio};

use common::*;

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
    // 400 files: the manifest stays under the 64 KiB body limit these tests set. Each is made 8 KiB,
    // so that a batch (at most the registry's inline_max, 64 KiB here) holds 8 of them: 50 batches.
    source_tree(&src, 400, 1024);
    for i in 0..400 {
        let path = src.join(format!("part-{}/deep/f{i}.txt", i % 7));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.resize(8 * 1024, b'.');
        std::fs::write(&path, bytes).unwrap();
    }
    let push = || {
        let mut cmd = client(&data, &url, &publisher);
        cmd.args(["push", src.to_str().unwrap(), "--workspace", "demo", "--name", "model", "--version", "1"])
            .args(["--jobs", "1", "--json"]);
        cmd
    };
    // What the registry holds linked (an exact counter), whatever the store holds beside it.
    let linked = || -> u64 {
        let metrics = Command::new("curl").args(["-s", &format!("{url}/metrics")]).output().unwrap();
        String::from_utf8_lossy(&metrics.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("helix_blobs "))
            .expect("helix_blobs")
            .trim()
            .parse()
            .unwrap()
    };
    // Interrupted (Ctrl-C) once some blobs are linked (a batch's links commit together), long before
    // the 403 files are through: batches of 64 KiB here (the registry's inline_max), 64 files each.
    let first = push().stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while linked() == 0 {
        assert!(std::time::Instant::now() < deadline, "the push linked nothing");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let interrupt = Command::new("kill").args(["-INT", &first.id().to_string()]).status().unwrap();
    assert!(interrupt.success());
    let out = first.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("interrupted: demo/model@1 was not registered; run the same helix push again to resume"),
        "Ctrl-C says how to go on: {err}"
    );
    let stored = files_under(&data.join("blobs")).len();
    assert!(stored < 400, "the push was interrupted midway ({stored} stored)");
    let version = format!("{url}/v1/workspaces/demo/bundles/model/versions/1");
    assert_eq!(get_status(&publisher, &version), "404", "not registered yet");

    let linked = linked();
    assert!(linked > 0 && linked < 402, "{linked} linked");

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
    // A malformed argument is a usage error: exit 2, before anything is asked.
    let (code, err) = push(&publisher, "Not_A_Workspace", &src);
    assert!(code == Some(2) && err.starts_with("helix: --workspace: "), "{err}");
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
