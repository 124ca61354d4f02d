//! Complete sign-ins over HTTP against a running `sigil serve`, as many customers would do them:
//! `/authorize` → the sign-in page → passkey (software authenticator) or password + TOTP → the
//! code at the client's redirect URI → `/token`. Each sign-in is a new browser (fresh cookies, a
//! new connection) from its own loopback address (127.1.x.y), as distinct customers are; users
//! are enrolled first through their invite links, over HTTP too. Prints sign-ins/s, p50/p99 of a
//! whole sign-in and the failures. `bench/signins.sh` builds, starts the server and runs it.
//!
//!   signin_bench <issuer> <passkey|password> <invites-file> <seconds> <concurrency>
//!
//! The invites file has one `username<TAB>invite-url` per line.

#[path = "../tests/support/soft_passkey.rs"]
mod soft_passkey;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use soft_passkey::SoftPasskey;
use tokio::sync::Mutex;
use tokio::time::Instant;

const REDIRECT: &str = "http://localhost:9/callback";
const PASSWORD: &str = "correct horse battery staple";

struct User {
    username: String,
    passkey: Option<SoftPasskey>,
    totp_secret: Vec<u8>,
    /// The last TOTP step this user spent (each step signs in once).
    last_step: i64,
}

static NEXT_ADDR: AtomicU64 = AtomicU64::new(0);

/// A cookie jar a worker empties between sign-ins (one host; paths ignored).
#[derive(Default)]
struct Jar(std::sync::Mutex<Vec<(String, String)>>);

impl reqwest::cookie::CookieStore for Jar {
    fn set_cookies(
        &self,
        headers: &mut dyn Iterator<Item = &reqwest::header::HeaderValue>,
        _url: &url::Url,
    ) {
        let mut jar = self.0.lock().expect("jar");
        for h in headers {
            let Ok(text) = h.to_str() else { continue };
            let Some((name, rest)) = text.split_once('=') else {
                continue;
            };
            let value = rest.split(';').next().unwrap_or("").to_owned();
            jar.retain(|(n, _)| n != name);
            if !value.is_empty() && !text.contains("Max-Age=0") {
                jar.push((name.to_owned(), value));
            }
        }
    }

    fn cookies(&self, _url: &url::Url) -> Option<reqwest::header::HeaderValue> {
        let jar = self.0.lock().expect("jar");
        let line = jar
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        reqwest::header::HeaderValue::from_str(&line).ok()
    }
}

/// A browser: a cookie jar and a connection from its own loopback address (127.1.x.y). A worker
/// keeps one for `SIGN_INS_PER_ADDRESS` sign-ins (emptying the jar before each), then takes a new
/// address, so every address stays under the per-address sign-in limit, as distinct customers'
/// would.
struct Browser {
    client: reqwest::Client,
    jar: Arc<Jar>,
    uses: u32,
}

const SIGN_INS_PER_ADDRESS: u32 = 8;

impl Browser {
    fn new() -> Browser {
        let n = NEXT_ADDR.fetch_add(1, Ordering::Relaxed) % 60_000;
        let addr = Ipv4Addr::new(
            127,
            1 + (n / 250 / 250) as u8,
            (n / 250 % 250) as u8,
            (n % 250 + 1) as u8,
        );
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .local_address(IpAddr::V4(addr))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Browser {
            client,
            jar,
            uses: 0,
        }
    }

    /// The client for the next sign-in: no cookies; a new address once this one had its share.
    fn next(&mut self) -> &reqwest::Client {
        if self.uses >= SIGN_INS_PER_ADDRESS {
            *self = Browser::new();
        }
        self.uses += 1;
        self.jar.0.lock().expect("jar").clear();
        &self.client
    }
}

fn browser() -> reqwest::Client {
    Browser::new().client
}

fn attr(html: &str, marker: &str) -> Option<String> {
    let start = html.find(marker)? + marker.len();
    Some(html[start..].split('"').next()?.to_owned())
}

