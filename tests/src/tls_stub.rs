//! A TLS endpoint on 127.0.0.1 with a fresh self-signed certificate (for 127.0.0.1 and localhost) that
//! answers every request `200 OK` with an empty body, and counts the requests that got past the
//! handshake. Tests use it to prove AWS calls verify server certificates.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct TlsStub {
    pub url: String,
    pub cert_pem: String,
    requests: Arc<AtomicUsize>,
}

impl TlsStub {
    pub fn start() -> TlsStub {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let cert = params.self_signed(&key).expect("self-signed certificate");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, counter) = (config.clone(), counter.clone());
                std::thread::spawn(move || serve(config, tcp, &counter));
            }
        });
        TlsStub { url, cert_pem: cert.pem(), requests }
    }

    /// Requests that completed a handshake and were answered.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// One request per connection: read the head, answer, close.
fn serve(config: Arc<rustls::ServerConfig>, tcp: std::net::TcpStream, counter: &AtomicUsize) {
    let Ok(conn) = rustls::ServerConnection::new(config) else { return };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return, // includes a handshake the client refused
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    counter.fetch_add(1, Ordering::SeqCst);
    let _ =
        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\nx-amz-request-id: stub\r\n\r\n");
    tls.conn.send_close_notify();
    let _ = tls.flush();
}
