//! The state a function builds once, outside its handler, and reuses across warm invocations:
//! configuration and one adapter per port, chosen by configuration.

use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::adapters::dynamo::DynamoStore;
use crate::adapters::fs::{FsBlobStore, LocalPresigner};
use crate::adapters::kms::KmsSigner;
use crate::adapters::lazy::{LazyClient, SdkClients};
use crate::adapters::local_key::LocalKeySigner;
use crate::adapters::s3::S3BlobStore;
#[cfg(feature = "sqlite")]
use crate::adapters::sqlite::SqliteStore;
use crate::auth::Authenticator;
use crate::config::{BlobBackend, Config, MetaBackend, SignerBackend};
use crate::error::{Dependency, Error, Result};
use crate::oidc::OidcVerifier;
use crate::ports::{AuditLog, BlobStore, MetaStore, NotificationOutbox, Signer};

pub struct App {
    pub config: Config,
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetaStore>,
    pub audit: Arc<dyn AuditLog>,
    pub signer: Arc<dyn Signer>,
    pub auth: Authenticator,
    /// The embedded blob store, when it is the one in use (the local server streams uploads to it).
    pub fs_blobs: Option<Arc<FsBlobStore>>,
    /// Signing keys this App has recorded in its meta store (the store's write is idempotent; this
    /// spares a write per decision). Per App, not per process: two Apps may share a key, not a store.
    pub recorded_signing_keys: std::sync::Mutex<Vec<String>>,
    /// This instance's request counts, flushed to the meta store now and then (`metrics`).
    pub metrics: crate::request_counts::Recorder,
    /// Ledger receipts this App has read from the store and verified (`governance::head` reads one
    /// whatever the ledger's length; tests count them to hold the hot path to O(1)).
    pub receipts_read: std::sync::atomic::AtomicU64,
    /// The AWS SDK clients built so far: each at its first use (`adapters::lazy`), so a function
    /// builds only those its requests reach, and none before its first poll.
    pub sdk_clients: SdkClients,
    /// Where reads are recorded (`reads`): a log line each on Lambda, the local queue on `helix
    /// serve`, nowhere with HELIX_AUDIT_READS=off.
    pub reads: crate::reads::ReadAudit,
    /// The notification outbox, when the meta store keeps one (the embedded store; `notify`).
    pub outbox: Option<Arc<dyn NotificationOutbox>>,
    /// This process's notification deliveries (`notify::start`).
    pub notify_stats: Arc<crate::domain::notification::DeliveryStats>,
    /// `helix serve`'s background verification worker, once started (`verify::start_worker`).
    pub verify_worker: crate::ports::VerifyQueue,
}

/// File names inside HELIX_DATA_DIR.
pub const SQLITE_FILE: &str = "helix.db";
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";
pub const PRESIGN_SECRET_FILE: &str = "presign.key";
pub const BLOB_DIR: &str = "blobs";

