//! One module per command group, as cargo lays out its own: each parses its flags and calls the
//! `helix_cli` library. `main.rs` only builds the command tree and dispatches.

pub mod audit;
pub mod backup;
pub mod export;
pub mod freeze;
pub mod governance;
pub mod pack;
pub mod serve;
pub mod smoke;
pub mod status;
pub mod teams;
pub mod transfer;
pub mod verify_pack;

pub type Res = Result<(), Box<dyn std::error::Error>>;

/// A usage error found after parsing (a flag's value, or a flag that must not be used): exit 2,
/// like clap's own.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The keys evidence is checked against (`helix audit verify`, `helix verify-pack`): never the keys the
/// evidence carries on its own, whoever forges it replaces those too.
#[derive(clap::Args)]
pub struct PinArgs {
    /// A registry public key (PEM), or a saved GET /v1/governance/public-key answer (keys.json: every
    /// key with its validity window); repeat it for earlier keys.
    #[arg(long, conflicts_with = "registry")]
    pub public_key: Vec<std::path::PathBuf>,
    /// Trust the key the evidence carries whose key id is this `sha256:…` fingerprint (GET
    /// /v1/governance/public-key shows it); repeat it for earlier keys.
    #[arg(long, conflicts_with = "registry", value_parser = helix_cli::client::key_fingerprint)]
    pub key_fingerprint: Vec<String>,
    /// Trust the keys this registry publishes (and their validity windows).
    #[arg(long)]
    pub registry: Option<String>,
}

impl PinArgs {
    /// Usage error `refusal` (exit 2) when nothing is pinned; else the keys of --registry or --public-key.
    pub async fn keys(
        &self,
        refusal: &str,
    ) -> Result<Vec<helix_core::ports::PublicKeyInfo>, Box<dyn std::error::Error>> {
        if self.public_key.is_empty() && self.key_fingerprint.is_empty() && self.registry.is_none() {
            return Err(Usage(refusal.into()).into());
        }
        Ok(helix_cli::client::load_keys(self.registry.as_deref(), &self.public_key).await?)
    }
}

/// A command that writes straight into the store (`teams`, `freeze`) must find the store `helix
/// serve` uses. With HELIX_DATA_DIR unset that is `./.helix` in the folder `helix serve` started in:
/// run anywhere else, it would create a second, empty store that the registry never reads.
/// (An explicit HELIX_DATA_DIR is trusted: tokens may be issued before the first start.)
pub fn existing_store(config: &helix_core::Config) -> Res {
    let db = config.data_dir.join(helix_core::app::SQLITE_FILE);
    let sqlite = config.meta_backend == helix_core::config::MetaBackend::Sqlite;
    if !sqlite || db.exists() || std::env::var_os("HELIX_DATA_DIR").is_some() {
        return Ok(());
    }
    Err(format!(
        "no registry store here: HELIX_DATA_DIR is not set and {} does not exist; set HELIX_DATA_DIR to the data dir `helix serve` printed",
        db.display()
    )
    .into())
}

/// Who a command that writes straight into the store acts as (its audit events' actor).
pub fn operator() -> String {
    // USER, else LOGNAME (cron, some containers set only one), else the uid: never an anonymous actor.
    let name = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map_or_else(|_| "unknown".into(), |m| format!("uid-{}", m.uid()))
    });
    format!("cli:{name}")
}

/// Print `text` to stdout; a reader that stops early (`| head`) ends the output quietly.
pub fn out(text: &str) -> Res {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Columns as wide as their widest cell. A reader that stops early (`| head`) ends the listing
/// quietly instead of a panic on the broken pipe.
pub fn print_table<const N: usize>(rows: &[[String; N]]) -> Res {
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

/// A JSON string's text, or "" for anything else.
pub fn s_of(v: &serde_json::Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_default()
}

/// The first, human part of an SDK error chain (`dispatch failure: … Connection refused (os error
/// 111)`), without the nested debug representation that follows it (`(DispatchFailure(…))`).
pub fn brief(detail: &str) -> &str {
    let bytes = detail.as_bytes();
    let debug = (0..bytes.len()).find(|&i| {
        bytes[i] == b'(' && bytes.get(i + 1).is_some_and(u8::is_ascii_uppercase) && {
            let rest = &detail[i + 1..];
            let word = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
            matches!(rest[word..].chars().next(), Some('(' | ' ' | '{'))
                && rest[word..].trim_start().starts_with(['(', '{'])
        }
    });
    debug.map_or(detail, |i| detail[..i].trim_end())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_sdk_error_chain_is_cut_before_its_debug_dump() {
        let chain = "dispatch failure: io error: client error (Connect): tcp connect error: Connection refused \
                     (os error 111) (DispatchFailure(DispatchFailure { source: ConnectorError { kind: Io } }))";
        assert_eq!(
            super::brief(chain),
            "dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(super::brief("plain words (os error 2)"), "plain words (os error 2)");
    }
}
