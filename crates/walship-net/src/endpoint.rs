//! QUIC endpoints over UDP sockets we create and tune ourselves.
//!
//! The kernel's default UDP buffers (208 KiB) overflow on loopback at full
//! speed and QUIC then loses 0.3–1.2 % of its packets; with 4 MiB buffers
//! it loses none. So the socket is made with socket2, its buffers raised,
//! and only then handed to quinn.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use quinn::{Connection, Endpoint, EndpointConfig, TokioRuntime};
use rustls_pki_types::CertificateDer;
use socket2::{Domain, Protocol, Socket, Type};

use crate::NetError;
use crate::tls::{self, TlsFiles, TlsMode};

/// Requested SO_RCVBUF and SO_SNDBUF.
pub const UDP_BUFFER: usize = 4 << 20;

/// A server endpoint bound to `addr` that requires client certificates.
/// Must be called inside a tokio runtime.
pub fn server_endpoint(addr: SocketAddr, files: &TlsFiles) -> Result<Endpoint, NetError> {
    server_endpoint_with(addr, tls::server_config(files)?, accept_large(EndpointConfig::default()))
}

/// The MTU discovery upper bound for a connection to `peer`: a loopback
/// peer gets [`tls::LOOPBACK_MTU`] (lo's MTU is 64 KiB), anything else
/// quinn's Ethernet-sized default. Per packet, QUIC pays encryption, header
/// protection and a trip through the UDP stack: on loopback 45 times fewer
/// packets doubled what one connection moves (docs/benchmarks.md).
pub fn mtu_upper_bound_for(peer: SocketAddr) -> u16 {
    if peer.ip().is_loopback() { tls::LOOPBACK_MTU } else { tls::DEFAULT_MTU_UPPER_BOUND }
}

/// Lets peers send datagrams as large as their own MTU discovery finds
/// (quinn's default limit is 1472 bytes). Only the sending side's upper
/// bound ([`mtu_upper_bound_for`]) decides what it probes for; accepting
/// more costs nothing when peers never send it.
fn accept_large(mut config: EndpointConfig) -> EndpointConfig {
    let _ = config.max_udp_payload_size(tls::LOOPBACK_MTU);
    config
}

/// A server endpoint for either [`TlsMode`], with the default transport and
/// a stateless-reset key that survives restarts ([`restart_safe_config`]).
pub fn server_endpoint_for(addr: SocketAddr, mode: &TlsMode) -> Result<Endpoint, NetError> {
    server_endpoint_with(
        addr,
        tls::server_config_for(mode, tls::transport_config())?,
        accept_large(restart_safe_config(mode)?),
    )
}

/// An endpoint configuration whose stateless-reset key is derived from the
/// receiver's TLS private key, so it is the same in every process.
///
/// A QUIC peer only believes a reset that carries the token the endpoint
/// issued for that connection; quinn derives tokens from a random key per
/// process. So after a receiver was killed and restarted on the same address,
/// its new process could not reset the connection the sender still held, and
/// the sender kept sending into the void until the 10 s idle timeout: 10 s of
/// RPO per receiver crash (measured 10.1–10.9 s in the torture test). With a
/// key derived from the private key, the new process's reset is accepted at
/// the sender's next packet and it reconnects at once. The key stays secret
/// (an off-path attacker cannot forge resets), and `--insecure` (throw-away
/// key) keeps the random default.
pub fn restart_safe_config(mode: &TlsMode) -> Result<EndpointConfig, NetError> {
    let TlsMode::Mutual(files) = mode else { return Ok(EndpointConfig::default()) };
    let key = tls::load_key(&files.key)?;
    let derive = |label: &[u8]| {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(label);
        ctx.update(key.secret_der());
        ctx.finish()
    };
    let reset = derive(b"walship stateless reset key v1\0");
    let mut config = EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset.as_ref())));
    // quinn drops packets whose connection ID its generator did not make
    // before it ever considers a reset, and the default generator's key is
    // random per process too: ours is keyed by a second derived secret.
    let cid_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derive(b"walship connection id key v1\0").as_ref());
    config.cid_generator(move || Box::new(KeyedCids(cid_key.clone())));
    Ok(config)
}

