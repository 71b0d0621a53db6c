//! In the field: `oem revoke`, `oem server-cert`, `update-server` and
//! `device fetch` (`trustchain auth` is in `auth.rs`).
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use trustchain_field::update::{Catalogue, ServerOptions, UpdateServer};
use trustchain_oem::error::Error;
use trustchain_oem::keystore::sealed::KdfParams;
use trustchain_oem::oem::OemDir;
use trustchain_oem::revoke::{refresh, revoke, Reason, RefreshRequest, RevokeRequest};

use crate::cli::UpdateServerArgs;
use crate::error::CliError;
use crate::passphrase;

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `trustchain oem revoke`.
pub fn run_revoke(
    oem_dir: &Path,
    cert: &Path,
    reason: &str,
    days: u32,
    out: Option<&Path>,
    json: bool,
    pass_file: Option<&Path>,
) -> Result<(), CliError> {
    let reason = Reason::parse(reason)
        .ok_or_else(|| Error::Usage(format!("--reason {reason}: one of {}", Reason::NAMES)))?;
    let oem = OemDir::open(oem_dir)?;
    let bytes = std::fs::read(cert).map_err(|e| Error::Io {
        path: cert.to_path_buf(),
        source: e,
    })?;
    refuse_existing_out(out)?;
    let pass = passphrase::for_dir(oem.custody(), pass_file)?;
    let ks = oem.unlock(&pass)?;
    let r = revoke(
        &oem,
        &ks,
        &RevokeRequest {
            cert: bytes,
            cert_path: cert.to_path_buf(),
            reason,
            days,
            operator: trustchain_oem::audit::default_operator(),
            now: time::OffsetDateTime::now_utc(),
        },
    )?;
    copy_bundle(&r.bundle, out)?;
    if json {
        print_json(&r);
    } else {
        println!(
            "revoked serial {} ({}), {}: CRL number {} of {} now lists {} certificate(s)",
            r.serial, r.subject, r.reason, r.crl_number, r.issuer, r.revoked_count
        );
        println!(
            "  give {} to update servers (--crl) and devices (auth --crl)",
            out.unwrap_or(&r.bundle).display()
        );
    }
    Ok(())
}

/// `--out FILE` must not exist (checked before anything is signed).
fn refuse_existing_out(out: Option<&Path>) -> Result<(), CliError> {
    match out {
        Some(o) if o.exists() => Err(Error::AlreadyExists {
            path: o.to_path_buf(),
            what: "CRL bundle copy",
        }
        .into()),
        _ => Ok(()),
    }
}

/// Copies the bundle to `--out FILE`.
fn copy_bundle(bundle: &Path, out: Option<&Path>) -> Result<(), CliError> {
    if let Some(o) = out {
        let b = std::fs::read(bundle).map_err(|e| Error::Io {
            path: bundle.to_path_buf(),
            source: e,
        })?;
        trustchain_oem::fsutil::write_new(o, &b, "CRL bundle copy")?;
    }
    Ok(())
}

/// `trustchain oem revoke --refresh`.
pub fn run_refresh(
    oem_dir: &Path,
    days: u32,
    out: Option<&Path>,
    json: bool,
    pass_file: Option<&Path>,
) -> Result<(), CliError> {
    let oem = OemDir::open(oem_dir)?;
    refuse_existing_out(out)?;
    let pass = passphrase::for_dir(oem.custody(), pass_file)?;
    let ks = oem.unlock(&pass)?;
    let r = refresh(
        &oem,
        &ks,
        &RefreshRequest {
            days,
            operator: trustchain_oem::audit::default_operator(),
            now: time::OffsetDateTime::now_utc(),
        },
    )?;
    copy_bundle(&r.bundle, out)?;
    if json {
        print_json(&r);
    } else {
        println!(
            "refreshed {} CRL(s): same entries, current until {}",
            r.crls.len(),
            r.next_update
        );
        for c in &r.crls {
            println!(
                "  {}: CRL number {} lists {} certificate(s){}",
                c.issuer,
                c.crl_number,
                c.revoked_count,
                c.previous_next_update
                    .as_ref()
                    .map(|p| format!(" (was current until {p})"))
                    .unwrap_or_default()
            );
        }
        println!(
            "  give {} to update servers (--crl, then restart them) and devices (auth --crl); \
             refresh again before {}",
            out.unwrap_or(&r.bundle).display(),
            r.next_update
        );
    }
    Ok(())
}

