//! High-sensitivity personal data, encrypted column by column: a realm declares its attributes
//! with a classification (`internal` or `pii_high`); a `pii_high` value is stored AES-256-GCM
//! encrypted under the realm's PII key (bound to realm, user id and attribute name as associated
//! data), beside a keyed blind index (HMAC-SHA256) for exact lookups. The PII key is 32 random
//! bytes sealed by the KEK; the encryption and index keys are derived from it with HKDF, so the
//! index key never decrypts and the encryption key never indexes.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::{hkdf, hmac};

use crate::keys::kek::hex;
use crate::keys::{KekSource, KeyError};
use crate::store::{PiiSealer, Store, StoreError};

/// How an attribute is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// In the user's attribute JSON, as before.
    Internal,
    /// Encrypted in its own row, with a blind index; never in logs, errors or audit details.
    PiiHigh,
}

impl Classification {
    pub fn parse(s: &str) -> Option<Classification> {
        match s {
            "internal" => Some(Classification::Internal),
            "pii_high" => Some(Classification::PiiHigh),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Internal => "internal",
            Classification::PiiHigh => "pii_high",
        }
    }
}

/// What an admin view shows instead of a `pii_high` value.
pub const REDACTED: &str = "[pii_high]";

/// The associated data of a realm's sealed PII key.
pub fn key_aad(realm: &str) -> Vec<u8> {
    format!("sigil-pii-key/{realm}").into_bytes()
}

fn value_aad(realm: &str, user_id: &str, name: &str) -> Vec<u8> {
    format!("sigil-pii/{realm}/{user_id}/{name}").into_bytes()
}

/// A realm's PII key, opened.
pub struct PiiKey {
    enc: LessSafeKey,
    index: hmac::Key,
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl PiiKey {
    pub fn from_secret(secret: &[u8]) -> Result<PiiKey, KeyError> {
        if secret.len() != 32 {
            return Err(KeyError::Malformed("PII key must be 32 bytes".into()));
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"sigil-pii-v1").extract(secret);
        let derive = |info: &'static [u8]| -> Result<[u8; 32], KeyError> {
            let mut out = [0u8; 32];
            let infos = [info];
            prk.expand(&infos, Len(32))
                .and_then(|okm| okm.fill(&mut out))
                .map_err(|_| KeyError::Malformed("PII key derivation".into()))?;
            Ok(out)
        };
        let enc = derive(b"encrypt")?;
        let index = derive(b"blind-index")?;
        Ok(PiiKey {
            enc: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &enc)
                    .map_err(|_| KeyError::Malformed("PII key".into()))?,
            ),
            index: hmac::Key::new(hmac::HMAC_SHA256, &index),
        })
    }

    /// The blind index of `value` for attribute `name`: equal values of one attribute in one
    /// realm index alike; nothing about the value can be read from it without the key.
    pub fn index(&self, name: &str, value: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.index);
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        hex(ctx.sign().as_ref())
    }

    pub fn open(
        &self,
        realm: &str,
        user_id: &str,
        name: &str,
        sealed: &[u8],
    ) -> Result<String, KeyError> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(KeyError::Malformed("sealed value too short".into()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| KeyError::Malformed("bad nonce".into()))?;
        let mut buf = rest.to_vec();
        let plain = self
            .enc
            .open_in_place(nonce, Aad::from(value_aad(realm, user_id, name)), &mut buf)
            .map_err(|_| KeyError::Unseal(format!("attribute {name} of a user in {realm}")))?;
        String::from_utf8(plain.to_vec())
            .map_err(|_| KeyError::Malformed("attribute is not text".into()))
    }
}

impl PiiSealer for PiiKey {
    fn seal(
        &self,
        realm: &str,
        user_id: &str,
        name: &str,
        value: &str,
    ) -> Result<(Vec<u8>, String), StoreError> {
        let nonce: [u8; NONCE_LEN] = crate::random::random_bytes();
        let mut buf = value.as_bytes().to_vec();
        self.enc
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(value_aad(realm, user_id, name)),
                &mut buf,
            )
            .map_err(|_| StoreError::Crypto("PII seal failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok((out, self.index(name, value)))
    }
}

/// The realm's PII key: opened from the database, or (with `create`) made, sealed and stored if
/// the realm has none (two writers at once: the first one stored wins, and both use it).
pub async fn realm_key(
    store: &dyn Store,
    kek: &dyn KekSource,
    realm: &str,
    create: bool,
    now: i64,
) -> Result<Option<PiiKey>, PiiError> {
    let aad = key_aad(realm);
    if let Some(sealed) = store.realm_pii_key(realm).await? {
        return Ok(Some(PiiKey::from_secret(&kek.open(&aad, &sealed)?)?));
    }
    if !create {
        return Ok(None);
    }
    let secret: [u8; 32] = crate::random::random_bytes();
    store
        .insert_realm_pii_key(realm, &kek.seal(&aad, &secret)?, now)
        .await?;
    let sealed = store
        .realm_pii_key(realm)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("PII key of realm {realm}")))?;
    Ok(Some(PiiKey::from_secret(&kek.open(&aad, &sealed)?)?))
}

#[derive(Debug, thiserror::Error)]
pub enum PiiError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The `pii_high` values of one user the caller asks for by name, decrypted (for the claims a
/// realm maps them to). Values that fail to open are left out, and logged by name only.
pub async fn values_for_claims(
    store: &dyn Store,
    kek: &dyn KekSource,
    realm: &str,
    user_id: &str,
    names: &[&str],
) -> Result<Vec<(String, String)>, PiiError> {
    let rows = store.user_pii(realm, user_id).await?;
    let wanted: Vec<_> = rows
        .into_iter()
        .filter(|(n, _)| names.contains(&n.as_str()))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let Some(key) = realm_key(store, kek, realm, false, 0).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, sealed) in wanted {
        match key.open(realm, user_id, &name, &sealed) {
            Ok(v) => out.push((name, v)),
            Err(_) => {
                tracing::error!(realm, attribute = %name, "a pii_high attribute failed to decrypt")
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_are_bound_to_realm_user_and_name_and_indexed_by_key() {
        let key = PiiKey::from_secret(&[3u8; 32]).expect("key");
        let (sealed, index) = key.seal("r", "u1", "tax_id", "123-45-6789").expect("seal");
        assert!(!sealed.windows(11).any(|w| w == b"123-45-6789"));
        assert_eq!(
            key.open("r", "u1", "tax_id", &sealed).expect("open"),
            "123-45-6789"
        );
        for (realm, user, name) in [
            ("r2", "u1", "tax_id"),
            ("r", "u2", "tax_id"),
            ("r", "u1", "party_id"),
        ] {
            assert!(
                key.open(realm, user, name, &sealed).is_err(),
                "{realm} {user} {name}"
            );
        }
        // The index: the same for the same value, different per attribute and per key.
        let (again, index2) = key.seal("r", "u2", "tax_id", "123-45-6789").expect("seal");
        assert_ne!(again, sealed, "a fresh nonce each time");
        assert_eq!(index, index2);
        assert_ne!(index, key.index("other", "123-45-6789"));
        let other = PiiKey::from_secret(&[4u8; 32]).expect("key");
        assert_ne!(index, other.index("tax_id", "123-45-6789"));
        assert!(other.open("r", "u1", "tax_id", &sealed).is_err());
    }
}
