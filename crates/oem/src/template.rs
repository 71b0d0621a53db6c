//! The device certificate template (TOML) a product carries; the Guardian
//! fills it in for each device. Format in `docs/formats.md`.
//!
//! ```toml
//! format = 1
//! validity_days = 0            # 0: no expiry (99991231235959Z, RFC 5280 §4.1.2.5)
//! key_usages = ["digital_signature"]
//! extended_key_usages = ["client_auth"]
//! [subject]
//! common_name = "{product_name} {serial}"
//! organization = "{oem_name}"
//! serial_number = "{uid}"
//! ```
//! The OEM ID and product ID extensions are always added; they are what
//! binds a device to its product.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Placeholders a subject field may use.
pub const PLACEHOLDERS: &[&str] = &[
    "serial",
    "uid",
    "oem_id",
    "product_id",
    "oem_name",
    "product_name",
];
/// Key usages a device certificate may have.
pub const KEY_USAGES: &[&str] = &["digital_signature", "key_agreement"];
/// Extended key usages a device certificate may have.
pub const EXTENDED_KEY_USAGES: &[&str] = &["client_auth", "server_auth"];
/// Longest rendered subject field (RFC 5280 upper bound for CN is 64).
pub const MAX_FIELD_LEN: usize = 64;
/// Largest template file.
pub const MAX_TEMPLATE_LEN: u64 = 16 * 1024;

/// Subject fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// CN.
    pub common_name: String,
    /// O.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// OU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizational_unit: Option<String>,
    /// serialNumber attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// C (two letters, no placeholders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// A device certificate template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Format version, 1.
    pub format: u32,
    /// Validity in days from issuance; 0 means no well-defined expiry.
    pub validity_days: u32,
    /// Key usages.
    pub key_usages: Vec<String>,
    /// Extended key usages.
    #[serde(default)]
    pub extended_key_usages: Vec<String>,
    /// Subject.
    pub subject: Subject,
}

impl Default for Template {
    fn default() -> Self {
        Self {
            format: 1,
            validity_days: 0,
            key_usages: vec!["digital_signature".into()],
            extended_key_usages: vec!["client_auth".into()],
            subject: Subject {
                common_name: "{product_name} {serial}".into(),
                organization: Some("{oem_name}".into()),
                organizational_unit: None,
                serial_number: Some("{uid}".into()),
                country: None,
            },
        }
    }
}

