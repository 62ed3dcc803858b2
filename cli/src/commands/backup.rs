//! `helix backup` and `helix restore`: the embedded backend's data dir, copied consistently.

use std::path::Path;

use helix_core::Config;

use super::{Res, out, s_of};

pub fn backup(config: &Config, dir: &Path) -> Res {
    let m = helix_cli::backup::backup(&config.data_dir, dir)?;
    out(&format!(
        "backed up {} into {}: schema {}, {} blob file(s), {} bytes, database {}",
        config.data_dir.display(),
        dir.display(),
        m["schema_version"],
        m["blob_files"],
        m["blob_bytes"],
        s_of(&m["files"]["helix.db"])
    ))
}

pub fn restore(config: &Config, from: &Path) -> Res {
    let r = helix_cli::backup::restore(from, &config.data_dir)?;
    out(&format!(
        "restored {} into {} ({} blob file(s) checked against their digests); start it with `helix serve` (HELIX_DATA_DIR={})",
        from.display(),
        config.data_dir.display(),
        r["checked"]["blobs_checked"],
        config.data_dir.display()
    ))
}
