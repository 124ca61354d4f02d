//! The HTTP client for calls Sigil makes on its own behalf (AWS STS, back-channel logouts): no
//! redirects (a request goes to the address it was given or nowhere), a 3 s connect and 5 s total
//! timeout, `rustls` on `ring` like the rest of the process.

use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A client built once per use site and shared.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}
