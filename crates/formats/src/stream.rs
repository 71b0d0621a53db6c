//! Layout of the encrypted image `update.enc`: the plaintext is cut into
//! chunks of [`CHUNK_SIZE`] bytes (the last one shorter, never empty), each
//! sealed with AES-128-GCM under the content key, with the STREAM nonce of
//! age / Hoang-Reyhanitabar-Rogaway-Vizár (an 88-bit big-endian chunk
//! counter then a last-chunk flag byte) and the COSE Enc_structure
//! [`crate::cose::CONTENT_AAD`] as AAD. `update.enc` is the concatenation of
//! `ciphertext || tag` of every chunk, nothing else.
//!
//! A device decrypts one chunk at a time with a 4 KiB buffer and writes to
//! flash only plaintext whose tag has verified; the last-chunk flag stops
//! truncation and the counter stops reordering.

/// Plaintext bytes per chunk.
pub const CHUNK_SIZE: usize = 4096;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Ciphertext bytes of a full chunk.
pub const SEALED_CHUNK_SIZE: usize = CHUNK_SIZE + TAG_LEN;
/// AES-128 content key length.
pub const KEY_LEN: usize = 16;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;

/// Number of chunks of an image of `image_size` bytes (`None` for 0).
pub const fn chunk_count(image_size: u64) -> Option<u64> {
    if image_size == 0 {
        return None;
    }
    Some(image_size.div_ceil(CHUNK_SIZE as u64))
}

/// Size of `update.enc` for an image of `image_size` bytes.
pub const fn ciphertext_size(image_size: u64) -> Option<u64> {
    match chunk_count(image_size) {
        Some(n) => match n.checked_mul(TAG_LEN as u64) {
            Some(tags) => image_size.checked_add(tags),
            None => None,
        },
        None => None,
    }
}

/// The nonce of chunk `index`: `BE88(index) || last`.
pub const fn nonce(index: u64, last: bool) -> [u8; NONCE_LEN] {
    let c = index.to_be_bytes();
    [
        0, 0, 0, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], last as u8,
    ]
}

/// Plaintext length of chunk `index` of an image of `image_size` bytes.
pub const fn chunk_len(image_size: u64, index: u64) -> usize {
    let start = index.saturating_mul(CHUNK_SIZE as u64);
    let left = image_size.saturating_sub(start);
    if left > CHUNK_SIZE as u64 {
        CHUNK_SIZE
    } else {
        left as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_nonces() {
        assert_eq!(chunk_count(0), None);
        assert_eq!(chunk_count(1), Some(1));
        assert_eq!(chunk_count(4096), Some(1));
        assert_eq!(chunk_count(4097), Some(2));
        assert_eq!(ciphertext_size(4097), Some(4097 + 32));
        assert_eq!(ciphertext_size(u64::MAX), None);
        assert_eq!(nonce(1, false), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(nonce(0x0102, true), [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 1]);
        assert_eq!(chunk_len(4097, 0), 4096);
        assert_eq!(chunk_len(4097, 1), 1);
        assert_eq!(chunk_len(4097, 2), 0);
    }
}
