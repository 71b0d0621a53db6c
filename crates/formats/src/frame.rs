//! The connection protocol between a programmer (or the application) and
//! the SBM: framed, length-bounded, CRC-checked, versioned. Payloads are
//! deterministic CBOR arrays (see `docs/formats.md`, "SBM connection
//! protocol").
//!
//! ```text
//! frame = "TC" | version (1) | kind | seq (u16 BE) | len (u16 BE) | payload[len] | crc32 (BE)
//! ```
//! The CRC-32 (ISO-HDLC, as in zlib) covers every byte before it; it catches
//! line noise, not attackers: everything security-relevant inside is signed
//! or authenticated. A request's kind is its command; the response's kind is
//! `0x80 | command`, its payload a status byte followed by the CBOR body.
use crate::FormatError;

/// Frame magic.
pub const MAGIC: [u8; 2] = *b"TC";
/// Protocol version.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 8;
/// Bytes after the payload.
pub const TRAILER_LEN: usize = 4;
/// Largest payload.
pub const MAX_PAYLOAD: usize = 4096;
/// Largest frame.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN;
/// Bit set in the kind of a response.
pub const RESPONSE: u8 = 0x80;

/// CRC-32 (ISO-HDLC). With the `small` feature (the Cortex-M4 firmware)
/// it is computed bit by bit, without the crate's 1 KiB lookup table: the
/// same checksum, and the SBM's flash is the scarcer resource (a 4 KiB frame
/// costs well under the time the UART takes to carry it). On the host, where
/// the simulator and the programmer check every frame of a production run,
/// sixteen 1 KiB tables (slicing-by-16) make it ~30x faster.
#[cfg(feature = "small")]
const CRC: crc::Crc<u32, crc::NoTable> = crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);
#[cfg(not(feature = "small"))]
const CRC: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISO_HDLC);

/// Commands.
pub mod cmd {
    /// `[]` -> device info.
    pub const GET_INFO: u8 = 0x01;
    /// `[nonce]` -> identity and key-agreement public keys with proof of possession.
    pub const GENERATE_KEYS: u8 = 0x02;
    /// `[[+ cert], root]` -> store the device chain and the OEM root.
    pub const STORE_CERTS: u8 = 0x03;
    /// `[oem_id, product_id, mastering_pub, ephemeral_pub, wrapped_product_key]`.
    pub const INSTALL_OEM_KEYS: u8 = 0x04;
    /// `[]` -> lock the device.
    pub const LOCK: u8 = 0x05;
    /// `[mode, upk, enc_len]` -> check the UPK, then start receiving `update.enc` into staging.
    pub const IMAGE_BEGIN: u8 = 0x10;
    /// `[offset, bytes]` -> a piece of `update.enc`.
    pub const IMAGE_DATA: u8 = 0x11;
    /// `[]` -> verify; install now (mode 0) or request the update at reset (mode 1).
    pub const IMAGE_END: u8 = 0x12;
    /// `[]` -> the signature table.
    pub const READ_SIGNATURE_TABLE: u8 = 0x13;
    /// `[]` -> the device certificate chain and the OEM root.
    pub const GET_CERT_CHAIN: u8 = 0x20;
    /// `[label, data]` -> a signature by the device identity key.
    pub const SIGN_CHALLENGE: u8 = 0x21;
    /// `[[+ cert], now]` -> validate a peer's chain against the OEM root.
    pub const VALIDATE_PEER_CHAIN: u8 = 0x22;
    /// `[transcript_hash]` -> the device's TLS 1.3 client CertificateVerify
    /// signature over that handshake hash (RFC 8446 §4.4.3).
    pub const SIGN_TLS13_CLIENT: u8 = 0x23;
    /// `[]` -> answered with `[]`, then the SBM resets and boots (the next
    /// `GET_INFO` shows the outcome).
    pub const RESET: u8 = 0x30;
}

