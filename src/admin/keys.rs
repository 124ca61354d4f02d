//! KEK rotation: every sealed private key and every user's TOTP secret re-encrypted under a new
//! KEK in one transaction.

use serde_json::json;

use super::AdminError;
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::keys::{KekSource, KeyError, key_aad};
use crate::store::{Resealed, ResealedTotp, Store};

/// Returns how many signing keys and TOTP secrets were re-encrypted. `old` opens what is sealed now (a
/// ring: the node's KEK and its previous ones); keys already under `new` are left as they are, so
/// a rotation interrupted or run twice is finished by running it again.
pub async fn rotate_kek(
    store: &dyn Store,
    old: &dyn KekSource,
    new: &dyn KekSource,
    actor: &str,
    now: UnixTime,
) -> Result<(usize, usize), AdminError> {
    let mut resealed = Vec::new();
    for k in store.all_keys().await? {
        if k.kek_id == new.id() {
            continue;
        }
        if !old.can_open(&k.kek_id) {
            return Err(KeyError::WrongKek {
                kid: k.kid,
                kek_id: old.id().to_owned(),
                sealed_under: k.kek_id,
            }
            .into());
        }
        let aad = key_aad(&k.realm, &k.kid);
        let plain = old.open(&aad, &k.private_sealed)?;
        resealed.push(Resealed {
            private_sealed: new.seal(&aad, &plain)?,
            kek_id: new.id().to_owned(),
            realm: k.realm,
            kid: k.kid,
        });
    }
    // TOTP secrets carry no KEK id: each opens with the new KEK already, or with the old ring.
    let mut totps = Vec::new();
    for (realm, user_id, sealed) in store.totp_secrets().await? {
        let aad = crate::identity::totp::aad(&realm, &user_id);
        if new.open(&aad, &sealed).is_ok() {
            continue;
        }
        let plain = old.open(&aad, &sealed)?;
        totps.push(ResealedTotp {
            new: new.seal(&aad, &plain)?,
            old: sealed,
            realm,
            user_id,
        });
    }
    // Each realm's PII key, as the TOTP secrets.
    let mut pii_keys = Vec::new();
    for (realm, sealed) in store.realm_pii_keys().await? {
        let aad = crate::identity::pii::key_aad(&realm);
        if new.open(&aad, &sealed).is_ok() {
            continue;
        }
        let plain = old.open(&aad, &sealed)?;
        pii_keys.push(crate::store::ResealedPiiKey {
            new: new.seal(&aad, &plain)?,
            old: sealed,
            realm,
        });
    }
    let audit = [
        AuditDraft::new(now, None, "kek.rotated", actor).detail(json!({
            "from": old.id(),
            "to": new.id(),
            "keys": resealed.len(),
            "totp_secrets": totps.len(),
            "pii_keys": pii_keys.len(),
        })),
    ];
    let totp_done = store
        .reseal_keys(&resealed, &totps, &pii_keys, &audit)
        .await?;
    Ok((resealed.len(), totp_done))
}
