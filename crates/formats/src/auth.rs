//! Mutual authentication between two devices, or a device and a server
//! (`docs/formats.md` §19): three messages, each side's certificate chain
//! and a fresh nonce, and one signature per side over the transcript hash.
//!
//! ```text
//! hello      = [1, version, nonce-i, chain-i]                  initiator -> responder
//! response   = [2, version, nonce-i, nonce-r, chain-r, sig-r]  responder -> initiator
//! finish     = [3, nonce-r, sig-i]                             initiator -> responder
//! chain      = [1*4 cert]                                      leaf first, DER
//! transcript = ["tc-auth-1", version, nonce-i, nonce-r, chain-i, chain-r, context]
//! TH         = SHA-256(transcript)
//! sig-x      = SIGN_CHALLENGE(label-x, TH)   (§11.5: "TCSBM-SIGN-1" || u8(len) || label || TH)
//! ```
//!
//! Parsing borrows from the input and allocates nothing, so the same code
//! can run in a device's application. Every field is bounded: nonces are 32
//! bytes, signatures 64, a chain holds 1 to [`MAX_CHAIN_CERTS`] certificates
//! of 1 to [`MAX_CERT_LEN`] bytes and its CBOR encoding is at most
//! [`MAX_CHAIN_LEN`] bytes (what a device stores, §11.1), a message is at
//! most [`MAX_MESSAGE_LEN`] bytes. Nothing is accepted after a message.
//! Hashing and signatures are the caller's (the SBM signs, the host
//! verifies).
use crate::cbor::Reader;
use crate::FormatError;

/// The protocol version this code speaks; the only one there is.
pub const VERSION: u64 = 1;
/// The protocol name, first element of the transcript.
pub const PROTOCOL: &str = "tc-auth-1";
/// The SIGN_CHALLENGE label of the initiator's signature.
pub const LABEL_INITIATOR: &str = "tc-auth-1 initiator";
/// The SIGN_CHALLENGE label of the responder's signature.
pub const LABEL_RESPONDER: &str = "tc-auth-1 responder";
/// Nonce length.
pub const NONCE_LEN: usize = 32;
/// Most certificates in a chain (leaf + 3 intermediates: VALIDATE_PEER_CHAIN's limit).
pub const MAX_CHAIN_CERTS: usize = 4;
/// Largest certificate (DER), as in STORE_CERTS.
pub const MAX_CERT_LEN: usize = 2048;
/// Largest chain, as its CBOR array (head included): the CertChain capacity.
pub const MAX_CHAIN_LEN: usize = 3072;
/// Largest channel-binding context.
pub const MAX_CONTEXT_LEN: usize = 64;
/// Largest message.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Message types, the first element of every message.
pub mod msg {
    /// `hello`, initiator to responder.
    pub const HELLO: u64 = 1;
    /// `response`, responder to initiator.
    pub const RESPONSE: u64 = 2;
    /// `finish`, initiator to responder.
    pub const FINISH: u64 = 3;
}

/// A certificate chain as it travels: leaf first, then intermediates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain<'a> {
    certs: [&'a [u8]; MAX_CHAIN_CERTS],
    len: usize,
    raw: &'a [u8],
}