impl App {
    pub async fn build(config: Config) -> Result<App> {
        let embedded = [
            (config.blob_backend == BlobBackend::Fs, Dependency::BlobStore),
            (config.meta_backend == MetaBackend::Sqlite, Dependency::MetaStore),
            (config.signer_backend == SignerBackend::Local, Dependency::Signer),
        ];
        if let Some((_, dep)) = embedded.into_iter().find(|(used, _)| *used) {
            ensure_data_dir(&config, dep)?;
        }
        let sdk = if config.uses_aws() { Some(aws_sdk_config(&config).await) } else { None };
        let dir = &config.data_dir;
        let sdk_clients = SdkClients::default();

        let (blobs, fs_blobs): (Arc<dyn BlobStore>, _) = match config.blob_backend {
            BlobBackend::S3 => {
                let (sdk, endpoint) = (sdk.clone().expect("aws config"), config.s3_endpoint_url.clone());
                let client =
                    LazyClient::new("s3", sdk_clients.clone(), move || s3_client_with(endpoint.as_deref(), &sdk));
                let store = S3BlobStore::new(
                    client,
                    config.s3_bucket.clone(),
                    config.s3_prefix.clone(),
                    config.s3_strict_no_overwrite,
                    config.s3_checksums_verified,
                )
                .with_object_lock(config.s3_object_lock)
                .with_part_size(config.s3_part_size);
                // An operator who declares a custom store checksum-verifying is taken at their word
                // only if the store refuses a wrong checksum (AWS S3 is known to; nothing is probed).
                // The one request before the first poll, and only with that setting: a start refused
                // is better than a registry that trusts checksums nobody verifies.
                if config.s3_checksums_verified
                    && let Some(endpoint) = &config.s3_endpoint_url
                    && store.refuses_wrong_checksums().await == Some(false)
                {
                    return Err(Error::Internal(format!(
                        "configuration error: HELIX_S3_VERIFIES_CHECKSUMS: set to 1, but the store at {endpoint} \
                         accepted an object whose x-amz-checksum-sha256 does not match its bytes; set it to 0"
                    )));
                }
                (Arc::new(store), None)
            }
            BlobBackend::Fs => {
                let unavailable = |e: std::io::Error| Error::unavailable(Dependency::BlobStore, e);
                let presigner =
                    LocalPresigner::load_or_create(config.public_url.clone(), &dir.join(PRESIGN_SECRET_FILE))
                        .map_err(unavailable)?;
                let store = Arc::new(FsBlobStore::open(&dir.join(BLOB_DIR), presigner).map_err(unavailable)?);
                (store.clone() as Arc<dyn BlobStore>, Some(store))
            }
        };

        let (meta, audit, outbox) = build_meta(&config, sdk.as_ref(), &sdk_clients)?;

        let signer: Arc<dyn Signer> = match config.signer_backend {
            SignerBackend::Kms => {
                let (sdk, endpoint) = (sdk.clone().expect("aws config"), config.kms_endpoint_url.clone());
                let client = LazyClient::new("kms", sdk_clients.clone(), move || {
                    let mut b = aws_sdk_kms::config::Builder::from(&sdk);
                    if let Some(ep) = &endpoint {
                        b = b.endpoint_url(ep);
                        if let Some(client) = endpoint_client(ep) {
                            b = b.http_client(client);
                        }
                    }
                    aws_sdk_kms::Client::from_conf(b.build())
                });
                Arc::new(KmsSigner::new(client, config.kms_key_id.clone()))
            }
            SignerBackend::Local => Arc::new(LocalKeySigner::load_or_create(&dir.join(SIGNING_KEY_FILE))?),
        };

        let oidc = config.oidc.clone().map(OidcVerifier::new);
        let reads = match (config.audit_reads, config.mode) {
            (false, _) => crate::reads::ReadAudit::off(),
            (true, crate::Mode::Lambda) => crate::reads::ReadAudit::log(),
            (true, _) => crate::reads::ReadAudit::queue(audit.clone()),
        };
        Ok(App {
            reads,
            auth: Authenticator::new(meta.clone(), oidc),
            metrics: crate::request_counts::Recorder::new(config.metrics_flush),
            config,
            blobs,
            meta,
            audit,
            signer,
            fs_blobs,
            recorded_signing_keys: Default::default(),
            receipts_read: Default::default(),
            sdk_clients,
            outbox,
            notify_stats: Default::default(),
            verify_worker: Default::default(),
        })
    }
}

/// HELIX_DATA_DIR holds every embedded adapter's files (the signing key and the presign secret
/// among them): created with mode 0700, and tightened to 0700 if it exists with group or other
/// access. A failure names the first adapter that needs it.
fn ensure_data_dir(config: &Config, dep: Dependency) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = &config.data_dir;
    let fail = |e: std::io::Error| Error::unavailable(dep, format!("{}: {e}", dir.display()));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(fail)?;
    let mode = std::fs::metadata(dir).map_err(fail)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "data dir was open to others; set to 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}

/// The meta store and audit log alone (operator commands need nothing else).
/// An S3 client for `config` (its endpoint, path-style, TLS roots), as the blob store uses it.
pub async fn s3_client(config: &Config) -> aws_sdk_s3::Client {
    s3_client_with(config.s3_endpoint_url.as_deref(), &aws_sdk_config(config).await)
}

