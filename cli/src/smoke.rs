//! `helix smoke --url URL [--token-file FILE] [--backup-restore]` (or the token in HELIX_TOKEN): the
//! whole lifecycle against a running or deployed registry, in a workspace of its own (`smoke-` + random), each step timed. The token must
//! be an admin whose grant covers every workspace: the smoke issues a publisher and an approver for its
//! workspace (separation of duties needs two users) and revokes both at the end, whatever happened.
//!
//! Steps: ready, status, tokens, publish-small (inline), publish-large (presigned; the small files are
//! already there, so only the large one goes up), approve, export, verify (the whole ledger, offline,
//! with the registry's published keys), fetch (pull and compare every byte), audit (the export is in
//! the trail), and with `--backup-restore` (embedded backend, the registry's data dir on this machine):
//! backup, restore into a fresh data dir, restored-serve, restored-data (the same manifest, ledger
//! and bytes), restored-audit (today's audit day exported and verified offline), then revoke.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use helix_core::domain::{BundleName, WorkspaceId};
use serde_json::{Value, json};

use crate::client::Registry;
use crate::transfer::{self, Options};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One timed step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub step: &'static str,
    pub ok: bool,
    pub ms: f64,
    pub detail: String,
}

/// What a run did: every step attempted, in order. The run failed if any step did.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub url: String,
    pub workspace: String,
    pub steps: Vec<Step>,
}

impl Report {
    pub fn failed(&self) -> Option<&Step> {
        self.steps.iter().find(|s| !s.ok)
    }
}

pub struct Smoke {
    pub url: String,
    pub token: String,
    /// `--backup-restore`: the data dir of the registry under test (embedded backend).
    pub backup_restore: Option<PathBuf>,
    /// Where the run's files go (default: the system's temp dir).
    pub work_dir: Option<PathBuf>,
}

struct Run {
    admin: Registry,
    token: String,
    ws: WorkspaceId,
    work: PathBuf,
    steps: Vec<Step>,
    publisher: Option<(Registry, String)>,
    approver: Option<(Registry, String)>,
}

impl Run {
    /// Time `f`; record it as a step. `Err` stops the run (the caller returns).
    async fn step<T>(&mut self, name: &'static str, f: impl AsyncFnOnce(&mut Run) -> Res<(T, String)>) -> Option<T> {
        let started = Instant::now();
        let result = f(self).await;
        let ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        match result {
            Ok((value, detail)) => {
                self.steps.push(Step { step: name, ok: true, ms, detail });
                Some(value)
            }
            Err(e) => {
                self.steps.push(Step { step: name, ok: false, ms, detail: e.to_string() });
                None
            }
        }
    }

    fn publisher(&self) -> &Registry {
        &self.publisher.as_ref().expect("tokens step").0
    }
}

fn write_files(dir: &Path, files: &[(&str, Vec<u8>)]) -> Res<()> {
    for (path, bytes) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("relative path"))?;
        std::fs::write(p, bytes)?;
    }
    Ok(())
}

fn random_bytes(n: usize) -> Res<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// Trees equal: every file of `a` is in `b` with the same bytes, and as many files.
fn same_tree(a: &Path, b: &Path) -> Res<usize> {
    let files = transfer::walk(a)?;
    let theirs = transfer::walk(b)?;
    if files.len() != theirs.len() {
        return Err(format!("{} files pushed, {} pulled", files.len(), theirs.len()).into());
    }
    for f in &files {
        if std::fs::read(&f.abs)? != std::fs::read(b.join(&f.path))? {
            return Err(format!("{} differs after the round trip", f.path).into());
        }
    }
    Ok(files.len())
}

async fn issue(admin: &Registry, ws: &WorkspaceId, user: &str, role: &str) -> Res<(Registry, String)> {
    let body = json!({"user": user, "role": role, "workspace_id": ws.to_string(), "ttl_seconds": 3600,
        "description": "helix smoke (revoked at the end of the run)"});
    let answer = admin.post("/v1/tokens", &body).await?;
    let secret = answer["token"].as_str().ok_or("the token answer has no token")?;
    let id = answer["id"].as_str().ok_or("the token answer has no id")?;
    Ok((admin.with_token(secret), id.to_owned()))
}

/// Verify a ledger document offline with the registry's published keys; its state.
async fn verified_state(registry: &Registry, ledger: &Value) -> Res<(String, usize)> {
    let keys = registry.public_keys().await?;
    let (receipts, whole) = helix_core::governance::receipts_in(&serde_json::to_vec(ledger)?)?;
    let verified = helix_core::governance::verify_receipts(&receipts, &keys, whole)?;
    let state = verified.state.map(|s| s.as_str().to_owned()).ok_or("the ledger yields no state")?;
    Ok((state, verified.receipts))
}

