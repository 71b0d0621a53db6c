//! The Update Key Block (UPK): a COSE_Sign1 by the OEM's mastering key over
//! a CBOR manifest. Map keys are SUIT code points where SUIT has one
//! (draft-ietf-suit-manifest, -firmware-encryption, -update-management) and
//! private-use keys (below -255) otherwise; `docs/formats.md` has the CDDL.
//!
//! ```text
//! manifest = {
//!   1 => 1,              ; suit-manifest-version: UPK format version
//!   2 => uint,           ; suit-manifest-sequence-number: security counter
//!   3 => parameters,     ; suit-common (here: the one component's parameters)
//! }
//! ```
use crate::cbor::Reader;
use crate::cose::{EncryptionInfo, Sign1};
use crate::ids::{OemId, ProductId, SecurityCounter, Sha256, Version};
use crate::stream;
use crate::FormatError;

/// The UPK format version this code reads and writes.
pub const FORMAT_VERSION: u64 = 1;

/// Bounds.
pub mod limits {
    /// Largest UPK file.
    pub const MAX_UPK_LEN: usize = 16 * 1024;
    /// Largest manifest (the COSE_Sign1 payload).
    pub const MAX_MANIFEST_LEN: usize = 12 * 1024;
    /// Largest encryption info.
    pub const MAX_ENCRYPTION_INFO_LEN: usize = 4096;
    /// Most UIDs in the allow-list.
    pub const MAX_UIDS: u64 = 64;
    /// Longest device UID.
    pub const MAX_UID_LEN: usize = 32;
    /// Largest image (plaintext) a UPK may describe: 4 GiB - 1.
    pub const MAX_IMAGE_SIZE: u64 = u32::MAX as u64;
}

/// Manifest map keys.
pub mod key {
    /// suit-manifest-version.
    pub const FORMAT_VERSION: i64 = 1;
    /// suit-manifest-sequence-number.
    pub const SECURITY_COUNTER: i64 = 2;
    /// suit-common.
    pub const PARAMETERS: i64 = 3;
    /// suit-parameter-vendor-identifier.
    pub const OEM_ID: i64 = 1;
    /// suit-parameter-class-identifier.
    pub const PRODUCT_ID: i64 = 2;
    /// suit-parameter-image-digest (of the plaintext).
    pub const IMAGE_DIGEST: i64 = 3;
    /// suit-parameter-image-size (of the plaintext).
    pub const IMAGE_SIZE: i64 = 14;
    /// suit-parameter-encryption-info.
    pub const ENCRYPTION_INFO: i64 = 19;
    /// suit-parameter-device-identifier: the UID allow-list.
    pub const DEVICE_UIDS: i64 = 24;
    /// suit-parameter-version.
    pub const VERSION: i64 = 28;
    /// private: SHA-256 of `update.enc`.
    pub const CIPHERTEXT_DIGEST: i64 = -257;
    /// private: load address of the image.
    pub const LOAD_ADDRESS: i64 = -258;
    /// private: creation time, seconds since the Unix epoch.
    pub const CREATED: i64 = -259;
}

/// SUIT_Digest algorithm id of SHA-256.
pub const DIGEST_SHA256: i64 = -16;

/// The UID allow-list: only these devices may install the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidList<'a> {
    raw: &'a [u8],
    count: u64,
}

impl<'a> UidList<'a> {
    /// Whether `uid` is on the list.
    pub fn contains(&self, uid: &[u8]) -> bool {
        self.iter().any(|u| u == uid)
    }
    /// The UIDs, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader::new(self.raw);
        (0..self.count).map_while(move |_| r.bstr("UID", limits::MAX_UID_LEN).ok())
    }
    /// How many UIDs.
    pub fn len(&self) -> usize {
        self.count as usize
    }
    /// Never true for a parsed list.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A parsed manifest. Only [`Manifest::parse`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest<'a> {
    /// Anti-rollback counter.
    pub security_counter: SecurityCounter,
    /// The OEM that mastered the image.
    pub oem_id: OemId,
    /// The product it is for.
    pub product_id: ProductId,
    /// The firmware version.
    pub version: Version,
    /// SHA-256 of the plaintext image.
    pub image_digest: Sha256,
    /// Size of the plaintext image in bytes (1..=4 GiB-1).
    pub image_size: u64,
    /// SHA-256 of `update.enc`.
    pub ciphertext_digest: Sha256,
    /// Where the image goes in the device's address space.
    pub load_address: u64,
    /// When it was mastered (Unix seconds).
    pub created: u64,
    /// Who can recover the content key.
    pub encryption: EncryptionInfo<'a>,
    /// If present, only these device UIDs may install it.
    pub device_uids: Option<UidList<'a>>,
}

