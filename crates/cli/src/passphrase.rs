//! Where the keystore passphrase comes from: `--passphrase-file`, then
//! `TRUSTCHAIN_PASSPHRASE`, then an interactive prompt. A directory whose
//! keys are in a PKCS#11 token takes the token's user PIN through the same
//! channel (`oem init` and `guardian init` also take `--pin-file`): one
//! secret unlocks a directory's keys, whatever holds them.
use std::io::IsTerminal;
use std::path::Path;

use trustchain_oem::error::{Error, Result};
use trustchain_oem::keystore::passphrase::Passphrase;
use trustchain_oem::keystore::TokenRef;
use zeroize::Zeroizing;

/// The environment variable that may hold the passphrase.
pub const ENV: &str = "TRUSTCHAIN_PASSPHRASE";

/// Gets the passphrase; `confirm` asks twice when prompting (new keystores).
pub fn obtain(file: Option<&Path>, confirm: bool) -> Result<Passphrase> {
    obtain_as(file, "keystore passphrase: ", confirm)
}

/// Gets the secret that unlocks an existing directory's keys: its keystore
/// passphrase, or the user PIN of the token it records (`custody`).
pub fn for_dir(custody: Option<&TokenRef>, file: Option<&Path>) -> Result<Passphrase> {
    match custody {
        None => obtain(file, false),
        Some(t) => pin(None, file, t),
    }
}

/// Gets the user PIN of `token`: `--pin-file`, else the passphrase channel.
/// Never asked twice: the token itself checks it.
pub fn pin(pin_file: Option<&Path>, file: Option<&Path>, token: &TokenRef) -> Result<Passphrase> {
    let prompt = format!("user PIN of PKCS#11 token '{}': ", token.token);
    obtain_as(pin_file.or(file), &prompt, false).map_err(|e| match e {
        Error::NoPassphrase { reason } => Error::NoPassphrase {
            reason: format!("{reason} (the user PIN of {token})"),
        },
        other => other,
    })
}

fn obtain_as(file: Option<&Path>, prompt: &str, confirm: bool) -> Result<Passphrase> {
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
    let first =
        Zeroizing::new(
            rpassword::prompt_password(prompt).map_err(|e| Error::NoPassphrase {
                reason: e.to_string(),
            })?,
        );
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
