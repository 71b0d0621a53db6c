//! The production report a Guardian signs for the OEM: one record per
//! device a job issued a certificate to, the job's counts, and the job's
//! hash-chained log, so the OEM can reconcile what was produced with what it
//! allowed.
//!
//! ```text
//! report   = COSE_Sign1 (tag 18), ES256 by the Guardian signing key,
//!            unprotected {33: [kem-cert, signing-cert]} (x5chain, RFC 9360)
//! payload  = { 1: 1, 2: package-id, 3: job, 4: oem-id, 5: product-id,
//!              6: count, 7: issued, 8: failed, 9: created,
//!              10: [* [serial, uid, type, status, cert]],
//!              11: [* log-entry], 12: log-head }
//! log-entry = [n, action, serial / null, cert-sha256 / null, time]
//! log-head  = H_n, H_0 = SHA-256(package-id), H_i = SHA-256(H_{i-1} || entry_i)
//! ```
use crate::cbor::Reader;
use crate::cose::{HDR_X5CHAIN, PROTECTED_ES256, TAG_SIGN1};
use crate::ids::{OemId, ProductId};
use crate::FormatError;

/// Format version.
pub const FORMAT_VERSION: u64 = 1;
/// Largest report.
pub const MAX_REPORT_LEN: usize = 512 * 1024 * 1024;
/// Largest certificate in a report.
pub const MAX_CERT_LEN: usize = 2048;

/// Device status in a report.
pub mod status {
    /// Certified and provisioned.
    pub const ISSUED: u64 = 0;
    /// Certified, then failed.
    pub const FAILED: u64 = 1;
}

/// A parsed report (signature not verified).
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// The protected header.
    pub protected: &'a [u8],
    /// Guardian key-agreement certificate (its SHA-256 is the Guardian ID).
    pub kem_cert: &'a [u8],
    /// Guardian signing certificate.
    pub signing_cert: &'a [u8],
    /// The signed payload.
    pub payload: &'a [u8],
    /// The signature.
    pub signature: &'a [u8; 64],
    /// Fields.
    pub body: Body<'a>,
}

/// The report body.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct Body<'a> {
    pub package_id: &'a [u8; 16],
    pub job: u64,
    pub oem_id: OemId,
    pub product_id: ProductId,
    pub count: u64,
    pub issued: u64,
    pub failed: u64,
    pub created: u64,
    devices: (&'a [u8], u64),
    log: (&'a [u8], u64),
    pub log_head: &'a [u8; 32],
}

/// One device record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceEntry<'a> {
    /// Serial.
    pub serial: u64,
    /// UID.
    pub uid: &'a [u8],
    /// Device type.
    pub device_type: u64,
    /// [`status`].
    pub status: u64,
    /// The certificate (DER).
    pub cert: &'a [u8],
}

/// One log entry, with its raw CBOR bytes (hashed into the chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// Position in the job's log, from 1.
    pub n: u64,
    /// What happened.
    pub action: &'a str,
    /// The serial concerned.
    pub serial: Option<u64>,
    /// The certificate concerned.
    pub cert_sha256: Option<&'a [u8; 32]>,
    /// When.
    pub time: u64,
    /// The entry's CBOR.
    pub raw: &'a [u8],
}

fn device<'a>(r: &mut Reader<'a>) -> Result<DeviceEntry<'a>, FormatError> {
    r.array_of(5, "a device record")?;
    Ok(DeviceEntry {
        serial: r.uint("serial")?,
        uid: r.bstr("UID", 32)?,
        device_type: r.uint("device type")?,
        status: r.uint("status")?,
        cert: r.bstr("certificate", MAX_CERT_LEN)?,
    })
}

fn log_entry<'a>(r: &mut Reader<'a>) -> Result<LogEntry<'a>, FormatError> {
    let start = r.position();
    r.array_of(5, "a log entry")?;
    let n = r.uint("n")?;
    let action = r.tstr("action", 16)?;
    let serial = if r.null_if_next()? {
        None
    } else {
        Some(r.uint("serial")?)
    };
    let cert_sha256 = if r.null_if_next()? {
        None
    } else {
        Some(r.bstr_exact::<32>("certificate SHA-256")?)
    };
    let time = r.uint("time")?;
    Ok(LogEntry {
        n,
        action,
        serial,
        cert_sha256,
        time,
        raw: r.slice_from(start),
    })
}

