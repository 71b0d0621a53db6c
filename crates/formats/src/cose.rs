//! The COSE structures (RFC 9052, algorithms from RFC 9053) that the UPK
//! uses, each with exactly one allowed shape:
//!
//! * `COSE_Sign1` (tag 18) signed with ES256 (ECDSA P-256, SHA-256), the
//!   mastering certificate in the unprotected `x5chain` header (RFC 9360).
//! * `COSE_Encrypt` (tag 96) with a detached (nil) ciphertext, used as SUIT
//!   encryption info: the content layer names the STREAM cipher of
//!   [`crate::stream`], each recipient is ECDH-ES + A128KW (RFC 9053 §6.4)
//!   with an ephemeral P-256 key and a `kid`.
use crate::cbor::Reader;
use crate::FormatError;

/// COSE header label `alg`.
pub const HDR_ALG: i64 = 1;
/// COSE header label `kid`.
pub const HDR_KID: i64 = 4;
/// COSE header label `x5chain` (RFC 9360).
pub const HDR_X5CHAIN: i64 = 33;
/// COSE header label `ephemeral key` (RFC 9053 §6.4.1).
pub const HDR_EPHEMERAL_KEY: i64 = -1;

/// ES256: ECDSA with SHA-256 (RFC 9053 §2.1).
pub const ALG_ES256: i64 = -7;
/// ECDH-ES + A128KW (RFC 9053 §6.4).
pub const ALG_ECDH_ES_A128KW: i64 = -29;
/// A128KW, the key-wrap algorithm named in the KDF context (RFC 9053 §5.2).
pub const ALG_A128KW: i64 = -3;
/// trustchain's content algorithm: AES-128-GCM in STREAM chunks of 4 KiB
/// (private-use value, below -65536, per the COSE Algorithms registry).
pub const ALG_A128GCM_STREAM4K: i64 = -70001;

/// CBOR tag of COSE_Sign1.
pub const TAG_SIGN1: u64 = 18;
/// CBOR tag of COSE_Encrypt.
pub const TAG_ENCRYPT: u64 = 96;

/// The only protected header of the UPK's COSE_Sign1: `{1: -7}`.
pub const PROTECTED_ES256: [u8; 3] = [0xa1, 0x01, 0x26];
/// The only protected header of a recipient: `{1: -29}`.
pub const PROTECTED_ECDH_ES_A128KW: [u8; 4] = [0xa1, 0x01, 0x38, 0x1c];
/// The only protected header of the content layer: `{1: -70001}`.
pub const PROTECTED_CONTENT: [u8; 7] = [0xa1, 0x01, 0x3a, 0x00, 0x01, 0x11, 0x70];

/// The COSE_KDF_Context (RFC 9053 §5.2) of every ECDH-ES + A128KW recipient:
/// `[-3, [nil, nil, nil], [nil, nil, nil], [128, h'A101381C']]`.
pub const KDF_CONTEXT_A128KW: [u8; 18] = [
    0x84, 0x22, 0x83, 0xf6, 0xf6, 0xf6, 0x83, 0xf6, 0xf6, 0xf6, 0x82, 0x18, 0x80, 0x44, 0xa1, 0x01,
    0x38, 0x1c,
];

/// The COSE_KDF_Context used to deliver a product key to a device's
/// key-agreement key (ECDH-ES + A128KW, 32-byte key): as
/// [`KDF_CONTEXT_A128KW`] with `SuppPubInfo.other = 'trustchain product key'`,
/// so that a key wrapped for one purpose never opens as the other.
pub const KDF_CONTEXT_PRODUCT_KEY: [u8; 41] = [
    0x84, 0x22, 0x83, 0xf6, 0xf6, 0xf6, 0x83, 0xf6, 0xf6, 0xf6, 0x83, 0x18, 0x80, 0x44, 0xa1, 0x01,
    0x38, 0x1c, 0x56, b't', b'r', b'u', b's', b't', b'c', b'h', b'a', b'i', b'n', b' ', b'p', b'r',
    b'o', b'd', b'u', b'c', b't', b' ', b'k', b'e', b'y',
];

/// The AAD of every chunk of the encrypted image: the COSE Enc_structure
/// (RFC 9052 §5.3) `["Encrypt", h'A1013A00011170', h'']`.
pub const CONTENT_AAD: [u8; 18] = [
    0x83, 0x67, b'E', b'n', b'c', b'r', b'y', b'p', b't', 0x47, 0xa1, 0x01, 0x3a, 0x00, 0x01, 0x11,
    0x70, 0x40,
];

