//! Issuing device certificates inside the Guardian, against a job's count.
//! The job's issuing CA key and product key never leave the Guardian's
//! keystore: the issuing key signs here, the product key leaves only
//! wrapped to a device's own key-agreement key.
use std::collections::BTreeMap;

use trustchain_formats::{OemId, ProductId};
use trustchain_oem::crypto::PublicKey;
use trustchain_oem::keystore::sealed::SealedKeyStore;
use trustchain_oem::keystore::{KeyStore, Signer};
use trustchain_oem::pki::{self, DeviceCertIssuer};
use trustchain_oem::template::Template;

use crate::error::{Error, Result};
use crate::import::job_labels;
use crate::store::{JobRecord, Store};

/// A job ready to issue certificates.
pub struct JobIssuer<'a> {
    /// The job.
    pub job: JobRecord,
    /// The job's device certificates, prepared once (§14).
    certs: DeviceCertIssuer,
    /// The placeholder values shared by every device of the job.
    vars: BTreeMap<&'static str, String>,
    signer: Box<dyn Signer>,
    ks: &'a SealedKeyStore,
}

impl<'a> JobIssuer<'a> {
    /// Loads job `id` and its issuing key handle.
    pub fn open(store: &Store, ks: &'a SealedKeyStore, id: i64) -> Result<Self> {
        let job = store.job(id)?;
        let template = Template::parse(&job.template)
            .map_err(|e| trustchain_oem::Error::Usage(format!("job {id} template: {e}")))?;
        let (issuing_label, _) = job_labels(id);
        let signer = ks.signer(&issuing_label)?;
        let oem = OemId::new(job.oem_id).ok_or(trustchain_oem::Error::Crypto("OEM ID"))?;
        let product =
            ProductId::new(job.product_id).ok_or(trustchain_oem::Error::Crypto("product ID"))?;
        let certs = DeviceCertIssuer::new(
            &template,
            &job.issuing_ca_cert,
            signer.public_key(),
            oem,
            product,
        )
        .map_err(|e| trustchain_oem::Error::Usage(format!("job {id} issuing CA: {e}")))?;
        let vars = [
            ("oem_id", oem.to_string()),
            ("product_id", product.to_string()),
            ("oem_name", job.oem_name.clone()),
            ("product_name", job.product_name.clone()),
        ]
        .into_iter()
        .collect();
        Ok(Self {
            job,
            certs,
            vars,
            signer,
            ks,
        })
    }

    /// Whether the job allows a device of this UID and type.
    pub fn allows(&self, uid: &[u8], device_type: u32) -> bool {
        let type_ok =
            self.job.device_types.is_empty() || self.job.device_types.contains(&device_type);
        let uid_ok = match &self.job.uid_range {
            None => true,
            Some((lo, hi)) => uid.len() == lo.len() && uid >= &lo[..] && uid <= &hi[..],
        };
        type_ok && uid_ok
    }

    /// Issues the device certificate for `identity` (consuming one unit of
    /// the count, durably recorded before it returns). `now` for expiry.
    pub fn issue(
        &self,
        store: &mut Store,
        uid: &[u8],
        device_type: u32,
        identity: &PublicKey,
        now: u64,
    ) -> Result<(u64, Vec<u8>)> {
        let id = self.job.id;
        if !self.allows(uid, device_type) {
            return Err(Error::DeviceNotAllowed {
                uid: hex::encode(uid),
                device_type,
                job: id,
            });
        }
        self.issue_batch(store, &[(uid, device_type, identity)], now)?
            .pop()
            .unwrap_or(Err(Error::JobExhausted(id)))
    }

