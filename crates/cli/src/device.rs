//! `trustchain device ...`: a simulated MCU with the SBM, driven through
//! the same connection protocol a programmer uses on a real part.
use std::path::Path;

use serde_json::json;
use trustchain_device_sim::{Geometry, SimDevice};
use trustchain_oem::audit;
use trustchain_oem::oem::OemDir;
use trustchain_programmer::client::{lifecycle_name, Installed, Programmer};
use trustchain_programmer::lab;
use trustchain_programmer::sim::SimLink;
use trustchain_sbm::BootOutcome;

use crate::cli::DeviceCommand;
use crate::error::CliError;
use crate::passphrase;

fn link_err(dir: &Path) -> impl Fn(trustchain_programmer::client::Error) -> CliError + '_ {
    move |source| CliError::Link {
        dir: dir.to_path_buf(),
        source,
    }
}

fn pem(der: &[u8]) -> String {
    trustchain_oem::pki::to_pem(der)
}

fn installed_json(i: &Option<Installed>) -> serde_json::Value {
    match i {
        None => serde_json::Value::Null,
        Some(i) => {
            json!({ "version": i.version_string(), "security_counter": i.counter, "size": i.size, "sha256": hex::encode(i.digest) })
        }
    }
}

fn read_release(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), CliError> {
    let upk = trustchain_oem::release::read_upk(&dir.join("update.upk"))?;
    let enc_path = dir.join("update.enc");
    let enc = std::fs::read(&enc_path).map_err(|e| trustchain_oem::Error::Io {
        path: enc_path,
        source: e,
    })?;
    Ok((upk, enc))
}

fn geometry(flash_size: u32, large: bool) -> Result<Geometry, CliError> {
    let base = if large {
        Geometry::LARGE_PAGES
    } else {
        Geometry::SMALL_PAGES
    };
    Geometry::new(base.page_size(), base.write_size(), flash_size)
        .map_err(|e| trustchain_oem::Error::Usage(format!("--flash-size {flash_size}: {e}")).into())
}

