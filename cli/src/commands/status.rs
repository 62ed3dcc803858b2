//! `helix status`: the registry's posture and whether it answers (never a secret), and always the
//! client's own posture: what `helix export` would do now, and what it still owes the audit trail.
//! An unreachable registry still prints everything local, then exits 3.

use helix_cli::client::ClientError;
use helix_cli::export::{OVERRIDE_ENV, pending_records};
use serde_json::{Value, json};

use super::{Res, out, print_table, s_of};

pub async fn run(json: bool) -> Res {
    // `connect` first reports what it can of the pending override records (and moves them).
    let registry = helix_cli::export::connect().await?;
    let local = local_posture(&registry.url);
    let ready = match registry.get("/readyz").await {
        Err(ClientError::Unreachable(e)) => return unreachable(&registry.url, local, e, json),
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
        let doc = json!({"url": registry.url, "reachable": true, "ready": ready, "status": posture,
            "whoami": whoami, "local": local});
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
    rows.extend(local_rows(&local));
    print_table(&rows)
}

/// No answer: the local posture, then exit 3 (`registry_unreachable`, with why).
fn unreachable(url: &str, local: Value, why: String, json: bool) -> Res {
    if json {
        out(&json!({"url": url, "reachable": false, "error": why, "local": local}).to_string())?;
    } else {
        let mut rows = vec![["registry".to_owned(), url.to_owned()], ["reachable".into(), format!("NO: {why}")]];
        rows.extend(local_rows(&local));
        print_table(&rows)?;
    }
    Err(ClientError::Unreachable(why).into())
}

/// What this client does on its own: the override switch, the export rule it enforces while the
/// registry cannot be reached, and the override records not yet reported to `url`.
fn local_posture(url: &str) -> Value {
    let override_set = std::env::var(OVERRIDE_ENV).as_deref() == Ok("1");
    let (mine, all) = pending_records(url);
    json!({
        "allow_unregistered_export": override_set,
        "client_export_rule": if override_set { "override" } else { "fail_closed" },
        "pending_unreported_exports": mine,
        "pending_unreported_exports_all_registries": all,
        "state_dir": helix_cli::export::state_dir().map(|d| d.display().to_string()),
    })
}

fn local_rows(local: &Value) -> Vec<[String; 2]> {
    let rule = if local["allow_unregistered_export"] == true {
        format!(
            "OVERRIDE: {OVERRIDE_ENV}=1 is set; helix export writes an unregistered local record (with --reason) when the registry cannot be reached"
        )
    } else {
        format!("fail closed: helix export refuses when the registry cannot be reached ({OVERRIDE_ENV} not set)")
    };
    let pending = format!(
        "{} for this registry ({} in all){}",
        local["pending_unreported_exports"],
        local["pending_unreported_exports_all_registries"],
        local["state_dir"].as_str().map(|d| format!(", under {d}/unregistered-exports/pending")).unwrap_or_default()
    );
    vec![["governance (client)".into(), rule], ["pending unreported exports".into(), pending]]
}