fn digest(r: &mut Reader<'_>, field: &'static str) -> Result<Sha256, FormatError> {
    r.array_of(2, "a SUIT_Digest [alg, bytes]")?;
    if r.int("digest algorithm")? != DIGEST_SHA256 {
        return Err(FormatError::UnsupportedAlgorithm { field });
    }
    Ok(Sha256(*r.bstr_exact::<32>(field)?))
}

fn version(r: &mut Reader<'_>) -> Result<Version, FormatError> {
    r.array_of(3, "a version [major, minor, patch]")?;
    let mut part = || -> Result<u16, FormatError> {
        u16::try_from(r.uint("a version number")?).map_err(|_| FormatError::InvalidValue {
            field: "version",
            expected: "parts from 0 to 65535",
        })
    };
    Ok(Version {
        major: part()?,
        minor: part()?,
        patch: part()?,
    })
}

impl<'a> Manifest<'a> {
    /// Parses a manifest (the payload of the UPK's COSE_Sign1).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        if bytes.len() > limits::MAX_MANIFEST_LEN {
            return Err(FormatError::TooLarge {
                field: "manifest",
                max: limits::MAX_MANIFEST_LEN as u64,
                found: bytes.len() as u64,
            });
        }
        let mut r = Reader::new(bytes);
        let mut top = r.map("the manifest map")?;
        r.required_key(&mut top, key::FORMAT_VERSION, "format version")?;
        let format = r.uint("the format version")?;
        if format != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion { found: format });
        }
        r.required_key(&mut top, key::SECURITY_COUNTER, "security counter")?;
        let security_counter = SecurityCounter(r.uint("the security counter")?);
        r.required_key(&mut top, key::PARAMETERS, "parameters")?;
        let mut p = r.map("the parameters map")?;
        r.required_key(&mut p, key::OEM_ID, "OEM ID")?;
        let oem_id = OemId::from_u64(r.uint("the OEM ID")?)?;
        r.required_key(&mut p, key::PRODUCT_ID, "product ID")?;
        let product_id = ProductId::from_u64(r.uint("the product ID")?)?;
        r.required_key(&mut p, key::IMAGE_DIGEST, "image digest")?;
        let image_digest = digest(&mut r, "image digest")?;
        r.required_key(&mut p, key::IMAGE_SIZE, "image size")?;
        let image_size = r.uint("the image size")?;
        if image_size == 0 || image_size > limits::MAX_IMAGE_SIZE {
            return Err(FormatError::InvalidValue {
                field: "image size",
                expected: "1 to 4294967295 bytes",
            });
        }
        r.required_key(&mut p, key::ENCRYPTION_INFO, "encryption info")?;
        let encryption =
            EncryptionInfo::parse(r.bstr("encryption info", limits::MAX_ENCRYPTION_INFO_LEN)?)?;
        let device_uids = if r.key(&mut p, key::DEVICE_UIDS)? {
            let count = r.array("the UID allow-list")?;
            if count == 0 {
                return Err(FormatError::InvalidValue {
                    field: "UID allow-list",
                    expected: "at least one UID",
                });
            }
            if count > limits::MAX_UIDS {
                return Err(FormatError::TooLarge {
                    field: "UID allow-list",
                    max: limits::MAX_UIDS,
                    found: count,
                });
            }
            let start = r.position();
            for _ in 0..count {
                if r.bstr("UID", limits::MAX_UID_LEN)?.is_empty() {
                    return Err(FormatError::InvalidValue {
                        field: "UID",
                        expected: "1 to 32 bytes",
                    });
                }
            }
            Some(UidList {
                raw: r.slice_from(start),
                count,
            })
        } else {
            None
        };
        r.required_key(&mut p, key::VERSION, "version")?;
        let version = version(&mut r)?;
        r.required_key(&mut p, key::CIPHERTEXT_DIGEST, "ciphertext digest")?;
        let ciphertext_digest = digest(&mut r, "ciphertext digest")?;
        r.required_key(&mut p, key::LOAD_ADDRESS, "load address")?;
        let load_address = r.uint("the load address")?;
        if load_address.checked_add(image_size).is_none() {
            return Err(FormatError::InvalidValue {
                field: "load address",
                expected: "an image that ends below 2^64",
            });
        }
        r.required_key(&mut p, key::CREATED, "creation time")?;
        let created = r.uint("the creation time")?;
        r.end_map(p)?;
        r.end_map(top)?;
        r.finish()?;
        Ok(Self {
            security_counter,
            oem_id,
            product_id,
            version,
            image_digest,
            image_size,
            ciphertext_digest,
            load_address,
            created,
            encryption,
            device_uids,
        })
    }

    /// Size of `update.enc` for this manifest.
    pub fn ciphertext_size(&self) -> u64 {
        // image_size is bounded to < 2^32, so this cannot overflow.
        stream::ciphertext_size(self.image_size).unwrap_or(u64::MAX)
    }
}

