//! Checkpoints bind the chains of a deployment together. Every `audit_checkpoint_secs` a node
//! appends to its own chain an `audit.checkpoint` record naming every chain's head (chain, seq,
//! hash) at that moment, sealed with the KEK (AES-256-GCM over an empty message: a MAC only the
//! holder of the KEK can make). `sigil audit verify` checks each chain, then that every head a
//! checkpoint names is the row at that seq in that chain, and the seal. Deleting a node's chain,
//! truncating it behind its own head, or rewriting it from genesis contradicts the checkpoints the
//! other nodes wrote; forging a checkpoint needs the KEK.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AuditDraft;
use crate::clock::UnixTime;
use crate::keys::{KekSource, KeyError};

pub const KIND: &str = "audit.checkpoint";
const AAD_PREFIX: &str = "sigil audit checkpoint v1\n";

/// One chain's head as a checkpoint names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub chain: String,
    pub seq: i64,
    pub hash: String,
}

fn aad(heads: &[Head]) -> Vec<u8> {
    let canonical = serde_json::to_string(heads).unwrap_or_default();
    format!("{AAD_PREFIX}{canonical}").into_bytes()
}

/// The checkpoint record for these heads, sealed with `kek`.
pub fn draft(
    heads: &[(String, i64, String)],
    kek: &dyn KekSource,
    now: UnixTime,
) -> Result<AuditDraft, KeyError> {
    let heads: Vec<Head> = heads
        .iter()
        .map(|(chain, seq, hash)| Head {
            chain: chain.clone(),
            seq: *seq,
            hash: hash.clone(),
        })
        .collect();
    let mac = kek.seal(&aad(&heads), b"")?;
    Ok(AuditDraft::new(now, None, KIND, "system").detail(json!({
        "heads": heads,
        "kek_id": kek.id(),
        "mac": B64.encode(mac),
    })))
}

/// The anchor of a checkpoint: its sealed heads as one JSON line, with the time, for a file
/// outside the database (`audit_anchor_file`). A database owner can drop the triggers and cut
/// every chain back to a consistent earlier state (rows and heads together), which no record
/// inside the database can reveal; the anchors, kept elsewhere, name heads that then no longer
/// exist. Forging one needs the KEK.
pub fn anchor_line(draft: &AuditDraft, now: UnixTime) -> String {
    let mut v = draft.detail.clone();
    v["ts"] = json!(now);
    v.to_string()
}

/// Appends one anchor line and flushes it to disk.
pub async fn append_anchor(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    f.write_all(format!("{line}\n").as_bytes()).await?;
    f.sync_data().await
}

/// Sends one anchor line to an HTTP sink (`audit_anchor_url`) as a JSON body, with the bearer
/// token if one is configured. Any status but 2xx is an error. The outbound client's timeouts
/// apply and it follows no redirect.
pub async fn post_anchor(
    client: &reqwest::Client,
    url: &url::Url,
    token: Option<&str>,
    line: &str,
) -> Result<(), String> {
    let mut req = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(line.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("the sink answered {}", r.status())),
        Err(e) => Err(e.without_url().to_string()),
    }
}

/// What a checkpoint claims, and whether its seal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub heads: Vec<Head>,
    /// `Some(true)`: sealed by this KEK; `Some(false)`: the seal does not hold; `None`: sealed by
    /// another KEK (rotated since), so not checked here.
    pub sealed: Option<bool>,
}

/// Reads a checkpoint row's detail; `Err` if it is not a checkpoint's shape.
pub fn claims(detail: &str, kek: Option<&dyn KekSource>) -> Result<Claims, String> {
    let v: Value = serde_json::from_str(detail).map_err(|e| format!("not JSON: {e}"))?;
    let heads: Vec<Head> =
        serde_json::from_value(v["heads"].clone()).map_err(|e| format!("no heads list: {e}"))?;
    let mac = v["mac"]
        .as_str()
        .and_then(|m| B64.decode(m).ok())
        .ok_or("no seal")?;
    let sealed = match kek {
        Some(k) if v["kek_id"].as_str().is_some_and(|id| k.can_open(id)) => {
            Some(k.open(&aad(&heads), &mac).is_ok_and(|m| m.is_empty()))
        }
        _ => None,
    };
    Ok(Claims { heads, sealed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FileKek;

    fn kek(byte: u8) -> FileKek {
        FileKek::from_bytes(&[byte; 32]).expect("kek")
    }

    #[test]
    fn a_checkpoint_is_sealed_by_the_kek_and_binds_its_heads() {
        let heads = vec![
            ("main".to_owned(), 7, "aa".repeat(32)),
            ("node-b".to_owned(), 3, "bb".repeat(32)),
        ];
        let k = kek(1);
        let d = draft(&heads, &k, 1_800_000_000).expect("sealed");
        assert_eq!(d.kind, KIND);
        let detail = d.detail.to_string();
        let c = claims(&detail, Some(&k)).expect("claims");
        assert_eq!(c.sealed, Some(true));
        assert_eq!(c.heads.len(), 2);
        assert_eq!(c.heads[1].chain, "node-b");
        // Without the KEK the seal is not judged.
        assert_eq!(claims(&detail, None).expect("claims").sealed, None);
        // A head changed after sealing, or a seal made with another key: the seal does not hold.
        let mut forged: Value = serde_json::from_str(&detail).expect("json");
        forged["heads"][1]["seq"] = json!(2);
        let c = claims(&forged.to_string(), Some(&k)).expect("claims");
        assert_eq!(c.sealed, Some(false), "a head changed after sealing");
        let other = kek(2);
        let mut resealed: Value = serde_json::from_str(&detail).expect("json");
        resealed["kek_id"] = json!(k.id());
        resealed["mac"] = serde_json::from_str::<Value>(
            &draft(&heads, &other, 1_800_000_000)
                .expect("sealed")
                .detail
                .to_string(),
        )
        .expect("json")["mac"]
            .clone();
        let c = claims(&resealed.to_string(), Some(&k)).expect("claims");
        assert_eq!(
            c.sealed,
            Some(false),
            "sealed by a key that is not this KEK"
        );
        assert!(claims("{}", Some(&k)).is_err());
    }
}
