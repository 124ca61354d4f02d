//! The audit log is append-only in the database itself, and `audit verify` names tampering.

use sigil::audit::VerifyReport;
use sigil::keys::Alg;

use crate::helpers::{Backend, TestApp, exec_raw};
use crate::on_every_backend;

async fn update_and_delete_are_refused_by_the_database(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "balances:read", "ledger")
        .await;
    app.token("ledger", &c, None).await;
    let before = app.audit().await;
    assert!(before.len() >= 4);
    for sql in [
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
        "DELETE FROM audit_log",
    ] {
        let err = exec_raw(app, sql).await.expect_err(sql);
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if app.backend == Backend::Postgres {
        let err = exec_raw(app, "TRUNCATE audit_log")
            .await
            .expect_err("truncate");
        assert!(err.contains("append-only"), "{err}");
    }
    let after = app.audit().await;
    assert_eq!(before.len(), after.len());
    assert_eq!(after[0].actor, before[0].actor);
}
on_every_backend!(
    audit_is_append_only,
    update_and_delete_are_refused_by_the_database
);

async fn verify_names_the_first_tampered_row(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "balances:read", "ledger")
        .await;
    for _ in 0..3 {
        app.token("ledger", &c, None).await;
    }
    let rows = app.audit().await;
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "realm.created",
            "key.created",
            "client.created",
            "token.issued",
            "token.issued",
            "token.issued"
        ]
    );
    assert!(matches!(
        sigil::admin::audit::verify(app.store.as_ref())
            .await
            .expect("verify"),
        VerifyReport::Intact { rows: 6, .. }
    ));
    // An attacker with DDL rights drops the trigger and edits row 4.
    let drop = match app.backend {
        Backend::Sqlite => "DROP TRIGGER audit_log_no_update",
        Backend::Postgres => "DROP TRIGGER audit_log_no_update_delete ON audit_log",
    };
    exec_raw(app, drop).await.expect("drop trigger");
    exec_raw(app, "UPDATE audit_log SET detail = '{}' WHERE seq = 4")
        .await
        .expect("tamper");
    match sigil::admin::audit::verify(app.store.as_ref())
        .await
        .expect("verify")
    {
        VerifyReport::Broken { seq, .. } => assert_eq!(seq, 4),
        other => panic!("tampering not detected: {other:?}"),
    }
}
on_every_backend!(
    verify_detects_tampering,
    verify_names_the_first_tampered_row
);
