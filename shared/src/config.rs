//! Configuration, read once at start into a typed struct (SPEC §6). Nothing reads the environment
//! inside a handler. Bad configuration is one clear line naming the variable, at start.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::domain::Role;
use crate::oidc::{OidcConfig, check_url};

mod webhook;
use webhook::webhook;
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

/// S3 Object Lock retention the registry puts on each blob it writes (never on staging uploads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectLockMode {
    Governance,
    Compliance,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: ObjectLockMode,
    /// Retention from the write: `x-amz-object-lock-retain-until-date` = now + days.
    pub days: u32,
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

/// What the web console needs to sign in with the OIDC issuer (authorization code with PKCE): the
/// issuer, the console's client id at the issuer (a public client: no secret), and the audience the
/// registry accepts (the console picks the token carrying it). Served at `/console/config.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignIn {
    pub issuer: String,
    pub client_id: String,
    pub audience: String,
}

/// HELIX_OIDC_ISSUER, HELIX_OIDC_AUDIENCE and HELIX_OIDC_CLIENT_ID from any variable source (the
/// `console` function reads only these): `None` without a client id (the console then signs in by
/// pasted token only); a client id without the issuer and audience is an error.
pub fn sign_in_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<SignIn>, ConfigError> {
    sign_in(&|k: &str| lookup(k).filter(|v| !v.trim().is_empty()))
}

