//! `helix audit`: search a registry's trail (query), export settled days (export), verify exported
//! days offline (verify).

use clap::Subcommand;
use helix_core::{App, Config};

use super::{PinArgs, Res, out, s_of};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Search a registry's audit trail (GET /v1/audit, every page): one line per event, or JSON Lines.
    /// HELIX_URL and HELIX_TOKEN (an approver for a workspace, an admin of `*` for all).
    Query {
        /// From: 7d, 12h, "30m ago", an RFC 3339 time, or a day.
        #[arg(long)]
        since: Option<String>,
        /// Until (exclusive): the same forms as --since.
        #[arg(long)]
        until: Option<String>,
        /// e.g. bundle.export, token.issue, registry.freeze.
        #[arg(long)]
        action: Option<String>,
        /// A workspace, or `*` for the global stream. Left out: the token's own workspace, or every
        /// workspace for an admin of `*`.
        #[arg(long)]
        workspace: Option<String>,
        /// Who acted, matched whole, exactly as the events name them: user@credential (marie@tok_…,
        /// marie@oidc:…) or cli:USER for the store commands. `marie` alone matches nothing, and never
        /// marie-ann (find the whole actor with --workspace or --action first).
        #[arg(long)]
        actor: Option<String>,
        /// Print JSON Lines (one event per line, as the registry stores it).
        #[arg(long)]
        json: bool,
    },
    /// Export a settled UTC day (and every missing day before it) with the export code the schedule
    /// runs: under the data dir on the embedded backend, to the bucket with AWS variables. Prints a
    /// one-line summary (the day, its events, the files written, the days filled in first).
    Export {
        /// The day, YYYY-MM-DD (default: yesterday, UTC).
        #[arg(long)]
        day: Option<String>,
        /// Print the report as JSON (day, event_count, manifest_sha256, genesis, written, unchanged,
        /// backfilled).
        #[arg(long)]
        json: bool,
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
        #[command(flatten)]
        pins: PinArgs,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: Config, command: AuditCommand) -> Res {
    match command {
        AuditCommand::Query { since, until, action, workspace, actor, json } => {
            query(since, until, action, workspace, actor, json).await
        }
        AuditCommand::Export { day, json } => export(config, day, json).await,
        AuditCommand::Verify { dir, bucket, prefix, pins, json } => {
            verify(config, dir, bucket, prefix, pins, json).await
        }
    }
}

async fn export(config: Config, day: Option<String>, json: bool) -> Res {
    use helix_core::audit_export;
    let now = time::OffsetDateTime::now_utc();
    let day = match day {
        Some(d) => audit_export::parse_day(&d)?,
        None => now.date().previous_day().ok_or("no day before today")?,
    };
    let app = App::build(config).await?;
    let request_id = helix_core::http::new_request_id();
    // No per-run bound here (the scheduled function has one: its time limit).
    let report = audit_export::export_through(&app, day, now, &request_id, usize::MAX).await?;
    if json {
        return out(&serde_json::to_string(&report)?);
    }
    let backfilled = match report.backfilled.as_slice() {
        [] => String::new(),
        days => format!("; {} earlier day(s) filled in first: {}", days.len(), days.join(", ")),
    };
    out(&format!(
        "exported {}: {} event(s), manifest {}, {} file(s) written, {} already there{}{}",
        report.day,
        report.event_count,
        report.manifest_sha256,
        report.written.len(),
        report.unchanged.len(),
        if report.genesis { " (the genesis)" } else { "" },
        backfilled
    ))
}

/// The keys `helix audit verify` is told to trust (one of them is required).
async fn verify(
    config: Config,
    dir: Option<std::path::PathBuf>,
    bucket: Option<String>,
    prefix: String,
    pins: PinArgs,
    json: bool,
) -> Res {
    use helix_core::audit_verify::{self, DirEvidence, Evidence, S3Evidence};
    // The export's own keys/*.pem prove nothing: whoever rewrites a day replaces them too.
    let mut keys = pins
        .keys(
            "helix audit verify needs a key to trust: pin the registry's key with --public-key FILE.pem, \
             --key-fingerprint sha256:HEX (its key_id, from GET /v1/governance/public-key), or --registry URL; \
             the keys an export carries are not evidence on their own",
        )
        .await?;
    let evidence: Box<dyn Evidence> = match (dir, bucket) {
        (Some(dir), _) => Box::new(DirEvidence::open(dir)?),
        (None, Some(bucket)) => {
            Box::new(S3Evidence { client: helix_core::app::s3_client(&config).await, bucket, prefix })
        }
        (None, None) => unreachable!("clap requires one"),
    };
    for fingerprint in &pins.key_fingerprint {
        // The export's key file of a pinned fingerprint: its content must hash to that id.
        let k = format!("keys/{}.pem", fingerprint.trim_start_matches("sha256:"));
        let pem =
            evidence.read(&k).await?.ok_or_else(|| format!("invalid: {k} (key {fingerprint}) is not in the export"))?;
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
    Ok(())
}

async fn query(
    since: Option<String>,
    until: Option<String>,
    action: Option<String>,
    workspace: Option<String>,
    actor: Option<String>,
    json: bool,
) -> Res {
    use helix_cli::client::q;
    let registry = helix_cli::export::connect().await?;
    let now = time::OffsetDateTime::now_utc();
    let mut query = String::from("limit=1000");
    let since = since.map(|s| helix_cli::client::since(&s, now)).transpose().map_err(|e| format!("--since {e}"))?;
    let until = until.map(|s| helix_cli::client::since(&s, now)).transpose().map_err(|e| format!("--until {e}"))?;
    // A token for one workspace asks about that workspace (the whole trail needs an admin of `*`).
    let workspace = match workspace {
        Some(ws) => Some(ws),
        None => match registry.get("/v1/whoami").await?["workspace_id"].as_str() {
            Some("*") | None => None,
            Some(ws) => Some(ws.to_owned()),
        },
    };
    for (k, v) in
        [("since", &since), ("until", &until), ("action", &action), ("workspace", &workspace), ("actor", &actor)]
    {
        if let Some(v) = v {
            query.push_str(&format!("&{k}={}", q(v)));
        }
    }
    let mut cursor: Option<String> = None;
    let mut printed = 0usize;
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
            printed += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            // JSON Lines stay empty; a reader is told.
            None if printed == 0 && !json => {
                if actor.is_some() {
                    eprintln!(
                        "helix: --actor is matched whole, as the events name it: user@credential (marie@tok_…) \
                         or cli:USER; a user name alone matches nothing"
                    );
                }
                return out("no events");
            }
            None => return Ok(()),
        }
    }
}
