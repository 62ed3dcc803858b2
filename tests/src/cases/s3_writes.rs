//! How the S3 adapter writes, as S3 sees it: every request recorded by the fault proxy in front of
//! the emulator (docs/decisions.md "Promote by multipart copy (D1)", "Object Lock per object (D3)",
//! "Audit days by multipart (D4)"). What matters on AWS is what is sent: a bucket policy that
//! enforces conditional writes refuses CopyObject, and moto's GetObjectRetention is broken.

use helix_core::domain::{Digest, Role, WorkspaceId};
use helix_core::ports::{BlobKey, PutOutcome, UploadRef};
use serde_json::json;

use super::api::{complete, get_blob, plan, upload_to};
use super::unique_blob;
use crate::fault_proxy::FaultProxy;
use crate::{Backend, TestEnv, emulator_endpoint};

/// The recorded operations (name, request head) whose request line names `key`.
fn on_key(proxy: &FaultProxy, key: &str) -> Vec<(&'static str, String)> {
    proxy
        .s3_operations()
        .into_iter()
        .filter(|(_, head)| head.lines().next().unwrap_or_default().contains(key))
        .collect()
}

fn names(ops: &[(&'static str, String)]) -> Vec<&'static str> {
    ops.iter().map(|(n, _)| *n).filter(|n| *n != "HeadObject" && *n != "GetObject").collect()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')).map(str::trim))
}

/// Multipart uploads still open in the bucket (none may be left behind).
async fn open_multipart_uploads(env: &TestEnv, bucket: &str) -> usize {
    let s3 = &env.aws.as_ref().unwrap().s3;
    s3.list_multipart_uploads().bucket(bucket).send().await.unwrap().uploads().len()
}

/// D1: a completed direct upload's blob is written by CreateMultipartUpload, UploadPartCopy from the
/// pinned staging version and CompleteMultipartUpload with `If-None-Match: *`, never by CopyObject
/// (refused by AWS under the bucket policy); a second upload of the same digest copies nothing.
pub async fn a_direct_upload_is_promoted_by_a_conditional_multipart_copy_never_by_copy_object(b: Backend) {
    assert_eq!(b, Backend::Emulator);
    let proxy = FaultProxy::start(&emulator_endpoint(), "none", 0).await;
    let env = TestEnv::start_with(b, &[("HELIX_S3_ENDPOINT_URL", &proxy.url), ("HELIX_INLINE_MAX", "1024")]).await;
    let publisher = env.token(Role::Publisher, "team-a").await;
    let (bytes, d) = unique_blob(70_000);
    let digest = d.to_string();
    let (_, first) = plan(&env, &publisher, "team-a", &digest, 70_000, json!({})).await;
    assert!(upload_to(&env, &first, bytes.clone(), true).await.status().is_success());
    assert_eq!(complete(&env, &publisher, "team-a", &digest, &first).await.status(), 201);
    let got = get_blob(&env, &publisher, "team-a", &digest, "").await;
    let followed = env.http.get(got.headers()["location"].to_str().unwrap()).send().await.unwrap();
    assert_eq!(followed.bytes().await.unwrap().to_vec(), bytes);

    let blob_key = format!("/blobs/{}", BlobKey::primary(&d).storage_key());
    let ops = on_key(&proxy, &blob_key);
    assert_eq!(
        names(&ops),
        ["CreateMultipartUpload", "UploadPartCopy", "CompleteMultipartUpload"],
        "the blob's writes: {ops:#?}"
    );
    assert!(proxy.s3_operations().iter().all(|(n, _)| *n != "CopyObject"), "no CopyObject anywhere");
    let (_, create) = ops.iter().find(|(n, _)| *n == "CreateMultipartUpload").unwrap();
    assert_eq!(header(create, "content-type"), Some("application/octet-stream"), "the registry's metadata");
    assert_eq!(header(create, "x-amz-checksum-algorithm"), Some("sha256"));
    let (_, copy) = ops.iter().find(|(n, _)| *n == "UploadPartCopy").unwrap();
    let source = header(copy, "x-amz-copy-source").unwrap();
    assert!(source.contains("/uploads/team-a/") && source.contains("versionid="), "pinned to its version: {source}");
    let (_, done) = ops.iter().find(|(n, _)| *n == "CompleteMultipartUpload").unwrap();
    assert_eq!(header(done, "if-none-match"), Some("*"), "the completion is the conditional write");
    assert_eq!(open_multipart_uploads(&env, &env.aws.as_ref().unwrap().bucket).await, 0);

    // The same digest again, from another workspace: linked to the blob there, nothing copied.
    let other = env.token(Role::Publisher, "team-b").await;
    let (_, second) = plan(&env, &other, "team-b", &digest, 70_000, json!({})).await;
    if second["exists"] == false {
        assert!(upload_to(&env, &second, bytes.clone(), true).await.status().is_success());
        assert_eq!(complete(&env, &other, "team-b", &digest, &second).await.status(), 201);
    }
    assert_eq!(names(&on_key(&proxy, &blob_key)).len(), 3, "no second write of the blob");
    assert_eq!(env.stored_objects().await, 1, "one object version under blobs/");
}

/// D1: a promote onto a blob a concurrent writer created after the registry looked (the proxy hides
/// the first HEAD) is refused by S3 at completion (412): `Existed`, the blob is not replaced, the
/// multipart upload is aborted. A pinned staging version that is gone is `UploadMissing`.
pub async fn a_promote_onto_an_existing_blob_never_replaces_it(b: Backend) {
    assert_eq!(b, Backend::Emulator);
    let proxy = FaultProxy::start(&emulator_endpoint(), "none", 0).await;
    let env = TestEnv::start_with(b, &[("HELIX_S3_ENDPOINT_URL", &proxy.url)]).await;
    let (store, bucket) = (&env.app.blobs, env.aws.as_ref().unwrap().bucket.clone());
    let s3 = env.aws.as_ref().unwrap().s3.clone();
    let (bytes, d) = unique_blob(9000);
    let key = BlobKey::primary(&d);
    let upload = UploadRef::new(&WorkspaceId::parse("team-a").unwrap());
    env.plant_staged(&upload, &bytes).await;
    let staged = store.staged(&upload).await.unwrap().unwrap();
    assert!(staged.version_id.is_some(), "a versioned bucket pins by version");

    // The concurrent writer's blob (other bytes, so that a replacement would show).
    let blob = format!("blobs/{}", key.storage_key());
    s3.put_object().bucket(&bucket).key(&blob).body(b"first writer".to_vec().into()).send().await.unwrap();
    proxy.hidden_blob_heads.store(1, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(store.promote(&upload, &staged, &key).await.unwrap(), PutOutcome::Existed);
    let ops = names(&on_key(&proxy, &blob));
    assert_eq!(
        ops,
        ["CreateMultipartUpload", "UploadPartCopy", "CompleteMultipartUpload", "AbortMultipartUpload"],
        "written only by a conditional completion, which S3 refused"
    );
    let kept = s3.get_object().bucket(&bucket).key(&blob).send().await.unwrap().body.collect().await.unwrap();
    assert_eq!(kept.into_bytes().as_ref(), b"first writer", "not replaced");
    let versions = s3.list_object_versions().bucket(&bucket).prefix(&blob).send().await.unwrap();
    assert_eq!(versions.versions().len(), 1, "no second version either");
    assert_eq!(open_multipart_uploads(&env, &bucket).await, 0, "aborted");

    // The pinned version removed (expired, deleted): nothing to promote, nothing left open.
    let gone = BlobKey { digest: d.clone(), slot: 1 };
    s3.delete_object()
        .bucket(&bucket)
        .key(upload.storage_key())
        .version_id(staged.version_id.clone().unwrap())
        .send()
        .await
        .unwrap();
    let missing = store.promote(&upload, &staged, &gone).await;
    assert!(matches!(missing, Err(helix_core::Error::UploadMissing)), "{missing:?}");
    assert_eq!(open_multipart_uploads(&env, &bucket).await, 0, "aborted");
    assert!(store.head(&gone).await.unwrap().is_none());
}

/// D3: with HELIX_S3_OBJECT_LOCK_MODE/DAYS, blob writes (PutObject, and the promote's
/// CreateMultipartUpload) and audit documents carry the retention headers and succeed on a bucket
/// created with Object Lock; the staging upload's presigned PUT carries none.
pub async fn blob_and_audit_writes_carry_object_lock_retention_and_staging_does_not(b: Backend) {
    assert_eq!(b, Backend::Emulator);
    let proxy = FaultProxy::start(&emulator_endpoint(), "none", 0).await;
    let env = TestEnv::start(b).await;
    let s3 = env.aws.as_ref().unwrap().s3.clone();
    let locked = format!("{}-locked", env.aws.as_ref().unwrap().bucket);
    s3.create_bucket().bucket(&locked).object_lock_enabled_for_bucket(true).send().await.unwrap();
    let app = env
        .app_with(&[
            ("HELIX_S3_ENDPOINT_URL", &proxy.url),
            ("HELIX_S3_BUCKET", &locked),
            ("HELIX_S3_OBJECT_LOCK_MODE", "GOVERNANCE"),
            ("HELIX_S3_OBJECT_LOCK_DAYS", "2"),
        ])
        .await
        .unwrap();
    let store = &app.blobs;

    let (small, small_d) = unique_blob(600);
    assert_eq!(store.put_if_absent(&BlobKey::primary(&small_d), small.into()).await.unwrap(), PutOutcome::Created);
    let (bytes, d) = unique_blob(9000);
    let upload = UploadRef::new(&WorkspaceId::parse("team-a").unwrap());
    let presigned = store.presign_upload(&upload, &d, 9000, std::time::Duration::from_secs(300)).await.unwrap();
    assert!(!presigned.url.to_ascii_lowercase().contains("object-lock"), "{}", presigned.url);
    let mut put = env.http.put(&presigned.url).body(bytes.clone());
    for (k, v) in &presigned.headers {
        if !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("host") {
            put = put.header(k, v);
        }
    }
    assert!(put.send().await.unwrap().status().is_success());
    let staged = store.staged(&upload).await.unwrap().unwrap();
    assert_eq!(store.promote(&upload, &staged, &BlobKey::primary(&d)).await.unwrap(), PutOutcome::Created);
    let key = "audit/2026/01/02/manifest.json";
    assert_eq!(store.put_document_if_absent(key, b"{}".to_vec().into()).await.unwrap(), PutOutcome::Created);

    let now = time::OffsetDateTime::now_utc();
    let lock_of = |path: &str| {
        let ops = on_key(&proxy, path);
        let (_, head) = ops.into_iter().find(|(n, _)| matches!(*n, "PutObject" | "CreateMultipartUpload")).unwrap();
        let mode = header(&head, "x-amz-object-lock-mode").map(str::to_owned);
        let until = header(&head, "x-amz-object-lock-retain-until-date").map(|u| {
            time::OffsetDateTime::parse(&u.to_ascii_uppercase(), &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{u}: {e}"))
        });
        (mode, until)
    };
    let blob_path = |d: &Digest| format!("/blobs/{}", BlobKey::primary(d).storage_key());
    for path in [blob_path(&small_d), blob_path(&d), format!("/{key}")] {
        let (mode, until) = lock_of(&path);
        assert_eq!(mode.as_deref(), Some("governance"), "{path}");
        let hours = (until.expect("a retain-until date") - now).whole_hours();
        assert!((47..=48).contains(&hours), "two days from the write: {hours} h");
    }
    let staging = on_key(&proxy, &format!("/{}", upload.storage_key()));
    let (_, put) = staging.iter().find(|(n, _)| *n == "PutObject").expect("the presigned PUT went through the proxy");
    assert!(!put.contains("x-amz-object-lock"), "no retention on a staging object: {put}");
}

/// D4: a document file above one part (an audit day's events) is uploaded in parts that each carry
/// their SHA-256, completed with `If-None-Match: *`; its SHA-256 is still the whole file's; a second
/// write finds it; a file that changed after it was hashed is not stored.
pub async fn an_events_file_above_one_part_is_uploaded_in_checked_parts_and_completed_conditionally(b: Backend) {
    assert_eq!(b, Backend::Emulator);
    let proxy = FaultProxy::start(&emulator_endpoint(), "none", 0).await;
    let part = 5 * 1024 * 1024;
    let env =
        TestEnv::start_with(b, &[("HELIX_S3_ENDPOINT_URL", &proxy.url), ("HELIX_S3_PART_SIZE", &part.to_string())])
            .await;
    let store = &env.app.blobs;
    let (bytes, d) = unique_blob(2 * part + 1234);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, &bytes).unwrap();
    let key = "audit/2026/01/03/events.jsonl";

    assert_eq!(store.put_document_file_if_absent(key, &file, &d).await.unwrap(), PutOutcome::Created);
    let ops = on_key(&proxy, key);
    assert_eq!(
        names(&ops),
        ["CreateMultipartUpload", "UploadPart", "UploadPart", "UploadPart", "CompleteMultipartUpload"],
        "{ops:#?}"
    );
    for (i, (_, head)) in ops.iter().filter(|(n, _)| *n == "UploadPart").enumerate() {
        let (start, end) = (i * part, ((i + 1) * part).min(bytes.len()));
        assert_eq!(
            header(head, "x-amz-checksum-sha256"),
            Some(Digest::of(&bytes[start..end]).base64().to_ascii_lowercase().as_str())
        );
    }
    let (_, done) = ops.iter().find(|(n, _)| *n == "CompleteMultipartUpload").unwrap();
    assert_eq!(header(done, "if-none-match"), Some("*"));
    assert_eq!(store.get_document(key).await.unwrap().unwrap().as_ref(), bytes.as_slice());
    assert_eq!(store.document_sha256(key).await.unwrap(), Some(d.clone()), "the whole file's SHA-256");

    // Written once: the second write finds it and sends no part.
    assert_eq!(store.put_document_file_if_absent(key, &file, &d).await.unwrap(), PutOutcome::Existed);
    assert_eq!(names(&on_key(&proxy, key)).len(), 5);

    // The file changed after it was hashed: refused, nothing stored, the upload aborted.
    let other = "audit/2026/01/04/events.jsonl";
    let claimed = Digest::of(b"what the file held when it was hashed");
    assert!(store.put_document_file_if_absent(other, &file, &claimed).await.is_err());
    assert_eq!(store.get_document(other).await.unwrap(), None);
    assert!(names(&on_key(&proxy, other)).contains(&"AbortMultipartUpload"));
    assert_eq!(open_multipart_uploads(&env, &env.aws.as_ref().unwrap().bucket).await, 0);
}
