//! `spawn_app`: the real application on 127.0.0.1:0 with a fresh database (a temp SQLite file, or a
//! fresh PostgreSQL database when TEST_DATABASE_URL is set) and a reqwest client.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::Value;
use sigil::Application;
use sigil::admin;
use sigil::clock::{Clock, MockClock, SystemClock};
use sigil::config::Config;
use sigil::keys::{Alg, FileKek, KekSource};
use sigil::store::Store;
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL too when TEST_DATABASE_URL is set.
pub fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Sqlite];
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        b.push(Backend::Postgres);
    }
    b
}

/// Runs an async scenario once per backend.
#[macro_export]
macro_rules! on_every_backend {
    ($name:ident, $scenario:path) => {
        #[tokio::test]
        async fn $name() {
            for backend in $crate::helpers::backends() {
                let app = $crate::helpers::spawn_app(backend).await;
                $scenario(&app).await;
            }
        }
    };
}

/// Runs an async scenario once per backend, on an app made by `setup(backend)`.
#[macro_export]
macro_rules! on_every_backend_with {
    ($name:ident, $scenario:path, $setup:path) => {
        #[tokio::test]
        async fn $name() {
            for backend in $crate::helpers::backends() {
                let app = $setup(backend).await;
                $scenario(&app).await;
            }
        }
    };
}

/// Held by the tests that load the machine on purpose (floods, nodes under steady load): they
/// take turns, so one's load does not fail another's latency or starvation checks on 2 cores.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct TestApp {
    pub backend: Backend,
    pub base: String,
    /// The mutual-TLS listener's base URL, when `mtls_bind` is set.
    pub mtls_base: Option<String>,
    pub http: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub kek: Arc<dyn KekSource>,
    pub database_url: String,
    /// Drops the PostgreSQL database with the app (declared before `_dir`, dropped first).
    pub _db: TestDb,
    pub clock: Option<MockClock>,
    /// Keeps the temp directory (SQLite file, KEK) alive as long as the app.
    pub _dir: tempfile::TempDir,
}

pub struct Client {
    pub id: String,
    pub secret: String,
}

/// A database for one test. SQLite lives in the test's temp directory; a PostgreSQL database is
/// dropped when this is dropped (panicking tests included), so runs leave nothing behind.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            drop_pg_databases(vec![name]);
        }
    }
}

/// Test databases are named `sigil_test_{unix seconds}_{random}`, so a later run can tell a
/// leftover (from a killed run) from a database another test process is using right now.
const PG_PREFIX: &str = "sigil_test_";
/// A test database older than this is a leftover.
const STALE_AFTER_SECS: i64 = 3600;

/// Creates a fresh database: a path in `dir` for SQLite, a new database on the
/// TEST_DATABASE_URL server for PostgreSQL (the first call in a process also drops leftovers).
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> TestDb {
    match backend {
        Backend::Sqlite => TestDb {
            url: format!("sqlite://{}", dir.join("sigil.db").display()),
            pg_name: None,
        },
        Backend::Postgres => {
            let admin_url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
            static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
            SWEPT
                .get_or_init(|| sweep_stale_databases(&admin_url))
                .await;
            let name = format!("{PG_PREFIX}{}_{}", SystemClock.now(), hex_random());
            let mut conn = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("connect to TEST_DATABASE_URL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create database");
            let mut url = url::Url::parse(&admin_url).expect("url");
            url.set_path(&format!("/{name}"));
            TestDb {
                url: url.to_string(),
                pg_name: Some(name),
            }
        }
    }
}

/// A fresh database's URL. The database outlives the test until a later run sweeps it as stale:
/// prefer [`fresh_database`], whose guard drops it.
#[allow(dead_code)] // no caller left here; kept for branches written against it
pub async fn fresh_database_url(backend: Backend, dir: &std::path::Path) -> String {
    let mut db = fresh_database(backend, dir).await;
    db.pg_name = None;
    db.url.clone()
}

/// Drops test databases other runs left behind (a killed run, a run before the guards existed):
/// every `sigil_test_*` database created more than an hour ago, whether its age comes from our
/// name (`sigil_test_{unix seconds}_...`) or, for older unstamped names, from the creation time
/// of its directory (`pg_stat_file`, which needs a superuser or pg_read_server_files; without
/// it unstamped databases are left alone). Younger ones may belong to a test process running
/// right now and are never touched.
async fn sweep_stale_databases(admin_url: &str) {
    let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await else {
        return;
    };
    let with_file_age = sqlx::query_as::<_, (String, Option<i64>)>(
        "SELECT datname, extract(epoch FROM \
         (pg_stat_file('base/' || oid || '/PG_VERSION')).modification)::bigint \
         FROM pg_database WHERE starts_with(datname, $1)",
    )
    .bind(PG_PREFIX)
    .fetch_all(&mut conn)
    .await;
    let databases = match with_file_age {
        Ok(rows) => rows,
        Err(_) => sqlx::query_as::<_, (String, Option<i64>)>(
            "SELECT datname, NULL::bigint FROM pg_database WHERE starts_with(datname, $1)",
        )
        .bind(PG_PREFIX)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default(),
    };
    let _ = conn.close().await;
    let now = SystemClock.now();
    let stale: Vec<String> = databases
        .into_iter()
        .filter(|(name, file_born)| {
            let named_born = name
                .strip_prefix(PG_PREFIX)
                .and_then(|rest| rest.split_once('_'))
                .and_then(|(secs, _)| secs.parse::<i64>().ok());
            named_born
                .or(*file_born)
                .is_some_and(|born| now - born > STALE_AFTER_SECS)
        })
        .map(|(name, _)| name)
        .collect();
    if !stale.is_empty() {
        drop_pg_databases(stale);
    }
}

