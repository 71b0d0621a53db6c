//! Issuing device certificates inside the Guardian, against a job's count.
//! The job's issuing CA key and product key never leave the Guardian's
//! keystore: the issuing key signs here, the product key leaves only
//! wrapped to a device's own key-agreement key.
use std::collections::BTreeMap;

use trustchain_formats::{OemId, ProductId};
use trustchain_oem::crypto::PublicKey;
use trustchain_oem::keystore::sealed::SealedKeyStore;
use trustchain_oem::keystore::{KeyStore, Signer};
use trustchain_oem::pki::{self, IssuerCert};
use trustchain_oem::template::Template;

use crate::error::{Error, Result};
use crate::import::job_labels;
use crate::store::{JobRecord, Store};

/// A job ready to issue certificates.
pub struct JobIssuer<'a> {
    /// The job.
    pub job: JobRecord,
    template: Template,
    issuer: IssuerCert,
    signer: Box<dyn Signer>,
    ks: &'a SealedKeyStore,
}

impl<'a> JobIssuer<'a> {
    /// Loads job `id` and its issuing key handle.
    pub fn open(store: &Store, ks: &'a SealedKeyStore, id: i64) -> Result<Self> {
        let job = store.job(id)?;
        let template = Template::parse(&job.template)
            .map_err(|e| trustchain_oem::Error::Usage(format!("job {id} template: {e}")))?;
        let issuer = pki::issuer_from_der(&job.issuing_ca_cert)
            .map_err(|e| trustchain_oem::Error::Usage(format!("job {id} issuing CA: {e}")))?;
        let (issuing_label, _) = job_labels(id);
        let signer = ks.signer(&issuing_label)?;
        Ok(Self {
            job,
            template,
            issuer,
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
        let oem = OemId::new(self.job.oem_id).ok_or(trustchain_oem::Error::Crypto("OEM ID"))?;
        let product = ProductId::new(self.job.product_id)
            .ok_or(trustchain_oem::Error::Crypto("product ID"))?;
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
            let vars: BTreeMap<&str, String> = [
                ("serial", format!("{serial:08}")),
                ("uid", hex::encode(uid)),
                ("oem_id", oem.to_string()),
                ("product_id", product.to_string()),
                ("oem_name", self.job.oem_name.clone()),
                ("product_name", self.job.product_name.clone()),
            ]
            .into_iter()
            .collect();
            pki::issue_device_cert(
                &self.template,
                &vars,
                identity,
                oem,
                product,
                &self.issuer,
                self.signer.as_ref(),
            )
            .map_err(|e| trustchain_oem::Error::Usage(format!("device certificate: {e}")).into())
        })
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
