//! Lab provisioning at the OEM (seed "Secure Development": "the OEM programs
//! the SBM into the microcontroller ... and provisions the microcontroller's
//! certificates, keys and security lock bits"). The device makes its own
//! keys; the OEM's device CA certifies the identity key from the product's
//! template; the product key reaches the device wrapped to the device's
//! key-agreement key; then the device is locked. The production issue runs
//! the same steps inside the Guardian.
use std::collections::BTreeMap;

use trustchain_formats::ProductId;
use trustchain_oem::crypto::PublicKey;
use trustchain_oem::keystore::{KeyLabel, KeyStore};
use trustchain_oem::oem::OemDir;
use trustchain_oem::pki;

use crate::client::{DeviceInfo, Error, Programmer, Transport};

/// Why lab provisioning failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// The device refused or the link failed.
    #[error(transparent)]
    Device(#[from] Error),
    /// The OEM side failed.
    #[error(transparent)]
    Oem(#[from] trustchain_oem::Error),
    /// The device is not blank.
    #[error("the device is {0}, not blank: it was provisioned already")]
    NotBlank(&'static str),
    /// The certificate could not be made.
    #[error("device certificate: {0}")]
    Certificate(String),
}

/// What was provisioned.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The device after locking.
    pub info: DeviceInfo,
    /// The device certificate (DER).
    pub certificate: Vec<u8>,
    /// The device's key-agreement public key (for `master --device`).
    pub agreement_key: [u8; 65],
}

/// Provisions the blank device behind `prog` for `product` of `oem`.
pub fn provision<T: Transport>(
    prog: &mut Programmer<T>,
    oem: &OemDir,
    keystore: &dyn KeyStore,
    product: ProductId,
    serial: u64,
) -> Result<Provisioned, LabError> {
    let info = prog.info()?;
    if info.lifecycle != 0 {
        return Err(LabError::NotBlank(crate::client::lifecycle_name(
            info.lifecycle,
        )));
    }
    let p = oem.product(product)?;
    let keys = prog.generate_keys(&info.uid)?;

    let dca_der = oem.device_ca_der()?;
    let issuer = pki::issuer_from_der(&dca_der).map_err(LabError::Certificate)?;
    let dca_key = keystore.signer(&KeyLabel::device_ca())?;
    let vars: BTreeMap<&str, String> = [
        ("serial", format!("{serial:08}")),
        ("uid", hex::encode(&info.uid)),
        ("oem_id", oem.oem_id().to_string()),
        ("product_id", product.to_string()),
        ("oem_name", oem.name().to_string()),
        ("product_name", p.config.name.clone()),
    ]
    .into_iter()
    .collect();
    let identity = PublicKey(keys.identity);
    let cert = pki::issue_device_cert(
        &p.template,
        &vars,
        &identity,
        oem.oem_id(),
        product,
        &issuer,
        dca_key.as_ref(),
    )
    .map_err(LabError::Certificate)?;
    prog.store_certs(&[cert.clone(), dca_der], &oem.root_der()?)?;

    let device_ka = PublicKey::from_sec1(&keys.agreement).ok_or(Error::BadProof)?;
    let (ephemeral, wrapped) = keystore.export_wrapped_for_device(&p.key_label(), &device_ka)?;
    let mastering = pki::parse_cert(&oem.mastering_der()?)
        .ok()
        .and_then(|c| pki::cert_public_key(&c))
        .ok_or_else(|| {
            LabError::Certificate("the mastering certificate has no P-256 key".into())
        })?;
    prog.install_oem_keys(
        oem.oem_id().get(),
        product.get(),
        &mastering.0,
        &ephemeral,
        &wrapped,
    )?;
    prog.lock()?;
    Ok(Provisioned {
        info: prog.info()?,
        certificate: cert,
        agreement_key: keys.agreement,
    })
}
