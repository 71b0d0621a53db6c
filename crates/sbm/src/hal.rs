//! The hardware the SBM runs on, as small traits. No logic lives behind
//! them: a chip (or the simulator) only moves bytes. The SBM checks every
//! offset and length it passes.

/// Why a flash operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// Outside the device.
    OutOfBounds,
    /// Not aligned to the page (erase) or write granularity (program).
    Misaligned,
    /// Programming would need a 0 -> 1 bit change: the bytes are not erased.
    NotErased,
    /// The power went away during the operation (simulator); nothing
    /// further happens until reset.
    PowerLoss,
    /// Hardware fault.
    Hardware,
}

/// NOR flash: erased bytes read 0xFF, erase works on whole pages, program
/// only clears bits and only at `write_size` alignment.
pub trait Flash {
    /// Erase granularity in bytes (a power of two).
    fn page_size(&self) -> u32;
    /// Program granularity and alignment in bytes (a power of two).
    fn write_size(&self) -> u32;
    /// Size of the device in bytes (a multiple of `page_size`).
    fn capacity(&self) -> u32;
    /// Reads `buf.len()` bytes at `offset`.
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), FlashError>;
    /// Erases the page starting at `offset` to 0xFF.
    fn erase_page(&mut self, offset: u32) -> Result<(), FlashError>;
    /// Programs `data` at `offset`; both aligned to `write_size`.
    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError>;
}

/// The fields of protected storage (OTP-like, write-once). After lock, no
/// field can be written and the debug port reads none of the secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// Device unique ID, set at manufacture (1..=32 bytes).
    Uid,
    /// Device type, set at manufacture (4 bytes, big-endian).
    DeviceType,
    /// Device identity private key (ECDSA P-256 scalar, 32 bytes). Secret.
    IdentityKey,
    /// Device key-agreement private key (ECDH P-256 scalar, 32 bytes). Secret.
    AgreementKey,
    /// The device certificate chain, CBOR array of DER certificates, leaf first.
    CertChain,
    /// The OEM root certificate (DER).
    OemRoot,
    /// OEM keys: OEM ID, product ID, mastering public key (see `install::OEM_KEYS_LEN`).
    OemKeys,
    /// The product key-agreement private key (32 bytes). Secret.
    ProductKey,
}

impl Field {
    /// Whether the debug port must never read it once locked.
    pub fn is_secret(self) -> bool {
        matches!(
            self,
            Field::IdentityKey | Field::AgreementKey | Field::ProductKey
        )
    }
    /// The most bytes the field holds.
    pub fn capacity(self) -> usize {
        match self {
            Field::Uid => 32,
            Field::DeviceType => 4,
            Field::IdentityKey | Field::AgreementKey | Field::ProductKey => 32,
            Field::CertChain => 3072,
            Field::OemRoot => 1024,
            Field::OemKeys => 128,
        }
    }
    /// Every field.
    pub const ALL: [Field; 8] = [
        Field::Uid,
        Field::DeviceType,
        Field::IdentityKey,
        Field::AgreementKey,
        Field::CertChain,
        Field::OemRoot,
        Field::OemKeys,
        Field::ProductKey,
    ];
}

/// Why a protected-storage operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectedError {
    /// The field was written already (write-once).
    AlreadyWritten,
    /// The storage is locked.
    Locked,
    /// Larger than the field.
    TooLarge,
    /// The field was never written.
    Empty,
    /// The power went away (simulator).
    PowerLoss,
}

/// Protected storage: write-once fields and a lock bit.
pub trait Protected {
    /// Copies the field into `buf`; returns its length.
    fn read(&mut self, field: Field, buf: &mut [u8]) -> Result<usize, ProtectedError>;
    /// Writes a field once; refused after lock.
    fn write_once(&mut self, field: Field, data: &[u8]) -> Result<(), ProtectedError>;
    /// Whether the field holds a value.
    fn is_written(&mut self, field: Field) -> bool;
    /// Sets the lock bit (irreversible).
    fn lock(&mut self) -> Result<(), ProtectedError>;
    /// Whether the lock bit is set.
    fn is_locked(&mut self) -> bool;
}

/// A source of random bytes (a TRNG on a chip).
pub trait Rng {
    /// Fills `buf`.
    fn fill(&mut self, buf: &mut [u8]);
}

/// A byte channel to the programmer (a UART on a chip).
pub trait Channel {
    /// Reads exactly `buf.len()` bytes; `false` when the channel closed.
    fn read_exact(&mut self, buf: &mut [u8]) -> bool;
    /// Writes all of `data`.
    fn write_all(&mut self, data: &[u8]);
}

impl<T: Flash + ?Sized> Flash for &mut T {
    fn page_size(&self) -> u32 {
        (**self).page_size()
    }
    fn write_size(&self) -> u32 {
        (**self).write_size()
    }
    fn capacity(&self) -> u32 {
        (**self).capacity()
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
        (**self).read(offset, buf)
    }
    fn erase_page(&mut self, offset: u32) -> Result<(), FlashError> {
        (**self).erase_page(offset)
    }
    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        (**self).program(offset, data)
    }
}

impl<T: Protected + ?Sized> Protected for &mut T {
    fn read(&mut self, field: Field, buf: &mut [u8]) -> Result<usize, ProtectedError> {
        (**self).read(field, buf)
    }
    fn write_once(&mut self, field: Field, data: &[u8]) -> Result<(), ProtectedError> {
        (**self).write_once(field, data)
    }
    fn is_written(&mut self, field: Field) -> bool {
        (**self).is_written(field)
    }
    fn lock(&mut self) -> Result<(), ProtectedError> {
        (**self).lock()
    }
    fn is_locked(&mut self) -> bool {
        (**self).is_locked()
    }
}

impl<T: Rng + ?Sized> Rng for &mut T {
    fn fill(&mut self, buf: &mut [u8]) {
        (**self).fill(buf)
    }
}
