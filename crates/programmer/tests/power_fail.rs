//! The power-fail campaign (MCUboot simulator style, plus torn writes): for
//! a factory install and for a field update, count the flash operations N
//! of an uninterrupted run, then for every k in 1..=N cut the power before
//! operation k, and again tearing operation k (part of its bytes written),
//! reboot, and check the invariant:
//!
//! * the device boots a verified image, the old or the new one, never an
//!   unverified one (`Run` only with a digest of a release we mastered);
//! * where a valid image existed (the update), the device is never left
//!   without one: it boots;
//! * where none existed yet (the factory install), it is at worst in
//!   recovery and a new install then succeeds.
//!
//! Two geometries: small pages (1 KiB, 8-byte writes) and large pages
//! (16 KiB, 16-byte writes).
mod common;

use std::path::Path;

use common::*;
use trustchain_device_sim::{CutMode, Geometry, SimDevice};
use trustchain_programmer::client::Programmer;
use trustchain_programmer::sim::SimLink;
use trustchain_sbm::BootOutcome;

fn clone_device(src: &Path, dst: &Path) -> SimDevice {
    std::fs::create_dir(dst).unwrap();
    for f in ["device.toml", "flash.bin", "protected.bin"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    SimDevice::open(dst).unwrap()
}

fn digest_of(release_dir: &Path) -> [u8; 32] {
    let (upk, _) = read_release(release_dir);
    trustchain_formats::upk::Upk::parse(&upk)
        .unwrap()
        .manifest
        .image_digest
        .0
}

struct Campaign {
    cut_points: u64,
    runs: u64,
    recovered: u64,
}

/// Runs `op` on a copy of `base` with a cut at operation k (or none), then
/// reboots and returns the boot outcome. `None` for k means no cut and
/// returns the number of operations the run took.
fn run_once(
    base: &Path,
    scratch: &Path,
    cut: Option<(u64, CutMode)>,
    op: &dyn Fn(&mut Programmer<SimLink<'_>>),
    recover: Option<(&[u8], &[u8], [u8; 32])>,
) -> (BootOutcome, u64, bool) {
    let mut dev = clone_device(base, scratch);
    let power = dev.power().clone();
    let start = power.ops();
    let mut prog = Programmer::new(SimLink::new(&mut dev).unwrap());
    if let Some((k, mode)) = cut {
        power.cut_after(k, mode);
    }
    op(&mut prog);
    let fired = !power.is_on();
    let used = power.ops() - start;
    power.cancel();
    let outcome = prog.transport_mut().boot();
    if let (BootOutcome::Recovery(_), Some((upk, enc, digest))) = (outcome, recover) {
        // Not a brick: the device in recovery takes a fresh install.
        prog.send_release(upk, enc, false, &mut |_, _| {})
            .expect("recovery install");
        assert!(matches!(prog.transport_mut().boot(), BootOutcome::Run(i) if i.digest == digest));
    }
    (outcome, used, fired)
}

fn campaign(geometry: Geometry, label: &str) -> (Campaign, Campaign) {
    let o = oem();
    let v1 = release(&o, "v1", "1.0.0", 10_000, 1);
    let v2 = release(&o, "v2", "1.1.0", 13_000, 2);
    let (d1, d2) = (digest_of(&v1), digest_of(&v2));
    let (upk1, enc1) = read_release(&v1);
    let (upk2, enc2) = read_release(&v2);
    let tmp = tempfile::tempdir().unwrap();
    let blank = tmp.path().join("provisioned");
    drop(provisioned_device(&o, &blank, geometry, b"\x10\x20"));

    // Factory install over the connection.
    let install = |p: &mut Programmer<SimLink<'_>>| {
        let _ = p.send_release(&upk1, &enc1, false, &mut |_, _| {});
    };
    let (outcome, n, _) = run_once(
        &blank,
        &tmp.path().join("count-install"),
        None,
        &install,
        None,
    );
    assert!(
        matches!(outcome, BootOutcome::Run(i) if i.digest == d1),
        "{label}: uninterrupted install boots v1"
    );
    let mut install_c = Campaign {
        cut_points: n,
        runs: 0,
        recovered: 0,
    };
    for k in 1..=n {
        for mode in [CutMode::Before, CutMode::Tear { seed: k }] {
            let dir = tmp
                .path()
                .join(format!("i-{k}-{}", matches!(mode, CutMode::Before)));
            let (outcome, _, fired) = run_once(
                &blank,
                &dir,
                Some((k, mode)),
                &install,
                Some((&upk1, &enc1, d1)),
            );
            assert!(fired, "{label}: the cut at {k} of {n} did not happen");
            match outcome {
                BootOutcome::Run(i) => assert_eq!(
                    i.digest, d1,
                    "{label}: cut at {k} {mode:?} ran an unknown image"
                ),
                // No image existed: recovery is allowed (run_once checked it recovers).
                BootOutcome::Recovery(_) => install_c.recovered += 1,
            }
            install_c.runs += 1;
        }
    }
    // Field update through the application's path, from a device running v1.
    let running = tmp.path().join("running-v1");
    {
        let mut dev = clone_device(&blank, &running);
        let mut prog = Programmer::new(SimLink::new(&mut dev).unwrap());
        prog.send_release(&upk1, &enc1, false, &mut |_, _| {})
            .unwrap();
        drop(prog);
        dev.save().unwrap();
    }
    let update = |p: &mut Programmer<SimLink<'_>>| {
        if p.send_release(&upk2, &enc2, true, &mut |_, _| {}).is_ok() {
            // The SBM resets and installs at boot; the cut may land there.
            let _ = p.reset();
        }
    };
    let count_update = |p: &mut Programmer<SimLink<'_>>| {
        p.send_release(&upk2, &enc2, true, &mut |_, _| {}).unwrap();
        let link = p.transport_mut();
        // Count the install at boot within the run.
        assert!(matches!(link.boot(), BootOutcome::Run(i) if i.digest == d2));
    };
    let (outcome, n, _) = run_once(
        &running,
        &tmp.path().join("count-update"),
        None,
        &count_update,
        None,
    );
    assert!(
        matches!(outcome, BootOutcome::Run(i) if i.digest == d2),
        "{label}: uninterrupted update boots v2"
    );
    let mut update_c = Campaign {
        cut_points: n,
        runs: 0,
        recovered: 0,
    };
    for k in 1..=n {
        for mode in [CutMode::Before, CutMode::Tear { seed: 1000 + k }] {
            let dir = tmp
                .path()
                .join(format!("u-{k}-{}", matches!(mode, CutMode::Before)));
            let (outcome, _, fired) = run_once(&running, &dir, Some((k, mode)), &update, None);
            assert!(
                fired,
                "{label}: the update cut at {k} of {n} did not happen"
            );
            match outcome {
                BootOutcome::Run(i) => {
                    assert!(
                        i.digest == d1 || i.digest == d2,
                        "{label}: cut at {k} {mode:?} ran an unknown image"
                    )
                }
                BootOutcome::Recovery(s) => {
                    panic!("{label}: cut at {k} {mode:?} of the update left no image ({s:?})")
                }
            }
            update_c.runs += 1;
        }
    }
    (install_c, update_c)
}

#[test]
fn power_cut_at_every_operation_small_and_large_pages() {
    let mut total = 0;
    for (geometry, label) in [
        (Geometry::SMALL_PAGES, "small pages"),
        (Geometry::LARGE_PAGES, "large pages"),
    ] {
        let (i, u) = campaign(geometry, label);
        assert!(
            i.cut_points > 10 && u.cut_points > 10,
            "{label}: suspiciously few operations"
        );
        println!(
            "{label}: install {} cut points ({} runs, cut and torn; {} left in recovery, all re-installed), update {} cut points ({} runs, all booted v1 or v2)",
            i.cut_points, i.runs, i.recovered, u.cut_points, u.runs
        );
        total += i.runs + u.runs;
    }
    println!("power-fail campaign: {total} interrupted runs, every one rebooted and checked");
}
