//! TLS and QUIC transport configuration.
//!
//! Both ends speak TLS 1.3 with ALPN `walship/1` and authenticate each other
//! with certificates from one private CA: the server requires a client
//! certificate signed by that CA, and the client trusts nothing but that CA.
//! Every builder gets the *ring* provider passed in explicitly, so nothing
//! depends on (or installs) a process-wide default provider.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::NetError;

/// The three files one end of a connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate that signed the peer's certificate (PEM).
    pub ca: PathBuf,
    /// This end's certificate, optionally followed by intermediates (PEM).
    pub cert: PathBuf,
    /// This end's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// How one end authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Mutual TLS with certificates from one private CA: the default, and the
    /// only mode that keeps strangers out of a mirror.
    Mutual(TlsFiles),
    /// `--insecure`: still TLS 1.3 (QUIC has no plaintext), but the receiver
    /// presents a throw-away self-signed certificate and asks for none, and
    /// the sender checks nothing. Encrypted against passive eavesdroppers,
    /// open to anyone who can reach the port or sit in the middle.
    Insecure,
}

impl From<TlsFiles> for TlsMode {
    fn from(files: TlsFiles) -> Self {
        TlsMode::Mutual(files)
    }
}

impl TlsMode {
    /// Whether this is `--insecure`.
    pub fn is_insecure(&self) -> bool {
        matches!(self, TlsMode::Insecure)
    }
}

/// Per-stream receive window: with 64 MiB in flight a single stream is not
/// flow-control bound even at several GB/s and a few ms of RTT.
pub const STREAM_WINDOW: u32 = 64 << 20;
/// Per-connection receive window: a little more than one stream so the
/// control stream never starves behind a full data stream.
pub const CONNECTION_WINDOW: u32 = 80 << 20;
/// Bytes a sender may have in flight (unacknowledged) per connection.
pub const SEND_WINDOW: u64 = 64 << 20;
/// Keep-alive interval: well under the idle timeout, so a quiet but healthy
/// connection is never closed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// A peer silent for this long is gone; the agent reconnects.
pub const IDLE_TIMEOUT_MS: u32 = 10_000;
/// Largest UDP payload MTU discovery probes for. 1452 (quinn's default) fits
/// an Ethernet path; larger values only help on loopback or jumbo-frame
/// networks, and discovery falls back by itself where they do not fit.
pub const DEFAULT_MTU_UPPER_BOUND: u16 = 1452;

/// Largest MTU upper bound that keeps segmentation offload (GSO) on: ten
/// datagrams of this size fit the 64 KiB limit of one GSO send.
pub const MAX_GSO_MTU: u16 = 6_500;
/// MTU upper bound for loopback links (lo has a 64 KiB MTU); leaves room
/// for the IPv6 and UDP headers.
pub const LOOPBACK_MTU: u16 = 65_000;

/// The provider every config in this crate is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Transport tuning shared by client and server (see the constants above).
pub fn transport_config() -> TransportConfig {
    transport_config_with_mtu(DEFAULT_MTU_UPPER_BOUND)
}

/// [`transport_config`] with a different MTU discovery upper bound, for
/// loopback or jumbo-frame links (pair it with
/// [`crate::endpoint::endpoint_config`] on both ends, or the peer's
/// advertised 1472-byte limit caps discovery).
///
/// Above [`MAX_GSO_MTU`] segmentation offload is turned off: quinn 0.11
/// batches up to 10 datagrams per GSO send, and a batch over 64 KiB fails
/// with EMSGSIZE, which quinn drops silently; that loss then looks like an
/// MTU black hole and discovery falls back to 1200 bytes. Measured on
/// loopback (2 cores, busy): 1452 with GSO ~215 MB/s, 9000 without GSO
/// ~450 MB/s, 65000 without GSO ~580 MB/s, at the price of ~1 % packet
/// loss (bigger datagrams fill the socket buffer sooner).
pub fn transport_config_with_mtu(mtu_upper_bound: u16) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(IDLE_TIMEOUT_MS))))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(SEND_WINDOW)
        // One control stream; data on a few uni streams (one at a time today,
        // a new one per epoch or segment tomorrow).
        .max_concurrent_bidi_streams(VarInt::from_u32(4))
        .max_concurrent_uni_streams(VarInt::from_u32(16));
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(mtu_upper_bound);
    t.mtu_discovery_config(Some(mtu));
    if mtu_upper_bound > MAX_GSO_MTU {
        t.enable_segmentation_offload(false);
    }
    t
}

