//! The connection protocol on the SBM side: one frame in, one frame out.
//! Payload shapes are in `docs/formats.md` ("SBM connection protocol").
use minicbor::encode::write::Cursor;
use minicbor::encode::Write;
use minicbor::Encoder;
use trustchain_formats::cbor::Reader;
use trustchain_formats::frame::{cmd, Frame, HEADER_LEN, MAX_FRAME, MAX_PAYLOAD, RESPONSE};
use trustchain_formats::FormatError;

use crate::hal::{Channel, Field, Flash, Protected, Rng};
use crate::state::{self, Installed};
use crate::{BootOutcome, Sbm, Status, SBM_VERSION};

type Enc<'a> = Encoder<Cursor<&'a mut [u8]>>;
type EncResult = Result<(), minicbor::encode::Error<minicbor::encode::write::EndOfSlice>>;

/// What the caller must do after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep serving.
    Continue,
    /// The programmer asked for a reset: reset and boot.
    Reset,
}

fn bad(_: FormatError) -> Status {
    Status::BadRequest
}

fn installed(e: &mut Enc<'_>, i: &Option<Installed>) -> EncResult {
    match i {
        None => {
            e.null()?;
        }
        Some(i) => {
            e.array(4)?.array(3)?;
            for v in i.version {
                e.u16(v)?;
            }
            e.u64(i.counter)?.u32(i.size)?.bytes(&i.digest)?;
        }
    }
    Ok(())
}

impl<F: Flash, P: Protected, R: Rng> Sbm<F, P, R> {
    /// Handles one request frame; writes the response frame into `out` and
    /// returns its length and what to do next.
    pub fn handle_frame(&mut self, request: &[u8], out: &mut [u8; MAX_FRAME]) -> (usize, After) {
        let (kind, seq, result) = match Frame::parse(request) {
            Err(_) => (0, 0, Err(Status::BadFrame)),
            Ok(f) => {
                let payload_area = &mut out[HEADER_LEN..HEADER_LEN + MAX_PAYLOAD];
                let (status_byte, body) = payload_area.split_at_mut(1);
                let mut enc = Encoder::new(Cursor::new(body));
                let r = self.dispatch(f.kind, f.payload, &mut enc);
                let used = enc.into_writer().position();
                status_byte[0] = match r {
                    Ok(_) => Status::Ok as u8,
                    Err(s) => s as u8,
                };
                (f.kind, f.seq, r.map(|after| (after, used)))
            }
        };
        let (len, after) = match result {
            Ok((after, used)) => (1 + used, after),
            Err(s) => {
                out[HEADER_LEN] = s as u8;
                (1, After::Continue)
            }
        };
        let n = Frame::seal_in_place(RESPONSE | kind, seq, len, out).unwrap_or(0);
        (n, after)
    }

