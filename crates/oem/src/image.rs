//! Firmware image input: raw binary, Intel HEX or ELF in, one flat image out.
//!
//! The OEM hands over the output of its own build, but it is still parsed
//! defensively: every offset and length taken from the file is bounds-checked,
//! all arithmetic on them is checked, nothing is allocated from an untrusted
//! length before it has been compared with [`LoadOptions::max_size`], and every
//! failure is a descriptive [`ImageError`] rather than a panic.
//!
//! Whatever the container, the result is a [`FlatImage`]: the contiguous bytes
//! to program and the address of the first one. Separate regions of the input
//! are merged in address order; small gaps between them are filled with the
//! erased-flash value `0xff`, large gaps and overlaps are errors.

use std::fmt;
use std::str::FromStr;

/// The value of erased flash, used to fill gaps between regions.
const FILL: u8 = 0xff;

/// Which container the image bytes are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Plain binary: the bytes are the image, placed at
    /// [`LoadOptions::raw_load_address`].
    Raw,
    /// Intel HEX text records (as produced by `objcopy -O ihex`).
    IntelHex,
    /// An ELF executable (32- or 64-bit, either byte order).
    Elf,
}

impl ImageFormat {
    /// Detects the format from the content.
    ///
    /// The ELF magic `0x7f 'E' 'L' 'F'` means [`ImageFormat::Elf`]; a file whose
    /// first non-whitespace byte is `':'` followed, up to the end of that line,
    /// only by hex digits means [`ImageFormat::IntelHex`]; anything else is
    /// [`ImageFormat::Raw`].
    #[must_use]
    pub fn detect(bytes: &[u8]) -> ImageFormat {
        if bytes.starts_with(&elf::MAGIC) {
            ImageFormat::Elf
        } else if hex::looks_like_hex(bytes) {
            ImageFormat::IntelHex
        } else {
            ImageFormat::Raw
        }
    }
}

/// Human-readable name ("raw binary", "Intel HEX", "ELF"), for messages.
impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageFormat::Raw => "raw binary",
            ImageFormat::IntelHex => "Intel HEX",
            ImageFormat::Elf => "ELF",
        })
    }
}

/// Parses a format name as given on the command line: `raw`, `ihex`, `hex` or
/// `elf`, in any case.
impl FromStr for ImageFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const CHOICES: [(&str, ImageFormat); 4] = [
            ("raw", ImageFormat::Raw),
            ("ihex", ImageFormat::IntelHex),
            ("hex", ImageFormat::IntelHex),
            ("elf", ImageFormat::Elf),
        ];
        CHOICES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, format)| format)
            .ok_or_else(|| {
                format!("unknown image format '{s}' (expected one of: raw, ihex, hex, elf)")
            })
    }
}

/// Limits and defaults for [`load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Largest gap between two regions that is filled with the erased-flash
    /// value `0xff`; a larger gap is an error (default 64 KiB).
    pub max_gap: u64,
    /// Largest flat image accepted, gaps included (default 64 MiB). Intel HEX
    /// and ELF images are built in memory, so this also bounds the allocation.
    pub max_size: u64,
    /// Load address used for raw input (default 0).
    pub raw_load_address: u64,
}

impl LoadOptions {
    /// Default for [`LoadOptions::max_gap`]: 64 KiB.
    pub const DEFAULT_MAX_GAP: u64 = 64 * 1024;
    /// Default for [`LoadOptions::max_size`]: 64 MiB.
    pub const DEFAULT_MAX_SIZE: u64 = 64 * 1024 * 1024;
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_gap: Self::DEFAULT_MAX_GAP,
            max_size: Self::DEFAULT_MAX_SIZE,
            raw_load_address: 0,
        }
    }
}

/// A firmware image as one contiguous run of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatImage {
    /// Address of the first byte.
    pub load_address: u64,
    /// The image, gaps filled with `0xff`.
    pub bytes: Vec<u8>,
    /// The container the image was read from.
    pub format: ImageFormat,
    /// Number of regions merged into the image (for display): runs of
    /// consecutive data records for Intel HEX, `PT_LOAD` segments with file
    /// contents for ELF, 1 for raw input.
    pub segments: usize,
}

/// Why an image could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageError {
    /// The input holds no image data at all.
    #[error("the image contains no data")]
    Empty,
    /// An Intel HEX record is malformed or out of place.
    #[error("line {line}: {problem}")]
    IntelHex {
        /// 1-based line number in the file.
        line: usize,
        /// What is wrong with the record.
        problem: HexProblem,
    },
    /// The ELF file is malformed or unsupported.
    #[error("invalid ELF file: {problem}")]
    Elf {
        /// What is wrong with the file.
        problem: ElfProblem,
    },
    /// Two regions overlap (ends are exclusive). Writing the same address
    /// twice is an error even if the bytes agree.
    #[error(
        "bytes 0x{first_start:08x}..0x{first_end:08x} and 0x{second_start:08x}..0x{second_end:08x} \
         overlap: the image writes the same addresses twice (check the linker script or the tool \
         that produced the file)"
    )]
    Overlap {
        /// Start of the lower region.
        first_start: u64,
        /// End (exclusive) of the lower region.
        first_end: u64,
        /// Start of the region that overlaps it.
        second_start: u64,
        /// End (exclusive) of the region that overlaps it.
        second_end: u64,
    },
    /// Two consecutive regions are further apart than [`LoadOptions::max_gap`].
    #[error(
        "gap of {gap} bytes between the data ending at 0x{after:08x} and the data starting at \
         0x{before:08x} is more than the {max} bytes that may be filled with 0xff (pass a larger \
         --max-gap or split the image)"
    )]
    GapTooLarge {
        /// End (exclusive) of the region before the gap.
        after: u64,
        /// Start of the region after the gap.
        before: u64,
        /// Size of the gap in bytes.
        gap: u64,
        /// The largest gap allowed.
        max: u64,
    },
    /// The flat image would be larger than [`LoadOptions::max_size`].
    #[error(
        "the flat image would be {size} bytes, more than the limit of {max} bytes (check that \
         this is the right file and that its load addresses are right)"
    )]
    TooLarge {
        /// Size of the flat image, gaps included.
        size: u64,
        /// The largest size allowed.
        max: u64,
    },
    /// A raw image placed at its load address would extend past the end of
    /// the 64-bit address space.
    #[error(
        "an image of {size} bytes at 0x{address:08x} runs past the end of the address space \
         (check the load address)"
    )]
    AddressOverflow {
        /// The load address.
        address: u64,
        /// Size of the image.
        size: u64,
    },
}

/// What is wrong with an Intel HEX record.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HexProblem {
    /// The line does not begin with the start code `':'`.
    #[error("the record does not start with ':' (is this really an Intel HEX file?)")]
    MissingStartCode,
    /// A character that is not a hex digit.
    #[error("column {column}: '{}' is not a hex digit", .byte.escape_ascii())]
    InvalidDigit {
        /// 1-based column of the character in the line.
        column: usize,
        /// The offending byte.
        byte: u8,
    },
    /// The record has an odd number of hex digits.
    #[error("the record has an odd number of hex digits ({digits}); a digit is missing or extra")]
    OddDigitCount {
        /// Number of hex digits after the `':'`.
        digits: usize,
    },
    /// The record is shorter than byte count, address, type and checksum.
    #[error(
        "the record has only {bytes} bytes; even an empty record needs 5 (byte count, address, \
         type and checksum)"
    )]
    TooShort {
        /// Number of bytes in the record.
        bytes: usize,
    },
    /// The byte count field disagrees with the number of data bytes.
    #[error("the byte count says {declared} data bytes but the record holds {actual}")]
    ByteCountMismatch {
        /// The byte count field.
        declared: u8,
        /// The number of data bytes actually present.
        actual: usize,
    },
    /// The checksum does not match the record.
    #[error(
        "checksum is 0x{found:02x} but the record sums to 0x{expected:02x} (the file is corrupt or \
         was edited by hand)"
    )]
    BadChecksum {
        /// The checksum the record's contents call for.
        expected: u8,
        /// The checksum in the file.
        found: u8,
    },
    /// A record type other than 00 to 05.
    #[error("unknown record type {record_type:02x} (Intel HEX defines types 00 to 05)")]
    UnknownRecordType {
        /// The record type field.
        record_type: u8,
    },
    /// A record whose data length is fixed by its type has another length.
    #[error("a type {record_type:02x} record must have {expected} data bytes, not {found}")]
    WrongLength {
        /// The record type field.
        record_type: u8,
        /// The length this type requires.
        expected: u8,
        /// The length found.
        found: u8,
    },
    /// Data placed at or beyond 4 GiB.
    #[error("{len} data bytes at 0x{address:08x} run past the 4 GiB address space")]
    AddressOverflow {
        /// Absolute address of the record's first byte.
        address: u64,
        /// Number of data bytes in the record.
        len: usize,
    },
    /// Something other than whitespace follows the end-of-file record.
    #[error(
        "content after the end-of-file record (the file was probably concatenated or edited; \
         remove everything after ':00000001FF')"
    )]
    DataAfterEof,
    /// The file ends without an end-of-file record (reported at the last record).
    #[error(
        "the file ends without an end-of-file record (':00000001FF') after this record; it is \
         probably truncated"
    )]
    MissingEof,
}

