//! The Secure Boot Manager on a Cortex-M4: Arm's MPS2 AN386 board as QEMU
//! models it (`qemu-system-arm -machine mps2-an386`). Everything the SBM
//! decides is in `trustchain-sbm`; this crate only gives it hardware:
//!
//! * [`flash::PsramFlash`]: NOR flash emulated in file-backed PSRAM;
//! * [`protected::PsramProtected`]: write-once fields and a lock byte;
//! * [`rng::Drbg`]: a seeded DRBG (the board has no TRNG; test-board only);
//! * [`uart::Uart`]: UART0, carrying the connection protocol.
//!
//! [`memory`] maps PSRAM. The application slot starts at flash offset 0,
//! which appears at [`APP_ADDRESS`] (0x2100_0000): images for this board are
//! mastered with that load address.
//!
//! At every reset the SBM boots (finishes a journaled install, checks the
//! application against the signature table), then serves the UART until
//! the programmer sends `RESET`, and boots again. A real SBM jumps to the
//! application when the boot check passes; on this test board the
//! application slot holds test bytes, not code, so it keeps serving and the
//! programmer reads the outcome with `GET_INFO` or `READ_SIGNATURE_TABLE`.
//!
//! With `--features bench` it instead times the boot check (see [`bench`]).
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(feature = "bench")]
mod bench;
mod flash;
mod memory;
mod protected;
mod rng;
#[cfg(not(feature = "bench"))]
mod uart;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::debug;

use flash::PsramFlash;
use protected::PsramProtected;

/// Where flash offset 0, the start of the application slot, appears.
pub const APP_ADDRESS: u32 = memory::PSRAM_BASE + memory::FLASH.offset;

/// The board's storage.
struct Board {
    flash: PsramFlash,
    prot: PsramProtected,
    seed: &'static mut [u8],
}

impl Board {
    fn take() -> Option<Board> {
        Some(Board {
            flash: PsramFlash::new(memory::take(memory::FLASH)?)?,
            prot: PsramProtected::new(memory::take(memory::PROTECTED)?)?,
            seed: memory::take(memory::SEED)?,
        })
    }
}

#[entry]
fn main() -> ! {
    let Some(board) = Board::take() else { fail() };
    #[cfg(feature = "bench")]
    bench::run(board);
    #[cfg(not(feature = "bench"))]
    serve(board)
}

/// Boot, serve until `RESET`, boot again: forever.
#[cfg(not(feature = "bench"))]
fn serve(board: Board) -> ! {
    use trustchain_formats::frame::MAX_FRAME;
    use trustchain_sbm::{layout::Layout, Sbm};

    let (Some(rng), Some(mut uart)) = (rng::Drbg::from_slot(board.seed), uart::Uart::take()) else {
        fail()
    };
    let layout = Layout::for_flash(&board.flash, APP_ADDRESS);
    let Some(mut sbm) = Sbm::new(board.flash, board.prot, rng, layout) else {
        fail()
    };
    let mut request = [0u8; MAX_FRAME];
    let mut response = [0u8; MAX_FRAME];
    loop {
        // `Run` would jump to the application on a real chip (module docs).
        let _outcome = sbm.boot();
        sbm.serve(&mut uart, &mut request, &mut response);
    }
}

/// Stops: under QEMU (semihosting enabled) the emulator exits with status
/// 1, so a host test sees the device go away instead of waiting forever.
/// Without a debugger the semihosting call faults and the core stays here.
fn fail() -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    fail()
}

/// A fault stops the board like a panic.
///
/// # Safety
///
/// Called by the hardware on a HardFault only (cortex-m-rt's contract).
#[exception]
unsafe fn HardFault(_: &ExceptionFrame) -> ! {
    fail()
}
