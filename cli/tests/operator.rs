//! Operator commands on the data dir: `helix backup` and `helix restore` (which refuse what they
//! cannot prove), `helix freeze` written straight into the store, and `helix smoke`'s token, never
//! taken from argv.

mod common;

use std::process::Command;

use common::*;

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

/// `helix smoke --backup-restore` serves the restored copy inside itself: that registry's request logs
/// go to a file it names (--server-log), never between the report's lines on the terminal.
#[test]
fn smoke_backup_restore_keeps_the_restored_registrys_logs_out_of_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, url, lines) = serve(&data);
    let admin = lines.iter().find_map(|l| l.strip_prefix("admin token: ")).unwrap().to_owned();
    let log = dir.path().join("restored.log");
    let out = helix(&data)
        .env("HELIX_TOKEN", &admin)
        .args(["smoke", "--url", &url, "--backup-restore", "--work-dir", dir.path().to_str().unwrap()])
        .args(["--server-log", log.to_str().unwrap()])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.lines().all(|l| l.starts_with("ok ")), "the report only:\n{stdout}");
    assert!(stdout.contains("restored-serve") && stdout.contains("restored-audit"), "{stdout}");
    // On stderr: where the logs went and the verdict, nothing else.
    let stderr_lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(stderr_lines.len(), 2, "{stderr}");
    assert_eq!(stderr_lines[0], format!("the restored registry's logs: {}", log.display()));
    assert!(stderr_lines[1].starts_with("smoke passed"), "{stderr}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.lines().any(|l| l.contains("\"request\"") && l.contains("/v1/status")), "{logged}");

    // Without --server-log the log is the smoke's own scratch file in the temp dir: a passing run
    // leaves nothing there and names nothing.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = helix(&data)
        .env("HELIX_TOKEN", &admin)
        .env("TMPDIR", &tmp)
        .args(["smoke", "--url", &url, "--backup-restore", "--work-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.lines().count() == 1 && stderr.starts_with("smoke passed"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "the temp dir after a passing smoke: {left:?}");
}