impl<'a> Body<'a> {
    /// The device records.
    pub fn devices(&self) -> impl Iterator<Item = DeviceEntry<'a>> + 'a {
        let mut r = Reader::new(self.devices.0);
        (0..self.devices.1).map_while(move |_| device(&mut r).ok())
    }
    /// How many device records.
    pub fn device_count(&self) -> u64 {
        self.devices.1
    }
    /// The log entries.
    pub fn log(&self) -> impl Iterator<Item = LogEntry<'a>> + 'a {
        let mut r = Reader::new(self.log.0);
        (0..self.log.1).map_while(move |_| log_entry(&mut r).ok())
    }
}

impl<'a> Report<'a> {
    /// Parses a report file.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        if bytes.len() > MAX_REPORT_LEN {
            return Err(FormatError::TooLarge {
                field: "report",
                max: MAX_REPORT_LEN as u64,
                found: bytes.len() as u64,
            });
        }
        let mut r = Reader::new(bytes);
        r.tag(TAG_SIGN1, "COSE_Sign1 (CBOR tag 18)")?;
        r.array_of(4, "the 4-element COSE_Sign1 array")?;
        let protected = r.bstr("protected header", 8)?;
        if protected != PROTECTED_ES256 {
            return Err(FormatError::UnsupportedAlgorithm {
                field: "report signature (only ES256)",
            });
        }
        let mut keys = r.map("unprotected header")?;
        r.required_key(&mut keys, HDR_X5CHAIN, "x5chain")?;
        r.array_of(2, "x5chain [key-agreement cert, signing cert]")?;
        let kem_cert = r.bstr("Guardian certificate", MAX_CERT_LEN)?;
        let signing_cert = r.bstr("Guardian signing certificate", MAX_CERT_LEN)?;
        r.end_map(keys)?;
        let payload = r.bstr("payload", MAX_REPORT_LEN)?;
        let signature = r.bstr_exact::<64>("signature")?;
        r.finish()?;
        let body = Self::parse_body(payload)?;
        Ok(Self {
            protected,
            kem_cert,
            signing_cert,
            payload,
            signature,
            body,
        })
    }

    fn parse_body(p: &'a [u8]) -> Result<Body<'a>, FormatError> {
        let mut r = Reader::new(p);
        let mut m = r.map("the report")?;
        let mut k = |r: &mut Reader<'a>, key: i64, f: &'static str| r.required_key(&mut m, key, f);
        k(&mut r, 1, "format")?;
        let format = r.uint("format")?;
        if format != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion { found: format });
        }
        k(&mut r, 2, "package ID")?;
        let package_id = r.bstr_exact::<16>("package ID")?;
        k(&mut r, 3, "job")?;
        let job = r.uint("job")?;
        k(&mut r, 4, "OEM ID")?;
        let oem_id = OemId::from_u64(r.uint("OEM ID")?)?;
        k(&mut r, 5, "product ID")?;
        let product_id = ProductId::from_u64(r.uint("product ID")?)?;
        k(&mut r, 6, "count")?;
        let count = r.uint("count")?;
        k(&mut r, 7, "issued")?;
        let issued = r.uint("issued")?;
        k(&mut r, 8, "failed")?;
        let failed = r.uint("failed")?;
        k(&mut r, 9, "created")?;
        let created = r.uint("created")?;
        k(&mut r, 10, "devices")?;
        let n = r.array("devices")?;
        let start = r.position();
        for _ in 0..n {
            device(&mut r)?;
        }
        let devices = (r.slice_from(start), n);
        k(&mut r, 11, "log")?;
        let n = r.array("log")?;
        let start = r.position();
        for _ in 0..n {
            log_entry(&mut r)?;
        }
        let log = (r.slice_from(start), n);
        k(&mut r, 12, "log head")?;
        let log_head = r.bstr_exact::<32>("log head")?;
        r.end_map(m)?;
        r.finish()?;
        Ok(Body {
            package_id,
            job,
            oem_id,
            product_id,
            count,
            issued,
            failed,
            created,
            devices,
            log,
            log_head,
        })
    }
}

/// Encodes one log entry.
#[cfg(feature = "alloc")]
pub fn encode_log_entry(
    n: u64,
    action: &str,
    serial: Option<u64>,
    cert_sha256: Option<&[u8; 32]>,
    time: u64,
) -> alloc::vec::Vec<u8> {
    crate::cbor::to_vec(|e| {
        e.array(5)?.u64(n)?.str(action)?;
        match serial {
            Some(s) => e.u64(s)?,
            None => e.null()?,
        };
        match cert_sha256 {
            Some(h) => e.bytes(h)?,
            None => e.null()?,
        };
        e.u64(time)?;
        Ok(())
    })
}

