//! `cert init`: files, names, usages, permissions, refusal to overwrite.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;

use walship_net::{NetError, certs, tls};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

fn parsed<R>(path: &Path, f: impl FnOnce(&X509Certificate<'_>) -> R) -> R {
    let der = tls::load_certs(path).unwrap().remove(0);
    let (_, cert) = parse_x509_certificate(&der).unwrap();
    f(&cert)
}

#[test]
fn init_writes_six_files_with_the_right_names() {
    let dir = tempfile::tempdir().unwrap();
    let extra = vec!["db.example.com".to_string(), "10.1.2.3".to_string(), "localhost".to_string()];
    let paths = certs::init(&dir.path().join("sub"), &extra, false).unwrap();
    for f in ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"] {
        assert!(dir.path().join("sub").join(f).is_file(), "{f} missing");
    }

    let (dns, ips) = parsed(&paths.server_cert, |c| {
        let san = c.subject_alternative_name().unwrap().unwrap().value;
        let mut dns = vec![];
        let mut ips = vec![];
        for n in &san.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    let ip: IpAddr = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).unwrap().into(),
                        _ => <[u8; 16]>::try_from(*b).unwrap().into(),
                    };
                    ips.push(ip.to_string());
                }
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        (dns, ips)
    });
    // `localhost` given twice is listed once.
    assert_eq!(dns, ["localhost", "db.example.com"]);
    assert_eq!(ips, ["127.0.0.1", "10.1.2.3"]);

    parsed(&paths.client_cert, |c| {
        let cn = c.subject().iter_common_name().next().unwrap().as_str().unwrap().to_owned();
        assert_eq!(cn, certs::CLIENT_CN);
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        // Leaf validity: about 825 days.
        let days = (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86_400;
        assert!((825..=827).contains(&days), "{days}");
    });

    parsed(&paths.ca_cert, |c| {
        let bc = c.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        let ku = c.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign());
        let days = (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86_400;
        assert!(days >= 3650, "{days}");
    });
}

#[cfg(unix)]
#[test]
fn keys_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let paths = certs::init(dir.path(), &[], false).unwrap();
    for key in [&paths.ca_key, &paths.server_key, &paths.client_key] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    // Still private after a forced re-init over files with looser modes.
    std::fs::set_permissions(&paths.server_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let paths = certs::init(dir.path(), &[], true).unwrap();
    let mode = std::fs::metadata(&paths.server_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let first = certs::init(dir.path(), &[], false).unwrap();
    let ca_before = std::fs::read(&first.ca_cert).unwrap();

    // Only one file present is enough to refuse, and the error names it.
    for f in ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem"] {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    let e = certs::init(dir.path(), &[], false).unwrap_err();
    assert!(matches!(&e, NetError::Exists { path } if path.ends_with("client.key")), "{e}");
    assert!(e.to_string().contains("client.key"), "{e}");
    assert!(!dir.path().join("ca.pem").exists(), "nothing may be written on refusal");

    let second = certs::init(dir.path(), &[], true).unwrap();
    assert_ne!(std::fs::read(&second.ca_cert).unwrap(), ca_before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bad_extra_name_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let e = certs::init(dir.path(), &["bad name\u{7f}é".to_string()], false).unwrap_err();
    assert!(matches!(e, NetError::BadName { .. }), "{e}");
    assert!(!dir.path().join("ca.pem").exists());
}

#[test]
fn generated_files_load_as_tls_configs() {
    let dir = tempfile::tempdir().unwrap();
    let paths = certs::ephemeral(dir.path()).unwrap();
    walship_net::server_config(&paths.server()).unwrap();
    walship_net::client_config(&paths.client()).unwrap();
}