/// What is wrong with an ELF file.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ElfProblem {
    /// The file does not start with the ELF magic.
    #[error("the file does not start with the ELF magic 0x7f 'E' 'L' 'F'")]
    NotElf,
    /// The file is shorter than the ELF header.
    #[error(
        "the file is {len} bytes, too short for the {needed}-byte ELF header (it is truncated)"
    )]
    TruncatedHeader {
        /// Length of the file.
        len: u64,
        /// Length of the header.
        needed: u64,
    },
    /// `EI_CLASS` is neither ELF32 nor ELF64.
    #[error("unsupported ELF class {class} (only 1 = ELF32 and 2 = ELF64 are supported)")]
    UnsupportedClass {
        /// The `EI_CLASS` byte.
        class: u8,
    },
    /// `EI_DATA` is neither little- nor big-endian.
    #[error(
        "unsupported ELF data encoding {encoding} (only 1 = little-endian and 2 = big-endian are \
         supported)"
    )]
    UnsupportedEncoding {
        /// The `EI_DATA` byte.
        encoding: u8,
    },
    /// `e_phentsize` does not match the ELF class.
    #[error("program header entries are {found} bytes, but this ELF class uses {expected}")]
    BadProgramHeaderSize {
        /// The `e_phentsize` field.
        found: u16,
        /// The size the class calls for.
        expected: u16,
    },
    /// `e_phnum` is implausibly large.
    #[error("the file declares {count} program headers, more than the {max} accepted")]
    TooManyProgramHeaders {
        /// The `e_phnum` field.
        count: u16,
        /// The largest count accepted.
        max: u16,
    },
    /// The program header table does not lie within the file.
    #[error(
        "the program header table (offset 0x{offset:x}, {size} bytes) lies outside the \
         {file_len}-byte file (it is truncated or corrupt)"
    )]
    ProgramHeadersOutOfBounds {
        /// The `e_phoff` field.
        offset: u64,
        /// Size of the table.
        size: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// No `PT_LOAD` segment has file contents.
    #[error(
        "no loadable segment with contents (no PT_LOAD program header with p_filesz > 0); is this \
         an object file rather than a linked executable?"
    )]
    NoLoadableSegments,
    /// A segment's file contents do not lie within the file.
    #[error(
        "program header {index}: the segment's {size} bytes at file offset 0x{offset:x} lie \
         outside the {file_len}-byte file (it is truncated or corrupt)"
    )]
    SegmentOutOfBounds {
        /// 0-based index in the program header table.
        index: usize,
        /// The `p_offset` field.
        offset: u64,
        /// The `p_filesz` field.
        size: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// A segment extends past the end of the class's address space.
    #[error(
        "program header {index}: the segment's {size} bytes at 0x{address:08x} run past the end \
         of the address space"
    )]
    SegmentAddressOverflow {
        /// 0-based index in the program header table.
        index: usize,
        /// The `p_paddr` field.
        address: u64,
        /// The `p_filesz` field.
        size: u64,
    },
}

/// Parses `bytes` in `format` into one flat image.
///
/// Regions are sorted by address; overlapping regions are an error, gaps of
/// at most [`LoadOptions::max_gap`] bytes are filled with `0xff`, and the
/// result may be at most [`LoadOptions::max_size`] bytes. The load address is
/// the lowest address with data.
///
/// For ELF, each `PT_LOAD` segment is placed at its *physical* (load) address
/// `p_paddr`, not its virtual address `p_vaddr`: on a microcontroller,
/// initialised data runs from RAM at `p_vaddr` but its initial values are
/// stored in flash at `p_paddr` and copied by the startup code, so `p_paddr`
/// is where the bytes must be programmed. Only the `p_filesz` bytes stored in
/// the file are taken; the rest of `p_memsz` is `.bss`, which the startup code
/// zeroes and which occupies no flash.
///
/// # Errors
///
/// Returns an [`ImageError`] saying what is wrong and where if the input is
/// malformed, holds no data, has overlapping regions, or exceeds the limits
/// in `opts`.
pub fn load(
    bytes: &[u8],
    format: ImageFormat,
    opts: &LoadOptions,
) -> Result<FlatImage, ImageError> {
    match format {
        ImageFormat::Raw => load_raw(bytes, opts),
        ImageFormat::IntelHex => hex::load(bytes, opts),
        ImageFormat::Elf => elf::load(bytes, opts),
    }
}

fn load_raw(bytes: &[u8], opts: &LoadOptions) -> Result<FlatImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let address = opts.raw_load_address;
    let size = len_u64(bytes.len());
    let end = address
        .checked_add(size)
        .ok_or(ImageError::AddressOverflow { address, size })?;
    let region = Region {
        start: address,
        end,
        data: bytes,
    };
    flatten(vec![region], ImageFormat::Raw, opts)
}

/// `len` as a `u64`; lossless on every platform Rust supports.
fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Bytes destined for `start..end`, where `end - start == data.len()`.
#[derive(Debug)]
struct Region<'a> {
    start: u64,
    end: u64,
    data: &'a [u8],
}

/// A region of the flat image, preceded by `gap` bytes of fill.
struct Piece<'a> {
    gap: usize,
    data: &'a [u8],
}

/// Sorts, checks and merges non-empty regions into one flat image.
fn flatten(
    mut regions: Vec<Region<'_>>,
    format: ImageFormat,
    opts: &LoadOptions,
) -> Result<FlatImage, ImageError> {
    regions.sort_unstable_by_key(|region| (region.start, region.end));
    let (Some(first), Some(last)) = (regions.first(), regions.last()) else {
        return Err(ImageError::Empty);
    };
    let pieces = plan(&regions, opts.max_gap)?;
    // Sorted and disjoint (checked by `plan`), so `last` ends highest.
    let size = last.end.saturating_sub(first.start);
    let size = usize::try_from(size)
        .ok()
        .filter(|_| size <= opts.max_size)
        .ok_or(ImageError::TooLarge {
            size,
            max: opts.max_size,
        })?;
    Ok(FlatImage {
        load_address: first.start,
        bytes: render(&pieces, size),
        format,
        segments: regions.len(),
    })
}

/// Checks sorted regions for overlaps and oversized gaps and returns each
/// region with the fill that precedes it.
fn plan<'a>(regions: &[Region<'a>], max_gap: u64) -> Result<Vec<Piece<'a>>, ImageError> {
    let mut pieces = Vec::with_capacity(regions.len());
    let mut previous: Option<&Region<'a>> = None;
    for region in regions {
        let gap = match previous {
            Some(before) => gap_between(before, region, max_gap)?,
            None => 0,
        };
        pieces.push(Piece {
            gap,
            data: region.data,
        });
        previous = Some(region);
    }
    Ok(pieces)
}

/// The fill needed between `before` and `after` (sorted by start).
fn gap_between(before: &Region<'_>, after: &Region<'_>, max_gap: u64) -> Result<usize, ImageError> {
    let gap = after
        .start
        .checked_sub(before.end)
        .ok_or(ImageError::Overlap {
            first_start: before.start,
            first_end: before.end,
            second_start: after.start,
            second_end: after.end,
        })?;
    usize::try_from(gap)
        .ok()
        .filter(|_| gap <= max_gap)
        .ok_or(ImageError::GapTooLarge {
            after: before.end,
            before: after.start,
            gap,
            max: max_gap,
        })
}

