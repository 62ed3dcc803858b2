//! `helix`: the local server and the operator commands. This file only builds the command tree and
//! dispatches; each command group lives in `commands/<group>.rs` (cargo's own layout).

mod commands;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::audit::AuditCommand;
use commands::governance::GovernanceCommand;
use commands::teams::TeamsCommand;
use helix_cli::client::ClientError;
use helix_core::{Config, Mode};

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
    Push(commands::transfer::PushArgs),
    /// Download a bundle version into DIR: each file is verified against its digest before it is
    /// renamed into place; files already there with the right content are kept.
    Pull(commands::transfer::PullArgs),
    /// Governance receipts.
    Governance {
        #[command(subcommand)]
        command: GovernanceCommand,
    },
    /// The official export: the registry checks integrity and governance and signs an export receipt;
    /// the receipt is saved and the proof URLs (valid 5 minutes) printed. An unreachable registry fails
    /// closed (exit 3), unless HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT=1 and --reason are given: then
    /// a local record is written and reported to the audit trail once the registry answers again.
    Export(commands::export::ExportArgs),
    /// The evidence pack of an earlier official export (the latest, or --export-seq N), without
    /// exporting again: the archive `helix export --pack` writes, checked before it is put in place.
    Pack(commands::pack::PackArgs),
    /// Check an evidence pack (`helix export --pack`) offline against a key you pin: every file's
    /// digest, the manifest's, every receipt's signature and its key's validity at its date, the
    /// ledger's chain, and that the export receipt covers this manifest. Exit 0 with a one-line
    /// summary, 1 with a one-line reason, 2 without a pinned key.
    VerifyPack(commands::verify_pack::VerifyPackArgs),
    /// The audit trail: search it (a registry), export and verify its days.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The whole lifecycle against a running or deployed registry, in a workspace of its own, each step
    /// timed: ready, status, tokens, publish small and large, approve, export, verify, fetch, audit (and
    /// backup, restore and the restored registry with --backup-restore), revoke. Exit 1 names the step
    /// that failed.
    Smoke(commands::smoke::SmokeArgs),
    /// Teams and credentials.
    Teams {
        #[command(subcommand)]
        command: TeamsCommand,
    },
    /// The signing-key history straight in the store (see `helix freeze`): list, retire.
    Keys {
        #[command(subcommand)]
        command: helix_cli::keys::KeysCommand,
    },
    /// Freeze the registry straight in its store (as `helix teams` writes: HELIX_DATA_DIR, or the AWS
    /// tables with AWS credentials), for when its API is down or not serving yet (restored tables).
    /// Over HTTP, `POST /v1/admin/freeze` does the same. Audited as `registry.freeze` by `cli:$USER`.
    Freeze {
        /// Why (recorded with the switch and in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Unfreeze the registry straight in its store (see `helix freeze`).
    Unfreeze {
        /// Why (recorded with the switch and in the audit trail).
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `helix smoke` chooses where logs go itself (a file, when it serves a restored registry inside).
    if !matches!(cli.command, Command::Smoke(_)) {
        helix_core::telemetry::init();
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(helix_core::Error::Unavailable { dep, detail }) = e.downcast_ref::<helix_core::Error>() {
                // A store the command itself talks to (`helix freeze`, `helix teams` on AWS): one line,
                // never the SDK's nested debug dump.
                let (_, reason) = helix_core::http::problem::classify(e.downcast_ref().expect("checked above"));
                eprintln!("helix: {reason} (503): {dep} unreachable: {}", commands::brief(detail));
                return ExitCode::from(3);
            }
            eprintln!("helix: {e}");
            match e.downcast_ref::<ClientError>() {
                Some(c) => ExitCode::from(c.exit_code()),
                None if e.is::<commands::Usage>() => ExitCode::from(2),
                None => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(cli: Cli) -> commands::Res {
    let config = Config::from_env(Mode::Serve)?;
    match cli.command {
        Command::Serve { listen } => commands::serve::run(config, listen).await,
        Command::Teams { command } => commands::teams::run(&config, command).await,
        Command::Governance { command } => commands::governance::run(command).await,
        Command::Audit { command } => commands::audit::run(config, command).await,
        Command::Status { json } => commands::status::run(json).await,
        Command::Push(args) => commands::transfer::push(args).await,
        Command::Pull(args) => commands::transfer::pull(args).await,
        Command::Smoke(args) => commands::smoke::run(&config, args).await,
        Command::Freeze { reason } => commands::freeze::run(&config, true, &reason).await,
        Command::Keys { command } => {
            commands::out(&helix_cli::keys::run(config, command, &commands::operator()).await?)
        }
        Command::Unfreeze { reason } => commands::freeze::run(&config, false, &reason).await,
        Command::Backup { out } => commands::backup::backup(&config, &out),
        Command::Restore { from } => commands::backup::restore(&config, &from),
        Command::Export(args) => commands::export::run(args).await,
        Command::Pack(args) => commands::pack::run(args).await,
        Command::VerifyPack(args) => commands::verify_pack::run(args).await,
    }
}
