//! `helix export`: the official export (a signed receipt saved, proof URLs printed), or the
//! documented unregistered override when the registry cannot be reached.

use helix_cli::export::{Exported, export, warning};

use super::{Res, out, s_of};

#[derive(clap::Args)]
pub struct ExportArgs {
    /// WORKSPACE/NAME@VERSION
    bundle: String,
    /// Where to save the signed receipt (default NAME-VERSION.export-receipt.json).
    #[arg(long)]
    receipt: Option<std::path::PathBuf>,
    /// Why an unregistered export cannot wait (needed with the override).
    #[arg(long)]
    reason: Option<String>,
    /// Also write every proof URL (PATH<TAB>URL, one a line, the manifest first) to this file.
    #[arg(long)]
    urls: Option<std::path::PathBuf>,
    /// Also write an evidence pack to this new file (tar): the files, the manifest, the ledger, this
    /// export's receipt and the registry's keys with their validity, for a partner to check offline
    /// with `helix verify-pack`. An existing file is never overwritten (exit 2 before exporting).
    #[arg(long)]
    pack: Option<std::path::PathBuf>,
    /// Print the registry's whole answer (receipt and proof URLs) as JSON.
    #[arg(long)]
    json: bool,
}

/// Up to this many files, the proof URLs are printed; above, a summary (and --urls FILE for all).
const LISTED: usize = 10;

pub async fn run(args: ExportArgs) -> Res {
    let ExportArgs { bundle, receipt, reason, urls, pack, json } = args;
    if let Some(file) = &pack {
        helix_cli::pack::check_free(file)?;
    }
    let registry = helix_cli::export::connect().await?;
    match export(&registry, &bundle, receipt, reason.as_deref()).await? {
        Exported::Official { answer, receipt } => {
            let packed = match &pack {
                Some(file) => Some((file, helix_cli::pack::make(&registry, &bundle, &answer, file).await?)),
                None => None,
            };
            if json {
                let mut answer = answer;
                if let Some((file, summary)) = &packed {
                    answer["pack"] = serde_json::json!({"file": file, "summary": summary});
                }
                return out(&answer.to_string());
            }
            let mut lines = vec![format!(
                "exported {bundle} (governance: {}), receipt seq {} saved to {}",
                s_of(&answer["governance"]),
                answer["seq"],
                receipt.display()
            )];
            if let Some((file, summary)) = &packed {
                lines.push(format!(
                    "evidence pack {}: {} file(s), {} byte(s), {} receipt(s), verified with the registry's keys \
                     (a partner runs: helix verify-pack {} --public-key KEY.pem)",
                    file.display(),
                    summary.files,
                    summary.bytes,
                    summary.receipts,
                    file.display()
                ));
            }
            let mut proofs = vec![("manifest".to_owned(), s_of(&answer["proof"]["manifest"]["url"]))];
            for f in answer["proof"]["files"].as_array().into_iter().flatten() {
                let url = f["url"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("(fetch by digest {})", s_of(&f["digest"])));
                proofs.push((s_of(&f["path"]), url));
            }
            if let Some(file) = &urls {
                let text: String = proofs.iter().map(|(p, u)| format!("{p}\t{u}\n")).collect();
                std::fs::write(file, text).map_err(|e| format!("--urls {}: {e}", file.display()))?;
                lines.push(format!("{} proof URL(s) (valid 5 minutes) written to {}", proofs.len(), file.display()));
            } else if proofs.len() <= LISTED + 1 {
                lines.extend(proofs.iter().map(|(p, u)| format!("{p}  {u}")));
            } else {
                lines.push(format!("manifest  {}", proofs[0].1));
                lines.push(format!(
                    "{} file proof URL(s) (valid 5 minutes) not listed: --urls FILE writes them all, --json prints the answer",
                    proofs.len() - 1
                ));
            }
            out(&lines.join("\n"))
        }
        Exported::Unregistered { record, file } => {
            eprintln!("{}", warning(&record, &file));
            if pack.is_some() {
                eprintln!("helix: no evidence pack: an unregistered export has no receipt, nothing was signed");
            }
            if json {
                return out(&serde_json::json!({"unregistered": true, "record": record, "file": file}).to_string());
            }
            out(&format!("UNREGISTERED export of {bundle}: record {}", file.display()))
        }
    }
}
