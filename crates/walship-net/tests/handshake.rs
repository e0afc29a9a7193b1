//! Mutual TLS over real QUIC on loopback: who gets in and who does not.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use walship_net::{NetError, TlsFiles, certs, control};

async fn assert_refused(server: &TlsFiles, client: &TlsFiles, name: &str) {
    let (client_side, server_side, _ce, _se) = common::handshake(server, client, name).await;
    match client_side {
        Err(e) => {
            assert!(matches!(e, NetError::Handshake { .. }), "{e}");
        }
        Ok(conn) => {
            // TLS 1.3: the client finishes before the server has checked the
            // client certificate; the refusal arrives as a connection close.
            let err = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.unwrap();
            assert!(!matches!(err, quinn::ConnectionError::LocallyClosed), "{err}");
            let open = control::open(&conn).await;
            assert!(open.is_err() || conn.close_reason().is_some());
        }
    }
    let server_err = server_side.expect("the server saw the attempt").expect_err("server accepted a refused client");
    assert!(server_err.to_string().contains("invalid peer certificate"), "{server_err}");
}

#[tokio::test]
async fn handshake_with_dns_and_ip_server_names() {
    let (_dir, paths) = common::certs();
    for name in ["localhost", "127.0.0.1"] {
        let (c, s, _ce, _se) = common::handshake(&paths.server(), &paths.client(), name).await;
        let (c, s) = (c.unwrap(), s.unwrap().unwrap());
        assert_eq!(walship_net::peer_name(&s).as_deref(), Some(certs::CLIENT_CN));
        assert_eq!(walship_net::peer_name(&c).as_deref(), Some("walship-server"));
        let alpn = c.handshake_data().unwrap().downcast::<quinn::crypto::rustls::HandshakeData>().unwrap();
        assert_eq!(alpn.protocol.as_deref(), Some(walship_core::ALPN));
    }
}

#[tokio::test]
async fn extra_names_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let paths = certs::init(dir.path(), &["receiver.example".into(), "::1".into()], false).unwrap();
    let (c, _s, _ce, _se) = common::handshake(&paths.server(), &paths.client(), "receiver.example").await;
    c.unwrap();
}

#[tokio::test]
async fn client_from_another_ca_is_refused() {
    let (_d1, ours) = common::certs();
    let (_d2, theirs) = common::certs();
    // The client trusts our server but presents a certificate of another CA.
    let client = TlsFiles { ca: ours.ca_cert.clone(), ..theirs.client() };
    assert_refused(&ours.server(), &client, "localhost").await;
}

#[tokio::test]
async fn server_from_another_ca_is_refused() {
    let (_d1, ours) = common::certs();
    let (_d2, theirs) = common::certs();
    // The server trusts our CA for clients but presents a certificate of another CA.
    let server = TlsFiles { ca: ours.ca_cert.clone(), ..theirs.server() };
    let (client_side, _server_side, _ce, _se) = common::handshake(&server, &ours.client(), "localhost").await;
    let err = client_side.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn wrong_server_name_is_refused() {
    let (_dir, paths) = common::certs();
    let (client_side, _s, _ce, _se) = common::handshake(&paths.server(), &paths.client(), "db.example").await;
    let err = client_side.unwrap_err();
    assert!(matches!(err, NetError::Handshake { .. }), "{err}");
}

#[tokio::test]
async fn server_certificate_as_client_is_refused() {
    // The server certificate lacks the client-auth EKU.
    let (_dir, paths) = common::certs();
    let client = TlsFiles { ca: paths.ca_cert.clone(), cert: paths.server_cert.clone(), key: paths.server_key.clone() };
    assert_refused(&paths.server(), &client, "localhost").await;
}

#[test]
fn config_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let paths = certs::init(dir.path(), &[], false).unwrap();

    let missing = TlsFiles { ca: dir.path().join("nope.pem"), ..paths.server() };
    let e = walship_net::server_config(&missing).unwrap_err();
    assert!(matches!(e, NetError::ReadFile { .. }) && e.to_string().contains("nope.pem"), "{e}");

    // A key where a certificate should be.
    let swapped = TlsFiles { cert: paths.server_key.clone(), ..paths.server() };
    let e = walship_net::server_config(&swapped).unwrap_err();
    assert!(matches!(e, NetError::NoCertificate { .. }) && e.to_string().contains("server.key"), "{e}");

    // A certificate where a key should be.
    let swapped = TlsFiles { key: paths.client_cert.clone(), ..paths.client() };
    let e = walship_net::client_config(&swapped).unwrap_err();
    assert!(matches!(e, NetError::NoPrivateKey { .. }) && e.to_string().contains("client.pem"), "{e}");

    // A key that does not belong to the certificate.
    let mismatched = TlsFiles { key: paths.client_key.clone(), ..paths.server() };
    let e = walship_net::server_config(&mismatched).unwrap_err();
    assert!(matches!(e, NetError::BadCertKey { .. }), "{e}");

    // Garbage PEM.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
    let e = walship_net::client_config(&TlsFiles { ca: bad, ..paths.client() }).unwrap_err();
    assert!(matches!(e, NetError::Pem { .. }) && e.to_string().contains("bad.pem"), "{e}");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let (_dir, paths) = common::certs();
    let (server_ep, addr) = common::server(&paths.server());
    let mut roots = rustls::RootCertStore::empty();
    for c in walship_net::tls::load_certs(&paths.ca_cert).unwrap() {
        roots.add(c).unwrap();
    }
    let mut tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    tls.alpn_protocols = vec![walship_core::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
    let client_ep =
        walship_net::endpoint::client_endpoint_with(addr, config, quinn::EndpointConfig::default()).unwrap();

    let accept = tokio::spawn(async move { walship_net::accept(&server_ep).await.unwrap() });
    if let Ok(conn) = walship_net::connect(&client_ep, addr, "localhost").await {
        let err = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.unwrap();
        assert!(!matches!(err, quinn::ConnectionError::LocallyClosed), "{err}");
    }
    let e = accept.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
}
