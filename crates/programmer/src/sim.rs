//! The SBM running on a simulated MCU, reached through the same frames a
//! UART would carry. The SBM (its RAM state included) lives as long as the
//! link; a `RESET` request restores power and boots it, and the boot
//! outcome is kept for the caller.
use trustchain_device_sim::{PowerSupply, SimDevice, SimFlash, SimProtected, SimRng};
use trustchain_formats::frame::MAX_FRAME;
use trustchain_sbm::layout::Layout;
use trustchain_sbm::protocol::After;
use trustchain_sbm::{BootOutcome, Sbm};

use crate::client::{Error, Transport};

/// Where flash appears in the simulated MCU's memory map.
pub const FLASH_BASE: u32 = 0x0800_0000;

/// The layout the simulator uses for a device.
pub fn layout(dev: &SimDevice) -> Layout {
    Layout::for_flash(dev.flash(), FLASH_BASE)
}

/// The SBM on a simulated device's hardware.
pub type SimSbm<'a> = Sbm<&'a mut SimFlash, &'a mut SimProtected, &'a mut SimRng>;

/// A simulated device reached through frames.
pub struct SimLink<'a> {
    sbm: Box<SimSbm<'a>>,
    power: PowerSupply,
    /// The outcome of the last boot (after a `RESET`, or [`SimLink::boot`]).
    pub last_boot: Option<BootOutcome>,
}

impl<'a> SimLink<'a> {
    /// Connects to `dev`: the SBM starts (without booting; call
    /// [`SimLink::boot`] for a reset).
    pub fn new(dev: &'a mut SimDevice) -> Result<Self, Error> {
        let layout = layout(dev);
        let power = dev.power().clone();
        let p = dev.parts();
        let sbm = Sbm::new(p.flash, p.protected, p.rng, layout)
            .ok_or_else(|| Error::Transport("the flash layout does not fit this device".into()))?;
        Ok(Self {
            sbm: Box::new(sbm),
            power,
            last_boot: None,
        })
    }

    /// Resets the MCU (power back on after any cut) and runs the SBM's boot.
    pub fn boot(&mut self) -> BootOutcome {
        self.power.restore();
        let outcome = self.sbm.boot();
        self.last_boot = Some(outcome);
        outcome
    }

    /// The SBM, for the application's direct calls in tests.
    pub fn sbm(&mut self) -> &mut SimSbm<'a> {
        &mut self.sbm
    }
}

impl Transport for SimLink<'_> {
    fn exchange(&mut self, request: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Box::new([0u8; MAX_FRAME]);
        let (n, after) = self.sbm.handle_frame(request, &mut out);
        let response = out[..n].to_vec();
        if after == After::Reset {
            self.boot();
        }
        Ok(response)
    }
}
