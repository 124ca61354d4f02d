//! TOTP (RFC 6238, SHA-1, 6 digits, 30 s) with 160-bit secrets (authenticator libraries refuse
//! secrets under 112 bits). A code is accepted within ±1 step and once only: the store records
//! the last step used per user.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

pub const STEP: i64 = 30;

pub fn new_secret() -> Vec<u8> {
    crate::random::random_bytes::<20>().to_vec()
}

fn totp(secret: &[u8]) -> Option<TOTP> {
    TOTP::new(Algorithm::SHA1, 6, 1, STEP as u64, secret.to_vec()).ok()
}

/// Base32 of the secret, for manual entry.
pub fn secret_base32(secret: &[u8]) -> String {
    base32_encode(secret)
}

fn base32_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes RFC 4648 base32 (no padding), as authenticator apps take it.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

/// `otpauth://` URL for authenticator apps.
pub fn otpauth_url(secret: &[u8], issuer: &str, account: &str) -> String {
    let label = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period=30",
        label(issuer),
        label(account),
        base32_encode(secret),
        label(issuer)
    )
}

/// The step `code` is valid for at `now` (±1 step), compared in constant time.
pub fn matching_step(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret)?;
    let mut found = None;
    for delta in [-1i64, 0, 1] {
        let at = now + delta * STEP;
        if at < 0 {
            continue;
        }
        let expected = t.generate(at as u64);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(at.div_euclid(STEP));
        }
    }
    found
}

/// The current code (tests and the enrolment page's self-check).
pub fn code_at(secret: &[u8], now: i64) -> String {
    totp(secret)
        .map(|t| t.generate(now.max(0) as u64))
        .unwrap_or_default()
}

/// The associated data a user's TOTP secret is sealed with: bound to the realm and the user.
pub fn aad(realm: &str, user_id: &str) -> Vec<u8> {
    format!("sigil-totp/{realm}/{user_id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector_and_window() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", T = 59 -> 94287082 (8 digits);
        // 6 digits are its last six.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, 59), "287082");
        assert_eq!(matching_step(secret, "287082", 59), Some(1));
        assert_eq!(
            matching_step(secret, "287082", 59 + 30),
            Some(1),
            "one step late is fine"
        );
        assert_eq!(
            matching_step(secret, "287082", 59 + 61),
            None,
            "two steps late is not"
        );
        assert_eq!(matching_step(secret, "28708", 59), None);
        assert_eq!(matching_step(secret, "abcdef", 59), None);
    }

    #[test]
    fn base32_and_url() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("MZXW6YTBOI").as_deref(), Some(&b"foobar"[..]));
        let url = otpauth_url(&new_secret(), "Bank Staff", "alice@bank.example");
        assert!(url.starts_with("otpauth://totp/Bank%20Staff:alice%40bank%2Eexample?secret="));
    }
}
