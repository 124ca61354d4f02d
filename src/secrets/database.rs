//! The database URL from a Secrets Manager secret, and the task that fetches it again when the
//! database refuses the password (a rotation), so a node keeps serving without a restart.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Deserialize;

use super::{SecretError, SecretValue, Stage, fetch};
use crate::config::Config;
use crate::store::{self, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The bank's form of a database secret (and RDS's: `dbname` for `database`).
#[derive(Deserialize)]
struct DbSecret {
    host: Option<String>,
    port: Option<serde_json::Value>,
    #[serde(alias = "dbname")]
    database: Option<String>,
    username: Option<String>,
    password: Option<String>,
    pooler_url: Option<String>,
}

/// Opens the configured database: `database_url`, or the URL `database_url_secret` holds. With a
/// secret, a task re-fetches it whenever the database refuses authentication.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, OpenError> {
    let Some(id) = &config.database_url_secret else {
        return Ok(store::open(&config.database_url, &config.db).await?);
    };
    let url = current_url(id).await?;
    let store = store::open(&url, &config.db).await?;
    tracing::info!(secret = %id, "database URL read from AWS Secrets Manager");
    if !url.starts_with("sqlite:") {
        tokio::spawn(refresh_on_refusal(Arc::downgrade(&store), id.clone(), url));
    }
    Ok(store)
}

async fn current_url(id: &str) -> Result<String, SecretError> {
    match fetch(id, Stage::Current).await? {
        Some(v) => url_from_secret(id, v),
        None => Err(SecretError::Format {
            id: id.to_owned(),
            problem: "has no current version".into(),
        }),
    }
}