/// Bounds.
pub mod limits {
    /// Largest DER certificate carried in `x5chain`.
    pub const MAX_CERT_LEN: usize = 2048;
    /// Most recipients in one encryption info.
    pub const MAX_RECIPIENTS: u64 = 16;
    /// Length of a recipient `kid`: SHA-256 of the recipient's SEC1 point.
    pub const KID_LEN: usize = 32;
    /// Length of an AES-KW-wrapped 128-bit content key.
    pub const WRAPPED_KEY_LEN: usize = 24;
}

/// Emits the COSE Sig_structure (RFC 9052 §4.4) for a COSE_Sign1 with empty
/// external AAD, piece by piece, so a device can hash it without a buffer.
pub fn sig_structure(protected: &[u8], payload: &[u8], mut sink: impl FnMut(&[u8])) {
    // ["Signature1", protected, h'', payload]
    sink(&[0x84, 0x6a]);
    sink(b"Signature1");
    let mut head = [0u8; 9];
    sink(bstr_head(protected.len() as u64, &mut head));
    sink(protected);
    sink(&[0x40]);
    sink(bstr_head(payload.len() as u64, &mut head));
    sink(payload);
}

/// The shortest CBOR head of a byte string of `len` bytes.
fn bstr_head(len: u64, buf: &mut [u8; 9]) -> &[u8] {
    let n = if len < 24 {
        buf[0] = 0x40 | len as u8;
        1
    } else if len <= 0xff {
        buf[0] = 0x58;
        buf[1] = len as u8;
        2
    } else if len <= 0xffff {
        buf[0] = 0x59;
        buf[1..3].copy_from_slice(&(len as u16).to_be_bytes());
        3
    } else if len <= 0xffff_ffff {
        buf[0] = 0x5a;
        buf[1..5].copy_from_slice(&(len as u32).to_be_bytes());
        5
    } else {
        buf[0] = 0x5b;
        buf[1..9].copy_from_slice(&len.to_be_bytes());
        9
    };
    &buf[..n]
}

/// A parsed COSE_Sign1 with ES256. Only [`Sign1::parse`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sign1<'a> {
    /// The protected header bytes (always [`PROTECTED_ES256`]).
    pub protected: &'a [u8],
    /// The signer's certificate (DER), if carried.
    pub x5chain: Option<&'a [u8]>,
    /// The signed payload.
    pub payload: &'a [u8],
    /// The signature `r || s`.
    pub signature: &'a [u8; 64],
}

impl<'a> Sign1<'a> {
    /// Parses a tagged COSE_Sign1; `max_payload` bounds the payload.
    pub fn parse(bytes: &'a [u8], max_payload: usize) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        r.tag(TAG_SIGN1, "COSE_Sign1 (CBOR tag 18)")?;
        r.array_of(4, "the 4-element COSE_Sign1 array")?;
        let protected = r.bstr("protected header", PROTECTED_ES256.len())?;
        if protected != PROTECTED_ES256 {
            return Err(FormatError::UnsupportedAlgorithm {
                field: "COSE_Sign1 protected header (only ES256)",
            });
        }
        let mut keys = r.map("the unprotected header map")?;
        let x5chain = if r.key(&mut keys, HDR_X5CHAIN)? {
            Some(r.bstr("x5chain certificate", limits::MAX_CERT_LEN)?)
        } else {
            None
        };
        r.end_map(keys)?;
        let payload = r.bstr("payload", max_payload)?;
        let signature = r.bstr_exact::<64>("signature")?;
        r.finish()?;
        Ok(Self {
            protected,
            x5chain,
            payload,
            signature,
        })
    }

    /// The Sig_structure this signature covers (host side).
    #[cfg(feature = "alloc")]
    pub fn to_be_signed(&self) -> alloc::vec::Vec<u8> {
        let mut v = alloc::vec::Vec::new();
        sig_structure(self.protected, self.payload, |b| v.extend_from_slice(b));
        v
    }
}

