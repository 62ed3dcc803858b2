//! `helix teams`: tokens, straight in the configured store (as `helix serve` reads it).

use clap::Subcommand;
use helix_core::Config;
use helix_core::domain::token::parse_ttl;
use helix_core::domain::{Role, Scope};
use helix_core::tokens::{self, Grant, TokenRef};

use super::{Res, operator, out, print_table};

#[derive(Subcommand)]
pub enum TeamsCommand {
    /// Issue an API token straight into the configured store and print it once.
    Token {
        /// Who the token is for (audit events name them by it).
        #[arg(long)]
        user: String,
        /// viewer, publisher, approver, safety_reviewer or admin.
        #[arg(long)]
        role: String,
        /// A workspace id, or '*' for every workspace.
        #[arg(long = "workspace-id")]
        workspace_id: String,
        /// Lifetime: 90s, 45m, 12h, 30d. No expiry if omitted.
        #[arg(long)]
        ttl: Option<String>,
        /// A note shown by `helix teams list` (what the token is for).
        #[arg(long)]
        description: Option<String>,
    },
    /// Disable a token now (incident response): refused from its very next request, on every function.
    Revoke {
        /// The token id (tok_…).
        #[arg(long, conflicts_with = "sha256", required_unless_present = "sha256")]
        id: Option<String>,
        /// The hex SHA-256 of the secret (what logs and audit events show).
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Suspend a workspace straight in the store: every request scoped to it (reads too, API tokens and
    /// JWTs alike) answers 403 workspace_suspended; other workspaces go on. Audited in its stream.
    Suspend {
        /// The workspace id.
        workspace: String,
        /// Why (kept with the switch, shown in status and the audit event).
        #[arg(long)]
        reason: String,
    },
    /// Lift a workspace's suspension straight in the store (see `helix teams suspend`).
    Unsuspend {
        /// The workspace id.
        workspace: String,
        /// Why (kept with the switch and the audit event).
        #[arg(long)]
        reason: String,
    },
    /// List tokens (never secrets), one per line.
    List {
        /// Print JSON Lines (one token record per line).
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, command: TeamsCommand) -> Res {
    super::existing_store(config)?;
    let (meta, _audit) = helix_core::app::meta_store(config).await?;
    match command {
        TeamsCommand::Token { user, role, workspace_id, ttl, description } => {
            let grant = Grant {
                user,
                role: role.parse::<Role>()?,
                workspace_id: Scope::parse(&workspace_id)?,
                ttl_seconds: ttl.as_deref().map(parse_ttl).transpose()?,
                description,
            };
            let (secret, record) = tokens::issue(meta.as_ref(), grant, &operator(), "cli").await?;
            eprintln!(
                "issued {} for {} ({} on {}); the secret is shown once:",
                record.id, record.user, record.role, record.workspace_id
            );
            println!("{}", secret.expose());
        }
        TeamsCommand::Revoke { id, sha256 } => {
            let target = match (id, sha256) {
                (Some(id), _) => TokenRef::Id(id),
                (None, Some(sha)) => TokenRef::Sha256(sha),
                (None, None) => unreachable!("clap requires one"),
            };
            let revoked = tokens::revoke(meta.as_ref(), target, None, &operator(), "cli").await?;
            let record = &revoked.token;
            let what = if revoked.changed { "revoked" } else { "was already revoked:" };
            println!("{what} {} ({} {} on {})", record.id, record.user, record.role, record.workspace_id);
            for id in &revoked.successors {
                println!("revoked {id} too: {} had been rotated into it", record.id);
            }
        }
        TeamsCommand::Suspend { workspace, reason } => {
            out(&helix_cli::suspend::switch(meta.as_ref(), &workspace, true, &reason, &operator()).await?)?
        }
        TeamsCommand::Unsuspend { workspace, reason } => {
            out(&helix_cli::suspend::switch(meta.as_ref(), &workspace, false, &reason, &operator()).await?)?
        }
        TeamsCommand::List { json } => list(meta.as_ref(), json).await?,
    }
    Ok(())
}

async fn list(meta: &dyn helix_core::ports::MetaStore, json: bool) -> Res {
    let now = helix_core::domain::time::now_unix();
    let listed: Vec<_> = tokens::list(meta, None)
        .await?
        .into_iter()
        .map(|t| {
            let state = match t.refusal(now) {
                Some(helix_core::Error::TokenRevoked) => "revoked",
                Some(_) => "expired",
                None => "active",
            };
            (t, state)
        })
        .collect();
    if json {
        let lines: Vec<String> = listed
            .iter()
            .map(|(t, state)| {
                serde_json::json!({"id": t.id, "user": t.user, "role": t.role.to_string(),
                    "workspace_id": t.workspace_id.to_string(), "state": state, "expires_at": t.expires_at,
                    "sha256": t.sha256})
                .to_string()
            })
            .collect();
        return out(&lines.join("\n"));
    }
    let mut rows = vec![["id", "user", "role", "workspace", "state", "expires", "sha256"].map(String::from)];
    for (t, state) in listed {
        let expires = t.expires_at.map(helix_core::domain::time::unix_to_rfc3339).unwrap_or_else(|| "never".into());
        rows.push([t.id, t.user, t.role.to_string(), t.workspace_id.to_string(), state.into(), expires, t.sha256]);
    }
    print_table(&rows)
}
