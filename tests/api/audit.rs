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
        sigil::admin::audit::verify(app.store.as_ref(), Some(app.kek.as_ref()))
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
    match sigil::admin::audit::verify(app.store.as_ref(), Some(app.kek.as_ref()))
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

async fn verify_expect_broken(app: &TestApp, what: &str) -> i64 {
    match sigil::admin::audit::verify(app.store.as_ref(), Some(app.kek.as_ref()))
        .await
        .expect("verify")
    {
        VerifyReport::Broken { seq, .. } => seq,
        other => panic!("{what}: not detected: {other:?}"),
    }
}

/// The chain head (`audit_heads`, which appends chain onto) is part of the chain: a head that is
/// deleted, rolled back or edited is reported as broken, by the library and by `sigil audit
/// verify`. (audit_heads has no triggers: appends update it; an operator with SQL access can
/// edit it, as this test does.)
async fn verify_checks_the_chain_head(app: &TestApp) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "balances:read", "ledger")
        .await;
    for _ in 0..2 {
        app.token("ledger", &c, None).await;
    }
    let rows = app.audit().await;
    let last = rows.last().expect("rows");
    let (n, last_hash, prev_hash) = (
        last.seq,
        last.hash.clone(),
        rows[rows.len() - 2].hash.clone(),
    );
    assert_eq!(n, 5);
    let restore =
        format!("UPDATE audit_heads SET seq = {n}, hash = '{last_hash}' WHERE chain = 'main'");
    let cli_verify = |app: &TestApp| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["--database-url", &app.database_url, "audit", "verify"])
            .current_dir(app._dir.path())
            .env("SIGIL_LOG", "warn")
            .output()
            .expect("run sigil")
    };
    let out = cli_verify(app);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    for (what, tamper, broken_at) in [
        (
            "head rolled back one row",
            format!(
                "UPDATE audit_heads SET seq = {}, hash = '{prev_hash}' WHERE chain = 'main'",
                n - 1
            ),
            n,
        ),
        (
            "head ahead of the rows (tail rows deleted)",
            format!(
                "UPDATE audit_heads SET seq = {} WHERE chain = 'main'",
                n + 2
            ),
            n + 1,
        ),
        (
            "head hash edited",
            "UPDATE audit_heads SET hash = 'ff' WHERE chain = 'main'".to_owned(),
            n,
        ),
        ("head deleted", "DELETE FROM audit_heads".to_owned(), n),
    ] {
        exec_raw(app, &tamper).await.expect(what);
        assert_eq!(verify_expect_broken(app, what).await, broken_at, "{what}");
        let out = cli_verify(app);
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("BROKEN"),
            "{what}"
        );
        if what == "head deleted" {
            exec_raw(
                app,
                &format!(
                    "INSERT INTO audit_heads (chain, seq, hash) VALUES ('main', {n}, '{last_hash}')"
                ),
            )
            .await
            .expect("restore");
        } else {
            exec_raw(app, &restore).await.expect("restore");
        }
        assert!(
            matches!(
                sigil::admin::audit::verify(app.store.as_ref(), Some(app.kek.as_ref()))
                    .await
                    .expect("verify"),
                VerifyReport::Intact { rows: 5, .. }
            ),
            "restored after {what}"
        );
    }
}
on_every_backend!(verify_checks_head, verify_checks_the_chain_head);