    fn dispatch(&mut self, kind: u8, payload: &[u8], e: &mut Enc<'_>) -> Result<After, Status> {
        let mut r = Reader::new(payload);
        let overflow = |_| Status::BadRequest;
        match kind {
            cmd::GET_INFO => {
                r.array_of(0, "[]").map_err(bad)?;
                r.finish().map_err(bad)?;
                let (uid, n) = self.uid();
                let mut ty = [0u8; 4];
                let _ = self.prot.read(Field::DeviceType, &mut ty);
                let lifecycle = self.lifecycle() as u8;
                let (st, _) = state::load(&mut self.flash, &self.layout)?;
                let journal = st.journal as u8;
                (|| -> EncResult {
                    e.array(7)?
                        .bytes(&uid[..n])?
                        .u32(u32::from_be_bytes(ty))?
                        .str(SBM_VERSION)?;
                    e.u8(lifecycle)?;
                    installed(e, &st.installed)?;
                    e.u64(st.min_counter)?.u8(journal)?;
                    Ok(())
                })()
                .map_err(overflow)?;
            }
            cmd::GENERATE_KEYS => {
                r.array_of(1, "[nonce]").map_err(bad)?;
                let nonce = *r.bstr_exact::<32>("nonce").map_err(bad)?;
                r.finish().map_err(bad)?;
                let (id, ka, sig) = self.generate_keys(&nonce)?;
                (|| -> EncResult {
                    e.array(3)?.bytes(&id)?.bytes(&ka)?.bytes(&sig)?;
                    Ok(())
                })()
                .map_err(overflow)?;
            }
            cmd::STORE_CERTS => {
                r.array_of(2, "[[+ cert], root]").map_err(bad)?;
                let start = r.position();
                let n = r.array("certificate chain").map_err(bad)?;
                if n == 0 || n > 4 {
                    return Err(Status::BadCertificate);
                }
                let mut leaf: &[u8] = &[];
                for i in 0..n {
                    let c = r
                        .bstr("certificate", 2048)
                        .map_err(|_| Status::BadCertificate)?;
                    if i == 0 {
                        leaf = c;
                    }
                }
                let chain = r.slice_from(start);
                let root = r.bstr("root", 2048).map_err(|_| Status::BadCertificate)?;
                r.finish().map_err(bad)?;
                self.store_certs(chain, leaf, root)?;
                e.array(0).map_err(overflow)?;
            }
            cmd::INSTALL_OEM_KEYS => {
                r.array_of(5, "[oem, product, mastering, ephemeral, wrapped]")
                    .map_err(bad)?;
                let oem = u32::try_from(r.uint("OEM ID").map_err(bad)?)
                    .map_err(|_| Status::BadRequest)?;
                let product = u32::try_from(r.uint("product ID").map_err(bad)?)
                    .map_err(|_| Status::BadRequest)?;
                let mastering = *r.bstr_exact::<65>("mastering key").map_err(bad)?;
                let ephemeral = *r.bstr_exact::<65>("ephemeral key").map_err(bad)?;
                let wrapped = *r.bstr_exact::<40>("wrapped product key").map_err(bad)?;
                r.finish().map_err(bad)?;
                self.install_oem_keys(oem, product, &mastering, &ephemeral, &wrapped)?;
                e.array(0).map_err(overflow)?;
            }
            cmd::LOCK => {
                r.array_of(0, "[]").map_err(bad)?;
                r.finish().map_err(bad)?;
                self.lock()?;
                e.array(0).map_err(overflow)?;
            }
            cmd::IMAGE_BEGIN => {
                r.array_of(3, "[mode, upk, enc_len]").map_err(bad)?;
                let mode = r.uint("mode").map_err(bad)?;
                let upk = r
                    .bstr("UPK", crate::layout::MAX_DEVICE_UPK as usize)
                    .map_err(|e| match e {
                        FormatError::TooLarge { .. } => Status::TooLarge,
                        _ => Status::BadRequest,
                    })?;
                let enc_len = u32::try_from(r.uint("image length").map_err(bad)?)
                    .map_err(|_| Status::TooLarge)?;
                r.finish().map_err(bad)?;
                if mode > 1 {
                    return Err(Status::BadRequest);
                }
                self.image_begin(mode == 1, upk, enc_len)?;
                e.array(0).map_err(overflow)?;
            }
            cmd::IMAGE_DATA => {
                r.array_of(2, "[offset, bytes]").map_err(bad)?;
                let offset =
                    u32::try_from(r.uint("offset").map_err(bad)?).map_err(|_| Status::BadOffset)?;
                let data = r.bstr("data", MAX_PAYLOAD).map_err(bad)?;
                r.finish().map_err(bad)?;
                self.image_data(offset, data)?;
                e.array(0).map_err(overflow)?;
            }
            cmd::IMAGE_END => {
                r.array_of(0, "[]").map_err(bad)?;
                r.finish().map_err(bad)?;
                let (entry, requested) = self.image_end()?;
                (|| -> EncResult {
                    e.array(2)?;
                    installed(e, &Some(entry))?;
                    e.bool(requested)?;
                    Ok(())
                })()
                .map_err(overflow)?;
            }
            cmd::READ_SIGNATURE_TABLE => {
                r.array_of(0, "[]").map_err(bad)?;
                r.finish().map_err(bad)?;
                let (st, _) = state::load(&mut self.flash, &self.layout)?;
                (|| -> EncResult {
                    e.array(2)?;
                    installed(e, &st.installed)?;
                    e.u64(st.min_counter)?;
                    Ok(())
                })()
                .map_err(overflow)?;
            }
            cmd::GET_CERT_CHAIN => {
                r.array_of(0, "[]").map_err(bad)?;
                r.finish().map_err(bad)?;
                // The chain field is a CBOR array already; copy it as is.
                let mut chain = [0u8; 3072];
                let n = self.prot.read(Field::CertChain, &mut chain)?;
                let mut root = [0u8; 1024];
                let m = self.prot.read(Field::OemRoot, &mut root)?;
                (|| -> EncResult {
                    e.array(2)?;
                    e.writer_mut()
                        .write_all(&chain[..n])
                        .map_err(minicbor::encode::Error::write)?;
                    e.bytes(&root[..m])?;
                    Ok(())
                })()
                .map_err(overflow)?;
            }
            cmd::SIGN_CHALLENGE => {
                r.array_of(2, "[label, data]").map_err(bad)?;
                let label = r.tstr("label", 32).map_err(bad)?;
                let data = r.bstr("data", 1024).map_err(bad)?;
                r.finish().map_err(bad)?;
                let sig = self.sign_challenge(label.as_bytes(), data)?;
                e.array(1).and_then(|e| e.bytes(&sig)).map_err(overflow)?;
            }
            cmd::SIGN_TLS13_CLIENT => {
                r.array_of(1, "[transcript_hash]").map_err(bad)?;
                let hash = r.bstr("transcript_hash", 48).map_err(bad)?;
                r.finish().map_err(bad)?;
                let sig = self.sign_tls13_client(hash)?;
                e.array(1).and_then(|e| e.bytes(&sig)).map_err(overflow)?;
            }
            cmd::VALIDATE_PEER_CHAIN => {
                r.array_of(2, "[[+ cert], now]").map_err(bad)?;
                let n = r.array("chain").map_err(bad)?;
                if n == 0 || n > 4 {
                    return Err(Status::PeerInvalid);
                }
                let mut certs: [&[u8]; 4] = [&[]; 4];
                for slot in certs.iter_mut().take(n as usize) {
                    *slot = r.bstr("certificate", 2048).map_err(bad)?;
                }
                let now = r.uint("time").map_err(bad)?;
                r.finish().map_err(bad)?;
                let mut root = [0u8; 1024];
                let m = self
                    .prot
                    .read(Field::OemRoot, &mut root)
                    .map_err(|_| Status::NotProvisioned)?;
                let key = crate::peer::validate(&certs[..n as usize], &root[..m], now)?;
                e.array(1).and_then(|e| e.bytes(&key)).map_err(overflow)?;
            }
            cmd::RESET => {
                r.array_of(0, "[]").map_err(bad)?;
                r.finish().map_err(bad)?;
                e.array(0).map_err(overflow)?;
                return Ok(After::Reset);
            }
            _ => return Err(Status::UnknownCommand),
        }
        Ok(After::Continue)
    }

