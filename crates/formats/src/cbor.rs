//! A strict reader over `minicbor`'s decoder, used by every parser of
//! untrusted CBOR in trustchain (host and device): definite lengths only, the
//! shortest encoding of every head (RFC 8949 §4.2.1), bounded lengths, and
//! map keys read in the one deterministic order.
use minicbor::data::Type;
use minicbor::decode::Decoder;

use crate::FormatError;

/// A strict, bounded CBOR reader over a byte slice.
pub struct Reader<'b> {
    d: Decoder<'b>,
}

/// Length in bytes of the shortest head that carries `arg`.
const fn head_len(arg: u64) -> usize {
    if arg < 24 {
        1
    } else if arg <= 0xff {
        2
    } else if arg <= 0xffff {
        3
    } else if arg <= 0xffff_ffff {
        5
    } else {
        9
    }
}

/// Where an integer key sorts in the deterministic encoding: non-negative
/// keys ascending, then negative keys by growing magnitude.
const fn canonical_rank(key: i64) -> (u8, u64) {
    if key >= 0 {
        (0, key as u64)
    } else {
        (1, (-1 - key) as u64)
    }
}

impl<'b> Reader<'b> {
    /// Reads `bytes`.
    pub fn new(bytes: &'b [u8]) -> Self {
        Self {
            d: Decoder::new(bytes),
        }
    }

    /// The current byte offset.
    pub fn position(&self) -> usize {
        self.d.position()
    }

    fn datatype(&self) -> Result<Type, FormatError> {
        if self.d.position() >= self.d.input().len() {
            return Err(FormatError::Truncated);
        }
        Ok(self.d.datatype()?)
    }

    fn canonical(&self, start: usize, arg: u64, content: usize) -> Result<(), FormatError> {
        let used = self.d.position() - start;
        if used != head_len(arg) + content {
            return Err(FormatError::NonCanonical { at: start });
        }
        Ok(())
    }

    fn mismatch(at: usize, expected: &'static str) -> FormatError {
        FormatError::Malformed { at, expected }
    }