/// Anchors outside the database: a database owner who drops the triggers and cuts the log back to
/// an earlier consistent state (rows and head together) leaves a chain that verifies on its own;
/// the anchor file names a head that is no longer there. An edited anchor fails its seal.
/// `audit export` prints every row as a JSON line.
async fn anchors_outside_the_database_reveal_a_cut_back_log(
    app: &TestApp,
    anchors: &std::path::Path,
    sink: &std::path::Path,
) {
    app.create_realm("ledger", Alg::ES256).await;
    let c = app
        .create_client("ledger", "svc", "balances:read", "ledger")
        .await;
    for _ in 0..3 {
        app.token("ledger", &c, None).await;
    }
    let head = app.audit().await.last().expect("rows").seq;
    // The checkpoint task (every second here) anchors the heads it seals.
    let mut anchored = false;
    for _ in 0..50 {
        let text = std::fs::read_to_string(anchors).unwrap_or_default();
        anchored = text.lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                v["heads"]
                    .as_array()
                    .is_some_and(|hs| hs.iter().any(|h| h["seq"].as_i64() >= Some(head)))
            })
        });
        if anchored {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(anchored, "no anchor names head {head}");
    // The HTTP sink got the same lines (it keeps only requests with its bearer token).
    let mut sent = String::new();
    for _ in 0..50 {
        sent = std::fs::read_to_string(sink).unwrap_or_default();
        if sent.lines().count() >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let in_file = std::fs::read_to_string(anchors).unwrap_or_default();
    let first = sent.lines().next().expect("the sink got an anchor");
    assert!(
        in_file.lines().any(|l| l == first),
        "{first} not in {in_file}"
    );
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
            .args(["--database-url", &app.database_url])
            .args(args)
            .current_dir(app._dir.path())
            .env("SIGIL_LOG", "warn")
            .output()
            .expect("run sigil");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let file = anchors.to_str().expect("path");
    let (code, out) = cli(&["audit", "verify", "--checkpoints", file]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("anchors hold"), "{out}");

    // Export: one JSON line per row, from the given sequence number on.
    let (code, out) = cli(&["audit", "export", "--after", "2"]);
    assert_eq!(code, Some(0));
    let rows = app.audit().await;
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), rows.iter().filter(|r| r.seq > 2).count());
    assert_eq!(lines[0]["seq"], 3);
    assert!(
        lines
            .iter()
            .all(|l| l["hash"].is_string() && l["detail"].is_object())
    );

    // The owner cuts the log back to row 3: rows after it deleted, the head row set to it.
    let keep = rows.iter().find(|r| r.seq == 3).expect("row 3").clone();
    let unguard = match app.backend {
        Backend::Sqlite => "DROP TRIGGER audit_log_no_delete",
        Backend::Postgres => "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
    };
    exec_raw(app, unguard).await.expect("unguard");
    exec_raw(app, "DELETE FROM audit_log WHERE seq > 3")
        .await
        .expect("cut");
    exec_raw(
        app,
        &format!(
            "UPDATE audit_heads SET seq = 3, hash = '{}' WHERE chain = 'main'",
            keep.hash
        ),
    )
    .await
    .expect("head");
    // On its own the log verifies...
    let (code, out) = cli(&["audit", "verify"]);
    assert_eq!(
        code,
        Some(0),
        "a consistent cut is invisible from inside: {out}"
    );
    // ...the anchors do not.
    let (code, out) = cli(&["audit", "verify", "--checkpoints", file]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cut back"), "{out}");
    let (code, out) = cli(&[
        "audit",
        "verify",
        "--checkpoints",
        sink.to_str().expect("path"),
    ]);
    assert_eq!(
        code,
        Some(1),
        "what the HTTP sink kept reveals it too: {out}"
    );

    // An anchor edited to match the cut log fails its seal.
    let text = std::fs::read_to_string(anchors).expect("anchors");
    let mut v: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("line")).expect("json");
    v["heads"][0]["seq"] = serde_json::json!(3);
    v["heads"][0]["hash"] = serde_json::json!(keep.hash);
    let forged = app._dir.path().join("forged.jsonl");
    std::fs::write(&forged, format!("{v}\n")).expect("write");
    let (code, out) = cli(&[
        "audit",
        "verify",
        "--checkpoints",
        forged.to_str().expect("path"),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("seal does not hold"), "{out}");
}

#[tokio::test]
async fn anchors_reveal_a_cut_back_log() {
    for backend in crate::helpers::backends() {
        let outside = tempfile::tempdir().expect("tmp");
        let anchors = outside.path().join("anchors.jsonl");
        let sink = outside.path().join("sink.jsonl");
        let url = anchor_sink(sink.clone(), "sink-token-0123456789").await;
        let file = anchors.clone();
        let app = crate::helpers::spawn_app_with(backend, None, move |c| {
            c.audit_checkpoint_secs = 1;
            c.audit_anchor_file = Some(file);
            c.audit_anchor_url = Some(url);
            c.audit_anchor_token = Some("sink-token-0123456789".into());
        })
        .await;
        anchors_outside_the_database_reveal_a_cut_back_log(&app, &anchors, &sink).await;
    }
}

/// An HTTP anchor sink: appends each POSTed body that carries `Bearer {token}` to `file` as a
/// line; anything else is 401 and kept nowhere.
async fn anchor_sink(file: std::path::PathBuf, token: &'static str) -> url::Url {
    use axum::http::{HeaderMap, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/anchors",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let file = file.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                if auth != Some(&format!("Bearer {token}"))
                    || serde_json::from_str::<serde_json::Value>(&body).is_err()
                {
                    return StatusCode::UNAUTHORIZED;
                }
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&file)
                    .expect("open");
                writeln!(f, "{body}").expect("write");
                StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url::Url::parse(&format!("http://127.0.0.1:{}/anchors", addr.port())).expect("url")
}
