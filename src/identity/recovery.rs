//! Recovery codes: ten single-use codes of 80 random bits, shown once, stored as SHA-256.

use crate::keys::kek::hex;

pub const COUNT: usize = 10;

/// `xxxx-xxxx-xxxx-xxxx` in Crockford-style base32 (no I, L, O, U).
pub fn generate() -> Vec<String> {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    (0..COUNT)
        .map(|_| {
            let bytes: [u8; 10] = crate::random::random_bytes();
            let mut bits = 0u128;
            for b in bytes {
                bits = (bits << 8) | u128::from(b);
            }
            let chars: String = (0..16)
                .map(|i| ALPHABET[((bits >> (75 - 5 * i)) & 31) as usize] as char)
                .collect();
            format!(
                "{}-{}-{}-{}",
                &chars[0..4],
                &chars[4..8],
                &chars[8..12],
                &chars[12..16]
            )
        })
        .collect()
}

/// Hash of a code as typed: case, spaces and dashes do not matter.
pub fn hash(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    hex(ring::digest::digest(&ring::digest::SHA256, normal.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_normalised() {
        let codes = generate();
        assert_eq!(codes.len(), 10);
        let mut uniq = codes.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 10);
        assert_eq!(codes[0].len(), 19);
        assert_eq!(
            hash(&codes[0]),
            hash(&codes[0].to_lowercase().replace('-', " "))
        );
    }
}
