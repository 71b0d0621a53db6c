//! The passphrase that seals the software keystore. It lives only in a
//! zeroizing buffer and never appears in `Debug` output.
use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, IoContext, Result};

/// A passphrase.
pub struct Passphrase(Zeroizing<String>);

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

impl Passphrase {
    /// From a string (an empty one is refused).
    pub fn new(s: Zeroizing<String>) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::NoPassphrase {
                reason: "the passphrase is empty".into(),
            });
        }
        Ok(Self(s))
    }

    /// From the first line of a file (trailing newline removed).
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw = Zeroizing::new(std::fs::read_to_string(path).at(path)?);
        let line = raw.lines().next().unwrap_or("");
        Self::new(Zeroizing::new(line.to_string())).map_err(|_| Error::NoPassphrase {
            reason: format!("{} holds no passphrase on its first line", path.display()),
        })
    }

    /// The bytes, for the KDF.
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}
