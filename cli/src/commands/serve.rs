//! `helix serve`: every route in one process; on a fresh data dir, the first admin token.

use std::net::SocketAddr;
use std::sync::Arc;

use helix_cli::serve::Server;
use helix_core::config::{BlobBackend, MetaBackend, SignerBackend};
use helix_core::domain::{Role, Scope};
use helix_core::tokens::{self, Grant};
use helix_core::{App, Config};

use super::Res;

pub async fn run(mut config: Config, listen: Option<SocketAddr>) -> Res {
    raise_open_files();
    let listener = tokio::net::TcpListener::bind(listen.unwrap_or(config.listen))
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", listen.unwrap_or(config.listen)))?;
    config.listen = listener.local_addr()?;
    if std::env::var("HELIX_PUBLIC_URL").is_err() {
        config.public_url = format!("http://{}", config.listen);
    }
    let fresh =
        config.meta_backend == MetaBackend::Sqlite && !config.data_dir.join(helix_core::app::SQLITE_FILE).exists();
    let app = Arc::new(App::build(config).await?);
    let mut server = Server::start(app.clone(), listener);
    server.start_notifications(&app).await?;
    let url = server.url();
    println!("Helix Registry listening on {url}");
    println!("  blobs: {}  meta: {}  signer: {}", app.blobs.info().backend, app.meta.backend(), app.signer.backend());
    if let Some(w) = &app.config.webhook {
        // The URL's host only: a URL may carry a token in its path or query.
        let host = url::Url::parse(&w.url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
        println!("  webhooks: governance events to {host} (signed; {} attempts each)", w.attempts);
    }
    if fresh {
        let grant = Grant {
            user: "admin".into(),
            role: Role::Admin,
            workspace_id: Scope::All,
            ttl_seconds: None,
            description: Some("first-start admin token".into()),
        };
        let (secret, record) = tokens::issue(app.meta.as_ref(), grant, "helix-serve:bootstrap", "bootstrap").await?;
        print_first_start(&url, secret.expose(), &record.id, &app.config.data_dir.display().to_string());
    } else if app.config.meta_backend == MetaBackend::Sqlite {
        println!("  data dir: {} (existing; issue tokens with `helix teams token`)", app.config.data_dir.display());
    } else {
        let c = &app.config;
        println!("  tables: {} and {} (existing; issue tokens with `helix teams token`)", c.table, c.audit_table);
        if c.blob_backend == BlobBackend::Fs || c.signer_backend == SignerBackend::Local {
            println!("  data dir: {} (blobs or signing key)", c.data_dir.display());
        }
    }
    tokio::signal::ctrl_c().await?;
    drop(server);
    // Reads answered but not yet in the audit trail (docs/decisions.md, "Read auditing").
    if !app.reads.flush(std::time::Duration::from_secs(10)).await {
        eprintln!("helix serve: some read records were still queued after 10 s; they are lost");
    }
    // This process's request counts since its last flush (docs/architecture.md, "Metrics").
    app.metrics.flush(app.meta.as_ref()).await;
    Ok(())
}

/// The soft limit of open files raised to the hard one (as Go's runtime does): a batch publish on the
/// filesystem store keeps a blob's unnamed temp file open until it is named (up to 1,000 a batch,
/// a few batches at once), and many shells start at 1,024. Where it cannot be raised, a blob that
/// finds no descriptor is written through a named temp file instead (helix_core::adapters::fs).
fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::info!(error = %e, "the limit of open files could not be raised");
        }
    }
}

fn print_first_start(url: &str, token: &str, id: &str, data_dir: &str) {
    println!();
    println!("First start: created data dir {data_dir} and an admin token ({id}). It is shown only now:");
    println!();
    println!("admin token: {token}");
    println!();
    println!("Try it:");
    println!("  export HELIX_URL={url} HELIX_TOKEN={token}");
    println!("  curl -s $HELIX_URL/readyz");
    println!("  curl -s -H \"Authorization: Bearer $HELIX_TOKEN\" $HELIX_URL/v1/status");
    println!("  printf 'hello helix' > hello.txt");
    println!("  DIGEST=sha256:$(sha256sum hello.txt | cut -d' ' -f1)");
    println!(
        "  curl -s -X PUT -H \"Authorization: Bearer $HELIX_TOKEN\" --data-binary @hello.txt $HELIX_URL/v1/workspaces/demo/blobs/$DIGEST"
    );
    println!("  curl -s -H \"Authorization: Bearer $HELIX_TOKEN\" $HELIX_URL/v1/workspaces/demo/blobs/$DIGEST");
    println!(
        "  # a whole folder, and back (the helix CLI: `cargo install --path cli --locked`, or `cargo run -q -p helix-cli --`):"
    );
    println!("  helix push <folder> --workspace demo --name results --version 1");
    println!("  helix pull demo/results@1 results-copy");
    println!();
    println!("Stop with Ctrl-C; data stays in {data_dir}.");
}