/// Lays the pieces out in a buffer of `size` bytes (their checked total).
fn render(pieces: &[Piece<'_>], size: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(size);
    for piece in pieces {
        bytes.extend(std::iter::repeat_n(FILL, piece.gap));
        bytes.extend_from_slice(piece.data);
    }
    bytes
}

/// Intel HEX parsing.
mod hex {
    use super::{
        flatten, len_u64, FlatImage, HexProblem, ImageError, ImageFormat, LoadOptions, Region,
    };

    /// Bytes in a record besides its data: count, address (2), type, checksum.
    const OVERHEAD: usize = 5;
    /// Largest record: 255 data bytes plus the overhead.
    const MAX_RECORD: usize = 255 + OVERHEAD;
    /// Intel HEX addresses are 32 bits.
    const ADDRESS_LIMIT: u64 = 1 << 32;

    const DATA: u8 = 0x00;
    const END_OF_FILE: u8 = 0x01;
    const EXTENDED_SEGMENT_ADDRESS: u8 = 0x02;
    const START_SEGMENT_ADDRESS: u8 = 0x03;
    const EXTENDED_LINEAR_ADDRESS: u8 = 0x04;
    const START_LINEAR_ADDRESS: u8 = 0x05;

    /// Whether the first non-blank line is `':'` followed only by hex digits.
    pub(super) fn looks_like_hex(bytes: &[u8]) -> bool {
        let Some(rest) = bytes.trim_ascii_start().strip_prefix(b":") else {
            return false;
        };
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        let digits = line.trim_ascii_end();
        !digits.is_empty() && digits.iter().all(u8::is_ascii_hexdigit)
    }

    pub(super) fn load(bytes: &[u8], opts: &LoadOptions) -> Result<FlatImage, ImageError> {
        let mut state = HexState::default();
        let mut last_record_line = None;
        for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_number = index.saturating_add(1);
            let line = line.trim_ascii_end();
            if line.trim_ascii_start().is_empty() {
                continue;
            }
            state.feed(line).map_err(|problem| ImageError::IntelHex {
                line: line_number,
                problem,
            })?;
            last_record_line = Some(line_number);
        }
        let Some(last_line) = last_record_line else {
            return Err(ImageError::Empty);
        };
        if !state.end_of_file {
            return Err(ImageError::IntelHex {
                line: last_line,
                problem: HexProblem::MissingEof,
            });
        }
        let regions = state.runs.iter().map(Run::region).collect();
        flatten(regions, ImageFormat::IntelHex, opts)
    }

    /// Consecutive data bytes at `start..end`.
    struct Run {
        start: u64,
        end: u64,
        data: Vec<u8>,
    }

    impl Run {
        fn region(&self) -> Region<'_> {
            Region {
                start: self.start,
                end: self.end,
                data: &self.data,
            }
        }
    }

    /// What has been read so far.
    #[derive(Default)]
    struct HexState {
        /// Base address from the last type 02 or 04 record.
        base: u64,
        /// Data in file order, consecutive records already joined.
        runs: Vec<Run>,
        end_of_file: bool,
    }

    impl HexState {
        /// Processes one non-blank line.
        fn feed(&mut self, line: &[u8]) -> Result<(), HexProblem> {
            if self.end_of_file {
                return Err(HexProblem::DataAfterEof);
            }
            let mut buffer = [0; MAX_RECORD];
            let record = Record::parse(line, &mut buffer)?;
            match record.kind {
                DATA => self.add_data(record.address, record.data)?,
                END_OF_FILE => {
                    record.expect_len(0)?;
                    self.end_of_file = true;
                }
                EXTENDED_SEGMENT_ADDRESS => self.base = record.base_address(4)?,
                EXTENDED_LINEAR_ADDRESS => self.base = record.base_address(16)?,
                START_SEGMENT_ADDRESS | START_LINEAR_ADDRESS => record.expect_len(4)?,
                record_type => return Err(HexProblem::UnknownRecordType { record_type }),
            }
            Ok(())
        }

        fn add_data(&mut self, offset: u16, data: &[u8]) -> Result<(), HexProblem> {
            if data.is_empty() {
                return Ok(());
            }
            let address = self.base.saturating_add(u64::from(offset));
            let end = address
                .checked_add(len_u64(data.len()))
                .filter(|&end| end <= ADDRESS_LIMIT)
                .ok_or(HexProblem::AddressOverflow {
                    address,
                    len: data.len(),
                })?;
            match self.runs.last_mut() {
                Some(run) if run.end == address => {
                    run.data.extend_from_slice(data);
                    run.end = end;
                }
                _ => self.runs.push(Run {
                    start: address,
                    end,
                    data: data.to_vec(),
                }),
            }
            Ok(())
        }
    }

    /// One decoded record whose checksum has been verified.
    struct Record<'a> {
        address: u16,
        kind: u8,
        /// The byte count field, equal to `data.len()`.
        count: u8,
        data: &'a [u8],
    }

    impl<'a> Record<'a> {
        /// Decodes and verifies one line (trailing whitespace removed),
        /// using `buffer` for the decoded bytes.
        fn parse(line: &[u8], buffer: &'a mut [u8; MAX_RECORD]) -> Result<Record<'a>, HexProblem> {
            let content = line.trim_ascii_start();
            let indent = line.len().saturating_sub(content.len());
            let digits = content
                .strip_prefix(b":")
                .ok_or(HexProblem::MissingStartCode)?;
            let len = decode_digits(digits, indent, buffer)?;
            let too_short = HexProblem::TooShort { bytes: len };
            let actual = len.checked_sub(OVERHEAD).ok_or(too_short.clone())?;
            let [count, ..] = *buffer;
            let mismatch = HexProblem::ByteCountMismatch {
                declared: count,
                actual,
            };
            if actual != usize::from(count) {
                return Err(mismatch);
            }
            let buffer: &'a [u8; MAX_RECORD] = buffer;
            let record = buffer.get(..len).ok_or(mismatch)?;
            let (&checksum, body) = record.split_last().ok_or(too_short.clone())?;
            verify_checksum(body, checksum)?;
            let [_, address_high, address_low, record_type, data @ ..] = body else {
                return Err(too_short);
            };
            Ok(Record {
                address: u16::from_be_bytes([*address_high, *address_low]),
                kind: *record_type,
                count,
                data,
            })
        }

        fn expect_len(&self, expected: u8) -> Result<(), HexProblem> {
            if self.count == expected {
                Ok(())
            } else {
                Err(self.wrong_length(expected))
            }
        }

        fn wrong_length(&self, expected: u8) -> HexProblem {
            HexProblem::WrongLength {
                record_type: self.kind,
                expected,
                found: self.count,
            }
        }

        /// The 16-bit value of a type 02 or 04 record, shifted into place.
        fn base_address(&self, shift: u32) -> Result<u64, HexProblem> {
            match *self.data {
                [high, low] => Ok(u64::from(u16::from_be_bytes([high, low])) << shift),
                _ => Err(self.wrong_length(2)),
            }
        }
    }

    /// Checks that the bytes of a record, checksum included, sum to zero.
    fn verify_checksum(body: &[u8], checksum: u8) -> Result<(), HexProblem> {
        let sum = body.iter().fold(0u8, |sum, &b| sum.wrapping_add(b));
        let expected = 0u8.wrapping_sub(sum);
        if checksum == expected {
            Ok(())
        } else {
            Err(HexProblem::BadChecksum {
                expected,
                found: checksum,
            })
        }
    }

    /// Checks that `digits` are all hex digits, an even number of them, and
    /// decodes the first [`MAX_RECORD`] bytes into `buffer`. Returns the
    /// number of bytes the digits encode. `indent` is the number of blanks
    /// before the `':'`, for the column in errors.
    fn decode_digits(
        digits: &[u8],
        indent: usize,
        buffer: &mut [u8; MAX_RECORD],
    ) -> Result<usize, HexProblem> {
        for (index, &digit) in digits.iter().enumerate() {
            let value = nibble(digit).ok_or(HexProblem::InvalidDigit {
                column: indent.saturating_add(index).saturating_add(2),
                byte: digit,
            })?;
            if let Some(byte) = buffer.get_mut(index / 2) {
                *byte = (*byte << 4) | value;
            }
        }
        if digits.len().is_multiple_of(2) {
            Ok(digits.len() / 2)
        } else {
            Err(HexProblem::OddDigitCount {
                digits: digits.len(),
            })
        }
    }

    /// The value of an ASCII hex digit.
    fn nibble(digit: u8) -> Option<u8> {
        char::from(digit)
            .to_digit(16)
            .and_then(|value| u8::try_from(value).ok())
    }
}

