//! Secure mastering (seed "Secure Mastering"): the image is encrypted under
//! a fresh AES key; the Update Key Block carrying that key (wrapped for the
//! product key and any device keys), the version and the targeting is
//! signed with the mastering key. Output: `update.upk` + `update.enc`.
//!
//! Mastering streams: a reader thread reads, hashes and encrypts 1 MiB
//! blocks, the calling thread writes them, a third thread hashes the
//! ciphertext; a fixed number of blocks circulate, so memory does not grow
//! with the image and every core works.
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use serde::Serialize;
use trustchain_formats::cose::{encode_sign1, sig_structure, RecipientSpec};
use trustchain_formats::stream::{self, KEY_LEN, SEALED_CHUNK_SIZE, TAG_LEN};
use trustchain_formats::upk::{limits, ManifestSpec};
use trustchain_formats::{cose, OemId, ProductId, SecurityCounter, Sha256, Version};
use zeroize::Zeroizing;

use crate::audit::Event;
use crate::crypto::{sha256, wrap_for, Aead, Entropy, PublicKey, Sha256Stream, SystemEntropy};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::StagedDir;
use crate::image::{self, ImageFormat, LoadOptions};
use crate::keystore::{KeyLabel, KeyStore, Signer};
use crate::oem::{parse_public_key, OemDir};
use crate::pki;

/// Chunks per pipeline block (1 MiB of plaintext).
const BLOCK_CHUNKS: usize = 256;
/// Blocks in flight between the two threads.
const BLOCKS_IN_FLIGHT: usize = 6;

/// Everything the manifest says, except what mastering computes.
#[derive(Debug, Clone)]
pub struct MasterParams {
    /// OEM ID.
    pub oem_id: OemId,
    /// Product ID.
    pub product_id: ProductId,
    /// Version.
    pub version: Version,
    /// Anti-rollback counter.
    pub security_counter: SecurityCounter,
    /// Load address.
    pub load_address: u64,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Recipients of the content key: the product key first, then devices.
    pub recipients: Vec<PublicKey>,
    /// Optional UID allow-list.
    pub device_uids: Option<Vec<Vec<u8>>>,
    /// The mastering certificate (DER), carried in `x5chain`.
    pub mastering_cert_der: Vec<u8>,
}

/// The result of [`master_stream`].
#[derive(Debug)]
pub struct Mastered {
    /// `update.upk`.
    pub upk: Vec<u8>,
    /// The manifest inside it.
    pub manifest: ManifestSpec,
}

/// One pipeline block: chunk slots of `CHUNK_SIZE + TAG_LEN` bytes. The
/// plaintext is read straight into the slots (one `readv`), hashed, and
/// sealed in place, so no plaintext copy outlives the block's encryption.
struct Block {
    sealed: Vec<u8>,
    sealed_len: usize,
}

