//! The admin REST API through real HTTP with tokens from Sigil itself: scopes per realm, the
//! admin realm out of reach of realm admins, `If-Match` under concurrent writers, tokens that no
//! longer stand, problem details, and the audit actor.

use serde_json::{Value, json};
use sigil::keys::Alg;

use crate::helpers::{Backend, Client, TestApp, spawn_app_with};
use crate::jose::EcKey;

async fn admin_app(backend: Backend) -> TestApp {
    // A long cache, as in production (tests default to none): changes made through the API must
    // hold at once on this node all the same.
    let app = spawn_app_with(backend, None, |c| {
        c.admin_realm = Some("admin".into());
        c.cache_ttl_secs = 60;
    })
    .await;
    app.create_realm("admin", Alg::ES256).await;
    app.create_realm("customers", Alg::ES256).await;
    app.create_realm("staff", Alg::ES256).await;
    app
}

async fn admin_client(app: &TestApp, id: &str, scopes: &str) -> Client {
    app.create_client("admin", id, scopes, "sigil-admin").await
}

/// `n` POSTs of `path` at once with `token`; their statuses, sorted.
pub(crate) async fn post_at_once(app: &TestApp, path: &str, token: &str, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (http, url, token) = (
            app.http.clone(),
            format!("{}{path}", app.base),
            token.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("post")
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    statuses.sort();
    statuses
}

pub(crate) async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(m) = if_match {
        req = req.header("if-match", m);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{path}: {text}"
        );
        assert_eq!(body["status"], status, "{text}");
    }
    (status, headers, body)
}

use reqwest::Method;

