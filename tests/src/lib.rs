//! helix-tests: one contract suite per port and the end-to-end flows over HTTP, written once and
//! run on both backends. `tests/embedded.rs` runs them on files + SQLite + a local key;
//! `tests/emulator.rs` on S3 + DynamoDB + KMS against moto (localstack/with-emulator.sh). Every
//! test gets fresh, isolated resources (a temp dir; or a bucket, two tables and a key of its own).

pub mod cases;
pub mod fault_proxy;
pub mod rbac;
pub mod runtime_api;
pub mod strict_s3;
pub mod template;
pub mod tls_stub;

/// Every log line this test process writes, in the production JSON format.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<std::sync::Mutex<Vec<u8>>> {
    static BUFFER: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    BUFFER.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buf.clone();
        helix_core::telemetry::init_with_writer(move || LogSink(sink.clone()));
        buf
    })
}

struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

use std::collections::HashMap;
use std::sync::Arc;

use aws_config::BehaviorVersion;
use helix_cli::serve::Server;
use helix_core::domain::{AuditEvent, Role, Scope};
use helix_core::ports::AuditQuery;
use helix_core::tokens::{self, Grant};
use helix_core::{App, Config, Mode};
use tempfile::TempDir;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Emulator,
}

/// Clients and resource names of one test's private slice of the emulator.
pub struct AwsFixture {
    pub endpoint: String,
    pub s3: aws_sdk_s3::Client,
    pub ddb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
    pub bucket: String,
    pub table: String,
    pub audit_table: String,
    pub key_id: String,
}

fn suffix() -> String {
    let t = helix_core::domain::BearerToken::generate();
    t.sha256()[..10].to_owned()
}

/// The emulator's endpoint. Missing is a failure: the emulator suite never skips.
pub fn emulator_endpoint() -> String {
    std::env::var("HELIX_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!("HELIX_TEST_AWS_ENDPOINT is not set: run the emulator suite through `make test` or localstack/with-emulator.sh")
    })
}

impl AwsFixture {
    pub async fn create() -> AwsFixture {
        AwsFixture::create_at(emulator_endpoint()).await
    }

    /// A private slice (bucket, tables, key) of the emulator at `endpoint`.
    pub async fn create_at(endpoint: String) -> AwsFixture {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "helix-tests"))
            .load()
            .await;
        let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let kms = aws_sdk_kms::Client::new(&sdk);
        let id = suffix();
        let (bucket, table, audit_table) =
            (format!("helix-{id}"), format!("helix-meta-{id}"), format!("helix-audit-{id}"));

        s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
        s3.put_bucket_versioning()
            .bucket(&bucket)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .expect("versioning");
        for (name, definition) in [(&table, "meta"), (&audit_table, "audit")] {
            create_table(&ddb, name, definition).await;
        }
        let key = kms
            .create_key()
            .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
            .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
            .send()
            .await
            .expect("create key");
        let key_id = key.key_metadata().expect("key metadata").key_id().to_owned();
        AwsFixture { endpoint, s3, ddb, kms, bucket, table, audit_table, key_id }
    }
}

