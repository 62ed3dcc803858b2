//! `helix push` and `helix pull`: a folder to a bundle version and back.

use helix_core::domain::{BundleName, WorkspaceId};

use super::{Res, Usage, out, s_of};

#[derive(clap::Args)]
pub struct PushArgs {
    /// The folder to publish (every regular file under it).
    dir: std::path::PathBuf,
    /// The workspace to publish into (the token must be a publisher there).
    #[arg(long)]
    workspace: String,
    /// The bundle's name.
    #[arg(long)]
    name: String,
    /// The version to register (never overwritten: a new push needs a new version).
    #[arg(long)]
    version: String,
    #[command(flatten)]
    transfer: TransferArgs,
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// WORKSPACE/NAME@VERSION
    bundle: String,
    /// The folder to download into (created if missing; files already there are checked, never overwritten).
    dir: std::path::PathBuf,
    #[command(flatten)]
    transfer: TransferArgs,
}

#[derive(clap::Args)]
struct TransferArgs {
    /// Requests at a time (a batch request carries up to 1,000 small files; a large file goes 4 parts at a time).
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

pub async fn push(args: PushArgs) -> Res {
    let PushArgs { dir, workspace, name, version, transfer } = args;
    // A malformed argument is a usage error (exit 2), as clap's own are.
    let ws = WorkspaceId::parse(&workspace).map_err(|e| Usage(format!("--workspace: {e}")))?;
    let name = BundleName::parse(&name).map_err(|e| Usage(format!("--name: {e}")))?;
    let version = BundleName::parse(&version).map_err(|e| Usage(format!("--version: {e}")))?;
    let registry = helix_cli::export::connect().await?;
    // Ctrl-C or SIGTERM drops the uploads in flight (the progress line is cleared, nothing is
    // registered) and says how to go on: a re-run uploads only what the workspace still lacks.
    let pushed = helix_cli::transfer::push(&registry, &dir, &ws, &name, &version, transfer.options());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let interrupted = || {
        format!(
            "interrupted: {ws}/{name}@{version} was not registered; run the same helix push again to resume \
             (files already uploaded are kept and not sent again)"
        )
    };
    let a = tokio::select! {
        a = pushed => a?,
        _ = tokio::signal::ctrl_c() => return Err(interrupted().into()),
        _ = term.recv() => return Err(interrupted().into()),
    };
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

pub async fn pull(args: PullArgs) -> Res {
    let PullArgs { bundle, dir, transfer } = args;
    // A malformed WORKSPACE/NAME@VERSION is a usage error (exit 2), as a malformed --workspace is.
    let (ws, name, version) = helix_cli::client::bundle_parts(&bundle).map_err(|e| Usage(e.to_string()))?;
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