async fn scopes_reach_only_their_realm_scenario(app: &TestApp) {
    let ops = admin_client(
        app,
        "ops-customers",
        "sigil:admin:customers sigil:admin:admin",
    )
    .await;
    let tok = app.token("admin", &ops, None).await;
    let new_client = json!({"client_id": "svc", "scope": "tx:post:ach", "audience": "ledger"});

    let (s, h, made) = call(
        app,
        Method::POST,
        "/admin/realms/customers/clients",
        &tok,
        Some(new_client.clone()),
        None,
    )
    .await;
    assert_eq!(s, 201, "{made}");
    assert_eq!(h["etag"], format!("\"v{}\"", made["version"]).as_str());
    assert!(
        made["client_secret"]
            .as_str()
            .is_some_and(|s| s.len() >= 32)
    );
    // The secret it was given works at the token endpoint.
    let svc = Client {
        id: "svc".into(),
        secret: made["client_secret"].as_str().unwrap_or_default().into(),
    };
    app.token("customers", &svc, None).await;

    // Another realm: 403 INSUFFICIENT_SCOPE, for reads and writes, and nothing is written.
    for (m, path, body) in [
        (
            Method::POST,
            "/admin/realms/staff/clients",
            Some(new_client.clone()),
        ),
        (Method::GET, "/admin/realms/staff/clients", None),
        (Method::GET, "/admin/realms/staff", None),
        (
            Method::POST,
            "/admin/realms/staff/keys/rotate",
            Some(json!({})),
        ),
        (
            Method::POST,
            "/admin/realms",
            Some(json!({"name": "other"})),
        ),
        (Method::GET, "/admin/audit", None),
        // `sigil:admin:admin` gives nothing in the admin realm: a client made there could be
        // given sigil:admin.
        (
            Method::POST,
            "/admin/realms/admin/clients",
            Some(json!({"client_id": "root", "scope": "sigil:admin", "audience": "sigil-admin"})),
        ),
    ] {
        let (s, h, body) = call(app, m, path, &tok, body, None).await;
        assert_eq!(s, 403, "{path}: {body}");
        assert_eq!(body["error_code"], "INSUFFICIENT_SCOPE");
        assert!(
            h["www-authenticate"]
                .to_str()
                .unwrap_or("")
                .contains("insufficient_scope")
        );
    }
    assert!(
        app.store
            .client("staff", "svc")
            .await
            .expect("db")
            .is_none()
    );
    assert!(
        app.store
            .client("admin", "root")
            .await
            .expect("db")
            .is_none()
    );
    assert!(app.store.realm("other").await.expect("db").is_none());

    // The realm list shows only what the caller may read.
    let (s, _, page) = call(app, Method::GET, "/admin/realms", &tok, None, None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["customers"]);

    // The change is audited with the calling client as the actor.
    let rows = app.audit().await;
    let row = rows
        .iter()
        .find(|r| r.kind == "client.created" && r.subject.as_deref() == Some("svc"))
        .expect("audited");
    assert_eq!(row.actor, "client:ops-customers@admin");
    assert!(
        !row.detail
            .contains(made["client_secret"].as_str().unwrap_or("-"))
    );

    // A reader reads everything and changes nothing.
    let reader = admin_client(app, "auditor", "sigil:read").await;
    let rt = app.token("admin", &reader, None).await;
    assert_eq!(
        call(
            app,
            Method::GET,
            "/admin/realms/staff/keys",
            &rt,
            None,
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(app, Method::GET, "/admin/audit?limit=5", &rt, None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(app, Method::POST, "/admin/audit/verify", &rt, None, None)
            .await
            .2["status"],
        "intact"
    );
    assert_eq!(
        call(
            app,
            Method::POST,
            "/admin/realms/staff/groups",
            &rt,
            Some(json!({"name": "g", "scopes": "a"})),
            None
        )
        .await
        .0,
        403
    );
}
crate::on_every_backend_with!(
    scopes_reach_only_their_realm,
    scopes_reach_only_their_realm_scenario,
    admin_app
);

async fn tokens_that_do_not_qualify_are_refused_scenario(app: &TestApp) {
    // Audience, issuer: a customers token with the right scope and audience is another issuer's.
    let foreign = app
        .create_client("customers", "fake-admin", "sigil:admin", "sigil-admin")
        .await;
    let ft = app.token("customers", &foreign, None).await;
    // An admin-realm token for another audience.
    let wrong_aud = app
        .create_client("admin", "ledger-svc", "sigil:admin", "ledger")
        .await;
    let wt = app.token("admin", &wrong_aud, None).await;
    for tok in [ft.as_str(), wt.as_str(), "not-a-token", ""] {
        let (s, h, body) = call(app, Method::GET, "/admin/realms", tok, None, None).await;
        assert_eq!(s, 401, "{body}");
        assert!(h.contains_key("www-authenticate"));
        assert_eq!(body["error_code"], "INVALID_TOKEN");
    }

    // A token of a client disabled (or deleted) since is refused at once, not at its expiry.
    let root = admin_client(app, "root", "sigil:admin").await;
    let tok = app.token("admin", &root, None).await;
    assert_eq!(
        call(app, Method::GET, "/admin/realms", &tok, None, None)
            .await
            .0,
        200
    );
    sigil::admin::clients::set_enabled(
        app.store.as_ref(),
        "admin",
        "root",
        None,
        false,
        app.now(),
        "t",
    )
    .await
    .expect("disabled");
    let (s, _, body) = call(app, Method::GET, "/admin/realms", &tok, None, None).await;
    assert_eq!(s, 401, "{body}");

    // A revoked token (RFC 7009) is refused.
    let other = admin_client(app, "root2", "sigil:admin").await;
    let tok = app.token("admin", &other, None).await;
    let res = app
        .http
        .post(format!("{}/oauth2/revoke", app.issuer("admin")))
        .basic_auth(&other.id, Some(&other.secret))
        .form(&[("token", tok.as_str())])
        .send()
        .await
        .expect("revoke");
    assert_eq!(res.status(), 200);
    assert_eq!(
        call(app, Method::GET, "/admin/realms", &tok, None, None)
            .await
            .0,
        401
    );

    // A DPoP-bound admin token: needs its proof; as a plain bearer token it is refused.
    let key = EcKey::generate("k");
    let url = app.token_url("admin");
    let proof = key.dpop("POST", &url, app.now(), None);
    let res = app
        .http
        .post(&url)
        .basic_auth(&other.id, Some(&other.secret))
        .header("dpop", proof)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token");
    assert_eq!(res.status(), 200);
    let bound = res.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("at")
        .to_owned();
    assert_eq!(
        call(app, Method::GET, "/admin/realms", &bound, None, None)
            .await
            .0,
        401
    );
    let target = format!("{}/admin/realms", app.base);
    let ath = crate::jose::ath(&bound);
    let res = app
        .http
        .get(&target)
        .header("authorization", format!("DPoP {bound}"))
        .header("dpop", key.dpop("GET", &target, app.now(), Some(&ath)))
        .send()
        .await
        .expect("dpop call");
    assert_eq!(res.status(), 200);
}
crate::on_every_backend_with!(
    tokens_that_do_not_qualify_are_refused,
    tokens_that_do_not_qualify_are_refused_scenario,
    admin_app
);

async fn if_match_lets_exactly_one_of_many_writers_win_scenario(app: &TestApp) {
    let root = admin_client(app, "root", "sigil:admin").await;
    let tok = app.token("admin", &root, None).await;
    let (s, h, _) = call(
        app,
        Method::POST,
        "/admin/realms/customers/clients",
        &tok,
        Some(json!({"client_id": "svc", "scope": "a", "audience": "ledger"})),
        None,
    )
    .await;
    assert_eq!(s, 201);
    let etag = h["etag"].to_str().expect("etag").to_owned();

    // Sixteen admins holding the same ETag rotate the secret at once: exactly one wins, the
    // others get 412, and exactly one rotation is audited.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let http = app.http.clone();
        let url = format!("{}/admin/realms/customers/clients/svc/secret", app.base);
        let (tok, etag) = (tok.clone(), etag.clone());
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .bearer_auth(tok)
                .header("if-match", etag)
                .send()
                .await
                .expect("send");
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            200 => won.push(body),
            412 => assert_eq!(body["error_code"], "PRECONDITION_FAILED"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(won.len(), 1, "one writer wins");
    let rotations = app
        .audit()
        .await
        .into_iter()
        .filter(|r| r.kind == "client.secret_rotated")
        .count();
    assert_eq!(rotations, 1);
    // The winner's secret is the one that works.
    let svc = Client {
        id: "svc".into(),
        secret: won[0]["client_secret"].as_str().expect("secret").into(),
    };
    app.token("customers", &svc, None).await;

    // The same race on disable-then-delete: with the now stale ETag, nothing happens.
    let (s, _, body) = call(
        app,
        Method::DELETE,
        "/admin/realms/customers/clients/svc",
        &tok,
        None,
        Some(&etag),
    )
    .await;
    assert_eq!(
        (s, body["error_code"].as_str()),
        (412, Some("PRECONDITION_FAILED"))
    );
    let (s, _, body) = call(
        app,
        Method::DELETE,
        "/admin/realms/customers/clients/svc",
        &tok,
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, body["error_code"].as_str()),
        (428, Some("PRECONDITION_REQUIRED"))
    );
    for bad in ["*", "v2", "\"v2", "W/\"v2\"", "\"vx\""] {
        let (s, _, body) = call(
            app,
            Method::DELETE,
            "/admin/realms/customers/clients/svc",
            &tok,
            None,
            Some(bad),
        )
        .await;
        assert_eq!(s, 400, "{bad}: {body}");
    }
    assert!(
        app.store
            .client("customers", "svc")
            .await
            .expect("db")
            .is_some()
    );
    let (_, h, _) = call(
        app,
        Method::GET,
        "/admin/realms/customers/clients/svc",
        &tok,
        None,
        None,
    )
    .await;
    let current = h["etag"].to_str().expect("etag").to_owned();
    assert_ne!(current, etag, "the rotation moved the version");
    let (s, h, body) = call(
        app,
        Method::PATCH,
        "/admin/realms/customers/clients/svc",
        &tok,
        Some(json!({"enabled": false})),
        Some(&current),
    )
    .await;
    assert_eq!((s, body["enabled"].as_bool()), (200, Some(false)));
    let (s, _, _) = call(
        app,
        Method::DELETE,
        "/admin/realms/customers/clients/svc",
        &tok,
        None,
        Some(h["etag"].to_str().expect("etag")),
    )
    .await;
    assert_eq!(s, 204);
    assert!(
        app.store
            .client("customers", "svc")
            .await
            .expect("db")
            .is_none()
    );
    let (s, _, _) = call(
        app,
        Method::GET,
        "/admin/realms/customers/clients/svc",
        &tok,
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);

    // Created again under the same id: an ETag read before the delete does not match it.
    let (s, h, _) = call(
        app,
        Method::POST,
        "/admin/realms/customers/clients",
        &tok,
        Some(json!({"client_id": "svc", "scope": "a", "audience": "ledger"})),
        None,
    )
    .await;
    assert_eq!(s, 201);
    assert_ne!(h["etag"].to_str().expect("etag"), etag);
    let (s, _, _) = call(
        app,
        Method::POST,
        "/admin/realms/customers/clients/svc/secret",
        &tok,
        None,
        Some(&etag),
    )
    .await;
    assert_eq!(s, 412);
}
crate::on_every_backend_with!(
    if_match_lets_exactly_one_of_many_writers_win,
    if_match_lets_exactly_one_of_many_writers_win_scenario,
    admin_app
);

async fn bad_requests_are_problems_and_write_nothing_scenario(app: &TestApp) {
    let root = admin_client(app, "root", "sigil:admin").await;
    let tok = app.token("admin", &root, None).await;
    let before = app.audit().await.len();
    for (m, path, body) in [
        (Method::POST, "/admin/realms", json!({"name": "Bad Name"})),
        (
            Method::POST,
            "/admin/realms",
            json!({"name": "ok", "alg": "HS256"}),
        ),
        (
            Method::POST,
            "/admin/realms",
            json!({"name": "ok", "access_token_ttl": 5}),
        ),
        (
            Method::POST,
            "/admin/realms",
            json!({"name": "ok", "surprise": 1}),
        ),
        (
            Method::POST,
            "/admin/realms",
            json!(["not", "an", "object"]),
        ),
        (
            Method::POST,
            "/admin/realms/customers/clients",
            json!({"client_id": "x y", "scope": "a", "audience": "l"}),
        ),
        (
            Method::POST,
            "/admin/realms/customers/clients",
            json!({"client_id": "x", "scope": "a", "audience": "l", "redirect_uris": ["http://evil.example/cb"]}),
        ),
        (
            Method::POST,
            "/admin/realms/customers/clients",
            json!({"client_id": "x", "scope": "a", "audience": "l", "auth": {"method": "none"}}),
        ),
        (
            Method::POST,
            "/admin/realms/customers/groups",
            json!({"name": "", "scopes": "a"}),
        ),
    ] {
        let (s, _, problem) = call(app, m, path, &tok, Some(body.clone()), None).await;
        assert!(s == 400 || s == 422, "{path} {body}: {s} {problem}");
        assert_eq!(problem["error_code"], "INVALID_REQUEST", "{problem}");
    }
    // Not JSON at all, and an oversized page.
    let res = app
        .http
        .post(format!("{}/admin/realms", app.base))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 400);
    assert_eq!(
        call(app, Method::GET, "/admin/realms?limit=0", &tok, None, None)
            .await
            .0,
        400
    );
    assert_eq!(
        call(
            app,
            Method::GET,
            "/admin/realms?limit=abc",
            &tok,
            None,
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(app, Method::GET, "/admin/realms/nope", &tok, None, None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(
            app,
            Method::POST,
            "/admin/realms/nope/clients",
            &tok,
            Some(json!({"client_id": "x", "scope": "a", "audience": "l"})),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            app,
            Method::POST,
            "/admin/realms",
            &tok,
            Some(json!({"name": "customers"})),
            None
        )
        .await
        .0,
        409
    );
    assert_eq!(app.audit().await.len(), before, "nothing written");

    // Pages: 3 realms, 2 per page.
    let (_, _, p1) = call(app, Method::GET, "/admin/realms?limit=2", &tok, None, None).await;
    assert_eq!(p1["items"].as_array().map(Vec::len), Some(2));
    let next = p1["next"].as_str().expect("next");
    let (_, _, p2) = call(
        app,
        Method::GET,
        &format!("/admin/realms?limit=2&after={next}"),
        &tok,
        None,
        None,
    )
    .await;
    assert_eq!(p2["items"].as_array().map(Vec::len), Some(1));
    assert!(p2.get("next").is_none());

    // The OpenAPI document needs no token and names every route.
    let doc: Value = app
        .http
        .get(format!("{}/admin/openapi.json", app.base))
        .send()
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    assert!(doc["paths"]["/admin/realms/{realm}/clients/{client_id}/secret"]["post"].is_object());
}
crate::on_every_backend_with!(
    bad_requests_are_problems_and_write_nothing,
    bad_requests_are_problems_and_write_nothing_scenario,
    admin_app
);

/// Without `admin_realm` there is no admin API at all.
#[tokio::test]
async fn the_admin_api_is_off_unless_configured() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    let res = app
        .http
        .get(format!("{}/admin/openapi.json", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 404);
    let res = app
        .http
        .get(format!("{}/admin/realms", app.base))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 404);
}

/// A change made through the API holds on this node at once, whatever the directory cache held:
/// the old secret, a disabled client and a retired key stop working with the next request.
async fn changes_hold_at_once_on_this_node_scenario(app: &TestApp) {
    let root = admin_client(app, "root", "sigil:admin").await;
    let tok = app.token("admin", &root, None).await;
    let svc = app.create_client("customers", "svc", "a", "ledger").await;
    // Warm the cache with the client and the realm's key.
    let first = app.token("customers", &svc, None).await;
    let (_, h, _) = call(
        app,
        Method::GET,
        "/admin/realms/customers/clients/svc",
        &tok,
        None,
        None,
    )
    .await;
    let (s, h, made) = call(
        app,
        Method::POST,
        "/admin/realms/customers/clients/svc/secret",
        &tok,
        None,
        Some(h["etag"].to_str().expect("etag")),
    )
    .await;
    assert_eq!(s, 200);
    let old = app
        .token_request(
            "customers",
            Some(("svc", &svc.secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(old.status(), 401, "the old secret stopped at once");
    let new = Client {
        id: "svc".into(),
        secret: made["client_secret"].as_str().expect("secret").into(),
    };
    app.token("customers", &new, None).await;

    // An emergency key rotation: the next token is signed by the new key.
    let old_kid = crate::helpers::decode_part(&first, 0)["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    let (s, _, rotated) = call(
        app,
        Method::POST,
        "/admin/realms/customers/keys/rotate",
        &tok,
        Some(json!({})),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let next = app.token("customers", &new, None).await;
    let kid = crate::helpers::decode_part(&next, 0)["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    assert_ne!(kid, old_kid);
    assert_eq!(kid, rotated["kid"].as_str().expect("kid"));

    // The emergency path: the key that signs now is revoked; it leaves the JWKS at once, and the
    // next token is signed by another.
    let (s, _, body) = call(
        app,
        Method::POST,
        &format!("/admin/realms/customers/keys/{kid}/revoke"),
        &tok,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let jwks: Value = app
        .http
        .get(format!("{}/jwks", app.issuer("customers")))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert!(
        !jwks.to_string().contains(&kid),
        "revoked key gone from the JWKS"
    );
    let after = app.token("customers", &new, None).await;
    assert_ne!(
        crate::helpers::decode_part(&after, 0)["kid"].as_str(),
        Some(kid.as_str())
    );
    let (s, _, _) = call(
        app,
        Method::POST,
        "/admin/realms/customers/keys/no-such-kid/revoke",
        &tok,
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);

    // Disabled: the next token request is refused.
    let (s, _, _) = call(
        app,
        Method::PATCH,
        "/admin/realms/customers/clients/svc",
        &tok,
        Some(json!({"enabled": false})),
        Some(h["etag"].to_str().expect("etag")),
    )
    .await;
    assert_eq!(s, 200);
    let refused = app
        .token_request(
            "customers",
            Some(("svc", &new.secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(refused.status(), 401, "disabled at once");

    // Other paths and methods under /admin are problems too.
    let (s, _, body) = call(app, Method::GET, "/admin/nope", &tok, None, None).await;
    assert_eq!((s, body["error_code"].as_str()), (404, Some("NOT_FOUND")));
    let (s, h, body) = call(
        app,
        Method::PUT,
        "/admin/realms/customers/clients/svc",
        &tok,
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, body["error_code"].as_str()),
        (405, Some("METHOD_NOT_ALLOWED"))
    );
    assert!(h.contains_key("allow"));

    // Audit paging: `next` is the last seq of the page, so rows written later are not skipped.
    let (_, _, page) = call(
        app,
        Method::GET,
        "/admin/audit?limit=1000",
        &tok,
        None,
        None,
    )
    .await;
    let last = page["items"]
        .as_array()
        .expect("items")
        .last()
        .expect("row")["seq"]
        .as_i64();
    assert_eq!(page["next"].as_i64(), last);
    app.create_client("customers", "later", "a", "ledger").await;
    let (_, _, more) = call(
        app,
        Method::GET,
        &format!("/admin/audit?after={}", last.unwrap_or(0)),
        &tok,
        None,
        None,
    )
    .await;
    assert!(
        more["items"].as_array().is_some_and(|i| !i.is_empty()),
        "{more}"
    );
    let (_, _, empty) = call(
        app,
        Method::GET,
        "/admin/audit?after=100000",
        &tok,
        None,
        None,
    )
    .await;
    assert!(empty.get("next").is_none());
}
crate::on_every_backend_with!(
    changes_hold_at_once_on_this_node,
    changes_hold_at_once_on_this_node_scenario,
    admin_app
);

/// Users through the API: created, read with an ETag, one of many concurrent disables with the
/// same `If-Match` wins, attributes merged, groups joined and left, an invite that opens the
/// enrolment page, sign-out everywhere; a realm admin reaches no other realm's users.
async fn users_through_the_api_scenario(app: &TestApp) {
    let root = admin_client(app, "root", "sigil:admin").await;
    let tok = app.token("admin", &root, None).await;
    let (s, _, _) = call(
        app,
        Method::POST,
        "/admin/realms/customers/groups",
        &tok,
        Some(json!({"name": "retail", "scopes": "balances:read"})),
        None,
    )
    .await;
    assert_eq!(s, 201);
    let (s, h, alice) = call(
        app,
        Method::POST,
        "/admin/realms/customers/users",
        &tok,
        Some(
            json!({"username": "alice", "attributes": {"party_id": "P-42"}, "groups": ["retail"]}),
        ),
        None,
    )
    .await;
    assert_eq!(s, 201, "{alice}");
    assert_eq!(alice["groups"], json!(["retail"]));
    let etag = h["etag"].to_str().expect("etag").to_owned();
    let (s, _, _) = call(
        app,
        Method::POST,
        "/admin/realms/customers/users",
        &tok,
        Some(json!({"username": "alice"})),
        None,
    )
    .await;
    assert_eq!(s, 409);
    for bad in [
        json!({"username": "a b"}),
        json!({"username": "x", "attributes": {"bad name": "v"}}),
        json!({"username": "x", "attributes": {"k": "line\nbreak"}}),
        json!({"username": "x", "groups": ["nope"]}),
    ] {
        let (s, _, body) = call(
            app,
            Method::POST,
            "/admin/realms/customers/users",
            &tok,
            Some(bad.clone()),
            None,
        )
        .await;
        assert!(s == 400 || s == 404, "{bad}: {body}");
    }

    // Attributes, with If-Match: merged, an empty value removes.
    let (s, h, after) = call(
        app,
        Method::PATCH,
        "/admin/realms/customers/users/alice",
        &tok,
        Some(json!({"attributes": {"jurisdiction": "DE", "party_id": ""}})),
        Some(&etag),
    )
    .await;
    assert_eq!(s, 200, "{after}");
    assert_eq!(after["attributes"], json!({"jurisdiction": "DE"}));
    let etag2 = h["etag"].to_str().expect("etag").to_owned();
    assert_ne!(etag2, etag);
    let (s, _, _) = call(
        app,
        Method::PATCH,
        "/admin/realms/customers/users/alice",
        &tok,
        Some(json!({"enabled": false})),
        Some(&etag),
    )
    .await;
    assert_eq!(s, 412, "a stale ETag changes nothing");
    let (s, _, _) = call(
        app,
        Method::PATCH,
        "/admin/realms/customers/users/alice",
        &tok,
        Some(json!({"enabled": false, "attributes": {}})),
        Some(&etag2),
    )
    .await;
    assert_eq!(s, 400, "one change per request");

    // Sixteen admins disable alice at once with the same ETag: one wins, one row is audited.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let http = app.http.clone();
        let url = format!("{}/admin/realms/customers/users/alice", app.base);
        let (tok, etag) = (tok.clone(), etag2.clone());
        tasks.push(tokio::spawn(async move {
            http.patch(url)
                .bearer_auth(tok)
                .header("if-match", etag)
                .json(&json!({"enabled": false}))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 412),
        "{statuses:?}"
    );
    assert_eq!(
        app.audit()
            .await
            .iter()
            .filter(|r| r.kind == "user.disabled")
            .count(),
        1
    );

    // Groups: leave, join again (idempotent), an unknown group is 404.
    let membership = "/admin/realms/customers/users/alice/groups";
    for (m, group, want) in [
        (Method::DELETE, "retail", 204),
        (Method::PUT, "retail", 204),
        (Method::PUT, "retail", 204),
        (Method::PUT, "nope", 404),
    ] {
        let path = format!("{membership}/{group}");
        assert_eq!(
            call(app, m, &path, &tok, None, None).await.0,
            want,
            "{path}"
        );
    }
    // Sixteen joins at once: every one is 204, one membership and one audit row.
    let (_, _, again) = call(
        app,
        Method::DELETE,
        &format!("{membership}/retail"),
        &tok,
        None,
        None,
    )
    .await;
    assert!(again.is_null());
    let joined = "user.group_added";
    let before = app
        .audit()
        .await
        .iter()
        .filter(|r| r.kind == joined)
        .count();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let http = app.http.clone();
        let url = format!("{}{membership}/retail", app.base);
        let tok = tok.clone();
        tasks.push(tokio::spawn(async move {
            http.put(url)
                .bearer_auth(tok)
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 204);
    }
    let after = app
        .audit()
        .await
        .iter()
        .filter(|r| r.kind == joined)
        .count();
    assert_eq!(after, before + 1);
    let (_, _, alice) = call(
        app,
        Method::GET,
        "/admin/realms/customers/users/alice",
        &tok,
        None,
        None,
    )
    .await;
    assert_eq!(alice["groups"], json!(["retail"]));

    // An invite: a link to the enrolment page, shown once, not in the audit record.
    let (s, _, invite) = call(
        app,
        Method::POST,
        "/admin/realms/customers/users/alice/invite",
        &tok,
        Some(json!({"ttl_secs": 600})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{invite}");
    let url = invite["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("{}/enrol/", app.issuer("customers"))),
        "{url}"
    );
    assert_eq!(app.http.get(url).send().await.expect("enrol").status(), 200);
    let token = url.rsplit('/').next().expect("token");
    assert!(app.audit().await.iter().all(|r| !r.detail.contains(token)));
    let before = app.audit().await.len();
    let (s, _, _) = call(
        app,
        Method::POST,
        "/admin/realms/customers/users/alice/invite",
        &tok,
        Some(json!({"client_id": "no-such-app"})),
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(
        app.audit().await.len(),
        before,
        "nothing written for an unknown app"
    );
    let (s, _, out) = call(
        app,
        Method::POST,
        "/admin/realms/customers/users/alice/sign-out",
        &tok,
        None,
        None,
    )
    .await;
    assert_eq!((s, out["ended"].as_u64()), (200, Some(0)));

    // A realm admin of staff reaches none of this.
    let ops = admin_client(app, "ops-staff", "sigil:admin:staff").await;
    let ot = app.token("admin", &ops, None).await;
    for (m, path) in [
        (Method::GET, "/admin/realms/customers/users/alice"),
        (Method::POST, "/admin/realms/customers/users/alice/sign-out"),
        (
            Method::PUT,
            "/admin/realms/customers/users/alice/groups/retail",
        ),
    ] {
        assert_eq!(call(app, m, path, &ot, None, None).await.0, 403, "{path}");
    }
}
crate::on_every_backend_with!(
    users_through_the_api,
    users_through_the_api_scenario,
    admin_app
);

/// The rest of what the CLI does, through the API: a realm's settings and sign-in policy, a
/// client's description changed in place (If-Match; sixteen concurrent PATCHes with one ETag:
/// one wins), a group's scopes and its deletion, the AWS exchange and its bindings, users listed
/// in pages. A realm admin cannot touch another realm's.
async fn settings_through_the_api_scenario(app: &TestApp) {
    let root = admin_client(app, "root", "sigil:admin").await;
    let tok = app.token("admin", &root, None).await;
    let cust = admin_client(app, "cust", "sigil:admin:customers").await;
    let ctok = app.token("admin", &cust, None).await;
    let audit_of = |kind: &'static str| async move {
        crate::helpers::count_rows(
            app,
            &format!("SELECT COUNT(*) FROM audit_log WHERE kind = '{kind}'"),
        )
        .await
    };

    // The realm: token lifetime and display name; the algorithm cannot change.
    let (s, _, realm) = call(
        app,
        Method::PATCH,
        "/admin/realms/customers",
        &tok,
        Some(json!({"access_token_ttl": 600, "display_name": "Example Bank"})),
        None,
    )
    .await;
    assert_eq!(
        (s, realm["access_token_ttl"].as_i64()),
        (200, Some(600)),
        "{realm}"
    );
    assert_eq!(realm["display_name"], "Example Bank");
    let svc = app
        .create_client("customers", "svc", "balances:read tx:post:ach", "ledger")
        .await;
    let res = app
        .token_request(
            "customers",
            Some((&svc.id, &svc.secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        body["expires_in"], 600,
        "the new lifetime holds at once: {body}"
    );
    for bad in [
        json!({"alg": "RS256"}),
        json!({"access_token_ttl": 5}),
        json!({"prepublish_secs": 1}),
    ] {
        let (s, _, b) = call(
            app,
            Method::PATCH,
            "/admin/realms/customers",
            &tok,
            Some(bad.clone()),
            None,
        )
        .await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    assert_eq!(
        call(
            app,
            Method::PATCH,
            "/admin/realms/staff",
            &ctok,
            Some(json!({"access_token_ttl": 600})),
            None
        )
        .await
        .0,
        403
    );

    // The sign-in policy.
    let (s, _, policy) = call(
        app,
        Method::PUT,
        "/admin/realms/customers/login-settings",
        &tok,
        Some(json!({"groups_claim": "cognito:groups", "session_idle_secs": 1800})),
        None,
    )
    .await;
    assert_eq!(s, 200, "{policy}");
    let (s, _, read) = call(
        app,
        Method::GET,
        "/admin/realms/customers/login-settings",
        &ctok,
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, &read["groups_claim"]),
        (200, &json!("cognito:groups")),
        "{read}"
    );
    for bad in [
        json!({"session_idle_secs": "long"}),
        json!({"sesion_idle_secs": 60}),
    ] {
        let (s, _, b) = call(
            app,
            Method::PUT,
            "/admin/realms/customers/login-settings",
            &tok,
            Some(bad.clone()),
            None,
        )
        .await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    // A NUL anywhere (body, path, query) is bad input, on PostgreSQL too (never a 503).
    let (s, _, b) = call(
        app,
        Method::POST,
        "/admin/realms/customers/groups",
        &tok,
        Some(json!({"name": "g", "scopes": "a\u{0}b"})),
        None,
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        call(
            app,
            Method::GET,
            "/admin/realms/customers/users?after=a%00b",
            &tok,
            None,
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(
            app,
            Method::GET,
            "/admin/realms/cust%00omers/clients",
            &tok,
            None,
            None
        )
        .await
        .0,
        400
    );

    // A client's description: narrower scopes take effect at once; a stale ETag is 412.
    let (_, h, _) = call(
        app,
        Method::GET,
        "/admin/realms/customers/clients/svc",
        &tok,
        None,
        None,
    )
    .await;
    let etag = h["etag"].to_str().expect("etag").to_owned();
    let (s, _, b) = call(
        app,
        Method::PATCH,
        "/admin/realms/customers/clients/svc",
        &tok,
        Some(json!({"scope": "balances:read", "enabled": false})),
        Some(&etag),
    )
    .await;
    assert_eq!(s, 400, "enabled goes on its own: {b}");
    let updates_before = audit_of("client.updated").await;
    // Sixteen PATCHes with one ETag at once, on tasks of their own: one wins.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let http = app.http.clone();
        let url = format!("{}/admin/realms/customers/clients/svc", app.base);
        let (tok, etag) = (tok.clone(), etag.clone());
        tasks.push(tokio::spawn(async move {
            http.patch(url)
                .bearer_auth(tok)
                .header("if-match", etag)
                .json(&json!({"scope": "balances:read", "name": format!("Service {i}")}))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.expect("task"));
    }
    assert_eq!(
        (
            codes.iter().filter(|c| **c == 200).count(),
            codes.iter().filter(|c| **c == 412).count()
        ),
        (1, 15),
        "{codes:?}"
    );
    assert_eq!(audit_of("client.updated").await, updates_before + 1);
    let res = app
        .token_request(
            "customers",
            Some((&svc.id, &svc.secret)),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "tx:post:ach"),
            ],
        )
        .await;
    assert_eq!(res.status(), 400, "the dropped scope is refused at once");
    let (s, _, b) = call(
        app,
        Method::PATCH,
        "/admin/realms/customers/clients/svc",
        &tok,
        Some(json!({"audience": ""})),
        Some(&etag),
    )
    .await;
    assert!(s == 400 || s == 412, "{b}");

    // Its authentication, with If-Match; moving to a secret method again shows a new secret.
    let (_, h, _) = call(
        app,
        Method::GET,
        "/admin/realms/customers/clients/svc",
        &tok,
        None,
        None,
    )
    .await;
    let etag = h["etag"].to_str().expect("etag").to_owned();
    let thumb = "A".repeat(43);
    let (s, h, b) = call(
        app,
        Method::PUT,
        "/admin/realms/customers/clients/svc/auth",
        &tok,
        Some(json!({"method": "self_signed_tls_client_auth", "cert_thumbprints": [thumb]})),
        Some(&etag),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("client_secret").is_none_or(Value::is_null), "{b}");
    let etag_now = h["etag"].to_str().expect("etag").to_owned();
    let (s, _, b) = call(
        app,
        Method::POST,
        "/admin/realms/customers/clients/svc/secret",
        &tok,
        None,
        Some(&etag_now),
    )
    .await;
    assert_eq!(s, 400, "no secret to rotate for a certificate client: {b}");
    let res = app
        .token_request(
            "customers",
            Some((&svc.id, &svc.secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(res.status(), 401, "the secret no longer authenticates it");
    let etag = h["etag"].to_str().expect("etag").to_owned();
    let (s, _, b) = call(
        app,
        Method::PUT,
        "/admin/realms/customers/clients/svc/auth",
        &tok,
        Some(json!({})),
        Some(&etag),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let secret = b["client_secret"]
        .as_str()
        .expect("a new secret")
        .to_owned();
    let res = app
        .token_request(
            "customers",
            Some(("svc", &secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(res.status(), 200);

    // Groups: scopes changed, then the group deleted (its members leave it).
    assert_eq!(
        call(
            app,
            Method::POST,
            "/admin/realms/customers/groups",
            &tok,
            Some(json!({"name": "retail", "scopes": "balances:read"})),
            None
        )
        .await
        .0,
        201
    );
    let (s, _, g) = call(
        app,
        Method::PUT,
        "/admin/realms/customers/groups/retail",
        &tok,
        Some(json!({"scopes": "balances:read  tx:read"})),
        None,
    )
    .await;
    assert_eq!(
        (s, &g["scopes"]),
        (200, &json!("balances:read tx:read")),
        "{g}"
    );
    assert_eq!(
        call(
            app,
            Method::PUT,
            "/admin/realms/customers/groups/nope",
            &tok,
            Some(json!({"scopes": "x"})),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            app,
            Method::DELETE,
            "/admin/realms/customers/groups/retail",
            &tok,
            None,
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(
            app,
            Method::DELETE,
            "/admin/realms/customers/groups/retail",
            &tok,
            None,
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            app,
            Method::DELETE,
            "/admin/realms/staff/groups/x",
            &ctok,
            None,
            None
        )
        .await
        .0,
        403
    );

    // AWS: on, a binding put twice (replaced, one row), listed, deleted, off.
    let (s, _, b) = call(
        app,
        Method::PUT,
        "/admin/realms/customers/aws",
        &tok,
        Some(json!({"server_id": "sigil.bank.example", "require_challenge": true})),
        None,
    )
    .await;
    assert_eq!((s, &b["partitions"]), (200, &json!(["aws"])), "{b}");
    let binding = json!({"principal": "arn:aws:iam::123456789012:role/payments", "scope": "tx:post:ach", "audience": "ledger"});
    assert_eq!(
        call(
            app,
            Method::PUT,
            "/admin/realms/customers/aws/bindings/payments",
            &tok,
            Some(binding.clone()),
            None
        )
        .await
        .0,
        200
    );
    let mut deny = binding.clone();
    deny["effect"] = json!("deny");
    let (s, _, b) = call(
        app,
        Method::PUT,
        "/admin/realms/customers/aws/bindings/payments",
        &tok,
        Some(deny),
        None,
    )
    .await;
    assert_eq!((s, &b["effect"]), (200, &json!("deny")), "{b}");
    let (s, _, page) = call(
        app,
        Method::GET,
        "/admin/realms/customers/aws/bindings",
        &ctok,
        None,
        None,
    )
    .await;
    assert_eq!(
        (s, page["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{page}"
    );
    assert_eq!(
        call(
            app,
            Method::PUT,
            "/admin/realms/customers/aws/bindings/x",
            &tok,
            Some(json!({"scope": "a", "audience": "b"})),
            None
        )
        .await
        .0,
        400,
        "no principal or account"
    );
    assert_eq!(
        call(
            app,
            Method::PUT,
            "/admin/realms/customers/aws/bindings/x",
            &tok,
            Some(json!({"account": "123456789012", "scope": "a", "audience": "led\nger"})),
            None
        )
        .await
        .0,
        400
    );
    for endpoint in ["http://169.254.169.254/", "https://user:pw@sts.example/"] {
        let (s, _, b) = call(
            app,
            Method::PUT,
            "/admin/realms/customers/aws",
            &tok,
            Some(json!({"server_id": "x", "sts_endpoint": endpoint})),
            None,
        )
        .await;
        assert_eq!(s, 400, "{endpoint}: {b}");
    }
    assert_eq!(
        call(
            app,
            Method::DELETE,
            "/admin/realms/customers/aws/bindings/payments",
            &tok,
            None,
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(
            app,
            Method::DELETE,
            "/admin/realms/customers/aws",
            &tok,
            None,
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(
            app,
            Method::GET,
            "/admin/realms/customers/aws",
            &tok,
            None,
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            app,
            Method::PUT,
            "/admin/realms/staff/aws",
            &ctok,
            Some(json!({"server_id": "x"})),
            None
        )
        .await
        .0,
        403
    );

    // The realm's client CAs: set (a CA), read, a leaf refused, cleared.
    let ca = crate::pki::Ca::new("Payments Client CA");
    let (s, _, b) = call(
        app,
        Method::PUT,
        "/admin/realms/customers/client-cas",
        &tok,
        Some(json!({"pem": ca.pem})),
        None,
    )
    .await;
    assert_eq!(
        (s, b["client_cas"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{b}"
    );
    let (s, _, b) = call(
        app,
        Method::GET,
        "/admin/realms/customers/client-cas",
        &ctok,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        b["client_cas"][0]["subject"]
            .as_str()
            .is_some_and(|x| x.contains("Payments Client CA")),
        "{b}"
    );
    let leaf = ca.server();
    assert_eq!(
        call(
            app,
            Method::PUT,
            "/admin/realms/customers/client-cas",
            &tok,
            Some(json!({"pem": leaf.cert_pem})),
            None
        )
        .await
        .0,
        400,
        "a leaf is not a CA"
    );
    assert_eq!(
        call(
            app,
            Method::PUT,
            "/admin/realms/customers/client-cas",
            &tok,
            Some(json!({"pem": "not PEM"})),
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(
            app,
            Method::DELETE,
            "/admin/realms/customers/client-cas",
            &tok,
            None,
            None
        )
        .await
        .0,
        204
    );
    let (_, _, b) = call(
        app,
        Method::GET,
        "/admin/realms/customers/client-cas",
        &tok,
        None,
        None,
    )
    .await;
    assert_eq!(b["client_cas"], json!([]));
    assert_eq!(
        call(
            app,
            Method::PUT,
            "/admin/realms/staff/client-cas",
            &ctok,
            Some(json!({"pem": ca.pem})),
            None
        )
        .await
        .0,
        403
    );

    // Users in pages of two, by username.
    for u in ["carol", "alice", "bob", "dave", "erin"] {
        assert_eq!(
            call(
                app,
                Method::POST,
                "/admin/realms/customers/users",
                &tok,
                Some(json!({"username": u})),
                None
            )
            .await
            .0,
            201
        );
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = format!("/admin/realms/customers/users?limit=2&after={after}");
        let (s, _, page) = call(app, Method::GET, &path, &ctok, None, None).await;
        assert_eq!(s, 200, "{page}");
        for u in page["items"].as_array().expect("items") {
            seen.push(u["username"].as_str().expect("name").to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["alice", "bob", "carol", "dave", "erin"]);
    assert_eq!(
        call(
            app,
            Method::GET,
            "/admin/realms/staff/users",
            &ctok,
            None,
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(
            app,
            Method::GET,
            "/admin/realms/customers/users?limit=0",
            &tok,
            None,
            None
        )
        .await
        .0,
        400
    );

    // Narrowing an admin client holds at once for the tokens it already has.
    let (_, h, _) = call(
        app,
        Method::GET,
        "/admin/realms/admin/clients/cust",
        &tok,
        None,
        None,
    )
    .await;
    let etag = h["etag"].to_str().expect("etag").to_owned();
    let (s, _, b) = call(
        app,
        Method::PATCH,
        "/admin/realms/admin/clients/cust",
        &tok,
        Some(json!({"scope": "sigil:admin:staff"})),
        Some(&etag),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        call(
            app,
            Method::GET,
            "/admin/realms/customers/users",
            &ctok,
            None,
            None
        )
        .await
        .0,
        403,
        "the old token lost sigil:admin:customers with its client"
    );
    assert_eq!(
        call(
            app,
            Method::GET,
            "/admin/realms/staff/users",
            &ctok,
            None,
            None
        )
        .await
        .0,
        403,
        "and gained nothing its token did not carry"
    );
}
crate::on_every_backend_with!(
    settings_through_the_api,
    settings_through_the_api_scenario,
    admin_app
);

/// Four-eyes through the API: in a realm that requires approval a revocation answers 202 with a
/// request and changes nothing; its requester cannot approve it; another admin's approvals, six
/// at once, apply it exactly once; a realm admin of another realm may not decide it.
async fn four_eyes_through_the_api_scenario(app: &TestApp) {
    let alice = admin_client(app, "alice", "sigil:admin").await;
    let bob = admin_client(app, "bob", "sigil:admin").await;
    let other = admin_client(app, "other", "sigil:admin:customers").await;
    let alice_t = app.token("admin", &alice, None).await;
    let bob_t = app.token("admin", &bob, None).await;
    let other_t = app.token("admin", &other, None).await;
    let now = app.now();
    let guard = sigil::store::RealmGuard {
        require_approval: true,
        protected: false,
    };
    sigil::admin::changes::set_guard(app.store.as_ref(), "staff", guard, now, "t")
        .await
        .expect("guard");
    let (_, _, keys) = call(
        app,
        Method::GET,
        "/admin/realms/staff/keys",
        &alice_t,
        None,
        None,
    )
    .await;
    let kid = keys[0]["kid"].as_str().expect("kid").to_owned();
    let path = format!("/admin/realms/staff/keys/{kid}/revoke");
    let (status, _, req) = call(app, Method::POST, &path, &alice_t, None, None).await;
    assert_eq!(status, 202, "{req}");
    assert_eq!(req["state"], "pending");
    assert_eq!(req["requested_by"], "client:alice@admin");
    let id = req["id"].as_str().expect("id").to_owned();
    let (_, _, keys) = call(
        app,
        Method::GET,
        "/admin/realms/staff/keys",
        &alice_t,
        None,
        None,
    )
    .await;
    assert_eq!(
        keys.as_array().expect("keys").len(),
        1,
        "nothing changed yet"
    );

    let approve = format!("/admin/changes/{id}/approve");
    let (status, _, body) = call(app, Method::POST, &approve, &alice_t, None, None).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = call(app, Method::POST, &approve, &other_t, None, None).await;
    assert_eq!(status, 403, "{body}");

    let statuses = post_at_once(app, &approve, &bob_t, 6).await;
    assert_eq!(
        statuses,
        [200, 400, 400, 400, 400, 400],
        "exactly one approval applies"
    );
    let (_, _, keys) = call(
        app,
        Method::GET,
        "/admin/realms/staff/keys",
        &alice_t,
        None,
        None,
    )
    .await;
    assert!(
        !keys
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["kid"] == kid.as_str()),
        "{keys}"
    );
    let (_, _, list) = call(app, Method::GET, "/admin/changes", &bob_t, None, None).await;
    assert_eq!(list[0]["state"], "applied");
    assert_eq!(list[0]["decided_by"], "client:bob@admin");
    let revoked = app
        .audit()
        .await
        .into_iter()
        .filter(|r| r.kind == "key.revoked")
        .count();
    assert_eq!(revoked, 1);
}

crate::on_every_backend_with!(
    four_eyes_through_the_api,
    four_eyes_through_the_api_scenario,
    admin_app
);