/// Encodes a tagged COSE_Sign1 with ES256.
#[cfg(feature = "alloc")]
pub fn encode_sign1(
    x5chain: Option<&[u8]>,
    payload: &[u8],
    signature: &[u8; 64],
) -> alloc::vec::Vec<u8> {
    crate::cbor::to_vec(|e| {
        e.tag(minicbor::data::Tag::new(TAG_SIGN1))?
            .array(4)?
            .bytes(&PROTECTED_ES256)?;
        match x5chain {
            Some(cert) => {
                e.map(1)?.i64(HDR_X5CHAIN)?.bytes(cert)?;
            }
            None => {
                e.map(0)?;
            }
        }
        e.bytes(payload)?.bytes(signature)?;
        Ok(())
    })
}

/// A P-256 public point (affine coordinates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcPoint {
    /// x coordinate, big-endian.
    pub x: [u8; 32],
    /// y coordinate, big-endian.
    pub y: [u8; 32],
}

impl EcPoint {
    /// The SEC1 uncompressed encoding `04 || x || y`.
    pub fn to_sec1(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[0] = 0x04;
        out[1..33].copy_from_slice(&self.x);
        out[33..].copy_from_slice(&self.y);
        out
    }

    /// From the SEC1 uncompressed encoding (whether the point is on the curve
    /// is checked by the crypto library that uses it).
    pub fn from_sec1(sec1: &[u8]) -> Option<Self> {
        if sec1.len() != 65 || sec1[0] != 0x04 {
            return None;
        }
        let mut p = EcPoint {
            x: [0; 32],
            y: [0; 32],
        };
        p.x.copy_from_slice(&sec1[1..33]);
        p.y.copy_from_slice(&sec1[33..]);
        Some(p)
    }
}

/// One ECDH-ES + A128KW recipient of the content key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient<'a> {
    /// SHA-256 of the recipient's SEC1 public point: which key can open it.
    pub kid: &'a [u8; limits::KID_LEN],
    /// The sender's ephemeral public key.
    pub ephemeral: EcPoint,
    /// The content key wrapped with AES-KW (RFC 3394) under the derived KEK.
    pub wrapped_key: &'a [u8; limits::WRAPPED_KEY_LEN],
}

fn parse_recipient<'a>(r: &mut Reader<'a>) -> Result<Recipient<'a>, FormatError> {
    r.array_of(3, "a 3-element COSE_recipient array")?;
    let protected = r.bstr("recipient protected header", PROTECTED_ECDH_ES_A128KW.len())?;
    if protected != PROTECTED_ECDH_ES_A128KW {
        return Err(FormatError::UnsupportedAlgorithm {
            field: "recipient (only ECDH-ES + A128KW)",
        });
    }
    let mut keys = r.map("recipient unprotected header")?;
    r.required_key(&mut keys, HDR_KID, "recipient kid")?;
    let kid = r.bstr_exact::<{ limits::KID_LEN }>("recipient kid")?;
    r.required_key(&mut keys, HDR_EPHEMERAL_KEY, "recipient ephemeral key")?;
    let ephemeral = parse_cose_key(r)?;
    r.end_map(keys)?;
    let wrapped_key = r.bstr_exact::<{ limits::WRAPPED_KEY_LEN }>("wrapped content key")?;
    Ok(Recipient {
        kid,
        ephemeral,
        wrapped_key,
    })
}

/// COSE_Key `{1: 2 (EC2), -1: 1 (P-256), -2: x, -3: y}` (RFC 9053 §7.1.1).
pub(crate) fn parse_cose_key_pub(r: &mut Reader<'_>) -> Result<EcPoint, FormatError> {
    parse_cose_key(r)
}

fn parse_cose_key(r: &mut Reader<'_>) -> Result<EcPoint, FormatError> {
    let mut keys = r.map("COSE_Key map")?;
    r.required_key(&mut keys, 1, "COSE_Key kty")?;
    if r.int("kty")? != 2 {
        return Err(FormatError::UnsupportedAlgorithm {
            field: "COSE_Key kty (only EC2)",
        });
    }
    r.required_key(&mut keys, -1, "COSE_Key crv")?;
    if r.int("crv")? != 1 {
        return Err(FormatError::UnsupportedAlgorithm {
            field: "COSE_Key crv (only P-256)",
        });
    }
    r.required_key(&mut keys, -2, "COSE_Key x")?;
    let x = *r.bstr_exact::<32>("COSE_Key x")?;
    r.required_key(&mut keys, -3, "COSE_Key y")?;
    let y = *r.bstr_exact::<32>("COSE_Key y")?;
    r.end_map(keys)?;
    Ok(EcPoint { x, y })
}

