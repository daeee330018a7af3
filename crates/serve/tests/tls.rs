//! TLS: with a certificate and its key the server speaks TLS only, and a
//! client that trusts the certificate gets its answers. The certificate
//! and key in `fixtures/` are for these tests only (self-signed for
//! `localhost` and 127.0.0.1).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first surprise"
)]

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokenledger_authz::Ledger;
use tokenledger_serve::{Limits, Server, ServiceKeys, acceptor};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_certificate_given() {
    let (cert, key) = (
        fixture("test-only-localhost.crt"),
        fixture("test-only-localhost.key"),
    );
    let tls = acceptor(&cert, &key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path()).unwrap());
    let keys =
        ServiceKeys::new(common::CHECK_KEY.as_bytes(), common::ADMIN_KEY.as_bytes()).unwrap();
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        ledger,
        keys,
        Limits::default(),
        Some(tls),
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run(std::future::pending()));

    // Plain HTTP is not answered.
    let plain = common::Api::new(addr)
        .send("GET", "/healthz", None, &[], None)
        .await;
    assert!(plain.is_err() || plain.unwrap().status != 200);

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&cert).unwrap())
        .unwrap();
    #[expect(deprecated, reason = "the server's provider, for the same reason")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/.well-known/authzen-configuration")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {}", common::CHECK_KEY))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let discovery: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(discovery["policy_decision_point"], "https://localhost");
}

#[test]
fn a_missing_or_empty_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let key = fixture("test-only-localhost.key");
    assert!(acceptor(&empty, &key).is_err());
    assert!(acceptor(&dir.path().join("missing.pem"), &key).is_err());
}