/// Create `name` from the emulator's shared table definition (localstack/init/ready.d/tables/
/// `definition`.json, which bootstrap.py and the LocalStack ready hook use and the template test checks
/// against infra/template.yaml).
async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str, definition: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
        ScalarAttributeType,
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../localstack/init/ready.d/tables/{definition}.json"));
    let def: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<KeySchemaElement> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| {
                let kind = KeyType::from(k["KeyType"].as_str().unwrap());
                KeySchemaElement::builder()
                    .attribute_name(k["AttributeName"].as_str().unwrap())
                    .key_type(kind)
                    .build()
                    .unwrap()
            })
            .collect()
    };
    let attributes = def["AttributeDefinitions"].as_array().unwrap().iter().map(|a| {
        let kind = ScalarAttributeType::from(a["AttributeType"].as_str().unwrap());
        AttributeDefinition::builder()
            .attribute_name(a["AttributeName"].as_str().unwrap())
            .attribute_type(kind)
            .build()
            .unwrap()
    });
    let indexes = def["GlobalSecondaryIndexes"].as_array().into_iter().flatten().map(|i| {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(i["Projection"]["ProjectionType"].as_str().unwrap()))
            .build();
        GlobalSecondaryIndex::builder()
            .index_name(i["IndexName"].as_str().unwrap())
            .set_key_schema(Some(keys(&i["KeySchema"])))
            .projection(projection)
            .build()
            .unwrap()
    });
    let indexes: Vec<GlobalSecondaryIndex> = indexes.collect();
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::from(def["BillingMode"].as_str().unwrap()))
        .set_attribute_definitions(Some(attributes.collect()))
        .set_key_schema(Some(keys(&def["KeySchema"])))
        .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
        .send()
        .await
        .expect("create table");
}

/// One isolated registry: its own storage, an App over it, and `helix serve`'s router on a free port.
pub struct TestEnv {
    pub backend: Backend,
    pub app: Arc<App>,
    pub server: Server,
    pub http: reqwest::Client,
    pub dir: TempDir,
    pub aws: Option<AwsFixture>,
    vars: HashMap<String, String>,
}

impl TestEnv {
    pub async fn start(backend: Backend) -> TestEnv {
        TestEnv::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: Backend, overrides: &[(&str, &str)]) -> TestEnv {
        TestEnv::start_full(backend, None, overrides).await
    }

    /// For heavy concurrent writers: on the emulator, a private emulator process of its own (moto is
    /// one Python process bound by one core; a second process uses the other). Keep the PrivateMoto
    /// alive with the env.
    pub async fn start_private(backend: Backend) -> (TestEnv, Option<PrivateMoto>) {
        match backend {
            Backend::Embedded => (TestEnv::start(backend).await, None),
            Backend::Emulator => {
                let moto = PrivateMoto::start().await;
                (TestEnv::start_at(&moto.endpoint, &[]).await, Some(moto))
            }
        }
    }

    /// An emulator-backed registry on the emulator at `endpoint` (a private one, e.g. to pause it).
    pub async fn start_at(endpoint: &str, overrides: &[(&str, &str)]) -> TestEnv {
        TestEnv::start_full(Backend::Emulator, Some(endpoint.to_owned()), overrides).await
    }

