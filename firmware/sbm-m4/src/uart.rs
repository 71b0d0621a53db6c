//! UART0 of the board, a CMSDK APB UART (Arm DDI0479C; QEMU's
//! `hw/char/cmsdk-apb-uart.c`): one-byte transmit and receive buffers,
//! polled. It carries the framed connection protocol; the SBM parses it.
use trustchain_sbm::hal::Channel;

/// UART0's base address on the MPS2 AN386.
const UART0: usize = 0x4000_4000;

/// The registers the SBM uses (offsets from [`UART0`]).
#[derive(Clone, Copy)]
#[repr(usize)]
enum Reg {
    /// Read: the received byte (clears RX full). Write: a byte to send.
    Data = 0x00,
    /// Bit 0: TX buffer full. Bit 1: RX buffer full.
    State = 0x04,
    /// Bit 0: TX enable. Bit 1: RX enable.
    Ctrl = 0x08,
    /// Baud rate divider (at least 16).
    BaudDiv = 0x10,
}

const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;

/// Reads a UART0 register.
///
/// # Safety
///
/// `reg` is a register of UART0, a peripheral present on this board; reading
/// `Data` consumes the received byte, which only [`Uart`] does.
unsafe fn read_reg(reg: Reg) -> u32 {
    // SAFETY: a valid, aligned MMIO address (see above).
    unsafe { core::ptr::read_volatile((UART0 + reg as usize) as *const u32) }
}

/// Writes a UART0 register.
///
/// # Safety
///
/// `reg` is a register of UART0, present on this board, and only the one
/// [`Uart`] writes it.
unsafe fn write_reg(reg: Reg, value: u32) {
    // SAFETY: a valid, aligned MMIO address (see above).
    unsafe { core::ptr::write_volatile((UART0 + reg as usize) as *mut u32, value) }
}

/// UART0, enabled for both directions. Only [`Uart::take`] makes one.
pub struct Uart(());

static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

impl Uart {
    /// Enables UART0 (115200 baud at the 25 MHz APB clock: QEMU ignores the
    /// rate but wants a valid divider); `None` the second time.
    pub fn take() -> Option<Self> {
        if TAKEN.swap(true, core::sync::atomic::Ordering::AcqRel) {
            return None;
        }
        // SAFETY: UART0 registers; this is the only `Uart`.
        unsafe {
            write_reg(Reg::BaudDiv, 25_000_000 / 115_200);
            write_reg(Reg::Ctrl, CTRL_TX_EN | CTRL_RX_EN);
        }
        Some(Uart(()))
    }

    fn state(&self) -> u32 {
        // SAFETY: UART0's state register; reading it has no side effect.
        unsafe { read_reg(Reg::State) }
    }
}

impl Channel for Uart {
    /// Blocks until every byte arrived; a UART never closes.
    fn read_exact(&mut self, buf: &mut [u8]) -> bool {
        for b in buf {
            while self.state() & STATE_RX_FULL == 0 {
                core::hint::spin_loop();
            }
            // SAFETY: UART0's data register, read by the one `Uart` (&mut self).
            *b = unsafe { read_reg(Reg::Data) } as u8;
        }
        true
    }

    fn write_all(&mut self, data: &[u8]) {
        for &b in data {
            while self.state() & STATE_TX_FULL != 0 {
                core::hint::spin_loop();
            }
            // SAFETY: UART0's data register, written by the one `Uart` (&mut self).
            unsafe { write_reg(Reg::Data, b as u32) };
        }
    }
}