    /// An unsigned integer.
    pub fn uint(&mut self, expected: &'static str) -> Result<u64, FormatError> {
        let start = self.position();
        match self.datatype()? {
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
                let v = self.d.u64()?;
                self.canonical(start, v, 0)?;
                Ok(v)
            }
            _ => Err(Self::mismatch(start, expected)),
        }
    }

    /// A signed integer that fits an `i64`.
    pub fn int(&mut self, expected: &'static str) -> Result<i64, FormatError> {
        let start = self.position();
        match self.datatype()? {
            Type::U8
            | Type::U16
            | Type::U32
            | Type::U64
            | Type::I8
            | Type::I16
            | Type::I32
            | Type::I64 => {
                let v = self.d.i64().map_err(|_| Self::mismatch(start, expected))?;
                let arg = if v < 0 { (-1 - v) as u64 } else { v as u64 };
                self.canonical(start, arg, 0)?;
                Ok(v)
            }
            _ => Err(Self::mismatch(start, expected)),
        }
    }

    /// A definite-length byte string of at most `max` bytes.
    pub fn bstr(&mut self, field: &'static str, max: usize) -> Result<&'b [u8], FormatError> {
        let start = self.position();
        match self.datatype()? {
            Type::Bytes => {
                let b = self.d.bytes()?;
                self.canonical(start, b.len() as u64, b.len())?;
                if b.len() > max {
                    return Err(FormatError::TooLarge {
                        field,
                        max: max as u64,
                        found: b.len() as u64,
                    });
                }
                Ok(b)
            }
            Type::BytesIndef => Err(FormatError::NonCanonical { at: start }),
            _ => Err(Self::mismatch(start, "a byte string")),
        }
    }

    /// A byte string of exactly `N` bytes.
    pub fn bstr_exact<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<&'b [u8; N], FormatError> {
        let b = self.bstr(field, N)?;
        b.try_into().map_err(|_| FormatError::InvalidValue {
            field,
            expected: "a byte string of the fixed length",
        })
    }

    /// A definite-length text string of at most `max` bytes.
    pub fn tstr(&mut self, field: &'static str, max: usize) -> Result<&'b str, FormatError> {
        let start = self.position();
        match self.datatype()? {
            Type::String => {
                let s = self.d.str()?;
                self.canonical(start, s.len() as u64, s.len())?;
                if s.len() > max {
                    return Err(FormatError::TooLarge {
                        field,
                        max: max as u64,
                        found: s.len() as u64,
                    });
                }
                Ok(s)
            }
            Type::StringIndef => Err(FormatError::NonCanonical { at: start }),
            _ => Err(Self::mismatch(start, "a text string")),
        }
    }

    /// A boolean.
    pub fn bool(&mut self, expected: &'static str) -> Result<bool, FormatError> {
        let start = self.position();
        match self.datatype()? {
            Type::Bool => Ok(self.d.bool()?),
            _ => Err(Self::mismatch(start, expected)),
        }
    }

    /// Whether the next item is `null` (consumed if so).
    pub fn null_if_next(&mut self) -> Result<bool, FormatError> {
        if self.datatype()? == Type::Null {
            self.d.null()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The head of a definite-length array; returns its length.
    pub fn array(&mut self, expected: &'static str) -> Result<u64, FormatError> {
        let start = self.position();
        match self.datatype()? {
            Type::Array => {
                let n = self
                    .d
                    .array()?
                    .ok_or(FormatError::NonCanonical { at: start })?;
                self.canonical(start, n, 0)?;
                Ok(n)
            }
            Type::ArrayIndef => Err(FormatError::NonCanonical { at: start }),
            _ => Err(Self::mismatch(start, expected)),
        }
    }

    /// An array that must have exactly `n` items.
    pub fn array_of(&mut self, n: u64, expected: &'static str) -> Result<(), FormatError> {
        let start = self.position();
        if self.array(expected)? != n {
            return Err(Self::mismatch(start, expected));
        }
        Ok(())
    }

    /// The head of a definite-length map; returns a cursor over its keys.
    pub fn map(&mut self, expected: &'static str) -> Result<MapKeys, FormatError> {
        let start = self.position();
        match self.datatype()? {
            Type::Map => {
                let n = self
                    .d
                    .map()?
                    .ok_or(FormatError::NonCanonical { at: start })?;
                self.canonical(start, n, 0)?;
                Ok(MapKeys { remaining: n })
            }
            Type::MapIndef => Err(FormatError::NonCanonical { at: start }),
            _ => Err(Self::mismatch(start, expected)),
        }
    }

    /// A tag that must be `expected`.
    pub fn tag(&mut self, expected: u64, what: &'static str) -> Result<(), FormatError> {
        let start = self.position();
        match self.datatype()? {
            Type::Tag => {
                let t = self.d.tag()?.as_u64();
                self.canonical(start, t, 0)?;
                if t != expected {
                    return Err(Self::mismatch(start, what));
                }
                Ok(())
            }
            _ => Err(Self::mismatch(start, what)),
        }
    }

    /// A `null`.
    pub fn null(&mut self, expected: &'static str) -> Result<(), FormatError> {
        let start = self.position();
        match self.datatype()? {
            Type::Null => Ok(self.d.null()?),
            _ => Err(Self::mismatch(start, expected)),
        }
    }

    /// Reads the next key of `keys` if it equals `key`; keys must come in the
    /// deterministic order, so a caller asks for them in that order.
    pub fn key(&mut self, keys: &mut MapKeys, key: i64) -> Result<bool, FormatError> {
        if keys.remaining == 0 {
            return Ok(false);
        }
        let start = self.position();
        let found = self.int("an integer map key")?;
        if found == key {
            keys.remaining -= 1;
            Ok(true)
        } else {
            self.d.set_position(start);
            Ok(false)
        }
    }

    /// The next key, which must be `key`.
    pub fn required_key(
        &mut self,
        keys: &mut MapKeys,
        key: i64,
        field: &'static str,
    ) -> Result<(), FormatError> {
        if self.key(keys, key)? {
            Ok(())
        } else if keys.remaining == 0 {
            Err(FormatError::MissingKey { key, field })
        } else {
            // The next key is not the one expected: either unknown, out of
            // order, or the required one is absent.
            let at = self.position();
            let found = self.int("an integer map key")?;
            Err(if canonical_rank(found) > canonical_rank(key) {
                FormatError::MissingKey { key, field }
            } else {
                FormatError::UnexpectedKey { at, key: found }
            })
        }
    }

    /// Asserts every key of the map has been read.
    pub fn end_map(&mut self, keys: MapKeys) -> Result<(), FormatError> {
        if keys.remaining == 0 {
            return Ok(());
        }
        let at = self.position();
        let key = self.int("an integer map key")?;
        Err(FormatError::UnexpectedKey { at, key })
    }

    /// Asserts the input is fully consumed.
    pub fn finish(&self) -> Result<(), FormatError> {
        let at = self.position();
        if at != self.d.input().len() {
            return Err(FormatError::TrailingBytes { at });
        }
        Ok(())
    }

    /// The raw bytes from `start` to the current position.
    pub fn slice_from(&self, start: usize) -> &'b [u8] {
        &self.d.input()[start..self.position()]
    }
}

/// How many keys of a map are still to be read.
pub struct MapKeys {
    remaining: u64,
}

/// Encodes into a vector. Writing to a `Vec` cannot fail and the encoders of
/// this crate write only plain items, so an error here is a bug.
#[cfg(feature = "alloc")]
pub(crate) fn to_vec(
    f: impl FnOnce(
        &mut minicbor::Encoder<alloc::vec::Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<core::convert::Infallible>>,
) -> alloc::vec::Vec<u8> {
    let mut e = minicbor::Encoder::new(alloc::vec::Vec::new());
    #[allow(clippy::expect_used)]
    f(&mut e).expect("CBOR encoding into a Vec is infallible");
    e.into_writer()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_shortest_integers_and_lengths() {
        // 5 encoded with a one-byte argument.
        assert_eq!(
            Reader::new(&[0x18, 0x05]).uint("x"),
            Err(FormatError::NonCanonical { at: 0 })
        );
        // -1 encoded with a one-byte argument.
        assert_eq!(
            Reader::new(&[0x38, 0x00]).int("x"),
            Err(FormatError::NonCanonical { at: 0 })
        );
        // A 1-byte bstr with a one-byte length.
        assert_eq!(
            Reader::new(&[0x58, 0x01, 0xaa]).bstr("x", 8),
            Err(FormatError::NonCanonical { at: 0 })
        );
        // Indefinite-length array.
        assert_eq!(
            Reader::new(&[0x9f, 0xff]).array("x"),
            Err(FormatError::NonCanonical { at: 0 })
        );
        assert_eq!(Reader::new(&[0x18, 0x18]).uint("x"), Ok(24));
    }

    #[test]
    fn bounds_and_truncation() {
        assert_eq!(
            Reader::new(&[0x43, 1, 2, 3]).bstr("field", 2),
            Err(FormatError::TooLarge {
                field: "field",
                max: 2,
                found: 3
            })
        );
        assert_eq!(
            Reader::new(&[0x43, 1, 2]).bstr("field", 8),
            Err(FormatError::Truncated)
        );
        assert_eq!(Reader::new(&[]).uint("x"), Err(FormatError::Truncated));
        let mut r = Reader::new(&[0x01, 0x02]);
        r.uint("x").unwrap();
        assert_eq!(r.finish(), Err(FormatError::TrailingBytes { at: 1 }));
    }

    #[test]
    fn map_keys_in_order_only() {
        // {1: 0, 2: 0}
        let ok = [0xa2, 0x01, 0x00, 0x02, 0x00];
        let mut r = Reader::new(&ok);
        let mut k = r.map("m").unwrap();
        r.required_key(&mut k, 1, "a").unwrap();
        r.uint("v").unwrap();
        r.required_key(&mut k, 2, "b").unwrap();
        r.uint("v").unwrap();
        r.end_map(k).unwrap();
        // {2: 0, 1: 0}: out of order.
        let bad = [0xa2, 0x02, 0x00, 0x01, 0x00];
        let mut r = Reader::new(&bad);
        let mut k = r.map("m").unwrap();
        assert_eq!(
            r.required_key(&mut k, 1, "a"),
            Err(FormatError::MissingKey { key: 1, field: "a" })
        );
        // {1: 0, 1: 0}: duplicate.
        let dup = [0xa2, 0x01, 0x00, 0x01, 0x00];
        let mut r = Reader::new(&dup);
        let mut k = r.map("m").unwrap();
        r.required_key(&mut k, 1, "a").unwrap();
        r.uint("v").unwrap();
        assert_eq!(
            r.end_map(k),
            Err(FormatError::UnexpectedKey { at: 3, key: 1 })
        );
    }
}
