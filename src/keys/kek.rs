//! The key-encryption key (KEK) that seals every private signing key (AES-256-GCM, `ring`).
//! A trait so a KMS-backed source can replace the default file source.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::KeyError;

/// Seals and opens private key material. `aad` binds a ciphertext to the row it belongs to, so a
/// sealed key copied onto another row does not open.
pub trait KekSource: Send + Sync + 'static {
    /// A stable, non-secret identifier of the KEK (stored beside each sealed key).
    fn id(&self) -> &str;
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError>;
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// A 256-bit KEK read from a file (base64, mode 0600).
pub struct FileKek {
    key: LessSafeKey,
    id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for FileKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKek").field("id", &self.id).finish()
    }
}

impl FileKek {
    pub fn from_bytes(bytes: &[u8]) -> Result<FileKek, KeyError> {
        if bytes.len() != 32 {
            return Err(KeyError::Kek(format!(
                "must be 32 bytes, found {}",
                bytes.len()
            )));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let id = format!("file:{}", hex(&digest.as_ref()[..8]));
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError::Kek("bad key".into()))?,
        );
        Ok(FileKek {
            key,
            id,
            rng: SystemRandom::new(),
        })
    }

    /// Reads the KEK file. Never creates one: see [`FileKek::create`].
    pub fn load(path: &Path) -> Result<FileKek, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KeyError::Kek(format!("cannot read {}: {e}", path.display())))?;
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            KeyError::Kek(format!(
                "{} does not hold base64 key material",
                path.display()
            ))
        })?;
        Self::from_bytes(&bytes)
    }

    /// Writes a fresh random KEK to `path` with mode 0600; fails if the file exists.
    pub fn create(path: &Path) -> Result<FileKek, KeyError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Kek("no randomness".into()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| KeyError::Kek(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .map_err(|e| KeyError::Kek(format!("cannot create {}: {e}", path.display())))?;
        file.write_all(format!("{}\n", STANDARD.encode(bytes)).as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| KeyError::Kek(format!("cannot write {}: {e}", path.display())))?;
        Self::from_bytes(&bytes)
    }
}

impl KekSource for FileKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| KeyError::Kek("no randomness".into()))?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| KeyError::Kek("seal failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(KeyError::Malformed("sealed key too short".into()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| KeyError::Malformed("bad nonce".into()))?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| KeyError::Unseal(String::from_utf8_lossy(aad).into_owned()))?;
        Ok(plain.to_vec())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let kek = FileKek::from_bytes(&[7u8; 32]).expect("kek");
        let sealed = kek.seal(b"realm/kid1", b"secret key").expect("seal");
        assert!(!sealed.windows(10).any(|w| w == b"secret key"));
        assert_eq!(
            kek.open(b"realm/kid1", &sealed).expect("open"),
            b"secret key"
        );
        assert!(kek.open(b"realm/kid2", &sealed).is_err());
        let other = FileKek::from_bytes(&[8u8; 32]).expect("kek");
        assert!(other.open(b"realm/kid1", &sealed).is_err());
        assert_ne!(kek.id(), other.id());
    }

    #[test]
    fn created_file_is_private_and_loads() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("keys/kek");
        let made = FileKek::create(&path).expect("create");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(FileKek::load(&path).expect("load").id(), made.id());
        assert!(FileKek::create(&path).is_err(), "never overwrites");
    }
}