/// SUIT encryption info: a tagged COSE_Encrypt with nil ciphertext. Only
/// [`EncryptionInfo::parse`] makes one, so its recipients are all valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptionInfo<'a> {
    recipients: &'a [u8],
    count: u64,
}

impl<'a> EncryptionInfo<'a> {
    /// Parses the encryption info.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        r.tag(TAG_ENCRYPT, "COSE_Encrypt (CBOR tag 96)")?;
        r.array_of(4, "the 4-element COSE_Encrypt array")?;
        let protected = r.bstr("content protected header", PROTECTED_CONTENT.len())?;
        if protected != PROTECTED_CONTENT {
            return Err(FormatError::UnsupportedAlgorithm {
                field: "content encryption (only A128GCM-STREAM4K)",
            });
        }
        let keys = r.map("content unprotected header")?;
        r.end_map(keys)?;
        r.null("nil (detached) ciphertext")?;
        let count = r.array("the recipients array")?;
        if count == 0 {
            return Err(FormatError::InvalidValue {
                field: "recipients",
                expected: "at least one recipient",
            });
        }
        if count > limits::MAX_RECIPIENTS {
            return Err(FormatError::TooLarge {
                field: "recipients",
                max: limits::MAX_RECIPIENTS,
                found: count,
            });
        }
        let start = r.position();
        for _ in 0..count {
            parse_recipient(&mut r)?;
        }
        let recipients = r.slice_from(start);
        r.finish()?;
        Ok(Self { recipients, count })
    }

    /// How many recipients.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Never true: a parsed encryption info has at least one recipient.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The recipients, in order.
    pub fn recipients(&self) -> Recipients<'a> {
        Recipients {
            r: Reader::new(self.recipients),
            left: self.count,
        }
    }

    /// The recipient whose `kid` is `kid`, if any.
    pub fn recipient_for(&self, kid: &[u8; limits::KID_LEN]) -> Option<Recipient<'a>> {
        self.recipients().find(|r| r.kid == kid)
    }
}

/// Iterator over the recipients of a parsed [`EncryptionInfo`].
pub struct Recipients<'a> {
    r: Reader<'a>,
    left: u64,
}

impl<'a> Iterator for Recipients<'a> {
    type Item = Recipient<'a>;
    fn next(&mut self) -> Option<Recipient<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated by `EncryptionInfo::parse`, so this cannot fail.
        parse_recipient(&mut self.r).ok()
    }
}

/// An owned recipient, for encoding.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientSpec {
    /// See [`Recipient::kid`].
    pub kid: [u8; limits::KID_LEN],
    /// See [`Recipient::ephemeral`].
    pub ephemeral: EcPoint,
    /// See [`Recipient::wrapped_key`].
    pub wrapped_key: [u8; limits::WRAPPED_KEY_LEN],
}

#[cfg(feature = "alloc")]
impl From<Recipient<'_>> for RecipientSpec {
    fn from(r: Recipient<'_>) -> Self {
        Self {
            kid: *r.kid,
            ephemeral: r.ephemeral,
            wrapped_key: *r.wrapped_key,
        }
    }
}

