//! Receiving a release into staging, verifying it, and installing it into
//! the application slot under the journal.
//!
//! Power may fail anywhere. The order of writes makes that harmless:
//! 1. the release is written to staging; nothing else changes;
//! 2. it is verified in full (signature, targeting, counter, ciphertext
//!    digest, key unwrap) before anything else is written;
//! 3. the journal records "installing" (one atomic state record);
//! 4. the application slot is erased and each 4 KiB chunk is authenticated
//!    (AES-GCM) before its plaintext is programmed;
//! 5. one atomic state record sets the new signature table entry, raises
//!    the anti-rollback minimum and clears the journal.
//!
//! A reset during 4 finds the journal and redoes 2-5 from the intact
//! staging copy; a reset before 3 leaves the old application untouched.
use sha2::Digest;
use trustchain_formats::cose::{self, sig_structure};
use trustchain_formats::stream::{self, CHUNK_SIZE, TAG_LEN};
use trustchain_formats::upk::Upk;
use zeroize::Zeroizing;

use crate::crypto;
use crate::hal::{Field, Flash, FlashError, Protected, Rng};
use crate::layout::{MAX_DEVICE_UPK, STAGING_ENC, STAGING_UPK};
use crate::state::{self, Installed, Journal, State};
use crate::{Receive, Sbm, Status};

/// Bytes gathered before one program operation while receiving (a
/// multiple of every supported write size).
pub(crate) const PROGRAM_UNIT: usize = 256;

/// Staging header: "TCSG" | 1 | 0 0 0 | upk_len u32 | enc_len u32.
const STAGING_MAGIC: [u8; 4] = *b"TCSG";

impl From<FlashError> for Status {
    fn from(_: FlashError) -> Self {
        Status::FlashError
    }
}

/// A release that passed every check. Only `check_upk` (through
/// `verify_staged` and `image_begin`) makes one; it carries the unwrapped
/// content key.
pub(crate) struct Verified {
    cek: Zeroizing<[u8; 16]>,
    upk_hash: [u8; 32],
    entry: Installed,
}

/// The OEM keys as stored: OEM ID u32 | product ID u32 | mastering SEC1 point.
pub(crate) const OEM_KEYS_LEN: usize = 4 + 4 + 65;

impl<F: Flash, P: Protected, R: Rng> Sbm<F, P, R> {
    /// `IMAGE_BEGIN`: checks the UPK (signature, targeting, counter, sizes,
    /// key unwrap) before anything is written; only then erases what
    /// staging needs, stores the UPK there and starts receiving the
    /// ciphertext. A refused UPK changes nothing.
    pub(crate) fn image_begin(
        &mut self,
        update: bool,
        upk: &[u8],
        enc_len: u32,
    ) -> Result<(), Status> {
        if !self.prot.is_written(Field::OemKeys) || !self.prot.is_written(Field::ProductKey) {
            return Err(Status::NotProvisioned);
        }
        self.rx = None;
        let upk_len = u32::try_from(upk.len()).map_err(|_| Status::TooLarge)?;
        if upk_len == 0 || upk_len > MAX_DEVICE_UPK {
            return Err(Status::TooLarge);
        }
        let need = STAGING_ENC.checked_add(enc_len).ok_or(Status::TooLarge)?;
        if enc_len == 0 || need > self.layout.staging.len {
            return Err(Status::TooLarge);
        }
        self.upk[..upk.len()].copy_from_slice(upk);
        self.check_upk(upk_len, enc_len)?;

        let page = self.flash.page_size();
        let mut off = 0;
        while off < need {
            self.flash.erase_page(self.layout.staging.offset + off)?;
            off += page;
        }
        // The UPK into its slot, padded to the write size.
        let ws = self.flash.write_size() as usize;
        let mut at = 0;
        while at < upk.len() {
            let n = (upk.len() - at).min(PROGRAM_UNIT);
            let mut unit = [0xffu8; PROGRAM_UNIT];
            unit[..n].copy_from_slice(&upk[at..at + n]);
            let padded = n.div_ceil(ws) * ws;
            self.flash.program(
                self.layout.staging.offset + STAGING_UPK + at as u32,
                &unit[..padded],
            )?;
            at += n;
        }
        self.rx = Some(Receive {
            update,
            upk_len,
            enc_len,
            next: 0,
            pending: [0xff; PROGRAM_UNIT],
            pending_len: 0,
        });
        Ok(())
    }