/// ELF parsing: just enough of the header and program headers to find the
/// loadable segments.
mod elf {
    use super::{
        flatten, len_u64, ElfProblem, FlatImage, ImageError, ImageFormat, LoadOptions, Region,
    };

    pub(super) const MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
    /// Length of `e_ident`.
    const IDENT_LEN: usize = 16;
    const EI_CLASS: usize = 4;
    const EI_DATA: usize = 5;
    /// Most program headers accepted; real firmware has a handful.
    const MAX_PROGRAM_HEADERS: u16 = 4096;
    const PT_LOAD: u32 = 1;

    #[derive(Debug, Clone, Copy)]
    enum Class {
        Elf32,
        Elf64,
    }

    /// Offsets of the fields this module reads, per class.
    struct Layout {
        header_len: u64,
        e_phoff: usize,
        e_phentsize: usize,
        e_phnum: usize,
        phentsize: u16,
        p_offset: usize,
        p_paddr: usize,
        p_filesz: usize,
        /// One past the highest address.
        address_limit: u64,
    }

    impl Class {
        fn from_ident(class: u8) -> Result<Class, ElfProblem> {
            match class {
                1 => Ok(Class::Elf32),
                2 => Ok(Class::Elf64),
                class => Err(ElfProblem::UnsupportedClass { class }),
            }
        }

        fn layout(self) -> Layout {
            match self {
                Class::Elf32 => Layout {
                    header_len: 52,
                    e_phoff: 28,
                    e_phentsize: 42,
                    e_phnum: 44,
                    phentsize: 32,
                    p_offset: 4,
                    p_paddr: 12,
                    p_filesz: 16,
                    address_limit: 1 << 32,
                },
                Class::Elf64 => Layout {
                    header_len: 64,
                    e_phoff: 32,
                    e_phentsize: 54,
                    e_phnum: 56,
                    phentsize: 56,
                    p_offset: 8,
                    p_paddr: 24,
                    p_filesz: 32,
                    address_limit: u64::MAX,
                },
            }
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Endian {
        Little,
        Big,
    }

    impl Endian {
        fn from_ident(encoding: u8) -> Result<Endian, ElfProblem> {
            match encoding {
                1 => Ok(Endian::Little),
                2 => Ok(Endian::Big),
                encoding => Err(ElfProblem::UnsupportedEncoding { encoding }),
            }
        }
    }

    /// Bounds-checked reads of class-sized, byte-ordered fields from `bytes`.
    #[derive(Clone, Copy)]
    struct Fields<'a> {
        bytes: &'a [u8],
        class: Class,
        endian: Endian,
    }

    impl<'a> Fields<'a> {
        fn array<const N: usize>(self, at: usize) -> Option<[u8; N]> {
            let end = at.checked_add(N)?;
            self.bytes.get(at..end)?.try_into().ok()
        }

        fn u16(self, at: usize) -> Option<u16> {
            let bytes = self.array(at)?;
            Some(match self.endian {
                Endian::Little => u16::from_le_bytes(bytes),
                Endian::Big => u16::from_be_bytes(bytes),
            })
        }

        fn u32(self, at: usize) -> Option<u32> {
            let bytes = self.array(at)?;
            Some(match self.endian {
                Endian::Little => u32::from_le_bytes(bytes),
                Endian::Big => u32::from_be_bytes(bytes),
            })
        }

        fn u64(self, at: usize) -> Option<u64> {
            let bytes = self.array(at)?;
            Some(match self.endian {
                Endian::Little => u64::from_le_bytes(bytes),
                Endian::Big => u64::from_be_bytes(bytes),
            })
        }

        /// An address or offset: 4 bytes in ELF32, 8 in ELF64.
        fn word(self, at: usize) -> Option<u64> {
            match self.class {
                Class::Elf32 => self.u32(at).map(u64::from),
                Class::Elf64 => self.u64(at),
            }
        }

        /// The same class and byte order over other bytes.
        fn over(self, bytes: &'a [u8]) -> Fields<'a> {
            Fields { bytes, ..self }
        }
    }

    /// The part of the file header this module needs.
    struct Header<'a> {
        fields: Fields<'a>,
        layout: Layout,
        phoff: u64,
        phnum: u16,
    }

    pub(super) fn load(bytes: &[u8], opts: &LoadOptions) -> Result<FlatImage, ImageError> {
        let regions = load_regions(bytes).map_err(|problem| ImageError::Elf { problem })?;
        flatten(regions, ImageFormat::Elf, opts)
    }

    fn load_regions(bytes: &[u8]) -> Result<Vec<Region<'_>>, ElfProblem> {
        let header = Header::parse(bytes)?;
        let table = header.program_header_table()?;
        let mut regions = Vec::new();
        for (index, entry) in table
            .chunks_exact(usize::from(header.layout.phentsize))
            .enumerate()
        {
            if let Some(region) = header.segment(index, entry)? {
                regions.push(region);
            }
        }
        if regions.is_empty() {
            return Err(ElfProblem::NoLoadableSegments);
        }
        Ok(regions)
    }

    /// `bytes[offset..offset + size]`, if it lies within `bytes`.
    fn file_range(bytes: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        bytes.get(start..end)
    }

    impl<'a> Header<'a> {
        fn parse(bytes: &'a [u8]) -> Result<Header<'a>, ElfProblem> {
            if bytes.iter().zip(MAGIC).any(|(&byte, magic)| byte != magic) {
                return Err(ElfProblem::NotElf);
            }
            let truncated = |needed| ElfProblem::TruncatedHeader {
                len: len_u64(bytes.len()),
                needed,
            };
            let ident: [u8; IDENT_LEN] = bytes
                .get(..IDENT_LEN)
                .and_then(|ident| ident.try_into().ok())
                .ok_or(truncated(len_u64(IDENT_LEN)))?;
            let class = Class::from_ident(ident[EI_CLASS])?;
            let endian = Endian::from_ident(ident[EI_DATA])?;
            let layout = class.layout();
            let needed = layout.header_len;
            if len_u64(bytes.len()) < needed {
                return Err(truncated(needed));
            }
            let fields = Fields {
                bytes,
                class,
                endian,
            };
            let phoff = fields.word(layout.e_phoff).ok_or(truncated(needed))?;
            let phentsize = fields.u16(layout.e_phentsize).ok_or(truncated(needed))?;
            let phnum = fields.u16(layout.e_phnum).ok_or(truncated(needed))?;
            if phnum == 0 {
                return Err(ElfProblem::NoLoadableSegments);
            }
            if phentsize != layout.phentsize {
                return Err(ElfProblem::BadProgramHeaderSize {
                    found: phentsize,
                    expected: layout.phentsize,
                });
            }
            if phnum > MAX_PROGRAM_HEADERS {
                return Err(ElfProblem::TooManyProgramHeaders {
                    count: phnum,
                    max: MAX_PROGRAM_HEADERS,
                });
            }
            Ok(Header {
                fields,
                layout,
                phoff,
                phnum,
            })
        }

        fn program_header_table(&self) -> Result<&'a [u8], ElfProblem> {
            // At most 4096 entries of 56 bytes: cannot overflow.
            let size = u64::from(self.phnum).saturating_mul(u64::from(self.layout.phentsize));
            file_range(self.fields.bytes, self.phoff, size).ok_or(
                ElfProblem::ProgramHeadersOutOfBounds {
                    offset: self.phoff,
                    size,
                    file_len: len_u64(self.fields.bytes.len()),
                },
            )
        }

