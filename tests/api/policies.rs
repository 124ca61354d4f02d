//! Principal policies through the admin API and the store, on both backends: realm scoping,
//! validation before any write, concurrent writers of one name or of one realm (exactly one
//! create wins, every change raises the version once), and the bundle a resource server reads.

use reqwest::Method;
use serde_json::{Value, json};
use sigil::admin::AdminError;
use sigil::admin::policies::{self, NewPolicy};
use sigil::keys::Alg;

use crate::helpers::{Backend, TestApp, count_rows, spawn_app_with};

async fn app_with_admin(backend: Backend) -> TestApp {
    let app = spawn_app_with(backend, None, |c| {
        c.admin_realm = Some("admin".into());
    })
    .await;
    app.create_realm("admin", Alg::ES256).await;
    app.create_realm("customers", Alg::ES256).await;
    app.create_realm("staff", Alg::ES256).await;
    app
}

/// The admin API's request helper (which also checks problem details), without the headers.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, _, body) = crate::admin_api::call(app, method, path, token, body, None).await;
    (status, body)
}

fn new_policy(name: &str, client: &str) -> NewPolicy {
    NewPolicy {
        realm: "customers".into(),
        name: name.into(),
        principal_kind: "client".into(),
        principal: client.into(),
        effect: "ALLOW".into(),
        actions: vec!["db:Select".into()],
        resources: vec!["financial.ledger.*".into()],
        assertions: vec![],
        description: None,
    }
}

