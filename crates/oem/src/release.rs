//! Checking a release (`update.upk` + `update.enc`) after mastering:
//! [`verify_release`] needs only the OEM root certificate and never
//! decrypts; [`decrypt_release`] needs the product key.
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use trustchain_formats::stream::{self, SEALED_CHUNK_SIZE, TAG_LEN};
use trustchain_formats::upk::{limits, Upk};
use trustchain_formats::{cose, ProductId};

use crate::crypto::{sha256, verify_es256, Aead, Sha256Stream};
use crate::error::{Error, IoContext, Result};
use crate::keystore::KeyStore;
use crate::oem::OemDir;
use crate::pki;

/// What a verified release says.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseInfo {
    /// OEM ID.
    pub oem_id: u32,
    /// Product ID.
    pub product_id: u32,
    /// Version.
    pub version: String,
    /// Security counter.
    pub security_counter: u64,
    /// Plaintext size.
    pub image_size: u64,
    /// `update.enc` size.
    pub ciphertext_size: u64,
    /// Load address.
    pub load_address: u64,
    /// Plaintext SHA-256 (what the SBM's signature table will hold).
    pub image_sha256: String,
    /// `update.enc` SHA-256.
    pub ciphertext_sha256: String,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Recipient kids, hex.
    pub recipients: Vec<String>,
    /// UID allow-list, hex.
    pub device_uids: Option<Vec<String>>,
    /// Subject of the mastering certificate.
    pub signer: String,
}

/// Reads `update.upk` of a release directory, bounded.
pub fn read_upk(path: &Path) -> Result<Vec<u8>> {
    crate::fsutil::read_bounded(path, limits::MAX_UPK_LEN as u64, "UPK (update.upk)")
}

/// Checks a release without decrypting it: the UPK parses, its mastering
/// certificate chains to `root_der` (rustls-webpki, EKU codeSigning, valid
/// now), carries the manifest's OEM ID, its signature verifies, and
/// `update.enc` has the signed size and digest.
pub fn verify_release(dir: &Path, root_der: &[u8]) -> Result<ReleaseInfo> {
    let upk_path = dir.join("update.upk");
    let enc_path = dir.join("update.enc");
    let bytes = read_upk(&upk_path)?;
    let upk = Upk::parse(&bytes).map_err(|source| Error::Format {
        path: upk_path.clone(),
        source,
    })?;
    let info = verify_upk(&upk_path, &upk, root_der)?;
    check_ciphertext(&enc_path, &upk)?;
    Ok(info)
}

/// Signature and chain checks of a parsed UPK.
fn verify_upk(path: &Path, upk: &Upk<'_>, root_der: &[u8]) -> Result<ReleaseInfo> {
    let chain_err = |problem: String| Error::Chain {
        path: path.to_path_buf(),
        problem,
    };
    let cert_der = upk
        .sign1
        .x5chain
        .ok_or_else(|| chain_err("the UPK carries no mastering certificate (x5chain)".into()))?;
    pki::validate_code_signing(cert_der, root_der).map_err(chain_err)?;
    let cert = pki::parse_cert(cert_der).map_err(chain_err)?;
    let root = pki::parse_cert(root_der).map_err(chain_err)?;
    let m = &upk.manifest;
    if pki::cert_oem_id(&cert) != Some(m.oem_id) || pki::cert_oem_id(&root) != Some(m.oem_id) {
        return Err(chain_err(format!(
            "the certificates do not carry the UPK's OEM ID {}",
            m.oem_id
        )));
    }
    let key = pki::cert_public_key(&cert)
        .ok_or_else(|| chain_err("the mastering key is not P-256".into()))?;
    let mut tbs = Vec::new();
    cose::sig_structure(upk.sign1.protected, upk.sign1.payload, |b| {
        tbs.extend_from_slice(b)
    });
    if !verify_es256(&key.0, &tbs, upk.sign1.signature) {
        return Err(Error::BadSignature {
            path: path.to_path_buf(),
        });
    }
    Ok(ReleaseInfo {
        oem_id: m.oem_id.get(),
        product_id: m.product_id.get(),
        version: m.version.to_string(),
        security_counter: m.security_counter.0,
        image_size: m.image_size,
        ciphertext_size: m.ciphertext_size(),
        load_address: m.load_address,
        image_sha256: m.image_digest.to_string(),
        ciphertext_sha256: m.ciphertext_digest.to_string(),
        created: m.created,
        recipients: m
            .encryption
            .recipients()
            .map(|r| hex::encode(r.kid))
            .collect(),
        device_uids: m.device_uids.map(|l| l.iter().map(hex::encode).collect()),
        signer: cert.tbs_certificate.subject.to_string(),
    })
}

fn open_enc(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
            what: "encrypted image (update.enc)",
        },
        _ => Error::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

