//! `trustchain inspect`: says what any artifact of this project is and what
//! it holds, for people (text) and scripts (JSON). Inspecting verifies
//! nothing cryptographically; `trustchain verify` does.
use std::path::Path;

use serde_json::{json, Value};
use trustchain_formats::upk::Upk;

use crate::audit::AuditLog;
use crate::crypto::sha256;
use crate::error::{Error, Result};
use crate::keystore::sealed::KEY_MAGIC;
use crate::keystore::KeyKind;
use crate::oem::parse_public_key;
use crate::pki;
use crate::template::Template;

/// Largest file `inspect` reads.
pub const MAX_INSPECT_LEN: u64 = 16 * 1024 * 1024;

/// What `inspect` found.
#[derive(Debug)]
pub struct Inspection {
    /// The kind of artifact.
    pub kind: &'static str,
    /// Its contents.
    pub details: Value,
}

impl Inspection {
    /// For people: `kind` then `key value` lines; nested objects and lists
    /// of objects (a chain's certificates) indented under their key.
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n", self.kind);
        if let Value::Object(map) = &self.details {
            for (k, v) in map {
                text_line(&mut out, 2, k, v);
            }
        }
        out
    }
    /// For scripts.
    pub fn to_json(&self) -> Value {
        json!({ "kind": self.kind, "details": self.details })
    }
}

const CERT_PEM_BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// A PEM file of several certificates: a Guardian's `identity.pem` (what
/// OEMs wrap packages for: its ID and both certificates), or any chain.
fn inspect_pem_chain(path: &Path, bytes: &[u8]) -> Result<Inspection> {
    if let Ok(id) = crate::wrap::GuardianIdentity::load(path) {
        let describe = |der: &[u8]| {
            pki::parse_cert(der)
                .ok()
                .and_then(|c| serde_json::to_value(pki::describe(&c)).ok())
                .unwrap_or_default()
        };
        return Ok(Inspection {
            kind: "Guardian identity (key-agreement certificate, signed by the Guardian's signing certificate)",
            details: json!({
                "guardian_id": hex::encode(id.id),
                "key_agreement_public_key": hex::encode(id.kem_key.0),
                "key_agreement_certificate": describe(&id.kem_cert),
                "signing_certificate": describe(&id.signing_cert),
            }),
        });
    }
    let certs = x509_cert::Certificate::load_pem_chain(bytes).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        problem: format!("a PEM file of certificates that does not parse: {e}"),
    })?;
    let described: Vec<Value> = certs
        .iter()
        .map(|c| serde_json::to_value(pki::describe(c)).unwrap_or_default())
        .collect();
    Ok(Inspection {
        kind: "X.509 certificate chain (PEM)",
        details: json!({
            "certificates": described.len(),
            "subjects": certs.iter().map(|c| c.tbs_certificate.subject.to_string()).collect::<Vec<_>>(),
            "chain": described,
        }),
    })
}