impl<'a> Chain<'a> {
    /// The certificates, leaf first (1 to 4).
    pub fn certs(&self) -> &[&'a [u8]] {
        &self.certs[..self.len]
    }
    /// The leaf (the peer's device certificate).
    pub fn leaf(&self) -> &'a [u8] {
        self.certs[0]
    }
    /// The chain's CBOR encoding, exactly as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    fn read(r: &mut Reader<'a>, field: &'static str) -> Result<Self, FormatError> {
        let start = r.position();
        let n = r.array(field)?;
        if n == 0 || n > MAX_CHAIN_CERTS as u64 {
            return Err(FormatError::InvalidValue {
                field,
                expected: "1 to 4 certificates",
            });
        }
        let mut certs = [&[][..]; MAX_CHAIN_CERTS];
        for slot in certs.iter_mut().take(n as usize) {
            let c = r.bstr("certificate", MAX_CERT_LEN)?;
            if c.is_empty() {
                return Err(FormatError::InvalidValue {
                    field: "certificate",
                    expected: "1 to 2048 bytes of DER",
                });
            }
            *slot = c;
        }
        let raw = r.slice_from(start);
        if raw.len() > MAX_CHAIN_LEN {
            return Err(FormatError::TooLarge {
                field,
                max: MAX_CHAIN_LEN as u64,
                found: raw.len() as u64,
            });
        }
        Ok(Self {
            certs,
            len: n as usize,
            raw,
        })
    }
}

/// `hello`: the initiator's version, nonce and chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    /// The initiator's nonce.
    pub nonce: &'a [u8; NONCE_LEN],
    /// The initiator's chain.
    pub chain: Chain<'a>,
}

/// `response`: the responder's chain, nonce and signature, and the
/// initiator's nonce it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// The initiator's nonce, echoed.
    pub nonce_i: &'a [u8; NONCE_LEN],
    /// The responder's nonce.
    pub nonce_r: &'a [u8; NONCE_LEN],
    /// The responder's chain.
    pub chain: Chain<'a>,
    /// The responder's signature (`r || s`) over the transcript hash.
    pub signature: &'a [u8; 64],
}

/// `finish`: the initiator's signature, and the responder's nonce it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish<'a> {
    /// The responder's nonce, echoed.
    pub nonce_r: &'a [u8; NONCE_LEN],
    /// The initiator's signature (`r || s`) over the transcript hash.
    pub signature: &'a [u8; 64],
}

fn bounded(bytes: &[u8]) -> Result<Reader<'_>, FormatError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(FormatError::TooLarge {
            field: "message",
            max: MAX_MESSAGE_LEN as u64,
            found: bytes.len() as u64,
        });
    }
    Ok(Reader::new(bytes))
}

/// The type of a message (its first element), without parsing the rest:
/// tells a message of another kind (an attack or a confused peer) from a
/// malformed one.
pub fn message_type(bytes: &[u8]) -> Result<u64, FormatError> {
    let mut r = bounded(bytes)?;
    r.array("an authentication message (array)")?;
    r.uint("the message type")
}

/// Reads the array head, the type (which must be `ty`) and, for `hello` and
/// `response`, the version, which is checked before the shape of the rest
/// (a later version may have other fields).
fn head<'a>(
    bytes: &'a [u8],
    ty: u64,
    with_version: bool,
    len: u64,
) -> Result<Reader<'a>, FormatError> {
    let mut r = bounded(bytes)?;
    let start = r.position();
    let n = r.array("an authentication message (array)")?;
    if r.uint("the message type")? != ty {
        return Err(FormatError::InvalidValue {
            field: "message type",
            expected: "the message the protocol expects next",
        });
    }
    if with_version {
        let v = r.uint("the protocol version")?;
        if v != VERSION {
            return Err(FormatError::UnsupportedVersion { found: v });
        }
    }
    if n != len {
        return Err(FormatError::Malformed {
            at: start,
            expected: "the number of elements of this message",
        });
    }
    Ok(r)
}

impl<'a> Hello<'a> {
    /// Parses a `hello`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut r = head(bytes, msg::HELLO, true, 4)?;
        let nonce = r.bstr_exact::<NONCE_LEN>("initiator nonce")?;
        let chain = Chain::read(&mut r, "initiator chain")?;
        r.finish()?;
        Ok(Self { nonce, chain })
    }
}

