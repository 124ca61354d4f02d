//! A KEK rotation rolled out with every node running: nodes hold a ring (the KEK they seal with
//! and the ones they still open with), so keys sealed by one node during the rollout open on the
//! other, scheduled key generation goes on throughout, and `sigil kek rotate` then moves
//! everything (signing keys and TOTP secrets) under the new KEK. A node with only the old KEK is
//! refused afterwards, naming the KEK.

use std::time::Duration;

use serde_json::Value;
use sigil::keys::{FileKek, KekSource};

use crate::helpers::{backends, fresh_database, spawn_node};

fn cli(db: &str, kek: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let env: Vec<(&str, &str)> = [("SIGIL_JWKS_MAX_AGE_SECS", "1")]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let (code, out, err) = crate::helpers::run_cli(db, kek, &env, args);
    (code == 0, format!("{out}{err}"))
}

#[tokio::test]
async fn a_kek_rotation_rolls_out_with_both_nodes_running() {
    let _turn = crate::helpers::HEAVY.lock().await;
    for backend in backends() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = fresh_database(backend, dir.path()).await;
        let (old, new) = (dir.path().join("kek-old"), dir.path().join("kek-new"));
        let (old_kek, _) = FileKek::create_or_load(&old).expect("old kek");
        let (new_kek, _) = FileKek::create_or_load(&new).expect("new kek");
        let (old_s, new_s) = (old.to_str().expect("p"), new.to_str().expect("p"));

        // A realm whose keys rotate every 4 s (published 2 s ahead), so key generation runs
        // all through the rollout; a client; a user with a TOTP secret sealed under the old KEK.
        let (ok, out) = cli(
            &db.url,
            &old,
            &[],
            &[
                "realm",
                "create",
                "r",
                "--rotation-period",
                "4",
                "--prepublish",
                "2",
            ],
        );
        assert!(ok, "{out}");
        let (ok, out) = cli(
            &db.url,
            &old,
            &[],
            &[
                "client",
                "create",
                "--realm",
                "r",
                "--id",
                "svc",
                "--scope",
                "a",
                "--audience",
                "ledger",
            ],
        );
        assert!(ok, "{out}");
        let secret = serde_json::from_str::<Value>(&out).expect("json")["client_secret"]
            .as_str()
            .expect("secret")
            .to_owned();
        let store = sigil::store::connect(&db.url).await.expect("store");
        let user = sigil::admin::users::create(
            store.as_ref(),
            &crate::helpers::unused_kek(),
            "r",
            "alice",
            &[],
            &[],
            0,
            "t",
        )
        .await
        .expect("user");
        let totp_secret = b"twenty-byte-secret!!";
        let aad = sigil::identity::totp::aad("r", &user.id);
        let sealed = old_kek.seal(&aad, totp_secret).expect("seal");
        let change = sigil::store::login::CredentialChange::ReplaceTotp { sealed, step: 0 };
        assert!(
            store
                .change_credentials("r", &user.id, "", &change, 0, &[])
                .await
                .expect("totp")
        );

        // Mid-rollout: node a seals with the old KEK and opens the new; node b the other way.
        let a = spawn_node(
            &db.url,
            &old,
            &[
                ("SIGIL_KEK_PREVIOUS_FILES", new_s),
                ("SIGIL_ROTATION_CHECK_SECS", "1"),
                ("SIGIL_JWKS_MAX_AGE_SECS", "1"),
                ("SIGIL_CACHE_TTL_SECS", "1"),
            ],
        );
        let b = spawn_node(
            &db.url,
            &new,
            &[
                ("SIGIL_KEK_PREVIOUS_FILES", old_s),
                ("SIGIL_ROTATION_CHECK_SECS", "1"),
                ("SIGIL_JWKS_MAX_AGE_SECS", "1"),
                ("SIGIL_CACHE_TTL_SECS", "1"),
            ],
        );
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let mut kids = std::collections::BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(9);
        let mut grants = 0;
        while tokio::time::Instant::now() < deadline {
            for node in [&a, &b] {
                let res = http
                    .post(format!("{}/realms/r/oauth2/token", node.1))
                    .basic_auth("svc", Some(&secret))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await
                    .expect("token");
                assert_eq!(res.status(), 200, "every grant on every node");
                let token = res.json::<Value>().await.expect("json")["access_token"]
                    .as_str()
                    .expect("token")
                    .to_owned();
                kids.insert(
                    crate::helpers::decode_part(&token, 0)["kid"]
                        .as_str()
                        .expect("kid")
                        .to_owned(),
                );
                grants += 1;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(kids.len() >= 2, "keys rotated during the rollout: {kids:?}");
        let sealed_under = store.kek_ids_in_use().await.expect("ids");
        eprintln!(
            "{grants} grants, {} signing keys, sealed under {sealed_under:?}",
            kids.len()
        );

        // The rotation itself, run while both nodes keep generating keys.
        let (ok, out) = cli(
            &db.url,
            &new,
            &[("SIGIL_KEK_PREVIOUS_FILES", old_s)],
            &["kek", "rotate", "--new-kek", new_s],
        );
        assert!(ok, "{out}");
        drop((a, b));
        // Anything sealed under the old KEK after the rotation read (node a's scheduler) is
        // finished by running it again: it skips what is already under the new KEK.
        let (ok, out) = cli(
            &db.url,
            &new,
            &[("SIGIL_KEK_PREVIOUS_FILES", old_s)],
            &["kek", "rotate", "--new-kek", new_s],
        );
        assert!(ok, "{out}");
        assert_eq!(
            store.kek_ids_in_use().await.expect("ids"),
            vec![new_kek.id().to_owned()]
        );
        // The TOTP secret moved too: it opens with the new KEK alone.
        let totps = store.totp_secrets().await.expect("totps");
        assert_eq!(totps.len(), 1);
        assert_eq!(
            new_kek
                .open(&aad, &totps[0].2)
                .expect("opens with the new KEK"),
            totp_secret
        );
        assert!(old_kek.open(&aad, &totps[0].2).is_err());

        // The new KEK alone serves; the old one alone is refused by name.
        let c = spawn_node(&db.url, &new, &[]);
        let res = http
            .post(format!("{}/realms/r/oauth2/token", c.1))
            .basic_auth("svc", Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("token");
        assert_eq!(res.status(), 200);
        let (ok, out) = cli(&db.url, &old, &[], &["key", "list", "--realm", "r"]);
        assert!(ok, "listing needs no KEK: {out}");
        let (ok, out) = cli(&db.url, &old, &[], &["key", "rotate", "--realm", "r"]);
        assert!(!ok && out.contains(new_kek.id()), "{out}");
    }
}
