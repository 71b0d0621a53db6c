//! The production package: what an OEM wraps for one Guardian (seeds
//! "Secure Production" and the paper's "OEM Secret Wrapping Tool").
//!
//! ```text
//! package  = COSE_Encrypt (tag 96), A256GCM content, one recipient:
//!            ECDH-ES + A256KW to the Guardian's key-agreement key
//! content  = COSE_Sign1 (tag 18), ES256 by the OEM device CA (x5chain),
//!            over the package manifest below
//! ```
//! The manifest names the Guardian it is for (SHA-256 of the Guardian's
//! identity certificate), so a package re-encrypted to another Guardian no
//! longer verifies there. Secrets (the per-package issuing CA key, the
//! product key) exist only inside the encrypted layer.
use crate::cbor::Reader;
use crate::cose::{EcPoint, HDR_EPHEMERAL_KEY, HDR_KID};
use crate::ids::{OemId, ProductId};
use crate::FormatError;

/// The package format version.
pub const FORMAT_VERSION: u64 = 1;

/// COSE algorithm A256GCM.
pub const ALG_A256GCM: i64 = 3;
/// COSE algorithm ECDH-ES + A256KW.
pub const ALG_ECDH_ES_A256KW: i64 = -31;
/// COSE algorithm A256KW (KDF context).
pub const ALG_A256KW: i64 = -5;
/// Protected header of the content layer: `{1: 3}`.
pub const PROTECTED_A256GCM: [u8; 3] = [0xa1, 0x01, 0x03];
/// Protected header of the recipient: `{1: -31}`.
pub const PROTECTED_ECDH_ES_A256KW: [u8; 4] = [0xa1, 0x01, 0x38, 0x1e];
/// COSE_KDF_Context of the recipient (RFC 9053 §5.2):
/// `[-5, [nil, nil, nil], [nil, nil, nil], [256, h'A101381E']]`.
pub const KDF_CONTEXT_A256KW: [u8; 19] = [
    0x84, 0x24, 0x83, 0xf6, 0xf6, 0xf6, 0x83, 0xf6, 0xf6, 0xf6, 0x82, 0x19, 0x01, 0x00, 0x44, 0xa1,
    0x01, 0x38, 0x1e,
];
/// AAD of the content layer: `["Encrypt", h'A10103', h'']`.
pub const CONTENT_AAD: [u8; 14] = [
    0x83, 0x67, b'E', b'n', b'c', b'r', b'y', b'p', b't', 0x43, 0xa1, 0x01, 0x03, 0x40,
];

/// Bounds.
pub mod limits {
    /// Largest package file (the release travels inside).
    pub const MAX_PACKAGE_LEN: usize = 256 * 1024 * 1024;
    /// Largest certificate.
    pub const MAX_CERT_LEN: usize = 2048;
    /// Largest template text.
    pub const MAX_TEMPLATE_LEN: usize = 16 * 1024;
    /// Largest production count.
    pub const MAX_COUNT: u64 = 1_000_000_000;
    /// Most allowed device types.
    pub const MAX_DEVICE_TYPES: u64 = 64;
    /// Longest name.
    pub const MAX_NAME_LEN: usize = 64;
}

/// Manifest keys.
pub mod key {
    #![allow(missing_docs)]
    pub const FORMAT: i64 = 1;
    pub const PACKAGE_ID: i64 = 2;
    pub const OEM_ID: i64 = 3;
    pub const PRODUCT_ID: i64 = 4;
    pub const GUARDIAN: i64 = 5;
    pub const CREATED: i64 = 6;
    pub const EXPIRES: i64 = 7;
    pub const COUNT: i64 = 8;
    pub const SERIAL_START: i64 = 9;
    pub const DEVICE_TYPES: i64 = 10;
    pub const UID_RANGE: i64 = 11;
    pub const TEMPLATE: i64 = 12;
    pub const ISSUING_CA_CERT: i64 = 13;
    pub const ISSUING_CA_KEY: i64 = 14;
    pub const DEVICE_CA_CERT: i64 = 15;
    pub const ROOT_CERT: i64 = 16;
    pub const PRODUCT_KEY: i64 = 17;
    pub const MASTERING_CERT: i64 = 18;
    pub const RELEASE_UPK: i64 = 19;
    pub const RELEASE_ENC: i64 = 20;
    pub const OEM_NAME: i64 = 21;
    pub const PRODUCT_NAME: i64 = 22;
}