/// Encrypts `image` (exactly `image_size` bytes) to `out` and returns the
/// signed UPK. The content key comes from `entropy`, then one ephemeral key
/// per recipient.
pub fn master_stream<R: Read + Send, W: Write>(
    params: &MasterParams,
    image: R,
    image_size: u64,
    out: &mut W,
    signer: &dyn Signer,
    entropy: &mut dyn Entropy,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Mastered> {
    check_params(params, image_size)?;
    let mut cek = Zeroizing::new([0u8; KEY_LEN]);
    entropy.fill(&mut cek[..])?;
    let recipients = params
        .recipients
        .iter()
        .map(|r| wrap_for(r, &cek, entropy))
        .collect::<Result<Vec<RecipientSpec>>>()?;
    let (image_digest, ciphertext_digest) = encrypt_stream(&cek, image, image_size, out, progress)?;
    let manifest = ManifestSpec {
        security_counter: params.security_counter,
        oem_id: params.oem_id,
        product_id: params.product_id,
        version: params.version,
        image_digest: Sha256(image_digest),
        image_size,
        ciphertext_digest: Sha256(ciphertext_digest),
        load_address: params.load_address,
        created: params.created,
        recipients,
        device_uids: params.device_uids.clone(),
    };
    let payload = manifest.encode();
    let mut tbs = Vec::with_capacity(payload.len() + 32);
    sig_structure(&cose::PROTECTED_ES256, &payload, |b| {
        tbs.extend_from_slice(b)
    });
    let signature = signer.sign(&tbs)?;
    let upk = encode_sign1(Some(&params.mastering_cert_der), &payload, &signature);
    Ok(Mastered { upk, manifest })
}

fn check_params(p: &MasterParams, image_size: u64) -> Result<()> {
    if image_size == 0 {
        return Err(Error::Usage("the image is empty".into()));
    }
    if image_size > limits::MAX_IMAGE_SIZE {
        return Err(Error::Usage(format!(
            "the image is {image_size} bytes; a UPK describes at most {} bytes",
            limits::MAX_IMAGE_SIZE
        )));
    }
    if p.load_address.checked_add(image_size).is_none() {
        return Err(Error::Usage(
            "load address + image size overflows 64 bits".into(),
        ));
    }
    if p.recipients.is_empty() || p.recipients.len() as u64 > cose::limits::MAX_RECIPIENTS {
        return Err(Error::Usage(format!(
            "1 to {} recipients (product key + --device keys)",
            cose::limits::MAX_RECIPIENTS
        )));
    }
    if p.mastering_cert_der.len() > cose::limits::MAX_CERT_LEN {
        return Err(Error::Usage(
            "the mastering certificate is too large".into(),
        ));
    }
    if let Some(uids) = &p.device_uids {
        if uids.is_empty() || uids.len() as u64 > limits::MAX_UIDS {
            return Err(Error::Usage(format!(
                "1 to {} --allow-uid values",
                limits::MAX_UIDS
            )));
        }
        if uids
            .iter()
            .any(|u| u.is_empty() || u.len() > limits::MAX_UID_LEN)
        {
            return Err(Error::Usage(format!(
                "a UID is 1 to {} bytes",
                limits::MAX_UID_LEN
            )));
        }
    }
    Ok(())
}

/// The encryption pipeline; returns (plaintext SHA-256, ciphertext SHA-256).
fn encrypt_stream<R: Read + Send, W: Write>(
    cek: &[u8; KEY_LEN],
    mut image: R,
    image_size: u64,
    out: &mut W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<([u8; 32], [u8; 32])> {
    let aead = Aead::aes128(cek)?;
    let chunks =
        stream::chunk_count(image_size).ok_or_else(|| Error::Usage("the image is empty".into()))?;
    let (full_tx, full_rx) = sync_channel::<Result<Block>>(BLOCKS_IN_FLIGHT);
    let (free_tx, free_rx) = sync_channel::<Block>(BLOCKS_IN_FLIGHT);
    for _ in 0..BLOCKS_IN_FLIGHT {
        let block = Block {
            sealed: vec![0u8; BLOCK_CHUNKS * SEALED_CHUNK_SIZE],
            sealed_len: 0,
        };
        free_tx.send(block).map_err(|_| Error::Crypto("pipeline"))?;
    }
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<[u8; 32]> {
            let mut hash = Sha256Stream::default();
            let mut chunk = 0u64;
            while chunk < chunks {
                let Ok(mut block) = free_rx.recv() else { break };
                let n = (chunks - chunk).min(BLOCK_CHUNKS as u64);
                let lens: Vec<usize> = (chunk..chunk + n)
                    .map(|i| stream::chunk_len(image_size, i))
                    .collect();
                let want: usize = lens.iter().sum();
                let filled = read_slots(&mut image, &mut block.sealed, &lens)?;
                if filled != want {
                    let e =
                        || Error::Usage("the image file shrank while it was being mastered".into());
                    let _ = full_tx.send(Err(e()));
                    return Err(e());
                }
                let mut at = 0;
                for &len in &lens {
                    hash.update(&block.sealed[at..at + len]);
                    at += len + TAG_LEN;
                }
                let mut at = 0;
                for &len in &lens {
                    let last = chunk + 1 == chunks;
                    let tag = aead.seal(
                        stream::nonce(chunk, last),
                        &cose::CONTENT_AAD,
                        &mut block.sealed[at..at + len],
                    )?;
                    block.sealed[at + len..at + len + TAG_LEN].copy_from_slice(&tag);
                    at += len + TAG_LEN;
                    chunk += 1;
                }
                block.sealed_len = at;
                if full_tx.send(Ok(block)).is_err() {
                    break;
                }
            }
            drop(full_tx);
            let mut extra = [0u8; 1];
            if image.read(&mut extra).at("image")? != 0 {
                return Err(Error::Usage(
                    "the image file grew while it was being mastered".into(),
                ));
            }
            Ok(hash.finish())
        });
        // Hashing the ciphertext runs on its own thread so that writing the
        // file (the calling thread) and both digests share the cores.
        let (hash_tx, hash_rx) = sync_channel::<Block>(BLOCKS_IN_FLIGHT);
        let hasher = s.spawn(move || {
            let mut hash = Sha256Stream::default();
            for block in hash_rx.iter() {
                hash.update(&block.sealed[..block.sealed_len]);
                // The reader may already be done with the last block.
                let _ = free_tx.send(block);
            }
            hash.finish()
        });
        let mut written = 0u64;
        let mut failure = None;
        for block in full_rx.iter() {
            let block = match block {
                Ok(b) => b,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            if let Err(e) = out.write_all(&block.sealed[..block.sealed_len]) {
                failure = Some(Error::Io {
                    path: PathBuf::from("update.enc"),
                    source: e,
                });
                break;
            }
            written += block.sealed_len as u64;
            progress(written);
            if hash_tx.send(block).is_err() {
                break;
            }
        }
        drop(hash_tx);
        drop(full_rx);
        let cipher_digest = hasher
            .join()
            .map_err(|_| Error::Crypto("mastering thread panicked"))?;
        let plain = reader
            .join()
            .map_err(|_| Error::Crypto("mastering thread panicked"))?;
        if let Some(e) = failure {
            return Err(e);
        }
        let plain = plain?;
        if Some(written) != stream::ciphertext_size(image_size) {
            return Err(Error::Usage("the image ended early".into()));
        }
        Ok((plain, cipher_digest))
    })
}