/// Why the SBM refused a request. Every refusal leaves the device as it was,
/// except where noted in `docs/formats.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum Status {
    /// Done.
    Ok = 0,
    /// The frame is malformed (magic, version, length or CRC).
    BadFrame = 1,
    /// Unknown command.
    UnknownCommand = 2,
    /// The payload does not parse for this command.
    BadRequest = 3,
    /// The command is not allowed in the current lifecycle state.
    WrongState = 4,
    /// The device is locked: provisioning commands are refused.
    Locked = 5,
    /// Keys or certificates are already there (write-once).
    AlreadyProvisioned = 6,
    /// The device is not fully provisioned.
    NotProvisioned = 7,
    /// The UPK does not parse.
    UpkMalformed = 10,
    /// The UPK's signature does not verify with the provisioned mastering key.
    BadSignature = 11,
    /// The UPK is for another OEM.
    WrongOem = 12,
    /// The UPK is for another product.
    WrongProduct = 13,
    /// This device's UID is not on the UPK's allow-list.
    UidNotAllowed = 14,
    /// The security counter is below the device's minimum (rollback).
    Rollback = 15,
    /// The image does not fit the application slot or staging area.
    TooLarge = 16,
    /// No recipient of the UPK is a key of this device.
    NotRecipient = 17,
    /// The encrypted image does not match the signed ciphertext digest or size.
    CiphertextMismatch = 18,
    /// A chunk failed authentication.
    DecryptionFailed = 19,
    /// The plaintext does not match the signed digest.
    PlaintextMismatch = 20,
    /// A flash operation failed.
    FlashError = 21,
    /// No verified application.
    NoImage = 22,
    /// The wrapped product key does not open.
    BadKeyDelivery = 23,
    /// Data out of order or out of the announced range.
    BadOffset = 24,
    /// The certificates are malformed or too large.
    BadCertificate = 25,
    /// The load address is not this device's application slot.
    WrongLoadAddress = 26,
    /// The peer's chain does not lead to this device's OEM root.
    PeerUnknownIssuer = 27,
    /// A certificate of the peer's chain is expired or not yet valid.
    PeerExpired = 28,
    /// A signature in the peer's chain does not verify.
    PeerBadSignature = 29,
    /// The peer's chain is malformed or not valid for authentication.
    PeerInvalid = 30,
}

impl Status {
    /// From its byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        use Status::*;
        Some(match b {
            0 => Ok,
            1 => BadFrame,
            2 => UnknownCommand,
            3 => BadRequest,
            4 => WrongState,
            5 => Locked,
            6 => AlreadyProvisioned,
            7 => NotProvisioned,
            10 => UpkMalformed,
            11 => BadSignature,
            12 => WrongOem,
            13 => WrongProduct,
            14 => UidNotAllowed,
            15 => Rollback,
            16 => TooLarge,
            17 => NotRecipient,
            18 => CiphertextMismatch,
            19 => DecryptionFailed,
            20 => PlaintextMismatch,
            21 => FlashError,
            22 => NoImage,
            23 => BadKeyDelivery,
            24 => BadOffset,
            25 => BadCertificate,
            26 => WrongLoadAddress,
            27 => PeerUnknownIssuer,
            28 => PeerExpired,
            29 => PeerBadSignature,
            30 => PeerInvalid,
            _ => return None,
        })
    }

    /// A sentence for operators.
    pub fn describe(self) -> &'static str {
        use Status::*;
        match self {
            Ok => "ok",
            BadFrame => "malformed frame (magic, version, length or CRC)",
            UnknownCommand => "unknown command",
            BadRequest => "malformed request payload",
            WrongState => "not allowed in the device's lifecycle state",
            Locked => "the device is locked; provisioning is refused",
            AlreadyProvisioned => "already provisioned (write-once)",
            NotProvisioned => "the device is not fully provisioned",
            UpkMalformed => "the UPK is malformed",
            BadSignature => "the UPK signature does not verify with the provisioned mastering key",
            WrongOem => "the release is for another OEM",
            WrongProduct => "the release is for another product",
            UidNotAllowed => "this device's UID is not on the release's allow-list",
            Rollback => "rollback: the security counter is below the device's minimum",
            TooLarge => "the image does not fit the device",
            NotRecipient => "the release is not encrypted for this device or its product",
            CiphertextMismatch => "the encrypted image does not match the signed digest or size",
            DecryptionFailed => "a chunk of the image failed authentication",
            PlaintextMismatch => "the decrypted image does not match the signed digest",
            FlashError => "flash operation failed",
            NoImage => "no verified application",
            BadKeyDelivery => "the delivered product key does not open",
            BadOffset => "data out of order or out of range",
            BadCertificate => "malformed or oversized certificates",
            WrongLoadAddress => "the image's load address is not this device's application slot",
            PeerUnknownIssuer => {
                "the peer's certificate chain does not lead to this device's OEM root"
            }
            PeerExpired => "a certificate of the peer's chain is expired or not yet valid",
            PeerBadSignature => "a signature in the peer's certificate chain does not verify",
            PeerInvalid => {
                "the peer's certificate chain is malformed or not valid for authentication"
            }
        }
    }
}

