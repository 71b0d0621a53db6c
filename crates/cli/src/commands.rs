//! One function per command.
use std::io::IsTerminal;
use std::path::Path;

use serde_json::json;
use trustchain_oem::error::{Error, Result};
use trustchain_oem::image::LoadOptions;
use trustchain_oem::keystore::pkcs11::Pkcs11KeyStore;
use trustchain_oem::keystore::sealed::KdfParams;
use trustchain_oem::keystore::TokenRef;
use trustchain_oem::master::{master_release, MasterRequest};
use trustchain_oem::oem::OemDir;
use trustchain_oem::product::Product;
use trustchain_oem::{audit, inspect, pki, release};

use crate::cli::{Cli, Command, MasterArgs, OemCommand, TokenArgs};
use crate::error::CliError;
use crate::{demo, device, passphrase};

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs one command.
pub fn run(cli: Cli) -> std::result::Result<(), CliError> {
    let pass_file = cli.passphrase_file.as_deref();
    match cli.command {
        Command::Oem(OemCommand::Init {
            oem_dir,
            oem_id,
            name,
            token,
            json,
        }) => {
            let r = match open_token(&token, &oem_dir, "OEM directory", pass_file)? {
                Some(t) => {
                    OemDir::init_in_token(&oem_dir, oem_id, &name, t, &audit::default_operator())?
                }
                None => {
                    let pass = passphrase::obtain(pass_file, true)?;
                    OemDir::init(
                        &oem_dir,
                        oem_id,
                        &name,
                        &pass,
                        KdfParams::RECOMMENDED,
                        &audit::default_operator(),
                    )?
                }
            };
            if json {
                print_json(&serde_json::to_value(&r).unwrap_or_default());
            } else {
                println!(
                    "created OEM {} (ID {}) in {}",
                    name,
                    r.oem_id,
                    r.dir.display()
                );
                for f in &r.files {
                    println!("  {}", r.dir.join(f).display());
                }
                println!("root certificate SHA-256: {}", r.root_sha256);
                match &r.pkcs11 {
                    Some(t) => {
                        println!("root CA, device CA and mastering keys: inside {t}, not extractable");
                        println!("product keys will be sealed in the keystore under a key that token holds; later commands ask for the token's PIN");
                    }
                    None => println!("give root.pem to whoever must trust your devices and releases; keep the keystore and its passphrase apart"),
                }
            }
        }
        Command::Oem(OemCommand::Product {
            oem_dir,
            product_id,
            name,
            template,
            json,
        }) => {
            let oem = OemDir::open(&oem_dir)?;
            let pass = passphrase::for_dir(oem.custody(), pass_file)?;
            let mut ks = oem.unlock(&pass)?;
            let r = Product::create(
                &oem,
                &mut ks,
                product_id,
                &name,
                template.as_deref(),
                &audit::default_operator(),
            )?;
            if json {
                print_json(&serde_json::to_value(&r).unwrap_or_default());
            } else {
                println!(
                    "created product {} ({name}) in {}",
                    r.product_id,
                    r.dir.display()
                );
                println!("  product key kid: {}", r.product_key_kid);
                println!(
                    "  template:        {}",
                    r.dir.join("template.toml").display()
                );
            }
        }
        Command::Master(args) => master(args, pass_file)?,
        Command::Inspect { file, json } => {
            let i = inspect::inspect(&file)?;
            if json {
                print_json(&i.to_json());
            } else {
                print!("{}", i.to_text());
            }
        }
        Command::Verify { dir, root, json } => {
            let bytes = std::fs::read(&root).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotFound {
                    path: root.clone(),
                    what: "root certificate",
                },
                _ => Error::Io {
                    path: root.clone(),
                    source: e,
                },
            })?;
            let root_der = pki::cert_der(&bytes).map_err(|problem| Error::Corrupt {
                path: root.clone(),
                problem,
            })?;
            let info = release::verify_release(&dir, &root_der)?;
            if json {
                print_json(&json!({ "verified": true, "release": info }));
            } else {
                println!(
                    "OK: {} is a release signed by {}",
                    dir.display(),
                    info.signer
                );
                println!(
                    "  OEM {} product {} version {} (security counter {})",
                    info.oem_id, info.product_id, info.version, info.security_counter
                );
                println!(
                    "  image {} bytes at 0x{:08x}, SHA-256 {}",
                    info.image_size, info.load_address, info.image_sha256
                );
                println!(
                    "  update.enc {} bytes, SHA-256 {} (matches the signed digest)",
                    info.ciphertext_size, info.ciphertext_sha256
                );
                println!(
                    "  {} recipient(s){}",
                    info.recipients.len(),
                    info.device_uids
                        .as_ref()
                        .map(|u| format!(", {} allowed UID(s)", u.len()))
                        .unwrap_or_default()
                );
            }
        }
        Command::Decrypt {
            oem_dir,
            dir,
            out,
            json,
        } => {
            let oem = OemDir::open(&oem_dir)?;
            let pass = passphrase::for_dir(oem.custody(), pass_file)?;
            let ks = oem.unlock(&pass)?;
            let info = release::decrypt_release(&oem, &ks, &dir, &out)?;
            if json {
                print_json(&json!({ "out": out, "release": info }));
            } else {
                println!(
                    "decrypted {} version {} to {} ({} bytes, SHA-256 {} matches the UPK)",
                    dir.display(),
                    info.version,
                    out.display(),
                    info.image_size,
                    info.image_sha256
                );
            }
        }
        Command::Device(cmd) => device::run(cmd, pass_file)?,
        Command::Wrap(a) => crate::production::run_wrap(a, pass_file)?,
        Command::Produce(a) => crate::production::run_produce(a, pass_file)?,
        Command::Report {
            guardian_dir,
            job,
            out,
            json,
        } => crate::production::run_report(&guardian_dir, job, &out, json, pass_file)?,
        Command::Oem(OemCommand::Reconcile {
            oem_dir,
            report,
            json,
            no_keep,
        }) => {
            let oem = OemDir::open(&oem_dir)?;
            let r = trustchain_oem::reconcile::reconcile(
                &oem,
                &report,
                &audit::default_operator(),
                if no_keep {
                    trustchain_oem::reconcile::Keep::No
                } else {
                    trustchain_oem::reconcile::Keep::Yes
                },
            )?;
            if json {
                print_json(&serde_json::to_value(&r).unwrap_or_default());
            } else {
                println!("report of job {} (package {}): {} issued, {} failed, of {} allowed; {} device records", r.job, r.package_id, r.issued, r.failed, r.count, r.devices);
                for a in &r.anomalies {
                    println!("  ANOMALY: {a}");
                }
                if r.anomalies.is_empty() {
                    println!("  reconciled: signature, counts, certificates, serials, UIDs and log chain all check out");
                    println!(
                        "  checked against {} report(s) reconciled before: no package imported twice, no serial reissued, no UID certified twice",
                        r.earlier_reports
                    );
                    match (&r.kept, r.already_reconciled) {
                        (Some(p), true) => {
                            println!("  already reconciled: kept as {}", p.display())
                        }
                        (Some(p), false) => println!(
                            "  kept as {} (later reports are checked against it)",
                            p.display()
                        ),
                        (None, _) => println!("  not kept (--no-keep): nothing was written"),
                    }
                }
            }
            if !r.anomalies.is_empty() {
                return Err(Error::NotReconciled {
                    path: report,
                    count: r.anomalies.len(),
                }
                .into());
            }
        }
        Command::Guardian(cmd) => crate::production::run_guardian(cmd, pass_file)?,
        Command::Oem(OemCommand::Revoke {
            oem_dir,
            cert,
            refresh,
            reason,
            days,
            out,
            json,
        }) => {
            match (cert, refresh) {
                (Some(cert), false) => crate::field::run_revoke(
                    &oem_dir,
                    &cert,
                    &reason,
                    days,
                    out.as_deref(),
                    json,
                    pass_file,
                )?,
                (None, true) => {
                    crate::field::run_refresh(&oem_dir, days, out.as_deref(), json, pass_file)?
                }
                // clap refuses both and neither; this is the same message in case.
                _ => return Err(Error::Usage(
                    "give either --cert DEVICE_CERT (revoke it) or --refresh (re-sign the CRLs)"
                        .into(),
                )
                .into()),
            }
        }
        Command::Oem(OemCommand::ServerCert {
            oem_dir,
            name,
            days,
            out,
            identity_passphrase_file,
            json,
        }) => crate::field::run_server_cert(
            &oem_dir,
            &name,
            days,
            &out,
            identity_passphrase_file.as_deref(),
            json,
            pass_file,
        )?,
        Command::UpdateServer(a) => crate::field::run_update_server(a, pass_file)?,
        Command::Auth(a) => crate::auth::run(a)?,
        Command::Demo { keep } => demo::run(keep.as_deref())?,
    }
    Ok(())
}