fn text_line(out: &mut String, indent: usize, key: &str, v: &Value) {
    let pad = " ".repeat(indent);
    let width = 22usize.saturating_sub(indent);
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    match v {
        Value::Object(map) => {
            out.push_str(&format!("{pad}{key}\n"));
            for (k, v) in map {
                text_line(out, indent + 2, k, v);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
            out.push_str(&format!("{pad}{key}\n"));
            for (i, item) in items.iter().enumerate() {
                text_line(out, indent + 2, &format!("[{i}]"), item);
            }
        }
        Value::Array(items) if items.is_empty() => {
            out.push_str(&format!("{pad}{key:<width$} -\n"));
        }
        Value::Array(items) => {
            let joined: Vec<String> = items.iter().map(scalar).collect();
            out.push_str(&format!("{pad}{key:<width$} {}\n", joined.join(", ")));
        }
        other => out.push_str(&format!("{pad}{key:<width$} {}\n", scalar(other))),
    }
}

/// Inspects the file at `path`.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let bytes = crate::fsutil::read_bounded(path, MAX_INSPECT_LEN, "file to inspect")?;
    if bytes.len() as u64 > MAX_INSPECT_LEN {
        return Err(Error::UnknownArtifact {
            path: path.to_path_buf(),
            problem: "larger than 16 MiB".into(),
        });
    }
    let unknown = |problem: String| Error::UnknownArtifact {
        path: path.to_path_buf(),
        problem,
    };
    if bytes.first() == Some(&0xd2) {
        if let Ok(r) = trustchain_formats::report::Report::parse(&bytes) {
            let b = &r.body;
            return Ok(Inspection {
                kind: "production report (COSE_Sign1 by a Guardian) - signature NOT verified, use `trustchain oem reconcile`",
                details: json!({
                    "package_id": hex::encode(b.package_id),
                    "job": b.job,
                    "oem_id": b.oem_id.get(),
                    "product_id": b.product_id.get(),
                    "count": b.count,
                    "issued": b.issued,
                    "failed": b.failed,
                    "device_records": b.device_count(),
                    "log_head": hex::encode(b.log_head),
                    "guardian_id": hex::encode(sha256(r.kem_cert)),
                    "created": b.created,
                }),
            });
        }
        let upk = Upk::parse(&bytes).map_err(|source| Error::Format {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(describe_upk(&upk, &bytes));
    }
    if bytes.starts_with(&[0xd8, 0x60]) {
        let p = trustchain_formats::package::Encrypted::parse(&bytes).map_err(|source| {
            Error::Format {
                path: path.to_path_buf(),
                source,
            }
        })?;
        return Ok(Inspection {
            kind: "production package (COSE_Encrypt to one Guardian) - contents readable only inside that Guardian",
            details: json!({
                "recipient_kid": hex::encode(p.kid),
                "content": "A256GCM",
                "key_wrap": "ECDH-ES+A256KW",
                "ciphertext_size": p.ciphertext.len(),
                "package_sha256": hex::encode(sha256(&bytes)),
            }),
        });
    }
    let pem_certs = bytes
        .windows(CERT_PEM_BEGIN.len())
        .filter(|w| *w == CERT_PEM_BEGIN)
        .count();
    if pem_certs > 1 {
        return inspect_pem_chain(path, &bytes);
    }
    if bytes.trim_ascii_start().starts_with(CERT_PEM_BEGIN) || bytes.first() == Some(&0x30) {
        if let Ok(cert) = pki::parse_cert(&bytes) {
            return Ok(Inspection {
                kind: "X.509 certificate",
                details: serde_json::to_value(pki::describe(&cert)).unwrap_or_default(),
            });
        }
    }
    if let Some(k) = parse_public_key(&bytes) {
        return Ok(Inspection {
            kind: "P-256 public key",
            details: json!({ "public_key": hex::encode(k.0), "kid": hex::encode(k.kid()) }),
        });
    }
    if bytes.starts_with(&KEY_MAGIC[..]) {
        return describe_sealed_key(&bytes).ok_or_else(|| unknown("a truncated sealed key".into()));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| unknown("binary data of no known format".into()))?;
    if text.contains("[subject]") {
        let t = Template::parse(text).map_err(|problem| Error::Template {
            path: path.to_path_buf(),
            problem,
        })?;
        return Ok(Inspection {
            kind: "device certificate template",
            details: serde_json::to_value(t).unwrap_or_default(),
        });
    }
    if text.starts_with("{\"seq\":") {
        let records = AuditLog::new(path).records()?;
        return Ok(Inspection {
            kind: "audit log",
            details: json!({ "records": records.len(), "chain": "intact", "last": records.last() }),
        });
    }
    if text.contains("kdf = \"argon2id\"") {
        let v: toml::Value = toml::from_str(text).map_err(|e| unknown(e.to_string()))?;
        let mut d = serde_json::to_value(v).unwrap_or_default();
        if let Value::Object(m) = &mut d {
            m.remove("check");
        }
        return Ok(Inspection {
            kind: "sealed keystore description",
            details: d,
        });
    }
    Err(unknown(
        "not a UPK, certificate, public key, sealed key, keystore, template or audit log".into(),
    ))
}

fn describe_upk(upk: &Upk<'_>, bytes: &[u8]) -> Inspection {
    let m = &upk.manifest;
    let signer = upk
        .sign1
        .x5chain
        .and_then(|c| pki::parse_cert(c).ok())
        .map(|c| c.tbs_certificate.subject.to_string());
    Inspection {
        kind:
            "Update Key Block (UPK, COSE_Sign1) - signature NOT verified, use `trustchain verify`",
        details: json!({
            "format_version": trustchain_formats::upk::FORMAT_VERSION,
            "oem_id": m.oem_id.get(),
            "product_id": m.product_id.get(),
            "version": m.version.to_string(),
            "security_counter": m.security_counter.0,
            "image_size": m.image_size,
            "ciphertext_size": m.ciphertext_size(),
            "load_address": format!("0x{:08x}", m.load_address),
            "image_sha256": m.image_digest.to_string(),
            "ciphertext_sha256": m.ciphertext_digest.to_string(),
            "created": m.created,
            "cipher": "A128GCM-STREAM4K (COSE alg -70001)",
            "recipients": m.encryption.recipients().map(|r| json!({
                "alg": "ECDH-ES+A128KW",
                "kid": hex::encode(r.kid),
            })).collect::<Vec<_>>(),
            "device_uids": m.device_uids.map(|l| l.iter().map(hex::encode).collect::<Vec<_>>()),
            "signer": signer,
            "upk_sha256": hex::encode(sha256(bytes)),
        }),
    }
}

fn describe_sealed_key(bytes: &[u8]) -> Option<Inspection> {
    let rest = &bytes[KEY_MAGIC.len()..];
    let kind = KeyKind::from_code(*rest.first()?)?;
    let label_len = *rest.get(1)? as usize;
    let label = std::str::from_utf8(rest.get(2..2 + label_len)?).ok()?;
    let public = rest.get(3 + label_len..3 + label_len + 65)?;
    Some(Inspection {
        kind: "sealed private key (AES-256-GCM under the keystore passphrase)",
        details: json!({ "label": label, "key": kind.name(), "public_key": hex::encode(public) }),
    })
}
