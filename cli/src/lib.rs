//! helix-cli: the local server (`helix serve`) and the operator commands, as a library so the test
//! crate can start the very same server in-process.

pub mod backup;
pub mod client;
pub mod export;
pub mod keys;
pub mod pack;
pub mod serve;
pub mod smoke;
pub mod suspend;
pub mod transfer;