    /// Serves the channel until the programmer asks for a reset (or the
    /// channel closes). The board then resets and calls [`Sbm::boot`].
    pub fn serve<C: Channel>(
        &mut self,
        ch: &mut C,
        buf: &mut [u8; MAX_FRAME],
        out: &mut [u8; MAX_FRAME],
    ) {
        loop {
            let mut header = [0u8; HEADER_LEN];
            if !ch.read_exact(&mut header) {
                return;
            }
            let total = match Frame::total_len(&header) {
                Ok(t) => t,
                Err(_) => {
                    // Unsynchronised or oversized: answer and drop the header.
                    let n = Frame::seal_in_place(RESPONSE, 0, 1, {
                        out[HEADER_LEN] = Status::BadFrame as u8;
                        out
                    })
                    .unwrap_or(0);
                    ch.write_all(&out[..n]);
                    continue;
                }
            };
            buf[..HEADER_LEN].copy_from_slice(&header);
            if !ch.read_exact(&mut buf[HEADER_LEN..total]) {
                return;
            }
            let (n, after) = self.handle_frame(&buf[..total], out);
            ch.write_all(&out[..n]);
            if after == After::Reset {
                return;
            }
        }
    }

    /// The outcome of a boot, as the `RESET` response body would say it.
    pub fn describe_boot(outcome: &BootOutcome) -> Status {
        match outcome {
            BootOutcome::Run(_) => Status::Ok,
            BootOutcome::Recovery(s) => *s,
        }
    }
}
