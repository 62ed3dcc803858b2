//! `helix smoke`: the whole lifecycle against a running registry, each step timed.

use helix_core::Config;
use helix_core::config::{BlobBackend, MetaBackend, SignerBackend};

use super::{Res, out, print_table};

#[derive(clap::Args)]
pub struct SmokeArgs {
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

pub async fn run(config: &Config, args: SmokeArgs) -> Res {
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
