//! `--features bench`: instruction counts of the boot check, read by the
//! `qemu-insncount` plugin at each [`bench_marker`] call
//! (`scripts/bench-sbm`, `docs/benchmarks.md`).
//!
//! 1. A [`APP_LEN`]-byte application and the state record naming its digest
//!    are written, as an install leaves them.
//! 2. Marks 0 -> 1: SHA-256 of the application read through the `Flash`
//!    trait in 4 KiB chunks, as `Sbm::check_application` reads it.
//! 3. Marks 2 -> 3: one `Sbm::check_application` (state record load, the
//!    same hash, the comparison).
//!
//! Then it prints the outcome and exits through semihosting.
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m_semihosting::{debug, hprintln};
use sha2::Digest;
use trustchain_sbm::crypto::Hasher;
use trustchain_sbm::hal::Flash;
use trustchain_sbm::layout::Layout;
use trustchain_sbm::state::{self, Installed, State};
use trustchain_sbm::{BootOutcome, Sbm};

use crate::flash::PsramFlash;
use crate::{fail, Board, APP_ADDRESS};

/// Bytes of application hashed.
pub const APP_LEN: u32 = 64 * 1024;

static MARKS: AtomicU32 = AtomicU32::new(0);

/// The plugin's marker: its first instruction is where counts are read.
/// The store keeps the call from being optimised away.
#[inline(never)]
#[no_mangle]
pub extern "C" fn bench_marker() {
    MARKS.fetch_add(1, Ordering::Relaxed);
}

fn hash_app(flash: &mut PsramFlash, layout: &Layout) -> Option<[u8; 32]> {
    let mut chunk = [0u8; 4096];
    let mut h = Hasher::new();
    let mut done = 0;
    while done < APP_LEN {
        flash.read(layout.app.offset + done, &mut chunk).ok()?;
        h.update(chunk);
        done += chunk.len() as u32;
    }
    Some(h.finalize().into())
}

/// Runs the benchmark and exits.
pub fn run(board: Board) -> ! {
    let Board {
        mut flash,
        prot,
        seed,
    } = board;
    // Nothing secret is made here; a fixed seed is fine.
    seed.fill(0x5A);
    let Some(rng) = crate::rng::Drbg::from_slot(seed) else {
        fail()
    };
    let layout = Layout::for_flash(&flash, APP_ADDRESS);
    let mut data = [0u8; 4096];
    for page in 0..APP_LEN / 4096 {
        let at = layout.app.offset + page * 4096;
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i as u32).wrapping_mul(31).wrapping_add(page) as u8;
        }
        if flash.erase_page(at).is_err() || flash.program(at, &data).is_err() {
            fail()
        }
    }
    for page in layout.state {
        if flash.erase_page(page).is_err() {
            fail()
        }
    }

    bench_marker();
    let digest = hash_app(&mut flash, &layout);
    bench_marker();

    let Some(digest) = digest else { fail() };
    let st = State {
        installed: Some(Installed {
            version: [1, 0, 0],
            counter: 1,
            size: APP_LEN,
            load_address: APP_ADDRESS,
            digest,
        }),
        ..State::BLANK
    };
    if state::store(&mut flash, &layout, &st).is_err() {
        fail()
    }
    let Some(mut sbm) = Sbm::new(&mut flash, prot, rng, layout) else {
        fail()
    };

    bench_marker();
    let outcome = sbm.check_application();
    bench_marker();

    let ok = matches!(outcome, BootOutcome::Run(_));
    hprintln!("bench: app_len={} boot_check_ok={}", APP_LEN, ok);
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    fail()
}