/// A client endpoint for either [`TlsMode`], with the default transport.
/// Its MTU discovery goes up to `mtu_upper_bound`, or by default to
/// [`mtu_upper_bound_for`] the peer.
pub fn client_endpoint_for(
    peer: SocketAddr,
    mode: &TlsMode,
    mtu_upper_bound: Option<u16>,
) -> Result<Endpoint, NetError> {
    let mtu = mtu_upper_bound.unwrap_or_else(|| mtu_upper_bound_for(peer)).clamp(1200, tls::LOOPBACK_MTU);
    let transport = tls::transport_config_with_mtu(mtu);
    client_endpoint_with(peer, tls::client_config_for(mode, transport)?, accept_large(EndpointConfig::default()))
}

/// [`server_endpoint`] with ready-made server and endpoint configurations.
pub fn server_endpoint_with(
    addr: SocketAddr,
    config: quinn::ServerConfig,
    endpoint: EndpointConfig,
) -> Result<Endpoint, NetError> {
    let socket = bind_udp(addr)?;
    Endpoint::new(endpoint, Some(config), socket, Arc::new(TokioRuntime))
        .map_err(|source| NetError::Socket { addr, source })
}

/// A client endpoint for connecting to `peer`: bound to the unspecified
/// address of the same family, port 0, with the client configuration from
/// `files` as its default. Must be called inside a tokio runtime.
pub fn client_endpoint(peer: SocketAddr, files: &TlsFiles) -> Result<Endpoint, NetError> {
    let transport = tls::transport_config_with_mtu(mtu_upper_bound_for(peer));
    client_endpoint_with(peer, tls::client_config_with(files, transport)?, accept_large(EndpointConfig::default()))
}

/// [`client_endpoint`] with ready-made client and endpoint configurations.
pub fn client_endpoint_with(
    peer: SocketAddr,
    config: quinn::ClientConfig,
    endpoint: EndpointConfig,
) -> Result<Endpoint, NetError> {
    let addr = match peer {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = bind_udp(addr)?;
    let mut ep = Endpoint::new(endpoint, None, socket, Arc::new(TokioRuntime))
        .map_err(|source| NetError::Socket { addr, source })?;
    ep.set_default_client_config(config);
    Ok(ep)
}

/// Connects to `addr` and completes the handshake, verifying the server's
/// certificate against `server_name` (a DNS name or an IP address literal).
pub async fn connect(endpoint: &Endpoint, addr: SocketAddr, server_name: &str) -> Result<Connection, NetError> {
    let connecting = endpoint.connect(addr, server_name).map_err(|source| NetError::Connect { addr, source })?;
    connecting.await.map_err(|source| NetError::Handshake { addr, source })
}

/// Waits for the next incoming connection and completes its handshake.
/// `None` once the endpoint is closed. A failed handshake (e.g. a client
/// without a valid certificate) is an error for that one connection only;
/// keep accepting.
///
/// Cancel-safe while waiting for a connection; cancelling during the
/// handshake drops that connection attempt.
pub async fn accept(endpoint: &Endpoint) -> Option<Result<Connection, NetError>> {
    let incoming = endpoint.accept().await?;
    let addr = incoming.remote_address();
    Some(incoming.await.map_err(|source| NetError::Handshake { addr, source }))
}

/// The common name of the peer's certificate (or, without one, its whole
/// subject), for logs. `None` if the peer presented no certificate.
pub fn peer_name(conn: &Connection) -> Option<String> {
    let certs = conn.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?).ok()?;
    let subject = cert.subject();
    match subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        Some(cn) => Some(cn.to_owned()),
        None => Some(subject.to_string()),
    }
}

/// Every name the peer's certificate carries: its common name and its DNS
/// subject alternative names (what `--allow-client` matches). Empty without
/// a certificate.
pub fn peer_names(conn: &Connection) -> Vec<String> {
    let Some(certs) = conn.peer_identity().and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok()) else {
        return Vec::new();
    };
    let Some(Ok((_, cert))) = certs.first().map(|c| x509_parser::parse_x509_certificate(c)) else {
        return Vec::new();
    };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_owned)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n
                && !names.iter().any(|x| x == d)
            {
                names.push((*d).to_owned());
            }
        }
    }
    names
}

/// Connection IDs that a later process with the same key recognises: 8
/// random bytes and 4 bytes of their HMAC.
#[derive(Debug)]
struct KeyedCids(ring::hmac::Key);

