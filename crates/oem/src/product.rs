//! Products: each has its own key-agreement key (the recipient that every
//! device of the product can open) and a device certificate template. The
//! product key is never used to sign: key separation.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trustchain_formats::ProductId;

use crate::audit::{self, Event};
use crate::crypto::PublicKey;
use crate::error::{Error, Result};
use crate::fsutil::{self, StagedDir};
use crate::keystore::{KeyKind, KeyLabel, KeyStore};
use crate::oem::{public_key_pem, OemDir};
use crate::template::Template;

/// `products/<id>/product.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    /// Format version, 1.
    pub format: u32,
    /// Product ID.
    pub product_id: u32,
    /// OEM ID.
    pub oem_id: u32,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created: String,
    /// Keystore label of the product key.
    pub key_label: String,
    /// The product key-agreement public key, SEC1 hex.
    pub key_agreement_public: String,
}

/// A loaded product.
#[derive(Debug)]
pub struct Product {
    /// The directory.
    pub dir: PathBuf,
    /// product.toml.
    pub config: ProductConfig,
    /// The product key-agreement public key.
    pub public_key: PublicKey,
    /// The device certificate template.
    pub template: Template,
    /// The product ID.
    pub id: ProductId,
}

/// What `oem product` made.
#[derive(Debug, Serialize)]
pub struct ProductReport {
    /// Product directory.
    pub dir: PathBuf,
    /// Product ID.
    pub product_id: u32,
    /// kid of the product key (SHA-256 of its point), hex.
    pub product_key_kid: String,
}

impl Product {
    /// Creates product `id` with a fresh key-agreement key in `keystore`.
    pub fn create(
        oem: &OemDir,
        keystore: &mut dyn KeyStore,
        id: ProductId,
        name: &str,
        template: Option<&Path>,
        operator: &str,
    ) -> Result<ProductReport> {
        let lock = oem.lock()?;
        let name = name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(Error::Usage("--name must be 1 to 64 characters".into()));
        }
        let template = match template {
            Some(p) => Template::load(p)?,
            None => Template::default(),
        };
        let target = oem.product_dir(id);
        let staged = StagedDir::new(&target, "product directory")?;
        let label = KeyLabel::product_kek(id.get());
        if keystore.contains(&label) {
            return Err(Error::AlreadyExists {
                path: oem.keystore_dir().join(format!("{label}.key")),
                what: "product key",
            });
        }
        let dir = staged.path();
        fsutil::write_new(
            &dir.join("template.toml"),
            template.to_toml().as_bytes(),
            "template",
        )?;
        // The key last: if anything above failed, no key was made.
        let public = keystore.generate(&label, KeyKind::EcdhP256)?;
        let config = ProductConfig {
            format: 1,
            product_id: id.get(),
            oem_id: oem.oem_id().get(),
            name: name.to_string(),
            created: audit::now_rfc3339(),
            key_label: label.to_string(),
            key_agreement_public: hex::encode(public.0),
        };
        let text = toml::to_string(&config).map_err(|e| Error::Usage(e.to_string()))?;
        fsutil::write_new(
            &dir.join("product.toml"),
            text.as_bytes(),
            "product description",
        )?;
        fsutil::write_new(
            &dir.join("product-key.pem"),
            public_key_pem(&public).as_bytes(),
            "product public key",
        )?;
        let dir = staged.commit()?;
        let kid = hex::encode(public.kid());
        oem.audit().append(
            &lock,
            operator,
            Event::ProductCreate {
                product: id.get(),
                name: name.to_string(),
                product_key_kid: kid.clone(),
            },
        )?;
        Ok(ProductReport {
            dir,
            product_id: id.get(),
            product_key_kid: kid,
        })
    }

    /// Loads product `id` of `oem`.
    pub fn load(oem: &OemDir, id: ProductId) -> Result<Self> {
        let dir = oem.product_dir(id);
        if !dir.is_dir() {
            return Err(Error::NoSuchProduct {
                oem_dir: oem.path().to_path_buf(),
                product: id.get(),
            });
        }
        let path = dir.join("product.toml");
        let corrupt = |problem: String| Error::Corrupt {
            path: path.clone(),
            problem,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| corrupt(e.to_string()))?;
        let config: ProductConfig = toml::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if config.format != 1
            || config.product_id != id.get()
            || config.oem_id != oem.oem_id().get()
        {
            return Err(corrupt(
                "format, product ID or OEM ID does not match its place".into(),
            ));
        }
        let public = hex::decode(&config.key_agreement_public)
            .ok()
            .and_then(|b| PublicKey::from_sec1(&b))
            .ok_or_else(|| corrupt("key_agreement_public is not a P-256 point".into()))?;
        let template = Template::load(&dir.join("template.toml"))?;
        Ok(Self {
            dir,
            config,
            public_key: public,
            template,
            id,
        })
    }

    /// The keystore label of the product key.
    pub fn key_label(&self) -> KeyLabel {
        KeyLabel::product_kek(self.id.get())
    }
}
