//! `walship cert init`: a private CA and the two leaf certificates signed by it.
//!
//! | file                      | what                                                        |
//! |---------------------------|-------------------------------------------------------------|
//! | `ca.pem`, `ca.key`        | the CA (CN "walship CA", path length 0), valid 10 years     |
//! | `server.pem`, `server.key`| receiver: SANs `localhost`, `127.0.0.1` and every extra name, server-auth EKU, 825 days |
//! | `client.pem`, `client.key`| sender: CN "walship-client", client-auth EKU, 825 days      |
//!
//! Keys are ECDSA P-256 in PKCS#8 PEM, written with mode 0600. Each file is
//! written to a temporary name and renamed into place, so a crash never
//! leaves a half-written key behind.
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::NetError;
use crate::tls::TlsFiles;

const DAY: Duration = Duration::from_secs(24 * 3600);
/// Validity of the CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);
/// Validity of the leaf certificates (the longest that macOS/browsers accept).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(825 * 24 * 3600);
/// Names the server certificate always carries.
pub const DEFAULT_SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];
/// Common name of the client certificate.
pub const CLIENT_CN: &str = "walship-client";

/// Where `init` wrote everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// CA certificate (`ca.pem`).
    pub ca_cert: PathBuf,
    /// CA private key (`ca.key`).
    pub ca_key: PathBuf,
    /// Server (receiver) certificate (`server.pem`).
    pub server_cert: PathBuf,
    /// Server private key (`server.key`).
    pub server_key: PathBuf,
    /// Client (sender) certificate (`client.pem`).
    pub client_cert: PathBuf,
    /// Client private key (`client.key`).
    pub client_key: PathBuf,
}

impl CertPaths {
    /// The standard file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        CertPaths {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// The files a receiver (server) loads.
    pub fn server(&self) -> TlsFiles {
        TlsFiles { ca: self.ca_cert.clone(), cert: self.server_cert.clone(), key: self.server_key.clone() }
    }

    /// The files a sender (client) loads.
    pub fn client(&self) -> TlsFiles {
        TlsFiles { ca: self.ca_cert.clone(), cert: self.client_cert.clone(), key: self.client_key.clone() }
    }

    fn all(&self) -> [&Path; 6] {
        [&self.ca_cert, &self.ca_key, &self.server_cert, &self.server_key, &self.client_cert, &self.client_key]
    }
}

/// Creates `dir` if needed and writes a CA, a server and a client
/// certificate into it. The server certificate names `localhost`,
/// `127.0.0.1` and every `extra_names` entry (an IP SAN when it parses as an
/// IP address, a DNS SAN otherwise). Without `force`, refuses to touch
/// anything if any of the six files exists.
pub fn init(dir: &Path, extra_names: &[String], force: bool) -> Result<CertPaths, NetError> {
    let paths = CertPaths::in_dir(dir);
    if !force && let Some(p) = paths.all().into_iter().find(|p| p.exists()) {
        return Err(NetError::Exists { path: p.to_owned() });
    }
    // Build everything before writing anything, so a bad name leaves no files.
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let ca_params = ca_params(now)?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let server_cert = server_params(now, extra_names)?.signed_by(&server_key, &issuer)?;
    let client_key = KeyPair::generate()?;
    let client_cert = client_params(now)?.signed_by(&client_key, &issuer)?;

    fs::create_dir_all(dir).map_err(|source| NetError::WriteFile { path: dir.to_owned(), source })?;
    write_file(&paths.ca_cert, ca_cert.pem().as_bytes(), 0o644)?;
    write_file(&paths.ca_key, issuer.key().serialize_pem().as_bytes(), 0o600)?;
    write_file(&paths.server_cert, server_cert.pem().as_bytes(), 0o644)?;
    write_file(&paths.server_key, server_key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&paths.client_cert, client_cert.pem().as_bytes(), 0o644)?;
    write_file(&paths.client_key, client_key.serialize_pem().as_bytes(), 0o600)?;
    Ok(paths)
}

/// Fresh certificates for a throw-away setup (`walship demo`, tests):
/// [`init`] with no extra names, replacing whatever `dir` holds.
pub fn ephemeral(dir: &Path) -> Result<CertPaths, NetError> {
    init(dir, &[], true)
}

/// Signs a new client certificate with the CA in `dir` (`ca.pem`, `ca.key`
/// from [`init`]): common name and DNS name `name`, written to
/// `client-NAME.pem` / `client-NAME.key` in `dir`. One per sender host lets a
/// receiver's allow-list (`--allow-client`) tell senders apart.
pub fn issue_client(dir: &Path, name: &str, force: bool) -> Result<(PathBuf, PathBuf), NetError> {
    let paths = CertPaths::in_dir(dir);
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let dns: rcgen::string::Ia5String = match name.try_into() {
        Ok(d) if valid => d,
        _ => {
            return Err(NetError::BadClientName {
                name: name.to_owned(),
                why: "use letters, digits, '-', '_' and '.' only".into(),
            });
        }
    };
    let cert_path = dir.join(format!("client-{name}.pem"));
    let key_path = dir.join(format!("client-{name}.key"));
    if !force && let Some(p) = [&cert_path, &key_path].into_iter().find(|p| p.exists()) {
        return Err(NetError::Exists { path: p.to_owned() });
    }
    let read =
        |path: &Path| fs::read_to_string(path).map_err(|source| NetError::ReadFile { path: path.to_owned(), source });
    let ca_key = KeyPair::from_pem(&read(&paths.ca_key)?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(&paths.ca_cert)?, ca_key)?;
    let now = OffsetDateTime::now_utc();
    let mut params = client_params(now)?;
    params.distinguished_name = dn(name);
    params.subject_alt_names.push(SanType::DnsName(dns));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    Ok((cert_path, key_path))
}

/// A throw-away self-signed certificate and key for `--insecure` receivers.
pub(crate) fn self_signed()
-> Result<(rustls_pki_types::CertificateDer<'static>, rustls_pki_types::PrivateKeyDer<'static>), NetError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(vec!["walship-insecure".to_string()])?;
    p.distinguished_name = dn("walship-insecure");
    validity(&mut p, OffsetDateTime::now_utc(), LEAF_VALIDITY);
    let cert = p.self_signed(&key)?;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    Ok((cert.der().clone(), der.into()))
}

fn ca_params(now: OffsetDateTime) -> Result<CertificateParams, NetError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = dn("walship CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut p, now, CA_VALIDITY);
    Ok(p)
}

fn server_params(now: OffsetDateTime, extra_names: &[String]) -> Result<CertificateParams, NetError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut names: Vec<String> = DEFAULT_SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.as_str().try_into().map_err(|source| NetError::BadName { name: name.clone(), source })?,
            ),
        };
        p.subject_alt_names.push(san);
    }
    p.distinguished_name = dn("walship-server");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, now, LEAF_VALIDITY);
    Ok(p)
}

fn client_params(now: OffsetDateTime) -> Result<CertificateParams, NetError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = dn(CLIENT_CN);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, now, LEAF_VALIDITY);
    Ok(p)
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "walship");
    dn.push(DnType::CommonName, cn);
    dn
}

/// Valid from a day ago (tolerates clock skew between the hosts) for `length`.
fn validity(p: &mut CertificateParams, now: OffsetDateTime, length: Duration) {
    p.not_before = now - DAY;
    p.not_after = now + length;
}

/// Writes `data` to `path` via a temporary file with `mode`, fsync, rename.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), NetError> {
    let err = |source| NetError::WriteFile { path: path.to_owned(), source };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(err)?;
    drop(f);
    fs::rename(&tmp, path).map_err(err)
}