const CID_NONCE: usize = 8;
const CID_TAG: usize = 4;

impl quinn::ConnectionIdGenerator for KeyedCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut cid = [0u8; CID_NONCE + CID_TAG];
        // SystemRandom only fails if the OS has no randomness at all; QUIC
        // could not work then either.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut cid[..CID_NONCE]);
        let tag = ring::hmac::sign(&self.0, &cid[..CID_NONCE]);
        cid[CID_NONCE..].copy_from_slice(&tag.as_ref()[..CID_TAG]);
        quinn::ConnectionId::new(&cid)
    }

    fn validate(&self, cid: &quinn::ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        if cid.len() != CID_NONCE + CID_TAG {
            return Err(quinn_proto::InvalidCid);
        }
        let tag = ring::hmac::sign(&self.0, &cid[..CID_NONCE]);
        if tag.as_ref()[..CID_TAG] == cid[CID_NONCE..] { Ok(()) } else { Err(quinn_proto::InvalidCid) }
    }

    fn cid_len(&self) -> usize {
        CID_NONCE + CID_TAG
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

/// An endpoint configuration that accepts UDP payloads up to
/// `max_udp_payload` bytes (1200..=65527); quinn's default is 1472, an
/// Ethernet frame. Raising it (together with
/// [`tls::transport_config_with_mtu`]) lets MTU discovery go further on
/// loopback or jumbo-frame links, at the cost of larger receive buffers.
pub fn endpoint_config(max_udp_payload: u16) -> EndpointConfig {
    let mut config = EndpointConfig::default();
    // Out-of-range values keep the default rather than fail: this is tuning.
    let _ = config.max_udp_payload_size(max_udp_payload.clamp(1200, 65_527));
    config
}

/// A non-blocking UDP socket bound to `addr` with large kernel buffers.
fn bind_udp(addr: SocketAddr) -> Result<std::net::UdpSocket, NetError> {
    let err = |source| NetError::Socket { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if addr.is_ipv6() {
        // Accept IPv4-mapped peers too when bound to [::], as most daemons do.
        let _ = socket.set_only_v6(false);
    }
    raise_buffers(&socket, addr);
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    Ok(socket.into())
}

/// Asks for [`UDP_BUFFER`] in both directions and warns when the kernel
/// grants less (net.core.rmem_max / wmem_max cap it). Linux reports double
/// the requested size (it counts bookkeeping), so anything at or above the
/// request is fine.
fn raise_buffers(socket: &Socket, addr: SocketAddr) {
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER) {
        tracing::warn!(%addr, error = %e, "cannot set udp receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER) {
        tracing::warn!(%addr, error = %e, "cannot set udp send buffer");
    }
    let recv = socket.recv_buffer_size().unwrap_or(0);
    let send = socket.send_buffer_size().unwrap_or(0);
    if recv < UDP_BUFFER || send < UDP_BUFFER {
        tracing::warn!(
            %addr,
            requested = UDP_BUFFER,
            recv_granted = recv,
            send_granted = send,
            "udp buffers smaller than requested; expect packet loss at high rates \
             (raise net.core.rmem_max and net.core.wmem_max)"
        );
    } else {
        tracing::debug!(%addr, recv, send, "udp buffers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_are_recognised_by_a_later_process_with_the_same_key_only() {
        use quinn::ConnectionIdGenerator;
        let key = |k: &[u8]| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k);
        let mut first = KeyedCids(key(b"secret"));
        let later = KeyedCids(key(b"secret"));
        let other = KeyedCids(key(b"another secret"));
        for _ in 0..100 {
            let cid = first.generate_cid();
            assert_eq!(cid.len(), first.cid_len());
            assert!(later.validate(&cid).is_ok());
            // A 32-bit tag: a false accept here has odds of 2^-32 per try.
            assert!(other.validate(&cid).is_err());
        }
        assert!(later.validate(&quinn::ConnectionId::new(&[0u8; 8])).is_err(), "wrong length");
    }

    #[test]
    fn buffers_are_raised() {
        let socket = bind_udp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
        let socket = Socket::from(socket);
        // The kernel caps the request at net.core.rmem_max (and reports double).
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        assert!(socket.recv_buffer_size().expect("getsockopt") >= UDP_BUFFER.min(cap));
    }
}
