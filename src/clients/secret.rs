//! Client secrets. Sigil generates them (256 random bits), so they cannot be guessed and need no
//! slow hash: the stored verifier is `SHA-256(salt || secret)` with a per-client 128-bit salt,
//! compared in constant time. Argon2 is kept for human-chosen secrets (passwords), not these.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use subtle::ConstantTimeEq;

/// Length of a generated secret: 32 bytes, base64url without padding.
pub const SECRET_LEN: usize = 43;

/// A freshly generated secret and what is stored for it.
pub struct NewSecret {
    /// Shown once to the operator, never stored.
    pub secret: String,
    pub salt: Vec<u8>,
    pub verifier: Vec<u8>,
}

pub use crate::random::random_bytes;

pub fn generate() -> NewSecret {
    let secret = B64.encode(random_bytes::<32>());
    let salt = random_bytes::<16>().to_vec();
    let verifier = verifier(&salt, &secret).to_vec();
    NewSecret {
        secret,
        salt,
        verifier,
    }
}

/// A verifier for a secret the operator chose (read from a file), with a fresh salt.
pub fn given(secret: &str) -> NewSecret {
    let salt = random_bytes::<16>().to_vec();
    let verifier = verifier(&salt, secret).to_vec();
    NewSecret {
        secret: secret.to_owned(),
        salt,
        verifier,
    }
}

pub fn verifier(salt: &[u8], secret: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt);
    ctx.update(secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Constant-time check of `presented` against a stored salt and verifier.
pub fn matches(salt: &[u8], stored: &[u8], presented: &str) -> bool {
    bool::from(verifier(salt, presented).ct_eq(stored))
}

/// Burns the same work as [`matches`] for a client that does not exist, so an unknown client id
/// and a wrong secret cost the same.
pub fn burn(presented: &str) {
    const DUMMY_SALT: [u8; 16] = [0x5a; 16];
    const DUMMY_VERIFIER: [u8; 32] = [0xa5; 32];
    std::hint::black_box(matches(&DUMMY_SALT, &DUMMY_VERIFIER, presented));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_verifies_and_others_do_not() {
        let s = generate();
        assert_eq!(s.secret.len(), SECRET_LEN);
        assert!(matches(&s.salt, &s.verifier, &s.secret));
        assert!(!matches(&s.salt, &s.verifier, "wrong"));
        let mut almost = s.secret.clone();
        almost.pop();
        assert!(!matches(&s.salt, &s.verifier, &almost));
        assert_ne!(generate().secret, s.secret);
    }
}
