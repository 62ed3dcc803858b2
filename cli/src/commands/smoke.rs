//! `helix smoke`: the whole lifecycle against a running registry, each step timed.

use helix_core::Config;
use helix_core::config::{BlobBackend, MetaBackend, SignerBackend};

use super::{Res, Usage, out, print_table};

#[derive(clap::Args)]
pub struct SmokeArgs {
    /// The registry (https, or http on loopback); default HELIX_URL.
    #[arg(long)]
    url: Option<String>,
    /// A file holding an admin token whose grant covers every workspace; default HELIX_TOKEN.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Refused: a token in the arguments is visible to every local user (`ps`, /proc).
    #[arg(long, hide = true)]
    token: Option<String>,
    /// Also back up the registry's data dir (HELIX_DATA_DIR, embedded backend), restore it into a
    /// fresh one, and prove the restored registry serves the same data and its audit chain verifies.
    #[arg(long)]
    backup_restore: bool,
    /// With --backup-restore: where the restored registry's logs go (appended, JSON lines), so they never
    /// mix into the report; default helix-smoke-PID.log in the system's temp dir, removed when the smoke
    /// passes and kept (named at the end) when it fails. A file named here is always kept.
    #[arg(long, requires = "backup_restore")]
    server_log: Option<std::path::PathBuf>,
    /// Where the run's files go (the backup and restored copies with --backup-restore: twice the data
    /// dir); default the system's temp dir. Removed at the end.
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
    /// Print the report (every step, timed) as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &Config, args: SmokeArgs) -> Res {
    let token = token(&args)?;
    let url = args.url.or_else(|| std::env::var("HELIX_URL").ok()).ok_or("--url or HELIX_URL: the registry")?;
    let embedded = config.meta_backend == MetaBackend::Sqlite
        && config.blob_backend == BlobBackend::Fs
        && config.signer_backend == SignerBackend::Local;
    if args.backup_restore && !embedded {
        return Err("--backup-restore needs the embedded backend (HELIX_DATA_DIR on this machine); on AWS follow the drill in docs/deploy.md".into());
    }
    // The restored registry serves inside this process: its request lines go to a file, not between
    // the report's lines.
    let server_log = args.backup_restore.then(|| {
        args.server_log
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("helix-smoke-{}.log", std::process::id())))
    });
    match &server_log {
        Some(path) => helix_core::telemetry::init_to_file(path)
            .map_err(|e| Usage(format!("--server-log {}: {e}", path.display())))?,
        None => helix_core::telemetry::init(),
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
    if let Some(path) = &server_log {
        if args.server_log.is_none() && report.failed().is_none() {
            // Our own scratch file, and nothing to look into: leave nothing behind.
            let _ = std::fs::remove_file(path);
        } else {
            eprintln!("the restored registry's logs: {}", path.display());
        }
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

/// The admin token: from --token-file, else HELIX_TOKEN; never from the arguments, which every local
/// user can read (`ps`, /proc/PID/cmdline).
fn token(args: &SmokeArgs) -> Result<String, Usage> {
    if args.token.is_some() {
        return Err(Usage(
            "--token puts the secret in every local user's `ps`: pass it in HELIX_TOKEN or --token-file FILE instead"
                .into(),
        ));
    }
    let token = match &args.token_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| Usage(format!("--token-file {}: {e}", file.display())))?
            .trim()
            .to_owned(),
        None => std::env::var("HELIX_TOKEN").unwrap_or_default(),
    };
    if token.is_empty() {
        let from = args.token_file.as_ref().map(|f| format!("--token-file {} is empty", f.display()));
        return Err(Usage(from.unwrap_or_else(|| "HELIX_TOKEN or --token-file FILE: an admin token".into())));
    }
    Ok(token)
}
