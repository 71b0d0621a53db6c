//! Identifiers and versions. Each is a newtype that cannot hold an invalid
//! value: the OEM and product IDs are never zero, a version is three 16-bit
//! numbers, and the security counter is the anti-rollback value a device
//! stores.
use core::fmt;
use core::str::FromStr;

use crate::FormatError;

macro_rules! nonzero_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(core::num::NonZeroU32);

        impl $name {
            /// Makes the identifier; zero is not a valid identifier.
            pub const fn new(value: u32) -> Option<Self> {
                match core::num::NonZeroU32::new(value) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
            /// The numeric value.
            pub const fn get(self) -> u32 {
                self.0.get()
            }
            pub(crate) fn from_u64(value: u64) -> Result<Self, FormatError> {
                u32::try_from(value)
                    .ok()
                    .and_then(Self::new)
                    .ok_or(FormatError::InvalidValue {
                        field: $field,
                        expected: "an integer from 1 to 4294967295",
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = FormatError;
            /// Decimal, or hexadecimal with a `0x` prefix.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    Some(hex) => u32::from_str_radix(hex, 16),
                    None => s.parse::<u32>(),
                };
                parsed.ok().and_then(Self::new).ok_or(FormatError::InvalidValue {
                    field: $field,
                    expected: "an integer from 1 to 4294967295 (decimal or 0x-hex)",
                })
            }
        }
    };
}

nonzero_id!(
    /// The OEM's identifier, carried in every certificate and UPK the OEM makes.
    OemId,
    "OEM ID"
);
nonzero_id!(
    /// A product's identifier within its OEM.
    ProductId,
    "product ID"
);

/// A firmware version `major.minor.patch`, each part 0..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// Patch version.
    pub patch: u16,
}

impl Version {
    /// The security counter a version implies when none is given:
    /// `major << 32 | minor << 16 | patch`, so that counters order exactly as
    /// versions do.
    pub const fn default_counter(self) -> SecurityCounter {
        SecurityCounter(
            ((self.major as u64) << 32) | ((self.minor as u64) << 16) | self.patch as u64,
        )
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const BAD: FormatError = FormatError::InvalidValue {
            field: "version",
            expected: "MAJOR.MINOR.PATCH with each part from 0 to 65535, e.g. 1.4.2",
        };
        let mut parts = s.split('.');
        let mut next = || -> Result<u16, FormatError> {
            let p = parts.next().ok_or(BAD)?;
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(BAD);
            }
            p.parse::<u16>().map_err(|_| BAD)
        };
        let v = Version {
            major: next()?,
            minor: next()?,
            patch: next()?,
        };
        if parts.next().is_some() {
            return Err(BAD);
        }
        Ok(v)
    }
}

/// The monotonic anti-rollback counter (SUIT's sequence number). A device
/// refuses an update whose counter is below the one it has stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecurityCounter(pub u64);

impl fmt::Display for SecurityCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A SHA-256 digest (SUIT_Digest with algorithm -16).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parses_and_orders_like_its_counter() {
        let a: Version = "1.2.3".parse().unwrap();
        let b: Version = "1.10.0".parse().unwrap();
        assert_eq!(
            a,
            Version {
                major: 1,
                minor: 2,
                patch: 3
            }
        );
        assert!(a < b);
        assert!(a.default_counter() < b.default_counter());
        assert_eq!(a.default_counter().0, (1 << 32) | (2 << 16) | 3);
    }

    #[test]
    fn version_rejects_malformed() {
        for s in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "1.2.x",
            "65536.0.0",
            "01.2.3",
            "1..3",
            "-1.2.3",
            "+1.2.3",
        ] {
            assert!(s.parse::<Version>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn ids_reject_zero_and_accept_hex() {
        assert!("0".parse::<OemId>().is_err());
        assert!(OemId::new(0).is_none());
        assert_eq!("0x10".parse::<OemId>().unwrap().get(), 16);
        assert_eq!("42".parse::<ProductId>().unwrap().get(), 42);
        assert!("4294967296".parse::<ProductId>().is_err());
        assert!(ProductId::from_u64(1 << 32).is_err());
    }
}