    /// `IMAGE_DATA`: programs the next piece of `update.enc`.
    pub(crate) fn image_data(&mut self, offset: u32, data: &[u8]) -> Result<(), Status> {
        let mut rx = self.rx.ok_or(Status::WrongState)?;
        let end = offset
            .checked_add(data.len() as u32)
            .ok_or(Status::BadOffset)?;
        if offset != rx.next || end > rx.enc_len {
            return Err(Status::BadOffset);
        }
        for &b in data {
            rx.pending[rx.pending_len] = b;
            rx.pending_len += 1;
            rx.next += 1;
            if rx.pending_len == PROGRAM_UNIT {
                self.flush_pending(&mut rx)?;
            }
        }
        self.rx = Some(rx);
        Ok(())
    }

    fn flush_pending(&mut self, rx: &mut Receive) -> Result<(), Status> {
        if rx.pending_len == 0 {
            return Ok(());
        }
        let ws = self.flash.write_size() as usize;
        let first = rx.next - rx.pending_len as u32;
        let at = self.layout.staging.offset + STAGING_ENC + first;
        let padded = rx.pending_len.div_ceil(ws) * ws;
        let result = self.flash.program(at, &rx.pending[..padded]);
        rx.pending = [0xff; PROGRAM_UNIT];
        rx.pending_len = 0;
        if result.is_err() {
            self.rx = None;
        }
        Ok(result?)
    }

