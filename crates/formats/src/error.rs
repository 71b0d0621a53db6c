use core::fmt;

/// Why bytes were refused by a parser of this crate.
///
/// `at` is the byte offset in the structure being parsed (for nested
/// structures, the offset inside the innermost byte string), so an operator
/// can find the bad byte with a hex dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// Not well-formed CBOR, or a CBOR item of the wrong type.
    Malformed {
        /// Byte offset of the item.
        at: usize,
        /// What the parser expected there.
        expected: &'static str,
    },
    /// Well-formed CBOR that is not in deterministic encoding (RFC 8949
    /// §4.2.1): a longer-than-needed length or integer, or an indefinite length.
    NonCanonical {
        /// Byte offset of the item.
        at: usize,
    },
    /// A map key that is unknown, duplicated or out of the deterministic order.
    UnexpectedKey {
        /// Byte offset of the key.
        at: usize,
        /// The key found.
        key: i64,
    },
    /// A required map key is absent.
    MissingKey {
        /// The key.
        key: i64,
        /// The field it stands for.
        field: &'static str,
    },
    /// A count or length is above the bound this format allows.
    TooLarge {
        /// The field.
        field: &'static str,
        /// The bound.
        max: u64,
        /// The value found.
        found: u64,
    },
    /// A value is out of range or inconsistent.
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// A format version this code does not know.
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// A COSE algorithm or header this format does not allow.
    UnsupportedAlgorithm {
        /// The field.
        field: &'static str,
    },
    /// Bytes after the end of the structure.
    TrailingBytes {
        /// Offset of the first trailing byte.
        at: usize,
    },
    /// The input ended before the structure did.
    Truncated,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { at, expected } => {
                write!(f, "malformed CBOR at byte {at}: expected {expected}")
            }
            Self::NonCanonical { at } => write!(
                f,
                "CBOR at byte {at} is not in deterministic encoding (RFC 8949 section 4.2.1)"
            ),
            Self::UnexpectedKey { at, key } => write!(
                f,
                "unexpected map key {key} at byte {at} (unknown, duplicated or out of order)"
            ),
            Self::MissingKey { key, field } => write!(f, "missing {field} (map key {key})"),
            Self::TooLarge { field, max, found } => {
                write!(f, "{field} is {found}, above the maximum of {max}")
            }
            Self::InvalidValue { field, expected } => {
                write!(f, "invalid {field}: expected {expected}")
            }
            Self::UnsupportedVersion { found } => write!(
                f,
                "format version {found} is not supported by this trustchain (upgrade it)"
            ),
            Self::UnsupportedAlgorithm { field } => {
                write!(f, "unsupported algorithm or header in {field}")
            }
            Self::TrailingBytes { at } => write!(f, "unexpected bytes after the end, at byte {at}"),
            Self::Truncated => write!(f, "the data ends early (truncated)"),
        }
    }
}

impl From<minicbor::decode::Error> for FormatError {
    fn from(e: minicbor::decode::Error) -> Self {
        if e.is_end_of_input() {
            return Self::Truncated;
        }
        Self::Malformed {
            at: e.position().unwrap_or(0),
            expected: "a well-formed CBOR item",
        }
    }
}

impl core::error::Error for FormatError {}