impl<'a> Response<'a> {
    /// Parses a `response`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut r = head(bytes, msg::RESPONSE, true, 6)?;
        let nonce_i = r.bstr_exact::<NONCE_LEN>("initiator nonce")?;
        let nonce_r = r.bstr_exact::<NONCE_LEN>("responder nonce")?;
        let chain = Chain::read(&mut r, "responder chain")?;
        let signature = r.bstr_exact::<64>("responder signature")?;
        r.finish()?;
        Ok(Self {
            nonce_i,
            nonce_r,
            chain,
            signature,
        })
    }
}

impl<'a> Finish<'a> {
    /// Parses a `finish`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let mut r = head(bytes, msg::FINISH, false, 3)?;
        let nonce_r = r.bstr_exact::<NONCE_LEN>("responder nonce")?;
        let signature = r.bstr_exact::<64>("initiator signature")?;
        r.finish()?;
        Ok(Self { nonce_r, signature })
    }
}

/// What both signatures cover (§19.3). Built by each side from what it sent
/// and what it received, never taken from the wire as a whole.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    /// The initiator's nonce.
    pub nonce_i: &'a [u8; NONCE_LEN],
    /// The responder's nonce.
    pub nonce_r: &'a [u8; NONCE_LEN],
    /// The initiator's chain, leaf first.
    pub chain_i: &'a [&'a [u8]],
    /// The responder's chain, leaf first.
    pub chain_r: &'a [&'a [u8]],
    /// Channel binding the two applications agreed on (0 to 64 bytes; empty
    /// when there is none).
    pub context: &'a [u8],
}

impl Transcript<'_> {
    /// Encodes the transcript (deterministic CBOR) into `e`, for hashing in
    /// a stream without allocating.
    pub fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.array(7)?.str(PROTOCOL)?.u64(VERSION)?;
        e.bytes(self.nonce_i)?.bytes(self.nonce_r)?;
        for chain in [self.chain_i, self.chain_r] {
            e.array(chain.len() as u64)?;
            for c in chain {
                e.bytes(c)?;
            }
        }
        e.bytes(self.context)?;
        Ok(())
    }

    /// The transcript's bytes.
    #[cfg(feature = "alloc")]
    pub fn to_vec(&self) -> alloc::vec::Vec<u8> {
        crate::cbor::to_vec(|e| self.encode(e))
    }
}

/// Checks a chain before encoding it: the bounds the parser enforces.
#[cfg(feature = "alloc")]
fn check_chain(chain: &[&[u8]]) -> Result<(), FormatError> {
    if chain.is_empty() || chain.len() > MAX_CHAIN_CERTS {
        return Err(FormatError::InvalidValue {
            field: "chain",
            expected: "1 to 4 certificates",
        });
    }
    if chain.iter().any(|c| c.is_empty() || c.len() > MAX_CERT_LEN) {
        return Err(FormatError::InvalidValue {
            field: "certificate",
            expected: "1 to 2048 bytes of DER",
        });
    }
    let len = crate::cbor::to_vec(|e| {
        e.array(chain.len() as u64)?;
        for c in chain {
            e.bytes(c)?;
        }
        Ok(())
    })
    .len();
    if len > MAX_CHAIN_LEN {
        return Err(FormatError::TooLarge {
            field: "chain",
            max: MAX_CHAIN_LEN as u64,
            found: len as u64,
        });
    }
    Ok(())
}

/// Encodes a `hello`; refuses a chain the parser would refuse.
#[cfg(feature = "alloc")]
pub fn encode_hello(
    nonce: &[u8; NONCE_LEN],
    chain: &[&[u8]],
) -> Result<alloc::vec::Vec<u8>, FormatError> {
    check_chain(chain)?;
    Ok(crate::cbor::to_vec(|e| {
        e.array(4)?.u64(msg::HELLO)?.u64(VERSION)?.bytes(nonce)?;
        e.array(chain.len() as u64)?;
        for c in chain {
            e.bytes(c)?;
        }
        Ok(())
    }))
}