fn s3_client_with(endpoint: Option<&str>, sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    // Reads are verified by helix-core (`blobs::verify_object`, `blobs::fetch`), which knows a wrong
    // object for what it is (`blob_integrity_error`, a poisoned slot skipped); the SDK's own check
    // would turn it into an unreadable stream (a 503).
    let mut b = aws_sdk_s3::config::Builder::from(sdk)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired);
    if let Some(ep) = endpoint {
        b = b.endpoint_url(ep).force_path_style(true);
        if let Some(client) = endpoint_client(ep) {
            b = b.http_client(client);
        }
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

/// The origin of the blob store's presigned GETs, where a proof URL (or a blob GET) of a file above
/// HELIX_INLINE_MAX redirects: what the console's connect-src must name for its evidence pack to
/// follow that redirect. Made offline, as the blob store makes its URLs (the same client settings:
/// region, endpoint, path style), with throwaway credentials: no call, no grant. `None` for the
/// embedded store (its presigned URLs are on the registry's own origin) or when no URL can be made
/// (no region).
pub async fn blob_download_origin(config: &Config) -> Option<String> {
    if config.blob_backend != crate::config::BlobBackend::S3 {
        return None;
    }
    let client = s3_client_with(config.s3_endpoint_url.as_deref(), &aws_sdk_config(config).await);
    presigned_get_origin(&client, &config.s3_bucket, &format!("{}blobs/origin", config.s3_prefix)).await
}

/// `blob_download_origin` from the bucket's settings alone (the `console` function reads no table and
/// no key): the bucket, its endpoint (HELIX_S3_ENDPOINT_URL, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, as
/// `Config` resolves it) and the region.
pub async fn bucket_download_origin(bucket: &str, endpoint: Option<&str>, region: Option<String>) -> Option<String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    let client = s3_client_with(endpoint, &loader.load().await);
    presigned_get_origin(&client, bucket, "blobs/origin").await
}

/// The origin of a presigned GET of `bucket`/`key` made by `client` (with throwaway credentials).
pub async fn presigned_get_origin(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    let throwaway = aws_sdk_s3::config::Credentials::new("origin", "only", None, None, "helix-console");
    let conf = client.config().to_builder().credentials_provider(throwaway).build();
    let presigning = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(60)).ok()?;
    let req = aws_sdk_s3::Client::from_conf(conf).get_object().bucket(bucket).key(key).presigned(presigning).await;
    let req = req
        .map_err(|e| tracing::warn!(error = %aws_sdk_s3::error::DisplayErrorContext(&e), "no presigned URL origin"))
        .ok()?;
    let url = url::Url::parse(req.uri()).ok()?;
    Some(url.origin().ascii_serialization())
}

pub async fn meta_store(config: &Config) -> Result<(Arc<dyn MetaStore>, Arc<dyn AuditLog>)> {
    let sdk = match config.meta_backend {
        MetaBackend::DynamoDb => Some(aws_sdk_config(config).await),
        MetaBackend::Sqlite => {
            ensure_data_dir(config, Dependency::MetaStore)?;
            None
        }
    };
    let (meta, audit, _) = build_meta(config, sdk.as_ref(), &SdkClients::default())?;
    Ok((meta, audit))
}

/// The meta store, the audit log and the notification outbox (the embedded store has one).
type Stores = (Arc<dyn MetaStore>, Arc<dyn AuditLog>, Option<Arc<dyn NotificationOutbox>>);

fn build_meta(config: &Config, sdk: Option<&aws_config::SdkConfig>, clients: &SdkClients) -> Result<Stores> {
    Ok(match config.meta_backend {
        MetaBackend::DynamoDb => {
            let (sdk, endpoint) = (sdk.cloned().expect("aws config"), config.dynamodb_endpoint_url.clone());
            let client = LazyClient::new("dynamodb", clients.clone(), move || {
                let mut b = aws_sdk_dynamodb::config::Builder::from(&sdk);
                if let Some(ep) = &endpoint {
                    b = b.endpoint_url(ep);
                    if let Some(client) = endpoint_client(ep) {
                        b = b.http_client(client);
                    }
                }
                aws_sdk_dynamodb::Client::from_conf(b.build())
            });
            let store = Arc::new(DynamoStore::new(client, config.table.clone(), config.audit_table.clone()));
            (store.clone(), store, None)
        }
        #[cfg(feature = "sqlite")]
        MetaBackend::Sqlite => {
            let store = Arc::new(SqliteStore::open(&config.data_dir.join(SQLITE_FILE))?);
            (store.clone(), store.clone(), Some(store as Arc<dyn NotificationOutbox>))
        }
        #[cfg(not(feature = "sqlite"))]
        MetaBackend::Sqlite => unreachable!("Config refuses sqlite when the feature is off"),
    })
}