/// A parsed UPK: the COSE_Sign1 and its manifest. Its signature is NOT yet
/// verified; only the crypto layer on each side (host or SBM) can do that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upk<'a> {
    /// The COSE_Sign1 envelope.
    pub sign1: Sign1<'a>,
    /// The manifest it carries.
    pub manifest: Manifest<'a>,
}

impl<'a> Upk<'a> {
    /// Parses `update.upk`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        if bytes.len() > limits::MAX_UPK_LEN {
            return Err(FormatError::TooLarge {
                field: "UPK",
                max: limits::MAX_UPK_LEN as u64,
                found: bytes.len() as u64,
            });
        }
        let sign1 = Sign1::parse(bytes, limits::MAX_MANIFEST_LEN)?;
        let manifest = Manifest::parse(sign1.payload)?;
        Ok(Self { sign1, manifest })
    }
}

#[cfg(feature = "alloc")]
pub use spec::ManifestSpec;

#[cfg(feature = "alloc")]
mod spec {
    use alloc::vec::Vec;

    use super::*;
    use crate::cose::{encode_encryption_info, RecipientSpec};

    /// An owned manifest, for encoding (host side).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ManifestSpec {
        /// See [`Manifest::security_counter`].
        pub security_counter: SecurityCounter,
        /// See [`Manifest::oem_id`].
        pub oem_id: OemId,
        /// See [`Manifest::product_id`].
        pub product_id: ProductId,
        /// See [`Manifest::version`].
        pub version: Version,
        /// See [`Manifest::image_digest`].
        pub image_digest: Sha256,
        /// See [`Manifest::image_size`].
        pub image_size: u64,
        /// See [`Manifest::ciphertext_digest`].
        pub ciphertext_digest: Sha256,
        /// See [`Manifest::load_address`].
        pub load_address: u64,
        /// See [`Manifest::created`].
        pub created: u64,
        /// The recipients of the content key.
        pub recipients: Vec<RecipientSpec>,
        /// See [`Manifest::device_uids`].
        pub device_uids: Option<Vec<Vec<u8>>>,
    }

    impl From<&Manifest<'_>> for ManifestSpec {
        fn from(m: &Manifest<'_>) -> Self {
            Self {
                security_counter: m.security_counter,
                oem_id: m.oem_id,
                product_id: m.product_id,
                version: m.version,
                image_digest: m.image_digest,
                image_size: m.image_size,
                ciphertext_digest: m.ciphertext_digest,
                load_address: m.load_address,
                created: m.created,
                recipients: m.encryption.recipients().map(RecipientSpec::from).collect(),
                device_uids: m
                    .device_uids
                    .map(|l| l.iter().map(<[u8]>::to_vec).collect()),
            }
        }
    }

    impl ManifestSpec {
        /// Encodes the manifest in deterministic CBOR. The result parses
        /// with [`Manifest::parse`] exactly when the values are in range
        /// (the encoder does not check them; the mastering code does).
        pub fn encode(&self) -> Vec<u8> {
            let info = encode_encryption_info(&self.recipients);
            crate::cbor::to_vec(|e| {
                e.map(3)?;
                e.i64(key::FORMAT_VERSION)?.u64(FORMAT_VERSION)?;
                e.i64(key::SECURITY_COUNTER)?.u64(self.security_counter.0)?;
                e.i64(key::PARAMETERS)?
                    .map(if self.device_uids.is_some() { 10 } else { 9 })?;
                e.i64(key::OEM_ID)?.u32(self.oem_id.get())?;
                e.i64(key::PRODUCT_ID)?.u32(self.product_id.get())?;
                e.i64(key::IMAGE_DIGEST)?
                    .array(2)?
                    .i64(DIGEST_SHA256)?
                    .bytes(&self.image_digest.0)?;
                e.i64(key::IMAGE_SIZE)?.u64(self.image_size)?;
                e.i64(key::ENCRYPTION_INFO)?.bytes(&info)?;
                if let Some(uids) = &self.device_uids {
                    e.i64(key::DEVICE_UIDS)?.array(uids.len() as u64)?;
                    for uid in uids {
                        e.bytes(uid)?;
                    }
                }
                e.i64(key::VERSION)?.array(3)?;
                e.u16(self.version.major)?
                    .u16(self.version.minor)?
                    .u16(self.version.patch)?;
                e.i64(key::CIPHERTEXT_DIGEST)?
                    .array(2)?
                    .i64(DIGEST_SHA256)?
                    .bytes(&self.ciphertext_digest.0)?;
                e.i64(key::LOAD_ADDRESS)?.u64(self.load_address)?;
                e.i64(key::CREATED)?.u64(self.created)?;
                Ok(())
            })
        }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;
    use crate::cose::{encode_sign1, EcPoint, RecipientSpec};

    fn sample(uids: Option<Vec<Vec<u8>>>) -> ManifestSpec {
        ManifestSpec {
            security_counter: SecurityCounter(0x0001_0002_0003),
            oem_id: OemId::new(0x1234).unwrap(),
            product_id: ProductId::new(7).unwrap(),
            version: Version {
                major: 1,
                minor: 2,
                patch: 3,
            },
            image_digest: Sha256([0xaa; 32]),
            image_size: 10_000,
            ciphertext_digest: Sha256([0xbb; 32]),
            load_address: 0x0800_0000,
            created: 1_700_000_000,
            recipients: vec![
                RecipientSpec {
                    kid: [1; 32],
                    ephemeral: EcPoint {
                        x: [2; 32],
                        y: [3; 32],
                    },
                    wrapped_key: [4; 24],
                },
                RecipientSpec {
                    kid: [5; 32],
                    ephemeral: EcPoint {
                        x: [6; 32],
                        y: [7; 32],
                    },
                    wrapped_key: [8; 24],
                },
            ],
            device_uids: uids,
        }
    }

    #[test]
    fn manifest_round_trips_byte_exactly() {
        for uids in [None, Some(vec![vec![0x11; 16], vec![0x22; 8]])] {
            let spec = sample(uids);
            let bytes = spec.encode();
            let parsed = Manifest::parse(&bytes).unwrap();
            assert_eq!(ManifestSpec::from(&parsed), spec);
            assert_eq!(ManifestSpec::from(&parsed).encode(), bytes);
            assert_eq!(parsed.ciphertext_size(), 10_000 + 3 * 16);
        }
    }

    #[test]
    fn uid_list_lookup() {
        let spec = sample(Some(vec![vec![0x11; 16], vec![0x22; 8]]));
        let bytes = spec.encode();
        let m = Manifest::parse(&bytes).unwrap();
        let uids = m.device_uids.unwrap();
        assert!(uids.contains(&[0x22; 8]));
        assert!(!uids.contains(&[0x22; 9]));
        assert_eq!(uids.len(), 2);
        assert_eq!(
            m.encryption.recipient_for(&[5; 32]).unwrap().wrapped_key,
            &[8; 24]
        );
        assert!(m.encryption.recipient_for(&[9; 32]).is_none());
    }

    #[test]
    fn every_truncation_and_every_byte_flip_is_handled() {
        let bytes = sample(Some(vec![vec![0x11; 16]])).encode();
        for n in 0..bytes.len() {
            assert!(
                Manifest::parse(&bytes[..n]).is_err(),
                "truncation to {n} accepted"
            );
        }
        // A flipped bit either breaks the parse or changes a value; it never panics.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            if let Ok(m) = Manifest::parse(&b) {
                assert_ne!(
                    ManifestSpec::from(&m),
                    sample(Some(vec![vec![0x11; 16]])),
                    "flip at {i}: {:02x}",
                    bytes[i]
                );
            }
        }
    }

    #[test]
    fn rejects_wrong_version_zero_ids_and_trailing_bytes() {
        let mut spec = sample(None);
        let good = spec.encode();
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            Manifest::parse(&trailing).map(|_| ()),
            Err(FormatError::TrailingBytes { at: good.len() })
        );
        // Format version 2.
        let mut v2 = good.clone();
        assert_eq!(&v2[..3], &[0xa3, 0x01, 0x01]);
        v2[2] = 0x02;
        assert_eq!(
            Manifest::parse(&v2),
            Err(FormatError::UnsupportedVersion { found: 2 })
        );
        spec.image_size = 0;
        assert!(matches!(
            Manifest::parse(&spec.encode()),
            Err(FormatError::InvalidValue {
                field: "image size",
                ..
            })
        ));
    }

    #[test]
    fn upk_parse_bounds_and_envelope() {
        let payload = sample(None).encode();
        let upk = encode_sign1(Some(&[0x30, 0x03, 0x02, 0x01, 0x01]), &payload, &[9; 64]);
        let parsed = Upk::parse(&upk).unwrap();
        assert_eq!(parsed.sign1.payload, &payload[..]);
        assert_eq!(parsed.sign1.signature, &[9; 64]);
        assert_eq!(parsed.manifest.version.to_string(), "1.2.3");
        let big = vec![0u8; limits::MAX_UPK_LEN + 1];
        assert!(matches!(
            Upk::parse(&big),
            Err(FormatError::TooLarge { field: "UPK", .. })
        ));
        // Wrong tag.
        let mut wrong = upk.clone();
        wrong[0] = 0xd3;
        assert!(matches!(
            Upk::parse(&wrong),
            Err(FormatError::Malformed { at: 0, .. })
        ));
    }
}