/// `trustchain oem server-cert`.
#[allow(clippy::too_many_arguments)]
pub fn run_server_cert(
    oem_dir: &Path,
    names: &[String],
    days: u32,
    out: &Path,
    identity_pass_file: Option<&Path>,
    json: bool,
    pass_file: Option<&Path>,
) -> Result<(), CliError> {
    let oem = OemDir::open(oem_dir)?;
    if out.exists() {
        return Err(Error::AlreadyExists {
            path: out.to_path_buf(),
            what: "server identity",
        }
        .into());
    }
    if identity_pass_file.is_none() && oem.custody().is_some() {
        return Err(Error::Usage(
            "this OEM's keys are in a PKCS#11 token: give the server's keystore its own \
             passphrase with --identity-passphrase-file FILE (the token PIN must not seal a \
             key that lives on a server)"
                .into(),
        )
        .into());
    }
    let pass = passphrase::for_dir(oem.custody(), pass_file)?;
    let ks = oem.unlock(&pass)?;
    let id_pass = match identity_pass_file {
        Some(f) => passphrase::obtain(Some(f), true)?,
        None => pass,
    };
    let r = trustchain_oem::server::create_identity(
        &oem,
        &ks,
        names,
        days,
        out,
        &id_pass,
        KdfParams::RECOMMENDED,
    )?;
    if json {
        print_json(&r);
    } else {
        println!(
            "server identity {} for {}: certificate {} (SHA-256 {}), valid {} days",
            r.dir.display(),
            r.names.join(", "),
            r.cert.display(),
            r.sha256,
            r.days
        );
        println!(
            "  serve with: trustchain update-server --identity {} --root {} --release DIR --listen ADDR",
            r.dir.display(),
            oem_dir.join("root.pem").display()
        );
    }
    Ok(())
}

/// `trustchain update-server`.
pub fn run_update_server(a: UpdateServerArgs, pass_file: Option<&Path>) -> Result<(), CliError> {
    let root_bytes = std::fs::read(&a.root).map_err(|e| Error::Io {
        path: a.root.clone(),
        source: e,
    })?;
    let root_der =
        trustchain_oem::pki::cert_der(&root_bytes).map_err(|problem| Error::Corrupt {
            path: a.root.clone(),
            problem,
        })?;
    let catalogue = Catalogue::load(&a.release, &root_der).map_err(CliError::Field)?;
    let crls = match &a.crl {
        Some(p) => {
            let crls = trustchain_field::crl::load(p).map_err(CliError::Field)?;
            // Refuse to start with an expired CRL: rustls would refuse every
            // device of that issuer (nextUpdate enforced), silently to the operator.
            let until = trustchain_field::crl::check_current(
                &p.display().to_string(),
                &crls,
                trustchain_oem::audit::unix_now(),
            )
            .map_err(CliError::Field)?;
            if let Some(t) = until {
                eprintln!(
                    "CRLs from {}: {} current until {}; refresh them at the OEM (`trustchain oem \
                     revoke OEM_DIR --refresh`) and restart with the new crl.pem before then, or \
                     the devices they cover are refused",
                    p.display(),
                    crls.len(),
                    trustchain_field::crl::rfc3339(t)
                );
            }
            crls
        }
        None => vec![],
    };
    let pass = passphrase::obtain(pass_file, false)?;
    let id = trustchain_oem::server::open_identity(&a.identity, &pass)?;
    let server = UpdateServer::bind(ServerOptions {
        catalogue: catalogue.clone(),
        root_der,
        crls,
        chain: vec![id.cert_der],
        key: Arc::from(id.key),
        listen: a.listen,
    })
    .map_err(CliError::Field)?;
    for (p, r) in &catalogue.newest {
        eprintln!(
            "serving product {p}: release {} (security counter {}) from {}",
            r.info.version,
            r.info.security_counter,
            r.dir.display()
        );
    }
    for (uid, r) in &catalogue.devices {
        eprintln!(
            "serving device {uid}: release {} from {}",
            r.info.version,
            r.dir.display()
        );
    }
    println!("listening on https://{}", server.local_addr());
    let stop = AtomicBool::new(false);
    server.serve(&stop, &|line| eprintln!("{line}"));
    Ok(())
}

/// `trustchain device fetch`.
pub fn run_fetch(device_dir: &Path, url: &str, json: bool) -> Result<(), CliError> {
    let f = trustchain_field::update::fetch(device_dir, url).map_err(|source| CliError::Fetch {
        dir: PathBuf::from(device_dir),
        source,
    })?;
    if json {
        print_json(&f);
    } else if f.staged {
        println!(
            "{}: staged {} (security counter {}, {} bytes) from {url}; the SBM verifies and installs it at the next boot (`trustchain device boot {}`)",
            device_dir.display(),
            f.version,
            f.security_counter,
            f.size,
            device_dir.display()
        );
    } else {
        println!(
            "{}: already runs {}, the newest release {url} has; nothing staged",
            device_dir.display(),
            f.version
        );
    }
    Ok(())
}