/// Whether AWS clients trust the host's CA store rather than the compiled-in Amazon roots: outside
/// Lambda (`helix serve`, the CLI, where start-up cost does not matter and S3-compatible stores such
/// as MinIO behind a private CA are common), or when SSL_CERT_FILE / SSL_CERT_DIR name a store.
pub fn trusts_host_store(config: &Config) -> bool {
    config.mode != crate::Mode::Lambda || config.tls_native_roots
}

/// The client for a custom endpoint (an S3-compatible store, an emulator, a proxy). A plain `http://`
/// endpoint (the emulator) makes no TLS connection, so it keeps the SDK configuration's client and no
/// trust store is read for it; nor for an endpoint that is AWS's own (a FIPS or VPC endpoint:
/// `*.amazonaws.com`, `*.amazonaws.com.cn`, `*.api.aws`). Any other `https://` endpoint gets the
/// host's CA store, which its certificate is far likelier to chain to than Amazon's roots, loaded
/// lazily (`HostStoreClient`): at its first connection, not at start, once per process (S3, DynamoDB
/// and KMS pointed at custom endpoints share it).
fn endpoint_client(endpoint: &str) -> Option<aws_sdk_s3::config::SharedHttpClient> {
    static CLIENT: std::sync::OnceLock<aws_sdk_s3::config::SharedHttpClient> = std::sync::OnceLock::new();
    let url = url::Url::parse(endpoint).ok();
    if url.as_ref().is_some_and(|u| u.scheme() == "http") {
        return None;
    }
    let host = url.and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    let aws = host.is_some_and(|h| [".amazonaws.com", ".amazonaws.com.cn", ".api.aws"].iter().any(|s| h.ends_with(s)));
    if aws {
        return None;
    }
    tracing::debug!(endpoint, "custom endpoint: host CA store, loaded at its first connection");
    Some(CLIENT.get_or_init(|| aws_sdk_s3::config::SharedHttpClient::new(HostStoreClient::default())).clone())
}

/// Times this process has loaded the host's CA store for a custom endpoint (0 or 1).
static HOST_STORE_LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The host-store HTTPS client, built at the first connection through it. The SDK's own client reads
/// and parses the CA store when a service client is constructed (its `validate_base_client_config`),
/// i.e. before a function's first poll; this one defers that until a request needs it.
#[derive(Debug, Default)]
struct HostStoreClient(std::sync::OnceLock<aws_sdk_s3::config::SharedHttpClient>);

impl aws_sdk_s3::config::HttpClient for HostStoreClient {
    fn http_connector(
        &self,
        settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        components: &aws_sdk_s3::config::RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        let client = self.0.get_or_init(|| {
            HOST_STORE_LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            https_client(true)
        });
        client.http_connector(settings, components)
    }
}

/// The HTTPS client of every SDK client. Server certificates are always verified (rustls with
/// aws-lc, as the SDK's default client). In Lambda, for AWS's own endpoints, against the roots of
/// Amazon Trust Services, the CA of every AWS service endpoint, compiled into the binary (from
/// webpki-root-certs, Mozilla's set): nothing is read from disk at start and no other CA can vouch for
/// an AWS endpoint. Reading and parsing the system store cost ~6 ms of a ~10 ms cold start here,
/// parsing Mozilla's ~150 roots ~2 ms (docs/performance.md). Elsewhere (`trusts_host_store`, or a
/// custom endpoint) the host's CA store, which honours SSL_CERT_FILE and SSL_CERT_DIR.
fn https_client(native_roots: bool) -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let trust = if native_roots {
        TrustStore::default()
    } else {
        TrustStore::empty().with_native_roots(false).with_pem_certificate(pem(&aws_roots()))
    };
    let context = TlsContext::builder().with_trust_store(trust).build().expect("a trust store without files is valid");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https()
}

/// Subjects of the Amazon Trust Services roots (https://www.amazontrust.com/repository/): Amazon Root
/// CA 1-4, and the Starfield root that cross-signs them for older clients.
const AWS_ROOT_SUBJECTS: [&str; 5] = [
    "Amazon Root CA 1",
    "Amazon Root CA 2",
    "Amazon Root CA 3",
    "Amazon Root CA 4",
    "Starfield Services Root Certificate Authority - G2",
];

