//! Server identities (issue 5): `trustchain oem server-cert` makes the
//! identity an update server presents to devices: a fresh P-256 key in a
//! sealed keystore of its own (the server never holds an OEM key) and a
//! certificate the OEM root issues for it (id-kp-serverAuth, the DNS names
//! and IP addresses devices connect to, the OEM ID extension). Devices
//! validate it with the OEM root they hold, as any TLS client would.
//!
//! Layout of the identity directory:
//! `keystore/` (sealed, key `tls-server`), `server.pem` (the certificate).
use std::path::{Path, PathBuf};

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};
use time::Duration;

use crate::error::{Error, Result};
use crate::fsutil::StagedDir;
use crate::keystore::passphrase::Passphrase;
use crate::keystore::sealed::{KdfParams, SealedKeyStore};
use crate::keystore::{KeyKind, KeyLabel, KeyStore, Signer};
use crate::oem::OemDir;
use crate::pki::{self, CertSpec};

/// The server key's label in the identity's keystore.
pub fn server_key_label() -> KeyLabel {
    KeyLabel::new("tls-server").expect("a valid label")
}

/// The certificate file in an identity directory.
pub const SERVER_CERT: &str = "server.pem";

/// What `server-cert` made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerIdentityReport {
    /// The identity directory.
    pub dir: PathBuf,
    /// Its certificate.
    pub cert: PathBuf,
    /// The names it is valid for.
    pub names: Vec<String>,
    /// Certificate SHA-256, hex.
    pub sha256: String,
    /// Days of validity.
    pub days: u32,
}

/// Creates a server identity in `out` (which must not exist), certified by
/// the OEM root.
pub fn create_identity(
    oem: &OemDir,
    oem_keys: &dyn KeyStore,
    names: &[String],
    days: u32,
    out: &Path,
    pass: &Passphrase,
    kdf: KdfParams,
) -> Result<ServerIdentityReport> {
    if names.is_empty() || names.len() > 16 {
        return Err(Error::Usage(
            "give 1 to 16 --name values (DNS names or IP addresses)".into(),
        ));
    }
    if days == 0 || days > 3650 {
        return Err(Error::Usage("--days must be 1 to 3650".into()));
    }
    let mut sans = Vec::new();
    for n in names {
        sans.push(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                let ok = !n.is_empty()
                    && n.len() <= 253
                    && n.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !ok {
                    return Err(Error::Usage(format!(
                        "--name {n}: not a DNS name or an IP address"
                    )));
                }
                SanType::DnsName(
                    n.as_str()
                        .try_into()
                        .map_err(|_| Error::Usage(format!("--name {n}: not a DNS name")))?,
                )
            }
        });
    }
    let root_der = oem.root_der()?;
    let root = pki::issuer_from_der(&root_der).map_err(|problem| Error::Corrupt {
        path: oem.path().join("root.pem"),
        problem,
    })?;
    let root_key = oem_keys.signer(&KeyLabel::root_ca())?;

    let staged = StagedDir::new(out, "server identity")?;
    let mut ks = SealedKeyStore::create(&staged.path().join("keystore"), pass, kdf)?;
    let public = ks.generate(&server_key_label(), KeyKind::EcdsaP256)?;

    let mut spec = CertSpec::new(names[0].clone(), oem.name().to_string(), oem.oem_id(), 1);
    spec.not_after = spec.not_before + Duration::hours(1) + Duration::days(days.into());
    spec.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    spec.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    spec.subject_alt_names = sans;
    let der = pki::issue(&spec, &public, &root, root_key.as_ref())?.der;
    std::fs::write(staged.path().join(SERVER_CERT), pki::to_pem(&der)).map_err(|e| Error::Io {
        path: staged.path().join(SERVER_CERT),
        source: e,
    })?;
    let dir = staged.commit()?;
    Ok(ServerIdentityReport {
        cert: dir.join(SERVER_CERT),
        dir,
        names: names.to_vec(),
        sha256: hex::encode(crate::crypto::sha256(&der)),
        days,
    })
}

/// An opened server identity: its certificate and a signer for its key.
pub struct ServerIdentity {
    /// The certificate (DER).
    pub cert_der: Vec<u8>,
    /// The key.
    pub key: Box<dyn Signer>,
}

/// Opens the identity in `dir` with its keystore passphrase.
pub fn open_identity(dir: &Path, pass: &Passphrase) -> Result<ServerIdentity> {
    let cert_path = dir.join(SERVER_CERT);
    let bytes = std::fs::read(&cert_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: cert_path.clone(),
            what: "server certificate (make the identity with `trustchain oem server-cert`)",
        },
        _ => Error::Io {
            path: cert_path.clone(),
            source: e,
        },
    })?;
    let cert_der = pki::cert_der(&bytes).map_err(|problem| Error::Corrupt {
        path: cert_path.clone(),
        problem,
    })?;
    let ks = SealedKeyStore::open(&dir.join("keystore"), pass)?;
    let key = ks.signer(&server_key_label())?;
    if key.public_key()
        != &pki::cert_public_key(&pki::parse_cert(&bytes).map_err(|problem| Error::Corrupt {
            path: cert_path.clone(),
            problem,
        })?)
        .ok_or(Error::Corrupt {
            path: cert_path.clone(),
            problem: "not a P-256 certificate".into(),
        })?
    {
        return Err(Error::Corrupt {
            path: cert_path,
            problem: "certifies another key than the keystore's tls-server key".into(),
        });
    }
    Ok(ServerIdentity { cert_der, key })
}
