//! Reading the CRLs the OEM publishes (`trustchain oem revoke` writes them,
//! see `trustchain_oem::revoke`): a file of one or more PEM `X509 CRL`
//! blocks (`OEM_DIR/crl.pem`), or one DER CRL. Each is parsed by
//! rustls-webpki before it is used, so a damaged file is refused at start,
//! naming the file, rather than silently revoking nothing.
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;

/// At most this many bytes of CRLs are read (a revocation list of ~100k devices).
pub const MAX_CRL_FILE: u64 = 8 << 20;

/// Loads and checks the CRLs in `path`.
pub fn load(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > MAX_CRL_FILE {
        return Err(format!(
            "{}: {len} bytes, more than the {MAX_CRL_FILE} a CRL file may have",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses CRLs from PEM (one or more blocks) or one DER CRL, and checks each.
pub fn parse(bytes: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls: Vec<CertificateRevocationListDer<'static>> = if bytes.first() == Some(&0x30) {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    } else {
        CertificateRevocationListDer::pem_slice_iter(bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("not a PEM CRL file: {e:?}"))?
    };
    if crls.is_empty() {
        return Err("holds no X509 CRL".into());
    }
    for (i, crl) in crls.iter().enumerate() {
        webpki::BorrowedCertRevocationList::from_der(crl.as_ref())
            .map_err(|e| format!("CRL {}: does not parse ({e:?})", i + 1))?;
    }
    Ok(crls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_empty_files_are_refused() {
        assert!(parse(b"").is_err());
        assert!(parse(b"hello").is_err());
        assert!(parse(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
        assert!(parse(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n").is_err());
    }
}
