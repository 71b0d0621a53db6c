//! Where the keystore passphrase comes from: `--passphrase-file`, then
//! `TRUSTCHAIN_PASSPHRASE`, then an interactive prompt.
use std::io::IsTerminal;
use std::path::Path;

use trustchain_oem::error::{Error, Result};
use trustchain_oem::keystore::passphrase::Passphrase;
use zeroize::Zeroizing;

/// The environment variable that may hold the passphrase.
pub const ENV: &str = "TRUSTCHAIN_PASSPHRASE";

/// Gets the passphrase; `confirm` asks twice when prompting (new keystores).
pub fn obtain(file: Option<&Path>, confirm: bool) -> Result<Passphrase> {
    if let Some(f) = file {
        return Passphrase::from_file(f);
    }
    if let Ok(v) = std::env::var(ENV) {
        return Passphrase::new(Zeroizing::new(v));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::NoPassphrase {
            reason: "not running on a terminal, and none was given".into(),
        });
    }
    let first = Zeroizing::new(rpassword::prompt_password("keystore passphrase: ").map_err(
        |e| Error::NoPassphrase {
            reason: e.to_string(),
        },
    )?);
    if confirm {
        let second = Zeroizing::new(rpassword::prompt_password("again: ").map_err(|e| {
            Error::NoPassphrase {
                reason: e.to_string(),
            }
        })?);
        if *first != *second {
            return Err(Error::NoPassphrase {
                reason: "the two entries differ".into(),
            });
        }
        if first.chars().count() < 12 {
            eprintln!(
                "warning: a passphrase under 12 characters is weak protection for the OEM's keys"
            );
        }
    }
    Passphrase::new(first)
}
