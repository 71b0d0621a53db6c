//! `trustchain produce`: the programming station. For each device, the
//! paper's flow (section V) with the Guardian holding the secrets:
//! identify the device (type and UID allowed by the job); the device makes
//! its identity and key-agreement keys; the Guardian issues its certificate
//! from the job's template with the job's issuing CA; the chain and OEM root
//! go to write-protected storage; the product key goes wrapped to the
//! device's own key; the device is locked; then the mastered release is
//! programmed through the SBM and the boot check must pass.
//!
//! Provisioning and programming are separable (`Stage`): provisioning may
//! one day happen at the silicon vendor while the OEM's programming step
//! stays the same.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use trustchain_device_sim::{Geometry, SimDevice};
use trustchain_guardian::issue::JobIssuer;
use trustchain_guardian::GuardianDir;
use trustchain_oem::crypto::PublicKey;
use trustchain_oem::keystore::sealed::SealedKeyStore;
use trustchain_sbm::BootOutcome;

use crate::client::{lifecycle_name, Programmer, Recording};
use crate::sim::SimLink;

/// Which steps to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Keys, certificate, OEM keys, lock.
    Provision,
    /// The release through the SBM, then the boot check.
    Program,
    /// Both.
    All,
}

/// What to produce.
#[derive(Debug, Clone)]
pub struct Request {
    /// The job.
    pub job: i64,
    /// Where the devices are (created as needed: `DIR/dev-NNNNN`).
    pub devices: PathBuf,
    /// How many devices.
    pub count: u64,
    /// Worker threads.
    pub threads: usize,
    /// Steps.
    pub stage: Stage,
    /// Now (Unix seconds).
    pub now: u64,
    /// If set, every frame exchanged with every device is appended here
    /// (an audit transcript of what the programmer side sees).
    pub transcript: Option<std::sync::Arc<Mutex<Vec<u8>>>>,
}

/// One device that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The device directory.
    pub device: PathBuf,
    /// Its certificate serial, if one was issued.
    pub serial: Option<u64>,
    /// Why.
    pub reason: String,
}

