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

use crate::client::{lifecycle_name, DeviceKeys, Programmer, Recording};
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

/// Devices a worker claims at a time. Their certificates are issued in one
/// group commit (one transaction, one fsync for the group, every
/// certificate recorded before any leaves the Guardian).
///
/// The price of a group: a station killed in the middle of one leaves up to
/// `GROUP` devices per worker with keys and no certificate (the next run
/// refuses them as not blank, as it did the one device in hand before), or
/// up to `GROUP` certificates recorded as issued to devices that never
/// received them (they count against the job and show in the report). The
/// count and the records hold either way.
pub const GROUP: usize = 16;

/// Runs production. `progress(done, total)` is called after each device.
pub fn produce(
    g: &GuardianDir,
    ks: &SealedKeyStore,
    req: &Request,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Summary, StartError> {
    let store = g.store()?;
    let issuer = JobIssuer::open(&store, ks, req.job)?;
    let to_do = check_start(&issuer, req.stage, req.count, req.now)?;
    let devices = select_devices(
        &req.devices,
        &Request {
            count: to_do,
            ..req.clone()
        },
        &issuer.job,
    )?;
    run(g, ks, &issuer, &Source::Dirs(&devices), req, progress)
}

/// What to produce on devices kept in memory ([`produce_in_memory`]).
#[derive(Debug, Clone)]
pub struct MemoryRequest {
    /// The job.
    pub job: i64,
    /// How many devices.
    pub count: u64,
    /// Worker threads.
    pub threads: usize,
    /// Now (Unix seconds).
    pub now: u64,
}

/// [`produce`] on new blank devices kept in memory (no device directories
/// are written or read): the same flow, the same Guardian, the same
/// database and count. For measuring the station (`bench_production`).
pub fn produce_in_memory(
    g: &GuardianDir,
    ks: &SealedKeyStore,
    req: &MemoryRequest,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Summary, StartError> {
    let store = g.store()?;
    let issuer = JobIssuer::open(&store, ks, req.job)?;
    let to_do = check_start(&issuer, Stage::All, req.count, req.now)?;
    let ty = issuer.job.device_types.first().copied().unwrap_or(1);
    let devices: Vec<(Vec<u8>, u32)> = (1..=to_do)
        .map(|n| (pick_uid(&issuer.job, n), ty))
        .collect();
    let full = Request {
        job: req.job,
        devices: PathBuf::new(),
        count: req.count,
        threads: req.threads,
        stage: Stage::All,
        now: req.now,
        transcript: None,
    };
    run(g, ks, &issuer, &Source::Memory(&devices), &full, progress)
}

/// How many devices a run may do, or why it may not start.
fn check_start(
    issuer: &JobIssuer<'_>,
    stage: Stage,
    count: u64,
    now: u64,
) -> Result<u64, StartError> {
    let remaining = issuer.job.remaining();
    if stage == Stage::Program {
        return Ok(count);
    }
    if remaining == 0 {
        return Err(trustchain_guardian::Error::JobExhausted(issuer.job.id).into());
    }
    if now >= issuer.job.expires {
        return Err(trustchain_guardian::Error::JobExpired(issuer.job.id).into());
    }
    Ok(count.min(remaining))
}

/// Where a run's devices are.
enum Source<'a> {
    /// Device directories: opened, and saved after each device.
    Dirs(&'a [PathBuf]),
    /// New blank devices (UID, type) kept in memory.
    Memory(&'a [(Vec<u8>, u32)]),
}

impl Source<'_> {
    fn len(&self) -> usize {
        match self {
            Source::Dirs(d) => d.len(),
            Source::Memory(d) => d.len(),
        }
    }

    /// How a device is named in failures.
    fn name(&self, i: usize) -> PathBuf {
        match self {
            Source::Dirs(d) => d[i].clone(),
            Source::Memory(_) => PathBuf::from(format!("memory/dev-{:05}", i + 1)),
        }
    }

    fn get(&self, i: usize) -> Result<SimDevice, String> {
        match self {
            Source::Dirs(d) => SimDevice::open(&d[i]).map_err(|e| e.to_string()),
            Source::Memory(d) => SimDevice::in_memory(&d[i].0, d[i].1, Geometry::SMALL_PAGES)
                .map_err(|e| e.to_string()),
        }
    }

    /// Keeps what happened to the device (saves a directory).
    fn keep(&self, dev: &SimDevice) -> Result<(), String> {
        match self {
            Source::Dirs(_) => dev.save().map_err(|e| e.to_string()),
            Source::Memory(_) => Ok(()),
        }
    }
}

/// The workers: each claims [`GROUP`] devices at a time.
fn run(
    g: &GuardianDir,
    ks: &SealedKeyStore,
    issuer: &JobIssuer<'_>,
    source: &Source<'_>,
    req: &Request,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Summary, StartError> {
    let total = source.len() as u64;
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
            let (next, done, provisioned, programmed, failures, mastering) = (
                &next,
                &done,
                &provisioned,
                &programmed,
                &failures,
                &mastering,
            );
            s.spawn(move || loop {
                let start = next.fetch_add(GROUP as u64, Ordering::SeqCst);
                if start >= total {
                    break;
                }
                let group: Vec<usize> = (start..total.min(start + GROUP as u64))
                    .map(|i| i as usize)
                    .collect();
                let outcomes = one_group(source, &group, issuer, &mut store, req, mastering);
                for (i, outcome) in group.iter().zip(outcomes) {
                    match outcome {
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
                                    device: source.name(*i),
                                    serial,
                                    reason,
                                });
                            }
                        }
                    }
                    progress(done.fetch_add(1, Ordering::SeqCst) + 1, total);
                }
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

/// One device's outcome: (provisioned, programmed), or (serial if one was
/// issued, why it failed).
type Outcome = Result<(bool, bool), (Option<u64>, String)>;

/// A device's certificate, issued and recorded by the Guardian, with the
/// device's key-agreement key (for the product key).
struct Certified {
    serial: u64,
    cert: Vec<u8>,
    agreement: [u8; 65],
}

/// A connection to a device through the SBM's frames, recorded into the
/// request's transcript if it has one.
fn connect<'d>(
    dev: &'d mut SimDevice,
    req: &Request,
) -> Result<Programmer<Recording<SimLink<'d>>>, String> {
    let sink = req.transcript.clone().unwrap_or_default();
    Ok(Programmer::new(Recording::new(
        SimLink::new(dev).map_err(|e| e.to_string())?,
        sink,
    )))
}