/// Checks the `{...}` placeholders of one field.
fn check_field(name: &str, value: &str) -> std::result::Result<(), String> {
    let mut rest = value;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!("subject.{name}: '}}' without '{{'"));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("subject.{name}: '{{' without '}}'"))?;
        let ph = &after[..close];
        if !PLACEHOLDERS.contains(&ph) {
            return Err(format!(
                "subject.{name}: unknown placeholder {{{ph}}} (known: {})",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    if value.trim().is_empty() {
        return Err(format!("subject.{name}: empty"));
    }
    Ok(())
}

impl Template {
    /// Parses and checks a template.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let t: Template = toml::from_str(text).map_err(|e| e.to_string())?;
        t.check()?;
        Ok(t)
    }

    /// Reads and checks a template file.
    pub fn load(path: &Path) -> Result<Self> {
        let err = |problem: String| Error::Template {
            path: path.to_path_buf(),
            problem,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.len() > MAX_TEMPLATE_LEN {
            return Err(err(format!("larger than {MAX_TEMPLATE_LEN} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    /// Checks every rule of the format.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.format != 1 {
            return Err(format!(
                "format {} is not supported (expected 1)",
                self.format
            ));
        }
        for (i, ku) in self.key_usages.iter().enumerate() {
            if self.key_usages[..i].contains(ku) {
                return Err(format!("key usage '{ku}' is listed twice"));
            }
            if !KEY_USAGES.contains(&ku.as_str()) {
                return Err(format!(
                    "unknown key usage '{ku}' (known: {})",
                    KEY_USAGES.join(", ")
                ));
            }
        }
        if !self.key_usages.iter().any(|k| k == "digital_signature") {
            return Err("key_usages must include digital_signature (the device signs challenges with its identity key)".into());
        }
        for (i, eku) in self.extended_key_usages.iter().enumerate() {
            if self.extended_key_usages[..i].contains(eku) {
                return Err(format!("extended key usage '{eku}' is listed twice"));
            }
            if !EXTENDED_KEY_USAGES.contains(&eku.as_str()) {
                return Err(format!(
                    "unknown extended key usage '{eku}' (known: {})",
                    EXTENDED_KEY_USAGES.join(", ")
                ));
            }
        }
        let s = &self.subject;
        check_field("common_name", &s.common_name)?;
        for (n, v) in [
            ("organization", &s.organization),
            ("organizational_unit", &s.organizational_unit),
            ("serial_number", &s.serial_number),
        ] {
            if let Some(v) = v {
                check_field(n, v)?;
            }
        }
        if let Some(c) = &s.country {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(
                    "subject.country: two upper-case letters (ISO 3166), no placeholders".into(),
                );
            }
        }
        Ok(())
    }

    /// Fills in the placeholders of every subject field.
    pub fn render(&self, vars: &BTreeMap<&str, String>) -> std::result::Result<Subject, String> {
        // One left-to-right pass: a value that itself looks like a
        // placeholder is copied as is, never expanded again.
        let fill = |name: &str, v: &str| -> std::result::Result<String, String> {
            let mut out = String::new();
            let mut rest = v;
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                let after = &rest[open + 1..];
                let close = after
                    .find('}')
                    .ok_or_else(|| format!("subject.{name}: '{{' without '}}'"))?;
                let ph = &after[..close];
                out.push_str(
                    vars.get(ph)
                        .ok_or_else(|| format!("no value for {{{ph}}}"))?,
                );
                rest = &after[close + 1..];
            }
            out.push_str(rest);
            if out.trim().is_empty() {
                return Err(format!("subject.{name} renders to an empty value"));
            }
            if out.len() > MAX_FIELD_LEN {
                return Err(format!(
                    "subject.{name} renders to {} bytes, above {MAX_FIELD_LEN}",
                    out.len()
                ));
            }
            Ok(out)
        };
        let s = &self.subject;
        Ok(Subject {
            common_name: fill("common_name", &s.common_name)?,
            organization: s
                .organization
                .as_deref()
                .map(|v| fill("organization", v))
                .transpose()?,
            organizational_unit: s
                .organizational_unit
                .as_deref()
                .map(|v| fill("organizational_unit", v))
                .transpose()?,
            serial_number: s
                .serial_number
                .as_deref()
                .map(|v| fill("serial_number", v))
                .transpose()?,
            country: s.country.clone(),
        })
    }

    /// As TOML text.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!("# trustchain device certificate template (docs/formats.md)\n{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_and_renders() {
        let t = Template::default();
        let back = Template::parse(&t.to_toml()).unwrap();
        assert_eq!(back, t);
        let vars: BTreeMap<&str, String> = [
            ("serial", "000042".to_string()),
            ("uid", "a1b2".into()),
            ("oem_name", "Acme".into()),
            ("product_name", "Thermostat".into()),
        ]
        .into_iter()
        .collect();
        let s = t.render(&vars).unwrap();
        assert_eq!(s.common_name, "Thermostat 000042");
        assert_eq!(s.serial_number.as_deref(), Some("a1b2"));
    }

    #[test]
    fn rejects_bad_templates_with_the_reason() {
        let base = Template::default().to_toml();
        let cases = [
            (
                base.replace("{serial}", "{serail}"),
                "unknown placeholder {serail}",
            ),
            (base.replace("{serial}", "{serial"), "without '}'"),
            (base.replace("format = 1", "format = 2"), "format 2"),
            (
                base.replace("\"digital_signature\"", "\"key_cert_sign\""),
                "unknown key usage",
            ),
            (
                base.replace("\"client_auth\"", "\"code_signing\""),
                "unknown extended key usage",
            ),
            (format!("{base}\nextra = 1\n"), "unknown field"),
            (
                base.replace(
                    "key_usages = [\"digital_signature\"]",
                    "key_usages = [\"key_agreement\"]",
                ),
                "must include digital_signature",
            ),
            (
                base.replace(
                    "key_usages = [\"digital_signature\"]",
                    "key_usages = [\"digital_signature\", \"digital_signature\"]",
                ),
                "listed twice",
            ),
        ];
        for (text, want) in cases {
            let err = Template::parse(&text).unwrap_err();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    #[test]
    fn render_bounds_field_length() {
        let t = Template::default();
        let vars: BTreeMap<&str, String> = [
            ("serial", "9".repeat(80)),
            ("uid", "x".into()),
            ("oem_name", "A".into()),
            ("product_name", "P".into()),
        ]
        .into_iter()
        .collect();
        assert!(t.render(&vars).unwrap_err().contains("above 64"));
    }

    #[test]
    fn render_is_one_pass() {
        let t = Template::default();
        let vars: BTreeMap<&str, String> = [
            ("serial", "{uid}".to_string()),
            ("uid", "u1".into()),
            ("oem_name", "A".into()),
            ("product_name", "P".into()),
        ]
        .into_iter()
        .collect();
        assert_eq!(t.render(&vars).unwrap().common_name, "P {uid}");
    }
}