/// Waits for a refusal, then tries the secret's current version and the one a rotation is
/// putting in place, keeping the first that connects; until one does, tries again with a
/// backoff of 1 s doubling to 30 s. Ends when the store is dropped.
async fn refresh_on_refusal(store: Weak<dyn Store>, id: String, mut in_use: String) {
    loop {
        store::auth_refused().await;
        let mut backoff = Duration::from_secs(1);
        loop {
            let Some(s) = store.upgrade() else { return };
            match refresh_once(s.as_ref(), &id, &in_use).await {
                Ok(Some(url)) => {
                    tracing::warn!(secret = %id, "database refused the password; now using the secret's new value");
                    in_use = url;
                    break;
                }
                Ok(None) => {
                    // The URL in use connects: the refusal was about a connection made before.
                    break;
                }
                Err(e) => {
                    tracing::error!(secret = %id, error = %e, "database refuses the password and no version of the secret connects; trying again");
                }
            }
            drop(s);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        // One refresh per second at most, however many requests saw the refusal.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `Ok(Some(url))`: switched to `url`; `Ok(None)`: the URL in use still connects.
async fn refresh_once(s: &dyn Store, id: &str, in_use: &str) -> Result<Option<String>, OpenError> {
    let mut last = None;
    for stage in [Stage::Current, Stage::Pending] {
        // A version that cannot be read or used does not stop the other one being tried.
        let value = match fetch(id, stage).await {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                last = Some(OpenError::Secret(e));
                continue;
            }
        };
        let url = match url_from_secret(id, value) {
            Ok(url) => url,
            Err(e) => {
                last = Some(OpenError::Secret(e));
                continue;
            }
        };
        // Only the password may change: a secret that now names another server, database or
        // user is not followed by a running node (it could point the node at a database whose
        // keys and clients are someone else's); a restart, with its checks, may follow it.
        if !same_database(&url, in_use) {
            last = Some(OpenError::Secret(SecretError::Format {
                id: id.to_owned(),
                problem: "now names another host, port, database or user than the node uses; \
                          only a new password is followed without a restart"
                    .into(),
            }));
            continue;
        }
        match s.use_database_url(&url).await {
            Ok(()) if url == in_use => return Ok(None),
            Ok(()) => return Ok(Some(url)),
            Err(e) => last = Some(OpenError::Store(e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        OpenError::Secret(SecretError::Format {
            id: id.to_owned(),
            problem: "has no current version".into(),
        })
    }))
}

/// Whether two database URLs name the same scheme, host, port, database, user and options
/// (anything but the password).
fn same_database(a: &str, b: &str) -> bool {
    let strip = |u: &str| {
        url::Url::parse(u).ok().map(|mut u| {
            let _ = u.set_password(None);
            u.to_string()
        })
    };
    match (strip(a), strip(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A user or password as it must stand in a URL that sqlx percent-decodes once: every byte but
/// the unreserved ones encoded, so a password holding `%41` stays `%41`.
fn userinfo(text: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, SET).to_string()
}

/// The database URL a secret's value stands for: a URL as plain text, or the JSON form (where a
/// `pooler_url` wins over `host`/`port`/`database`, taking the secret's user and password when it
/// names none). Errors never quote the value.
pub fn url_from_secret(id: &str, value: SecretValue) -> Result<String, SecretError> {
    let bad = |problem: &str| SecretError::Format {
        id: id.to_owned(),
        problem: problem.to_owned(),
    };
    let text = match value {
        SecretValue::Text(t) => t,
        SecretValue::Binary(b) => {
            String::from_utf8(b).map_err(|_| bad("is binary, not a URL or JSON"))?
        }
    };
    let text = text.trim();
    if !text.starts_with('{') {
        return check_url(text).map_err(&bad);
    }
    let s: DbSecret =
        serde_json::from_str(text).map_err(|_| bad("is not valid JSON of the expected form"))?;
    if let Some(pooler) = s.pooler_url.as_deref().filter(|p| !p.trim().is_empty()) {
        let mut url = url::Url::parse(pooler.trim())
            .map_err(|_| bad("has a pooler_url that is not a URL"))?;
        if url.username().is_empty()
            && let Some(user) = &s.username
        {
            url.set_username(&userinfo(user))
                .map_err(|_| bad("has a username that cannot be put in a URL"))?;
        }
        if url.password().is_none()
            && let Some(password) = &s.password
        {
            url.set_password(Some(&userinfo(password)))
                .map_err(|_| bad("has a password that cannot be put in a URL"))?;
        }
        return check_url(url.as_str()).map_err(&bad);
    }
    let host = s
        .host
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("has no host"))?;
    let user = s
        .username
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("has no username"))?;
    let port = match s.port {
        None => 5432,
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| bad("has a port out of range"))?,
        Some(serde_json::Value::String(p)) => p
            .trim()
            .parse::<u16>()
            .map_err(|_| bad("has a port that is not a number"))?,
        Some(_) => return Err(bad("has a port that is not a number")),
    };
    let mut url =
        url::Url::parse("postgres://localhost").map_err(|_| bad("cannot be made a URL"))?;
    url.set_host(Some(&host))
        .map_err(|_| bad("has a host that is not a host name"))?;
    url.set_port(Some(port))
        .map_err(|_| bad("has a bad port"))?;
    url.set_username(&userinfo(&user))
        .map_err(|_| bad("has a username that cannot be put in a URL"))?;
    url.set_password(s.password.as_deref().map(userinfo).as_deref())
        .map_err(|_| bad("has a password that cannot be put in a URL"))?;
    if let Some(db) = s.database.filter(|d| !d.is_empty()) {
        url.set_path(&format!(
            "/{}",
            percent_encoding::utf8_percent_encode(&db, percent_encoding::NON_ALPHANUMERIC)
        ));
    }
    Ok(url.to_string())
}

fn check_url(text: &str) -> Result<String, &'static str> {
    if text.starts_with("postgres://")
        || text.starts_with("postgresql://")
        || text.starts_with("sqlite:")
    {
        Ok(text.to_owned())
    } else {
        Err("does not hold a postgres://, postgresql:// or sqlite: URL")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(v: &str) -> Result<String, SecretError> {
        url_from_secret("db", SecretValue::Text(v.to_owned()))
    }

    #[test]
    fn the_bank_form_rds_form_pooler_and_plain_url() {
        assert_eq!(
            url(r#"{"host":"db.internal","port":5433,"database":"sigil","username":"app","password":"p@ss/w:rd"}"#).expect("bank form"),
            "postgres://app:p%40ss%2Fw%3Ard@db.internal:5433/sigil"
        );
        assert_eq!(
            url(r#"{"engine":"postgres","host":"h","port":"5432","dbname":"d","username":"u","password":"p"}"#).expect("rds form"),
            "postgres://u:p@h:5432/d"
        );
        assert_eq!(
            url(r#"{"host":"h","database":"d","username":"u","password":"p","pooler_url":"postgres://pgbouncer:6432/d"}"#).expect("pooler"),
            "postgres://u:p@pgbouncer:6432/d"
        );
        assert_eq!(
            url(" postgres://u:p@h/d\n").expect("plain"),
            "postgres://u:p@h/d"
        );
    }

    #[test]
    fn passwords_survive_the_url_exactly_and_only_the_password_may_change() {
        for password in ["a%25b", "p%41q", "Pa@ss/wo#rd?x=1&y%20Z", "a+b c:d;e'f"] {
            let secret = serde_json::json!({"host": "h", "username": "u%41", "password": password});
            let u = url(&secret.to_string()).expect("url");
            let opts: sqlx::postgres::PgConnectOptions = u.parse().expect("sqlx parses it");
            assert_eq!(opts.get_username(), "u%41");
            let parsed = url::Url::parse(&u).expect("url");
            let decoded = percent_encoding::percent_decode_str(parsed.password().expect("pw"))
                .decode_utf8()
                .expect("utf8");
            assert_eq!(decoded, password);
        }
        assert!(same_database(
            "postgres://u:a@h:5432/d",
            "postgres://u:b@h:5432/d"
        ));
        assert!(!same_database(
            "postgres://u:a@h:5432/d",
            "postgres://u:a@h:5432/other"
        ));
        assert!(!same_database(
            "postgres://u:a@h:5432/d",
            "postgres://v:a@h:5432/d"
        ));
        assert!(!same_database(
            "postgres://u:a@h:5432/d",
            "postgres://u:a@evil:5432/d"
        ));
    }

    #[test]
    fn bad_secrets_are_refused_without_quoting_them() {
        for bad in [
            r#"{"host":"h","username":"u","password":"hunter2hunter2","port":"hunter2hunter2"}"#,
            r#"{"username":"u","password":"hunter2hunter2"}"#,
            r#"{"host":"h","password":"hunter2hunter2"}"#,
            r#"{"host":"h","username":"u","password":hunter2hunter2}"#,
            "mysql://u:hunter2hunter2@h/d",
            r#"{"host":"h","username":"u","password":"hunter2hunter2","port":99999}"#,
        ] {
            let e = url(bad).expect_err(bad).to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("secret db"), "{e}");
        }
    }
}
