//! The power supply: numbers every operation that changes the device and
//! cuts the power at a planned one.
//!
//! Flash erases and programs, protected-storage writes and the lock are
//! *operations*. Each one that passes its own validation takes the next
//! number, starting at 1 and counting across the whole life of the device
//! (the count is saved in `device.toml`). A request that fails validation
//! (misaligned, out of bounds, already written, ...) changes nothing and
//! takes no number. Reads take no number.
//!
//! A [`Cut`] names the operation at which the power goes away. That
//! operation returns `PowerLoss` and, depending on the [`CutMode`], did not
//! happen at all or happened in part. From then on every operation, reads
//! included, returns `PowerLoss` until the device reboots
//! ([`crate::SimDevice::reboot`], or [`PowerSupply::restore`] for a flash or
//! a store used on its own).
//!
//! To cut at every operation of a run, as MCUboot's simulator does, count
//! the run once without a cut: read [`PowerSupply::ops`] before and after.
use std::cell::RefCell;
use std::rc::Rc;

/// How the planned operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// The operation does not happen at all.
    Before,
    /// The operation happens in part, chosen from `seed`: a program writes a
    /// prefix of its data and one half-programmed byte; an erase sets a
    /// prefix of the page to 0xFF. Protected storage is atomic, so there a
    /// tear is the same as [`CutMode::Before`].
    Tear {
        /// Picks where the operation stops (and which bits of the torn byte
        /// were cleared); the same seed always tears the same way.
        seed: u64,
    },
}

/// A planned power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The number of the operation that fails (1-based, over the device's
    /// life; see [`PowerSupply::ops`]).
    pub at_op: u64,
    /// How it fails.
    pub mode: CutMode,
}

/// A cut planned for an operation that has already happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a cut at operation {at_op} would never happen: {done} operations are done already")]
pub struct CutPassed {
    /// The operation the cut named.
    pub at_op: u64,
    /// The operations numbered so far.
    pub done: u64,
}

/// The power went away; the operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PowerLoss;

/// What an operation that got its number may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Run to completion.
    Run,
    /// Do the part that the mode allows, then return `PowerLoss`.
    Cut(CutMode),
}

#[derive(Debug, Default)]
struct Supply {
    ops: u64,
    plan: Option<Cut>,
    off: bool,
}

/// The power supply of one device, shared by its flash and its protected
/// storage (cloning gives another handle to the same supply).
///
/// Single-threaded, like the SBM core.
#[derive(Debug, Clone, Default)]
pub struct PowerSupply(Rc<RefCell<Supply>>);

impl PowerSupply {
    /// A supply that is on, with no operation done and no cut planned.
    pub fn new() -> Self {
        Self::default()
    }

    /// A supply that continues the count of a saved device.
    pub(crate) fn with_ops(ops: u64) -> Self {
        let supply = Self::new();
        supply.0.borrow_mut().ops = ops;
        supply
    }

    /// The operations numbered so far (the last operation's number).
    pub fn ops(&self) -> u64 {
        self.0.borrow().ops
    }

    /// Plans a cut, replacing any earlier plan. A plan that has not fired
    /// survives a reboot.
    pub fn schedule(&self, cut: Cut) -> Result<(), CutPassed> {
        let mut s = self.0.borrow_mut();
        if cut.at_op <= s.ops {
            return Err(CutPassed {
                at_op: cut.at_op,
                done: s.ops,
            });
        }
        s.plan = Some(cut);
        Ok(())
    }

    /// Plans a cut at the `n`th operation from now (`n` = 1: the next one)
    /// and returns it. `n` = 0 is taken as 1.
    pub fn cut_after(&self, n: u64, mode: CutMode) -> Cut {
        let mut s = self.0.borrow_mut();
        let cut = Cut {
            at_op: s.ops.saturating_add(n.max(1)),
            mode,
        };
        s.plan = Some(cut);
        cut
    }

    /// Removes the plan that has not fired yet, if any.
    pub fn cancel(&self) -> Option<Cut> {
        self.0.borrow_mut().plan.take()
    }

    /// The plan that has not fired yet, if any.
    pub fn planned(&self) -> Option<Cut> {
        self.0.borrow().plan
    }

    /// Whether the power is on (no cut has fired since the last restore).
    pub fn is_on(&self) -> bool {
        !self.0.borrow().off
    }

    /// Powers the device up again after a cut. What the cut left in flash
    /// stays as it is.
    pub fn restore(&self) {
        self.0.borrow_mut().off = false;
    }

    /// Fails while the power is off (for reads and before validation).
    pub(crate) fn check(&self) -> Result<(), PowerLoss> {
        if self.0.borrow().off {
            Err(PowerLoss)
        } else {
            Ok(())
        }
    }

    /// Numbers a validated operation and says how far it may go. When the
    /// plan names it, the plan is used up and the power goes off.
    pub(crate) fn begin_op(&self) -> Result<Grant, PowerLoss> {
        let mut s = self.0.borrow_mut();
        if s.off {
            return Err(PowerLoss);
        }
        s.ops = s.ops.saturating_add(1);
        match s.plan {
            Some(cut) if cut.at_op == s.ops => {
                s.plan = None;
                s.off = true;
                Ok(Grant::Cut(cut.mode))
            }
            _ => Ok(Grant::Run),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_operations_and_cuts_the_planned_one() {
        let p = PowerSupply::new();
        assert_eq!(p.begin_op(), Ok(Grant::Run));
        let cut = p.cut_after(2, CutMode::Before);
        assert_eq!(cut.at_op, 3);
        assert_eq!(p.begin_op(), Ok(Grant::Run));
        assert_eq!(p.begin_op(), Ok(Grant::Cut(CutMode::Before)));
        assert_eq!(p.ops(), 3);
        assert!(!p.is_on());
        assert_eq!(p.planned(), None);
        // Off: nothing is numbered until the restore.
        assert_eq!(p.begin_op(), Err(PowerLoss));
        assert_eq!(p.check(), Err(PowerLoss));
        assert_eq!(p.ops(), 3);
        p.restore();
        assert_eq!(p.check(), Ok(()));
        assert_eq!(p.begin_op(), Ok(Grant::Run));
        assert_eq!(p.ops(), 4);
    }

    #[test]
    fn refuses_a_cut_in_the_past_and_shares_state_between_clones() {
        let p = PowerSupply::with_ops(10);
        let q = p.clone();
        let past = Cut {
            at_op: 10,
            mode: CutMode::Before,
        };
        assert_eq!(
            p.schedule(past),
            Err(CutPassed {
                at_op: 10,
                done: 10
            })
        );
        let next = Cut {
            at_op: 11,
            mode: CutMode::Tear { seed: 7 },
        };
        p.schedule(next).unwrap();
        assert_eq!(q.planned(), Some(next));
        assert_eq!(q.begin_op(), Ok(Grant::Cut(CutMode::Tear { seed: 7 })));
        assert!(!p.is_on());
        assert_eq!(p.ops(), 11);
        assert_eq!(p.cancel(), None);
    }
}