/// A parsed frame borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Command, or `RESPONSE | command`.
    pub kind: u8,
    /// Sequence number, echoed in the response.
    pub seq: u16,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Length of the frame that starts with `header` (the first
    /// [`HEADER_LEN`] bytes), so a reader knows how much more to read.
    pub fn total_len(header: &[u8; HEADER_LEN]) -> Result<usize, FormatError> {
        if header[..2] != MAGIC {
            return Err(FormatError::InvalidValue {
                field: "frame magic",
                expected: "\"TC\"",
            });
        }
        if header[2] != VERSION {
            return Err(FormatError::UnsupportedVersion {
                found: header[2] as u64,
            });
        }
        let len = u16::from_be_bytes([header[6], header[7]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FormatError::TooLarge {
                field: "frame payload",
                max: MAX_PAYLOAD as u64,
                found: len as u64,
            });
        }
        Ok(HEADER_LEN + len + TRAILER_LEN)
    }

    /// Parses exactly one frame.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let header: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(FormatError::Truncated)?;
        let total = Self::total_len(header)?;
        if bytes.len() < total {
            return Err(FormatError::Truncated);
        }
        if bytes.len() > total {
            return Err(FormatError::TrailingBytes { at: total });
        }
        let body = &bytes[..total - TRAILER_LEN];
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&bytes[total - TRAILER_LEN..]);
        if CRC.checksum(body) != u32::from_be_bytes(crc) {
            return Err(FormatError::InvalidValue {
                field: "frame CRC",
                expected: "the CRC-32 of the frame",
            });
        }
        Ok(Self {
            kind: header[3],
            seq: u16::from_be_bytes([header[4], header[5]]),
            payload: &body[HEADER_LEN..],
        })
    }

    /// Completes a frame whose payload (`len` bytes) is already in place at
    /// `out[HEADER_LEN..]`: writes the header and the CRC; returns the length.
    pub fn seal_in_place(kind: u8, seq: u16, len: usize, out: &mut [u8]) -> Option<usize> {
        if len > MAX_PAYLOAD {
            return None;
        }
        let total = HEADER_LEN + len + TRAILER_LEN;
        let out = out.get_mut(..total)?;
        out[..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[3] = kind;
        out[4..6].copy_from_slice(&seq.to_be_bytes());
        out[6..8].copy_from_slice(&(len as u16).to_be_bytes());
        let crc = CRC.checksum(&out[..HEADER_LEN + len]);
        out[total - TRAILER_LEN..].copy_from_slice(&crc.to_be_bytes());
        Some(total)
    }

    /// Writes a frame into `out`; returns its length, or `None` if it does not fit.
    pub fn write(kind: u8, seq: u16, payload: &[u8], out: &mut [u8]) -> Option<usize> {
        if payload.len() > MAX_PAYLOAD {
            return None;
        }
        let total = HEADER_LEN + payload.len() + TRAILER_LEN;
        let out = out.get_mut(..total)?;
        out[..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[3] = kind;
        out[4..6].copy_from_slice(&seq.to_be_bytes());
        out[6..8].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        out[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        let crc = CRC.checksum(&out[..HEADER_LEN + payload.len()]);
        out[total - TRAILER_LEN..].copy_from_slice(&crc.to_be_bytes());
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_corruption_is_caught() {
        let mut buf = [0u8; 64];
        let n = Frame::write(cmd::GET_INFO, 7, &[0x80], &mut buf).unwrap();
        let f = Frame::parse(&buf[..n]).unwrap();
        assert_eq!((f.kind, f.seq, f.payload), (cmd::GET_INFO, 7, &[0x80][..]));
        for i in 0..n {
            for bit in 0..8 {
                let mut b = buf;
                b[i] ^= 1 << bit;
                assert!(
                    Frame::parse(&b[..n]).is_err(),
                    "flip of bit {bit} of byte {i} accepted"
                );
            }
        }
        for cut in 0..n {
            assert!(Frame::parse(&buf[..cut]).is_err());
        }
        assert!(matches!(
            Frame::parse(&buf[..n + 1]),
            Err(FormatError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn crc_is_crc32_iso_hdlc() {
        // The catalogue's check value (CRC RevEng, CRC-32/ISO-HDLC).
        assert_eq!(CRC.checksum(b"123456789"), 0xCBF4_3926);
        // The device's bitwise CRC and the host's tables agree.
        let bitwise = crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);
        let table = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISO_HDLC);
        let data: [u8; 300] = core::array::from_fn(|i| (i * 37 + 11) as u8);
        for n in [0, 1, 9, 63, 64, 65, 300] {
            assert_eq!(bitwise.checksum(&data[..n]), table.checksum(&data[..n]));
            assert_eq!(CRC.checksum(&data[..n]), table.checksum(&data[..n]));
        }
    }

    #[test]
    fn length_is_bounded_before_reading() {
        let mut h = [b'T', b'C', VERSION, 1, 0, 0, 0, 0];
        h[6..8].copy_from_slice(&((MAX_PAYLOAD + 1) as u16).to_be_bytes());
        assert!(matches!(
            Frame::total_len(&h),
            Err(FormatError::TooLarge { .. })
        ));
        assert!(Frame::write(1, 0, &[0; MAX_PAYLOAD + 1], &mut [0u8; MAX_FRAME + 8]).is_none());
    }

    #[test]
    fn status_bytes_round_trip() {
        for b in 0..=255u8 {
            if let Some(s) = Status::from_u8(b) {
                assert_eq!(s as u8, b);
                assert!(!s.describe().is_empty());
            }
        }
    }
}
