//! `trustchain auth DEVICE_A DEVICE_B`: two provisioned simulated devices
//! authenticate each other (`docs/formats.md` §19), A initiating. Each
//! device's SBM validates the other's chain (VALIDATE_PEER_CHAIN) and signs
//! the transcript (SIGN_CHALLENGE); the private keys never leave the SBMs.
//! Revocation (`--crl`) is checked by the devices' applications, here on
//! the host. Nothing is written to either device.
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use trustchain_device_sim::SimDevice;
use trustchain_field::auth::sim::{self, DeviceIdentity, Role};
use trustchain_field::auth::{read_crls, Error as AuthError, Policy};
use trustchain_oem::formats::ProductId;

use crate::error::CliError;

/// `trustchain auth`.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// The initiating device (a simulated device directory, provisioned).
    pub device_a: PathBuf,
    /// The responding device.
    pub device_b: PathBuf,
    /// Accept peers of product N (repeat for several). Default: each device accepts its own
    /// product only. The OEM must always be the device's own.
    #[arg(long = "product", value_name = "N")]
    pub products: Vec<ProductId>,
    /// A CRL (DER or PEM) the devices' applications check the peer's chain against (repeat for
    /// several). The SBM has no CRL support: the application does this check.
    #[arg(long = "crl", value_name = "FILE")]
    pub crls: Vec<PathBuf>,
    /// The time at which the certificates must be valid, RFC 3339 (default: now). The SBM has
    /// no clock; the application supplies it.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    /// Channel binding both devices put into the transcript (hex, at most 64 bytes).
    #[arg(long, value_name = "HEX")]
    pub context: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

fn usage(msg: String) -> CliError {
    trustchain_oem::Error::Usage(msg).into()
}

fn policy(a: &AuthArgs) -> Result<Policy, CliError> {
    let now = match &a.now {
        None => Policy::now().now,
        Some(s) => {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| usage(format!("--now {s}: not an RFC 3339 time ({e})")))?;
            u64::try_from(t.unix_timestamp())
                .map_err(|_| usage(format!("--now {s}: before 1970")))?
        }
    };
    let crls = a
        .crls
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(|e| trustchain_oem::Error::Io {
                path: p.clone(),
                source: e,
            })?;
            read_crls(&bytes).map_err(|problem| {
                trustchain_oem::Error::Corrupt {
                    path: p.clone(),
                    problem,
                }
                .into()
            })
        })
        .collect::<Result<Vec<_>, CliError>>()?
        .concat();
    let context = match &a.context {
        None => vec![],
        Some(h) => hex::decode(h.trim_start_matches("0x"))
            .ok()
            .filter(|c| c.len() <= 64)
            .ok_or_else(|| usage(format!("--context {h}: at most 64 bytes of hex")))?,
    };
    Ok(Policy {
        products: (!a.products.is_empty()).then(|| a.products.clone()),
        crls,
        now,
        context,
    })
}

fn identity_json(dir: &Path, role: Role, d: &DeviceIdentity) -> serde_json::Value {
    let mut v = d.certificate.to_json();
    v["device_dir"] = json!(dir);
    v["role"] = json!(role.name());
    v["uid"] = json!(d.uid);
    v
}

fn print_identity(name: &str, dir: &Path, role: Role, d: &DeviceIdentity) {
    let c = &d.certificate;
    println!("{name} ({}): {}", role.name(), dir.display());
    println!(
        "  UID {}, OEM {}, product {}, certificate serial {}",
        d.uid,
        c.oem_id
            .map(|o| o.to_string())
            .unwrap_or_else(|| "none".into()),
        c.product_id
            .map(|p| p.to_string())
            .unwrap_or_else(|| "none".into()),
        c.serial
    );
    println!("  {}", c.subject);
}

fn link_error(a: &AuthArgs, role: Role, e: AuthError) -> CliError {
    let dir = match role {
        Role::Initiator => a.device_a.clone(),
        Role::Responder => a.device_b.clone(),
    };
    match e {
        AuthError::Device(source) => CliError::Link { dir, source },
        other => usage(format!("{}: {other}", dir.display())),
    }
}

/// Runs `trustchain auth`. A refusal is printed (text or JSON on stdout),
/// then returned as [`CliError::AuthRefused`] (exit status 1).
pub fn run(a: AuthArgs) -> Result<(), CliError> {
    let (pa, pb) = (policy(&a)?, policy(&a)?);
    let mut dev_a = SimDevice::open(&a.device_a)?;
    let mut dev_b = SimDevice::open(&a.device_b)?;
    // The devices are not saved: authentication only reads them.
    let out = sim::authenticate(&mut dev_a, &mut dev_b, pa, pb)
        .map_err(|f| link_error(&a, f.side, f.error))?;
    let refusal = match out.result {
        Ok(ref m) => {
            let th = hex::encode(m.a_sees.transcript_hash());
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "authenticated": true,
                        "a": identity_json(&a.device_a, Role::Initiator, &out.a),
                        "b": identity_json(&a.device_b, Role::Responder, &out.b),
                        "transcript_hash": th,
                        "refusal": null,
                    }))
                    .unwrap_or_default()
                );
            } else {
                print_identity("A", &a.device_a, Role::Initiator, &out.a);
                print_identity("B", &a.device_b, Role::Responder, &out.b);
                println!("authenticated: each device validated the other's chain to its OEM root and checked the other's signature over this session's transcript");
                println!("  transcript hash {th}");
            }
            return Ok(());
        }
        Err(f) => f,
    };
    let (name, dir) = match refusal.side {
        Role::Initiator => ("A", &a.device_a),
        Role::Responder => ("B", &a.device_b),
    };
    let Some(reason) = refusal.error.reason() else {
        return Err(link_error(&a, refusal.side, refusal.error));
    };
    let detail = match &refusal.error {
        AuthError::Refused { detail, .. } => detail.clone(),
        other => other.to_string(),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "authenticated": false,
                "a": identity_json(&a.device_a, Role::Initiator, &out.a),
                "b": identity_json(&a.device_b, Role::Responder, &out.b),
                "transcript_hash": null,
                "refusal": {
                    "by": name,
                    "role": refusal.side.name(),
                    "device_dir": dir,
                    "code": reason.code(),
                    "reason": reason.name(),
                    "message": reason.describe(),
                    "detail": detail,
                },
            }))
            .unwrap_or_default()
        );
    } else {
        print_identity("A", &a.device_a, Role::Initiator, &out.a);
        print_identity("B", &a.device_b, Role::Responder, &out.b);
        println!("refused by {name} ({}): {reason}", refusal.side.name());
        println!("  {detail}");
    }
    Err(CliError::AuthRefused {
        by: name,
        dir: dir.clone(),
        reason,
    })
}
