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
    /// Whether values sealed under the KEK with this id open here.
    fn can_open(&self, id: &str) -> bool {
        id == self.id()
    }
}

/// The KEK a node seals with, and the KEKs it may still open with: what lets a KEK rotation roll
/// out with every node running. First every node gets the new KEK as a previous one (it opens
/// what others seal with it); then every node seals with the new one and keeps the old as
/// previous; then `sigil kek rotate` re-seals everything under the new one; then the old one is
/// dropped. At no step does any node meet a value it cannot open.
pub struct KekRing {
    primary: Box<dyn KekSource>,
    previous: Vec<Box<dyn KekSource>>,
}

impl KekRing {
    pub fn new(primary: Box<dyn KekSource>, previous: Vec<Box<dyn KekSource>>) -> KekRing {
        KekRing { primary, previous }
    }

    /// Every KEK id this ring opens, the sealing one first.
    pub fn ids(&self) -> Vec<&str> {
        std::iter::once(self.primary.id())
            .chain(self.previous.iter().map(|k| k.id()))
            .collect()
    }
}

impl KekSource for KekRing {
    fn id(&self) -> &str {
        self.primary.id()
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.primary.seal(aad, plaintext)
    }

    /// The sealing KEK first, then each previous one (a wrong key fails GCM's tag at once).
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let first = self.primary.open(aad, sealed);
        if first.is_ok() {
            return first;
        }
        self.previous
            .iter()
            .find_map(|k| k.open(aad, sealed).ok())
            .ok_or_else(|| {
                first
                    .err()
                    .unwrap_or_else(|| KeyError::Kek("no KEK opens it".into()))
            })
    }

    fn can_open(&self, id: &str) -> bool {
        self.ids().contains(&id)
    }
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
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        Self::with_id(bytes, format!("file:{}", hex(&digest.as_ref()[..8])))
    }

    /// A KEK of these 32 bytes known by `id` (a KMS data key, a key from Secrets Manager).
    pub fn with_id(bytes: &[u8], id: String) -> Result<FileKek, KeyError> {
        if bytes.len() != 32 {
            return Err(KeyError::Kek(format!(
                "must be 32 bytes, found {}",
                bytes.len()
            )));
        }
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

    /// Writes a fresh random KEK to `path` with mode 0600 (its directory, if created, 0700); fails
    /// if the file exists. The key is written in full to a temporary file beside `path` and then
    /// hard-linked into place, so a process starting at the same moment never reads half a KEK.
    pub fn create(path: &Path) -> Result<FileKek, KeyError> {
        match Self::try_create(path) {
            Ok(kek) => Ok(kek),
            Err(CreateError::Exists) => Err(KeyError::Kek(format!(
                "cannot create {}: it already exists",
                path.display()
            ))),
            Err(CreateError::Other(e)) => Err(e),
        }
    }

    /// Creates the KEK file, or loads it if another process created it first. Returns the KEK and
    /// whether this call created it.
    pub fn create_or_load(path: &Path) -> Result<(FileKek, bool), KeyError> {
        match Self::try_create(path) {
            Ok(kek) => Ok((kek, true)),
            Err(CreateError::Exists) => Ok((Self::load(path)?, false)),
            Err(CreateError::Other(e)) => Err(e),
        }
    }

    fn try_create(path: &Path) -> Result<FileKek, CreateError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Kek("no randomness".into()))?;
        if let Some(dir) = path.parent() {
            crate::private_files::create_dir(dir)
                .map_err(|e| KeyError::Kek(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut suffix = [0u8; 8];
        SystemRandom::new()
            .fill(&mut suffix)
            .map_err(|_| KeyError::Kek("no randomness".into()))?;
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp-{}", hex(&suffix)));
        let tmp = std::path::PathBuf::from(tmp_name);
        let written = crate::private_files::create_new_options()
            .open(&tmp)
            .map_err(|e| KeyError::Kek(format!("cannot create {}: {e}", tmp.display())))
            .and_then(|mut file| {
                file.write_all(format!("{}\n", STANDARD.encode(bytes)).as_bytes())
                    .and_then(|_| file.sync_all())
                    .map_err(|e| KeyError::Kek(format!("cannot write {}: {e}", tmp.display())))
            });
        // Publishing by hard link fails, rather than overwrites, when the KEK already exists.
        let linked = written.map_err(CreateError::from).and_then(|()| {
            std::fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    CreateError::Exists
                } else {
                    KeyError::Kek(format!("cannot create {}: {e}", path.display())).into()
                }
            })
        });
        let _ = std::fs::remove_file(&tmp);
        linked?;
        Ok(Self::from_bytes(&bytes)?)
    }
}

/// Why a KEK file was not created: it exists (someone else made it), or something failed.
enum CreateError {
    Exists,
    Other(KeyError),
}

impl From<KeyError> for CreateError {
    fn from(e: KeyError) -> Self {
        CreateError::Other(e)
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
        let (loaded, created) = FileKek::create_or_load(&path).expect("load");
        assert!(!created);
        assert_eq!(loaded.id(), made.id());
        // Nothing but the KEK is left in its directory.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["kek"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("keys"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
