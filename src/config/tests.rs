//! Tests of the configuration: defaults, validation messages, the database and connection limits,
//! layering.

use std::time::Duration;

use super::connections::max_connections;
use super::*;

#[test]
fn defaults_are_valid() {
    let c = Config::from_settings(Settings::default()).expect("defaults");
    assert_eq!(c.bind.to_string(), DEFAULT_BIND);
    assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
}

#[test]
fn bad_values_name_their_option() {
    let e = Config::from_settings(Settings {
        bind: Some("nope".into()),
        ..Default::default()
    })
    .expect_err("must fail");
    assert!(e.to_string().contains("bind"), "{e}");
    let e = Config::from_settings(Settings {
        database_url: Some("mysql://x".into()),
        ..Default::default()
    })
    .expect_err("must fail");
    assert!(e.to_string().contains("database_url"), "{e}");
    let e = Config::from_settings(Settings {
        public_url: Some("ftp://x".into()),
        ..Default::default()
    })
    .expect_err("must fail");
    assert!(e.to_string().contains("public_url"), "{e}");
    let e = Settings::from_env(|k| (k == "SIGIL_CACHE_TTL_SECS").then(|| "x".to_owned()))
        .expect_err("must fail");
    assert!(e.to_string().contains("SIGIL_CACHE_TTL_SECS"), "{e}");
}

#[test]
fn database_pool_and_deadlines_are_configurable_and_bounded() {
    let c = Config::from_settings(Settings::default()).expect("defaults");
    assert_eq!(c.db, DbOptions::default());
    assert_eq!(c.db.deadline(), Duration::from_secs(10));
    assert_eq!(c.metrics_bind, None);
    let env = Settings::from_env(|k| {
        match k {
            "SIGIL_DATABASE_POOL_SIZE" => Some("48"),
            "SIGIL_DATABASE_CONNECT_TIMEOUT_SECS" => Some("2"),
            "SIGIL_DATABASE_STATEMENT_TIMEOUT_MS" => Some("750"),
            "SIGIL_METRICS_BIND" => Some("127.0.0.1:9100"),
            _ => None,
        }
        .map(str::to_owned)
    })
    .expect("env");
    let c = Config::from_settings(env).expect("valid");
    assert_eq!(c.db.pool_size, 48);
    assert_eq!(c.db.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.db.statement_timeout, Duration::from_millis(750));
    assert_eq!(c.db.deadline(), Duration::from_millis(2750));
    assert_eq!(c.metrics_bind, Some(([127, 0, 0, 1], 9100).into()));
    for (s, option) in [
        (
            Settings {
                database_pool_size: Some(0),
                ..Default::default()
            },
            "database_pool_size",
        ),
        (
            Settings {
                database_connect_timeout_secs: Some(0),
                ..Default::default()
            },
            "database_connect_timeout_secs",
        ),
        (
            Settings {
                database_statement_timeout_ms: Some(10),
                ..Default::default()
            },
            "database_statement_timeout_ms",
        ),
        (
            Settings {
                database_start_wait_secs: Some(3601),
                ..Default::default()
            },
            "database_start_wait_secs",
        ),
        (
            Settings {
                audit_anchor_url: Some("http://siem.bank.example/anchors".into()),
                ..Default::default()
            },
            "audit_anchor_url",
        ),
        (
            Settings {
                audit_anchor_url: Some("https://user:pw@siem.bank.example/anchors".into()),
                ..Default::default()
            },
            "audit_anchor_url",
        ),
        (
            Settings {
                audit_anchor_token_file: Some("/nonexistent/token".into()),
                ..Default::default()
            },
            "audit_anchor_token_file",
        ),
        (
            Settings {
                metrics_bind: Some("everywhere".into()),
                ..Default::default()
            },
            "metrics_bind",
        ),
    ] {
        let e = Config::from_settings(s).expect_err(option);
        assert!(e.to_string().contains(option), "{e}");
    }
}

