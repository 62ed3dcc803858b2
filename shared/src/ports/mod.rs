//! The four ports (SPEC §1). Each has an AWS adapter and an embedded adapter in `adapters/`, and one
//! contract suite in the helix-tests crate that both must pass.
//!
//! Shape rule: a meta-store state change can only be written together with its audit event
//! (`MetaStore::commit` takes both), so there is no change without its event and no event without
//! its change. Adapters must fail with `Error::Unavailable` naming their dependency when the backing
//! service cannot be reached, and must not report a write that did not happen.
//!
//! One file per port; everything is re-exported here, so `crate::ports::X` names each.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use tokio::io::AsyncRead;

use crate::domain::governance::State;
use crate::domain::{AuditDraft, AuditEvent, Digest, TokenRecord, WorkspaceId};
use crate::error::Result;

mod audit;
mod blob;
mod meta;
mod notify;
mod signer;
mod verify;

pub use audit::*;
pub use blob::*;
pub use meta::*;
pub use notify::*;
pub use signer::*;
pub use verify::*;
