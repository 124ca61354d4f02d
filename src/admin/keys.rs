//! KEK rotation: every sealed private key re-encrypted under a new KEK in one transaction.

use serde_json::json;

use super::AdminError;
use crate::audit::AuditDraft;
use crate::clock::UnixTime;
use crate::keys::{KekSource, KeyError, key_aad};
use crate::store::{Resealed, Store};

/// Returns how many keys were re-encrypted.
pub async fn rotate_kek(
    store: &dyn Store,
    old: &dyn KekSource,
    new: &dyn KekSource,
    actor: &str,
    now: UnixTime,
) -> Result<usize, AdminError> {
    let mut resealed = Vec::new();
    for k in store.all_keys().await? {
        if k.kek_id != old.id() {
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
    let audit = [
        AuditDraft::new(now, None, "kek.rotated", actor).detail(json!({
            "from": old.id(),
            "to": new.id(),
            "keys": resealed.len(),
        })),
    ];
    store.reseal_keys(&resealed, &audit).await?;
    Ok(resealed.len())
}