#[test]
fn the_connection_cap_follows_the_open_file_limit() {
    // systemd's default soft limit: 128 descriptors stay free for the database and files.
    assert_eq!(default_max_connections(Some(1024)), 896);
    assert_eq!(default_max_connections(Some(256)), 192);
    assert_eq!(
        default_max_connections(Some(1 << 20)),
        MAX_CONNECTIONS_CEILING
    );
    assert_eq!(default_max_connections(None), MAX_CONNECTIONS_CEILING);
    assert_eq!(max_connections(None, Some(1024)).expect("default"), 896);
    assert_eq!(max_connections(Some(500), Some(1024)).expect("fits"), 500);
    let e = max_connections(Some(1000), Some(1024)).expect_err("over the limit");
    assert!(
        e.to_string().contains("max_connections") && e.to_string().contains("896"),
        "{e}"
    );
    assert!(max_connections(Some(0), None).is_err());
    assert_eq!(
        max_connections(Some(50_000), None).expect("unlimited"),
        50_000
    );
    let e = Settings::from_env(|k| (k == "SIGIL_MAX_CONNECTIONS").then(|| "many".to_owned()))
        .expect_err("must fail");
    assert!(e.to_string().contains("SIGIL_MAX_CONNECTIONS"), "{e}");
    let s = Settings::from_env(|k| match k {
        "SIGIL_IDLE_TIMEOUT_SECS" => Some("5".to_owned()),
        "SIGIL_AWS_CHALLENGES_PER_MINUTE_PER_IP" => Some("7".to_owned()),
        _ => None,
    })
    .expect("env");
    let c = Config::from_settings(s).expect("valid");
    assert_eq!(
        (c.idle_timeout_secs, c.aws_challenges_per_minute_per_ip),
        (5, 7)
    );
    let e = Config::from_settings(Settings {
        idle_timeout_secs: Some(0),
        ..Default::default()
    })
    .expect_err("must fail");
    assert!(e.to_string().contains("idle_timeout_secs"), "{e}");
}

#[test]
fn later_layers_win() {
    let file = Settings {
        bind: Some("127.0.0.1:1".into()),
        cache_ttl_secs: Some(9),
        ..Default::default()
    };
    let env = Settings {
        bind: Some("127.0.0.1:2".into()),
        ..Default::default()
    };
    let merged = file.merge(env);
    assert_eq!(merged.bind.as_deref(), Some("127.0.0.1:2"));
    assert_eq!(merged.cache_ttl_secs, Some(9));
}

#[test]
fn kek_sources_and_the_database_secret() {
    let c = Config::from_settings(Settings::default()).expect("defaults");
    assert_eq!(c.kek, KekSpec::File(PathBuf::from(DEFAULT_KEK_FILE)));
    let c = Config::from_settings(Settings {
        kek_source: Some("aws-kms:arn:aws:kms:eu-west-2:111122223333:key/abc".into()),
        kek_previous_files: Some(vec![PathBuf::from("/old/kek")]),
        kek_previous_sources: Some(vec!["aws-secretsmanager:sigil/kek".into()]),
        database_url_secret: Some("sigil/db".into()),
        ..Default::default()
    })
    .expect("valid");
    assert_eq!(
        c.kek,
        KekSpec::AwsKms("arn:aws:kms:eu-west-2:111122223333:key/abc".into())
    );
    assert_eq!(
        c.kek_previous,
        [
            KekSpec::File(PathBuf::from("/old/kek")),
            KekSpec::AwsSecretsManager("sigil/kek".into())
        ]
    );
    assert_eq!(c.database_url_secret.as_deref(), Some("sigil/db"));
    assert_eq!(
        KekSpec::parse("x", "file:/a/b").expect("file").to_string(),
        "file:/a/b"
    );
    for (settings, option) in [
        (
            Settings {
                kek_source: Some("vault:x".into()),
                ..Default::default()
            },
            "kek_source",
        ),
        (
            Settings {
                kek_source: Some("aws-kms:".into()),
                ..Default::default()
            },
            "kek_source",
        ),
        (
            Settings {
                kek_source: Some("aws-kms:a b".into()),
                ..Default::default()
            },
            "kek_source",
        ),
        (
            Settings {
                kek_source: Some("aws-kms:k".into()),
                kek_file: Some("/k".into()),
                ..Default::default()
            },
            "kek_source",
        ),
        (
            Settings {
                kek_previous_sources: Some(vec!["nope".into()]),
                ..Default::default()
            },
            "kek_previous_sources",
        ),
        (
            Settings {
                database_url_secret: Some("s".into()),
                database_url: Some("sqlite://x".into()),
                ..Default::default()
            },
            "database_url_secret",
        ),
        (
            Settings {
                database_url_secret: Some("s\u{7}".into()),
                ..Default::default()
            },
            "database_url_secret",
        ),
    ] {
        let e = Config::from_settings(settings).expect_err(option);
        assert!(e.to_string().contains(option), "{e}");
    }
    let env = Settings::from_env(|k| match k {
        "SIGIL_KEK_SOURCE" => Some("aws-secretsmanager:sigil/kek".into()),
        "SIGIL_KEK_PREVIOUS_SOURCES" => Some("file:/a, aws-kms:k".into()),
        "SIGIL_DATABASE_URL_SECRET" => Some("sigil/db".into()),
        _ => None,
    })
    .expect("env");
    let c = Config::from_settings(env).expect("env valid");
    assert_eq!(c.kek, KekSpec::AwsSecretsManager("sigil/kek".into()));
    assert_eq!(c.kek_previous.len(), 2);
    assert_eq!(c.database_url_secret.as_deref(), Some("sigil/db"));
}