/// For `oem init` and `guardian init` with a token: checks that `dir` is
/// new, gets the PIN (--pin-file, else the passphrase channel) and logs in
/// to the token, once for this process. `None` without --pkcs11-module.
pub(crate) fn open_token(
    a: &TokenArgs,
    dir: &Path,
    what: &'static str,
    pass_file: Option<&Path>,
) -> Result<Option<Pkcs11KeyStore>> {
    let (Some(module), Some(label)) = (&a.pkcs11_module, &a.token) else {
        return Ok(None);
    };
    // Fail on arguments before asking for the PIN.
    if dir.exists() {
        return Err(Error::AlreadyExists {
            path: dir.to_path_buf(),
            what,
        });
    }
    // Recorded in the directory's metadata: it must name the same file
    // from wherever later commands run.
    let module = std::path::absolute(module).map_err(|e| Error::Io {
        path: module.clone(),
        source: e,
    })?;
    let token = TokenRef {
        module,
        token: label.clone(),
    };
    let pin = passphrase::pin(a.pin_file.as_deref(), pass_file, &token)?;
    Pkcs11KeyStore::open(&token.module, &token.token, &pin).map(Some)
}

fn parse_uids(hexes: &[String]) -> Result<Option<Vec<Vec<u8>>>> {
    if hexes.is_empty() {
        return Ok(None);
    }
    hexes
        .iter()
        .map(|h| {
            hex::decode(h.trim_start_matches("0x"))
                .ok()
                .filter(|b| !b.is_empty() && b.len() <= 32)
                .ok_or_else(|| {
                    Error::Usage(format!("--allow-uid {h}: a UID is 1 to 32 bytes of hex"))
                })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn master(a: MasterArgs, pass_file: Option<&Path>) -> Result<()> {
    let oem = OemDir::open(&a.oem_dir)?;
    // Fail on arguments before asking for the passphrase.
    let device_uids = parse_uids(&a.allow_uid)?;
    if a.out.exists() {
        return Err(Error::AlreadyExists {
            path: a.out.clone(),
            what: "output directory",
        });
    }
    oem.product(a.product)?;
    let pass = passphrase::for_dir(oem.custody(), pass_file)?;
    let ks = oem.unlock(&pass)?;
    let req = MasterRequest {
        product: a.product,
        version: a.version,
        security_counter: a.security_counter,
        force: a.force,
        image: a.image,
        format: a.format,
        load: LoadOptions {
            max_gap: a.max_gap,
            raw_load_address: a.load_address,
            ..LoadOptions::default()
        },
        devices: a.device,
        device_uids,
        out: a.out,
        operator: a.operator.unwrap_or_else(audit::default_operator),
    };
    let bar = (std::io::stderr().is_terminal() && !a.json).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "mastering {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let progress = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let r = master_release(&oem, &ks, &req, &progress)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if a.json {
        print_json(&serde_json::to_value(&r).unwrap_or_default());
    } else {
        println!(
            "mastered product {} version {} (security counter {}) into {}",
            r.product,
            r.version,
            r.security_counter,
            r.out.display()
        );
        println!(
            "  image       {} ({}), {} bytes at 0x{:08x}",
            req.image.display(),
            r.image_format,
            r.image_size,
            r.load_address
        );
        println!("  image SHA-256      {}", r.image_sha256);
        println!("  update.enc SHA-256 {}", r.ciphertext_sha256);
        println!("  update.upk SHA-256 {}", r.upk_sha256);
        println!(
            "  recipients  {} (product key{})",
            r.recipients,
            if r.recipients > 1 { " + devices" } else { "" }
        );
        if r.forced {
            println!("  warning: forced a security counter below the last one mastered");
        }
    }
    Ok(())
}