/// One side of a policy race in realm customers: deletes `name` (finding none is fine) or writes
/// it for client svc over whatever is there.
async fn put_or_delete(
    store: std::sync::Arc<dyn sigil::store::Store>,
    name: &'static str,
    delete: bool,
) -> Result<(), AdminError> {
    if delete {
        match policies::delete(store.as_ref(), "customers", name, 1_800_000_000, "t").await {
            Ok(()) | Err(AdminError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        let policy = new_policy(name, "svc");
        policies::create(store.as_ref(), policy, true, 1_800_000_000, "t")
            .await
            .map(drop)
    }
}

async fn bundle_version(app: &TestApp, rs: &crate::helpers::Client) -> (i64, usize) {
    let res = app
        .http
        .get(format!("{}/realms/customers/policies", app.base))
        .basic_auth(&rs.id, Some(&rs.secret))
        .send()
        .await
        .expect("bundle");
    assert_eq!(res.status(), 200);
    let jws = res.text().await.expect("text");
    let payload = crate::helpers::decode_part(&jws, 1);
    (
        payload["version"].as_i64().expect("version"),
        payload["policies"].as_array().expect("policies").len(),
    )
}

async fn policies_through_the_api_scenario(app: &TestApp) {
    let root = app
        .create_client("admin", "root", "sigil:admin", "sigil-admin")
        .await;
    let tok = app.token("admin", &root, None).await;
    let staff_admin = app
        .create_client("admin", "staff-admin", "sigil:admin:staff", "sigil-admin")
        .await;
    let stok = app.token("admin", &staff_admin, None).await;
    app.create_client("customers", "svc", "balances:read", "ledger")
        .await;
    app.create_client("staff", "teller", "balances:read", "ledger")
        .await;
    let body = json!({"principal_kind": "client", "principal": "svc", "effect": "ALLOW",
        "actions": ["db:Insert"], "resources": ["financial.ledger.document.*"],
        "assertions": ["context.document.amount <= 10000"]});
    let path = "/admin/realms/customers/policies/ach-insert";
    let (s, view) = call(app, Method::PUT, path, &tok, Some(body.clone())).await;
    assert_eq!(s, 200, "{view}");
    assert_eq!(view["effect"], "ALLOW");
    assert_eq!(view["created_by"], "client:root@admin");
    // A staff-realm admin cannot touch the customers realm's policies.
    let (s, _) = call(app, Method::PUT, path, &stok, Some(body.clone())).await;
    assert_eq!(s, 403);
    assert_eq!(call(app, Method::GET, path, &stok, None).await.0, 403);
    // Refused before any write: another realm's client, a bad assertion, an unknown field.
    let before = count_rows(app, "SELECT COUNT(*) FROM audit_log").await;
    for (bad, field) in [
        (json!({"principal": "teller"}), "principal"),
        (json!({"assertions": ["[1,2].all(x, x > 0)"]}), "assertions"),
        (
            json!({"assertions": ["context.request.ip == '1'"]}),
            "assertions",
        ),
        (json!({"actions": []}), "actions"),
        (json!({"resources": ["a b"]}), "resources"),
        (
            json!({"principal_kind": "aws", "principal": "role/x"}),
            "principal",
        ),
    ] {
        let mut b = body.clone();
        for (k, v) in bad.as_object().expect("object") {
            b[k] = v.clone();
        }
        let (s, p) = call(
            app,
            Method::PUT,
            "/admin/realms/customers/policies/bad",
            &tok,
            Some(b),
        )
        .await;
        assert_eq!((s, p["field"].as_str()), (400, Some(field)), "{bad}: {p}");
    }
    let mut b = body.clone();
    b["extra"] = json!(1);
    assert_eq!(
        call(
            app,
            Method::PUT,
            "/admin/realms/customers/policies/bad",
            &tok,
            Some(b)
        )
        .await
        .0,
        400
    );
    assert_eq!(
        count_rows(app, "SELECT COUNT(*) FROM audit_log").await,
        before
    );
    assert_eq!(count_rows(app, "SELECT COUNT(*) FROM policies").await, 1);

    let (s, page) = call(
        app,
        Method::GET,
        "/admin/realms/customers/policies",
        &tok,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(page["items"][0]["name"], "ach-insert", "{page}");
    assert_eq!(
        call(app, Method::GET, path, &tok, None).await.1["assertions"][0],
        "context.document.amount <= 10000"
    );
    assert_eq!(call(app, Method::DELETE, path, &tok, None).await.0, 204);
    assert_eq!(call(app, Method::DELETE, path, &tok, None).await.0, 404);
    assert_eq!(call(app, Method::GET, path, &tok, None).await.0, 404);
    // The first PUT created it (no policy of that name was there), then it was deleted.
    for (kind, n) in [
        ("policy.created", 1),
        ("policy.replaced", 0),
        ("policy.deleted", 1),
    ] {
        let sql = format!("SELECT COUNT(*) FROM audit_log WHERE kind = '{kind}'");
        assert_eq!(count_rows(app, &sql).await, n, "{kind}");
    }
}

crate::on_every_backend_with!(
    policies_through_the_api,
    policies_through_the_api_scenario,
    app_with_admin
);

async fn concurrent_writers_scenario(app: &TestApp) {
    app.create_client("customers", "svc", "balances:read", "ledger")
        .await;
    let rs = app.create_resource_server("customers", "ledger-rs").await;
    let store = app.store.clone();
    // Many creates of one name at once: exactly one wins, the rest are conflicts.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                policies::create(
                    store.as_ref(),
                    new_policy("same", "svc"),
                    false,
                    1_800_000_000 + i,
                    "t",
                )
                .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => won += 1,
            Err(AdminError::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(bundle_version(app, &rs).await, (1, 1));
    // Many creates of different names at once: each raises the version exactly once.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                policies::create(
                    store.as_ref(),
                    new_policy(&format!("p{i}"), "svc"),
                    false,
                    1_800_000_000,
                    "t",
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("create");
    }
    assert_eq!(bundle_version(app, &rs).await, (17, 17));
    // Many deletes of one policy at once: one deletes, the rest find nothing; one more version.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                policies::delete(store.as_ref(), "customers", "same", 1_800_000_000, "t").await
            })
        })
        .collect();
    let mut deleted = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(()) => deleted += 1,
            Err(AdminError::NotFound(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(deleted, 1);
    assert_eq!(bundle_version(app, &rs).await, (18, 16));
    assert_eq!(
        count_rows(
            app,
            "SELECT COUNT(*) FROM audit_log WHERE kind LIKE 'policy.%'"
        )
        .await,
        18,
        "one audit record per change that happened, none for those refused"
    );

    // Writes that replace whatever is there (the API's PUT) racing each other and deletions:
    // every write succeeds, and the audit log tells each as it happened (created where there
    // was none, replaced where there was one), in the chain's order.
    for round in 0..6 {
        let name: &'static str = ["up0", "up1", "up2", "up3", "up4", "up5"][round];
        let mut tasks = tokio::task::JoinSet::new();
        // 16 tasks: a write can lose its read to at most 15 others' changes, within the
        // attempts `create` makes.
        for i in 0..16 {
            tasks.spawn(put_or_delete(store.clone(), name, i % 2 == 1));
        }
        for r in tasks.join_all().await {
            r.expect("every write and deletion goes through");
        }
        let mut exists = false;
        let mut writes = 0;
        for r in app.audit().await {
            let detail: Value = serde_json::from_str(&r.detail).expect("detail");
            if detail["name"] != name {
                continue;
            }
            match (r.kind.as_str(), exists) {
                ("policy.created", false) | ("policy.replaced", true) => {
                    exists = true;
                    writes += 1;
                }
                ("policy.deleted", true) => exists = false,
                (kind, was) => panic!("{name}: {kind} when the policy existed: {was}"),
            }
        }
        assert_eq!(writes, 8, "{name}");
        let stored = app
            .store
            .policy("customers", name)
            .await
            .expect("read")
            .is_some();
        assert_eq!(stored, exists, "{name}: the log's last word is the table's");
    }
}

crate::on_every_backend_with!(
    concurrent_policy_writers,
    concurrent_writers_scenario,
    app_with_admin
);

async fn the_issuer_refuses_what_a_validator_would_not_load_scenario(app: &TestApp) {
    app.create_client("customers", "svc", "balances:read", "ledger")
        .await;
    let store = app.store.clone();
    // 9,999 policies written straight into the table, then the 10,000th through the normal path.
    crate::helpers::exec_raw(
        app,
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 9999) \
         INSERT INTO policies (realm, name, principal_kind, principal, effect, spec, created_at, created_by) \
         SELECT 'customers', 'bulk-' || i, 'client', 'svc', 'ALLOW', '{}', 0, 't' FROM c",
    )
    .await
    .expect("bulk insert");
    policies::create(
        store.as_ref(),
        new_policy("last", "svc"),
        false,
        1_800_000_000,
        "t",
    )
    .await
    .expect("the 10,000th");
    let refused = policies::create(
        store.as_ref(),
        new_policy("one-more", "svc"),
        false,
        1_800_000_000,
        "t",
    )
    .await;
    match refused {
        Err(AdminError::Invalid {
            field: "policies",
            message,
        }) => assert!(message.contains("10000"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Replacing one of them is no new policy: allowed.
    policies::create(
        store.as_ref(),
        new_policy("last", "svc"),
        true,
        1_800_000_000,
        "t",
    )
    .await
    .expect("replace at the limit");
    // The size: one policy as large as the realm's budget leaves no room.
    crate::helpers::exec_raw(app, "DELETE FROM policies WHERE name LIKE 'bulk-%'")
        .await
        .expect("delete");
    let big = match app.backend {
        Backend::Sqlite => "printf('%.*c', 8388600, 'x')",
        Backend::Postgres => "repeat('x', 8388600)",
    };
    crate::helpers::exec_raw(
        app,
        &format!(
            "INSERT INTO policies (realm, name, principal_kind, principal, effect, spec, created_at, created_by) \
             VALUES ('customers', 'huge', 'client', 'svc', 'ALLOW', {big}, 0, 't')"
        ),
    )
    .await
    .expect("huge");
    match policies::create(
        store.as_ref(),
        new_policy("small", "svc"),
        false,
        1_800_000_000,
        "t",
    )
    .await
    {
        Err(AdminError::Invalid {
            field: "policies",
            message,
        }) => assert!(message.contains("characters"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        count_rows(
            app,
            "SELECT COUNT(*) FROM audit_log WHERE kind LIKE 'policy.%'"
        )
        .await,
        2,
        "refused writes leave no audit record"
    );
}

crate::on_every_backend_with!(
    the_issuer_refuses_what_a_validator_would_not_load,
    the_issuer_refuses_what_a_validator_would_not_load_scenario,
    app_with_admin
);

async fn deleting_a_principal_takes_its_policies_along_scenario(app: &TestApp) {
    use sigil::admin::{clients, users};
    app.create_client("customers", "tmp-svc", "balances:read", "ledger")
        .await;
    app.create_client("customers", "keeper", "balances:read", "ledger")
        .await;
    let store = app.store.clone();
    let s = store.as_ref();
    users::create_group(
        s,
        "customers",
        "auditors",
        "balances:read",
        1_800_000_000,
        "t",
    )
    .await
    .expect("group");
    policies::create(
        s,
        new_policy("tmp-all", "tmp-svc"),
        false,
        1_800_000_000,
        "t",
    )
    .await
    .expect("p1");
    policies::create(
        s,
        new_policy("keeper-read", "keeper"),
        false,
        1_800_000_000,
        "t",
    )
    .await
    .expect("p2");
    let mut by_group = new_policy("auditors-read", "auditors");
    by_group.principal_kind = "group".into();
    policies::create(s, by_group, false, 1_800_000_000, "t")
        .await
        .expect("p3");
    assert_eq!(s.policies("customers").await.expect("list").0, 3);

    clients::delete(s, "customers", "tmp-svc", None, 1_800_000_000, "t")
        .await
        .expect("delete client");
    users::delete_group(s, "customers", "auditors", false, 1_800_000_000, "t")
        .await
        .expect("delete group");
    let (version, left) = s.policies("customers").await.expect("list");
    assert_eq!(
        left.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["keeper-read"]
    );
    assert_eq!(version, 5, "each deletion raised the version once");
    // A client created again under the same id starts with no policies.
    app.create_client("customers", "tmp-svc", "balances:read", "ledger")
        .await;
    assert_eq!(s.policies("customers").await.expect("list").1.len(), 1);
    assert_eq!(
        count_rows(app, "SELECT COUNT(*) FROM audit_log WHERE kind = 'client.deleted' AND detail LIKE '%tmp-all%'").await,
        1,
        "the deletion's audit record names the policies it took along"
    );
}

crate::on_every_backend_with!(
    deleting_a_principal_takes_its_policies_along,
    deleting_a_principal_takes_its_policies_along_scenario,
    app_with_admin
);

async fn a_policy_never_outlives_a_principal_deleted_at_the_same_time_scenario(app: &TestApp) {
    use sigil::admin::clients;
    let store = app.store.clone();
    for round in 0..6 {
        let id = format!("racer-{round}");
        app.create_client("customers", &id, "balances:read", "ledger")
            .await;
        // Policies for the client written while it is deleted: each write lands before the
        // deletion (which takes it along) or is refused; none is left behind.
        let mut tasks: Vec<tokio::task::JoinHandle<Result<(), String>>> = (0..8)
            .map(|i| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move {
                    match policies::create(
                        store.as_ref(),
                        new_policy(&format!("{id}-p{i}"), &id),
                        false,
                        1_800_000_000,
                        "t",
                    )
                    .await
                    {
                        Ok(_) => Ok(()),
                        Err(AdminError::Invalid {
                            field: "principal", ..
                        }) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                })
            })
            .collect();
        let (store2, id2) = (store.clone(), id.clone());
        tasks.insert(
            4,
            tokio::spawn(async move {
                clients::delete(store2.as_ref(), "customers", &id2, None, 1_800_000_000, "t")
                    .await
                    .map_err(|e| e.to_string())
            }),
        );
        for t in tasks {
            t.await.expect("join").expect("no error but a refusal");
        }
        assert_eq!(
            store
                .policy_names_of("customers", "client", &id)
                .await
                .expect("names"),
            Vec::<String>::new(),
            "round {round}: a policy outlived its deleted client"
        );
        // The deletion's audit record names exactly the policies written before it.
        let mut written = Vec::new();
        let mut deleted = false;
        for r in app.audit().await {
            let detail: Value = serde_json::from_str(&r.detail).expect("detail");
            match r.kind.as_str() {
                "policy.created" if detail["principal"] == id.as_str() => {
                    assert!(!deleted, "round {round}: written after the deletion");
                    written.push(detail["name"].as_str().expect("name").to_owned());
                }
                "client.deleted" if r.subject.as_deref() == Some(id.as_str()) => {
                    let mut named: Vec<String> =
                        serde_json::from_value(detail["policies_removed"].clone()).expect("names");
                    named.sort();
                    written.sort();
                    assert_eq!(named, written, "round {round}");
                    deleted = true;
                }
                _ => {}
            }
        }
        assert!(deleted);
    }
}

crate::on_every_backend_with!(
    a_policy_never_outlives_a_principal_deleted_at_the_same_time,
    a_policy_never_outlives_a_principal_deleted_at_the_same_time_scenario,
    app_with_admin
);

/// Four-eyes: in a protected realm a policy's write and deletion through the API are requests
/// (202, nothing written, the bundle's version unchanged) holding the whole policy; a policy that
/// would be refused now, or a deletion of no policy, files nothing; the requester cannot approve;
/// of six approvals at once exactly one applies; a realm that is not protected is not held.
async fn policies_under_four_eyes_scenario(app: &TestApp) {
    let alice = app
        .create_client("admin", "alice", "sigil:admin", "sigil-admin")
        .await;
    let bob = app
        .create_client("admin", "bob", "sigil:admin", "sigil-admin")
        .await;
    let alice_t = app.token("admin", &alice, None).await;
    let bob_t = app.token("admin", &bob, None).await;
    app.create_client("customers", "svc", "balances:read", "ledger")
        .await;
    let store = app.store.clone();
    let s = store.as_ref();
    let guard = sigil::store::RealmGuard {
        require_approval: false,
        protected: true,
    };
    sigil::admin::changes::set_guard(s, "customers", guard, app.now(), "t")
        .await
        .expect("guard");
    let version = s.policy_version("customers").await.expect("version");
    let changes = "SELECT COUNT(*) FROM change_requests";
    let filed = count_rows(app, changes).await;

    let body = json!({"principal_kind": "client", "principal": "svc", "effect": "ALLOW",
        "actions": ["db:Insert"], "resources": ["financial.ledger.document.*"],
        "assertions": ["context.document.amount <= 10000"]});
    let path = "/admin/realms/customers/policies/ach-insert";
    let (status, req) = call(app, Method::PUT, path, &alice_t, Some(body.clone())).await;
    assert_eq!(status, 202, "{req}");
    assert_eq!(req["state"], "pending");
    assert_eq!(req["change"]["kind"], "policy_put");
    assert_eq!(req["change"]["policy"]["principal"], "svc");
    assert_eq!(
        req["change"]["policy"]["assertions"][0], "context.document.amount <= 10000",
        "the approver sees the whole policy"
    );
    let id = req["id"].as_str().expect("id").to_owned();
    assert_eq!(call(app, Method::GET, path, &alice_t, None).await.0, 404);
    assert_eq!(
        s.policy_version("customers").await.expect("version"),
        version,
        "nothing published"
    );
    assert_eq!(count_rows(app, changes).await, filed + 1);

    // Refused now, so not filed: a bad assertion, a principal the realm does not have, the
    // deletion of a policy that does not exist.
    let mut bad = body.clone();
    bad["assertions"] = json!(["[1].all(x, x > 0)"]);
    assert_eq!(
        call(app, Method::PUT, path, &alice_t, Some(bad)).await.0,
        400
    );
    let mut bad = body.clone();
    bad["principal"] = json!("nobody");
    assert_eq!(
        call(app, Method::PUT, path, &alice_t, Some(bad)).await.0,
        400
    );
    let (status, _) = call(
        app,
        Method::DELETE,
        "/admin/realms/customers/policies/none",
        &alice_t,
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(count_rows(app, changes).await, filed + 1, "nothing filed");

    let approve = format!("/admin/changes/{id}/approve");
    let (status, body_) = call(app, Method::POST, &approve, &alice_t, None).await;
    assert_eq!(status, 400, "the requester cannot approve: {body_}");
    let statuses = crate::admin_api::post_at_once(app, &approve, &bob_t, 6).await;
    assert_eq!(statuses, [200, 400, 400, 400, 400, 400], "applied once");
    let (status, view) = call(app, Method::GET, path, &alice_t, None).await;
    assert_eq!(status, 200);
    assert!(
        view["created_by"]
            .as_str()
            .expect("by")
            .starts_with(&format!(
                "client:bob@admin (approving {id} of client:alice@admin)"
            )),
        "{view}"
    );
    assert_eq!(
        s.policy_version("customers").await.expect("version"),
        version + 1
    );
    assert_eq!(
        count_rows(
            app,
            "SELECT COUNT(*) FROM audit_log WHERE kind IN ('policy.created', 'policy.replaced')"
        )
        .await,
        1
    );

    // The same policy PUT again is already so: 200 with it, nothing filed or written.
    let filed_now = count_rows(app, changes).await;
    let audit_rows = count_rows(app, "SELECT COUNT(*) FROM audit_log").await;
    let mut same = body.clone();
    same["description"] = json!("");
    let (status, again) = call(app, Method::PUT, path, &alice_t, Some(same)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["effect"], "ALLOW");
    assert_eq!(count_rows(app, changes).await, filed_now, "nothing filed");
    assert_eq!(
        count_rows(app, "SELECT COUNT(*) FROM audit_log").await,
        audit_rows
    );
    assert_eq!(
        s.policy_version("customers").await.expect("version"),
        version + 1
    );
    // A different one is still a request.
    let mut other = body.clone();
    other["assertions"] = json!(["context.document.amount <= 20000"]);
    assert_eq!(
        call(app, Method::PUT, path, &alice_t, Some(other)).await.0,
        202
    );

    // The deletion is a request too; applied once approved.
    let (status, req) = call(app, Method::DELETE, path, &alice_t, None).await;
    assert_eq!(status, 202, "{req}");
    assert_eq!(req["change"]["kind"], "policy_delete");
    assert_eq!(call(app, Method::GET, path, &alice_t, None).await.0, 200);
    let approve = format!("/admin/changes/{}/approve", req["id"].as_str().expect("id"));
    let (status, done) = call(app, Method::POST, &approve, &bob_t, None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["change"]["state"], "applied");
    assert_eq!(call(app, Method::GET, path, &alice_t, None).await.0, 404);

    // A group's deletion would take its policies along: refused while it has any, so one admin
    // cannot remove a DENY by deleting (and re-creating) its group.
    sigil::admin::users::create_group(s, "customers", "tellers", "balances:read", app.now(), "t")
        .await
        .expect("group");
    let deny = json!({"principal_kind": "group", "principal": "tellers", "effect": "DENY",
        "actions": ["db:Delete"], "resources": ["*"]});
    let deny_path = "/admin/realms/customers/policies/tellers-deny";
    let (status, req) = call(app, Method::PUT, deny_path, &alice_t, Some(deny.clone())).await;
    assert_eq!(status, 202, "{req}");
    let approve = format!("/admin/changes/{}/approve", req["id"].as_str().expect("id"));
    assert_eq!(call(app, Method::POST, &approve, &bob_t, None).await.0, 200);
    let group_path = "/admin/realms/customers/groups/tellers";
    let (status, problem) = call(app, Method::DELETE, group_path, &alice_t, None).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        call(app, Method::GET, deny_path, &alice_t, None).await.0,
        200
    );
    let (_, groups) = call(
        app,
        Method::GET,
        "/admin/realms/customers/groups",
        &alice_t,
        None,
    )
    .await;
    assert!(groups.to_string().contains("\"tellers\""), "{groups}");

    // A deletion holds the policy as it was when filed: once the policy is replaced (through
    // another request), approving the old deletion deletes nothing.
    let (status, stale) = call(app, Method::DELETE, deny_path, &alice_t, None).await;
    assert_eq!(status, 202, "{stale}");
    assert_eq!(stale["change"]["policy"]["effect"], "DENY");
    let mut wider = deny.clone();
    wider["actions"] = json!(["db:Delete", "db:Update"]);
    let (status, req) = call(app, Method::PUT, deny_path, &alice_t, Some(wider)).await;
    assert_eq!(status, 202, "{req}");
    let approve = format!("/admin/changes/{}/approve", req["id"].as_str().expect("id"));
    assert_eq!(call(app, Method::POST, &approve, &bob_t, None).await.0, 200);
    let approve = format!(
        "/admin/changes/{}/approve",
        stale["id"].as_str().expect("id")
    );
    let (status, done) = call(app, Method::POST, &approve, &bob_t, None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["change"]["state"], "failed", "{done}");
    let (_, view) = call(app, Method::GET, deny_path, &alice_t, None).await;
    assert_eq!(view["actions"], json!(["db:Delete", "db:Update"]));
    // Deleted through a request filed now; then the group may go.
    let (_, req) = call(app, Method::DELETE, deny_path, &alice_t, None).await;
    let approve = format!("/admin/changes/{}/approve", req["id"].as_str().expect("id"));
    let (_, done) = call(app, Method::POST, &approve, &bob_t, None).await;
    assert_eq!(done["change"]["state"], "applied", "{done}");
    assert_eq!(
        call(app, Method::DELETE, group_path, &alice_t, None)
            .await
            .0,
        204
    );

    // The staff realm is not protected: a write is applied at once.
    app.create_client("staff", "teller", "balances:read", "ledger")
        .await;
    let mut staff = body.clone();
    staff["principal"] = json!("teller");
    let (status, view) = call(
        app,
        Method::PUT,
        "/admin/realms/staff/policies/teller-insert",
        &alice_t,
        Some(staff),
    )
    .await;
    assert_eq!(status, 200, "{view}");
}

crate::on_every_backend_with!(
    policies_under_four_eyes,
    policies_under_four_eyes_scenario,
    app_with_admin
);

/// In a realm whose policies change only through four-eyes, a group deleted while policies are
/// written for it: each write lands first (and the deletion is refused) or is refused (no
/// group); never a group gone with its policies, and never a policy left for a missing group.
async fn a_guarded_group_keeps_its_policies_under_races_scenario(app: &TestApp) {
    use sigil::admin::users;
    let store = app.store.clone();
    for round in 0..6 {
        let group = format!("crew-{round}");
        users::create_group(
            store.as_ref(),
            "customers",
            &group,
            "a:b",
            1_800_000_000,
            "t",
        )
        .await
        .expect("group");
        let mut tasks: Vec<tokio::task::JoinHandle<Result<bool, String>>> = (0..8)
            .map(|i| {
                let (store, group) = (store.clone(), group.clone());
                tokio::spawn(async move {
                    let mut p = new_policy(&format!("{group}-p{i}"), &group);
                    p.principal_kind = "group".into();
                    match policies::create(store.as_ref(), p, false, 1_800_000_000, "t").await {
                        Ok(_) => Ok(true),
                        Err(AdminError::Invalid {
                            field: "principal", ..
                        }) => Ok(false),
                        Err(e) => Err(e.to_string()),
                    }
                })
            })
            .collect();
        let (store2, group2) = (store.clone(), group.clone());
        tasks.insert(
            4,
            tokio::spawn(async move {
                match users::delete_group(
                    store2.as_ref(),
                    "customers",
                    &group2,
                    true,
                    1_800_000_000,
                    "t",
                )
                .await
                {
                    Ok(()) => Ok(true),
                    Err(AdminError::Conflict(_)) => Ok(false),
                    Err(e) => Err(e.to_string()),
                }
            }),
        );
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.expect("join").expect("no error but a refusal"));
        }
        let deleted = outcomes[4];
        let written = outcomes
            .iter()
            .enumerate()
            .filter(|(i, w)| *i != 4 && **w)
            .count();
        let left = store
            .policy_names_of("customers", "group", &group)
            .await
            .expect("names");
        assert_eq!(
            left.len(),
            written,
            "round {round}: every written policy stays"
        );
        assert!(
            !(deleted && written > 0),
            "round {round}: the group went although {written} policies were written for it"
        );
    }
}

crate::on_every_backend_with!(
    a_guarded_group_keeps_its_policies_under_races,
    a_guarded_group_keeps_its_policies_under_races_scenario,
    app_with_admin
);

/// Two nodes on one database, each writing its own audit chain (so the chain's head does not
/// order their transactions): policy writes and deletions of the same names on both at once
/// take the policy version's lock before any policy row, and never deadlock.
async fn writers_on_two_chains_never_deadlock_scenario(app: &TestApp) {
    app.create_client("customers", "svc", "balances:read", "ledger")
        .await;
    let kek_path = app._dir.path().join("keys/kek");
    let mut config = sigil::config::Config::for_tests(&app.database_url, &kek_path);
    config.db.audit_chain = "node-b".into();
    let b = sigil::Application::build(config).await.expect("node b");
    let stores = [app.store.clone(), b.state().store.clone()];
    for round in 0..6 {
        let name: &'static str = ["d0", "d1", "d2", "d3", "d4", "d5"][round];
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16 {
            tasks.spawn(put_or_delete(stores[i % 2].clone(), name, i % 4 >= 2));
        }
        for r in tasks.join_all().await {
            r.unwrap_or_else(|e| panic!("{:?} round {round}: {e}", app.backend));
        }
    }
}

crate::on_every_backend_with!(
    policy_writers_on_two_chains_never_deadlock,
    writers_on_two_chains_never_deadlock_scenario,
    app_with_admin
);