        /// The flash contents of program header `index` (raw bytes `entry`),
        /// if it is a `PT_LOAD` segment with file contents.
        fn segment(&self, index: usize, entry: &[u8]) -> Result<Option<Region<'a>>, ElfProblem> {
            let file_len = len_u64(self.fields.bytes.len());
            let entry = self.fields.over(entry);
            let layout = &self.layout;
            let read = |value: Option<u64>| {
                value.ok_or(ElfProblem::ProgramHeadersOutOfBounds {
                    offset: self.phoff,
                    size: u64::from(self.phnum).saturating_mul(u64::from(layout.phentsize)),
                    file_len,
                })
            };
            if read(entry.u32(0).map(u64::from))? != u64::from(PT_LOAD) {
                return Ok(None);
            }
            let size = read(entry.word(layout.p_filesz))?;
            if size == 0 {
                return Ok(None);
            }
            let offset = read(entry.word(layout.p_offset))?;
            let address = read(entry.word(layout.p_paddr))?;
            let data = file_range(self.fields.bytes, offset, size).ok_or(
                ElfProblem::SegmentOutOfBounds {
                    index,
                    offset,
                    size,
                    file_len,
                },
            )?;
            let end = address
                .checked_add(size)
                .filter(|&end| end <= layout.address_limit)
                .ok_or(ElfProblem::SegmentAddressOverflow {
                    index,
                    address,
                    size,
                })?;
            Ok(Some(Region {
                start: address,
                end,
                data,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LoadOptions {
        LoadOptions::default()
    }

    // ----- Intel HEX helpers -----

    /// One Intel HEX record line (with `\n`), checksum computed.
    fn record(address: u16, record_type: u8, data: &[u8]) -> String {
        let mut bytes = vec![data.len() as u8];
        bytes.extend_from_slice(&address.to_be_bytes());
        bytes.push(record_type);
        bytes.extend_from_slice(data);
        let sum = bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        bytes.push(0u8.wrapping_sub(sum));
        let digits: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
        format!(":{digits}\n")
    }

    const EOF: &str = ":00000001FF\n";

    fn load_hex(text: &str) -> Result<FlatImage, ImageError> {
        load(text.as_bytes(), ImageFormat::IntelHex, &opts())
    }

    fn hex_error(line: usize, problem: HexProblem) -> Result<FlatImage, ImageError> {
        Err(ImageError::IntelHex { line, problem })
    }

    // ----- Intel HEX -----

    #[test]
    fn hex_multi_record_with_linear_address_and_gap() {
        let text = [
            record(0, 0x04, &[0x08, 0x00]),
            record(0x0000, 0x00, &[1, 2, 3, 4]),
            record(0x0004, 0x00, &[5, 6]),
            // Gap of 2 bytes (0x0006, 0x0007), then more data.
            record(0x0008, 0x00, &[7, 8, 9]),
            record(0, 0x05, &[0x08, 0x00, 0x01, 0x01]),
            EOF.to_string(),
        ]
        .concat();
        let image = load_hex(&text).unwrap();
        assert_eq!(
            image,
            FlatImage {
                load_address: 0x0800_0000,
                bytes: vec![1, 2, 3, 4, 5, 6, 0xff, 0xff, 7, 8, 9],
                format: ImageFormat::IntelHex,
                segments: 2,
            }
        );
    }

    #[test]
    fn hex_extended_segment_address() {
        let text = [
            record(0, 0x02, &[0x12, 0x34]),
            record(0x0010, 0x00, &[0xaa]),
            EOF.to_string(),
        ]
        .concat();
        let image = load_hex(&text).unwrap();
        assert_eq!(image.load_address, 0x12340 + 0x10);
        assert_eq!(image.bytes, vec![0xaa]);
    }

    #[test]
    fn hex_records_out_of_order_are_sorted() {
        let text = [
            record(0x0010, 0x00, &[3, 4]),
            record(0x0000, 0x00, &[1, 2]),
            EOF.to_string(),
        ]
        .concat();
        let image = load_hex(&text).unwrap();
        assert_eq!(image.load_address, 0);
        let mut expected = vec![1, 2];
        expected.extend([0xff; 14]);
        expected.extend([3, 4]);
        assert_eq!(image.bytes, expected);
    }

    #[test]
    fn hex_crlf_and_blank_lines() {
        let text = [
            record(0x0100, 0x00, &[0xde, 0xad]),
            "  \t\n".to_string(),
            record(0x0102, 0x00, &[0xbe, 0xef]),
            EOF.to_string(),
            "\n \n".to_string(),
        ]
        .concat()
        .replace('\n', "\r\n");
        let image = load_hex(&text).unwrap();
        assert_eq!(image.load_address, 0x100);
        assert_eq!(image.bytes, vec![0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(image.segments, 1);
    }

    #[test]
    fn hex_lowercase_digits() {
        let text = format!("{}{EOF}", record(0, 0, &[0xab]).to_lowercase());
        assert_eq!(load_hex(&text).unwrap().bytes, vec![0xab]);
    }

    #[test]
    fn hex_missing_start_code() {
        let text = format!("{}10000000{EOF}", record(0, 0, &[1]));
        assert_eq!(load_hex(&text), hex_error(2, HexProblem::MissingStartCode));
    }

    #[test]
    fn hex_invalid_digit() {
        assert_eq!(
            load_hex(":0100000G01\n"),
            hex_error(
                1,
                HexProblem::InvalidDigit {
                    column: 9,
                    byte: b'G'
                }
            )
        );
        // Columns count leading blanks.
        assert_eq!(
            load_hex("  :01 02\n"),
            hex_error(
                1,
                HexProblem::InvalidDigit {
                    column: 6,
                    byte: b' '
                }
            )
        );
    }

    #[test]
    fn hex_odd_digit_count() {
        assert_eq!(
            load_hex(":0100000001F\n"),
            hex_error(1, HexProblem::OddDigitCount { digits: 11 })
        );
    }

    #[test]
    fn hex_record_too_short() {
        assert_eq!(
            load_hex(":00000001\n"),
            hex_error(1, HexProblem::TooShort { bytes: 4 })
        );
        assert_eq!(
            load_hex(":\n"),
            hex_error(1, HexProblem::TooShort { bytes: 0 })
        );
    }

    #[test]
    fn hex_byte_count_mismatch() {
        // Count says 2, one data byte present.
        assert_eq!(
            load_hex(":0200000001FD\n"),
            hex_error(
                1,
                HexProblem::ByteCountMismatch {
                    declared: 2,
                    actual: 1
                }
            )
        );
        // Far longer than any record can be.
        let long = format!(":FF000000{}00\n", "00".repeat(300));
        assert_eq!(
            load_hex(&long),
            hex_error(
                1,
                HexProblem::ByteCountMismatch {
                    declared: 255,
                    actual: 300
                }
            )
        );
    }

    #[test]
    fn hex_bad_checksum() {
        let good = record(0, 0, &[0x11, 0x22]);
        assert_eq!(good, ":020000001122CB\n");
        let error = load_hex(&format!(":020000001122CC\n{EOF}")).unwrap_err();
        assert_eq!(
            error,
            ImageError::IntelHex {
                line: 1,
                problem: HexProblem::BadChecksum {
                    expected: 0xcb,
                    found: 0xcc
                }
            }
        );
        assert_eq!(
            error.to_string(),
            "line 1: checksum is 0xcc but the record sums to 0xcb (the file is corrupt or was \
             edited by hand)"
        );
    }

    #[test]
    fn hex_unknown_record_type() {
        let text = format!("{}{EOF}", record(0, 0x06, &[]));
        assert_eq!(
            load_hex(&text),
            hex_error(1, HexProblem::UnknownRecordType { record_type: 6 })
        );
    }

    #[test]
    fn hex_data_after_eof() {
        let text = format!("{}{EOF}\n{}", record(0, 0, &[1]), record(1, 0, &[2]));
        assert_eq!(load_hex(&text), hex_error(4, HexProblem::DataAfterEof));
        let text = format!("{}{EOF}{EOF}", record(0, 0, &[1]));
        assert_eq!(load_hex(&text), hex_error(3, HexProblem::DataAfterEof));
        let text = format!("{}{EOF}junk", record(0, 0, &[1]));
        assert_eq!(load_hex(&text), hex_error(3, HexProblem::DataAfterEof));
    }

    #[test]
    fn hex_missing_eof() {
        let text = [record(0, 0, &[1]), record(1, 0, &[2]), "\n".into()].concat();
        assert_eq!(load_hex(&text), hex_error(2, HexProblem::MissingEof));
    }

    #[test]
    fn hex_address_overflow() {
        let text = [
            record(0, 0x04, &[0xff, 0xff]),
            record(0xfff0, 0x00, &[0; 0x10]),
            record(0xfff8, 0x00, &[0; 0x10]),
            EOF.to_string(),
        ]
        .concat();
        assert_eq!(
            load_hex(&text),
            hex_error(
                3,
                HexProblem::AddressOverflow {
                    address: 0xffff_fff8,
                    len: 0x10
                }
            )
        );
    }

    #[test]
    fn hex_data_ending_at_4_gib_is_accepted() {
        let text = [
            record(0, 0x04, &[0xff, 0xff]),
            record(0xfffe, 0x00, &[1, 2]),
            EOF.to_string(),
        ]
        .concat();
        let image = load_hex(&text).unwrap();
        assert_eq!(image.load_address, 0xffff_fffe);
        assert_eq!(image.bytes, vec![1, 2]);
    }

    #[test]
    fn hex_wrong_length_for_type() {
        for (record_type, len, expected) in [
            (0x01, 1, 0),
            (0x02, 1, 2),
            (0x02, 3, 2),
            (0x03, 2, 4),
            (0x04, 0, 2),
            (0x04, 4, 2),
            (0x05, 5, 4),
        ] {
            let text = format!("{}{EOF}", record(0, record_type, &vec![0; len]));
            assert_eq!(
                load_hex(&text),
                hex_error(
                    1,
                    HexProblem::WrongLength {
                        record_type,
                        expected,
                        found: len as u8
                    }
                ),
                "type {record_type:02x} with {len} bytes"
            );
        }
    }

    #[test]
    fn hex_empty() {
        assert_eq!(load_hex(EOF), Err(ImageError::Empty));
        assert_eq!(load_hex(" \r\n\n"), Err(ImageError::Empty));
        assert_eq!(load_hex(""), Err(ImageError::Empty));
        // A zero-length data record carries no data either.
        assert_eq!(
            load_hex(&format!("{}{EOF}", record(0, 0, &[]))),
            Err(ImageError::Empty)
        );
    }

    #[test]
    fn hex_overlap() {
        let text = [
            record(0x0000, 0x00, &[1, 2, 3, 4]),
            record(0x0010, 0x00, &[9]),
            record(0x0003, 0x00, &[4, 5]),
            EOF.to_string(),
        ]
        .concat();
        assert_eq!(
            load_hex(&text),
            Err(ImageError::Overlap {
                first_start: 0,
                first_end: 4,
                second_start: 3,
                second_end: 5
            })
        );
    }

    #[test]
    fn hex_overlap_with_identical_bytes() {
        let text = [
            record(0x0000, 0x00, &[1, 2]),
            record(0x0008, 0x00, &[3]),
            record(0x0000, 0x00, &[1, 2]),
            EOF.to_string(),
        ]
        .concat();
        assert_eq!(
            load_hex(&text),
            Err(ImageError::Overlap {
                first_start: 0,
                first_end: 2,
                second_start: 0,
                second_end: 2
            })
        );
    }

    #[test]
    fn hex_gap_too_large() {
        let text = [
            record(0x0000, 0x00, &[1]),
            record(0, 0x04, &[0x00, 0x01]),
            record(0x0002, 0x00, &[2]),
            EOF.to_string(),
        ]
        .concat();
        assert_eq!(
            load_hex(&text),
            Err(ImageError::GapTooLarge {
                after: 1,
                before: 0x1_0002,
                gap: 0x1_0001,
                max: 0x1_0000
            })
        );
        // The same file with a larger limit.
        let wide = LoadOptions {
            max_gap: 0x1_0001,
            ..opts()
        };
        let image = load(text.as_bytes(), ImageFormat::IntelHex, &wide).unwrap();
        assert_eq!(image.bytes.len(), 0x1_0003);
        assert_eq!(image.bytes[1..0x1_0002], [0xff; 0x1_0001]);
    }

    #[test]
    fn hex_too_large() {
        let text = [
            record(0x0000, 0x00, &[1]),
            record(0x0100, 0x00, &[2]),
            EOF.to_string(),
        ]
        .concat();
        let small = LoadOptions {
            max_size: 0x100,
            ..opts()
        };
        assert_eq!(
            load(text.as_bytes(), ImageFormat::IntelHex, &small),
            Err(ImageError::TooLarge {
                size: 0x101,
                max: 0x100
            })
        );
    }

    // ----- ELF helpers -----

    struct TestSegment {
        p_type: u32,
        paddr: u64,
        vaddr: u64,
        data: Vec<u8>,
        memsz: u64,
    }

    fn load_segment(paddr: u64, data: &[u8]) -> TestSegment {
        TestSegment {
            p_type: 1,
            paddr,
            vaddr: paddr,
            data: data.to_vec(),
            memsz: data.len() as u64,
        }
    }

    struct ElfWriter {
        elf64: bool,
        big_endian: bool,
    }

    impl ElfWriter {
        fn put(&self, buf: &mut [u8], at: usize, value: u64, width: usize) {
            let bytes = if self.big_endian {
                value.to_be_bytes()[8 - width..].to_vec()
            } else {
                value.to_le_bytes()[..width].to_vec()
            };
            buf[at..at + width].copy_from_slice(&bytes);
        }

        fn put_word(&self, buf: &mut [u8], at: usize, value: u64) {
            self.put(buf, at, value, if self.elf64 { 8 } else { 4 });
        }

        fn header_len(&self) -> usize {
            if self.elf64 {
                64
            } else {
                52
            }
        }

        fn phentsize(&self) -> usize {
            if self.elf64 {
                56
            } else {
                32
            }
        }

        /// Offset of program header `index`'s `p_filesz` in the built file.
        fn filesz_at(&self, index: usize) -> usize {
            self.header_len() + index * self.phentsize() + if self.elf64 { 32 } else { 16 }
        }

        /// Header, program headers, then each segment's data in order.
        fn build(&self, segments: &[TestSegment]) -> Vec<u8> {
            let header_len = self.header_len();
            let phentsize = self.phentsize();
            let mut data_offset = header_len + phentsize * segments.len();
            let mut out = vec![0u8; data_offset];
            out[..4].copy_from_slice(b"\x7fELF");
            out[4] = if self.elf64 { 2 } else { 1 };
            out[5] = if self.big_endian { 2 } else { 1 };
            out[6] = 1;
            self.put(&mut out, 16, 2, 2); // e_type = ET_EXEC
            self.put(&mut out, 18, 0x28, 2); // e_machine
            self.put(&mut out, 20, 1, 4); // e_version
            let (phoff_at, ehsize_at) = if self.elf64 { (32, 52) } else { (28, 40) };
            self.put_word(&mut out, phoff_at, header_len as u64);
            self.put(&mut out, ehsize_at, header_len as u64, 2);
            self.put(&mut out, ehsize_at + 2, phentsize as u64, 2);
            self.put(&mut out, ehsize_at + 4, segments.len() as u64, 2);
            for (index, segment) in segments.iter().enumerate() {
                let ph = header_len + index * phentsize;
                let filesz = segment.data.len() as u64;
                self.put(&mut out, ph, u64::from(segment.p_type), 4);
                if self.elf64 {
                    self.put(&mut out, ph + 4, 5, 4); // p_flags
                    self.put_word(&mut out, ph + 8, data_offset as u64);
                    self.put_word(&mut out, ph + 16, segment.vaddr);
                    self.put_word(&mut out, ph + 24, segment.paddr);
                    self.put_word(&mut out, ph + 32, filesz);
                    self.put_word(&mut out, ph + 40, segment.memsz);
                    self.put_word(&mut out, ph + 48, 4);
                } else {
                    self.put_word(&mut out, ph + 4, data_offset as u64);
                    self.put_word(&mut out, ph + 8, segment.vaddr);
                    self.put_word(&mut out, ph + 12, segment.paddr);
                    self.put_word(&mut out, ph + 16, filesz);
                    self.put_word(&mut out, ph + 20, segment.memsz);
                    self.put(&mut out, ph + 24, 5, 4);
                    self.put_word(&mut out, ph + 28, 4);
                }
                data_offset += segment.data.len();
            }
            for segment in segments {
                out.extend_from_slice(&segment.data);
            }
            out
        }
    }

    const ELF32_LE: ElfWriter = ElfWriter {
        elf64: false,
        big_endian: false,
    };

    fn load_elf(bytes: &[u8]) -> Result<FlatImage, ImageError> {
        load(bytes, ImageFormat::Elf, &opts())
    }

    fn elf_error(problem: ElfProblem) -> Result<FlatImage, ImageError> {
        Err(ImageError::Elf { problem })
    }

    // ----- ELF -----

    #[test]
    fn elf32_le_two_segments_bss_and_non_load() {
        let segments = [
            // PT_ARM_EXIDX-like non-LOAD segment: ignored.
            TestSegment {
                p_type: 0x7000_0001,
                ..load_segment(0x0800_0100, &[0xee; 8])
            },
            load_segment(0x0800_0000, &[1, 2, 3, 4]),
            // .data: runs at 0x2000_0000 but is stored in flash after .text.
            TestSegment {
                vaddr: 0x2000_0000,
                memsz: 0x40,
                ..load_segment(0x0800_0006, &[5, 6])
            },
            // .bss: nothing in the file.
            TestSegment {
                vaddr: 0x2000_0040,
                memsz: 0x100,
                ..load_segment(0x2000_0040, &[])
            },
        ];
        let image = load_elf(&ELF32_LE.build(&segments)).unwrap();
        assert_eq!(
            image,
            FlatImage {
                load_address: 0x0800_0000,
                bytes: vec![1, 2, 3, 4, 0xff, 0xff, 5, 6],
                format: ImageFormat::Elf,
                segments: 2,
            }
        );
    }

    #[test]
    fn elf64_be_one_segment() {
        let writer = ElfWriter {
            elf64: true,
            big_endian: true,
        };
        let bytes = writer.build(&[load_segment(0x1_0000_0000, &[9, 8, 7])]);
        assert_eq!(
            load_elf(&bytes).unwrap(),
            FlatImage {
                load_address: 0x1_0000_0000,
                bytes: vec![9, 8, 7],
                format: ImageFormat::Elf,
                segments: 1,
            }
        );
    }

    #[test]
    fn elf64_le_and_elf32_be() {
        for (elf64, big_endian) in [(true, false), (false, true)] {
            let writer = ElfWriter { elf64, big_endian };
            let bytes = writer.build(&[load_segment(0x400, &[1, 2]), load_segment(0x402, &[3])]);
            let image = load_elf(&bytes).unwrap();
            assert_eq!((image.load_address, image.bytes), (0x400, vec![1, 2, 3]));
        }
    }

    #[test]
    fn elf_truncated_header() {
        let bytes = ELF32_LE.build(&[load_segment(0, &[1])]);
        assert_eq!(
            load_elf(&bytes[..40]),
            elf_error(ElfProblem::TruncatedHeader {
                len: 40,
                needed: 52
            })
        );
        assert_eq!(
            load_elf(&bytes[..10]),
            elf_error(ElfProblem::TruncatedHeader {
                len: 10,
                needed: 16
            })
        );
        assert_eq!(
            load_elf(b"\x7fE"),
            elf_error(ElfProblem::TruncatedHeader { len: 2, needed: 16 })
        );
    }

    #[test]
    fn elf_not_elf() {
        assert_eq!(load_elf(b"\x7fELG rest"), elf_error(ElfProblem::NotElf));
        assert_eq!(load_elf(b"x"), elf_error(ElfProblem::NotElf));
    }

    #[test]
    fn elf_unsupported_class_and_encoding() {
        let mut bytes = ELF32_LE.build(&[load_segment(0, &[1])]);
        bytes[4] = 3;
        assert_eq!(
            load_elf(&bytes),
            elf_error(ElfProblem::UnsupportedClass { class: 3 })
        );
        bytes[4] = 1;
        bytes[5] = 0;
        assert_eq!(
            load_elf(&bytes),
            elf_error(ElfProblem::UnsupportedEncoding { encoding: 0 })
        );
    }

    #[test]
    fn elf_bad_program_header_size() {
        let mut bytes = ELF32_LE.build(&[load_segment(0, &[1])]);
        bytes[42] = 56; // e_phentsize of ELF64 in an ELF32 file
        assert_eq!(
            load_elf(&bytes),
            elf_error(ElfProblem::BadProgramHeaderSize {
                found: 56,
                expected: 32
            })
        );
    }

    #[test]
    fn elf_too_many_program_headers() {
        let mut bytes = ELF32_LE.build(&[load_segment(0, &[1])]);
        bytes[44..46].copy_from_slice(&0xffffu16.to_le_bytes()); // PN_XNUM
        assert_eq!(
            load_elf(&bytes),
            elf_error(ElfProblem::TooManyProgramHeaders {
                count: 0xffff,
                max: 4096
            })
        );
    }

    #[test]
    fn elf_program_headers_out_of_bounds() {
        let mut bytes = ELF32_LE.build(&[load_segment(0, &[1])]);
        bytes[44] = 3; // e_phnum: 3 entries, only one (plus 1 data byte) present
        assert_eq!(
            load_elf(&bytes),
            elf_error(ElfProblem::ProgramHeadersOutOfBounds {
                offset: 52,
                size: 96,
                file_len: 85
            })
        );
        let mut bytes = ELF32_LE.build(&[load_segment(0, &[1])]);
        bytes[28..32].copy_from_slice(&u32::MAX.to_le_bytes()); // e_phoff
        assert_eq!(
            load_elf(&bytes),
            elf_error(ElfProblem::ProgramHeadersOutOfBounds {
                offset: u64::from(u32::MAX),
                size: 32,
                file_len: 85
            })
        );
    }

    #[test]
    fn elf_no_loadable_segments() {
        let bss_only = TestSegment {
            memsz: 0x100,
            ..load_segment(0x2000_0000, &[])
        };
        let note = TestSegment {
            p_type: 4,
            ..load_segment(0, &[1, 2, 3])
        };
        let bytes = ELF32_LE.build(&[bss_only, note]);
        assert_eq!(load_elf(&bytes), elf_error(ElfProblem::NoLoadableSegments));
        assert_eq!(
            load_elf(&ELF32_LE.build(&[])),
            elf_error(ElfProblem::NoLoadableSegments)
        );
    }

    #[test]
    fn elf_segment_out_of_bounds() {
        let mut bytes = ELF32_LE.build(&[load_segment(0, &[1]), load_segment(0x10, &[2, 3])]);
        let at = ELF32_LE.filesz_at(1);
        bytes[at..at + 4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(
            load_elf(&bytes),
            elf_error(ElfProblem::SegmentOutOfBounds {
                index: 1,
                offset: 117,
                size: 3,
                file_len: 119
            })
        );
        // Offset + size overflowing u64.
        let writer = ElfWriter {
            elf64: true,
            big_endian: false,
        };
        let mut bytes = writer.build(&[load_segment(0, &[1])]);
        let at = writer.filesz_at(0);
        bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            load_elf(&bytes),
            elf_error(ElfProblem::SegmentOutOfBounds {
                index: 0,
                offset: 120,
                size: u64::MAX,
                file_len: 121
            })
        );
    }

    #[test]
    fn elf_segment_address_overflow() {
        let bytes = ELF32_LE.build(&[load_segment(0xffff_fffe, &[1, 2, 3])]);
        assert_eq!(
            load_elf(&bytes),
            elf_error(ElfProblem::SegmentAddressOverflow {
                index: 0,
                address: 0xffff_fffe,
                size: 3
            })
        );
        let writer = ElfWriter {
            elf64: true,
            big_endian: true,
        };
        let bytes = writer.build(&[load_segment(u64::MAX, &[1])]);
        assert_eq!(
            load_elf(&bytes),
            elf_error(ElfProblem::SegmentAddressOverflow {
                index: 0,
                address: u64::MAX,
                size: 1
            })
        );
    }

    #[test]
    fn elf_overlap() {
        let bytes = ELF32_LE.build(&[
            load_segment(0x0800_0000, &[0; 0x20]),
            load_segment(0x0800_001c, &[0; 8]),
        ]);
        assert_eq!(
            load_elf(&bytes),
            Err(ImageError::Overlap {
                first_start: 0x0800_0000,
                first_end: 0x0800_0020,
                second_start: 0x0800_001c,
                second_end: 0x0800_0024
            })
        );
    }

    #[test]
    fn elf_gap_too_large() {
        let bytes = ELF32_LE.build(&[
            load_segment(0x0800_0000, &[1]),
            load_segment(0x2000_0000, &[2]),
        ]);
        assert_eq!(
            load_elf(&bytes),
            Err(ImageError::GapTooLarge {
                after: 0x0800_0001,
                before: 0x2000_0000,
                gap: 0x17ff_ffff,
                max: 0x1_0000
            })
        );
    }

    // ----- Raw -----

    #[test]
    fn raw_at_load_address() {
        let options = LoadOptions {
            raw_load_address: 0x0800_4000,
            ..opts()
        };
        assert_eq!(
            load(&[1, 2, 3], ImageFormat::Raw, &options),
            Ok(FlatImage {
                load_address: 0x0800_4000,
                bytes: vec![1, 2, 3],
                format: ImageFormat::Raw,
                segments: 1,
            })
        );
    }

    #[test]
    fn raw_errors() {
        assert_eq!(load(&[], ImageFormat::Raw, &opts()), Err(ImageError::Empty));
        let small = LoadOptions {
            max_size: 2,
            ..opts()
        };
        assert_eq!(
            load(&[1, 2, 3], ImageFormat::Raw, &small),
            Err(ImageError::TooLarge { size: 3, max: 2 })
        );
        let high = LoadOptions {
            raw_load_address: u64::MAX - 1,
            ..opts()
        };
        assert_eq!(
            load(&[1, 2], ImageFormat::Raw, &high),
            Err(ImageError::AddressOverflow {
                address: u64::MAX - 1,
                size: 2
            })
        );
    }

    // ----- detect and FromStr -----

    #[test]
    fn detect_format() {
        let elf = ELF32_LE.build(&[load_segment(0, &[1])]);
        assert_eq!(ImageFormat::detect(&elf), ImageFormat::Elf);
        assert_eq!(ImageFormat::detect(b":10000000\n"), ImageFormat::IntelHex);
        assert_eq!(
            ImageFormat::detect(b"\r\n  :020000040800F2\r\n:00000001FF\r\n"),
            ImageFormat::IntelHex
        );
        assert_eq!(ImageFormat::detect(EOF.as_bytes()), ImageFormat::IntelHex);
        assert_eq!(ImageFormat::detect(b":00000001FF"), ImageFormat::IntelHex);
        assert_eq!(ImageFormat::detect(b":0000zz01FF\n"), ImageFormat::Raw);
        assert_eq!(ImageFormat::detect(b":\n"), ImageFormat::Raw);
        assert_eq!(ImageFormat::detect(b"\x00\x20\x00\x20"), ImageFormat::Raw);
        assert_eq!(ImageFormat::detect(b"\x7fEL"), ImageFormat::Raw);
        assert_eq!(ImageFormat::detect(b""), ImageFormat::Raw);
    }

    #[test]
    fn format_from_str() {
        assert_eq!("raw".parse(), Ok(ImageFormat::Raw));
        assert_eq!("IHEX".parse(), Ok(ImageFormat::IntelHex));
        assert_eq!("Hex".parse(), Ok(ImageFormat::IntelHex));
        assert_eq!("elf".parse(), Ok(ImageFormat::Elf));
        assert_eq!(
            "bin".parse::<ImageFormat>(),
            Err("unknown image format 'bin' (expected one of: raw, ihex, hex, elf)".to_string())
        );
    }

    #[test]
    fn error_messages() {
        let gap = ImageError::GapTooLarge {
            after: 0x0800_0001,
            before: 0x2000_0000,
            gap: 0x17ff_ffff,
            max: 0x1_0000,
        };
        assert_eq!(
            gap.to_string(),
            "gap of 402653183 bytes between the data ending at 0x08000001 and the data starting \
             at 0x20000000 is more than the 65536 bytes that may be filled with 0xff (pass a \
             larger --max-gap or split the image)"
        );
        let digit = ImageError::IntelHex {
            line: 3,
            problem: HexProblem::InvalidDigit {
                column: 4,
                byte: 0xc3,
            },
        };
        assert_eq!(
            digit.to_string(),
            "line 3: column 4: '\\xc3' is not a hex digit"
        );
    }

    // ----- robustness -----

    #[test]
    fn mutated_inputs_never_panic() {
        let mut rng = Lcg(0xbad);
        let valid = [
            (
                ImageFormat::Elf,
                ELF32_LE.build(&[load_segment(0x100, &[1, 2, 3])]),
            ),
            (
                ImageFormat::Elf,
                ElfWriter {
                    elf64: true,
                    big_endian: true,
                }
                .build(&[load_segment(0x100, &[1; 9]), load_segment(0x200, &[2; 5])]),
            ),
            (
                ImageFormat::IntelHex,
                [
                    record(0, 0x04, &[0, 1]),
                    record(0x10, 0, &[1, 2, 3]),
                    EOF.into(),
                ]
                .concat()
                .into_bytes(),
            ),
        ];
        for (format, original) in &valid {
            for _ in 0..2000 {
                let mut bytes = original.clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(bytes.len() as u32) as usize;
                    bytes[at] = rng.next() as u8;
                }
                let cut = rng.below(bytes.len() as u32 + 1) as usize;
                let _ = load(&bytes, *format, &opts());
                let _ = load(&bytes[..cut], *format, &opts());
                let _ = load(&bytes, ImageFormat::detect(&bytes), &opts());
            }
        }
    }

    // ----- property-style round trip -----

    /// A 64-bit LCG (Knuth's MMIX constants); the high bits are good enough.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }

        fn below(&mut self, n: u32) -> u32 {
            self.next() % n
        }
    }

    /// Encodes segments as Intel HEX: type 04 records whenever the upper 16
    /// address bits change, data records of random size that never cross a
    /// 64 KiB boundary.
    fn encode_hex(segments: &[(u64, Vec<u8>)], rng: &mut Lcg) -> String {
        let mut out = String::new();
        let mut upper = None;
        for (start, data) in segments {
            let mut address = *start;
            let mut rest = &data[..];
            while !rest.is_empty() {
                let high = (address >> 16) as u16;
                if upper != Some(high) {
                    out += &record(0, 0x04, &high.to_be_bytes());
                    upper = Some(high);
                }
                let room = 0x1_0000 - (address & 0xffff) as usize;
                let len = (rng.below(255) as usize + 1).min(rest.len()).min(room);
                out += &record(address as u16, 0x00, &rest[..len]);
                address += len as u64;
                rest = &rest[len..];
            }
        }
        out + EOF
    }

    /// Disjoint segments, in shuffled order, some adjacent, many crossing a
    /// 64 KiB boundary.
    fn random_segments(rng: &mut Lcg) -> Vec<(u64, Vec<u8>)> {
        let count = rng.below(6) + 1;
        let mut address =
            u64::from(rng.below(0xf000)) * 0x1_0000 + 0xffff - u64::from(rng.below(1500));
        let mut segments = Vec::new();
        for _ in 0..count {
            let len = rng.below(700) + 1;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            segments.push((address, data));
            address += u64::from(len) + u64::from(rng.below(3) * rng.below(2000));
        }
        for i in (1..segments.len()).rev() {
            let j = rng.below(i as u32 + 1) as usize;
            segments.swap(i, j);
        }
        segments
    }

    fn flat(segments: &[(u64, Vec<u8>)]) -> (u64, Vec<u8>) {
        let start = segments.iter().map(|(a, _)| *a).min().unwrap();
        let end = segments
            .iter()
            .map(|(a, d)| a + d.len() as u64)
            .max()
            .unwrap();
        let mut bytes = vec![0xff; (end - start) as usize];
        for (address, data) in segments {
            let at = (address - start) as usize;
            bytes[at..at + data.len()].copy_from_slice(data);
        }
        (start, bytes)
    }

    #[test]
    fn hex_round_trip_random_segments() {
        let mut rng = Lcg(0x5eed);
        for case in 0..300 {
            let segments = random_segments(&mut rng);
            let mut text = encode_hex(&segments, &mut rng);
            if case % 3 == 0 {
                text = text.replace('\n', "\r\n");
            }
            let image = load_hex(&text).unwrap_or_else(|e| panic!("case {case}: {e}"));
            let (load_address, bytes) = flat(&segments);
            assert_eq!(image.load_address, load_address, "case {case}");
            assert_eq!(image.bytes, bytes, "case {case}");
            assert!(
                image.segments >= 1 && image.segments <= segments.len(),
                "case {case}"
            );
        }
    }
}
