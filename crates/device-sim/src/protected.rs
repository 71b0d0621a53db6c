//! Protected storage: one write-once slot per [`Field`], and a lock bit.
//!
//! The SBM (through the [`Protected`] trait) may always read. A field can
//! be written once, and after [`Protected::lock`] none at all. Each write
//! and the lock are operations of the device's [`PowerSupply`] and can be
//! cut, but a protected write is **atomic**: the simulator assumes the
//! storage commits a field all or nothing (as OTP with a commit word, or a
//! secure element, does), so a tear behaves as [`CutMode::Before`].
//!
//! # `protected.bin`
//!
//! ```text
//! offset  size  content
//! 0       4     magic "TCPS"
//! 4       1     format version, 1
//! 5       1     lock byte: 0x00 unlocked, 0x01 locked
//! 6       1     N, the number of field records (0..=8)
//! 7       ...   N records, tags strictly increasing:
//!                 1     tag (1 Uid, 2 DeviceType, 3 IdentityKey,
//!                       4 AgreementKey, 5 CertChain, 6 OemRoot, 7 OemKeys,
//!                       8 ProductKey)
//!                 2     length L, big-endian, at most the field's capacity
//!                 L     the field's bytes
//! ```
//!
//! Nothing may follow the last record. Fields without a record were never
//! written.
use std::collections::BTreeMap;
use std::fmt;

use trustchain_sbm::hal::{Field, Protected, ProtectedError};

#[cfg(doc)]
use crate::power::CutMode;
use crate::power::{Grant, PowerLoss, PowerSupply};

/// The magic at the start of `protected.bin`.
pub const MAGIC: [u8; 4] = *b"TCPS";
/// The format version of `protected.bin`.
pub const VERSION: u8 = 1;

/// The largest valid `protected.bin`: the header and every field full
/// (checked against [`Field::capacity`] by a test).
pub const MAX_FILE_LEN: usize = 7 + 8 * 3 + (32 + 4 + 32 + 32 + 3072 + 1024 + 128 + 32);

/// The tag of a field in `protected.bin`.
pub fn tag(field: Field) -> u8 {
    match field {
        Field::Uid => 1,
        Field::DeviceType => 2,
        Field::IdentityKey => 3,
        Field::AgreementKey => 4,
        Field::CertChain => 5,
        Field::OemRoot => 6,
        Field::OemKeys => 7,
        Field::ProductKey => 8,
    }
}

fn field_of(tag: u8) -> Option<Field> {
    Field::ALL.into_iter().find(|&f| self::tag(f) == tag)
}

/// Why `protected.bin` is malformed. Offsets are from the file's start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtectedFileError {
    /// The file ends inside the header or a record.
    #[error("truncated at offset {offset}: {needed} more bytes expected")]
    Truncated {
        /// Where the missing bytes start.
        offset: usize,
        /// How many were expected.
        needed: usize,
    },
    /// The file is larger than any valid one.
    #[error("{len} bytes, more than the largest valid file ({MAX_FILE_LEN})")]
    TooLarge {
        /// Its length.
        len: u64,
    },
    /// Not a protected-storage file.
    #[error("bad magic {found:02x?}, expected \"TCPS\"")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A format version this simulator does not read.
    #[error("format version {0}, this simulator reads version {VERSION}")]
    UnsupportedVersion(u8),
    /// The lock byte is neither 0 nor 1.
    #[error("lock byte {0:#04x} is neither 0x00 nor 0x01")]
    BadLockByte(u8),
    /// More records than fields.
    #[error("{0} field records, at most {n} exist", n = Field::ALL.len())]
    TooManyRecords(u8),
    /// A tag that names no field.
    #[error("unknown field tag {tag} at offset {offset}")]
    UnknownTag {
        /// The tag.
        tag: u8,
        /// Where it is.
        offset: usize,
    },
    /// Tags out of order, or a field twice.
    #[error("field {field:?} at offset {offset} is out of order or repeated")]
    TagOrder {
        /// The field.
        field: Field,
        /// Where its record starts.
        offset: usize,
    },
    /// A field longer than its capacity.
    #[error("field {field:?} is {len} bytes, its capacity is {max}")]
    FieldTooLong {
        /// The field.
        field: Field,
        /// The length in the record.
        len: usize,
        /// The field's capacity.
        max: usize,
    },
    /// Bytes after the last record.
    #[error("{count} bytes after the last record, at offset {offset}")]
    TrailingBytes {
        /// How many.
        count: usize,
        /// Where they start.
        offset: usize,
    },
}