/// `update.enc` has the signed size and SHA-256 (read at most that size).
fn check_ciphertext(path: &Path, upk: &Upk<'_>) -> Result<()> {
    let want = upk.manifest.ciphertext_size();
    let file = open_enc(path)?;
    let len = file.metadata().at(path)?.len();
    if len != want {
        return Err(Error::ReleaseMismatch {
            path: path.to_path_buf(),
            problem: format!("is {len} bytes but the UPK says {want}"),
        });
    }
    let mut r = BufReader::with_capacity(1 << 20, file.take(want));
    let mut h = Sha256Stream::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    if h.finish() != upk.manifest.ciphertext_digest.0 {
        return Err(Error::ReleaseMismatch {
            path: path.to_path_buf(),
            problem: "its SHA-256 differs from the ciphertext digest signed in the UPK".into(),
        });
    }
    Ok(())
}

/// Decrypts a release with the product key of `oem` into `out` (which must
/// not exist): verifies it against the OEM's own root first, opens every
/// chunk, checks the plaintext digest, then renames into place.
pub fn decrypt_release(
    oem: &OemDir,
    keystore: &dyn KeyStore,
    dir: &Path,
    out: &Path,
) -> Result<ReleaseInfo> {
    if out.exists() {
        return Err(Error::AlreadyExists {
            path: out.to_path_buf(),
            what: "output file",
        });
    }
    let upk_path = dir.join("update.upk");
    let enc_path = dir.join("update.enc");
    let bytes = read_upk(&upk_path)?;
    let upk = Upk::parse(&bytes).map_err(|source| Error::Format {
        path: upk_path.clone(),
        source,
    })?;
    let info = verify_upk(&upk_path, &upk, &oem.root_der()?)?;
    let product_id = ProductId::new(info.product_id).ok_or(Error::Crypto("product ID"))?;
    let product = oem.product(product_id)?;
    let recipient = upk
        .manifest
        .encryption
        .recipient_for(&product.public_key.kid())
        .ok_or(Error::NotARecipient {
            path: upk_path.clone(),
            recipients: upk.manifest.encryption.len(),
        })?;
    let agree = keystore.key_agreement(&product.key_label())?;
    let cek = unwrap_cek(agree.as_ref(), &recipient).ok_or(Error::DecryptionFailed {
        path: upk_path.clone(),
    })?;

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".tc-tmp-")
        .tempfile_in(&parent)
        .at(&parent)?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        decrypt_stream(&cek, &enc_path, &upk, &mut w)?;
        w.flush().at(out)?;
    }
    tmp.as_file().sync_all().at(out)?;
    tmp.persist_noclobber(out).map_err(|e| Error::Io {
        path: out.to_path_buf(),
        source: e.error,
    })?;
    Ok(info)
}

/// ECDH-ES + A128KW unwrap through a keystore handle.
pub fn unwrap_cek(
    agree: &dyn crate::keystore::KeyAgreement,
    r: &cose::Recipient<'_>,
) -> Option<zeroize::Zeroizing<[u8; stream::KEY_LEN]>> {
    let shared = agree.agree(&r.ephemeral.to_sec1()).ok()?;
    crate::crypto::unwrap_shared(&shared, r.wrapped_key)
}

/// Decrypts `update.enc` chunk by chunk to `w`, checking sizes, every tag and
/// the plaintext digest.
pub fn decrypt_stream<W: Write>(
    cek: &[u8; stream::KEY_LEN],
    enc_path: &Path,
    upk: &Upk<'_>,
    w: &mut W,
) -> Result<()> {
    let m = &upk.manifest;
    let file = open_enc(enc_path)?;
    let len = file.metadata().at(enc_path)?.len();
    if len != m.ciphertext_size() {
        return Err(Error::ReleaseMismatch {
            path: enc_path.to_path_buf(),
            problem: format!("is {len} bytes but the UPK says {}", m.ciphertext_size()),
        });
    }
    let aead = Aead::aes128(cek)?;
    let chunks = stream::chunk_count(m.image_size).ok_or(Error::Crypto("chunk count"))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; SEALED_CHUNK_SIZE];
    let mut h = Sha256Stream::default();
    for i in 0..chunks {
        let n = stream::chunk_len(m.image_size, i) + TAG_LEN;
        r.read_exact(&mut buf[..n]).at(enc_path)?;
        let p = aead
            .open(
                stream::nonce(i, i + 1 == chunks),
                &cose::CONTENT_AAD,
                &mut buf[..n],
            )
            .ok_or(Error::DecryptionFailed {
                path: enc_path.to_path_buf(),
            })?;
        h.update(&buf[..p]);
        w.write_all(&buf[..p]).at("output")?;
    }
    zeroize::Zeroize::zeroize(&mut buf);
    if h.finish() != m.image_digest.0 {
        return Err(Error::ReleaseMismatch {
            path: enc_path.to_path_buf(),
            problem: "the decrypted image does not match the signed plaintext digest".into(),
        });
    }
    Ok(())
}

/// SHA-256 of a file's bytes (for reports).
pub fn file_sha256(path: &Path) -> Result<[u8; 32]> {
    Ok(sha256(&std::fs::read(path).at(path)?))
}