/// The outer layer, parsed (still encrypted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encrypted<'a> {
    /// The AES-256-GCM nonce.
    pub iv: &'a [u8; 12],
    /// Ciphertext with its tag.
    pub ciphertext: &'a [u8],
    /// Recipient kid: SHA-256 of the Guardian key-agreement point.
    pub kid: &'a [u8; 32],
    /// The sender's ephemeral key.
    pub ephemeral: EcPoint,
    /// The content key wrapped with A256KW.
    pub wrapped_key: &'a [u8; 40],
}

impl<'a> Encrypted<'a> {
    /// Parses a package file.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        if bytes.len() > limits::MAX_PACKAGE_LEN {
            return Err(FormatError::TooLarge {
                field: "package",
                max: limits::MAX_PACKAGE_LEN as u64,
                found: bytes.len() as u64,
            });
        }
        let mut r = Reader::new(bytes);
        r.tag(crate::cose::TAG_ENCRYPT, "COSE_Encrypt (CBOR tag 96)")?;
        r.array_of(4, "the 4-element COSE_Encrypt array")?;
        if r.bstr("protected header", 8)? != PROTECTED_A256GCM {
            return Err(FormatError::UnsupportedAlgorithm {
                field: "package content (only A256GCM)",
            });
        }
        let mut keys = r.map("unprotected header")?;
        r.required_key(&mut keys, 5, "IV")?;
        let iv = r.bstr_exact::<12>("IV")?;
        r.end_map(keys)?;
        let ciphertext = r.bstr("ciphertext", limits::MAX_PACKAGE_LEN)?;
        r.array_of(1, "exactly one recipient")?;
        r.array_of(3, "a 3-element COSE_recipient")?;
        if r.bstr("recipient protected header", 8)? != PROTECTED_ECDH_ES_A256KW {
            return Err(FormatError::UnsupportedAlgorithm {
                field: "package recipient (only ECDH-ES + A256KW)",
            });
        }
        let mut keys = r.map("recipient unprotected header")?;
        r.required_key(&mut keys, HDR_KID, "recipient kid")?;
        let kid = r.bstr_exact::<32>("recipient kid")?;
        r.required_key(&mut keys, HDR_EPHEMERAL_KEY, "ephemeral key")?;
        let ephemeral = crate::cose::parse_cose_key_pub(&mut r)?;
        r.end_map(keys)?;
        let wrapped_key = r.bstr_exact::<40>("wrapped key")?;
        r.finish()?;
        Ok(Self {
            iv,
            ciphertext,
            kid,
            ephemeral,
            wrapped_key,
        })
    }
}

/// The manifest, parsed. Secrets are borrowed from the decrypted buffer,
/// which the caller must wipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest<'a> {
    /// Unique package ID (replay protection).
    pub package_id: &'a [u8; 16],
    /// OEM.
    pub oem_id: OemId,
    /// Product.
    pub product_id: ProductId,
    /// SHA-256 of the target Guardian's identity certificate.
    pub guardian: &'a [u8; 32],
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Expiry (Unix seconds).
    pub expires: u64,
    /// Devices the Guardian may produce.
    pub count: u64,
    /// First serial number.
    pub serial_start: u64,
    /// Allowed device types (CBOR array of uint; empty: any).
    pub device_types: &'a [u8],
    /// Allowed UID range, inclusive, as equal-length big-endian byte strings.
    pub uid_range: Option<(&'a [u8], &'a [u8])>,
    /// The device certificate template (TOML).
    pub template: &'a str,
    /// The per-package issuing CA certificate (DER).
    pub issuing_ca_cert: &'a [u8],
    /// Its private key (P-256 scalar). Secret.
    pub issuing_ca_key: &'a [u8; 32],
    /// The OEM device CA certificate (DER).
    pub device_ca_cert: &'a [u8],
    /// The OEM root certificate (DER).
    pub root_cert: &'a [u8],
    /// The product key (P-256 scalar). Secret.
    pub product_key: &'a [u8; 32],
    /// The mastering certificate (DER).
    pub mastering_cert: &'a [u8],
    /// The mastered release: `update.upk`.
    pub release_upk: &'a [u8],
    /// The mastered release: `update.enc`.
    pub release_enc: &'a [u8],
    /// OEM name.
    pub oem_name: &'a str,
    /// Product name.
    pub product_name: &'a str,
}