/// A bounded reader over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtectedFileError> {
        let rest = &self.bytes[self.pos..];
        if rest.len() < n {
            return Err(ProtectedFileError::Truncated {
                offset: self.bytes.len(),
                needed: n - rest.len(),
            });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn u8(&mut self) -> Result<u8, ProtectedFileError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtectedFileError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn finish(self) -> Result<(), ProtectedFileError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            count => Err(ProtectedFileError::TrailingBytes {
                count,
                offset: self.pos,
            }),
        }
    }
}

/// The content of protected storage, without power or counters.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Contents {
    pub(crate) fields: BTreeMap<Field, Vec<u8>>,
    pub(crate) locked: bool,
}

impl fmt::Debug for Contents {
    // Secret fields never appear in debug output: only lengths.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contents")
            .field("locked", &self.locked)
            .field(
                "field_lengths",
                &self
                    .fields
                    .iter()
                    .map(|(k, v)| (k, v.len()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Contents {
    /// Encodes as `protected.bin`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_FILE_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(u8::from(self.locked));
        out.push(self.fields.len() as u8);
        // BTreeMap order is Field order, which is tag order.
        for (&field, value) in &self.fields {
            out.push(tag(field));
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    /// Parses `protected.bin`, refusing anything malformed.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, ProtectedFileError> {
        if bytes.len() > MAX_FILE_LEN {
            return Err(ProtectedFileError::TooLarge {
                len: bytes.len() as u64,
            });
        }
        let mut r = Reader { bytes, pos: 0 };
        let magic = r.take(4)?;
        if magic != MAGIC {
            let mut found = [0u8; 4];
            found.copy_from_slice(magic);
            return Err(ProtectedFileError::BadMagic { found });
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(ProtectedFileError::UnsupportedVersion(version));
        }
        let locked = match r.u8()? {
            0 => false,
            1 => true,
            other => return Err(ProtectedFileError::BadLockByte(other)),
        };
        let count = r.u8()?;
        if usize::from(count) > Field::ALL.len() {
            return Err(ProtectedFileError::TooManyRecords(count));
        }
        let mut fields = BTreeMap::new();
        let mut last_tag = 0u8;
        for _ in 0..count {
            let offset = r.pos;
            let t = r.u8()?;
            let field = field_of(t).ok_or(ProtectedFileError::UnknownTag { tag: t, offset })?;
            if t <= last_tag {
                return Err(ProtectedFileError::TagOrder { field, offset });
            }
            last_tag = t;
            let len = usize::from(r.u16()?);
            if len > field.capacity() {
                return Err(ProtectedFileError::FieldTooLong {
                    field,
                    len,
                    max: field.capacity(),
                });
            }
            fields.insert(field, r.take(len)?.to_vec());
        }
        r.finish()?;
        Ok(Contents { fields, locked })
    }
}

impl From<PowerLoss> for ProtectedError {
    fn from(_: PowerLoss) -> Self {
        ProtectedError::PowerLoss
    }
}

/// Simulated protected storage.
#[derive(Debug)]
pub struct SimProtected {
    contents: Contents,
    power: PowerSupply,
    writes: u64,
}

impl SimProtected {
    /// Empty and unlocked storage powered by `power`.
    pub fn new(power: PowerSupply) -> Self {
        Self::restored(Contents::default(), power, 0)
    }

    pub(crate) fn restored(contents: Contents, power: PowerSupply, writes: u64) -> Self {
        SimProtected {
            contents,
            power,
            writes,
        }
    }

    pub(crate) fn contents(&self) -> &Contents {
        &self.contents
    }

    /// The factory's write, before the device's life starts: no power, no
    /// operation, no counter. The caller checks the length.
    pub(crate) fn factory_write(&mut self, field: Field, value: &[u8]) {
        debug_assert!(value.len() <= field.capacity());
        self.contents.fields.insert(field, value.to_vec());
    }

    /// Protected writes and locks that completed (the `write_once`s and
    /// `lock`s of the device's life).
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// The power supply this storage runs on.
    pub fn power(&self) -> &PowerSupply {
        &self.power
    }

    /// Whether the lock bit is set (the test bench's view: no power needed).
    pub fn lock_bit(&self) -> bool {
        self.contents.locked
    }

    /// A field's value (the test bench's view: no power needed, no lock).
    /// The debug port, which obeys the lock, is [`crate::DebugPort`].
    pub fn peek(&self, field: Field) -> Option<&[u8]> {
        self.contents.fields.get(&field).map(Vec::as_slice)
    }

    /// Runs a validated operation under the power supply: all or nothing.
    fn operate(&mut self, apply: impl FnOnce(&mut Contents)) -> Result<(), ProtectedError> {
        match self.power.begin_op()? {
            Grant::Run => {
                apply(&mut self.contents);
                self.writes += 1;
                Ok(())
            }
            // Atomic storage: a tear is a cut before the write.
            Grant::Cut(_) => Err(ProtectedError::PowerLoss),
        }
    }
}

impl Protected for SimProtected {
    /// A `buf` shorter than the field is `TooLarge` (the field is larger than
    /// the buffer) and copies nothing.
    fn read(&mut self, field: Field, buf: &mut [u8]) -> Result<usize, ProtectedError> {
        self.power.check()?;
        let value = self
            .contents
            .fields
            .get(&field)
            .ok_or(ProtectedError::Empty)?;
        let dst = buf.get_mut(..value.len()).ok_or(ProtectedError::TooLarge)?;
        dst.copy_from_slice(value);
        Ok(value.len())
    }

    fn write_once(&mut self, field: Field, data: &[u8]) -> Result<(), ProtectedError> {
        self.power.check()?;
        if self.contents.locked {
            return Err(ProtectedError::Locked);
        }
        if self.contents.fields.contains_key(&field) {
            return Err(ProtectedError::AlreadyWritten);
        }
        if data.len() > field.capacity() {
            return Err(ProtectedError::TooLarge);
        }
        self.operate(|c| {
            c.fields.insert(field, data.to_vec());
        })
    }

    fn is_written(&mut self, field: Field) -> bool {
        self.contents.fields.contains_key(&field)
    }

    /// Locking a locked storage does nothing and succeeds.
    fn lock(&mut self) -> Result<(), ProtectedError> {
        self.power.check()?;
        if self.contents.locked {
            return Ok(());
        }
        self.operate(|c| c.locked = true)
    }

    fn is_locked(&mut self) -> bool {
        self.contents.locked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::CutMode;

    #[test]
    fn write_once_then_already_written() {
        let mut p = SimProtected::new(PowerSupply::new());
        assert!(!p.is_written(Field::OemRoot));
        let mut buf = [0u8; 1024];
        assert_eq!(p.read(Field::OemRoot, &mut buf), Err(ProtectedError::Empty));
        p.write_once(Field::OemRoot, b"root cert").unwrap();
        assert!(p.is_written(Field::OemRoot));
        assert_eq!(p.read(Field::OemRoot, &mut buf), Ok(9));
        assert_eq!(&buf[..9], b"root cert");
        assert_eq!(
            p.write_once(Field::OemRoot, b"other"),
            Err(ProtectedError::AlreadyWritten)
        );
        assert_eq!(p.peek(Field::OemRoot), Some(&b"root cert"[..]));
        assert_eq!((p.writes(), p.power().ops()), (1, 1));
    }

    #[test]
    fn field_capacity_and_short_buffer() {
        let mut p = SimProtected::new(PowerSupply::new());
        assert_eq!(
            p.write_once(Field::DeviceType, &[0; 5]),
            Err(ProtectedError::TooLarge)
        );
        assert!(!p.is_written(Field::DeviceType));
        p.write_once(Field::DeviceType, &[0, 0, 0, 7]).unwrap();
        p.write_once(Field::CertChain, &vec![0xC0; Field::CertChain.capacity()])
            .unwrap();
        let mut small = [0u8; 3];
        assert_eq!(
            p.read(Field::DeviceType, &mut small),
            Err(ProtectedError::TooLarge)
        );
        assert_eq!(small, [0; 3]);
        assert_eq!(p.power().ops(), 2, "the refused write took no number");
    }

    #[test]
    fn lock_refuses_every_write_but_not_reads() {
        let mut p = SimProtected::new(PowerSupply::new());
        p.write_once(Field::IdentityKey, &[1; 32]).unwrap();
        assert!(!p.is_locked());
        p.lock().unwrap();
        assert!(p.is_locked() && p.lock_bit());
        for f in Field::ALL {
            assert_eq!(p.write_once(f, &[2]), Err(ProtectedError::Locked), "{f:?}");
        }
        let mut buf = [0u8; 32];
        assert_eq!(p.read(Field::IdentityKey, &mut buf), Ok(32));
        assert_eq!(buf, [1; 32]);
        assert_eq!(p.lock(), Ok(()));
        assert_eq!((p.writes(), p.power().ops()), (2, 2));
    }

    #[test]
    fn cut_write_is_all_or_nothing() {
        for mode in [CutMode::Before, CutMode::Tear { seed: 3 }] {
            let mut p = SimProtected::new(PowerSupply::new());
            p.power().cut_after(1, mode);
            assert_eq!(
                p.write_once(Field::ProductKey, &[9; 32]),
                Err(ProtectedError::PowerLoss)
            );
            assert!(!p.is_written(Field::ProductKey));
            assert_eq!(
                p.write_once(Field::OemKeys, &[1]),
                Err(ProtectedError::PowerLoss)
            );
            assert_eq!(
                p.read(Field::OemKeys, &mut [0; 8]),
                Err(ProtectedError::PowerLoss)
            );
            assert_eq!(p.lock(), Err(ProtectedError::PowerLoss));
            p.power().restore();
            assert_eq!(p.write_once(Field::ProductKey, &[9; 32]), Ok(()));
            p.power().cut_after(1, mode);
            assert_eq!(p.lock(), Err(ProtectedError::PowerLoss));
            assert!(!p.lock_bit());
            assert_eq!(p.writes(), 1);
            assert_eq!(p.power().ops(), 3);
        }
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let mut p = SimProtected::new(PowerSupply::new());
        p.write_once(Field::IdentityKey, &[0xAB; 32]).unwrap();
        let s = format!("{p:?}");
        assert!(!s.contains("171"), "{s}");
        assert!(s.contains("IdentityKey"));
    }

    fn sample() -> Contents {
        let mut c = Contents::default();
        c.fields.insert(Field::Uid, vec![1, 2, 3]);
        c.fields.insert(Field::DeviceType, vec![0, 0, 0, 9]);
        c.fields.insert(Field::CertChain, vec![0x55; 3072]);
        c.locked = true;
        c
    }

    #[test]
    fn file_round_trip_and_layout() {
        let c = sample();
        let bytes = c.encode();
        assert_eq!(&bytes[..7], b"TCPS\x01\x01\x03");
        assert_eq!(&bytes[7..13], &[1, 0, 3, 1, 2, 3]);
        assert_eq!(Contents::decode(&bytes), Ok(c));
        let empty = Contents::default().encode();
        assert_eq!(empty, b"TCPS\x01\x00\x00");
        assert_eq!(Contents::decode(&empty), Ok(Contents::default()));
        let mut full = Contents::default();
        for f in Field::ALL {
            full.fields.insert(f, vec![0; f.capacity()]);
        }
        let sum: usize = Field::ALL.iter().map(|f| 3 + f.capacity()).sum();
        assert_eq!(MAX_FILE_LEN, 7 + sum);
        assert_eq!(full.encode().len(), MAX_FILE_LEN);
        assert_eq!(Contents::decode(&full.encode()), Ok(full));
    }

    #[test]
    fn file_parse_rejects_malformed() {
        use ProtectedFileError as E;
        let good = sample().encode();
        let with = |i: usize, b: u8| {
            let mut v = good.clone();
            v[i] = b;
            v
        };
        assert_eq!(
            Contents::decode(&with(0, b'X')),
            Err(E::BadMagic { found: *b"XCPS" })
        );
        assert_eq!(Contents::decode(&with(4, 2)), Err(E::UnsupportedVersion(2)));
        assert_eq!(Contents::decode(&with(5, 2)), Err(E::BadLockByte(2)));
        assert_eq!(Contents::decode(&with(6, 9)), Err(E::TooManyRecords(9)));
        assert_eq!(
            Contents::decode(&with(7, 0)),
            Err(E::UnknownTag { tag: 0, offset: 7 })
        );
        assert_eq!(
            Contents::decode(&with(7, 9)),
            Err(E::UnknownTag { tag: 9, offset: 7 })
        );
        // Second record (at 13) claims the Uid tag again.
        assert_eq!(
            Contents::decode(&with(13, 1)),
            Err(E::TagOrder {
                field: Field::Uid,
                offset: 13
            })
        );
        // Uid length 33.
        let mut long = good.clone();
        long[8..10].copy_from_slice(&33u16.to_be_bytes());
        assert_eq!(
            Contents::decode(&long),
            Err(E::FieldTooLong {
                field: Field::Uid,
                len: 33,
                max: 32
            })
        );
        // Fewer records announced than present: trailing bytes.
        assert!(matches!(
            Contents::decode(&with(6, 2)),
            Err(E::TrailingBytes { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            Contents::decode(&trailing),
            Err(E::TrailingBytes {
                count: 1,
                offset: good.len()
            })
        );
        // Every truncation is refused.
        for n in 0..good.len() {
            assert!(
                matches!(Contents::decode(&good[..n]), Err(E::Truncated { .. })),
                "truncated to {n}"
            );
        }
        assert!(matches!(
            Contents::decode(&vec![0; MAX_FILE_LEN + 1]),
            Err(E::TooLarge { .. })
        ));
    }
}