/// Encodes a `response`; refuses a chain the parser would refuse.
#[cfg(feature = "alloc")]
pub fn encode_response(
    nonce_i: &[u8; NONCE_LEN],
    nonce_r: &[u8; NONCE_LEN],
    chain: &[&[u8]],
    signature: &[u8; 64],
) -> Result<alloc::vec::Vec<u8>, FormatError> {
    check_chain(chain)?;
    Ok(crate::cbor::to_vec(|e| {
        e.array(6)?.u64(msg::RESPONSE)?.u64(VERSION)?;
        e.bytes(nonce_i)?.bytes(nonce_r)?;
        e.array(chain.len() as u64)?;
        for c in chain {
            e.bytes(c)?;
        }
        e.bytes(signature)?;
        Ok(())
    }))
}

/// Encodes a `finish`.
#[cfg(feature = "alloc")]
pub fn encode_finish(nonce_r: &[u8; NONCE_LEN], signature: &[u8; 64]) -> alloc::vec::Vec<u8> {
    crate::cbor::to_vec(|e| {
        e.array(3)?
            .u64(msg::FINISH)?
            .bytes(nonce_r)?
            .bytes(signature)?;
        Ok(())
    })
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    const CERT_A: &[u8] = &[0x30; 300];
    const CERT_B: &[u8] = &[0x31; 40];

    fn hello() -> Vec<u8> {
        encode_hello(&[1; 32], &[CERT_A, CERT_B]).unwrap()
    }
    fn response() -> Vec<u8> {
        encode_response(&[1; 32], &[2; 32], &[CERT_B], &[9; 64]).unwrap()
    }
    fn finish() -> Vec<u8> {
        encode_finish(&[2; 32], &[8; 64])
    }

    #[test]
    fn round_trip() {
        let h = hello();
        let p = Hello::parse(&h).unwrap();
        assert_eq!(p.nonce, &[1; 32]);
        assert_eq!(p.chain.certs(), &[CERT_A, CERT_B]);
        assert_eq!(p.chain.leaf(), CERT_A);
        assert_eq!(message_type(&h), Ok(msg::HELLO));
        let r = response();
        let p = Response::parse(&r).unwrap();
        assert_eq!((p.nonce_i, p.nonce_r), (&[1; 32], &[2; 32]));
        assert_eq!(p.chain.certs(), &[CERT_B]);
        assert_eq!(p.signature, &[9; 64]);
        let f = finish();
        let p = Finish::parse(&f).unwrap();
        assert_eq!((p.nonce_r, p.signature), (&[2; 32], &[8; 64]));
        // The head bytes of §19.4.
        assert_eq!(&h[..4], &[0x84, 0x01, 0x01, 0x58]);
        assert_eq!(&f[..3], &[0x83, 0x03, 0x58]);
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        for m in [hello(), response(), finish()] {
            for cut in 0..m.len() {
                assert!(Hello::parse(&m[..cut]).is_err());
                assert!(Response::parse(&m[..cut]).is_err());
                assert!(Finish::parse(&m[..cut]).is_err());
            }
            let mut long = m.clone();
            long.push(0);
            assert!(Hello::parse(&long).is_err());
            assert!(Response::parse(&long).is_err());
            assert!(Finish::parse(&long).is_err());
        }
    }

    #[test]
    fn a_message_is_never_read_as_another() {
        assert!(Response::parse(&hello()).is_err());
        assert!(Finish::parse(&hello()).is_err());
        assert!(Hello::parse(&response()).is_err());
        assert!(Finish::parse(&response()).is_err());
        assert!(Hello::parse(&finish()).is_err());
        assert!(Response::parse(&finish()).is_err());
    }

    #[test]
    fn version_is_checked_before_the_shape() {
        // A version-2 hello with five elements: the version is what is refused.
        let mut h = hello();
        h[0] = 0x85;
        h[2] = 0x02;
        h.push(0x00);
        assert_eq!(
            Hello::parse(&h),
            Err(FormatError::UnsupportedVersion { found: 2 })
        );
        let mut r = response();
        r[2] = 0x02;
        assert_eq!(
            Response::parse(&r),
            Err(FormatError::UnsupportedVersion { found: 2 })
        );
    }

    #[test]
    fn bounds() {
        // No certificate, an empty certificate, five certificates.
        assert!(encode_hello(&[0; 32], &[]).is_err());
        assert!(encode_hello(&[0; 32], &[&[]]).is_err());
        assert!(encode_hello(&[0; 32], &[CERT_B; 5]).is_err());
        // A certificate above 2048 bytes; a chain above 3072 bytes.
        let big = vec![0u8; 2049];
        assert!(encode_hello(&[0; 32], &[&big]).is_err());
        let c = vec![0u8; 1100];
        assert!(encode_hello(&[0; 32], &[&c, &c, &c]).is_err());
        assert!(encode_hello(&[0; 32], &[&c, &c]).is_ok());
        // Hand-made: an empty chain array, an empty certificate, five.
        let mut m = vec![0x84, 0x01, 0x01, 0x58, 0x20];
        m.extend([0; 32]);
        let mut empty = m.clone();
        empty.push(0x80);
        assert!(matches!(
            Hello::parse(&empty),
            Err(FormatError::InvalidValue { .. })
        ));
        let mut zero = m.clone();
        zero.extend([0x81, 0x40]);
        assert!(matches!(
            Hello::parse(&zero),
            Err(FormatError::InvalidValue { .. })
        ));
        let mut five = m.clone();
        five.push(0x85);
        five.extend([0x41, 0x30].repeat(5));
        assert!(matches!(
            Hello::parse(&five),
            Err(FormatError::InvalidValue { .. })
        ));
        // A 3073-byte chain array of two certificates: the head is 1, each
        // certificate head 3 bytes.
        let mut over = m.clone();
        over.push(0x82);
        for len in [1533usize, 1533] {
            over.extend([0x59, (len >> 8) as u8, len as u8]);
            over.extend(vec![0x30; len]);
        }
        assert!(matches!(
            Hello::parse(&over),
            Err(FormatError::TooLarge {
                field: "initiator chain",
                max: 3072,
                found: 3073
            })
        ));
        // A message above 4096 bytes is refused before it is read.
        let huge = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            message_type(&huge),
            Err(FormatError::TooLarge { .. })
        ));
    }

    #[test]
    fn non_canonical_encodings_are_refused() {
        // The type with a one-byte argument.
        let mut f = finish();
        f.splice(1..2, [0x18, 0x03]);
        assert!(matches!(
            Finish::parse(&f),
            Err(FormatError::NonCanonical { .. })
        ));
        // An indefinite-length chain array.
        let mut h = vec![0x84, 0x01, 0x01, 0x58, 0x20];
        h.extend([0; 32]);
        h.extend([0x9f, 0x41, 0x30, 0xff]);
        assert!(matches!(
            Hello::parse(&h),
            Err(FormatError::NonCanonical { .. })
        ));
    }

    #[test]
    fn transcript_encoding() {
        let t = Transcript {
            nonce_i: &[1; 32],
            nonce_r: &[2; 32],
            chain_i: &[CERT_B],
            chain_r: &[CERT_B, CERT_B],
            context: b"",
        };
        let v = t.to_vec();
        let mut want = vec![0x87, 0x69];
        want.extend(PROTOCOL.as_bytes());
        want.extend([0x01, 0x58, 0x20]);
        want.extend([1; 32]);
        want.extend([0x58, 0x20]);
        want.extend([2; 32]);
        want.extend([0x81, 0x58, 40]);
        want.extend(CERT_B);
        want.extend([0x82, 0x58, 40]);
        want.extend(CERT_B);
        want.extend([0x58, 40]);
        want.extend(CERT_B);
        want.push(0x40);
        assert_eq!(v, want);
    }
}