/// The compiled-in Mozilla roots whose subject is one of AWS_ROOT_SUBJECTS (a root's DER holds its
/// common name verbatim; "Amazon Root CA 1" is not a prefix of another root's name in the set).
/// A SIMD substring search: a naive scan of the ~200 KB of roots cost ~2 ms of cold start.
fn aws_roots() -> Vec<&'static [u8]> {
    let finders: Vec<memchr::memmem::Finder> = AWS_ROOT_SUBJECTS.iter().map(memchr::memmem::Finder::new).collect();
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| -> &'static [u8] { c.as_ref() })
        .filter(|der| finders.iter().any(|f| f.find(der).is_some()))
        .collect()
}

/// DER certificates as one PEM bundle (the form the SDK's trust store takes).
fn pem(ders: &[&[u8]]) -> Vec<u8> {
    use base64::Engine;
    let mut pem = String::new();
    for der in ders {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

/// One SDK configuration for every client: region and credentials from the standard chain (in Lambda,
/// from the environment, where the Lambda service puts the function role's credentials: the chain's
/// other providers, profile files, web identity with its STS client, ECS, IMDS, are never used there
/// and cost a share of the cold start), short timeouts and few retries so an outage becomes a prompt
/// 503 rather than a hung request.
pub async fn aws_sdk_config(config: &Config) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client(trusts_host_store(config)))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(25))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3));
    if let Some(region) = &config.aws_region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if config.mode == crate::Mode::Lambda {
        loader = loader
            .credentials_provider(aws_config::environment::credentials::EnvironmentVariableCredentialsProvider::new());
    }
    loader.load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lambda_without_a_named_store_pins_the_amazon_roots() {
        let cfg = |mode, vars: &[(&str, &str)]| {
            let mut all = vec![
                ("HELIX_S3_BUCKET", "b"),
                ("HELIX_TABLE", "t"),
                ("HELIX_AUDIT_TABLE", "a"),
                ("HELIX_KMS_KEY_ID", "k"),
                ("HELIX_BLOB_BACKEND", "s3"),
                ("HELIX_META_BACKEND", "dynamodb"),
                ("HELIX_SIGNER_BACKEND", "kms"),
            ];
            all.extend_from_slice(vars);
            Config::from_lookup(mode, |k| all.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap()
        };
        assert!(!trusts_host_store(&cfg(crate::Mode::Lambda, &[])));
        assert!(trusts_host_store(&cfg(crate::Mode::Lambda, &[("SSL_CERT_FILE", "/x.pem")])));
        assert!(trusts_host_store(&cfg(crate::Mode::Serve, &[])), "helix serve and the CLI use the host store");
    }

    #[test]
    fn aws_trust_anchors_are_exactly_the_five_amazon_trust_services_roots() {
        let roots = aws_roots();
        assert_eq!(roots.len(), AWS_ROOT_SUBJECTS.len(), "one root per subject, no more");
        for subject in AWS_ROOT_SUBJECTS {
            let n = roots.iter().filter(|d| memchr::memmem::find(d, subject.as_bytes()).is_some()).count();
            assert_eq!(n, 1, "{subject}");
        }
        // Whole certificates (the SDK parses them into trust anchors), not just names.
        assert!(roots.iter().all(|d| d.len() > 400), "whole certificates, not names");
    }

    /// The emulator's plain-http endpoint and AWS's own endpoints never get the host store; another
    /// https endpoint gets it, and building every SDK client for it reads nothing until a connection.
    #[tokio::test]
    async fn the_host_ca_store_is_loaded_only_by_a_connection_to_a_custom_https_endpoint() {
        assert!(endpoint_client("http://127.0.0.1:5000").is_none(), "no TLS, no trust store");
        assert!(endpoint_client("https://s3.eu-west-1.amazonaws.com").is_none());
        assert!(endpoint_client("https://dynamodb-fips.us-east-1.amazonaws.com").is_none());
        let client = endpoint_client("https://minio.internal:9000").expect("the host store, for a custom endpoint");
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .http_client(client.clone())
            .build();
        let _s3 =
            aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).http_client(client.clone()).build());
        let _dynamo = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk).http_client(client.clone()).build(),
        );
        let _kms = aws_sdk_kms::Client::from_conf(aws_sdk_kms::config::Builder::from(&sdk).http_client(client).build());
        assert_eq!(HOST_STORE_LOADS.load(std::sync::atomic::Ordering::Relaxed), 0, "nothing read before a request");
    }
}
