//! A stricter S3 than moto, in process, for the cases moto cannot prove: s3s-fs behind s3s, with
//! SigV4 authentication (presigned URLs included: a changed signature, key or expiry is refused) and
//! `x-amz-checksum-sha256` checked on every put (a mismatch answers 400 BadDigest; like some
//! S3-compatible stores it keeps the refused bytes). No versioning: staged uploads are pinned by ETag.

use std::net::SocketAddr;

use axum::http;
use tempfile::TempDir;

pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";

pub struct StrictS3 {
    pub url: String,
    pub dir: TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StrictS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StrictS3 {
    /// A server on a free 127.0.0.1 port with one bucket, `bucket`.
    pub async fn start(bucket: &str) -> StrictS3 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(bucket)).unwrap();
        let fs = s3s_fs::FileSystem::new(dir.path()).expect("s3s-fs root");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let service = service.clone();
            async move {
                let (parts, body) = req.into_parts();
                let req = http::Request::from_parts(parts, s3s::Body::http_body_unsync(body));
                match service.call(req).await {
                    Ok(resp) => resp.map(axum::body::Body::new),
                    Err(e) => http::Response::builder()
                        .status(500)
                        .body(axum::body::Body::from(format!("{e:?}")))
                        .expect("response"),
                }
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StrictS3 { url: format!("http://{addr}"), dir, task }
    }
}
