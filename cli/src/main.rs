//! `helix`: the local server and the operator commands.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use helix_cli::client::ClientError;
use helix_cli::serve::Server;
use helix_core::config::{BlobBackend, MetaBackend, SignerBackend};
use helix_core::domain::token::parse_ttl;
use helix_core::domain::{Role, Scope};
use helix_core::tokens::{self, Grant, TokenRef};
use helix_core::{App, Config, Mode};

#[derive(Parser)]
#[command(name = "helix", version, about = "Helix Registry: local server and operator commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every route in one process (embedded backend unless the environment names AWS).
    Serve {
        /// Address to listen on (env HELIX_LISTEN; default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Teams and credentials.
    Teams {
        #[command(subcommand)]
        command: TeamsCommand,
    },
    /// Governance receipts.
    Governance {
        #[command(subcommand)]
        command: GovernanceCommand,
    },
    /// The audit trail: search it (a registry), export and verify its days.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The registry's posture and whether it answers: URL, readiness, governance mode, blob backend,
    /// signer key id, frozen, who the token is (never a secret). HELIX_URL and HELIX_TOKEN.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish a directory as a bundle version: hash every file, upload what the workspace lacks
    /// (inline when small, presigned when large, a few at a time), register the manifest. A re-run
    /// after an interrupt uploads only what is still missing. HELIX_URL and HELIX_TOKEN (a publisher).
    Push {
        dir: std::path::PathBuf,
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        #[command(flatten)]
        transfer: TransferArgs,
    },
    /// Download a bundle version into DIR: each file is verified against its digest before it is
    /// renamed into place; files already there with the right content are kept.
    Pull {
        /// WORKSPACE/NAME@VERSION
        bundle: String,
        dir: std::path::PathBuf,
        #[command(flatten)]
        transfer: TransferArgs,
    },
    /// The whole lifecycle against a running or deployed registry, in a workspace of its own, each step
    /// timed: ready, status, tokens, publish small and large, approve, export, verify, fetch, audit (and
    /// backup, restore and the restored registry with --backup-restore), revoke. Exit 1 names the step
    /// that failed.
    Smoke {
        #[command(flatten)]
        args: SmokeArgs,
    },
    /// Freeze the registry straight in its store (as `helix teams` writes: HELIX_DATA_DIR, or the AWS
    /// tables with AWS credentials), for when its API is down or not serving yet (restored tables).
    /// Over HTTP, `POST /v1/admin/freeze` does the same. Audited as `registry.freeze` by `cli:$USER`.
    Freeze {
        #[arg(long)]
        reason: String,
    },
    /// The signing-key history straight in the store (see `helix freeze`): list, retire.
    Keys {
        #[command(subcommand)]
        command: helix_cli::keys::KeysCommand,
    },
    /// Unfreeze the registry straight in its store (see `helix freeze`).
    Unfreeze {
        #[arg(long)]
        reason: String,
    },
    /// Back up the embedded backend's data dir (HELIX_DATA_DIR) into a new directory, consistently,
    /// while `helix serve` runs: the SQLite snapshot first, then the blobs, the signing key and the
    /// presigning secret. On AWS use point-in-time recovery and S3 versions (docs/deploy.md).
    Backup {
        /// The new directory (must not exist, or be empty).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Restore a backup into HELIX_DATA_DIR, which must not exist or be empty (never over data).
    Restore {
        /// The backup directory (`helix backup --out`).
        #[arg(long)]
        from: std::path::PathBuf,
    },
    /// The official export: the registry checks integrity and governance and signs an export receipt;
    /// the receipt is saved and the proof URLs (valid 5 minutes) printed. An unreachable registry fails
    /// closed (exit 3), unless HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT=1 and --reason are given: then
    /// a local record is written and reported to the audit trail once the registry answers again.
    Export {
        /// WORKSPACE/NAME@VERSION
        bundle: String,
        /// Where to save the signed receipt (default NAME-VERSION.export-receipt.json).
        #[arg(long)]
        receipt: Option<std::path::PathBuf>,
        /// Why an unregistered export cannot wait (needed with the override).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct SmokeArgs {
    /// The registry (https, or http on loopback); default HELIX_URL.
    #[arg(long)]
    url: Option<String>,
    /// An admin token whose grant covers every workspace; default HELIX_TOKEN.
    #[arg(long)]
    token: Option<String>,
    /// Also back up the registry's data dir (HELIX_DATA_DIR, embedded backend), restore it into a
    /// fresh one, and prove the restored registry serves the same data and its audit chain verifies.
    #[arg(long)]
    backup_restore: bool,
    /// Where the run's files go (the backup and restored copies with --backup-restore: twice the data
    /// dir); default the system's temp dir. Removed at the end.
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct TransferArgs {
    /// Files transferred at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    quiet: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl TransferArgs {
    fn options(&self) -> helix_cli::transfer::Options {
        helix_cli::transfer::Options { jobs: self.jobs.into(), quiet: self.quiet, inline_max: None }
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Search a registry's audit trail (GET /v1/audit, every page): one line per event, or JSON Lines.
    /// HELIX_URL and HELIX_TOKEN (an approver for a workspace, an admin of `*` for all).
    Query {
        /// 7d, 12h, 30m ago, or an RFC 3339 time, or a day.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// e.g. bundle.export, token.issue, registry.freeze.
        #[arg(long)]
        action: Option<String>,
        /// A workspace, or `*` for the global stream; every workspace when left out (admins).
        #[arg(long)]
        workspace: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// Print JSON Lines (one event per line, as the registry stores it).
        #[arg(long)]
        json: bool,
    },
    /// Export a settled UTC day (and every missing day before it) with the export code the schedule
    /// runs: under the data dir on the embedded backend, to the bucket with AWS variables. Prints
    /// the report as JSON.
    Export {
        /// The day, YYYY-MM-DD (default: yesterday, UTC).
        #[arg(long)]
        day: Option<String>,
    },
    /// Verify exported days offline: event hashes, gapless seq per stream, the chain across days from
    /// the genesis, manifests and checkpoint signatures, against keys you pin (--public-key,
    /// --key-fingerprint or --registry; one is required). Exit 0 with a one-line summary, 1 with a
    /// one-line reason, 2 without a pinned key.
    Verify {
        /// A directory holding the export (the `audit/` directory, or its parent: a data dir's
        /// `blobs/`, or a copy made with `aws s3 sync s3://BUCKET/PREFIXaudit/ DIR`).
        #[arg(long, conflicts_with = "bucket", required_unless_present = "bucket")]
        dir: Option<std::path::PathBuf>,
        /// Read the export from this bucket instead (AWS credentials and endpoint from the environment).
        #[arg(long)]
        bucket: Option<String>,
        /// The registry's key prefix in the bucket (HELIX_S3_PREFIX); `audit/` follows it.
        #[arg(long, default_value = "", requires = "bucket")]
        prefix: String,
        /// A registry public key (PEM) to trust; repeat it for earlier keys.
        #[arg(long, conflicts_with = "registry")]
        public_key: Vec<std::path::PathBuf>,
        /// Trust the key the export carries (`keys/<hex>.pem`) whose key id is this `sha256:…`
        /// fingerprint (GET /v1/governance/public-key shows it); repeat it for earlier keys.
        #[arg(long, conflicts_with = "registry", value_parser = helix_cli::client::key_fingerprint)]
        key_fingerprint: Vec<String>,
        /// Trust the keys this registry publishes (GET /v1/governance/public-key: current and previous).
        #[arg(long)]
        registry: Option<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum GovernanceCommand {
    /// Approve a bundle version (an approver other than who registered it). Prints the signed receipt's
    /// seq, or the receipt itself with --json. HELIX_URL and HELIX_TOKEN: identity and role come from
    /// the token.
    Approve {
        /// WORKSPACE/NAME@VERSION
        bundle: String,
        #[arg(long)]
        json: bool,
    },
    /// Reject a bundle version (final).
    Reject {
        /// WORKSPACE/NAME@VERSION
        bundle: String,
        #[arg(long)]
        json: bool,
    },
    /// An emergency waiver (a safety reviewer): lets exactly this export transition go through while
    /// the version is not approved, until it expires.
    Waive {
        /// WORKSPACE/NAME@VERSION
        bundle: String,
        /// The export transition id the waiver covers (sha256:…; GET …/governance shows it).
        #[arg(long)]
        transition: String,
        #[arg(long, default_value = "export_unapproved")]
        scope: String,
        /// The justification, or @FILE to read it from a file (at most 2048 bytes).
        #[arg(long)]
        justification: String,
        /// 90s, 45m, 12h, 7d (at most 7 days; the registry's default is 24 h).
        #[arg(long)]
        expires_in: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Verify a receipt, a list of receipts or a whole ledger (GET .../governance) offline: signatures,
    /// seq and prev chain, transition ids, and the state it yields. Exit 0 with a one-line summary, or
    /// 1 with a one-line reason.
    Verify {
        /// The JSON file.
        file: std::path::PathBuf,
        /// A registry public key (PEM), as GET /v1/governance/public-key gives it; repeat it for the
        /// keys of earlier rotations.
        #[arg(long, conflicts_with = "registry", required_unless_present = "registry")]
        public_key: Vec<std::path::PathBuf>,
        /// Fetch the public key from this registry instead (https, or http on loopback).
        #[arg(long)]
        registry: Option<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TeamsCommand {
    /// Issue an API token straight into the configured store and print it once.
    Token {
        #[arg(long)]
        user: String,
        /// viewer, publisher, approver, safety_reviewer or admin.
        #[arg(long)]
        role: String,
        /// A workspace id, or '*' for every workspace.
        #[arg(long = "workspace-id")]
        workspace_id: String,
        /// Lifetime: 90s, 45m, 12h, 30d. No expiry if omitted.
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Disable a token now (incident response): refused from its very next request, on every function.
    Revoke {
        /// The token id (tok_…).
        #[arg(long, conflicts_with = "sha256", required_unless_present = "sha256")]
        id: Option<String>,
        /// The hex SHA-256 of the secret (what logs and audit events show).
        #[arg(long)]
        sha256: Option<String>,
    },
    /// List tokens (never secrets), one per line.
    List {
        /// Print JSON Lines (one token record per line).
        #[arg(long)]
        json: bool,
    },
}

fn operator() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

#[tokio::main]
async fn main() -> ExitCode {
    helix_core::telemetry::init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helix: {e}");
            match e.downcast_ref::<ClientError>() {
                Some(c) => ExitCode::from(c.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// Print `text` to stdout; a reader that stops early (`| head`) ends the output quietly.
fn out(text: &str) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

async fn status(json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let registry = helix_cli::export::connect().await?;
    let ready = registry.get("/readyz").await;
    let ready = match ready {
        Err(ClientError::Unreachable(e)) => return Err(ClientError::Unreachable(e).into()),
        // 503 with the dependencies is still an answer.
        Err(ClientError::Refused { .. }) => false,
        Err(e) => return Err(e.into()),
        Ok(r) => r["ready"].as_bool().unwrap_or(false),
    };
    let (posture, whoami) = if registry.has_token() {
        (Some(registry.get("/v1/status").await?), Some(registry.get("/v1/whoami").await?))
    } else {
        (None, None)
    };
    if json {
        let doc = serde_json::json!({"url": registry.url, "reachable": true, "ready": ready, "status": posture, "whoami": whoami});
        return out(&doc.to_string());
    }
    let mut rows = vec![
        ["registry".to_owned(), registry.url.clone()],
        ["reachable".into(), "yes".into()],
        ["ready".into(), if ready { "yes" } else { "no (see /readyz)" }.into()],
    ];
    match (&posture, &whoami) {
        (Some(p), Some(w)) => {
            let s = |k: &str| p[k].as_str().map(str::to_owned).unwrap_or_else(|| p[k].to_string());
            let frozen = if p["frozen"] == true {
                format!("YES: {} (since {})", s_of(&p["freeze"]["reason"]), s_of(&p["freeze"]["at"]))
            } else {
                "no".into()
            };
            rows.extend([
                ["governance mode".into(), s("governance_mode")],
                [
                    "blob backend".into(),
                    format!("{} ({}{})", s("blob_backend"), s("blob_location"), s_of(&p["blob_prefix"])),
                ],
                ["strict no-overwrite".into(), s("strict_no_overwrite")],
                ["meta backend".into(), s("meta_backend")],
                ["signer key id".into(), s("signer_key_id")],
                ["frozen".into(), frozen],
                [
                    "whoami".into(),
                    format!(
                        "{} ({} on {}, {})",
                        s_of(&w["user"]),
                        s_of(&w["role"]),
                        s_of(&w["workspace_id"]),
                        s_of(&w["credential_id"])
                    ),
                ],
            ]);
        }
        _ => rows.push(["whoami".into(), "no HELIX_TOKEN: posture not shown".into()]),
    }
    print_table(&rows)
}

/// `helix freeze` / `helix unfreeze`: the switch, straight in the configured store.
async fn switch(config: &Config, frozen: bool, reason: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (meta, _audit) = helix_core::app::meta_store(config).await?;
    let (state, moved) = helix_core::freeze::record(meta.as_ref(), &operator(), "cli", frozen, reason).await?;
    let what = if state.frozen { "frozen" } else { "not frozen" };
    let how = if moved { "now" } else { "already" };
    out(&format!("the registry is {how} {what}: {}", state.reason.unwrap_or_default()))
}

async fn smoke(config: &Config, args: SmokeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let url = args.url.or_else(|| std::env::var("HELIX_URL").ok()).ok_or("--url or HELIX_URL: the registry")?;
    let token =
        args.token.or_else(|| std::env::var("HELIX_TOKEN").ok()).ok_or("--token or HELIX_TOKEN: an admin token")?;
    let embedded = config.meta_backend == MetaBackend::Sqlite
        && config.blob_backend == BlobBackend::Fs
        && config.signer_backend == SignerBackend::Local;
    if args.backup_restore && !embedded {
        return Err("--backup-restore needs the embedded backend (HELIX_DATA_DIR on this machine); on AWS follow the drill in docs/deploy.md".into());
    }
    let smoke = helix_cli::smoke::Smoke {
        url,
        token,
        backup_restore: args.backup_restore.then(|| config.data_dir.clone()),
        work_dir: args.work_dir,
    };
    let report = helix_cli::smoke::run(smoke).await.map_err(|e| e.to_string())?;
    if args.json {
        out(&serde_json::to_string(&report)?)?;
    } else {
        let rows: Vec<[String; 4]> = report
            .steps
            .iter()
            .map(|s| {
                [if s.ok { "ok" } else { "FAIL" }.into(), s.step.into(), format!("{:.1} ms", s.ms), s.detail.clone()]
            })
            .collect();
        print_table(&rows)?;
    }
    let total: f64 = report.steps.iter().map(|s| s.ms).sum();
    match report.failed() {
        Some(step) => Err(format!("smoke failed at step {}: {}", step.step, step.detail).into()),
        None => {
            eprintln!(
                "smoke passed: {} steps in {:.0} ms against {} (workspace {})",
                report.steps.len(),
                total,
                report.url,
                report.workspace
            );
            Ok(())
        }
    }
}

fn s_of(v: &serde_json::Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_default()
}

async fn audit_query(
    since: Option<String>,
    until: Option<String>,
    action: Option<String>,
    workspace: Option<String>,
    actor: Option<String>,
    json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use helix_cli::client::q;
    let registry = helix_cli::export::connect().await?;
    let now = time::OffsetDateTime::now_utc();
    let mut query = String::from("limit=1000");
    let since = since.map(|s| helix_cli::client::since(&s, now)).transpose()?;
    for (k, v) in
        [("since", &since), ("until", &until), ("action", &action), ("workspace", &workspace), ("actor", &actor)]
    {
        if let Some(v) = v {
            query.push_str(&format!("&{k}={}", q(v)));
        }
    }
    let mut cursor: Option<String> = None;
    loop {
        let c = cursor.as_ref().map(|c| format!("&cursor={}", q(c))).unwrap_or_default();
        let page = registry.get(&format!("/v1/audit?{query}{c}")).await?;
        for e in page["events"].as_array().into_iter().flatten() {
            let line = if json {
                e.to_string()
            } else {
                format!(
                    "{}  {}#{}  {}  {}  {}  {}",
                    s_of(&e["ts"]),
                    s_of(&e["stream"]),
                    e["seq"],
                    s_of(&e["actor"]),
                    s_of(&e["action"]),
                    s_of(&e["entity_id"]),
                    s_of(&e["outcome"])
                )
            };
            out(&line)?;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(()),
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::from_env(Mode::Serve)?;
    match cli.command {
        Command::Serve { listen } => {
            let listener = tokio::net::TcpListener::bind(listen.unwrap_or(config.listen))
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", listen.unwrap_or(config.listen)))?;
            config.listen = listener.local_addr()?;
            if std::env::var("HELIX_PUBLIC_URL").is_err() {
                config.public_url = format!("http://{}", config.listen);
            }
            let fresh = config.meta_backend == MetaBackend::Sqlite
                && !config.data_dir.join(helix_core::app::SQLITE_FILE).exists();
            let app = Arc::new(App::build(config).await?);
            let server = Server::start(app.clone(), listener);
            let url = server.url();
            println!("Helix Registry listening on {url}");
            println!(
                "  blobs: {}  meta: {}  signer: {}",
                app.blobs.info().backend,
                app.meta.backend(),
                app.signer.backend()
            );
            if fresh {
                let grant = Grant {
                    user: "admin".into(),
                    role: Role::Admin,
                    workspace_id: Scope::All,
                    ttl_seconds: None,
                    description: Some("first-start admin token".into()),
                };
                let (secret, record) =
                    tokens::issue(app.meta.as_ref(), grant, "helix-serve:bootstrap", "bootstrap").await?;
                print_first_start(&url, secret.expose(), &record.id, &app.config.data_dir.display().to_string());
            } else if app.config.meta_backend == MetaBackend::Sqlite {
                println!(
                    "  data dir: {} (existing; issue tokens with `helix teams token`)",
                    app.config.data_dir.display()
                );
            } else {
                let c = &app.config;
                println!(
                    "  tables: {} and {} (existing; issue tokens with `helix teams token`)",
                    c.table, c.audit_table
                );
                if c.blob_backend == BlobBackend::Fs || c.signer_backend == SignerBackend::Local {
                    println!("  data dir: {} (blobs or signing key)", c.data_dir.display());
                }
            }
            tokio::signal::ctrl_c().await?;
            drop(server);
            // This process's request counts since its last flush (docs/architecture.md, "Metrics").
            app.metrics.flush(app.meta.as_ref()).await;
            Ok(())
        }
        Command::Teams { command } => teams(&config, command).await,
        Command::Audit { command } => audit(config, command).await,
        Command::Status { json } => status(json).await,
        Command::Smoke { args } => smoke(&config, args).await,
        Command::Freeze { reason } => switch(&config, true, &reason).await,
        Command::Keys { command } => out(&helix_cli::keys::run(config, command, &operator()).await?),
        Command::Unfreeze { reason } => switch(&config, false, &reason).await,
        Command::Backup { out: dir } => {
            let m = helix_cli::backup::backup(&config.data_dir, &dir)?;
            out(&format!(
                "backed up {} into {}: schema {}, {} blob file(s), {} bytes, database {}",
                config.data_dir.display(),
                dir.display(),
                m["schema_version"],
                m["blob_files"],
                m["blob_bytes"],
                s_of(&m["files"]["helix.db"])
            ))
        }
        Command::Restore { from } => {
            let r = helix_cli::backup::restore(&from, &config.data_dir)?;
            out(&format!(
                "restored {} into {} ({} blob file(s) checked against their digests); start it with `helix serve` (HELIX_DATA_DIR={})",
                from.display(),
                config.data_dir.display(),
                r["checked"]["blobs_checked"],
                config.data_dir.display()
            ))
        }
        Command::Push { dir, workspace, name, version, transfer } => {
            use helix_core::domain::{BundleName, WorkspaceId};
            let ws = WorkspaceId::parse(&workspace).map_err(|e| format!("--workspace: {e}"))?;
            let name = BundleName::parse(&name).map_err(|e| format!("--name: {e}"))?;
            let version = BundleName::parse(&version).map_err(|e| format!("--version: {e}"))?;
            let registry = helix_cli::export::connect().await?;
            let a = helix_cli::transfer::push(&registry, &dir, &ws, &name, &version, transfer.options()).await?;
            if transfer.json {
                return out(&a.to_string());
            }
            out(&format!(
                "pushed {ws}/{name}@{version}: {} file(s), {}; uploaded {} ({}), {} already in {ws}; manifest {}, state {}",
                a["files"],
                helix_cli::transfer::bytes(a["bytes"].as_u64().unwrap_or(0)),
                a["uploaded_files"],
                helix_cli::transfer::bytes(a["uploaded_bytes"].as_u64().unwrap_or(0)),
                a["present_files"],
                s_of(&a["manifest_digest"]),
                s_of(&a["state"])
            ))
        }
        Command::Pull { bundle, dir, transfer } => {
            let (ws, name, version) = helix_cli::client::bundle_parts(&bundle)?;
            let registry = helix_cli::export::connect().await?;
            // Ctrl-C or SIGTERM drops the downloads in flight, so their temporary files are removed.
            let pulled = helix_cli::transfer::pull(&registry, &ws, &name, &version, &dir, transfer.options());
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let interrupted = || "interrupted: no partial file was left; pull again to resume";
            let a = tokio::select! {
                a = pulled => a?,
                _ = tokio::signal::ctrl_c() => return Err(interrupted().into()),
                _ = term.recv() => return Err(interrupted().into()),
            };
            if transfer.json {
                return out(&a.to_string());
            }
            out(&format!(
                "pulled {bundle} into {}: {} file(s) verified; downloaded {} ({}), {} already in place; manifest {}, state {}",
                dir.display(),
                a["files"],
                a["downloaded_files"],
                helix_cli::transfer::bytes(a["downloaded_bytes"].as_u64().unwrap_or(0)),
                a["kept_files"],
                s_of(&a["manifest_digest"]),
                s_of(&a["state"])
            ))
        }
        Command::Export { bundle, receipt, reason, json } => {
            use helix_cli::export::{Exported, export, warning};
            let registry = helix_cli::export::connect().await?;
            match export(&registry, &bundle, receipt, reason.as_deref()).await? {
                Exported::Official { answer, receipt } => {
                    if json {
                        return out(&answer.to_string());
                    }
                    let mut lines = vec![format!(
                        "exported {bundle} (governance: {}), receipt seq {} saved to {}",
                        s_of(&answer["governance"]),
                        answer["seq"],
                        receipt.display()
                    )];
                    lines.push(format!("manifest  {}", s_of(&answer["proof"]["manifest"]["url"])));
                    for f in answer["proof"]["files"].as_array().into_iter().flatten() {
                        let url = f["url"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| format!("(fetch by digest {})", s_of(&f["digest"])));
                        lines.push(format!("{}  {url}", s_of(&f["path"])));
                    }
                    out(&lines.join("\n"))
                }
                Exported::Unregistered { record, file } => {
                    eprintln!("{}", warning(&record, &file));
                    if json {
                        return out(
                            &serde_json::json!({"unregistered": true, "record": record, "file": file}).to_string()
                        );
                    }
                    out(&format!("UNREGISTERED export of {bundle}: record {}", file.display()))
                }
            }
        }
        Command::Governance { command: GovernanceCommand::Approve { bundle, json } } => {
            decide(&bundle, "approve", serde_json::json!({}), json).await
        }
        Command::Governance { command: GovernanceCommand::Reject { bundle, json } } => {
            decide(&bundle, "reject", serde_json::json!({}), json).await
        }
        Command::Governance {
            command: GovernanceCommand::Waive { bundle, transition, scope, justification, expires_in, json },
        } => {
            let justification = match justification.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path).map_err(|e| format!("--justification {path}: {e}"))?,
                None => justification,
            };
            let mut body =
                serde_json::json!({"transition": transition, "scope": scope, "justification": justification});
            if let Some(e) = expires_in {
                body["expires_in_seconds"] = serde_json::json!(helix_cli::client::duration_seconds(&e)?);
            }
            decide(&bundle, "waivers", body, json).await
        }
        Command::Governance { command: GovernanceCommand::Verify { file, public_key, registry, json } } => {
            let keys = helix_cli::client::load_keys(registry.as_deref(), &public_key).await?;
            let document = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let (receipts, whole) =
                helix_core::governance::receipts_in(&document).map_err(|e| format!("invalid: {e}"))?;
            let verified = helix_core::governance::verify_receipts(&receipts, &keys, whole)
                .map_err(|e| format!("invalid: {e}"))?;
            if json {
                return out(&serde_json::json!({"ok": true, "receipts": verified.receipts, "bundle": verified.bundle,
                    "first_seq": verified.first_seq, "state": verified.state.map(|s| s.as_str()),
                    "signed_by": signers(&verified.statements)})
                .to_string());
            }
            let state = verified.state.map(|s| format!(", state {}", s.as_str())).unwrap_or_default();
            println!(
                "ok: {} receipt(s) of {} from seq {}{state}, signed by {}",
                verified.receipts,
                verified.bundle,
                verified.first_seq,
                signers(&verified.statements)
            );
            Ok(())
        }
    }
}

async fn audit(config: Config, command: AuditCommand) -> Result<(), Box<dyn std::error::Error>> {
    use helix_core::audit_export;
    use helix_core::audit_verify::{self, DirEvidence, Evidence, S3Evidence};
    match command {
        AuditCommand::Query { since, until, action, workspace, actor, json } => {
            audit_query(since, until, action, workspace, actor, json).await?;
        }
        AuditCommand::Export { day } => {
            let now = time::OffsetDateTime::now_utc();
            let day = match day {
                Some(d) => audit_export::parse_day(&d)?,
                None => now.date().previous_day().ok_or("no day before today")?,
            };
            let app = App::build(config).await?;
            let request_id = helix_core::http::new_request_id();
            // No per-run bound here (the scheduled function has one: its time limit).
            let report = audit_export::export_through(&app, day, now, &request_id, usize::MAX).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        AuditCommand::Verify { dir, bucket, prefix, public_key, key_fingerprint, registry, json } => {
            if public_key.is_empty() && key_fingerprint.is_empty() && registry.is_none() {
                // The export's own keys/*.pem prove nothing: whoever rewrites a day replaces them too.
                use clap::CommandFactory;
                Cli::command()
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "helix audit verify needs a key to trust: pin the registry's key with --public-key \
                         FILE.pem, --key-fingerprint sha256:HEX (its key_id, from GET /v1/governance/public-key), \
                         or --registry URL; the keys an export carries are not evidence on their own",
                    )
                    .exit();
            }
            let evidence: Box<dyn Evidence> = match (dir, bucket) {
                (Some(dir), _) => Box::new(DirEvidence::open(dir)?),
                (None, Some(bucket)) => {
                    Box::new(S3Evidence { client: helix_core::app::s3_client(&config).await, bucket, prefix })
                }
                (None, None) => unreachable!("clap requires one"),
            };
            let mut keys = helix_cli::client::load_keys(registry.as_deref(), &public_key).await?;
            for fingerprint in &key_fingerprint {
                // The export's key file of a pinned fingerprint: its content must hash to that id.
                let k = format!("keys/{}.pem", fingerprint.trim_start_matches("sha256:"));
                let pem = evidence
                    .read(&k)
                    .await?
                    .ok_or_else(|| format!("invalid: {k} (key {fingerprint}) is not in the export"))?;
                let key = helix_core::keys::public_key_from_pem(&String::from_utf8_lossy(&pem))?;
                if key.key_id != *fingerprint {
                    return Err(format!("invalid: {k} holds key {}, not the pinned {fingerprint}", key.key_id).into());
                }
                keys.push(key);
            }
            let summary = audit_verify::verify(evidence.as_ref(), &keys).await.map_err(|e| format!("invalid: {e}"))?;
            if json {
                println!("{}", serde_json::json!({"ok": true, "keys_pinned": true, "summary": summary}));
            } else {
                println!(
                    "ok: {} day(s) {}..{}, {} event(s) in {} stream(s), chain unbroken from the genesis, signed by {}",
                    summary.days,
                    summary.first_day,
                    summary.last_day,
                    summary.events,
                    summary.streams,
                    summary.key_ids.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// POST a governance decision and print its receipt (seq and kind, or the whole answer with --json).
async fn decide(
    bundle: &str,
    what: &str,
    body: serde_json::Value,
    json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let registry = helix_cli::export::connect().await?;
    let path = format!("{}/{what}", helix_cli::client::version_path(bundle)?);
    let answer = registry.post(&path, &body).await?;
    if json {
        return out(&answer.to_string());
    }
    use base64::Engine;
    let payload = answer["receipt"]["payload"].as_str().unwrap_or_default();
    let statement: serde_json::Value = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or_default();
    out(&format!(
        "{} receipt seq {} for {bundle}: {} -> {} by {} ({}), key {}",
        s_of(&statement["kind"]),
        answer["seq"],
        s_of(&statement["from"]),
        s_of(&statement["to"]),
        s_of(&statement["user"]),
        s_of(&statement["role"]),
        s_of(&statement["key_id"])
    ))
}

/// The key ids that signed `statements`, in order of first use.
fn signers(statements: &[helix_core::governance::Statement]) -> String {
    let mut ids: Vec<&str> = Vec::new();
    for s in statements {
        if !ids.contains(&s.key_id.as_str()) {
            ids.push(&s.key_id);
        }
    }
    ids.join(", ")
}

async fn teams(config: &Config, command: TeamsCommand) -> Result<(), Box<dyn std::error::Error>> {
    let (meta, _audit) = helix_core::app::meta_store(config).await?;
    match command {
        TeamsCommand::Token { user, role, workspace_id, ttl, description } => {
            let grant = Grant {
                user,
                role: role.parse::<Role>()?,
                workspace_id: Scope::parse(&workspace_id)?,
                ttl_seconds: ttl.as_deref().map(parse_ttl).transpose()?,
                description,
            };
            let (secret, record) = tokens::issue(meta.as_ref(), grant, &operator(), "cli").await?;
            eprintln!(
                "issued {} for {} ({} on {}); the secret is shown once:",
                record.id, record.user, record.role, record.workspace_id
            );
            println!("{}", secret.expose());
        }
        TeamsCommand::Revoke { id, sha256 } => {
            let target = match (id, sha256) {
                (Some(id), _) => TokenRef::Id(id),
                (None, Some(sha)) => TokenRef::Sha256(sha),
                (None, None) => unreachable!("clap requires one"),
            };
            let revoked = tokens::revoke(meta.as_ref(), target, None, &operator(), "cli").await?;
            let record = &revoked.token;
            let what = if revoked.changed { "revoked" } else { "was already revoked:" };
            println!("{what} {} ({} {} on {})", record.id, record.user, record.role, record.workspace_id);
            for id in &revoked.successors {
                println!("revoked {id} too: {} had been rotated into it", record.id);
            }
        }
        TeamsCommand::List { json } => {
            let now = helix_core::domain::time::now_unix();
            let listed: Vec<_> = tokens::list(meta.as_ref(), None)
                .await?
                .into_iter()
                .map(|t| {
                    let state = match t.refusal(now) {
                        Some(helix_core::Error::TokenRevoked) => "revoked",
                        Some(_) => "expired",
                        None => "active",
                    };
                    (t, state)
                })
                .collect();
            if json {
                let lines: Vec<String> = listed
                    .iter()
                    .map(|(t, state)| {
                        serde_json::json!({"id": t.id, "user": t.user, "role": t.role.to_string(),
                            "workspace_id": t.workspace_id.to_string(), "state": state, "expires_at": t.expires_at,
                            "sha256": t.sha256})
                        .to_string()
                    })
                    .collect();
                return out(&lines.join("\n"));
            }
            let mut rows = vec![["id", "user", "role", "workspace", "state", "expires", "sha256"].map(String::from)];
            for (t, state) in listed {
                let expires =
                    t.expires_at.map(helix_core::domain::time::unix_to_rfc3339).unwrap_or_else(|| "never".into());
                rows.push([
                    t.id,
                    t.user,
                    t.role.to_string(),
                    t.workspace_id.to_string(),
                    state.into(),
                    expires,
                    t.sha256,
                ]);
            }
            print_table(&rows)?;
        }
    }
    Ok(())
}

/// Columns as wide as their widest cell. A reader that stops early (`| head`) ends the listing
/// quietly instead of a panic on the broken pipe.
fn print_table<const N: usize>(rows: &[[String; N]]) -> Result<(), Box<dyn std::error::Error>> {
    let widths: Vec<usize> = (0..N).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> =
                row.iter().enumerate().map(|(c, cell)| format!("{cell:<w$}", w = widths[c])).collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect();
    out(&lines.join("\n"))
}

fn print_first_start(url: &str, token: &str, id: &str, data_dir: &str) {
    println!();
    println!("First start: created data dir {data_dir} and an admin token ({id}). It is shown only now:");
    println!();
    println!("admin token: {token}");
    println!();
    println!("Try it:");
    println!("  export HELIX_URL={url} HELIX_TOKEN={token}");
    println!("  curl -s $HELIX_URL/readyz");
    println!("  curl -s -H \"Authorization: Bearer $HELIX_TOKEN\" $HELIX_URL/v1/status");
    println!("  printf 'hello helix' > hello.txt");
    println!("  DIGEST=sha256:$(sha256sum hello.txt | cut -d' ' -f1)");
    println!(
        "  curl -s -X PUT -H \"Authorization: Bearer $HELIX_TOKEN\" --data-binary @hello.txt $HELIX_URL/v1/workspaces/demo/blobs/$DIGEST"
    );
    println!("  curl -s -H \"Authorization: Bearer $HELIX_TOKEN\" $HELIX_URL/v1/workspaces/demo/blobs/$DIGEST");
    println!(
        "  # a whole folder, and back (the helix CLI: `cargo install --path cli --locked`, or `cargo run -q -p helix-cli --`):"
    );
    println!("  helix push <folder> --workspace demo --name results --version 1");
    println!("  helix pull demo/results@1 results-copy");
    println!();
    println!("Stop with Ctrl-C; data stays in {data_dir}.");
}
