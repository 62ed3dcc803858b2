//! Configuration, read once at start into a typed struct (SPEC §6). Nothing reads the environment
//! inside a handler. Bad configuration is one clear line naming the variable, at start.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::domain::Role;
use crate::oidc::OidcConfig;

mod sign_in;
mod storage;
mod uploads;
mod webhook;
pub use sign_in::{SignIn, sign_in_from_lookup};
pub use storage::{DEFAULT_S3_PART_SIZE, MAX_S3_PART_SIZE, MIN_S3_PART_SIZE, ObjectLock, ObjectLockMode};
pub use uploads::{DEFAULT_INLINE_MAX, DEFAULT_UPLOAD_PART_SIZE, DEFAULT_VERIFY_INLINE_MAX, MIN_FS_UPLOAD_PART_SIZE};
pub use webhook::{WebhookConfig, WebhookSecret, webhook_from_lookup};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A function in AWS Lambda: AWS adapters by default.
    Lambda,
    /// `helix serve` and the operator commands: embedded adapters by default.
    Serve,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobBackend {
    S3,
    Fs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaBackend {
    DynamoDb,
    Sqlite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignerBackend {
    Kms,
    Local,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GovernanceMode {
    Enforce,
    Warn,
    Off,
}

impl GovernanceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            GovernanceMode::Enforce => "enforce",
            GovernanceMode::Warn => "warn",
            GovernanceMode::Off => "off",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub blob_backend: BlobBackend,
    pub meta_backend: MetaBackend,
    pub signer_backend: SignerBackend,
    pub s3_bucket: String,
    pub s3_prefix: String,
    pub s3_strict_no_overwrite: bool,
    pub s3_endpoint_url: Option<String>,
    /// The S3 store refuses bytes that do not match a signed SHA-256 checksum, so its stored
    /// checksum proves the bytes (AWS S3). Off by default for a custom endpoint: re-hash instead.
    pub s3_checksums_verified: bool,
    /// Per-object retention on blob writes (HELIX_S3_OBJECT_LOCK_MODE GOVERNANCE|COMPLIANCE and
    /// HELIX_S3_OBJECT_LOCK_DAYS); None: no retention header is sent.
    pub s3_object_lock: Option<ObjectLock>,
    /// Part size of multipart document uploads (HELIX_S3_PART_SIZE, bytes, 5 MiB to 5 GiB).
    pub s3_part_size: u64,
    /// Part size of chunked uploads of large files (HELIX_UPLOAD_PART_SIZE, bytes; larger when a file
    /// needs more than 10,000 parts): a file of more than one part is uploaded in parts.
    pub upload_part_size: u64,
    /// Uploads larger than this (HELIX_VERIFY_INLINE_MAX, bytes; default 2 GiB) are verified after
    /// `complete` answered 202, in resumable steps (`crate::verify`).
    pub verify_inline_max: u64,
    /// The time one request spends advancing a verification (HELIX_VERIFY_STEP_SECONDS, 1 to 25;
    /// default 20: inside API Gateway's 29 s).
    pub verify_step_seconds: u64,
    /// At most this many bytes hashed per step (HELIX_VERIFY_STEP_BYTES; default none: the time bounds
    /// a step). Tests set it small to prove a verification resumes across steps.
    pub verify_step_bytes: Option<u64>,
    /// `helix serve` drives verifications in a background task (HELIX_VERIFY_BACKGROUND=on, the
    /// default); `off` leaves them to the status polls, as on AWS.
    pub verify_background: bool,
    /// On AWS, the EventBridge bus (HELIX_VERIFY_BUS_NAME) a `verification.step` event is put on when
    /// `complete` records a job and when a step ends with the job still running: its rule invokes the
    /// verify function, which drives the job unattended. None: no event (the polls drive the job).
    pub verify_bus: Option<String>,
    /// Where EventBridge is reached (AWS_ENDPOINT_URL_EVENTS or AWS_ENDPOINT_URL; the emulator).
    pub events_endpoint_url: Option<String>,
    pub dynamodb_endpoint_url: Option<String>,
    pub kms_endpoint_url: Option<String>,
    pub aws_region: Option<String>,
    /// Trust the system CA store (SSL_CERT_FILE or SSL_CERT_DIR set) instead of the compiled-in roots.
    pub tls_native_roots: bool,
    pub table: String,
    pub audit_table: String,
    pub kms_key_id: String,
    pub data_dir: PathBuf,
    pub governance_mode: GovernanceMode,
    pub metrics_min_role: Option<Role>,
    pub inline_max: u64,
    /// Most official exports of one bundle version (HELIX_EXPORT_LIMIT, 1 to 1,000,000; default
    /// `DEFAULT_EXPORT_LIMIT`): each appends a signed receipt, so re-exports are bounded.
    pub export_limit: u64,
    /// Most waivers of one bundle version (HELIX_WAIVER_LIMIT, 1 to 1,000; default
    /// `DEFAULT_WAIVER_LIMIT`): each appends a signed receipt that every decision and the first export
    /// read, so distinct waivers are bounded too.
    pub waiver_limit: u64,
    /// How often an instance flushes its request counters (HELIX_METRICS_FLUSH_SECONDS, 0 to 3600).
    pub metrics_flush: std::time::Duration,
    /// Record every read by a principal in the audit trail (HELIX_AUDIT_READS, on by default;
    /// `reads`): off leaves reads out of the trail and says so in `/v1/status`'s posture.
    pub audit_reads: bool,
    pub listen: SocketAddr,
    /// Base URL that local presigned URLs point at (embedded blob store only).
    pub public_url: String,
    pub oidc: Option<OidcConfig>,
    /// Signed webhooks of governance events (HELIX_WEBHOOK_URL with HELIX_WEBHOOK_SECRET).
    pub webhook: Option<WebhookConfig>,
    /// The console's sign-in with the OIDC issuer (HELIX_OIDC_CLIENT_ID with the issuer).
    pub console_sign_in: Option<SignIn>,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {msg}")]
pub struct ConfigError {
    pub var: &'static str,
    pub msg: String,
}

fn err(var: &'static str, msg: impl Into<String>) -> ConfigError {
    ConfigError { var, msg: msg.into() }
}

/// A whole number of `var` within `range` (None when unset); a refusal quotes the value and says it
/// is not `what()`.
fn bounded(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    range: std::ops::RangeInclusive<u64>,
    what: impl FnOnce() -> String,
) -> Result<Option<u64>, ConfigError> {
    match get(var) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(err(var, format!("{v:?} is not {}", what()))),
        },
    }
}

/// Official exports of one bundle version, at most (a version exported a thousand times is a
/// pipeline in a loop, not a release; publish a new version).
pub const DEFAULT_EXPORT_LIMIT: u64 = 1000;
/// Waivers of one bundle version, at most (a waiver is an emergency measure; a hundred on one version
/// is a script in a loop).
pub const DEFAULT_WAIVER_LIMIT: u64 = 100;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl Config {
    pub fn from_env(mode: Mode) -> Result<Config, ConfigError> {
        Config::from_lookup(mode, |k| std::env::var(k).ok())
    }

    /// Build from any variable source (tests pass a map; nothing here touches the process env).
    pub fn from_lookup(mode: Mode, lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let aws_endpoint = get("AWS_ENDPOINT_URL");

        let blob_backend = match get("HELIX_BLOB_BACKEND").as_deref() {
            Some("s3") => BlobBackend::S3,
            Some("fs") => BlobBackend::Fs,
            None if mode == Mode::Lambda => BlobBackend::S3,
            None => BlobBackend::Fs,
            Some(other) => return Err(err("HELIX_BLOB_BACKEND", format!("{other:?} is not s3 or fs"))),
        };
        let meta_backend = match get("HELIX_META_BACKEND").as_deref() {
            Some("dynamodb") => MetaBackend::DynamoDb,
            Some("sqlite") => MetaBackend::Sqlite,
            None if mode == Mode::Lambda => MetaBackend::DynamoDb,
            None => MetaBackend::Sqlite,
            Some(other) => {
                return Err(err("HELIX_META_BACKEND", format!("{other:?} is not dynamodb or sqlite")));
            }
        };
        if meta_backend == MetaBackend::Sqlite && !cfg!(feature = "sqlite") {
            return Err(err("HELIX_META_BACKEND", "sqlite is not built into this binary (cargo feature `sqlite`)"));
        }
        let signer_backend = match get("HELIX_SIGNER_BACKEND").as_deref() {
            Some("kms") => SignerBackend::Kms,
            Some("local") => SignerBackend::Local,
            None if mode == Mode::Lambda => SignerBackend::Kms,
            None => SignerBackend::Local,
            Some(other) => return Err(err("HELIX_SIGNER_BACKEND", format!("{other:?} is not kms or local"))),
        };

        let require = |var: &'static str, needed: bool| -> Result<String, ConfigError> {
            match get(var) {
                Some(v) => Ok(v),
                None if needed => Err(err(var, "must be set for the configured backend")),
                None => Ok(String::new()),
            }
        };
        let s3_bucket = require("HELIX_S3_BUCKET", blob_backend == BlobBackend::S3)?;
        let table = require("HELIX_TABLE", meta_backend == MetaBackend::DynamoDb)?;
        let audit_table = require("HELIX_AUDIT_TABLE", meta_backend == MetaBackend::DynamoDb)?;
        let kms_key_id = require("HELIX_KMS_KEY_ID", signer_backend == SignerBackend::Kms)?;

        let s3 = storage::s3(&get, aws_endpoint.clone())?;
        let uploads = uploads::uploads(&get, blob_backend)?;

        let governance_mode = match get("HELIX_GOVERNANCE_MODE").as_deref() {
            None | Some("enforce") => GovernanceMode::Enforce,
            Some("warn") => GovernanceMode::Warn,
            Some("off") => GovernanceMode::Off,
            Some(other) => {
                return Err(err("HELIX_GOVERNANCE_MODE", format!("{other:?} is not enforce, warn or off")));
            }
        };
        let metrics_min_role = match get("HELIX_METRICS_MIN_ROLE").or_else(|| get("HELIX_TEAMS_METRICS_MIN_ROLE")) {
            None => None,
            Some(v) if v == "none" => None,
            Some(v) => Some(v.parse::<Role>().map_err(|e| err("HELIX_METRICS_MIN_ROLE", e.to_string()))?),
        };
        let export_limit = bounded(&get, "HELIX_EXPORT_LIMIT", 1..=1_000_000, || "a count in 1..=1000000".into())?
            .unwrap_or(DEFAULT_EXPORT_LIMIT);
        let waiver_limit = bounded(&get, "HELIX_WAIVER_LIMIT", 1..=1_000, || "a count in 1..=1000".into())?
            .unwrap_or(DEFAULT_WAIVER_LIMIT);
        let metrics_flush = std::time::Duration::from_secs(
            bounded(&get, "HELIX_METRICS_FLUSH_SECONDS", 0..=3600, || "a number of seconds in 0..=3600".into())?
                .unwrap_or(10),
        );
        let audit_reads = match get("HELIX_AUDIT_READS").as_deref() {
            None | Some("on" | "1" | "true") => true,
            Some("off" | "0" | "false") => false,
            Some(other) => return Err(err("HELIX_AUDIT_READS", format!("{other:?} is not on or off"))),
        };
        // Read by telemetry before the configuration; checked here so a typo fails the start.
        if let Some(v) = get(crate::telemetry::LOG_FORMAT_VAR) {
            crate::telemetry::LogFormat::parse(&v).map_err(|m| err(crate::telemetry::LOG_FORMAT_VAR, m))?;
        }
        let listen_raw = get("HELIX_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr =
            listen_raw.parse().map_err(|_| err("HELIX_LISTEN", format!("{listen_raw:?} is not host:port")))?;
        let public_url =
            get("HELIX_PUBLIC_URL").unwrap_or_else(|| format!("http://{listen}")).trim_end_matches('/').to_owned();

        Ok(Config {
            mode,
            blob_backend,
            meta_backend,
            signer_backend,
            s3_bucket,
            s3_prefix: s3.prefix,
            s3_strict_no_overwrite: s3.strict_no_overwrite,
            s3_endpoint_url: s3.endpoint_url,
            s3_checksums_verified: s3.checksums_verified,
            s3_object_lock: s3.object_lock,
            s3_part_size: s3.part_size,
            upload_part_size: uploads.upload_part_size,
            verify_inline_max: uploads.verify_inline_max,
            verify_step_seconds: uploads.verify_step_seconds,
            verify_step_bytes: uploads.verify_step_bytes,
            verify_background: uploads.verify_background,
            verify_bus: uploads.verify_bus,
            events_endpoint_url: get("AWS_ENDPOINT_URL_EVENTS").or_else(|| aws_endpoint.clone()),
            dynamodb_endpoint_url: get("AWS_ENDPOINT_URL_DYNAMODB").or_else(|| aws_endpoint.clone()),
            kms_endpoint_url: get("AWS_ENDPOINT_URL_KMS").or_else(|| aws_endpoint.clone()),
            aws_region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            tls_native_roots: get("SSL_CERT_FILE").is_some() || get("SSL_CERT_DIR").is_some(),
            table,
            audit_table,
            kms_key_id,
            data_dir: PathBuf::from(get("HELIX_DATA_DIR").unwrap_or_else(|| "./.helix".into())),
            governance_mode,
            metrics_min_role,
            inline_max: uploads.inline_max,
            export_limit,
            waiver_limit,
            metrics_flush,
            audit_reads,
            listen,
            public_url,
            oidc: sign_in::oidc(&get)?,
            webhook: match webhook::webhook(&get)? {
                Some(w) if w.secret_arn.is_some() && mode == Mode::Serve => {
                    return Err(err(
                        "HELIX_WEBHOOK_SECRET_ARN",
                        "is read by the notify function on AWS; helix serve takes HELIX_WEBHOOK_SECRET",
                    ));
                }
                w => w,
            },
            console_sign_in: sign_in::sign_in(&get)?,
        })
    }

    pub fn uses_aws(&self) -> bool {
        self.blob_backend == BlobBackend::S3
            || self.meta_backend == MetaBackend::DynamoDb
            || self.signer_backend == SignerBackend::Kms
    }
}

/// A configuration from these variables alone (the tests of every part of it).
#[cfg(test)]
fn from_pairs(mode: Mode, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: std::collections::HashMap<String, String> =
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_lookup(mode, |k| map.get(k).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_defaults_to_the_embedded_backend() {
        let c = from_pairs(Mode::Serve, &[]).unwrap();
        assert_eq!(
            (c.blob_backend, c.meta_backend, c.signer_backend),
            (BlobBackend::Fs, MetaBackend::Sqlite, SignerBackend::Local)
        );
        assert_eq!(c.inline_max, DEFAULT_INLINE_MAX);
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn a_log_format_other_than_json_or_text_fails_the_start() {
        assert!(from_pairs(Mode::Serve, &[("HELIX_LOG_FORMAT", "text")]).is_ok());
        assert!(from_pairs(Mode::Serve, &[("HELIX_LOG_FORMAT", "json")]).is_ok());
        let e = from_pairs(Mode::Serve, &[("HELIX_LOG_FORMAT", "pretty")]).unwrap_err();
        assert_eq!(e.var, "HELIX_LOG_FORMAT");
    }

    #[test]
    fn lambda_needs_its_aws_resources_named() {
        let e = from_pairs(Mode::Lambda, &[]).unwrap_err();
        assert_eq!(e.var, "HELIX_S3_BUCKET");
        let e = from_pairs(Mode::Lambda, &[("HELIX_S3_BUCKET", "b")]).unwrap_err();
        assert_eq!(e.var, "HELIX_TABLE");
        let ok = from_pairs(
            Mode::Lambda,
            &[
                ("HELIX_S3_BUCKET", "b"),
                ("HELIX_TABLE", "t"),
                ("HELIX_AUDIT_TABLE", "a"),
                ("HELIX_KMS_KEY_ID", "k"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ],
        )
        .unwrap();
        assert_eq!(ok.s3_endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert!(!ok.s3_checksums_verified, "a custom S3 endpoint is re-hashed unless it is declared to verify");
        let aws = from_pairs(
            Mode::Lambda,
            &[("HELIX_S3_BUCKET", "b"), ("HELIX_TABLE", "t"), ("HELIX_AUDIT_TABLE", "a"), ("HELIX_KMS_KEY_ID", "k")],
        )
        .unwrap();
        assert!(aws.s3_checksums_verified, "AWS S3 verifies the checksums it stores");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, val) in [
            ("HELIX_BLOB_BACKEND", "gcs"),
            ("HELIX_GOVERNANCE_MODE", "maybe"),
            ("HELIX_INLINE_MAX", "-1"),
            ("HELIX_LISTEN", "nowhere"),
            ("HELIX_S3_PREFIX", "/abs/"),
            ("HELIX_METRICS_MIN_ROLE", "root"),
            ("HELIX_S3_VERIFIES_CHECKSUMS", "maybe"),
            ("HELIX_S3_OBJECT_LOCK_MODE", "governance"),
            ("HELIX_S3_PART_SIZE", "1048576"),
            ("HELIX_S3_PART_SIZE", "64MiB"),
        ] {
            let e = from_pairs(Mode::Serve, &[(var, val)]).unwrap_err();
            assert_eq!(e.var, var, "{e}");
            assert!(e.to_string().contains(var));
        }
    }
}
