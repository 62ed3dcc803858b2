//! `helix freeze` / `helix unfreeze`: the switch, straight in the configured store.

use helix_core::Config;

use super::{Res, operator, out};

pub async fn run(config: &Config, frozen: bool, reason: &str) -> Res {
    super::existing_store(config)?;
    let (meta, _audit) = helix_core::app::meta_store(config).await?;
    let (state, moved) = helix_core::freeze::record(meta.as_ref(), &operator(), "cli", frozen, reason).await?;
    let what = if state.frozen { "frozen" } else { "not frozen" };
    let how = if moved { "now" } else { "already" };
    out(&format!("the registry is {how} {what}: {}", state.reason.unwrap_or_default()))
}