pub async fn run(smoke: Smoke) -> Res<Report> {
    let admin = Registry::new(&smoke.url, Some(smoke.token.clone()))?;
    let mut raw = [0u8; 4];
    getrandom::fill(&mut raw)?;
    let ws = WorkspaceId::parse(&format!("smoke-{}", hex::encode(raw)))?;
    let work = crate::backup::temp_dir(smoke.work_dir.as_deref(), "helix-smoke").map_err(|e| e.to_string())?;
    let mut run = Run {
        admin,
        token: smoke.token.clone(),
        ws,
        work: work.clone(),
        steps: Vec::new(),
        publisher: None,
        approver: None,
    };
    // Ctrl-C stops the lifecycle, not the clean-up.
    let interrupted = tokio::select! {
        _ = lifecycle(&mut run, smoke.backup_restore.as_deref()) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    if interrupted {
        run.steps.push(Step { step: "interrupted", ok: false, ms: 0.0, detail: "Ctrl-C".into() });
    }
    // Whatever happened: the run's tokens are revoked (each on its own), its files removed.
    if run.publisher.is_some() || run.approver.is_some() {
        run.step("revoke", async |r: &mut Run| {
            let mut failures = Vec::new();
            for (_, id) in [r.publisher.take(), r.approver.take()].into_iter().flatten() {
                if let Err(e) = r.admin.post(&format!("/v1/tokens/{id}/revoke"), &json!({})).await {
                    failures.push(format!("{id}: {e}"));
                }
            }
            if !failures.is_empty() {
                return Err(format!("still enabled (revoke them by hand): {}", failures.join("; ")).into());
            }
            Ok(((), "the run's publisher and approver tokens".into()))
        })
        .await;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(Report { url: run.admin.url.clone(), workspace: run.ws.to_string(), steps: run.steps })
}

async fn lifecycle(run: &mut Run, backup_restore: Option<&Path>) -> Option<()> {
    let name = BundleName::parse("smoke").ok()?;
    let (small, v1) = (BundleName::parse("small").ok()?, BundleName::parse("1").ok()?);
    run.step("ready", async |r: &mut Run| {
        let ready = r.admin.get("/readyz").await?;
        match ready["ready"] == true {
            true => Ok(((), "every dependency answers".into())),
            false => Err(format!("not ready: {ready}").into()),
        }
    })
    .await?;
    let inline_max = run
        .step("status", async |r: &mut Run| {
            let s = r.admin.get("/v1/status").await?;
            if s["frozen"] == true {
                return Err(format!("the registry is frozen: {}", s["freeze"]["reason"]).into());
            }
            let inline_max = transfer::inline_max_of(&s);
            let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            let detail = format!(
                "governance {}, blobs {}, signer {}",
                text("governance_mode"),
                text("blob_backend"),
                text("signer_key_id")
            );
            Ok((inline_max, detail))
        })
        .await?;
    let opts = Options { jobs: 4, quiet: true, inline_max: Some(inline_max) };
    run.step("tokens", async |r: &mut Run| {
        r.publisher = Some(issue(&r.admin, &r.ws, "smoke-publisher", "publisher").await?);
        r.approver = Some(issue(&r.admin, &r.ws, "smoke-approver", "approver").await?);
        Ok(((), format!("a publisher and an approver of {}", r.ws)))
    })
    .await?;
    let src = run.work.join("src");
    run.step("publish-small", async |r: &mut Run| {
        let dir = r.work.join("small");
        let files = [("README.txt", b"helix smoke\n".to_vec()), ("data/params.json", br#"{"seed":1}"#.to_vec())];
        write_files(&dir, &files)?;
        write_files(&src, &files)?;
        let a = transfer::push(r.publisher(), &dir, &r.ws, &name, &small, opts).await?;
        Ok(((), format!("{} file(s) inline, {} uploaded", a["files"], a["uploaded_files"])))
    })
    .await?;
    run.step("publish-large", async |r: &mut Run| {
        write_files(&src, &[("model.bin", random_bytes(inline_max as usize + 1)?)])?;
        let a = transfer::push(r.publisher(), &src, &r.ws, &name, &v1, opts).await?;
        if a["uploaded_files"] != 1 || a["present_files"] != 2 {
            return Err(format!("expected 1 upload (the large file) and 2 files present: {a}").into());
        }
        Ok((
            (),
            format!(
                "{} bytes presigned, manifest {}",
                inline_max + 1,
                a["manifest_digest"].as_str().unwrap_or_default()
            ),
        ))
    })
    .await?;
    let base = crate::client::version_path_of(&run.ws, &name, &v1);
    run.step("approve", async |r: &mut Run| {
        let a = r.approver.as_ref().expect("tokens").0.post(&format!("{base}/approve"), &json!({})).await?;
        Ok(((), format!("approval receipt seq {}", a["seq"])))
    })
    .await?;
    run.step("export", async |r: &mut Run| {
        let a = r.publisher().post(&format!("{base}/export"), &json!({})).await?;
        Ok((
            (),
            format!(
                "export receipt seq {} ({}), {} proof URL(s)",
                a["seq"],
                a["governance"].as_str().unwrap_or_default(),
                a["proof"]["files"].as_array().map_or(0, Vec::len)
            ),
        ))
    })
    .await?;
    let ledger = run
        .step("verify", async |r: &mut Run| {
            let ledger = r.publisher().get(&format!("{base}/governance")).await?;
            let (state, n) = verified_state(r.publisher(), &ledger).await?;
            if state != "exported" {
                return Err(format!("the ledger verifies but yields {state}, not exported").into());
            }
            Ok((ledger, format!("{n} receipt(s) verified offline, state {state}")))
        })
        .await?;
    run.step("fetch", async |r: &mut Run| {
        let out = r.work.join("pulled");
        let a = transfer::pull(r.publisher(), &r.ws, &name, &v1, &out, opts).await?;
        let n = same_tree(&src, &out)?;
        Ok(((), format!("{n} file(s), {} bytes, identical", a["downloaded_bytes"])))
    })
    .await?;
    run.step("audit", async |r: &mut Run| {
        let q = format!("/v1/audit?workspace={}&action=bundle.export&limit=10", r.ws);
        let page = r.admin.get(&q).await?;
        let n = page["events"].as_array().map_or(0, Vec::len);
        if n != 1 {
            return Err(format!("{n} bundle.export event(s) in {}, expected 1", r.ws).into());
        }
        Ok(((), "the export is in the workspace's trail".into()))
    })
    .await?;
    let Some(data_dir) = backup_restore else { return Some(()) };
    let backup_dir = run.work.join("backup");
    run.step("backup", async |_: &mut Run| {
        let m = crate::backup::backup(data_dir, &backup_dir).map_err(|e| e.to_string())?;
        Ok((
            (),
            format!(
                "schema {}, {} blob file(s), {} bytes, every linked blob present",
                m["schema_version"], m["blob_files"], m["blob_bytes"]
            ),
        ))
    })
    .await?;
    let restored = run.work.join("restored");
    run.step("restore", async |_: &mut Run| {
        let r = crate::backup::restore(&backup_dir, &restored).map_err(|e| e.to_string())?;
        Ok((
            (),
            format!(
                "{} blob file(s) checked against their digests, into {}",
                r["checked"]["blobs_checked"],
                restored.display()
            ),
        ))
    })
    .await?;
    let (app, server) = run
        .step("restored-serve", async |_: &mut Run| {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            // The embedded backend on the restored dir, whatever this process's environment says.
            let dir = restored.to_string_lossy().into_owned();
            let mut config = helix_core::Config::from_lookup(helix_core::Mode::Serve, |k| {
                (k == "HELIX_DATA_DIR").then(|| dir.clone())
            })?;
            config.listen = listener.local_addr()?;
            config.public_url = format!("http://{}", config.listen);
            let app = Arc::new(helix_core::App::build(config).await?);
            let server = crate::serve::Server::start(app.clone(), listener);
            let detail = server.url().to_string();
            Ok(((app, server), detail))
        })
        .await?;
    let restored_registry = Registry::new(&server.url(), Some(run.token.clone())).ok()?;
    run.step("restored-data", async |r: &mut Run| {
        let (live, there) = (r.admin.get("/v1/status").await?, restored_registry.get("/v1/status").await?);
        if live["signer_key_id"] != there["signer_key_id"] {
            return Err(format!(
                "the restored registry signs with {}, not {}",
                there["signer_key_id"], live["signer_key_id"]
            )
            .into());
        }
        let ledger_there = restored_registry.get(&format!("{base}/governance")).await?;
        if ledger_there != ledger {
            return Err("the restored ledger differs from the live one".into());
        }
        let out = r.work.join("pulled-restored");
        transfer::pull(&restored_registry, &r.ws, &name, &v1, &out, opts).await?;
        let n = same_tree(&src, &out)?;
        Ok(((), format!("same signing key and ledger; {n} file(s) pulled from the restored registry, identical")))
    })
    .await?;
    run.step("restored-audit", async |_: &mut Run| {
        use helix_core::{audit_export, audit_verify};
        // Today's events, exported as if the day were over (into the restored copy only), then
        // verified offline: hashes, gapless streams, the chain from the genesis, the signatures.
        let now = time::OffsetDateTime::now_utc();
        let tomorrow = now.date().next_day().ok_or("no tomorrow")?;
        let as_of = time::OffsetDateTime::new_utc(tomorrow, time::Time::MIDNIGHT) + time::Duration::hours(1);
        audit_export::export_through(&app, now.date(), as_of, "helix-smoke", usize::MAX).await?;
        let keys = helix_core::keys::verification_keys(&app).await?;
        let evidence = audit_verify::DirEvidence::open(restored.join(helix_core::app::BLOB_DIR))?;
        let s = audit_verify::verify(&evidence, &keys).await?;
        Ok(((), format!("{} event(s) in {} stream(s) over {} day(s), chain unbroken", s.events, s.streams, s.days)))
    })
    .await?;
    drop(server);
    Some(())
}