/// A group of devices: each is identified and makes its keys; the
/// Guardian issues the group's certificates in one group commit; then
/// each gets its chain, OEM keys and lock, its release and boot check,
/// and is saved.
fn one_group(
    source: &Source<'_>,
    group: &[usize],
    issuer: &JobIssuer<'_>,
    store: &mut trustchain_guardian::store::Store,
    req: &Request,
    mastering: &PublicKey,
) -> Vec<Outcome> {
    let mut out: Vec<Outcome> = vec![Ok((false, false)); group.len()];
    let mut devs: Vec<Option<SimDevice>> = Vec::with_capacity(group.len());
    for (k, &i) in group.iter().enumerate() {
        match source.get(i) {
            Ok(d) => devs.push(Some(d)),
            Err(e) => {
                devs.push(None);
                out[k] = Err((None, e));
            }
        }
    }
    let mut certs: Vec<Option<Certified>> = (0..group.len()).map(|_| None).collect();
    if req.stage != Stage::Program {
        // 1-2, per device: identify it, have it make its keys.
        let mut pending: Vec<(usize, Vec<u8>, u32, DeviceKeys)> = vec![];
        for (k, dev) in devs.iter_mut().enumerate() {
            let Some(dev) = dev else { continue };
            match identify_and_keys(dev, issuer, req) {
                Ok((uid, ty, keys)) => pending.push((k, uid, ty, keys)),
                Err(e) => out[k] = Err((None, e)),
            }
        }
        // 3. Certificates from the template, signed inside the Guardian,
        // recorded in one transaction before any is returned.
        let identities: Vec<PublicKey> = pending
            .iter()
            .map(|(_, _, _, keys)| PublicKey(keys.identity))
            .collect();
        let reqs: Vec<(&[u8], u32, &PublicKey)> = pending
            .iter()
            .zip(&identities)
            .map(|((_, uid, ty, _), id)| (&uid[..], *ty, id))
            .collect();
        if !reqs.is_empty() {
            match issuer.issue_batch(store, &reqs, req.now) {
                Ok(results) => {
                    for ((k, _, _, keys), r) in pending.iter().zip(results) {
                        match r {
                            Ok((serial, cert)) => {
                                certs[*k] = Some(Certified {
                                    serial,
                                    cert,
                                    agreement: keys.agreement,
                                })
                            }
                            Err(e) => out[*k] = Err((None, e.to_string())),
                        }
                    }
                }
                Err(e) => {
                    for (k, ..) in &pending {
                        out[*k] = Err((None, e.to_string()));
                    }
                }
            }
        }
    }
    for (k, dev) in devs.iter_mut().enumerate() {
        let Some(dev) = dev else { continue };
        if out[k].is_err() {
            // Nothing was issued to it: saved as it is.
            if let Err(e) = source.keep(dev) {
                out[k] = Err((None, e));
            }
            continue;
        }
        let serial = certs[k].as_ref().map(|c| c.serial);
        let result = finish(dev, certs[k].take(), issuer, req, mastering);
        let kept = source.keep(dev);
        out[k] = match (result, kept) {
            (Err(r), _) | (Ok(_), Err(r)) => Err((serial, r)),
            (Ok(r), Ok(())) => Ok(r),
        };
    }
    out
}

/// Steps 1-2 for one device: GET_INFO, the job's rules, GENERATE_KEYS with
/// its proof of possession checked. Returns (UID, device type, keys).
fn identify_and_keys(
    dev: &mut SimDevice,
    issuer: &JobIssuer<'_>,
    req: &Request,
) -> Result<(Vec<u8>, u32, DeviceKeys), String> {
    let mut prog = connect(dev, req)?;
    let info = prog.info().map_err(|e| e.to_string())?;
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
    Ok((info.uid, info.device_type, keys))
}

/// The rest for one device: with its certificate the chain, OEM keys and lock (provisioning); then the release and
/// the boot check (programming). Returns (provisioned, programmed).
fn finish(
    dev: &mut SimDevice,
    cert: Option<Certified>,
    issuer: &JobIssuer<'_>,
    req: &Request,
    mastering: &PublicKey,
) -> Result<(bool, bool), String> {
    let mut prog = connect(dev, req)?;
    let mut provisioned = false;
    if let Some(Certified {
        cert, agreement, ..
    }) = cert
    {
        // 4-5. Chain and root into write-protected storage.
        let [issuing, device_ca] = issuer.chain();
        prog.store_certs(&[cert, issuing, device_ca], &issuer.job.root_cert)
            .map_err(|e| e.to_string())?;
        // OEM keys: the product key wrapped to the device's own key.
        let ka = PublicKey::from_sec1(&agreement).ok_or("invalid device key-agreement key")?;
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
    } else if req.stage != Stage::Program {
        return Err("no certificate was issued".into());
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
            BootOutcome::Recovery(s) => return Err(format!("boot check failed: {}", s.describe())),
        }
    }
    Ok((provisioned, programmed))
}
