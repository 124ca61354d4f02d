//! ES256 signature malleability: for every valid ECDSA signature `(r, s)` over P-256, `(r, n − s)`
//! is valid too, so one token would have two encodings (two `jti`-equal tokens that compare
//! unequal as strings, a replay cache keyed on the token text defeated). Only the low-s form
//! (`s ≤ n/2`) is accepted, and Sigil signs only that form. Plain 32-byte big-endian arithmetic.

/// The order `n` of the P-256 group, big-endian.
const N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `⌊n/2⌋`, big-endian: the largest low `s`.
const HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// True when `signature` is a fixed-width (`r ‖ s`, 64 bytes) ES256 signature with `s ≤ n/2`.
/// Anything else (wrong length, high s) is false; ring still checks that the signature verifies.
pub fn is_low_s(signature: &[u8]) -> bool {
    // Equal-length big-endian byte strings compare like the numbers they encode.
    signature.len() == 64 && signature[32..] <= HALF_N[..]
}

/// Rewrites a fixed-width ES256 signature into its low-s form (`s := n − s` when `s > n/2`); the
/// result verifies exactly when the input did. Signatures of another length are left alone.
pub fn to_low_s(signature: &mut [u8]) {
    if signature.len() == 64 && !is_low_s(signature) {
        negate_s(signature);
    }
}

/// Replaces `s` by `n − s` in a fixed-width ES256 signature: the other valid encoding of the same
/// signature (tests use it to check that the high form is refused). Other lengths are left alone.
pub fn negate_s(signature: &mut [u8]) {
    if signature.len() != 64 {
        return;
    }
    let s = &mut signature[32..];
    // n − s from the least significant byte up; a valid s is below n, so no borrow survives.
    let mut borrow = 0u16;
    for i in (0..32).rev() {
        let subtrahend = u16::from(s[i]) + borrow;
        let minuend = u16::from(N[i]);
        if minuend >= subtrahend {
            s[i] = (minuend - subtrahend) as u8;
            borrow = 0;
        } else {
            s[i] = (minuend + 256 - subtrahend) as u8;
            borrow = 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig_with_s(s: [u8; 32]) -> Vec<u8> {
        let mut sig = vec![7u8; 32];
        sig.extend(s);
        sig
    }

    #[test]
    fn the_boundary_is_half_the_order() {
        assert!(is_low_s(&sig_with_s(HALF_N)));
        let mut above = HALF_N;
        above[31] += 1;
        assert!(!is_low_s(&sig_with_s(above)));
        assert!(is_low_s(&sig_with_s([0; 32])));
        assert!(!is_low_s(&[0u8; 63]));
        assert!(!is_low_s(&[0u8; 65]));
    }

    #[test]
    fn high_s_becomes_n_minus_s() {
        // s = ⌊n/2⌋ + 1 is high; n − s = ⌊n/2⌋ (n is odd).
        let mut above = HALF_N;
        above[31] += 1;
        let mut sig = sig_with_s(above);
        to_low_s(&mut sig);
        assert_eq!(&sig[32..], &HALF_N[..]);
        assert_eq!(&sig[..32], &[7u8; 32][..], "r is untouched");
        // s = n − 1 becomes 1.
        let mut n_minus_1 = N;
        n_minus_1[31] -= 1;
        let mut sig = sig_with_s(n_minus_1);
        to_low_s(&mut sig);
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(&sig[32..], &one[..]);
        // A low s is left as it is; negating it twice is the identity.
        let mut sig = sig_with_s(one);
        to_low_s(&mut sig);
        assert_eq!(&sig[32..], &one[..]);
        negate_s(&mut sig);
        assert_eq!(&sig[32..], &n_minus_1[..]);
        negate_s(&mut sig);
        assert_eq!(&sig[32..], &one[..]);
    }
}
