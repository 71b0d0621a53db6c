//! Every error the binary reports: one message naming what failed and
//! where, and a hint on what to do.
use std::path::PathBuf;

use trustchain_device_sim::DeviceError;
use trustchain_programmer::client;
use trustchain_programmer::lab::LabError;
use trustchain_sbm::Status;

/// An error of any command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the OEM side.
    #[error(transparent)]
    Oem(#[from] trustchain_oem::Error),
    /// The Guardian.
    #[error(transparent)]
    Guardian(#[from] trustchain_guardian::Error),
    /// A simulated device directory.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The device refused or the link failed.
    #[error("{}: {source}", dir.display())]
    Link {
        /// The device directory.
        dir: PathBuf,
        /// Why.
        source: client::Error,
    },
    /// Lab provisioning failed.
    #[error("{}: {source}", dir.display())]
    Lab {
        /// The device directory.
        dir: PathBuf,
        /// Why.
        source: LabError,
    },
    /// A field operation (update server set-up, CRL file) failed.
    #[error("{0}")]
    Field(String),
    /// A device's fetch from an update server was refused; the device is unchanged.
    #[error("{}: {source}", dir.display())]
    Fetch {
        /// The device directory.
        dir: PathBuf,
        /// Why.
        source: trustchain_field::update::FetchError,
    },
    /// One device refused the other during `trustchain auth` (what was
    /// refused and why is printed on stdout first).
    #[error("authentication refused by {by} ({}): {}", dir.display(), reason.describe())]
    AuthRefused {
        /// "A" or "B".
        by: &'static str,
        /// The refusing device's directory.
        dir: PathBuf,
        /// The stable reason.
        reason: trustchain_field::auth::Reason,
    },
    /// The device did not boot a verified application.
    #[error("{}: the SBM stays in recovery: {}", dir.display(), status.describe())]
    NoApplication {
        /// The device directory.
        dir: PathBuf,
        /// The SBM's reason.
        status: Status,
    },
}

impl CliError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            CliError::Oem(e) => e.hint(),
            CliError::Guardian(e) => e.hint(),
            CliError::Device(e) => Some(e.hint().to_string()),
            CliError::Link {
                source: client::Error::Refused(s),
                ..
            } => Some(refusal_hint(*s).to_string()),
            CliError::Lab {
                source: LabError::NotBlank(_),
                ..
            } => Some(
                "a device is provisioned once; use a new blank device (`trustchain device new`)"
                    .into(),
            ),
            CliError::Fetch { source, .. } => Some(fetch_hint(source).into()),
            CliError::AuthRefused { reason, .. } => Some(reason.hint().into()),
            CliError::NoApplication { .. } => Some(
                "install a release with `trustchain device install DEVICE_DIR RELEASE_DIR`".into(),
            ),
            _ => None,
        }
    }
}

fn fetch_hint(e: &trustchain_field::update::FetchError) -> &'static str {
    use trustchain_field::update::FetchError as F;
    match e {
        F::Tls { .. } => "the device and the server must chain to the same OEM root, the device must not be revoked, and the server's certificate must name the host in the URL; the device is unchanged",
        F::Connect { .. } | F::Url(_) => "check the URL (https://HOST[:PORT]) and that `trustchain update-server` runs there",
        F::Refused(s) => refusal_hint(*s),
        F::Rollback { .. } => "the server offers an older release than the device runs; nothing was downloaded",
        F::EndlessData { .. } | F::Truncated { .. } | F::MixAndMatch { .. } | F::BadUpk(_) => {
            "the server sent something other than the release it signs; the device is unchanged and keeps running its release"
        }
        _ => "the device kept its previous state",
    }
}

fn refusal_hint(s: Status) -> &'static str {
    match s {
        Status::Locked | Status::AlreadyProvisioned => "the device is provisioned and locked; nothing was changed",
        Status::NotProvisioned => "provision the device first (`trustchain device provision`)",
        Status::Rollback => "the device holds a newer release; master a higher version or security counter",
        Status::WrongOem | Status::WrongProduct | Status::NotRecipient | Status::UidNotAllowed => {
            "this release was mastered for other devices; master one for this device's OEM, product and UID"
        }
        Status::WrongLoadAddress => "master the image with the device's application address (the simulator's is 0x08000000)",
        Status::TooLarge => "the image does not fit the device's application slot",
        Status::BadSignature | Status::CiphertextMismatch | Status::UpkMalformed | Status::DecryptionFailed | Status::PlaintextMismatch => {
            "the release is corrupted or was tampered with; fetch it again from the OEM. The device keeps its current application"
        }
        _ => "the device kept its previous state",
    }
}