fn csrf(html: &str) -> Option<String> {
    attr(html, r#"name="csrf" value=""#).or_else(|| attr(html, r#"data-csrf=""#))
}

fn now() -> i64 {
    sigil::clock::SystemClock.now()
}

use sigil::clock::Clock;

type Res<T> = Result<T, String>;

async fn get_text(b: &reqwest::Client, url: impl reqwest::IntoUrl) -> Res<String> {
    let res = b.get(url).send().await.map_err(|e| e.to_string())?;
    res.text().await.map_err(|e| e.to_string())
}

async fn post_json(b: &reqwest::Client, url: String, body: &Value) -> Res<Value> {
    let res = b
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    res.json().await.map_err(|e| e.to_string())
}

async fn enrol(
    issuer: &str,
    origin: &str,
    mode: &str,
    username: String,
    link: String,
) -> Res<User> {
    let b = browser();
    let html = get_text(&b, &link).await?;
    let token = csrf(&html).ok_or("no csrf on the enrolment page")?;
    if mode == "passkey" {
        let mut pk = SoftPasskey::new();
        let opts: Value = post_json(
            &b,
            format!("{issuer}/enrol/passkey/options"),
            &json!({"csrf": token}),
        )
        .await?;
        let credential = pk.register(&opts, origin);
        let res = b
            .post(format!("{issuer}/enrol/passkey"))
            .json(&json!({"csrf": token, "credential": credential}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("passkey enrolment: {}", res.status()));
        }
        Ok(User {
            username,
            passkey: Some(pk),
            totp_secret: vec![],
            last_step: 0,
        })
    } else {
        let secret = attr(&html, r#"data-secret=""#).ok_or("no TOTP secret on the page")?;
        let secret = sigil::identity::totp::base32_decode(&secret).ok_or("bad secret")?;
        // Enrol with the previous step's code (accepted: ±1 step), leaving this step and the next
        // for sign-ins: each user signs in twice within the window, more as time moves on.
        let t = now() - 30;
        let res = b
            .post(format!("{issuer}/enrol"))
            .form(&[
                ("csrf", token.as_str()),
                ("password", PASSWORD),
                ("code", &sigil::identity::totp::code_at(&secret, t)),
            ])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body = res.text().await.map_err(|e| e.to_string())?;
        if !body.contains("recovery-codes") {
            return Err("password enrolment refused".into());
        }
        Ok(User {
            username,
            passkey: None,
            totp_secret: secret,
            last_step: t.div_euclid(30),
        })
    }
}

/// One complete sign-in; `Ok(false)` when the user had no TOTP step left in this window.
async fn sign_in(b: &reqwest::Client, issuer: &str, origin: &str, user: &Mutex<User>) -> Res<bool> {
    let verifier = B64.encode(sigil::random::random_bytes::<32>());
    let challenge =
        B64.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
    let authz = format!(
        "{issuer}/oauth2/authorize?response_type=code&client_id=bench&redirect_uri={}&scope=openid&state=s&code_challenge={challenge}&code_challenge_method=S256",
        percent_encoding::utf8_percent_encode(REDIRECT, percent_encoding::NON_ALPHANUMERIC)
    );
    let res = b.get(&authz).send().await.map_err(|e| e.to_string())?;
    if res.status().as_u16() != 303 {
        return Err(format!("authorize: {}", res.status()));
    }
    let html = get_text(b, format!("{issuer}/login")).await?;
    let token = csrf(&html).ok_or("no csrf on the sign-in page")?;
    let location = {
        let mut u = user.lock().await;
        if let Some(pk) = u.passkey.as_mut() {
            let opts: Value = post_json(
                b,
                format!("{issuer}/login/passkey/options"),
                &json!({"csrf": token}),
            )
            .await?;
            let credential = pk.assert(&opts, origin);
            drop(u);
            let done: Value = post_json(
                b,
                format!("{issuer}/login/passkey"),
                &json!({"csrf": token, "credential": credential}),
            )
            .await?;
            done["redirect"]
                .as_str()
                .ok_or_else(|| format!("passkey sign-in refused: {done}"))?
                .to_owned()
        } else {
            // The next unspent step within ±1 of now.
            let step_now = now().div_euclid(30);
            let step = (step_now - 1..=step_now + 1).find(|s| *s > u.last_step);
            let Some(step) = step else { return Ok(false) };
            u.last_step = step;
            let code = sigil::identity::totp::code_at(&u.totp_secret, step * 30);
            let username = u.username.clone();
            drop(u);
            let res = b
                .post(format!("{issuer}/login"))
                .form(&[
                    ("csrf", token.as_str()),
                    ("username", &username),
                    ("password", PASSWORD),
                    ("code", &code),
                ])
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if res.status().as_u16() != 303 {
                return Err(format!("password sign-in: {}", res.status()));
            }
            res.headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or("no location")?
                .to_owned()
        }
    };
    let code = url::Url::parse(&location)
        .map_err(|e| e.to_string())?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or("no code")?;
    let res = b
        .post(format!("{issuer}/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "bench"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("token: {}", res.status()));
    }
    Ok(true)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!(
            "usage: signin_bench <issuer> <passkey|password> <invites-file> <seconds> <concurrency>"
        );
        std::process::exit(2);
    }
    let issuer = Arc::new(args[1].clone());
    let mode = args[2].clone();
    let seconds: u64 = args[4].parse().expect("seconds");
    let concurrency: usize = args[5].parse().expect("concurrency");
    let origin = {
        let u = url::Url::parse(&issuer).expect("issuer URL");
        Arc::new(u.origin().ascii_serialization())
    };
    let invites: Vec<(String, String)> = std::fs::read_to_string(&args[3])
        .expect("invites file")
        .lines()
        .filter_map(|l| {
            l.split_once('\t')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        })
        .collect();

    // Enrolment, over HTTP, `concurrency` at a time.
    let started = Instant::now();
    let mut users = Vec::new();
    for chunk in invites.chunks(concurrency.max(1)) {
        let mut set = tokio::task::JoinSet::new();
        for (name, link) in chunk.iter().cloned() {
            let (i, o, m) = (issuer.clone(), origin.clone(), mode.clone());
            set.spawn(async move { enrol(&i, &o, &m, name, link).await });
        }
        while let Some(r) = set.join_next().await {
            users.push(Arc::new(Mutex::new(
                r.expect("task")
                    .unwrap_or_else(|e| panic!("enrolment failed: {e}")),
            )));
        }
    }
    eprintln!(
        "enrolled {} users ({mode}) in {:.1} s",
        users.len(),
        started.elapsed().as_secs_f64()
    );
    let users = Arc::new(users);

    // The measured run (and the server's CPU time over it, when the script names the server).
    let server_cpu = || -> Option<f64> {
        let pid = std::env::var("SIGNIN_SERVER_PID").ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    };
    let cpu_before = server_cpu();
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let out_of_codes = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let out_of_codes = out_of_codes.clone();
        let (issuer, origin, users, next, failures, first_error) = (
            issuer.clone(),
            origin.clone(),
            users.clone(),
            next.clone(),
            failures.clone(),
            first_error.clone(),
        );
        set.spawn(async move {
            let mut latencies = Vec::new();
            let mut idle_spins = 0;
            let mut browser = Browser::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) % users.len();
                let t0 = Instant::now();
                match sign_in(browser.next(), &issuer, &origin, &users[i]).await {
                    Ok(true) => {
                        latencies.push(t0.elapsed());
                        idle_spins = 0;
                    }
                    Ok(false) => {
                        out_of_codes.fetch_add(1, Ordering::Relaxed);
                        idle_spins += 1;
                        if idle_spins > users.len() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().expect("lock").get_or_insert(e);
                    }
                }
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "{mode}: {} sign-ins in {elapsed:.1} s = {:.0} sign-ins/s; p50 {:.1} ms, p99 {:.1} ms; {} failed{}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        failures.load(Ordering::Relaxed),
        first_error
            .lock()
            .expect("lock")
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    if let (Some(a), Some(b)) = (cpu_before, server_cpu())
        && !all.is_empty()
    {
        println!(
            "  server CPU {:.1} s over the run = {:.2} ms per sign-in ({:.0} % of the 2 cores)",
            b - a,
            (b - a) * 1000.0 / all.len() as f64,
            (b - a) * 100.0 / elapsed / 2.0
        );
    }
    let starved = out_of_codes.load(Ordering::Relaxed);
    if starved > 0 {
        println!(
            "  note: users had no unspent TOTP step {starved} times: the run was limited by users, not by the server; raise SIGNIN_USERS"
        );
    }
}
