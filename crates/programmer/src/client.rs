//! The programmer's end of the connection protocol: builds request frames,
//! checks responses (sequence number, kind, CRC, status) and decodes their
//! bodies with the same strict reader as the device.
use trustchain_formats::cbor::Reader;
use trustchain_formats::frame::{cmd, Frame, MAX_FRAME, MAX_PAYLOAD, RESPONSE};
use trustchain_formats::FormatError;
use trustchain_sbm::provision::{challenge_digest, pop_digest};
use trustchain_sbm::Status;

/// Moves frames to a device and back (in-process simulator, UART, ...).
pub trait Transport {
    /// Sends one request frame and returns the response frame.
    fn exchange(&mut self, request: &[u8]) -> Result<Vec<u8>, Error>;
}

/// A transport that records every frame in both directions (requests and
/// responses, as sent), for audits of what the programmer side sees.
pub struct Recording<T: Transport> {
    inner: T,
    sink: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl<T: Transport> Recording<T> {
    /// Records `inner`'s traffic into `sink`.
    pub fn new(inner: T, sink: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> Self {
        Self { inner, sink }
    }
    /// The wrapped transport.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: Transport> Transport for Recording<T> {
    fn exchange(&mut self, request: &[u8]) -> Result<Vec<u8>, Error> {
        let response = self.inner.exchange(request)?;
        if let Ok(mut s) = self.sink.lock() {
            s.extend_from_slice(request);
            s.extend_from_slice(&response);
        }
        Ok(response)
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device refused, with its reason.
    #[error("the device refused: {} (status {})", .0.describe(), *.0 as u8)]
    Refused(Status),
    /// The response is not a valid frame or body.
    #[error("malformed response from the device: {0}")]
    BadResponse(String),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The device's proof of possession does not verify.
    #[error("the device's proof of possession of its keys does not verify")]
    BadProof,
}

fn malformed(e: FormatError) -> Error {
    Error::BadResponse(e.to_string())
}

/// Device information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// UID.
    pub uid: Vec<u8>,
    /// Device type.
    pub device_type: u32,
    /// SBM version.
    pub sbm_version: String,
    /// Lifecycle: 0 blank, 1 keyed, 2 provisioned, 3 locked.
    pub lifecycle: u8,
    /// The installed application, if any.
    pub installed: Option<Installed>,
    /// Anti-rollback minimum.
    pub min_counter: u64,
    /// Journal: 0 idle, 1 update requested, 2 installing.
    pub journal: u8,
}

/// A signature table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// Version.
    pub version: [u16; 3],
    /// Security counter.
    pub counter: u64,
    /// Size.
    pub size: u32,
    /// SHA-256 of the application.
    pub digest: [u8; 32],
}

impl Installed {
    /// `major.minor.patch`.
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            self.version[0], self.version[1], self.version[2]
        )
    }
}

/// Keys a device generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKeys {
    /// Identity (ECDSA) public key, SEC1.
    pub identity: [u8; 65],
    /// Key-agreement (ECDH) public key, SEC1.
    pub agreement: [u8; 65],
}

/// Lifecycle names.
pub fn lifecycle_name(l: u8) -> &'static str {
    match l {
        0 => "blank",
        1 => "keyed",
        2 => "provisioned",
        3 => "locked",
        _ => "unknown",
    }
}

fn read_installed(r: &mut Reader<'_>) -> Result<Option<Installed>, FormatError> {
    if r.null_if_next()? {
        return Ok(None);
    }
    r.array_of(4, "installed entry")?;
    r.array_of(3, "version")?;
    let mut version = [0u16; 3];
    for v in &mut version {
        *v = u16::try_from(r.uint("version")?).map_err(|_| FormatError::InvalidValue {
            field: "version",
            expected: "u16",
        })?;
    }
    let counter = r.uint("counter")?;
    let size = u32::try_from(r.uint("size")?).map_err(|_| FormatError::InvalidValue {
        field: "size",
        expected: "u32",
    })?;
    let digest = *r.bstr_exact::<32>("digest")?;
    Ok(Some(Installed {
        version,
        counter,
        size,
        digest,
    }))
}