/// The end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Devices asked for.
    pub requested: u64,
    /// Devices provisioned (certificate issued, locked).
    pub provisioned: u64,
    /// Devices programmed and verified at boot.
    pub programmed: u64,
    /// Failures.
    pub failed: Vec<Failure>,
    /// What the job can still produce.
    pub remaining: u64,
    /// Devices asked for that the job could not cover.
    pub not_covered: u64,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Guardian refused.
    #[error(transparent)]
    Guardian(#[from] trustchain_guardian::Error),
    /// The device directory.
    #[error("{path}: {problem}")]
    Devices {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

fn pick_uid(job: &trustchain_guardian::store::JobRecord, n: u64) -> Vec<u8> {
    let mut r = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut r);
    match &job.uid_range {
        None => {
            let mut uid = r[..8].to_vec();
            uid.extend_from_slice(&(n as u32).to_be_bytes());
            uid
        }
        Some((lo, hi)) => {
            // A value in [lo, hi] (UIDs are at most 16 bytes wide here).
            let lo_v = lo.iter().fold(0u128, |acc, b| (acc << 8) | *b as u128);
            let hi_v = hi.iter().fold(0u128, |acc, b| (acc << 8) | *b as u128);
            let span = hi_v.saturating_sub(lo_v).saturating_add(1).max(1);
            let off = u128::from_be_bytes(r[..16].try_into().unwrap_or([0; 16])) % span;
            let bytes = (lo_v + off).to_be_bytes();
            bytes[16usize.saturating_sub(lo.len())..].to_vec()
        }
    }
}

/// The device directories to work on: blank ones already there, then new
/// ones (for provisioning); provisioned, unprogrammed ones (for programming).
fn select_devices(
    dir: &Path,
    req: &Request,
    job: &trustchain_guardian::store::JobRecord,
) -> Result<Vec<PathBuf>, StartError> {
    std::fs::create_dir_all(dir).map_err(|e| StartError::Devices {
        path: dir.to_path_buf(),
        problem: e.to_string(),
    })?;
    let mut existing: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| StartError::Devices {
            path: dir.to_path_buf(),
            problem: e.to_string(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("device.toml").is_file())
        .collect();
    existing.sort();
    let wanted_lifecycle = if req.stage == Stage::Program { 3 } else { 0 };
    let mut chosen = vec![];
    for p in existing {
        if chosen.len() as u64 >= req.count {
            break;
        }
        let Ok(mut dev) = SimDevice::open(&p) else {
            continue;
        };
        let Ok(link) = SimLink::new(&mut dev) else {
            continue;
        };
        let mut prog = Programmer::new(link);
        if let Ok(info) = prog.info() {
            if info.lifecycle == wanted_lifecycle
                && (req.stage != Stage::Program || info.installed.is_none())
            {
                chosen.push(p);
            }
        }
    }
    if req.stage != Stage::Program {
        let ty = job.device_types.first().copied().unwrap_or(1);
        let mut n = 0u64;
        while (chosen.len() as u64) < req.count {
            n += 1;
            let p = dir.join(format!("dev-{n:05}"));
            if p.exists() {
                continue;
            }
            SimDevice::create(&p, &pick_uid(job, n), ty, Geometry::SMALL_PAGES).map_err(|e| {
                StartError::Devices {
                    path: p.clone(),
                    problem: e.to_string(),
                }
            })?;
            chosen.push(p);
        }
    }
    Ok(chosen)
}

/// Runs production. `progress(done, total)` is called after each device.
pub fn produce(
    g: &GuardianDir,
    ks: &SealedKeyStore,
    req: &Request,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Summary, StartError> {
    let store = g.store()?;
    let issuer = JobIssuer::open(&store, ks, req.job)?;
    let remaining = issuer.job.remaining();
    if req.stage != Stage::Program && remaining == 0 {
        return Err(trustchain_guardian::Error::JobExhausted(req.job).into());
    }
    if req.stage != Stage::Program && req.now >= issuer.job.expires {
        return Err(trustchain_guardian::Error::JobExpired(req.job).into());
    }
    let to_do = if req.stage == Stage::Program {
        req.count
    } else {
        req.count.min(remaining)
    };
    let devices = select_devices(
        &req.devices,
        &Request {
            count: to_do,
            ..req.clone()
        },
        &issuer.job,
    )?;
    let total = devices.len() as u64;
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let provisioned = AtomicU64::new(0);
    let programmed = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let mastering = issuer.mastering_key()?;
    // One database connection per worker, opened before any device is touched.
    let stores = (0..req.threads.max(1))
        .map(|_| g.store())
        .collect::<Result<Vec<_>, _>>()?;
    std::thread::scope(|s| {
        for mut store in stores {
            let (next, done, provisioned, programmed, failures, devices, issuer, mastering) = (
                &next,
                &done,
                &provisioned,
                &programmed,
                &failures,
                &devices,
                &issuer,
                &mastering,
            );
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(path) = devices.get(i as usize) else {
                    break;
                };
                match one_device(path, issuer, &mut store, req, mastering) {
                    Ok((p, q)) => {
                        provisioned.fetch_add(p as u64, Ordering::SeqCst);
                        programmed.fetch_add(q as u64, Ordering::SeqCst);
                    }
                    Err((serial, reason)) => {
                        if let Some(serial) = serial {
                            let _ = store.mark_failed(req.job, serial, &reason);
                        }
                        if let Ok(mut f) = failures.lock() {
                            f.push(Failure {
                                device: path.clone(),
                                serial,
                                reason,
                            });
                        }
                    }
                }
                progress(done.fetch_add(1, Ordering::SeqCst) + 1, total);
            });
        }
    });
    let remaining_after = g.store()?.job(req.job)?.remaining();
    g.checkpoint(ks)?;
    let mut failed = failures.into_inner().unwrap_or_default();
    failed.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(Summary {
        requested: req.count,
        provisioned: provisioned.into_inner(),
        programmed: programmed.into_inner(),
        failed,
        remaining: remaining_after,
        not_covered: req.count.saturating_sub(total),
    })
}

/// One device; returns (provisioned, programmed) or (serial if issued, reason).
fn one_device(
    path: &Path,
    issuer: &JobIssuer<'_>,
    store: &mut trustchain_guardian::store::Store,
    req: &Request,
    mastering: &PublicKey,
) -> Result<(bool, bool), (Option<u64>, String)> {
    let mut dev = SimDevice::open(path).map_err(|e| (None, e.to_string()))?;
    let mut serial = None;
    let result = (|| -> Result<(bool, bool), String> {
        let sink = req.transcript.clone().unwrap_or_default();
        let mut prog = Programmer::new(Recording::new(
            SimLink::new(&mut dev).map_err(|e| e.to_string())?,
            sink,
        ));
        let info = prog.info().map_err(|e| e.to_string())?;
        let mut provisioned = false;
        if req.stage != Stage::Program {
            if info.lifecycle != 0 {
                return Err(format!(
                    "device is {}, not blank",
                    lifecycle_name(info.lifecycle)
                ));
            }
            // 1. Identify: the job must allow this device.
            if !issuer.allows(&info.uid, info.device_type) {
                return Err(format!(
                    "UID {} type {} not allowed by the job",
                    hex::encode(&info.uid),
                    info.device_type
                ));
            }
            // 2. Keys made on the device (proof of possession checked).
            let keys = prog.generate_keys(&info.uid).map_err(|e| e.to_string())?;
            // 3. Certificate from the template, signed inside the Guardian.
            let (s, cert) = issuer
                .issue(
                    store,
                    &info.uid,
                    info.device_type,
                    &PublicKey(keys.identity),
                    req.now,
                )
                .map_err(|e| e.to_string())?;
            serial = Some(s);
            // 4-5. Chain and root into write-protected storage.
            let [issuing, device_ca] = issuer.chain();
            prog.store_certs(&[cert, issuing, device_ca], &issuer.job.root_cert)
                .map_err(|e| e.to_string())?;
            // OEM keys: the product key wrapped to the device's own key.
            let ka =
                PublicKey::from_sec1(&keys.agreement).ok_or("invalid device key-agreement key")?;
            let (eph, wrapped) = issuer.wrapped_product_key(&ka).map_err(|e| e.to_string())?;
            prog.install_oem_keys(
                issuer.job.oem_id,
                issuer.job.product_id,
                &mastering.0,
                &eph,
                &wrapped,
            )
            .map_err(|e| e.to_string())?;
            // 6. Lock.
            prog.lock().map_err(|e| e.to_string())?;
            provisioned = true;
        }
        let mut programmed = false;
        if req.stage != Stage::Provision {
            prog.send_release(
                &issuer.job.release_upk,
                &issuer.job.release_enc,
                false,
                &mut |_, _| {},
            )
            .map_err(|e| e.to_string())?;
            match prog.transport_mut().inner_mut().boot() {
                BootOutcome::Run(_) => programmed = true,
                BootOutcome::Recovery(s) => {
                    return Err(format!("boot check failed: {}", s.describe()))
                }
            }
        }
        Ok((provisioned, programmed))
    })();
    dev.save().map_err(|e| (serial, e.to_string()))?;
    result.map_err(|r| (serial, r))
}