impl<'a> Manifest<'a> {
    /// The allowed device types.
    pub fn device_types(&self) -> impl Iterator<Item = u32> + 'a {
        let mut r = Reader::new(self.device_types);
        let n = r.array("device types").unwrap_or(0);
        (0..n).map_while(move |_| {
            r.uint("device type")
                .ok()
                .and_then(|v| u32::try_from(v).ok())
        })
    }

    /// Parses a manifest.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        let mut m = r.map("the package manifest")?;
        let req = |r: &mut Reader<'a>, m: &mut crate::cbor::MapKeys, k: i64, f: &'static str| {
            r.required_key(m, k, f)
        };
        req(&mut r, &mut m, key::FORMAT, "format")?;
        let format = r.uint("format")?;
        if format != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion { found: format });
        }
        req(&mut r, &mut m, key::PACKAGE_ID, "package ID")?;
        let package_id = r.bstr_exact::<16>("package ID")?;
        req(&mut r, &mut m, key::OEM_ID, "OEM ID")?;
        let oem_id = OemId::from_u64(r.uint("OEM ID")?)?;
        req(&mut r, &mut m, key::PRODUCT_ID, "product ID")?;
        let product_id = ProductId::from_u64(r.uint("product ID")?)?;
        req(&mut r, &mut m, key::GUARDIAN, "Guardian")?;
        let guardian = r.bstr_exact::<32>("Guardian")?;
        req(&mut r, &mut m, key::CREATED, "creation time")?;
        let created = r.uint("creation time")?;
        req(&mut r, &mut m, key::EXPIRES, "expiry")?;
        let expires = r.uint("expiry")?;
        req(&mut r, &mut m, key::COUNT, "count")?;
        let count = r.uint("count")?;
        if count == 0 || count > limits::MAX_COUNT {
            return Err(FormatError::InvalidValue {
                field: "count",
                expected: "1 to 1000000000",
            });
        }
        req(&mut r, &mut m, key::SERIAL_START, "first serial")?;
        let serial_start = r.uint("first serial")?;
        if serial_start.checked_add(count).is_none() {
            return Err(FormatError::InvalidValue {
                field: "serial range",
                expected: "a range below 2^64",
            });
        }
        req(&mut r, &mut m, key::DEVICE_TYPES, "device types")?;
        let start = r.position();
        let n = r.array("device types")?;
        if n > limits::MAX_DEVICE_TYPES {
            return Err(FormatError::TooLarge {
                field: "device types",
                max: limits::MAX_DEVICE_TYPES,
                found: n,
            });
        }
        for _ in 0..n {
            u32::try_from(r.uint("device type")?).map_err(|_| FormatError::InvalidValue {
                field: "device type",
                expected: "a 32-bit number",
            })?;
        }
        let device_types = r.slice_from(start);
        req(&mut r, &mut m, key::UID_RANGE, "UID range")?;
        let uid_range = if r.null_if_next()? {
            None
        } else {
            r.array_of(2, "[low, high]")?;
            let lo = r.bstr("UID range low", 32)?;
            let hi = r.bstr("UID range high", 32)?;
            if lo.len() != hi.len() || lo.is_empty() || lo > hi {
                return Err(FormatError::InvalidValue {
                    field: "UID range",
                    expected: "equal-length low <= high",
                });
            }
            Some((lo, hi))
        };
        req(&mut r, &mut m, key::TEMPLATE, "template")?;
        let template = r.tstr("template", limits::MAX_TEMPLATE_LEN)?;
        req(
            &mut r,
            &mut m,
            key::ISSUING_CA_CERT,
            "issuing CA certificate",
        )?;
        let issuing_ca_cert = r.bstr("issuing CA certificate", limits::MAX_CERT_LEN)?;
        req(&mut r, &mut m, key::ISSUING_CA_KEY, "issuing CA key")?;
        let issuing_ca_key = r.bstr_exact::<32>("issuing CA key")?;
        req(&mut r, &mut m, key::DEVICE_CA_CERT, "device CA certificate")?;
        let device_ca_cert = r.bstr("device CA certificate", limits::MAX_CERT_LEN)?;
        req(&mut r, &mut m, key::ROOT_CERT, "root certificate")?;
        let root_cert = r.bstr("root certificate", limits::MAX_CERT_LEN)?;
        req(&mut r, &mut m, key::PRODUCT_KEY, "product key")?;
        let product_key = r.bstr_exact::<32>("product key")?;
        req(&mut r, &mut m, key::MASTERING_CERT, "mastering certificate")?;
        let mastering_cert = r.bstr("mastering certificate", limits::MAX_CERT_LEN)?;
        req(&mut r, &mut m, key::RELEASE_UPK, "release UPK")?;
        let release_upk = r.bstr("release UPK", crate::upk::limits::MAX_UPK_LEN)?;
        req(&mut r, &mut m, key::RELEASE_ENC, "release image")?;
        let release_enc = r.bstr("release image", limits::MAX_PACKAGE_LEN)?;
        req(&mut r, &mut m, key::OEM_NAME, "OEM name")?;
        let oem_name = r.tstr("OEM name", limits::MAX_NAME_LEN)?;
        req(&mut r, &mut m, key::PRODUCT_NAME, "product name")?;
        let product_name = r.tstr("product name", limits::MAX_NAME_LEN)?;
        r.end_map(m)?;
        r.finish()?;
        Ok(Self {
            package_id,
            oem_id,
            product_id,
            guardian,
            created,
            expires,
            count,
            serial_start,
            device_types,
            uid_range,
            template,
            issuing_ca_cert,
            issuing_ca_key,
            device_ca_cert,
            root_cert,
            product_key,
            mastering_cert,
            release_upk,
            release_enc,
            oem_name,
            product_name,
        })
    }
}