/// Runs one `device` command.
pub fn run(cmd: DeviceCommand, pass_file: Option<&Path>) -> Result<(), CliError> {
    match cmd {
        DeviceCommand::New {
            device_dir,
            uid,
            device_type,
            flash_size,
            large_pages,
            json,
        } => {
            let uid = match uid {
                Some(h) => hex::decode(h.trim_start_matches("0x"))
                    .ok()
                    .filter(|u| (1..=32).contains(&u.len()))
                    .ok_or_else(|| {
                        trustchain_oem::Error::Usage(format!("--uid {h}: 1 to 32 bytes of hex"))
                    })?,
                None => {
                    let mut u = vec![0u8; 16];
                    aws_lc_rs_fill(&mut u);
                    u
                }
            };
            let dev = SimDevice::create(
                &device_dir,
                &uid,
                device_type,
                geometry(flash_size, large_pages)?,
            )?;
            let layout = trustchain_programmer::sim::layout(&dev);
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({ "device_dir": device_dir, "uid": hex::encode(&uid), "device_type": device_type, "flash_size": flash_size, "app_address": layout.app_address(), "app_size": layout.app.len })).unwrap_or_default());
            } else {
                println!(
                    "created a blank MCU in {} (UID {}, type {device_type}, {} KiB flash)",
                    device_dir.display(),
                    hex::encode(&uid),
                    flash_size / 1024
                );
                println!("  application slot: {} KiB at 0x{:08x} (master images with --load-address 0x{:08x})", layout.app.len / 1024, layout.app_address(), layout.app_address());
            }
        }
        DeviceCommand::Info { device_dir, json } => {
            let mut dev = SimDevice::open(&device_dir)?;
            let mut prog = Programmer::new(SimLink::new(&mut dev).map_err(link_err(&device_dir))?);
            let info = prog.info().map_err(link_err(&device_dir))?;
            let chain = if info.lifecycle >= 2 {
                prog.cert_chain().ok()
            } else {
                None
            };
            if json {
                let v = json!({
                    "uid": hex::encode(&info.uid),
                    "device_type": info.device_type,
                    "sbm_version": info.sbm_version,
                    "lifecycle": lifecycle_name(info.lifecycle),
                    "installed": installed_json(&info.installed),
                    "min_security_counter": info.min_counter,
                    "update_pending": info.journal != 0,
                    "certificate_chain": chain.as_ref().map(|(c, _)| c.iter().map(|d| pem(d)).collect::<Vec<_>>()),
                    "oem_root": chain.as_ref().map(|(_, r)| pem(r)),
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("device {}", device_dir.display());
                println!("  UID            {}", hex::encode(&info.uid));
                println!("  type           {}", info.device_type);
                println!("  SBM version    {}", info.sbm_version);
                println!("  lifecycle      {}", lifecycle_name(info.lifecycle));
                match &info.installed {
                    Some(i) => println!(
                        "  installed      {} (counter {}), {} bytes, SHA-256 {}",
                        i.version_string(),
                        i.counter,
                        i.size,
                        hex::encode(i.digest)
                    ),
                    None => println!("  installed      nothing"),
                }
                if let Some((c, _)) = &chain {
                    if let Ok(cert) = trustchain_oem::pki::parse_cert(&c[0]) {
                        println!("  certificate    {}", cert.tbs_certificate.subject);
                    }
                }
            }
        }
        DeviceCommand::Provision {
            device_dir,
            oem,
            product,
            serial,
            json,
        } => {
            let oem_dir = OemDir::open(&oem)?;
            oem_dir.product(product)?;
            let mut dev = SimDevice::open(&device_dir)?;
            let pass = passphrase::for_dir(oem_dir.custody(), pass_file)?;
            let ks = oem_dir.unlock(&pass)?;
            let done = {
                let mut prog =
                    Programmer::new(SimLink::new(&mut dev).map_err(link_err(&device_dir))?);
                lab::provision(&mut prog, &oem_dir, &ks, product, serial).map_err(|source| {
                    CliError::Lab {
                        dir: device_dir.clone(),
                        source,
                    }
                })?
            };
            dev.save()?;
            let _ = audit::default_operator();
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({ "device_dir": device_dir, "lifecycle": lifecycle_name(done.info.lifecycle), "certificate": pem(&done.certificate), "key_agreement_public_key": hex::encode(done.agreement_key) })).unwrap_or_default());
            } else {
                let subject = trustchain_oem::pki::parse_cert(&done.certificate)
                    .map(|c| c.tbs_certificate.subject.to_string())
                    .unwrap_or_default();
                println!("provisioned {}: keys made on the device, certificate '{subject}', OEM keys installed, locked", device_dir.display());
            }
        }
        DeviceCommand::Install {
            device_dir,
            release_dir,
            json,
        } => {
            let (upk, enc) = read_release(&release_dir)?;
            let mut dev = SimDevice::open(&device_dir)?;
            let outcome = {
                let mut prog =
                    Programmer::new(SimLink::new(&mut dev).map_err(link_err(&device_dir))?);
                prog.send_release(&upk, &enc, false, &mut |_, _| {})
                    .map_err(link_err(&device_dir))?;
                prog.transport_mut().boot()
            };
            dev.save()?;
            report_boot(&device_dir, outcome, json, "installed")?;
        }
        DeviceCommand::Boot { device_dir, json } => {
            let mut dev = SimDevice::open(&device_dir)?;
            let outcome = SimLink::new(&mut dev)
                .map_err(link_err(&device_dir))?
                .boot();
            dev.save()?;
            report_boot(&device_dir, outcome, json, "verified")?;
        }
        DeviceCommand::Update {
            device_dir,
            release_dir,
            json,
        } => {
            let (upk, enc) = read_release(&release_dir)?;
            let mut dev = SimDevice::open(&device_dir)?;
            let outcome = {
                let mut prog =
                    Programmer::new(SimLink::new(&mut dev).map_err(link_err(&device_dir))?);
                // The application stages the release and calls the update
                // service; the SBM verifies it, then resets and installs.
                prog.send_release(&upk, &enc, true, &mut |_, _| {})
                    .map_err(link_err(&device_dir))?;
                prog.reset().map_err(link_err(&device_dir))?;
                prog.transport_mut().last_boot
            };
            dev.save()?;
            let outcome = outcome.unwrap_or(BootOutcome::Recovery(trustchain_sbm::Status::NoImage));
            report_boot(&device_dir, outcome, json, "updated to")?;
        }
        DeviceCommand::Fetch {
            device_dir,
            server,
            json,
        } => crate::field::run_fetch(&device_dir, &server, json)?,
    }
    Ok(())
}

fn report_boot(dir: &Path, outcome: BootOutcome, json: bool, verb: &str) -> Result<(), CliError> {
    match outcome {
        BootOutcome::Run(i) => {
            let version = format!("{}.{}.{}", i.version[0], i.version[1], i.version[2]);
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({ "running": true, "version": version, "security_counter": i.counter, "size": i.size, "sha256": hex::encode(i.digest) })).unwrap_or_default());
            } else {
                println!("{}: {verb} {version}, application SHA-256 {} matches the signature table; it runs", dir.display(), hex::encode(i.digest));
            }
            Ok(())
        }
        BootOutcome::Recovery(status) => Err(CliError::NoApplication {
            dir: dir.to_path_buf(),
            status,
        }),
    }
}

fn aws_lc_rs_fill(buf: &mut [u8]) {
    let mut e = trustchain_oem::crypto::SystemEntropy;
    let _ = trustchain_oem::crypto::Entropy::fill(&mut e, buf);
}