fn sign_in(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<SignIn>, ConfigError> {
    let Some(client_id) = get("HELIX_OIDC_CLIENT_ID") else { return Ok(None) };
    let (Some(issuer), Some(audience)) = (get("HELIX_OIDC_ISSUER"), get("HELIX_OIDC_AUDIENCE")) else {
        return Err(err("HELIX_OIDC_CLIENT_ID", "needs HELIX_OIDC_ISSUER and HELIX_OIDC_AUDIENCE"));
    };
    check_url(&issuer).map_err(|m| err("HELIX_OIDC_ISSUER", m))?;
    if !client_id.chars().all(|c| c.is_ascii_graphic()) || client_id.len() > 256 {
        return Err(err("HELIX_OIDC_CLIENT_ID", "is at most 256 printable ASCII characters"));
    }
    Ok(Some(SignIn { issuer, client_id, audience }))
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

pub const DEFAULT_INLINE_MAX: u64 = 4 * 1024 * 1024;
/// Multipart part size of the audit days' events files: 64 MiB (10,000 parts hold 625 GiB; larger
/// files get larger parts, up to S3's 5 TiB object limit).
pub const DEFAULT_S3_PART_SIZE: u64 = 64 * 1024 * 1024;
/// S3's smallest part (all but the last) and largest part.
pub const MIN_S3_PART_SIZE: u64 = 5 * 1024 * 1024;
pub const MAX_S3_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Chunked uploads: 64 MiB parts by default (10,000 hold 625 GiB; a larger file gets larger parts).
pub const DEFAULT_UPLOAD_PART_SIZE: u64 = 64 * 1024 * 1024;
/// Uploads up to this size are verified within `complete` (well inside API Gateway's 29 s at the
/// hashing speeds of docs/performance.md).
pub const DEFAULT_VERIFY_INLINE_MAX: u64 = 2 * 1024 * 1024 * 1024;
/// The smallest part of a chunked upload on the embedded store (S3's is `MIN_S3_PART_SIZE`): small
/// parts let tests exercise many parts with little data.
pub const MIN_FS_UPLOAD_PART_SIZE: u64 = 64 * 1024;
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

        let s3_prefix = get("HELIX_S3_PREFIX").unwrap_or_default();
        if s3_prefix.starts_with('/') || (!s3_prefix.is_empty() && !s3_prefix.ends_with('/')) {
            return Err(err("HELIX_S3_PREFIX", "a prefix ends with '/' and does not start with one"));
        }
        let s3_strict_no_overwrite = match get("HELIX_S3_STRICT_NO_OVERWRITE").as_deref() {
            None | Some("1") | Some("true") => true,
            Some("0") | Some("false") => false,
            Some(other) => return Err(err("HELIX_S3_STRICT_NO_OVERWRITE", format!("{other:?} is not 0 or 1"))),
        };

        let s3_endpoint_url =
            get("HELIX_S3_ENDPOINT_URL").or_else(|| get("AWS_ENDPOINT_URL_S3")).or_else(|| aws_endpoint.clone());
        let s3_checksums_verified = match get("HELIX_S3_VERIFIES_CHECKSUMS").as_deref() {
            None => s3_endpoint_url.is_none(),
            Some("1") | Some("true") => true,
            Some("0") | Some("false") => false,
            Some(other) => return Err(err("HELIX_S3_VERIFIES_CHECKSUMS", format!("{other:?} is not 0 or 1"))),
        };

        let s3_object_lock = match get("HELIX_S3_OBJECT_LOCK_MODE").as_deref() {
            None if get("HELIX_S3_OBJECT_LOCK_DAYS").is_some() => {
                return Err(err(
                    "HELIX_S3_OBJECT_LOCK_MODE",
                    "must be set (GOVERNANCE, COMPLIANCE or NONE) with the days",
                ));
            }
            None | Some("NONE") => None,
            Some(m @ ("GOVERNANCE" | "COMPLIANCE")) => {
                let mode = if m == "GOVERNANCE" { ObjectLockMode::Governance } else { ObjectLockMode::Compliance };
                let days = match get("HELIX_S3_OBJECT_LOCK_DAYS").as_deref().map(str::parse::<u32>) {
                    Some(Ok(d)) if (1..=36_500).contains(&d) => d,
                    None => {
                        return Err(err(
                            "HELIX_S3_OBJECT_LOCK_DAYS",
                            format!("must be set with HELIX_S3_OBJECT_LOCK_MODE={m}"),
                        ));
                    }
                    Some(_) => return Err(err("HELIX_S3_OBJECT_LOCK_DAYS", "is not a number of days from 1 to 36500")),
                };
                Some(ObjectLock { mode, days })
            }
            Some(other) => {
                return Err(err(
                    "HELIX_S3_OBJECT_LOCK_MODE",
                    format!("{other:?} is not GOVERNANCE, COMPLIANCE or NONE"),
                ));
            }
        };
        let s3_part_size = match get("HELIX_S3_PART_SIZE") {
            None => DEFAULT_S3_PART_SIZE,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (MIN_S3_PART_SIZE..=MAX_S3_PART_SIZE).contains(&n) => n,
                _ => {
                    return Err(err(
                        "HELIX_S3_PART_SIZE",
                        format!("{v:?} is not a number of bytes from 5 MiB (5242880) to 5 GiB"),
                    ));
                }
            },
        };
        let min_part = if blob_backend == BlobBackend::S3 { MIN_S3_PART_SIZE } else { MIN_FS_UPLOAD_PART_SIZE };
        let upload_part_size = match get("HELIX_UPLOAD_PART_SIZE") {
            None => DEFAULT_UPLOAD_PART_SIZE,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (min_part..=MAX_S3_PART_SIZE).contains(&n) => n,
                _ => {
                    return Err(err(
                        "HELIX_UPLOAD_PART_SIZE",
                        format!(
                            "{v:?} is not a number of bytes from {min_part} to 5 GiB (5368709120) for this blob backend"
                        ),
                    ));
                }
            },
        };

        let number =
            |var: &'static str, range: std::ops::RangeInclusive<u64>| -> Result<Option<u64>, ConfigError> {
                match get(var) {
                    None => Ok(None),
                    Some(v) => v.parse::<u64>().ok().filter(|n| range.contains(n)).map(Some).ok_or_else(|| {
                        err(var, format!("{v:?} is not a number in {}..={}", range.start(), range.end()))
                    }),
                }
            };
        let verify_inline_max = number("HELIX_VERIFY_INLINE_MAX", 0..=u64::MAX)?.unwrap_or(DEFAULT_VERIFY_INLINE_MAX);
        let verify_step_seconds = number("HELIX_VERIFY_STEP_SECONDS", 1..=25)?.unwrap_or(20);
        let verify_step_bytes = number("HELIX_VERIFY_STEP_BYTES", 64..=u64::MAX)?;
        let verify_background = match get("HELIX_VERIFY_BACKGROUND").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => return Err(err("HELIX_VERIFY_BACKGROUND", format!("{other:?} is not on or off"))),
        };

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
        let inline_max = match get("HELIX_INLINE_MAX") {
            None => DEFAULT_INLINE_MAX,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=64 * 1024 * 1024).contains(n))
                .ok_or_else(|| err("HELIX_INLINE_MAX", format!("{v:?} is not a byte count in 1..=67108864")))?,
        };
        let export_limit = match get("HELIX_EXPORT_LIMIT") {
            None => DEFAULT_EXPORT_LIMIT,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| err("HELIX_EXPORT_LIMIT", format!("{v:?} is not a count in 1..=1000000")))?,
        };
        let waiver_limit = match get("HELIX_WAIVER_LIMIT") {
            None => DEFAULT_WAIVER_LIMIT,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=1_000).contains(n))
                .ok_or_else(|| err("HELIX_WAIVER_LIMIT", format!("{v:?} is not a count in 1..=1000")))?,
        };
        let metrics_flush = match get("HELIX_METRICS_FLUSH_SECONDS") {
            None => std::time::Duration::from_secs(10),
            Some(v) => {
                v.parse::<u64>().ok().filter(|n| *n <= 3600).map(std::time::Duration::from_secs).ok_or_else(|| {
                    err("HELIX_METRICS_FLUSH_SECONDS", format!("{v:?} is not a number of seconds in 0..=3600"))
                })?
            }
        };
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

        let oidc = match (get("HELIX_OIDC_ISSUER"), get("HELIX_OIDC_AUDIENCE")) {
            (None, None) => None,
            (Some(issuer), Some(audience)) => {
                check_url(&issuer).map_err(|m| err("HELIX_OIDC_ISSUER", m))?;
                let jwks = get("HELIX_OIDC_JWKS");
                match jwks.as_deref() {
                    Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                        check_url(u).map_err(|m| err("HELIX_OIDC_JWKS", m))?
                    }
                    Some(path) if !std::path::Path::new(path).is_file() => {
                        return Err(err("HELIX_OIDC_JWKS", format!("{path:?} is neither an http(s) URL nor a file")));
                    }
                    _ => {}
                }
                let refetch = match get("HELIX_OIDC_REFETCH_SECONDS") {
                    None => 60,
                    Some(v) => v
                        .parse::<u64>()
                        .map_err(|_| err("HELIX_OIDC_REFETCH_SECONDS", format!("{v:?} is not seconds")))?,
                };
                Some(OidcConfig {
                    issuer,
                    audience,
                    jwks,
                    user_claim: get("HELIX_OIDC_USER_CLAIM").unwrap_or_else(|| "sub".into()),
                    role_claim: get("HELIX_OIDC_ROLE_CLAIM").unwrap_or_else(|| "helix_role".into()),
                    workspace_claim: get("HELIX_OIDC_WORKSPACE_CLAIM").unwrap_or_else(|| "helix_workspace".into()),
                    refetch_interval: std::time::Duration::from_secs(refetch),
                })
            }
            (None, Some(_)) => return Err(err("HELIX_OIDC_ISSUER", "must be set with HELIX_OIDC_AUDIENCE")),
            (Some(_), None) => return Err(err("HELIX_OIDC_AUDIENCE", "must be set with HELIX_OIDC_ISSUER")),
        };

        Ok(Config {
            mode,
            blob_backend,
            meta_backend,
            signer_backend,
            s3_bucket,
            s3_prefix,
            s3_strict_no_overwrite,
            s3_endpoint_url,
            s3_checksums_verified,
            s3_object_lock,
            s3_part_size,
            upload_part_size,
            verify_inline_max,
            verify_step_seconds,
            verify_step_bytes,
            verify_background,
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
            inline_max,
            export_limit,
            waiver_limit,
            metrics_flush,
            audit_reads,
            listen,
            public_url,
            oidc,
            webhook: match webhook(&get)? {
                Some(w) if w.secret_arn.is_some() && mode == Mode::Serve => {
                    return Err(err(
                        "HELIX_WEBHOOK_SECRET_ARN",
                        "is read by the notify function on AWS; helix serve takes HELIX_WEBHOOK_SECRET",
                    ));
                }
                w => w,
            },
            console_sign_in: sign_in(&get)?,
        })
    }

    pub fn uses_aws(&self) -> bool {
        self.blob_backend == BlobBackend::S3
            || self.meta_backend == MetaBackend::DynamoDb
            || self.signer_backend == SignerBackend::Kms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(mode: Mode, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(mode, |k| map.get(k).cloned())
    }

    #[test]
    fn console_sign_in_needs_a_client_id_and_the_issuer() {
        let issuer = [("HELIX_OIDC_ISSUER", "https://idp.example"), ("HELIX_OIDC_AUDIENCE", "helix")];
        assert_eq!(cfg(Mode::Serve, &issuer).unwrap().console_sign_in, None, "no client id: pasted tokens only");
        let with_client = [issuer[0], issuer[1], ("HELIX_OIDC_CLIENT_ID", "helix-console")];
        let s = cfg(Mode::Serve, &with_client).unwrap().console_sign_in.unwrap();
        assert_eq!(
            (s.issuer.as_str(), s.client_id.as_str(), s.audience.as_str()),
            ("https://idp.example", "helix-console", "helix")
        );
        let e = cfg(Mode::Serve, &[("HELIX_OIDC_CLIENT_ID", "helix-console")]).unwrap_err();
        assert_eq!(e.var, "HELIX_OIDC_CLIENT_ID");
        let e = cfg(Mode::Serve, &[issuer[0], issuer[1], ("HELIX_OIDC_CLIENT_ID", "a b")]).unwrap_err();
        assert_eq!(e.var, "HELIX_OIDC_CLIENT_ID");
        // The console function reads the same three variables alone.
        let map: HashMap<&str, &str> = with_client.into_iter().collect();
        assert_eq!(sign_in_from_lookup(|k| map.get(k).map(|v| v.to_string())).unwrap(), Some(s));
    }

    #[test]
    fn serve_defaults_to_the_embedded_backend() {
        let c = cfg(Mode::Serve, &[]).unwrap();
        assert_eq!(
            (c.blob_backend, c.meta_backend, c.signer_backend),
            (BlobBackend::Fs, MetaBackend::Sqlite, SignerBackend::Local)
        );
        assert_eq!(c.inline_max, DEFAULT_INLINE_MAX);
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn a_webhook_needs_its_secret_and_an_https_or_loopback_url_and_never_shows_the_secret() {
        let secret = ("HELIX_WEBHOOK_SECRET", "0123456789abcdef-secret");
        let c = cfg(Mode::Serve, &[("HELIX_WEBHOOK_URL", "https://hooks.example/helix"), secret]).unwrap();
        let w = c.webhook.expect("configured");
        assert_eq!((w.attempts, w.backoff.as_millis(), w.timeout.as_millis()), (10, 1000, 5000));
        assert!(
            !format!("{:?}", cfg(Mode::Serve, &[("HELIX_WEBHOOK_URL", "http://127.0.0.1:9/h"), secret]).unwrap())
                .contains("0123456789abcdef")
        );
        assert!(cfg(Mode::Serve, &[]).unwrap().webhook.is_none());
        for (vars, var) in [
            (vec![("HELIX_WEBHOOK_URL", "http://hooks.example/helix"), secret], "HELIX_WEBHOOK_URL"),
            (vec![("HELIX_WEBHOOK_URL", "https://hooks.example/helix")], "HELIX_WEBHOOK_SECRET"),
            (vec![secret], "HELIX_WEBHOOK_URL"),
            (
                vec![("HELIX_WEBHOOK_URL", "https://h.example/"), ("HELIX_WEBHOOK_SECRET", "short")],
                "HELIX_WEBHOOK_SECRET",
            ),
            (
                vec![("HELIX_WEBHOOK_URL", "https://h.example/"), secret, ("HELIX_WEBHOOK_ATTEMPTS", "0")],
                "HELIX_WEBHOOK_ATTEMPTS",
            ),
        ] {
            let e = cfg(Mode::Serve, &vars).unwrap_err();
            assert_eq!(e.var, var, "{vars:?}");
            assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
        }
    }

    /// On AWS the key stays in Secrets Manager: the notify function gets its ARN and reads it at start.
    #[test]
    fn on_aws_the_webhook_secret_may_be_a_secrets_manager_arn_read_at_start() {
        let aws = [
            ("HELIX_TABLE", "t"),
            ("HELIX_AUDIT_TABLE", "a"),
            ("HELIX_S3_BUCKET", "b"),
            ("HELIX_KMS_KEY_ID", "k"),
            ("HELIX_WEBHOOK_URL", "https://hooks.example/helix"),
        ];
        let arn =
            ("HELIX_WEBHOOK_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:helix-hook-AbC123");
        let with = |extra: &[(&'static str, &'static str)]| [&aws[..], extra].concat();
        let w = cfg(Mode::Lambda, &with(&[arn])).unwrap().webhook.expect("configured");
        assert_eq!(w.secret_arn.as_deref(), Some(arn.1));
        assert_eq!(w.secret.expose(), "", "not read yet");
        assert_eq!(
            w.clone().with_secret("0123456789abcdef-from-sm".into()).unwrap().secret.expose(),
            "0123456789abcdef-from-sm"
        );
        assert_eq!(w.with_secret("short".into()).unwrap_err().var, "HELIX_WEBHOOK_SECRET_ARN");
        for (vars, var) in [
            (with(&[arn, ("HELIX_WEBHOOK_SECRET", "0123456789abcdef-secret")]), "HELIX_WEBHOOK_SECRET_ARN"),
            (with(&[("HELIX_WEBHOOK_SECRET_ARN", "helix-hook")]), "HELIX_WEBHOOK_SECRET_ARN"),
            (with(&[("HELIX_WEBHOOK_SECRET_ARN", "arn:aws:ssm:eu-west-1:1:parameter/x")]), "HELIX_WEBHOOK_SECRET_ARN"),
            ([&aws[..4], &[arn]].concat(), "HELIX_WEBHOOK_URL"),
        ] {
            assert_eq!(cfg(Mode::Lambda, &vars).unwrap_err().var, var, "{vars:?}");
        }
        let backends =
            [("HELIX_META_BACKEND", "dynamodb"), ("HELIX_SIGNER_BACKEND", "kms"), ("HELIX_BLOB_BACKEND", "s3")];
        let serve = cfg(Mode::Serve, &with(&[&backends[..], &[arn]].concat())).unwrap_err();
        assert_eq!(serve.var, "HELIX_WEBHOOK_SECRET_ARN", "helix serve takes the secret itself");
    }

    #[test]
    fn a_log_format_other_than_json_or_text_fails_the_start() {
        assert!(cfg(Mode::Serve, &[("HELIX_LOG_FORMAT", "text")]).is_ok());
        assert!(cfg(Mode::Serve, &[("HELIX_LOG_FORMAT", "json")]).is_ok());
        let e = cfg(Mode::Serve, &[("HELIX_LOG_FORMAT", "pretty")]).unwrap_err();
        assert_eq!(e.var, "HELIX_LOG_FORMAT");
    }

    #[test]
    fn lambda_needs_its_aws_resources_named() {
        let e = cfg(Mode::Lambda, &[]).unwrap_err();
        assert_eq!(e.var, "HELIX_S3_BUCKET");
        let e = cfg(Mode::Lambda, &[("HELIX_S3_BUCKET", "b")]).unwrap_err();
        assert_eq!(e.var, "HELIX_TABLE");
        let ok = cfg(
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
        let aws = cfg(
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
            let e = cfg(Mode::Serve, &[(var, val)]).unwrap_err();
            assert_eq!(e.var, var, "{e}");
            assert!(e.to_string().contains(var));
        }
    }

    #[test]
    fn object_lock_and_part_size_are_read_and_checked() {
        let c = cfg(Mode::Serve, &[]).unwrap();
        assert_eq!((c.s3_object_lock, c.s3_part_size), (None, DEFAULT_S3_PART_SIZE));
        let none = cfg(Mode::Serve, &[("HELIX_S3_OBJECT_LOCK_MODE", "NONE"), ("HELIX_S3_OBJECT_LOCK_DAYS", "30")]);
        assert_eq!(none.unwrap().s3_object_lock, None, "the template passes NONE with its days");
        let c = cfg(
            Mode::Serve,
            &[
                ("HELIX_S3_OBJECT_LOCK_MODE", "COMPLIANCE"),
                ("HELIX_S3_OBJECT_LOCK_DAYS", "30"),
                ("HELIX_S3_PART_SIZE", "5242880"),
            ],
        )
        .unwrap();
        assert_eq!(c.s3_object_lock, Some(ObjectLock { mode: ObjectLockMode::Compliance, days: 30 }));
        assert_eq!(c.s3_part_size, MIN_S3_PART_SIZE);
        for (vars, var) in [
            (&[("HELIX_S3_OBJECT_LOCK_MODE", "GOVERNANCE")][..], "HELIX_S3_OBJECT_LOCK_DAYS"),
            (
                &[("HELIX_S3_OBJECT_LOCK_MODE", "GOVERNANCE"), ("HELIX_S3_OBJECT_LOCK_DAYS", "0")][..],
                "HELIX_S3_OBJECT_LOCK_DAYS",
            ),
            (
                &[("HELIX_S3_OBJECT_LOCK_MODE", "GOVERNANCE"), ("HELIX_S3_OBJECT_LOCK_DAYS", "x")][..],
                "HELIX_S3_OBJECT_LOCK_DAYS",
            ),
            (&[("HELIX_S3_PART_SIZE", "6442450944")][..], "HELIX_S3_PART_SIZE"),
            (&[("HELIX_S3_OBJECT_LOCK_DAYS", "30")][..], "HELIX_S3_OBJECT_LOCK_MODE"),
        ] {
            assert_eq!(cfg(Mode::Serve, vars).unwrap_err().var, var, "{vars:?}");
        }
    }

    /// Chunked uploads: 64 MiB parts by default; S3's 5 MiB smallest part on S3, 64 KiB on the
    /// embedded store (tests use small parts); never above 5 GiB.
    #[test]
    fn upload_part_size_is_checked_against_the_blob_backend() {
        assert_eq!(cfg(Mode::Serve, &[]).unwrap().upload_part_size, DEFAULT_UPLOAD_PART_SIZE);
        let fs = cfg(Mode::Serve, &[("HELIX_UPLOAD_PART_SIZE", "65536")]).unwrap();
        assert_eq!(fs.upload_part_size, MIN_FS_UPLOAD_PART_SIZE);
        let s3_small = [("HELIX_BLOB_BACKEND", "s3"), ("HELIX_S3_BUCKET", "b"), ("HELIX_UPLOAD_PART_SIZE", "65536")];
        assert_eq!(cfg(Mode::Serve, &s3_small).unwrap_err().var, "HELIX_UPLOAD_PART_SIZE");
        for bad in ["65535", "6442450944", "64MiB"] {
            let e = cfg(Mode::Serve, &[("HELIX_UPLOAD_PART_SIZE", bad)]).unwrap_err();
            assert_eq!(e.var, "HELIX_UPLOAD_PART_SIZE", "{bad:?}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "the refusal quotes the value: {e}");
        }
        let e = cfg(Mode::Serve, &[("HELIX_S3_PART_SIZE", "64MiB")]).unwrap_err();
        assert!(e.to_string().contains("\"64MiB\""), "{e}");
    }
}