/// Reads plaintext into the chunk slots of `buf` (slot `i` starts at
/// `i * SEALED_CHUNK_SIZE` and takes `lens[i]` bytes) with vectored reads;
/// returns how many bytes were read before end of input.
fn read_slots<R: Read>(r: &mut R, buf: &mut [u8], lens: &[usize]) -> Result<usize> {
    let mut slices: Vec<std::io::IoSliceMut<'_>> = buf
        .chunks_mut(SEALED_CHUNK_SIZE)
        .zip(lens)
        .map(|(slot, &len)| std::io::IoSliceMut::new(&mut slot[..len]))
        .collect();
    let mut rest = &mut slices[..];
    let mut total = 0;
    while !rest.is_empty() {
        match r.read_vectored(rest) {
            Ok(0) => break,
            Ok(k) => {
                total += k;
                std::io::IoSliceMut::advance_slices(&mut rest, k);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::Io {
                    path: PathBuf::from("image"),
                    source: e,
                })
            }
        }
    }
    Ok(total)
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::Io {
                    path: PathBuf::from("image"),
                    source: e,
                })
            }
        }
    }
    Ok(n)
}

/// A mastering request from the command line.
#[derive(Debug, Clone)]
pub struct MasterRequest {
    /// Product.
    pub product: ProductId,
    /// Version.
    pub version: Version,
    /// Counter, or the version's default.
    pub security_counter: Option<u64>,
    /// Master even below the last counter.
    pub force: bool,
    /// The image file.
    pub image: PathBuf,
    /// Its format, or detect.
    pub format: Option<ImageFormat>,
    /// Loader options (gap, size, raw load address).
    pub load: LoadOptions,
    /// Device certificates or public keys to add as recipients.
    pub devices: Vec<PathBuf>,
    /// UID allow-list.
    pub device_uids: Option<Vec<Vec<u8>>>,
    /// Output directory (must not exist).
    pub out: PathBuf,
    /// Who is mastering.
    pub operator: String,
}

/// What was mastered.
#[derive(Debug, Serialize)]
pub struct MasterReport {
    /// Output directory.
    pub out: PathBuf,
    /// Product.
    pub product: u32,
    /// Version.
    pub version: String,
    /// Counter.
    pub security_counter: u64,
    /// Image format found.
    pub image_format: String,
    /// Plaintext size.
    pub image_size: u64,
    /// Load address.
    pub load_address: u64,
    /// Plaintext SHA-256.
    pub image_sha256: String,
    /// `update.enc` SHA-256.
    pub ciphertext_sha256: String,
    /// `update.upk` SHA-256.
    pub upk_sha256: String,
    /// Recipients (product + devices).
    pub recipients: usize,
    /// Whether a lower counter was forced.
    pub forced: bool,
}