/// Server side: TLS 1.3, ALPN `walship/1`, client certificate required and
/// verified against `files.ca`.
pub fn server_config(files: &TlsFiles) -> Result<quinn::ServerConfig, NetError> {
    server_config_with(files, transport_config())
}

/// [`server_config`] with a caller-chosen transport configuration.
pub fn server_config_with(files: &TlsFiles, transport: TransportConfig) -> Result<quinn::ServerConfig, NetError> {
    let roots = Arc::new(load_roots(&files.ca)?);
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| NetError::TlsConfig(format!("client verifier from {}: {e}", files.ca.display())))?;
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::TlsConfig(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|source| NetError::BadCertKey { cert: files.cert.clone(), key: files.key.clone(), source })?;
    finish_server(tls, transport)
}

/// Server side for a [`TlsMode`].
pub fn server_config_for(mode: &TlsMode, transport: TransportConfig) -> Result<quinn::ServerConfig, NetError> {
    match mode {
        TlsMode::Mutual(files) => server_config_with(files, transport),
        TlsMode::Insecure => {
            let (cert, key) = crate::certs::self_signed()?;
            let tls = rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| NetError::TlsConfig(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .map_err(|e| NetError::TlsConfig(e.to_string()))?;
            finish_server(tls, transport)
        }
    }
}

/// Client side for a [`TlsMode`].
pub fn client_config_for(mode: &TlsMode, transport: TransportConfig) -> Result<quinn::ClientConfig, NetError> {
    match mode {
        TlsMode::Mutual(files) => client_config_with(files, transport),
        TlsMode::Insecure => {
            let provider = provider();
            let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| NetError::TlsConfig(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
                .with_no_client_auth();
            finish_client(tls, transport)
        }
    }
}

/// `--insecure` on the sender: any server certificate is accepted. The
/// handshake signature is still checked (it proves the peer holds the key of
/// the certificate it showed, whatever that is), so the session keys are
/// real; only the peer's identity is unknown.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn finish_server(mut tls: rustls::ServerConfig, transport: TransportConfig) -> Result<quinn::ServerConfig, NetError> {
    tls.alpn_protocols = vec![walship_core::ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| NetError::TlsConfig(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

fn finish_client(mut tls: rustls::ClientConfig, transport: TransportConfig) -> Result<quinn::ClientConfig, NetError> {
    tls.alpn_protocols = vec![walship_core::ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| NetError::TlsConfig(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Client side: trusts only `files.ca`, presents `files.cert`, ALPN `walship/1`.
pub fn client_config(files: &TlsFiles) -> Result<quinn::ClientConfig, NetError> {
    client_config_with(files, transport_config())
}

/// [`client_config`] with a caller-chosen transport configuration.
pub fn client_config_with(files: &TlsFiles, transport: TransportConfig) -> Result<quinn::ClientConfig, NetError> {
    let roots = load_roots(&files.ca)?;
    let chain = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::TlsConfig(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|source| NetError::BadCertKey { cert: files.cert.clone(), key: files.key.clone(), source })?;
    finish_client(tls, transport)
}

/// Reads a file whole, naming it in the error.
fn read(path: &Path) -> Result<Vec<u8>, NetError> {
    std::fs::read(path).map_err(|source| NetError::ReadFile { path: path.to_owned(), source })
}

/// All certificates in a PEM file, in order; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|source| NetError::Pem { path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(NetError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, NetError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        pem::Error::NoItemsFound => NetError::NoPrivateKey { path: path.to_owned() },
        source => NetError::Pem { path: path.to_owned(), source },
    })
}

/// A root store holding every certificate of the CA file.
fn load_roots(path: &Path) -> Result<RootCertStore, NetError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| NetError::BadCa { path: path.to_owned(), source })?;
    }
    Ok(roots)
}
