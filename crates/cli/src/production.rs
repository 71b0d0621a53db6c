//! `trustchain wrap` and `trustchain guardian ...`.
use std::path::Path;
use trustchain_oem::audit::unix_now;

use serde_json::json;
use trustchain_guardian::GuardianDir;
use trustchain_oem::error::Error;
use trustchain_oem::keystore::sealed::KdfParams;
use trustchain_oem::oem::OemDir;
use trustchain_oem::wrap::{wrap, WrapRequest};

use crate::cli::{GuardianCommand, WrapArgs};
use crate::error::CliError;
use crate::passphrase;

fn print(v: serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
}

fn parse_uid_range(s: &str) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let bad = || {
        Error::Usage(format!(
            "--uid-range {s}: expected LOW..HIGH in hex, equal lengths, LOW <= HIGH"
        ))
    };
    let (lo, hi) = s.split_once("..").ok_or_else(bad)?;
    let lo = hex::decode(lo).map_err(|_| bad())?;
    let hi = hex::decode(hi).map_err(|_| bad())?;
    if lo.is_empty() || lo.len() != hi.len() || lo.len() > 32 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// `trustchain wrap`.
pub fn run_wrap(a: WrapArgs, pass_file: Option<&Path>) -> Result<(), CliError> {
    let oem = OemDir::open(&a.oem_dir)?;
    let uid_range = a.uid_range.as_deref().map(parse_uid_range).transpose()?;
    let expires = match &a.expires {
        Some(t) => time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::Usage(format!("--expires {t}: not RFC 3339 ({e})")))?
            .unix_timestamp()
            .max(0) as u64,
        None => unix_now() + 30 * 86_400,
    };
    if a.out.exists() {
        return Err(Error::AlreadyExists {
            path: a.out.clone(),
            what: "package file",
        }
        .into());
    }
    let pass = passphrase::for_dir(oem.custody(), pass_file)?;
    let mut ks = oem.unlock(&pass)?;
    let req = WrapRequest {
        product: a.product,
        guardian: a.guardian,
        count: a.count,
        release: a.release,
        out: a.out,
        serial_start: a.serial_start,
        uid_range,
        device_types: a.device_type,
        expires,
        operator: trustchain_oem::audit::default_operator(),
    };
    let r = wrap(&oem, &mut ks, &req)?;
    if a.json {
        print(serde_json::to_value(&r).unwrap_or_default());
    } else {
        println!(
            "wrapped package {} for Guardian {}",
            r.package_id,
            &r.guardian[..16]
        );
        println!(
            "  {} devices, serials {}..={}, release {}",
            r.count, r.serials.0, r.serials.1, r.release_version
        );
        println!(
            "  file {} ({} bytes): only that Guardian can open it",
            r.out.display(),
            r.size
        );
    }
    Ok(())
}

/// `trustchain guardian ...`.
pub fn run_guardian(cmd: GuardianCommand, pass_file: Option<&Path>) -> Result<(), CliError> {
    match cmd {
        GuardianCommand::Init {
            guardian_dir,
            name,
            token,
            json,
        } => {
            let r = match crate::commands::open_token(
                &token,
                &guardian_dir,
                "Guardian directory",
                pass_file,
            )? {
                Some(t) => GuardianDir::init_in_token(&guardian_dir, &name, t)?,
                None => {
                    let pass = passphrase::obtain(pass_file, true)?;
                    GuardianDir::init(&guardian_dir, &name, &pass, KdfParams::RECOMMENDED)?
                }
            };
            if json {
                print(serde_json::to_value(&r).unwrap_or_default());
            } else {
                println!("created Guardian '{name}' in {}", r.dir.display());
                if let Some(t) = &r.pkcs11 {
                    println!("  identity keys: inside {t}, not extractable");
                }
                println!("  identity certificate for OEMs: {}", r.identity.display());
                println!(
                    "  Guardian ID (SHA-256 of the identity certificate): {}",
                    r.id
                );
            }
        }
        GuardianCommand::Trust {
            guardian_dir,
            root,
            json,
        } => {
            let g = GuardianDir::open(&guardian_dir)?;
            let fp = g.trust_root(&root)?;
            if json {
                print(json!({ "trusted_root_sha256": fp }));
            } else {
                println!(
                    "trusted OEM root {} (SHA-256 {fp}); confirm this fingerprint with the OEM",
                    root.display()
                );
            }
        }
        GuardianCommand::Import {
            guardian_dir,
            package,
            json,
        } => {
            let g = GuardianDir::open(&guardian_dir)?;
            let pass = passphrase::for_dir(g.custody(), pass_file)?;
            let mut ks = g.unlock(&pass)?;
            let r = trustchain_guardian::import::import(&g, &mut ks, &package, unix_now())?;
            if json {
                print(serde_json::to_value(&r).unwrap_or_default());
            } else {
                println!("imported package {} as job {}", r.package_id, r.job);
                println!(
                    "  OEM {} product {}: {} devices, release {}",
                    r.oem_id, r.product_id, r.count, r.release_version
                );
            }
        }
        GuardianCommand::Log { guardian_dir, json } => {
            let g = GuardianDir::open(&guardian_dir)?;
            match g.verify_audit()? {
                Ok((entries, checkpoints)) => {
                    if json {
                        print(
                            json!({ "intact": true, "entries": entries, "checkpoints": checkpoints }),
                        );
                    } else {
                        println!("audit log intact: {entries} entries, {checkpoints} signed checkpoints verify");
                    }
                }
                Err(problem) => {
                    return Err(trustchain_guardian::Error::AuditBroken {
                        path: guardian_dir.join("guardian.db"),
                        problem,
                    }
                    .into());
                }
            }
        }
        GuardianCommand::Jobs { guardian_dir, json } => {
            let g = GuardianDir::open(&guardian_dir)?;
            let jobs = g.store()?.jobs()?;
            if json {
                print(serde_json::to_value(&jobs).unwrap_or_default());
            } else if jobs.is_empty() {
                println!("no jobs; import a package with `trustchain guardian import`");
            } else {
                println!(
                    "{:>5}  {:>10}  {:>8}  {:<20} {:>8} {:>8} {:>8} {:>9}",
                    "job", "OEM", "product", "name", "count", "issued", "failed", "remaining"
                );
                for j in jobs {
                    println!(
                        "{:>5}  {:>#10x}  {:>8}  {:<20} {:>8} {:>8} {:>8} {:>9}",
                        j.id,
                        j.oem_id,
                        j.product_id,
                        j.product_name,
                        j.count,
                        j.issued,
                        j.failed,
                        j.remaining
                    );
                }
            }
        }
    }
    Ok(())
}

