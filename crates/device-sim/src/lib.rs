//! A simulated MCU on the host, to run and break the Secure Boot Manager.
//!
//! The device implements the SBM's hardware traits
//! ([`trustchain_sbm::hal`]) with the rules of real parts, strictest where
//! parts differ:
//!
//! - [`SimFlash`]: NOR flash. Page erase to 0xFF, program only aligned and
//!   only into erased bytes, counters of erases, programs and bytes.
//! - [`SimProtected`]: write-once fields and a lock bit.
//! - [`DebugPort`]: what an SWD/JTAG probe sees; it obeys the lock.
//! - [`PowerSupply`]: numbers every erase, program, protected write and lock
//!   over the device's life, and cuts the power at a planned one, either
//!   before it ([`CutMode::Before`]) or in the middle of it
//!   ([`CutMode::Tear`]). MCUboot's simulator cuts only between operations;
//!   a torn write (half a magic, a half-programmed byte) is what bricks
//!   devices, so it is simulated too.
//! - [`SimRng`]: the OS, or a seed for reproducible tests.
//! - [`SimDevice`]: all of it with an identity, saved in a device
//!   directory whose `flash.bin` is the raw flash, to tamper with.
//!
//! ```no_run
//! use trustchain_device_sim::{CutMode, Geometry, SimDevice};
//! use trustchain_sbm::hal::Flash;
//!
//! let mut dev = SimDevice::create("/tmp/dev1", &[1, 2, 3, 4], 7, Geometry::SMALL_PAGES)?;
//! let start = dev.power().ops();
//! dev.power().cut_after(2, CutMode::Tear { seed: 42 });
//! dev.flash_mut().erase_page(0).unwrap();
//! assert!(dev.flash_mut().program(0, &[0; 8]).is_err()); // torn
//! dev.reboot();
//! assert_eq!(dev.power().ops() - start, 2);
//! dev.save()?;
//! # Ok::<(), trustchain_device_sim::DeviceError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod debug;
pub mod device;
pub mod flash;
pub mod power;
pub mod protected;
pub mod rng;

pub use debug::{DebugError, DebugPort};
pub use device::{DeviceError, Parts, SimDevice};
pub use flash::{FlashCounters, Geometry, GeometryError, SimFlash};
pub use power::{Cut, CutMode, CutPassed, PowerSupply};
pub use protected::{ProtectedFileError, SimProtected};
pub use rng::SimRng;