/// Drops each database (`WITH (FORCE)`: a server task of the test may still hold connections)
/// through a fresh connection. Runs on a thread with its own
/// small runtime: a `Drop` may run inside a tokio runtime, where blocking on one would panic.
fn drop_pg_databases(names: Vec<String>) {
    let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") else {
        return;
    };
    let worker = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await else {
                return;
            };
            // The test's runtime is blocked while this runs (the guard is dropped on it): a
            // connection the app was opening at that moment stays half-authenticated until the
            // server's authentication_timeout (60 s), and DROP ... WITH (FORCE) waits for it.
            // Give up after a few seconds instead; a later run sweeps what is left as stale.
            let _ = sqlx::query("SET statement_timeout = '3s'")
                .execute(&mut conn)
                .await;
            for name in names {
                // Names come from pg_database or from us, and are quoted all the same.
                let quoted = name.replace('"', "\"\"");
                let sql = format!(r#"DROP DATABASE IF EXISTS "{quoted}" WITH (FORCE)"#);
                let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await;
            }
            let _ = conn.close().await;
        });
    });
    let _ = worker.join();
}

fn hex_random() -> String {
    let b: [u8; 8] = sigil::random::random_bytes();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, None, |_| {}).await
}

pub async fn spawn_app_with(
    backend: Backend,
    clock: Option<MockClock>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = fresh_database(backend, dir.path()).await;
    let database_url = db.url.clone();
    let kek_path = dir.path().join("keys/kek");
    let mut config = Config::for_tests(&database_url, &kek_path);
    tweak(&mut config);
    let clock_arc: Arc<dyn Clock> = match &clock {
        Some(c) => Arc::new(c.clone()),
        None => Arc::new(SystemClock),
    };
    let app = Application::build_with_clock(config, clock_arc)
        .await
        .expect("application builds");
    let base = app.base_url().to_owned();
    let mtls_base = app.state().mtls_base_url.as_deref().map(str::to_owned);
    let store = app.state().store.clone();
    tokio::spawn(app.run_until_stopped());
    let kek: Arc<dyn KekSource> = Arc::new(FileKek::load(&kek_path).expect("kek"));
    // reqwest is built without a bundled crypto provider (one crypto stack: ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    TestApp {
        backend,
        base,
        mtls_base,
        http,
        store,
        kek,
        database_url,
        _db: db,
        clock,
        _dir: dir,
    }
}

impl TestApp {
    pub fn now(&self) -> i64 {
        match &self.clock {
            Some(c) => c.now(),
            None => SystemClock.now(),
        }
    }

    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/realms/{realm}", self.base)
    }

    pub fn token_url(&self, realm: &str) -> String {
        format!("{}/oauth2/token", self.issuer(realm))
    }

    pub async fn create_realm(&self, name: &str, alg: Alg) {
        admin::realms::create(
            self.store.as_ref(),
            self.kek.as_ref(),
            &self.base,
            admin::realms::NewRealm {
                name: name.into(),
                alg,
                access_token_ttl: 3600,
                display_name: None,
                rotation_period_secs: admin::realms::DEFAULT_ROTATION_PERIOD,
                prepublish_secs: admin::realms::DEFAULT_PREPUBLISH,
                jwks_max_age_secs: 3600,
            },
            self.now(),
            "test",
        )
        .await
        .expect("realm created");
    }

    pub async fn create_client(
        &self,
        realm: &str,
        id: &str,
        scopes: &str,
        audience: &str,
    ) -> Client {
        self.create_client_with(realm, id, scopes, None, audience)
            .await
    }

    pub async fn create_client_with(
        &self,
        realm: &str,
        id: &str,
        scopes: &str,
        defaults: Option<&str>,
        audience: &str,
    ) -> Client {
        self.create_client_ttl(realm, id, scopes, defaults, audience, None)
            .await
    }

    pub async fn create_client_ttl(
        &self,
        realm: &str,
        id: &str,
        scopes: &str,
        defaults: Option<&str>,
        audience: &str,
        ttl: Option<i64>,
    ) -> Client {
        let made = admin::clients::create(
            self.store.as_ref(),
            admin::clients::NewClient {
                realm: realm.into(),
                client_id: id.into(),
                scopes: scopes.into(),
                default_scopes: defaults.map(str::to_owned),
                audience: audience.into(),
                access_token_ttl: ttl,
                ..Default::default()
            },
            self.now(),
            "test",
        )
        .await
        .expect("client created");
        Client {
            id: made.client.client_id,
            secret: made.client_secret.expect("confidential client"),
        }
    }

    /// A confidential client registered with `--introspect`: a resource server that may read the
    /// revocation feed and the policy bundle.
    pub async fn create_resource_server(&self, realm: &str, id: &str) -> Client {
        let made = admin::clients::create(
            self.store.as_ref(),
            admin::clients::NewClient {
                realm: realm.into(),
                client_id: id.into(),
                scopes: "balances:read".into(),
                audience: "ledger".into(),
                introspect: true,
                ..Default::default()
            },
            self.now(),
            "test",
        )
        .await
        .expect("resource server created");
        Client {
            id: made.client.client_id,
            secret: made.client_secret.expect("confidential client"),
        }
    }

    /// POSTs a form to the token endpoint with optional Basic credentials.
    pub async fn token_request(
        &self,
        realm: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.http.post(self.token_url(realm)).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        req.send().await.expect("request")
    }

    /// A client_credentials token (Basic auth); panics unless it is issued.
    pub async fn token(&self, realm: &str, c: &Client, scope: Option<&str>) -> String {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let res = self
            .token_request(realm, Some((&c.id, &c.secret)), &form)
            .await;
        assert_eq!(res.status(), 200, "token issued");
        let body: Value = res.json().await.expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    pub async fn audit(&self) -> Vec<sigil::audit::AuditRecord> {
        self.store.audit_page(0, 100_000).await.expect("audit")
    }

    /// The audit log once anonymous refusals tallied so far have been written (tests flush the
    /// tally every second).
    pub async fn audit_after_tally(&self) -> Vec<sigil::audit::AuditRecord> {
        tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
        self.audit().await
    }
}