/// Encodes a request payload.
fn payload(
    f: impl FnOnce(
        &mut minicbor::Encoder<Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<std::convert::Infallible>>,
) -> Vec<u8> {
    let mut e = minicbor::Encoder::new(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = f(&mut e);
    e.into_writer()
}

/// A connection to one device.
pub struct Programmer<T: Transport> {
    transport: T,
    seq: u16,
}

impl<T: Transport> Programmer<T> {
    /// Over `transport`.
    pub fn new(transport: T) -> Self {
        Self { transport, seq: 0 }
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Sends `cmd` with `payload`; returns the response body on success.
    pub fn call(&mut self, command: u8, payload: &[u8]) -> Result<Vec<u8>, Error> {
        self.seq = self.seq.wrapping_add(1);
        let mut buf = vec![0u8; MAX_FRAME];
        let n = Frame::write(command, self.seq, payload, &mut buf)
            .ok_or_else(|| Error::Transport("request too large".into()))?;
        let resp = self.transport.exchange(&buf[..n])?;
        let f = Frame::parse(&resp).map_err(malformed)?;
        if f.kind != RESPONSE | command || f.seq != self.seq {
            if f.payload.first() == Some(&(Status::BadFrame as u8)) {
                return Err(Error::Refused(Status::BadFrame));
            }
            return Err(Error::BadResponse(format!(
                "response kind {:#x} seq {} to request {:#x} seq {}",
                f.kind, f.seq, command, self.seq
            )));
        }
        let (&status, body) = f
            .payload
            .split_first()
            .ok_or_else(|| Error::BadResponse("empty response".into()))?;
        match Status::from_u8(status) {
            Some(Status::Ok) => Ok(body.to_vec()),
            Some(s) => Err(Error::Refused(s)),
            None => Err(Error::BadResponse(format!("unknown status {status}"))),
        }
    }

    /// `GET_INFO`.
    pub fn info(&mut self) -> Result<DeviceInfo, Error> {
        let body = self.call(cmd::GET_INFO, &[0x80])?;
        let mut r = Reader::new(&body);
        (|| {
            r.array_of(7, "device info")?;
            let uid = r.bstr("uid", 32)?.to_vec();
            let device_type = u32::try_from(r.uint("device type")?).unwrap_or(0);
            let sbm_version = r.tstr("SBM version", 32)?.to_string();
            let lifecycle = r.uint("lifecycle")? as u8;
            let installed = read_installed(&mut r)?;
            let min_counter = r.uint("min counter")?;
            let journal = r.uint("journal")? as u8;
            r.finish()?;
            Ok(DeviceInfo {
                uid,
                device_type,
                sbm_version,
                lifecycle,
                installed,
                min_counter,
                journal,
            })
        })()
        .map_err(malformed)
    }

    /// `GENERATE_KEYS` with a fresh nonce; checks the proof of possession.
    pub fn generate_keys(&mut self, uid: &[u8]) -> Result<DeviceKeys, Error> {
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::Transport("random".into()))?;
        let body = self.call(
            cmd::GENERATE_KEYS,
            &payload(|e| e.array(1)?.bytes(&nonce).map(|_| ())),
        )?;
        let mut r = Reader::new(&body);
        let (identity, agreement, sig) = (|| {
            r.array_of(3, "keys")?;
            let id = *r.bstr_exact::<65>("identity key")?;
            let ka = *r.bstr_exact::<65>("agreement key")?;
            let sig = *r.bstr_exact::<64>("proof of possession")?;
            r.finish()?;
            Ok((id, ka, sig))
        })()
        .map_err(malformed)?;
        let digest = pop_digest(&nonce, uid, &identity, &agreement);
        if !verify_prehashed(&identity, &digest, &sig) {
            return Err(Error::BadProof);
        }
        Ok(DeviceKeys {
            identity,
            agreement,
        })
    }

    /// `STORE_CERTS`.
    pub fn store_certs(&mut self, chain: &[Vec<u8>], root: &[u8]) -> Result<(), Error> {
        let p = payload(|e| {
            e.array(2)?.array(chain.len() as u64)?;
            for c in chain {
                e.bytes(c)?;
            }
            e.bytes(root)?;
            Ok(())
        });
        self.call(cmd::STORE_CERTS, &p).map(|_| ())
    }

    /// `INSTALL_OEM_KEYS`.
    pub fn install_oem_keys(
        &mut self,
        oem_id: u32,
        product_id: u32,
        mastering: &[u8; 65],
        ephemeral: &[u8; 65],
        wrapped: &[u8; 40],
    ) -> Result<(), Error> {
        let p = payload(|e| {
            e.array(5)?
                .u32(oem_id)?
                .u32(product_id)?
                .bytes(mastering)?
                .bytes(ephemeral)?
                .bytes(wrapped)?;
            Ok(())
        });
        self.call(cmd::INSTALL_OEM_KEYS, &p).map(|_| ())
    }

    /// `LOCK`.
    pub fn lock(&mut self) -> Result<(), Error> {
        self.call(cmd::LOCK, &[0x80]).map(|_| ())
    }

    /// Streams a release (`IMAGE_BEGIN`, `IMAGE_DATA`..., `IMAGE_END`):
    /// `update` false installs now, true requests the update at next reset.
    /// `progress` gets the bytes sent so far.
    pub fn send_release(
        &mut self,
        upk: &[u8],
        enc: &[u8],
        update: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Installed, Error> {
        let begin = payload(|e| {
            e.array(3)?
                .u8(update as u8)?
                .bytes(upk)?
                .u32(enc.len() as u32)
                .map(|_| ())
        });
        self.call(cmd::IMAGE_BEGIN, &begin)?;
        let total = enc.len() as u64;
        let piece = MAX_PAYLOAD - 16;
        for (i, part) in enc.chunks(piece).enumerate() {
            let off = (i * piece) as u32;
            self.call(
                cmd::IMAGE_DATA,
                &payload(|e| e.array(2)?.u32(off)?.bytes(part).map(|_| ())),
            )?;
            progress(off as u64 + part.len() as u64, total);
        }
        let body = self.call(cmd::IMAGE_END, &[0x80])?;
        let mut r = Reader::new(&body);
        (|| {
            r.array_of(2, "image end")?;
            let i = read_installed(&mut r)?.ok_or(FormatError::InvalidValue {
                field: "entry",
                expected: "an entry",
            })?;
            r.bool("requested")?;
            r.finish()?;
            Ok(i)
        })()
        .map_err(malformed)
    }

    /// `READ_SIGNATURE_TABLE`.
    pub fn signature_table(&mut self) -> Result<(Option<Installed>, u64), Error> {
        let body = self.call(cmd::READ_SIGNATURE_TABLE, &[0x80])?;
        let mut r = Reader::new(&body);
        (|| {
            r.array_of(2, "signature table")?;
            let i = read_installed(&mut r)?;
            let min = r.uint("min counter")?;
            r.finish()?;
            Ok((i, min))
        })()
        .map_err(malformed)
    }

    /// `GET_CERT_CHAIN`: (chain, leaf first; OEM root).
    pub fn cert_chain(&mut self) -> Result<(Vec<Vec<u8>>, Vec<u8>), Error> {
        let body = self.call(cmd::GET_CERT_CHAIN, &[0x80])?;
        let mut r = Reader::new(&body);
        (|| {
            r.array_of(2, "certificates")?;
            let n = r.array("chain")?;
            let mut chain = vec![];
            for _ in 0..n.min(4) {
                chain.push(r.bstr("certificate", 2048)?.to_vec());
            }
            let root = r.bstr("root", 2048)?.to_vec();
            r.finish()?;
            Ok((chain, root))
        })()
        .map_err(malformed)
    }

    /// `SIGN_CHALLENGE`; the signature is checked against `identity`.
    pub fn sign_challenge(&mut self, label: &str, data: &[u8]) -> Result<[u8; 64], Error> {
        let body = self.call(
            cmd::SIGN_CHALLENGE,
            &payload(|e| e.array(2)?.str(label)?.bytes(data).map(|_| ())),
        )?;
        one_bstr::<64>(&body, "signature")
    }

    /// `SIGN_TLS13_CLIENT`: the device signs a TLS 1.3 client
    /// CertificateVerify over `transcript_hash` (32 or 48 bytes) with its
    /// identity key; returns `r || s`.
    pub fn sign_tls13_client(&mut self, transcript_hash: &[u8]) -> Result<[u8; 64], Error> {
        let body = self.call(
            cmd::SIGN_TLS13_CLIENT,
            &payload(|e| e.array(1)?.bytes(transcript_hash).map(|_| ())),
        )?;
        one_bstr::<64>(&body, "signature")
    }

    /// `VALIDATE_PEER_CHAIN`: the device validates `chain` (leaf first)
    /// against its OEM root at `now`; returns the leaf's public key.
    pub fn validate_peer_chain(&mut self, chain: &[Vec<u8>], now: u64) -> Result<[u8; 65], Error> {
        let p = payload(|e| {
            e.array(2)?.array(chain.len() as u64)?;
            for c in chain {
                e.bytes(c)?;
            }
            e.u64(now)?;
            Ok(())
        });
        let body = self.call(cmd::VALIDATE_PEER_CHAIN, &p)?;
        one_bstr::<65>(&body, "peer key")
    }

    /// `RESET`.
    pub fn reset(&mut self) -> Result<(), Error> {
        self.call(cmd::RESET, &[0x80]).map(|_| ())
    }
}

/// A response body of one fixed-size byte string: `[bstr .size N]`.
fn one_bstr<const N: usize>(body: &[u8], what: &'static str) -> Result<[u8; N], Error> {
    let mut r = Reader::new(body);
    (|| {
        r.array_of(1, what)?;
        let v = *r.bstr_exact::<N>(what)?;
        r.finish()?;
        Ok(v)
    })()
    .map_err(malformed)
}

/// ECDSA P-256 over a digest (the device signs digests).
pub fn verify_prehashed(public: &[u8; 65], digest: &[u8; 32], sig: &[u8; 64]) -> bool {
    trustchain_sbm::crypto::verify_prehash(public, digest, sig)
}

/// The digest a runtime challenge signature covers (for verifiers).
pub fn challenge(label: &str, data: &[u8]) -> [u8; 32] {
    challenge_digest(label.as_bytes(), data)
}
