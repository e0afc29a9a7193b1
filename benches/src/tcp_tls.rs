//! Case e: the same bytes over one TCP connection with TLS 1.3 (tokio-rustls,
//! the same *ring* provider, the same certificates and mutual
//! authentication as walship), read in the same chunks, discarded by the
//! server. The conventional transport an operator would compare QUIC with:
//! kernel TCP, segmentation offload and no user-space congestion control.
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use walship_net::CertPaths;
use walship_net::tls::{load_certs, load_key};

use crate::data;

/// The outcome of the TCP + TLS case.
#[derive(Debug, Clone, Serialize)]
pub struct TcpTlsResult {
    pub bytes: u64,
    pub secs: f64,
    pub mb_per_s: f64,
    /// The TLS 1.3 cipher suite both ends agreed on.
    pub cipher_suite: String,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(certs: &CertPaths) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(&certs.ca_cert)? {
        roots.add(c)?;
    }
    Ok(roots)
}

fn server_config(certs: &CertPaths) -> Result<rustls::ServerConfig> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(certs)?), provider()).build()?;
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&certs.server_cert)?, load_key(&certs.server_key)?)?)
}

fn client_config(certs: &CertPaths) -> Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(certs)?)
        .with_client_auth_cert(load_certs(&certs.client_cert)?, load_key(&certs.client_key)?)?)
}

/// Sends every segment of `source` (plain reads of `chunk` bytes) over TLS
/// to a server that discards them; timed from connect until the server has
/// read the last byte.
pub async fn run(
    source: &Path,
    certs: &CertPaths,
    total: u64,
    chunk: usize,
    timeout: Duration,
) -> Result<TcpTlsResult> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(certs)?));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sink = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await.context("server handshake")?;
        let mut buf = vec![0u8; 256 << 10];
        let mut n = 0u64;
        loop {
            let k = tls.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        let done = Instant::now();
        tls.write_all(&n.to_le_bytes()).await?;
        tls.shutdown().await?;
        anyhow::Ok((n, done))
    });

    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(certs)?));
    let start = Instant::now();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await.context("client handshake")?;
    let cipher_suite =
        tls.get_ref().1.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
    let mut sent = 0u64;
    for buf in data::source_chunks(source, total, chunk) {
        let buf = buf?;
        sent += buf.len() as u64;
        tls.write_all(&buf).await?;
    }
    // close_notify, then FIN: the server reads to the end.
    tls.shutdown().await?;
    if sent != total {
        bail!("read {sent} bytes from the source, expected {total}");
    }
    let mut reply = [0u8; 8];
    tokio::time::timeout(timeout, tls.read_exact(&mut reply)).await.context("timed out")??;
    let (received, done) = sink.await.context("server task")??;
    if received != total || u64::from_le_bytes(reply) != total {
        bail!("the server received {received} bytes, expected {total}");
    }
    let secs = done.duration_since(start).as_secs_f64();
    Ok(TcpTlsResult { bytes: total, secs, mb_per_s: total as f64 / secs / 1e6, cipher_suite })
}
