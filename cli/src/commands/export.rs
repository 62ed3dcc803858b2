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
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ExportArgs) -> Res {
    let ExportArgs { bundle, receipt, reason, json } = args;
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
                return out(&serde_json::json!({"unregistered": true, "record": record, "file": file}).to_string());
            }
            out(&format!("UNREGISTERED export of {bundle}: record {}", file.display()))
        }
    }
}