    /// Group commit of [`JobIssuer::issue`] for several devices (uid, type,
    /// identity): one transaction, one fsync, every certificate recorded
    /// before any is returned.
    pub fn issue_batch(
        &self,
        store: &mut Store,
        devices: &[(&[u8], u32, &PublicKey)],
        now: u64,
    ) -> Result<Vec<crate::store::Issued>> {
        let id = self.job.id;
        if now >= self.job.expires {
            return Err(Error::JobExpired(id));
        }
        let allowed: Vec<bool> = devices
            .iter()
            .map(|(uid, ty, _)| self.allows(uid, *ty))
            .collect();
        let ids: Vec<(&[u8], u32)> = devices.iter().map(|(u, t, _)| (*u, *t)).collect();
        store.issue_batch(id, &ids, |serial, i| {
            let (uid, device_type, identity) = devices[i];
            if !allowed[i] {
                return Err(Error::DeviceNotAllowed {
                    uid: hex::encode(uid),
                    device_type,
                    job: id,
                });
            }
            self.device_cert(serial, uid, identity)
        })
    }

    /// [`JobIssuer::issue_batch`] over many devices, `group` per
    /// transaction, pipelined: a signing thread builds and signs the next
    /// group's certificates while this thread records and commits the
    /// current one. Each group goes to `deliver` (with the index of its
    /// first device) only once its transaction has committed, so every
    /// certificate is still durably recorded before it leaves.
    ///
    /// The signing thread runs ahead with the serial numbers the devices
    /// will get if nothing else issues from the job meanwhile (another
    /// process on the same job, a duplicate UID). Inside the transaction
    /// every serial is assigned exactly as [`Store::issue_batch`] always
    /// does; a certificate made for another serial is dropped unseen and
    /// that device is signed again there. The count check, the duplicate
    /// check and the records are those of [`Store::issue_batch`]. An error
    /// (the database) stops the run at the group it happened in: the
    /// groups before it were committed and delivered, that one was not
    /// committed, and the ones after it were never started.
    pub fn issue_pipelined(
        &self,
        store: &mut Store,
        devices: &[(&[u8], u32, &PublicKey)],
        group: usize,
        now: u64,
        deliver: &mut dyn FnMut(usize, Vec<crate::store::Issued>),
    ) -> Result<()> {
        let id = self.job.id;
        if now >= self.job.expires {
            return Err(Error::JobExpired(id));
        }
        let group = group.max(1);
        let job = store.job(id)?;
        let (mut serial, mut budget) =
            (job.serial_start + job.issued + job.failed, job.remaining());
        std::thread::scope(|s| {
            let (ahead, signed) = std::sync::mpsc::sync_channel::<Vec<Option<(u64, Vec<u8>)>>>(1);
            s.spawn(move || {
                for chunk in devices.chunks(group) {
                    let certs = chunk
                        .iter()
                        .map(|&(uid, ty, identity)| {
                            if budget == 0 || !self.allows(uid, ty) {
                                return None;
                            }
                            let this = serial;
                            (serial, budget) = (serial + 1, budget - 1);
                            self.device_cert(this, uid, identity)
                                .ok()
                                .map(|cert| (this, cert))
                        })
                        .collect();
                    if ahead.send(certs).is_err() {
                        break;
                    }
                }
            });
            for (k, chunk) in devices.chunks(group).enumerate() {
                let mut presigned = signed.recv().unwrap_or_default();
                presigned.resize(chunk.len(), None);
                let ids: Vec<(&[u8], u32)> = chunk.iter().map(|(u, t, _)| (*u, *t)).collect();
                let issued = store.issue_batch(id, &ids, |serial, i| {
                    let (uid, device_type, identity) = chunk[i];
                    if !self.allows(uid, device_type) {
                        return Err(Error::DeviceNotAllowed {
                            uid: hex::encode(uid),
                            device_type,
                            job: id,
                        });
                    }
                    match presigned[i].take() {
                        Some((s, cert)) if s == serial => Ok(cert),
                        _ => self.device_cert(serial, uid, identity),
                    }
                })?;
                deliver(k * group, issued);
            }
            Ok(())
        })
    }