/// `trustchain produce`.
pub fn run_produce(a: crate::cli::ProduceArgs, pass_file: Option<&Path>) -> Result<(), CliError> {
    let crate::cli::ProduceArgs {
        guardian_dir,
        job,
        devices,
        count,
        threads,
        stage,
        json,
    } = a;
    let (guardian_dir, devices, stage) =
        (guardian_dir.as_path(), devices.as_path(), stage.as_str());
    use std::io::IsTerminal;
    use trustchain_programmer::produce::{produce, Request, Stage};
    let g = GuardianDir::open(guardian_dir)?;
    let stage = match stage {
        "provision" => Stage::Provision,
        "program" => Stage::Program,
        _ => Stage::All,
    };
    if count == 0 {
        return Err(Error::Usage("--count must be at least 1".into()).into());
    }
    let pass = passphrase::for_dir(g.custody(), pass_file)?;
    let ks = g.unlock(&pass)?;
    let bar = (std::io::stderr().is_terminal() && !json).then(|| {
        let b = indicatif::ProgressBar::new(count);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "producing {bar:40} {pos}/{len} devices {per_sec} eta {eta}",
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
    let req = Request {
        job,
        devices: devices.to_path_buf(),
        count,
        threads,
        stage,
        now: unix_now(),
        transcript: None,
    };
    let s = produce(&g, &ks, &req, &progress).map_err(|e| match e {
        trustchain_programmer::produce::StartError::Guardian(g) => CliError::Guardian(g),
        other => CliError::Oem(Error::Usage(other.to_string())),
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if json {
        print(serde_json::to_value(&s).unwrap_or_default());
    } else {
        println!(
            "job {job}: {} provisioned, {} programmed, {} failed; {} remaining in the job",
            s.provisioned,
            s.programmed,
            s.failed.len(),
            s.remaining
        );
        for f in &s.failed {
            println!(
                "  failed: {} (serial {}): {}",
                f.device.display(),
                f.serial.map(|v| v.to_string()).unwrap_or("-".into()),
                f.reason
            );
        }
    }
    if s.not_covered > 0 {
        return Err(Error::Usage(format!(
            "{} of the {} devices asked for could not be produced: the job has no count left",
            s.not_covered, s.requested
        ))
        .into());
    }
    if !s.failed.is_empty() {
        return Err(Error::Usage(format!("{} device(s) failed; see above (a failure after its certificate was issued is recorded as failed in the job)", s.failed.len())).into());
    }
    Ok(())
}

/// `trustchain report`.
pub fn run_report(
    guardian_dir: &Path,
    job: i64,
    out: &Path,
    json: bool,
    pass_file: Option<&Path>,
) -> Result<(), CliError> {
    let g = GuardianDir::open(guardian_dir)?;
    let pass = passphrase::for_dir(g.custody(), pass_file)?;
    let ks = g.unlock(&pass)?;
    let r = trustchain_guardian::report::write_report(&g, &ks, job, out)?;
    if json {
        print(serde_json::to_value(&r).unwrap_or_default());
    } else {
        println!(
            "signed report of job {job}: {} devices, {} log entries, log head {}...",
            r.devices,
            r.log_entries,
            &r.log_head[..16]
        );
        println!(
            "  {} (send it to the OEM: trustchain oem reconcile OEM_DIR {})",
            out.display(),
            out.display()
        );
    }
    Ok(())
}