/// One device record to encode: (serial, UID, type, status, certificate DER).
#[cfg(feature = "alloc")]
pub type DeviceRecord<'a> = (u64, &'a [u8], u64, u64, &'a [u8]);

/// Everything a report says, for the Guardian to encode.
#[cfg(feature = "alloc")]
#[allow(missing_docs)]
pub struct ReportSpec<'a> {
    pub package_id: [u8; 16],
    pub job: u64,
    pub oem_id: u32,
    pub product_id: u32,
    pub count: u64,
    pub issued: u64,
    pub failed: u64,
    pub created: u64,
    /// (serial, uid, type, status, cert DER)
    pub devices: alloc::vec::Vec<DeviceRecord<'a>>,
    /// Raw CBOR of each log entry, in order.
    pub log: alloc::vec::Vec<&'a [u8]>,
    pub log_head: [u8; 32],
}

#[cfg(feature = "alloc")]
impl ReportSpec<'_> {
    /// The payload.
    pub fn encode(&self) -> alloc::vec::Vec<u8> {
        crate::cbor::to_vec(|e| {
            e.map(12)?;
            e.u8(1)?.u64(FORMAT_VERSION)?;
            e.u8(2)?.bytes(&self.package_id)?;
            e.u8(3)?.u64(self.job)?;
            e.u8(4)?.u32(self.oem_id)?;
            e.u8(5)?.u32(self.product_id)?;
            e.u8(6)?.u64(self.count)?;
            e.u8(7)?.u64(self.issued)?;
            e.u8(8)?.u64(self.failed)?;
            e.u8(9)?.u64(self.created)?;
            e.u8(10)?.array(self.devices.len() as u64)?;
            for (serial, uid, ty, status, cert) in &self.devices {
                e.array(5)?
                    .u64(*serial)?
                    .bytes(uid)?
                    .u64(*ty)?
                    .u64(*status)?
                    .bytes(cert)?;
            }
            e.u8(11)?.array(self.log.len() as u64)?;
            for raw in &self.log {
                e.writer_mut().extend_from_slice(raw);
            }
            e.u8(12)?.bytes(&self.log_head)?;
            Ok(())
        })
    }
}

/// Encodes the signed report.
#[cfg(feature = "alloc")]
pub fn encode_signed(
    kem_cert: &[u8],
    signing_cert: &[u8],
    payload: &[u8],
    signature: &[u8; 64],
) -> alloc::vec::Vec<u8> {
    crate::cbor::to_vec(|e| {
        e.tag(minicbor::data::Tag::new(TAG_SIGN1))?
            .array(4)?
            .bytes(&PROTECTED_ES256)?;
        e.map(1)?
            .i64(HDR_X5CHAIN)?
            .array(2)?
            .bytes(kem_cert)?
            .bytes(signing_cert)?;
        e.bytes(payload)?.bytes(signature)?;
        Ok(())
    })
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use alloc::vec;

    use super::*;

    #[test]
    fn report_round_trips() {
        let l1 = encode_log_entry(1, "import", None, None, 10);
        let l2 = encode_log_entry(2, "issue", Some(100), Some(&[7; 32]), 11);
        let spec = ReportSpec {
            package_id: [1; 16],
            job: 3,
            oem_id: 0x1234,
            product_id: 7,
            count: 5,
            issued: 1,
            failed: 0,
            created: 12,
            devices: vec![(100, &[9u8, 9][..], 1, status::ISSUED, &[0x30u8, 0][..])],
            log: vec![&l1, &l2],
            log_head: [8; 32],
        };
        let payload = spec.encode();
        let signed = encode_signed(&[0x30, 1], &[0x30, 2], &payload, &[5; 64]);
        let r = Report::parse(&signed).unwrap();
        assert_eq!((r.body.job, r.body.count, r.body.issued), (3, 5, 1));
        let d: vec::Vec<_> = r.body.devices().collect();
        assert_eq!(d[0].serial, 100);
        let log: vec::Vec<_> = r.body.log().collect();
        assert_eq!(log[1].serial, Some(100));
        assert_eq!(log[1].raw, &l2[..]);
        for n in (0..signed.len()).step_by(7) {
            assert!(Report::parse(&signed[..n]).is_err());
        }
    }
}
