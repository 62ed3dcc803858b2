//! `helix pack WS/NAME@VERSION FILE.tar`: the evidence pack of an earlier official export (the latest,
//! or `--export-seq N`), without exporting again: the same archive `helix export --pack` writes
//! (helix_cli::pack), for a partner who received that export. Reads only (a viewer may run it).

use super::{Res, out};

#[derive(clap::Args)]
pub struct PackArgs {
    /// WORKSPACE/NAME@VERSION
    bundle: String,
    /// The new file to write (tar); an existing file is never overwritten (exit 2).
    file: std::path::PathBuf,
    /// The export receipt's seq in the version's ledger (`helix governance`, or GET …/governance);
    /// default: the latest export.
    #[arg(long)]
    export_seq: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: PackArgs) -> Res {
    let PackArgs { bundle, file, export_seq, json } = args;
    helix_cli::pack::check_free(&file)?;
    let registry = helix_cli::client::Registry::from_env()?;
    let export = helix_cli::pack::earlier_export(&registry, &bundle, export_seq).await?;
    let summary = helix_cli::pack::make(&registry, &bundle, &export, &file).await?;
    if json {
        return out(&serde_json::json!({"file": file, "export_seq": export["seq"], "summary": summary}).to_string());
    }
    out(&format!(
        "evidence pack {} of {bundle}'s export seq {}: {} file(s), {} byte(s), {} receipt(s), verified with the \
         registry's keys (a partner runs: helix verify-pack {} --public-key KEY.pem)",
        file.display(),
        export["seq"],
        summary.files,
        summary.bytes,
        summary.receipts,
        file.display()
    ))
}