    /// `IMAGE_END`: writes the staging header, verifies the whole release,
    /// and installs now (programmer) or records the update request for the
    /// next reset (application). Returns the entry the signature table will
    /// hold.
    pub(crate) fn image_end(&mut self) -> Result<(Installed, bool), Status> {
        let mut rx = self.rx.take().ok_or(Status::WrongState)?;
        if rx.next != rx.enc_len {
            return Err(Status::BadOffset);
        }
        self.flush_pending(&mut rx)?;
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&STAGING_MAGIC);
        header[4] = 1;
        header[8..12].copy_from_slice(&rx.upk_len.to_be_bytes());
        header[12..16].copy_from_slice(&rx.enc_len.to_be_bytes());
        self.flash.program(self.layout.staging.offset, &header)?;
        let v = self.verify_staged()?;
        let entry = v.entry;
        if rx.update {
            let (mut st, _) = state::load(&mut self.flash, &self.layout)?;
            st.journal = Journal::Requested;
            st.staged_upk = v.upk_hash;
            state::store(&mut self.flash, &self.layout, &st)?;
        } else {
            self.install(v)?;
        }
        Ok((entry, rx.update))
    }

    /// Verifies the release in staging without writing anything.
    pub(crate) fn verify_staged(&mut self) -> Result<Verified, Status> {
        let base = self.layout.staging.offset;
        let mut header = [0u8; 16];
        self.flash.read(base, &mut header)?;
        if header[..4] != STAGING_MAGIC || header[4] != 1 {
            return Err(Status::NoImage);
        }
        let upk_len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let enc_len = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
        if upk_len == 0 || upk_len > MAX_DEVICE_UPK {
            return Err(Status::UpkMalformed);
        }
        let enc_end = STAGING_ENC.checked_add(enc_len).ok_or(Status::TooLarge)?;
        if enc_end > self.layout.staging.len {
            return Err(Status::TooLarge);
        }
        // Hash the ciphertext first (it trusts nothing); then the UPK.
        let cipher_digest = self.hash_region(base + STAGING_ENC, enc_len)?;
        self.flash
            .read(base + STAGING_UPK, &mut self.upk[..upk_len as usize])?;
        let (v, signed_digest) = self.check_upk(upk_len, enc_len)?;
        if cipher_digest != signed_digest {
            return Err(Status::CiphertextMismatch);
        }
        Ok(v)
    }

    /// Every check of the UPK in the RAM buffer (`self.upk[..upk_len]`)
    /// for a ciphertext of `enc_len` bytes, signature first. Returns the
    /// verified release and the signed ciphertext digest to compare.
    fn check_upk(&mut self, upk_len: u32, enc_len: u32) -> Result<(Verified, [u8; 32]), Status> {
        let upk_bytes = &self.upk[..upk_len as usize];
        let upk_hash = crypto::sha256(upk_bytes);
        let upk = Upk::parse(upk_bytes).map_err(|_| Status::UpkMalformed)?;

        // The signature first: nothing in the manifest is trusted before it.
        let mut keys = [0u8; OEM_KEYS_LEN];
        let n = self
            .prot
            .read(Field::OemKeys, &mut keys)
            .map_err(|_| Status::NotProvisioned)?;
        if n != OEM_KEYS_LEN {
            return Err(Status::NotProvisioned);
        }
        let mut h = crypto::Hasher::new();
        sig_structure(upk.sign1.protected, upk.sign1.payload, |b| h.update(b));
        if !crypto::verify_prehash(&keys[8..], &h.finalize().into(), upk.sign1.signature) {
            return Err(Status::BadSignature);
        }
        let m = &upk.manifest;
        if m.oem_id.get().to_be_bytes() != keys[..4] {
            return Err(Status::WrongOem);
        }
        if m.product_id.get().to_be_bytes() != keys[4..8] {
            return Err(Status::WrongProduct);
        }
        if let Some(uids) = m.device_uids {
            let mut uid = [0u8; 32];
            let n = self
                .prot
                .read(Field::Uid, &mut uid)
                .map_err(|_| Status::NotProvisioned)?;
            if !uids.contains(&uid[..n]) {
                return Err(Status::UidNotAllowed);
            }
        }
        let (st, _) = state::load(&mut self.flash, &self.layout)?;
        if m.security_counter.0 < st.min_counter {
            return Err(Status::Rollback);
        }
        if m.load_address != self.layout.app_address() {
            return Err(Status::WrongLoadAddress);
        }
        let size = u32::try_from(m.image_size).map_err(|_| Status::TooLarge)?;
        if size > self.layout.app.len {
            return Err(Status::TooLarge);
        }
        if m.ciphertext_size() != enc_len as u64 {
            return Err(Status::CiphertextMismatch);
        }
        let cek = unwrap_cek(&mut self.prot, &upk)?;
        let entry = Installed {
            version: [m.version.major, m.version.minor, m.version.patch],
            counter: m.security_counter.0,
            size,
            load_address: m.load_address as u32,
            digest: m.image_digest.0,
        };
        Ok((
            Verified {
                cek,
                upk_hash,
                entry,
            },
            m.ciphertext_digest.0,
        ))
    }

    /// Installs a verified release (steps 3-5 of the module docs).
    pub(crate) fn install(&mut self, v: Verified) -> Result<Installed, Status> {
        let (mut st, _) = state::load(&mut self.flash, &self.layout)?;
        st.journal = Journal::Installing;
        st.staged_upk = v.upk_hash;
        state::store(&mut self.flash, &self.layout, &st)?;

        let app = self.layout.app;
        let page = self.flash.page_size();
        let mut off = 0;
        while off < v.entry.size {
            self.flash.erase_page(app.offset + off)?;
            off += page;
        }
        let size = v.entry.size as u64;
        let chunks = stream::chunk_count(size).ok_or(Status::NoImage)?;
        let ws = self.flash.write_size() as usize;
        let mut h = crypto::Hasher::new();
        for i in 0..chunks {
            let len = stream::chunk_len(size, i);
            let src = self.layout.staging.offset
                + STAGING_ENC
                + (i as u32) * (stream::SEALED_CHUNK_SIZE as u32);
            self.flash.read(src, &mut self.chunk[..len + TAG_LEN])?;
            let mut tag = [0u8; 16];
            tag.copy_from_slice(&self.chunk[len..len + TAG_LEN]);
            let nonce = stream::nonce(i, i + 1 == chunks);
            if !crypto::open_chunk(
                &v.cek,
                &nonce,
                &cose::CONTENT_AAD,
                &mut self.chunk[..len],
                &tag,
            ) {
                self.abandon(&mut st)?;
                return Err(Status::DecryptionFailed);
            }
            h.update(&self.chunk[..len]);
            // Pad the last write unit with the erased value.
            let padded = len.div_ceil(ws) * ws;
            self.chunk[len..padded].fill(0xff);
            self.flash.program(
                app.offset + (i as u32) * CHUNK_SIZE as u32,
                &self.chunk[..padded],
            )?;
        }
        self.chunk.fill(0);
        let digest: [u8; 32] = h.finalize().into();
        if digest != v.entry.digest {
            self.abandon(&mut st)?;
            return Err(Status::PlaintextMismatch);
        }
        st.journal = Journal::Idle;
        st.installed = Some(v.entry);
        st.min_counter = st.min_counter.max(v.entry.counter);
        state::store(&mut self.flash, &self.layout, &st)?;
        Ok(v.entry)
    }

    /// An install that cannot finish: the slot no longer holds the old image.
    fn abandon(&mut self, st: &mut State) -> Result<(), Status> {
        st.journal = Journal::Idle;
        st.installed = None;
        state::store(&mut self.flash, &self.layout, st)?;
        Ok(())
    }

    /// At boot: carry out or finish what the journal says.
    pub(crate) fn resume_journal(&mut self) -> Result<(), Status> {
        let (mut st, _) = state::load(&mut self.flash, &self.layout)?;
        if st.journal == Journal::Idle {
            return Ok(());
        }
        match self.verify_staged() {
            Ok(v) if v.upk_hash == st.staged_upk => self.install(v).map(|_| ()),
            // A flash failure (power) proves nothing about the release: retry at next boot.
            Err(Status::FlashError) => Err(Status::FlashError),
            Ok(_) | Err(_) => {
                // The staged release changed or no longer verifies. If the
                // install had started, the slot is no longer the old image.
                if st.journal == Journal::Installing {
                    st.installed = None;
                }
                st.journal = Journal::Idle;
                state::store(&mut self.flash, &self.layout, &st)?;
                Ok(())
            }
        }
    }
}

/// The content key through the product key, or this device's own key.
fn unwrap_cek<P: Protected>(prot: &mut P, upk: &Upk<'_>) -> Result<Zeroizing<[u8; 16]>, Status> {
    let mut found = false;
    for field in [Field::ProductKey, Field::AgreementKey] {
        let mut scalar = Zeroizing::new([0u8; 32]);
        if prot.read(field, &mut scalar[..]).ok() != Some(32) {
            continue;
        }
        let Some(public) = crypto::public_key(&scalar[..]) else {
            continue;
        };
        let kid = crypto::sha256(&public);
        if let Some(r) = upk.manifest.encryption.recipient_for(&kid) {
            found = true;
            if let Some(cek) =
                crypto::unwrap_content_key(&scalar[..], &r.ephemeral.to_sec1(), r.wrapped_key)
            {
                return Ok(cek);
            }
        }
    }
    Err(if found {
        Status::DecryptionFailed
    } else {
        Status::NotRecipient
    })
}