    async fn start_full(backend: Backend, endpoint: Option<String>, overrides: &[(&str, &str)]) -> TestEnv {
        log_buffer();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut vars: HashMap<String, String> = HashMap::new();
        // Not created here: App::build must create it for whichever embedded adapter is in use.
        vars.insert("HELIX_DATA_DIR".into(), dir.path().join("data").display().to_string());
        let aws = match backend {
            Backend::Embedded => None,
            Backend::Emulator => {
                let f = match endpoint {
                    Some(e) => AwsFixture::create_at(e).await,
                    None => AwsFixture::create().await,
                };
                for (k, v) in [
                    ("HELIX_BLOB_BACKEND", "s3"),
                    ("HELIX_META_BACKEND", "dynamodb"),
                    ("HELIX_SIGNER_BACKEND", "kms"),
                    ("HELIX_S3_BUCKET", f.bucket.as_str()),
                    ("HELIX_TABLE", f.table.as_str()),
                    ("HELIX_AUDIT_TABLE", f.audit_table.as_str()),
                    ("HELIX_KMS_KEY_ID", f.key_id.as_str()),
                    ("AWS_ENDPOINT_URL", f.endpoint.as_str()),
                    ("AWS_REGION", "us-east-1"),
                ] {
                    vars.insert(k.into(), v.into());
                }
                Some(f)
            }
        };
        for (k, v) in overrides {
            vars.insert((*k).into(), (*v).into());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        vars.insert("HELIX_PUBLIC_URL".into(), format!("http://{}", listener.local_addr().unwrap()));
        let app = Arc::new(build_app(&vars).await.expect("app builds"));
        let mut server = Server::start(app.clone(), listener);
        server.start_notifications(&app).await.expect("notifications start");
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        TestEnv { backend, app, server, http, dir, aws, vars }
    }

    /// A key rotation: a new App over the same stores, signing with a new key (a new local key file,
    /// the old one moved aside; or a new KMS key).
    pub async fn app_with_a_new_signing_key(&self) -> App {
        match &self.aws {
            None => {
                let key = self.data_dir().join(helix_core::app::SIGNING_KEY_FILE);
                std::fs::rename(&key, self.data_dir().join("signing-key.old.pem")).unwrap();
                self.app_with(&[]).await.unwrap()
            }
            Some(f) => {
                let key = f
                    .kms
                    .create_key()
                    .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
                    .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
                    .send()
                    .await
                    .unwrap();
                self.app_with(&[("HELIX_KMS_KEY_ID", key.key_metadata().unwrap().key_id())]).await.unwrap()
            }
        }
    }

    /// The variables a Lambda function needs to run on this environment's resources.
    pub fn lambda_env(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .filter(|(k, _)| k.starts_with("HELIX_") || k.starts_with("AWS_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// HELIX_DATA_DIR of this environment.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Another App on the same resources, with some variables changed (e.g. a dead endpoint).
    pub async fn app_with(&self, overrides: &[(&str, &str)]) -> helix_core::Result<App> {
        let mut vars = self.vars.clone();
        for (k, v) in overrides {
            vars.insert((*k).into(), (*v).into());
        }
        build_app(&vars).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// Issue a token straight into the store, as `helix teams token` does.
    pub async fn token(&self, role: Role, scope: &str) -> String {
        self.token_with(role, scope, None).await
    }

    /// A token of a named user (separation of duties compares users).
    pub async fn token_of(&self, user: &str, role: Role, scope: &str) -> String {
        let grant = Grant {
            user: user.into(),
            role,
            workspace_id: Scope::parse(scope).unwrap(),
            ttl_seconds: None,
            description: None,
        };
        let (secret, _) = tokens::issue(self.app.meta.as_ref(), grant, "tests", "tests").await.expect("issue token");
        secret.expose().to_owned()
    }

    pub async fn token_with(&self, role: Role, scope: &str, ttl_seconds: Option<i64>) -> String {
        let grant = Grant {
            user: format!("{role}-user"),
            role,
            workspace_id: Scope::parse(scope).unwrap(),
            ttl_seconds,
            description: None,
        };
        let (secret, _) = tokens::issue(self.app.meta.as_ref(), grant, "tests", "tests").await.expect("issue token");
        secret.expose().to_owned()
    }

    /// The id (`tok_…`) of an issued token's secret.
    pub async fn token_id(&self, secret: &str) -> String {
        let sha256 = helix_core::domain::BearerToken::parse(secret).unwrap().sha256();
        self.app.meta.token_by_sha256(&sha256).await.unwrap().expect("issued").id
    }

    /// Every audit event of a stream, in order.
    pub async fn audit(&self, stream: &str) -> Vec<AuditEvent> {
        let q = AuditQuery { stream: stream.into(), limit: 10_000, ..Default::default() };
        self.app.audit.query(&q).await.expect("audit query")
    }

    /// The audit events about blobs (links, uploads) in a stream; token issues and reads (appended
    /// off the request path: `cases::read_events`) are left out.
    pub async fn blob_events(&self, stream: &str) -> Vec<AuditEvent> {
        self.audit(stream).await.into_iter().filter(|e| e.entity_type == "blob" && e.action != "blob.read").collect()
    }

    /// How many blob objects (object versions, on S3) the store holds under `blobs/` (staging
    /// objects of uploads are not blobs).
    pub async fn stored_objects(&self) -> usize {
        match &self.aws {
            None => walk_files(&self.data_dir().join(helix_core::app::BLOB_DIR).join("sha256"), ""),
            Some(f) => {
                let out =
                    f.s3.list_object_versions().bucket(&f.bucket).prefix("blobs/").send().await.expect("list versions");
                out.versions().len()
            }
        }
    }

    /// Staging objects of uploads still present (current versions).
    pub async fn staged_uploads(&self) -> usize {
        match &self.aws {
            // Staging files, not the checksum records the local upload writes beside them.
            None => walk_files(&self.data_dir().join(helix_core::app::BLOB_DIR).join("uploads"), ".sha256"),
            Some(f) => {
                let out = f.s3.list_objects_v2().bucket(&f.bucket).prefix("uploads/").send().await.expect("list");
                out.contents().len()
            }
        }
    }

    /// Replace an upload's staging object behind the registry's back (a store that kept bytes it
    /// should have refused).
    pub async fn plant_staged(&self, upload: &helix_core::ports::UploadRef, bytes: &[u8]) {
        match &self.aws {
            None => {
                let path = self.app.fs_blobs.as_ref().unwrap().upload_path(upload);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Some(f) => {
                f.s3.put_object()
                    .bucket(&f.bucket)
                    .key(upload.storage_key())
                    .body(bytes.to_vec().into())
                    .send()
                    .await
                    .expect("plant staged");
            }
        }
    }

    /// Files left in the embedded store's temp folder (always 0 on S3).
    pub fn temp_files(&self) -> usize {
        match &self.aws {
            None => walk_files(&self.data_dir().join(helix_core::app::BLOB_DIR).join("tmp"), ""),
            Some(_) => 0,
        }
    }

    /// Overwrite a document (an audit export file) behind the registry's back.
    pub async fn plant_document(&self, key: &str, bytes: &[u8]) {
        match &self.aws {
            None => {
                let path = self.data_dir().join(helix_core::app::BLOB_DIR).join(key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Some(f) => {
                f.s3.put_object().bucket(&f.bucket).key(key).body(bytes.to_vec().into()).send().await.expect("plant");
            }
        }
    }

    /// Write `bytes` under `digest`'s own key (slot 0) behind the registry's back (corruption,
    /// tampering, a store that kept bytes it should have refused).
    pub async fn plant_object(&self, digest: &helix_core::domain::Digest, bytes: &[u8]) {
        let key = helix_core::ports::BlobKey::primary(digest);
        match &self.aws {
            None => {
                let path = self.app.fs_blobs.as_ref().unwrap().path_of(&key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Some(f) => {
                // With a checksum header that claims the digest: a store that keeps whatever checksum
                // it is sent (moto, some S3-compatibles) then vouches for the wrong bytes.
                f.s3.put_object()
                    .bucket(&f.bucket)
                    .key(format!("blobs/{}", key.storage_key()))
                    .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
                    .checksum_sha256(digest.base64())
                    .body(bytes.to_vec().into())
                    .send()
                    .await
                    .expect("plant object");
            }
        }
    }
}

/// A private emulator (localstack/emulator.py from the project venv that `make test` installs, the
/// same program as the shared one: moto with DynamoDB requests isolated) on a free 127.0.0.1 port, for
/// drills that break the emulator itself (pause it, kill it) without touching other tests.
pub struct PrivateMoto {
    pub endpoint: String,
    child: std::process::Child,
}

impl PrivateMoto {
    pub async fn start() -> PrivateMoto {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let bin = root.join(".venv/bin/python");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = std::process::Command::new(&bin)
            .arg(root.join("localstack/emulator.py"))
            .args(["127.0.0.1", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run through `make test`, which installs the venv)", bin.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http.get(format!("{endpoint}/moto-api/")).send().await.is_ok_and(|r| r.status().is_success()) {
                return PrivateMoto { endpoint, child };
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("private moto on {endpoint} did not start");
    }

    /// Send the process a signal (`STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let status =
            std::process::Command::new("kill").args([format!("-{name}"), self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name}");
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Files under `dir`, except those whose name ends with `skip` ("" skips none).
fn walk_files(dir: &std::path::Path, skip: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_files(&path, skip)
            } else {
                usize::from(skip.is_empty() || !path.to_string_lossy().ends_with(skip))
            }
        })
        .sum()
}

async fn build_app(vars: &HashMap<String, String>) -> helix_core::Result<App> {
    let config = Config::from_lookup(Mode::Serve, |k| vars.get(k).cloned()).expect("valid test config");
    App::build(config).await
}

/// Expands to one `#[tokio::test]` per case, all run on `$backend`.
#[macro_export]
macro_rules! cases {
    ($backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::cases::$name($backend).await
            }
        )*
    };
}

/// The cases both backends run.
#[macro_export]
macro_rules! common_suite {
    ($backend:expr) => {
        $crate::cases!($backend;
            blob_store_put_if_absent_creates_once_then_reports_existing,
            blob_store_streams_exact_bytes_and_reports_missing_as_none,
            blob_store_puts_and_gets_many_as_it_does_one_by_one,
            blob_store_reports_an_existing_object_for_the_core_to_verify,
            blob_store_concurrent_puts_create_exactly_one_object,
            blob_store_staged_upload_promotes_and_presigned_get_round_trips,
            meta_store_issued_token_round_trips_and_a_duplicate_is_already_done,
            meta_store_link_commits_with_its_audit_event_and_only_once,
            meta_store_counters_add_atomically,
            audit_log_concurrent_appends_form_a_gapless_verified_chain,
            audit_log_query_filters_by_time_and_cursor,
            audit_log_read_day_returns_that_days_events_of_every_stream_in_order,
            blob_store_documents_are_put_once_and_read_back,
            audit_export_writes_a_day_once_chains_days_and_detects_tampering,
            audit_log_search_filters_and_pages_in_time_order,
            audit_query_answers_across_workspaces_with_cursor_and_refuses_outside_the_grant,
            audit_export_backfills_missing_days_and_the_chain_verifies_offline,
            the_first_export_starts_at_the_trails_first_event_however_old,
            audit_verify_catches_every_kind_of_tampering,
            audit_verify_needs_a_pinned_key_and_a_forged_day_fails_it,
            audit_days_signed_by_a_retired_key_after_its_retirement_do_not_verify,
            audit_concurrent_appends_on_one_stream_export_and_verify,
            audit_export_days_signed_before_a_key_rotation_still_verify,
            metrics_count_requests_after_a_flush_and_business_counters_exactly,
            metrics_can_require_a_role,
            freeze_stops_every_change_under_a_running_publish_loop_and_reads_go_on,
            a_suspended_workspace_refuses_every_request_and_other_workspaces_go_on,
            an_admin_of_every_workspace_searches_the_audit_trail_by_actor_alone,
            a_suspended_workspace_refuses_jwts_too,
            signer_signatures_verify_with_the_published_public_key,
            healthz_and_readyz_report_every_dependency,
            status_needs_a_viewer_token_and_shows_no_secret,
            publish_then_fetch_round_trips_and_second_put_is_idempotent,
            the_missing_query_answers_only_from_this_workspaces_links,
            a_batch_links_each_blob_with_its_event_refuses_a_bad_one_alone_and_repeats_idempotently,
            a_batch_over_its_limits_or_malformed_is_refused_whole_and_changes_nothing,
            a_frozen_registry_or_a_suspended_workspace_refuses_a_batch_whole,
            push_and_pull_of_many_small_files_use_batches,
            a_batch_skips_a_wrong_object_under_a_digest_key_and_pulls_write_every_copy,
            large_blob_is_fetched_through_a_presigned_redirect,
            ranges_of_a_blob_are_served_inline_and_through_the_presigned_get,
            a_pull_interrupted_inside_a_file_resumes_by_range_and_fetches_only_the_rest,
            a_chunked_upload_is_joined_rehashed_and_linked_once_with_every_rule_of_an_upload,
            chunked_uploads_of_wrong_bytes_are_refused_and_link_nothing,
            a_push_interrupted_inside_a_file_resumes_and_sends_only_the_remaining_parts,
            a_large_upload_is_verified_after_a_202_in_resumable_steps_and_linked_once,
            a_large_upload_of_wrong_bytes_ends_failed_with_digest_mismatch_and_links_nothing,
            a_verification_leased_to_another_worker_is_not_advanced_twice,
            an_ended_verification_job_is_kept_seven_days_then_removed_and_a_running_one_never,
            helix_serve_verifies_in_the_background_and_push_follows_the_202,
            direct_upload_links_only_after_verification,
            tampered_upload_is_refused_at_complete_and_never_poisons_the_digest,
            a_workspace_cannot_link_or_probe_another_workspaces_blob_by_digest,
            mount_from_a_covered_workspace_links_without_upload,
            a_blobs_download_headers_are_the_registrys_not_its_first_uploaders,
            a_wrong_object_under_a_digest_key_never_blocks_a_correct_upload,
            malformed_input_is_refused_with_reason_and_changes_nothing,
            token_fields_are_bounded_and_refused_with_reason,
            bad_credentials_are_refused_with_reason_and_change_nothing,
            concurrent_puts_of_one_new_blob_create_one_object_and_one_event,
            blob_store_outage_is_503_and_changes_nothing,
            lambda_fixture_events_are_served_by_the_handlers,
            token_lifecycle_issue_rotate_revoke_over_http,
            workspace_admin_manages_only_its_own_workspace_tokens,
            revocation_by_sha256_takes_effect_on_the_next_request,
            revoking_a_rotated_token_revokes_what_it_was_rotated_into,
            oidc_tokens_from_a_local_issuer_drive_the_registry,
            jwt_attacks_are_refused_with_reason,
            unknown_kids_refetch_the_jwks_at_most_once_per_interval,
            idp_outage_refuses_jwts_with_503_and_api_tokens_still_work,
            forged_jwts_during_an_idp_outage_cause_one_outbound_fetch,
            a_slow_idp_never_delays_jwts_whose_key_is_cached,
            logs_and_error_bodies_never_contain_a_secret_or_jwt,
            rbac_matrix_holds_over_http,
            bundle_versions_register_once_read_back_and_list,
            workspaces_and_listed_states_stay_inside_the_grant,
            pending_lists_what_each_caller_may_decide_now_across_its_workspaces,
            bad_manifests_and_unlinked_files_are_refused_and_change_nothing,
            governance_decisions_are_signed_receipts_with_separation_of_duties,
            governed_export_checks_integrity_and_governance_in_every_mode,
            proof_urls_reveal_nothing_of_the_shared_object_and_hold_only_for_their_grant,
            ledgers_verify_offline_and_every_tampering_is_caught,
            a_receipt_copied_into_another_ledger_is_never_a_state,
            decisions_repeat_only_while_in_force_and_identical,
            every_governance_denial_is_audited_and_counted,
            a_justification_is_bounded_as_signed_not_as_typed,
            ledger_reads_cost_one_receipt_whatever_its_length_and_exports_are_bounded,
            waivers_of_one_version_are_bounded_and_a_repeat_in_force_still_answers,
            receipts_stay_verifiable_after_a_signing_key_rotation,
            a_retired_signing_key_verifies_only_what_it_signed_before,
            a_signing_key_shared_by_two_stores_is_recorded_in_each,
            unregistered_exports_are_recorded_once_and_a_workspace_named_keys_breaks_no_one,
            smoke_runs_the_whole_lifecycle_and_names_the_step_that_fails,
            an_evidence_pack_verifies_offline_and_every_tampering_fails_with_its_reason,
            a_pack_of_an_earlier_export_covers_that_export_without_exporting_again,
            every_read_by_a_principal_is_audited_with_actor_request_id_and_outcome,
            reads_are_left_out_of_the_trail_when_read_auditing_is_off,
            a_redelivered_batch_of_read_records_is_appended_once,
            a_decision_reads_its_version_with_the_credential_and_tells_an_outsider_nothing,
        );
    };
}

#[cfg(test)]
mod suite_tests {
    /// `cargo tree` of a package selection: "name version" → its enabled features, for every
    /// normal and build dependency.
    fn features_of(selection: &[&str]) -> std::collections::BTreeMap<String, String> {
        let out = std::process::Command::new(env!("CARGO"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["tree", "--offline", "-e", "normal,build", "--prefix", "none", "-f", "{p} {f}"])
            .args(selection)
            .output()
            .expect("run cargo tree");
        assert!(out.status.success(), "cargo tree {selection:?}: {}", String::from_utf8_lossy(&out.stderr));
        let mut map = std::collections::BTreeMap::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let line = line.replace(" (*)", "").replace(" (proc-macro)", "");
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 2 {
                continue;
            }
            let features = words[2..].last().filter(|w| !w.starts_with('(')).copied().unwrap_or("");
            map.insert(format!("{} {}", words[0], words[1]), features.to_owned());
        }
        assert!(map.len() > 100, "cargo tree {selection:?} listed {} packages: the parse is broken", map.len());
        map
    }

    /// The unit tests, the function binaries (built by the conformance cases), `helix` (built for
    /// `make run` and the fuzz suite) and helix-tests resolve every dependency they share to the same
    /// features, so one build of the AWS SDK serves them all (the feature pins in Cargo.toml; without
    /// them s3s's uuid and simdutf8 features made a second build of everything above aws-runtime and
    /// lambda_http). A new test dependency that turns a shared feature on fails here: pin it.
    #[test]
    fn every_build_resolves_shared_dependencies_to_the_test_builds_features() {
        let tests = features_of(&["-p", "helix-tests"]);
        let functions = crate::runtime_api::functions();
        let mut binaries: Vec<&str> = functions.iter().flat_map(|f| ["-p", f.as_str()]).collect();
        binaries.extend(["-p", "helix-cli"]);
        for selection in [vec!["--workspace", "--exclude", "helix-tests"], vec!["-p", "helix-cli"], binaries] {
            let differ: Vec<String> = features_of(&selection)
                .into_iter()
                .filter_map(|(package, features)| match tests.get(&package) {
                    Some(t) if *t != features => Some(format!("{package}: [{features}] here, [{t}] in helix-tests")),
                    _ => None,
                })
                .collect();
            assert!(differ.is_empty(), "cargo build {selection:?} would compile these again: {differ:#?}");
        }
    }

    /// Every case (`pub async fn name(b: Backend)` in src/cases/ or src/rbac.rs) is in a suite list:
    /// `common_suite!` here or a `cases!` list in tests/*.rs. A case left off every list would compile
    /// and never run.
    #[test]
    fn every_case_is_listed_in_a_suite() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read =
            |p: std::path::PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let mut sources: Vec<String> =
            std::fs::read_dir(root.join("src/cases")).unwrap().map(|e| read(e.unwrap().path())).collect();
        sources.push(read(root.join("src/rbac.rs")));
        let lists: String =
            [read(root.join("src/lib.rs")), read(root.join("tests/embedded.rs")), read(root.join("tests/emulator.rs"))]
                .concat();
        let listed = |name: &str| lists.lines().any(|l| l.trim().trim_end_matches(',') == name);
        let mut cases = Vec::new();
        for src in &sources {
            for line in src.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ")
                    && let Some((name, args)) = rest.split_once('(')
                    && args.contains("Backend)")
                {
                    cases.push(name.to_owned());
                }
            }
        }
        assert!(cases.len() > 40, "found {} cases: the scan is broken", cases.len());
        let missing: Vec<&String> = cases.iter().filter(|c| !listed(c)).collect();
        assert!(missing.is_empty(), "cases in no suite list (they never run): {missing:?}");
    }
}