/// Encodes the encryption info for `recipients`.
#[cfg(feature = "alloc")]
pub fn encode_encryption_info(recipients: &[RecipientSpec]) -> alloc::vec::Vec<u8> {
    crate::cbor::to_vec(|e| {
        e.tag(minicbor::data::Tag::new(TAG_ENCRYPT))?.array(4)?;
        e.bytes(&PROTECTED_CONTENT)?.map(0)?.null()?;
        e.array(recipients.len() as u64)?;
        for rc in recipients {
            e.array(3)?.bytes(&PROTECTED_ECDH_ES_A128KW)?;
            e.map(2)?.i64(HDR_KID)?.bytes(&rc.kid)?;
            e.i64(HDR_EPHEMERAL_KEY)?.map(4)?;
            e.i64(1)?.i64(2)?.i64(-1)?.i64(1)?;
            e.i64(-2)?
                .bytes(&rc.ephemeral.x)?
                .i64(-3)?
                .bytes(&rc.ephemeral.y)?;
            e.bytes(&rc.wrapped_key)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_with_minicbor(
        f: impl FnOnce(&mut minicbor::Encoder<&mut &mut [u8]>),
    ) -> ([u8; 64], usize) {
        let mut buf = [0u8; 64];
        let len = {
            let mut slice: &mut [u8] = &mut buf;
            let total = slice.len();
            let mut e = minicbor::Encoder::new(&mut slice);
            f(&mut e);
            total - e.into_writer().len()
        };
        (buf, len)
    }

    #[test]
    fn constants_are_the_cbor_they_claim() {
        let (b, n) = encode_with_minicbor(|e| {
            e.map(1)
                .unwrap()
                .i64(HDR_ALG)
                .unwrap()
                .i64(ALG_ES256)
                .unwrap();
        });
        assert_eq!(&b[..n], PROTECTED_ES256);
        let (b, n) = encode_with_minicbor(|e| {
            e.map(1)
                .unwrap()
                .i64(HDR_ALG)
                .unwrap()
                .i64(ALG_ECDH_ES_A128KW)
                .unwrap();
        });
        assert_eq!(&b[..n], PROTECTED_ECDH_ES_A128KW);
        let (b, n) = encode_with_minicbor(|e| {
            e.map(1)
                .unwrap()
                .i64(HDR_ALG)
                .unwrap()
                .i64(ALG_A128GCM_STREAM4K)
                .unwrap();
        });
        assert_eq!(&b[..n], PROTECTED_CONTENT);
        let (b, n) = encode_with_minicbor(|e| {
            e.array(4).unwrap().i64(ALG_A128KW).unwrap();
            e.array(3)
                .unwrap()
                .null()
                .unwrap()
                .null()
                .unwrap()
                .null()
                .unwrap();
            e.array(3)
                .unwrap()
                .null()
                .unwrap()
                .null()
                .unwrap()
                .null()
                .unwrap();
            e.array(2)
                .unwrap()
                .u64(128)
                .unwrap()
                .bytes(&PROTECTED_ECDH_ES_A128KW)
                .unwrap();
        });
        assert_eq!(&b[..n], KDF_CONTEXT_A128KW);
        let (b, n) = encode_with_minicbor(|e| {
            e.array(4).unwrap().i64(ALG_A128KW).unwrap();
            e.array(3)
                .unwrap()
                .null()
                .unwrap()
                .null()
                .unwrap()
                .null()
                .unwrap();
            e.array(3)
                .unwrap()
                .null()
                .unwrap()
                .null()
                .unwrap()
                .null()
                .unwrap();
            e.array(3)
                .unwrap()
                .u64(128)
                .unwrap()
                .bytes(&PROTECTED_ECDH_ES_A128KW)
                .unwrap();
            e.bytes(b"trustchain product key").unwrap();
        });
        assert_eq!(&b[..n], KDF_CONTEXT_PRODUCT_KEY);
        let (b, n) = encode_with_minicbor(|e| {
            e.array(3)
                .unwrap()
                .str("Encrypt")
                .unwrap()
                .bytes(&PROTECTED_CONTENT)
                .unwrap()
                .bytes(&[])
                .unwrap();
        });
        assert_eq!(&b[..n], CONTENT_AAD);
    }

    #[test]
    fn sig_structure_matches_minicbor() {
        let payload = [7u8; 300];
        let mut got = [0u8; 400];
        let mut n = 0;
        sig_structure(&PROTECTED_ES256, &payload, |b| {
            got[n..n + b.len()].copy_from_slice(b);
            n += b.len();
        });
        let mut want = [0u8; 400];
        let len = {
            let mut slice: &mut [u8] = &mut want;
            let total = slice.len();
            let mut e = minicbor::Encoder::new(&mut slice);
            e.array(4)
                .unwrap()
                .str("Signature1")
                .unwrap()
                .bytes(&PROTECTED_ES256)
                .unwrap();
            e.bytes(&[]).unwrap().bytes(&payload).unwrap();
            total - e.into_writer().len()
        };
        assert_eq!(&got[..n], &want[..len]);
    }

    #[test]
    fn bstr_heads_are_shortest() {
        let mut b = [0u8; 9];
        assert_eq!(bstr_head(23, &mut b), &[0x57]);
        assert_eq!(bstr_head(24, &mut b), &[0x58, 24]);
        assert_eq!(bstr_head(256, &mut b), &[0x59, 1, 0]);
        assert_eq!(bstr_head(65536, &mut b), &[0x5a, 0, 1, 0, 0]);
        assert_eq!(bstr_head(1 << 32, &mut b), &[0x5b, 0, 0, 0, 1, 0, 0, 0, 0]);
    }
}
