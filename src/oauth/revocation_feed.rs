//! `GET /realms/{realm}/revocations?after=CURSOR`: what stopped being valid, for resource servers
//! that validate tokens themselves (the validator crate polls it). Only clients registered with
//! `--introspect` may read it, authenticated by their registered method. The answer is a JWS
//! (`typ: revocations+jwt`) signed by the realm's key and addressed to the caller (`aud`), naming
//! the cursor it answers (`after`), so a page cannot be forged, altered, replayed to another
//! resource server or passed off as the answer to another cursor.
//!
//! Entries: `jti` (a revoked access token), `sid` (an ended session: every token carrying it),
//! `sub` (a disabled user: tokens with that subject issued before `not_before`) and `client` (a
//! disabled client: its tokens issued before `not_before`), each kept until no token it can affect
//! is unexpired. Order is by sequence, and a realm's entries commit in sequence order (on
//! PostgreSQL their writers hold a per-realm advisory lock from before their first sequence number
//! to commit: `PgStore::lock_revocations`). As a second guard, `next` (the cursor to send next)
//! stops at the last entry older than [`SETTLE_SECS`]: newer ones come again in the next page and
//! the validator deduplicates them.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};

use super::caller;
use super::outcome::Refusal;
use super::{ErrorCode, OAuthError};
use crate::state::AppState;
use crate::tls::ConnTls;

const REFUSED: &str = "revocations.refused";
/// The most entries in one page; a validator asks again from `next` while `more` is true.
pub const PAGE_LIMIT: i64 = 20_000;
/// Entries younger than this may still be joined by lower sequence numbers committing late.
pub const SETTLE_SECS: i64 = 10;
/// The media type of a feed page.
pub const TYP: &str = "revocations+jwt";

pub async fn feed(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    conn: Option<Extension<ConnTls>>,
    crate::oidc::RealmPath(realm_name): crate::oidc::RealmPath,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let c = match caller::resource_server(
        &state,
        &realm_name,
        peer,
        conn,
        &headers,
        uri.query(),
        REFUSED,
        (
            "this client may not read the revocation feed",
            "feed_not_allowed",
        ),
    )
    .await
    {
        Ok(c) => c,
        Err(res) => return res,
    };
    let after = match c.params.get("after").map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) if n >= 0 => n,
        Some(_) => {
            let refusal = Refusal::new(
                OAuthError::invalid_request("after must be a non-negative integer"),
                "bad_cursor",
            );
            return c.refuse(&state, refusal).await;
        }
    };
    let name = &c.realm.record.name;
    let settled = c.now - SETTLE_SECS;
    let limit = PAGE_LIMIT as usize;
    // The settled bulk from memory, already serialised; the rest from the database.
    let snapshot = match state
        .feed_snapshots
        .get(state.store.as_ref(), name, c.now, settled)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "revocation feed unavailable");
            return OAuthError::store_unavailable().into_response();
        }
    };
    let range = snapshot.range(after, limit);
    let cached = range.len();
    let last_cached = snapshot.last_seq(&range);
    let tail_after = after.max(snapshot.upto);
    let tail = match state
        .store
        .revocations_after(name, tail_after, c.now, (limit - cached) as i64 + 1)
        .await
    {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "revocation feed unavailable");
            return OAuthError::store_unavailable().into_response();
        }
    };
    let more = snapshot.more_after(&range) || cached + tail.len() > limit;
    let tail = &tail[..tail.len().min(limit - cached)];
    let next = tail
        .iter()
        .take_while(|e| e.created_at <= settled)
        .last()
        .map(|e| e.seq)
        .or(last_cached)
        .unwrap_or(after);
    let head = FeedHead {
        iss: &c.realm.issuer,
        aud: &c.client.client.client_id,
        iat: c.now,
        after,
        next,
        more,
    };
    let page = head.with_entries(|json| {
        snapshot.write(&range, json);
        for (n, e) in tail.iter().enumerate() {
            if cached > 0 || n > 0 {
                json.push(b',');
            }
            // Plain strings and integers: serialising cannot fail.
            let _ = serde_json::to_writer(&mut *json, e);
        }
    });
    let signed = match page.and_then(|json| {
        c.realm
            .signing
            .sign_typed(TYP, &json)
            .map_err(|e| e.to_string())
    }) {
        Ok(jws) => jws,
        Err(e) => {
            tracing::error!(error = %e, "revocation feed page could not be signed");
            return OAuthError::new(ErrorCode::ServerError, "the feed could not be signed")
                .into_response();
        }
    };
    let mut res = signed.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/revocations+jwt"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A page's fields besides its entries; the page is this object with `entries` added.
#[derive(serde::Serialize)]
struct FeedHead<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    after: i64,
    next: i64,
    more: bool,
}

impl FeedHead<'_> {
    /// The page's JSON: this object with `"entries": [ ... ]` as its last member, whose
    /// comma-separated objects `entries` writes.
    fn with_entries(&self, entries: impl FnOnce(&mut Vec<u8>)) -> Result<Vec<u8>, String> {
        let mut json = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        if json.pop() != Some(b'}') {
            return Err("a page head is not a JSON object".into());
        }
        json.extend_from_slice(br#","entries":["#);
        entries(&mut json);
        json.extend_from_slice(b"]}");
        Ok(json)
    }
}
