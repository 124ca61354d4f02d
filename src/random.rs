//! Random bytes from the operating system's CSPRNG: every secret, token and id Sigil makes.

use ring::rand::{SecureRandom, SystemRandom};

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // SystemRandom reads the OS CSPRNG; its failure means the machine cannot do cryptography.
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the OS random number generator failed");
    buf
}