pub fn decode_part(jwt: &str, index: usize) -> Value {
    let part = jwt.split('.').nth(index).expect("part");
    serde_json::from_slice(&B64.decode(part).expect("b64")).expect("json")
}

pub async fn error_of(res: reqwest::Response) -> (u16, String, Value) {
    let status = res.status().as_u16();
    let www = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    let body: Value = res.json().await.expect("json error body");
    (status, www, body)
}

/// Runs one raw SQL statement against the app's database, as an operator with a SQL shell would.
/// The one integer a query such as `SELECT COUNT(*) ...` answers, read beside the application.
pub async fn count_rows(app: &TestApp, sql: &str) -> i64 {
    count_rows_at(app.backend, &app.database_url, sql).await
}

/// `count_rows` against a database given by its URL (server processes started by a test).
pub async fn count_rows_at(backend: Backend, url: &str, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.expect("connect");
            sqlx::query_scalar(sql)
                .fetch_one(&mut c)
                .await
                .expect("count")
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query_scalar(sql)
                .fetch_one(&mut c)
                .await
                .expect("count")
        }
    }
}

pub async fn exec_raw(app: &TestApp, sql: &str) -> Result<u64, String> {
    exec_raw_at(app.backend, &app.database_url, sql).await
}

/// `exec_raw` against a database given by its URL.
pub async fn exec_raw_at(backend: Backend, url: &str, sql: &str) -> Result<u64, String> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| e.to_string())
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| e.to_string())
        }
    }
}

/// A `sigil serve` process on a random loopback port (`.1` is its base URL); killed when dropped,
/// however the test ends.
pub struct Node(pub std::process::Child, pub String);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a `sigil` command on `db` with the KEK at `kek` and these environment variables (logs at
/// `warn`): its exit code, stdout and stderr.
pub fn run_cli(
    db: &str,
    kek: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["--database-url", db, "--kek-file"])
        .arg(kek)
        .args(args)
        .env("SIGIL_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run sigil");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `sigil serve` on `db` with the KEK at `kek` and these environment variables (logs at
/// `warn`), once it says where it listens.
pub fn spawn_node(db: &str, kek: &std::path::Path, env: &[(&str, &str)]) -> Node {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["--database-url", db, "--kek-file"])
        .arg(kek)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("SIGIL_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let mut stderr = child.stderr.take().expect("stderr");
    if !line.starts_with("listening on ") {
        let mut why = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut why);
        panic!("the node did not start: {line}{why}");
    }
    // Drained in the background, so a chatty node never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let base = line.trim().trim_start_matches("listening on ").to_owned();
    Node(child, base)
}

/// The realm as the server holds it, with its decrypted active key (to forge well-signed tokens).
pub async fn live_realm(app: &TestApp, realm: &str) -> Arc<sigil::directory::LiveRealm> {
    sigil::directory::Directory::new(app.store.clone(), app.kek.clone(), app.base.clone(), 0)
        .realm(realm, app.now())
        .await
        .expect("load")
        .expect("realm")
}

/// A KEK for admin calls that need one only for `pii_high` attributes, in realms that declare
/// none (so it never seals or opens anything).
pub fn unused_kek() -> sigil::keys::FileKek {
    sigil::keys::FileKek::from_bytes(&[0; 32]).expect("kek")
}