    /// The certificate of one device with job serial `serial`.
    fn device_cert(&self, serial: u64, uid: &[u8], identity: &PublicKey) -> Result<Vec<u8>> {
        let mut vars = self.vars.clone();
        vars.insert("serial", format!("{serial:08}"));
        vars.insert("uid", hex::encode(uid));
        self.certs
            .issue(&vars, identity, self.signer.as_ref())
            .map_err(|e| trustchain_oem::Error::Usage(format!("device certificate: {e}")).into())
    }

    /// The product key wrapped to a device's key-agreement key.
    pub fn wrapped_product_key(&self, device_ka: &PublicKey) -> Result<([u8; 65], [u8; 40])> {
        let (_, product_label) = job_labels(self.job.id);
        Ok(self
            .ks
            .export_wrapped_for_device(&product_label, device_ka)?)
    }

    /// The chain a device stores after its own certificate.
    pub fn chain(&self) -> [Vec<u8>; 2] {
        [
            self.job.issuing_ca_cert.clone(),
            self.job.device_ca_cert.clone(),
        ]
    }

    /// The mastering public key.
    pub fn mastering_key(&self) -> Result<PublicKey> {
        pki::parse_cert(&self.job.mastering_cert)
            .ok()
            .and_then(|c| pki::cert_public_key(&c))
            .ok_or_else(|| {
                trustchain_oem::Error::Usage("job mastering certificate has no P-256 key".into())
                    .into()
            })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use trustchain_formats::{OemId, ProductId, Version};
    use trustchain_oem::crypto::EcdsaKey;
    use trustchain_oem::image::LoadOptions;
    use trustchain_oem::keystore::passphrase::Passphrase;
    use trustchain_oem::keystore::sealed::KdfParams;
    use trustchain_oem::master::{master_release, MasterRequest};
    use trustchain_oem::oem::OemDir;
    use trustchain_oem::product::Product;
    use trustchain_oem::wrap::{wrap, WrapRequest};

    use super::*;
    use crate::GuardianDir;

    const FAST: KdfParams = KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// An OEM, a Guardian that trusts it, and a job of `count` from serial 1000.
    fn job(tmp: &std::path::Path, count: u64) -> (GuardianDir, SealedKeyStore, i64) {
        let pass = || Passphrase::new(zeroize::Zeroizing::new("p".to_string())).unwrap();
        let oem_dir = tmp.join("oem");
        OemDir::init(
            &oem_dir,
            OemId::new(0x1234).unwrap(),
            "Acme",
            &pass(),
            FAST,
            "t",
        )
        .unwrap();
        let oem = OemDir::open(&oem_dir).unwrap();
        let mut oks = oem.unlock(&pass()).unwrap();
        let product = ProductId::new(7).unwrap();
        Product::create(&oem, &mut oks, product, "Thermostat", None, "t").unwrap();
        let img = tmp.join("fw.bin");
        std::fs::write(&img, vec![0x5a; 600]).unwrap();
        let release = tmp.join("rel");
        let master = MasterRequest {
            product,
            version: Version {
                major: 1,
                minor: 0,
                patch: 0,
            },
            security_counter: None,
            force: false,
            image: img,
            format: None,
            load: LoadOptions {
                raw_load_address: 0x0800_0000,
                ..LoadOptions::default()
            },
            devices: vec![],
            device_uids: None,
            out: release.clone(),
            operator: "t".into(),
        };
        master_release(&oem, &oks, &master, &|_, _| {}).unwrap();
        let gdir = tmp.join("g");
        GuardianDir::init(&gdir, "Center", &pass(), FAST).unwrap();
        let g = GuardianDir::open(&gdir).unwrap();
        g.trust_root(&oem_dir.join("root.pem")).unwrap();
        let mut ks = g.unlock(&pass()).unwrap();
        let pkg = tmp.join("p.tcpkg");
        let req = WrapRequest {
            product,
            guardian: gdir.join("identity.pem"),
            count,
            release,
            out: pkg.clone(),
            serial_start: 1000,
            uid_range: None,
            device_types: vec![],
            expires: now() + 86_400,
            operator: "t".into(),
        };
        wrap(&oem, &mut oks, &req).unwrap();
        let id = crate::import::import(&g, &mut ks, &pkg, now()).unwrap().job;
        (g, ks, id)
    }

    /// The job serial a certificate's CN carries ("Thermostat 00001000").
    fn cn_serial(cert: &[u8]) -> u64 {
        let c = pki::parse_cert(cert).unwrap();
        let info = pki::describe(&c);
        let cn = info
            .subject
            .split(',')
            .find_map(|a| a.strip_prefix("CN="))
            .unwrap();
        cn.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn pipelined_issuance_records_every_certificate_before_delivery_and_keeps_the_count() {
        let tmp = tempfile::tempdir().unwrap();
        let (g, ks, id) = job(tmp.path(), 8);
        let mut store = g.store().unwrap();
        let issuer = JobIssuer::open(&store, &ks, id).unwrap();
        let keys: Vec<PublicKey> = (0..10)
            .map(|_| EcdsaKey::generate().unwrap().0.public_key().clone())
            .collect();
        // "b" twice (a duplicate shifts the serials the signing thread
        // guessed), and 10 devices for a count of 8 (two more are taken by
        // another station between two groups).
        let uids: [&[u8]; 10] = [b"a", b"b", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i"];
        let reqs: Vec<(&[u8], u32, &PublicKey)> =
            uids.iter().zip(&keys).map(|(u, k)| (*u, 1u32, k)).collect();
        let mut other = g.store().unwrap();
        let other_key = EcdsaKey::generate().unwrap().0.public_key().clone();
        let mut delivered: BTreeMap<usize, crate::store::Issued> = BTreeMap::new();
        issuer
            .issue_pipelined(&mut store, &reqs, 3, now(), &mut |first, group| {
                // Delivered only once committed: every certificate is in the database.
                let recorded = other.devices(id).unwrap();
                for r in group.iter().flatten() {
                    let fp = hex::encode(trustchain_oem::crypto::sha256(&r.1));
                    assert!(recorded
                        .iter()
                        .any(|d| d.serial == r.0 && d.cert_sha256 == fp));
                }
                if first == 0 {
                    // Another station issues two from the same job meanwhile:
                    // the next group, already signed ahead, has the wrong
                    // serials and must be signed again.
                    for (uid, want) in [(&b"x"[..], 1002), (b"y", 1003)] {
                        let (s, _) = issuer.issue(&mut other, uid, 1, &other_key, now()).unwrap();
                        assert_eq!(s, want);
                    }
                }
                for (i, r) in group.into_iter().enumerate() {
                    delivered.insert(first + i, r);
                }
            })
            .unwrap();
        assert_eq!(delivered.len(), 10);
        assert!(matches!(delivered[&2], Err(Error::DuplicateUid { .. })));
        for i in 7..10 {
            assert!(matches!(delivered[&i], Err(Error::JobExhausted(_))));
        }
        let mut serials = vec![];
        for (i, r) in &delivered {
            let Ok((serial, cert)) = r else { continue };
            // Each certificate names the serial it was recorded under, and
            // certifies its device's key under the job's issuing CA.
            assert_eq!(cn_serial(cert), *serial, "device {i}");
            let c = pki::parse_cert(cert).unwrap();
            assert_eq!(pki::cert_public_key(&c).as_ref(), Some(reqs[*i].2));
            pki::verify_issued_by(cert, &issuer.job.issuing_ca_cert).unwrap();
            serials.push(*serial);
        }
        assert_eq!(serials, vec![1000, 1001, 1004, 1005, 1006, 1007]);
        let jobs = store.jobs().unwrap();
        assert_eq!((jobs[0].issued, jobs[0].remaining), (8, 0));
        assert_eq!(store.devices(id).unwrap().len(), 8);
        assert!(g.verify_audit().unwrap().is_ok());
    }
}
