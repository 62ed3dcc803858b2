//! `helix status`: the registry's posture and whether it answers (never a secret).

use helix_cli::client::ClientError;

use super::{Res, out, print_table, s_of};

pub async fn run(json: bool) -> Res {
    let registry = helix_cli::export::connect().await?;
    let ready = registry.get("/readyz").await;
    let ready = match ready {
        Err(ClientError::Unreachable(e)) => return Err(ClientError::Unreachable(e).into()),
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
        let doc = serde_json::json!({"url": registry.url, "reachable": true, "ready": ready, "status": posture, "whoami": whoami});
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
    print_table(&rows)
}