#[cfg(feature = "alloc")]
pub use spec::{encode_encrypted, ManifestSpec};

#[cfg(feature = "alloc")]
mod spec {
    use alloc::string::String;
    use alloc::vec::Vec;

    use super::*;

    /// An owned manifest, for the wrapping tool.
    #[derive(Clone, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub struct ManifestSpec {
        pub package_id: [u8; 16],
        pub oem_id: OemId,
        pub product_id: ProductId,
        pub guardian: [u8; 32],
        pub created: u64,
        pub expires: u64,
        pub count: u64,
        pub serial_start: u64,
        pub device_types: Vec<u32>,
        pub uid_range: Option<(Vec<u8>, Vec<u8>)>,
        pub template: String,
        pub issuing_ca_cert: Vec<u8>,
        pub issuing_ca_key: [u8; 32],
        pub device_ca_cert: Vec<u8>,
        pub root_cert: Vec<u8>,
        pub product_key: [u8; 32],
        pub mastering_cert: Vec<u8>,
        pub release_upk: Vec<u8>,
        pub release_enc: Vec<u8>,
        pub oem_name: String,
        pub product_name: String,
    }

    impl core::fmt::Debug for ManifestSpec {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("ManifestSpec")
                .field("oem_id", &self.oem_id)
                .field("product_id", &self.product_id)
                .field("count", &self.count)
                .finish_non_exhaustive()
        }
    }

    impl Drop for ManifestSpec {
        fn drop(&mut self) {
            use zeroize::Zeroize;
            self.issuing_ca_key.zeroize();
            self.product_key.zeroize();
        }
    }

    impl ManifestSpec {
        /// Deterministic CBOR.
        pub fn encode(&self) -> Vec<u8> {
            crate::cbor::to_vec(|e| {
                e.map(22)?;
                e.i64(key::FORMAT)?.u64(FORMAT_VERSION)?;
                e.i64(key::PACKAGE_ID)?.bytes(&self.package_id)?;
                e.i64(key::OEM_ID)?.u32(self.oem_id.get())?;
                e.i64(key::PRODUCT_ID)?.u32(self.product_id.get())?;
                e.i64(key::GUARDIAN)?.bytes(&self.guardian)?;
                e.i64(key::CREATED)?.u64(self.created)?;
                e.i64(key::EXPIRES)?.u64(self.expires)?;
                e.i64(key::COUNT)?.u64(self.count)?;
                e.i64(key::SERIAL_START)?.u64(self.serial_start)?;
                e.i64(key::DEVICE_TYPES)?
                    .array(self.device_types.len() as u64)?;
                for t in &self.device_types {
                    e.u32(*t)?;
                }
                e.i64(key::UID_RANGE)?;
                match &self.uid_range {
                    Some((lo, hi)) => {
                        e.array(2)?.bytes(lo)?.bytes(hi)?;
                    }
                    None => {
                        e.null()?;
                    }
                }
                e.i64(key::TEMPLATE)?.str(&self.template)?;
                e.i64(key::ISSUING_CA_CERT)?.bytes(&self.issuing_ca_cert)?;
                e.i64(key::ISSUING_CA_KEY)?.bytes(&self.issuing_ca_key)?;
                e.i64(key::DEVICE_CA_CERT)?.bytes(&self.device_ca_cert)?;
                e.i64(key::ROOT_CERT)?.bytes(&self.root_cert)?;
                e.i64(key::PRODUCT_KEY)?.bytes(&self.product_key)?;
                e.i64(key::MASTERING_CERT)?.bytes(&self.mastering_cert)?;
                e.i64(key::RELEASE_UPK)?.bytes(&self.release_upk)?;
                e.i64(key::RELEASE_ENC)?.bytes(&self.release_enc)?;
                e.i64(key::OEM_NAME)?.str(&self.oem_name)?;
                e.i64(key::PRODUCT_NAME)?.str(&self.product_name)?;
                Ok(())
            })
        }
    }

    /// Encodes the outer COSE_Encrypt.
    pub fn encode_encrypted(
        iv: &[u8; 12],
        ciphertext: &[u8],
        kid: &[u8; 32],
        ephemeral: &EcPoint,
        wrapped: &[u8; 40],
    ) -> Vec<u8> {
        crate::cbor::to_vec(|e| {
            e.tag(minicbor::data::Tag::new(crate::cose::TAG_ENCRYPT))?
                .array(4)?;
            e.bytes(&PROTECTED_A256GCM)?.map(1)?.i64(5)?.bytes(iv)?;
            e.bytes(ciphertext)?;
            e.array(1)?.array(3)?.bytes(&PROTECTED_ECDH_ES_A256KW)?;
            e.map(2)?
                .i64(HDR_KID)?
                .bytes(kid)?
                .i64(HDR_EPHEMERAL_KEY)?
                .map(4)?;
            e.i64(1)?
                .i64(2)?
                .i64(-1)?
                .i64(1)?
                .i64(-2)?
                .bytes(&ephemeral.x)?
                .i64(-3)?
                .bytes(&ephemeral.y)?;
            e.bytes(wrapped)?;
            Ok(())
        })
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use alloc::string::ToString;
    use alloc::vec;

    use super::*;

    fn sample() -> ManifestSpec {
        ManifestSpec {
            package_id: [1; 16],
            oem_id: OemId::new(0x1234).unwrap(),
            product_id: ProductId::new(7).unwrap(),
            guardian: [2; 32],
            created: 1_800_000_000,
            expires: 1_900_000_000,
            count: 1000,
            serial_start: 5000,
            device_types: vec![1, 2],
            uid_range: Some((vec![0, 0], vec![0xff, 0xff])),
            template: "format = 1".to_string(),
            issuing_ca_cert: vec![0x30; 40],
            issuing_ca_key: [3; 32],
            device_ca_cert: vec![0x30; 41],
            root_cert: vec![0x30; 42],
            product_key: [4; 32],
            mastering_cert: vec![0x30; 43],
            release_upk: vec![0xd2; 100],
            release_enc: vec![9; 5000],
            oem_name: "Acme".to_string(),
            product_name: "Thermostat".to_string(),
        }
    }

    #[test]
    fn manifest_round_trips_and_truncations_fail() {
        let s = sample();
        let bytes = s.encode();
        let m = Manifest::parse(&bytes).unwrap();
        assert_eq!(m.count, 1000);
        assert_eq!(m.device_types().collect::<vec::Vec<_>>(), vec![1, 2]);
        assert_eq!(m.uid_range, Some((&[0u8, 0][..], &[0xffu8, 0xff][..])));
        assert_eq!(m.product_key, &[4; 32]);
        assert_eq!(m.release_enc.len(), 5000);
        for n in (0..bytes.len()).step_by(97) {
            assert!(Manifest::parse(&bytes[..n]).is_err());
        }
        let mut none = sample();
        none.uid_range = None;
        none.device_types = vec![];
        let encoded = none.encode();
        assert_eq!(Manifest::parse(&encoded).unwrap().uid_range, None);
    }

    #[test]
    fn bad_values_are_refused() {
        let mut s = sample();
        s.count = 0;
        assert!(matches!(
            Manifest::parse(&s.encode()),
            Err(FormatError::InvalidValue { field: "count", .. })
        ));
        let mut s = sample();
        s.uid_range = Some((vec![0xff], vec![0x00]));
        assert!(matches!(
            Manifest::parse(&s.encode()),
            Err(FormatError::InvalidValue {
                field: "UID range",
                ..
            })
        ));
        let mut s = sample();
        s.serial_start = u64::MAX;
        assert!(Manifest::parse(&s.encode()).is_err());
    }

    #[test]
    fn outer_layer_round_trips() {
        let p = EcPoint {
            x: [5; 32],
            y: [6; 32],
        };
        let bytes = encode_encrypted(&[7; 12], &[8; 100], &[9; 32], &p, &[10; 40]);
        let e = Encrypted::parse(&bytes).unwrap();
        assert_eq!(
            (e.iv, e.ciphertext.len(), e.kid, e.ephemeral, e.wrapped_key),
            (&[7; 12], 100, &[9; 32], p, &[10; 40])
        );
        let mut bad = bytes.clone();
        bad.push(0);
        assert!(matches!(
            Encrypted::parse(&bad),
            Err(FormatError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn constants_are_the_cbor_they_claim() {
        let ctx = crate::cbor::to_vec(|e| {
            e.array(4)?.i64(ALG_A256KW)?;
            e.array(3)?.null()?.null()?.null()?;
            e.array(3)?.null()?.null()?.null()?;
            e.array(2)?.u64(256)?.bytes(&PROTECTED_ECDH_ES_A256KW)?;
            Ok(())
        });
        assert_eq!(ctx, KDF_CONTEXT_A256KW);
        let aad = crate::cbor::to_vec(|e| {
            e.array(3)?
                .str("Encrypt")?
                .bytes(&PROTECTED_A256GCM)?
                .bytes(&[])?;
            Ok(())
        });
        assert_eq!(aad, CONTENT_AAD);
        assert_eq!(
            crate::cbor::to_vec(|e| {
                e.map(1)?.i64(1)?.i64(ALG_ECDH_ES_A256KW)?;
                Ok(())
            }),
            PROTECTED_ECDH_ES_A256KW
        );
        assert_eq!(
            crate::cbor::to_vec(|e| {
                e.map(1)?.i64(1)?.i64(ALG_A256GCM)?;
                Ok(())
            }),
            PROTECTED_A256GCM
        );
    }
}