/// Reads a `--device` file: a certificate with keyAgreement usage, or a
/// P-256 public key (PEM or DER).
pub fn read_device_key(path: &Path) -> Result<PublicKey> {
    let bytes = std::fs::read(path).at(path)?;
    let bad = |problem: &str| Error::BadKeyInput {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    if let Some(k) = parse_public_key(&bytes) {
        return Ok(k);
    }
    let cert = pki::parse_cert(&bytes)
        .map_err(|_| bad("neither a P-256 public key nor an X.509 certificate"))?;
    if !pki::allows_key_agreement(&cert) {
        return Err(bad("the certificate's key usage does not include keyAgreement, so its key must not be used to encrypt (key separation)"));
    }
    pki::cert_public_key(&cert).ok_or_else(|| bad("the certificate's key is not a P-256 point"))
}

/// Masters a release into `req.out`, logs it in the audit log, and returns
/// what was made. On any error nothing is left in `req.out`.
pub fn master_release(
    oem: &OemDir,
    keystore: &dyn KeyStore,
    req: &MasterRequest,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<MasterReport> {
    // Held from the counter check to the audit record (`DirLock`).
    let lock = oem.lock()?;
    let product = oem.product(req.product)?;
    let staged = StagedDir::new(&req.out, "output directory")?;
    let counter = req
        .security_counter
        .unwrap_or(req.version.default_counter().0);
    let last = oem.audit().last_counter(req.product.get())?;
    if let Some(last) = last {
        if counter < last && !req.force {
            return Err(Error::CounterRollback {
                product: req.product.get(),
                requested: counter,
                last,
            });
        }
    }
    let mut recipients = vec![product.public_key.clone()];
    for d in &req.devices {
        recipients.push(read_device_key(d)?);
    }

    let signer = keystore.signer(&KeyLabel::mastering())?;
    let cert_der = oem.mastering_der()?;
    let cert = pki::parse_cert(&cert_der).map_err(|problem| Error::Corrupt {
        path: oem.path().join("mastering.pem"),
        problem,
    })?;
    if pki::cert_public_key(&cert).as_ref() != Some(signer.public_key()) {
        return Err(Error::Corrupt {
            path: oem.path().join("mastering.pem"),
            problem: "does not certify the mastering key in the keystore".into(),
        });
    }

    let img_err = |source| Error::Image {
        path: req.image.clone(),
        source,
    };
    let file = File::open(&req.image).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: req.image.clone(),
            what: "image file",
        },
        _ => Error::Io {
            path: req.image.clone(),
            source: e,
        },
    })?;
    let size = file.metadata().at(&req.image)?.len();
    let mut head = [0u8; 64];
    let n = read_full(&mut (&file), &mut head)?;
    let format = req
        .format
        .unwrap_or_else(|| ImageFormat::detect(&head[..n]));
    drop(file);

    let mut params = MasterParams {
        oem_id: oem.oem_id(),
        product_id: req.product,
        version: req.version,
        security_counter: SecurityCounter(counter),
        load_address: req.load.raw_load_address,
        created: crate::audit::unix_now(),
        recipients,
        device_uids: req.device_uids.clone(),
        mastering_cert_der: cert_der,
    };
    let enc_path = staged.path().join("update.enc");
    let mut enc =
        std::io::BufWriter::with_capacity(1 << 20, File::create(&enc_path).at(&enc_path)?);
    let (mastered, image_size) = match format {
        ImageFormat::Raw => {
            if size == 0 {
                return Err(img_err(image::ImageError::Empty));
            }
            if size > limits::MAX_IMAGE_SIZE {
                return Err(img_err(image::ImageError::TooLarge {
                    size,
                    max: limits::MAX_IMAGE_SIZE,
                }));
            }
            let f = File::open(&req.image).at(&req.image)?;
            let p = |w: u64| progress(w, stream::ciphertext_size(size).unwrap_or(u64::MAX));
            let m = master_stream(
                &params,
                BufReader::with_capacity(1 << 20, f),
                size,
                &mut enc,
                signer.as_ref(),
                &mut SystemEntropy,
                &p,
            )?;
            (m, size)
        }
        ImageFormat::IntelHex | ImageFormat::Elf => {
            if size > req.load.max_size.saturating_mul(4).max(1 << 20) {
                return Err(img_err(image::ImageError::TooLarge {
                    size,
                    max: req.load.max_size.saturating_mul(4),
                }));
            }
            let bytes = std::fs::read(&req.image).at(&req.image)?;
            let flat = image::load(&bytes, format, &req.load).map_err(img_err)?;
            params.load_address = flat.load_address;
            let len = flat.bytes.len() as u64;
            let p = |w: u64| progress(w, stream::ciphertext_size(len).unwrap_or(u64::MAX));
            let m = master_stream(
                &params,
                &flat.bytes[..],
                len,
                &mut enc,
                signer.as_ref(),
                &mut SystemEntropy,
                &p,
            )?;
            (m, len)
        }
    };
    enc.flush().at(&enc_path)?;
    drop(enc);
    let upk_path = staged.path().join("update.upk");
    std::fs::write(&upk_path, &mastered.upk).at(&upk_path)?;

    let m = &mastered.manifest;
    let report = MasterReport {
        out: req.out.clone(),
        product: req.product.get(),
        version: req.version.to_string(),
        security_counter: counter,
        image_format: format.to_string(),
        image_size,
        load_address: m.load_address,
        image_sha256: m.image_digest.to_string(),
        ciphertext_sha256: m.ciphertext_digest.to_string(),
        upk_sha256: hex::encode(sha256(&mastered.upk)),
        recipients: m.recipients.len(),
        forced: last.is_some_and(|l| counter < l),
    };
    // Log first, then publish: a release never exists without its record.
    oem.audit().append(
        &lock,
        &req.operator,
        Event::Master {
            product: report.product,
            version: report.version.clone(),
            security_counter: counter,
            image_sha256: report.image_sha256.clone(),
            ciphertext_sha256: report.ciphertext_sha256.clone(),
            upk_sha256: report.upk_sha256.clone(),
            recipients: report.recipients,
            forced: report.forced,
            out: req.out.display().to_string(),
        },
    )?;
    staged.commit()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{unwrap_with, EcdhKey, EcdsaKey, TestVectorEntropy};
    use trustchain_formats::upk::Upk;

    fn test_params(recipient: PublicKey) -> MasterParams {
        MasterParams {
            oem_id: OemId::new(1).unwrap(),
            product_id: ProductId::new(2).unwrap(),
            version: Version {
                major: 1,
                minor: 0,
                patch: 0,
            },
            security_counter: SecurityCounter(1),
            load_address: 0,
            created: 0,
            recipients: vec![recipient],
            device_uids: None,
            mastering_cert_der: vec![0x30, 0x00],
        }
    }

    /// Several pipeline blocks, more than are in flight, and a short last chunk.
    #[test]
    fn multi_block_image_round_trips() {
        let (signer, _) = EcdsaKey::generate().unwrap();
        let mut e = TestVectorEntropy::new([3; 32]);
        let (product, _) = EcdhKey::generate(&mut e).unwrap();
        let len = (BLOCKS_IN_FLIGHT + 2) * BLOCK_CHUNKS * stream::CHUNK_SIZE + 123;
        let image: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let params = test_params(product.public_key().clone());
        let calls = std::sync::atomic::AtomicU64::new(0);
        let mut enc = Vec::new();
        let m = master_stream(
            &params,
            &image[..],
            len as u64,
            &mut enc,
            &signer,
            &mut e,
            &|_| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
        )
        .unwrap();
        assert_eq!(
            enc.len() as u64,
            stream::ciphertext_size(len as u64).unwrap()
        );
        assert_eq!(
            calls.into_inner(),
            (BLOCKS_IN_FLIGHT + 3) as u64,
            "one progress call per block"
        );
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("update.enc");
        std::fs::write(&path, &enc).unwrap();
        let upk = Upk::parse(&m.upk).unwrap();
        let r = upk.manifest.encryption.recipients().next().unwrap();
        let cek = unwrap_with(&product, &r.ephemeral, r.wrapped_key).unwrap();
        let mut plain = Vec::new();
        crate::release::decrypt_stream(&cek, &path, &upk, &mut plain).unwrap();
        assert!(plain == image, "round trip");
    }

    #[test]
    fn short_or_long_input_is_refused() {
        let (signer, _) = EcdsaKey::generate().unwrap();
        let mut e = TestVectorEntropy::new([4; 32]);
        let (product, _) = EcdhKey::generate(&mut e).unwrap();
        let params = test_params(product.public_key().clone());
        let image = vec![7u8; 10_000];
        let mut out = Vec::new();
        assert!(master_stream(
            &params,
            &image[..],
            10_001,
            &mut out,
            &signer,
            &mut e,
            &|_| {}
        )
        .is_err());
        let mut out = Vec::new();
        assert!(master_stream(
            &params,
            &image[..],
            9_999,
            &mut out,
            &signer,
            &mut e,
            &|_| {}
        )
        .is_err());
        assert!(master_stream(&params, &image[..], 0, &mut out, &signer, &mut e, &|_| {}).is_err());
    }
}
