//! Requests through a TLS-terminating proxy. Only when the TCP peer is one of `trusted_proxies`
//! does Sigil believe what the proxy says: the client's address (`Forwarded: for=` or
//! `X-Forwarded-For`, walked from the nearest hop back past other trusted proxies) and the client
//! certificate (Envoy's `X-Forwarded-Client-Cert` or nginx's URL-encoded PEM, in the configured
//! header). From any other peer those headers are ignored. The middleware rewrites the request's
//! `ConnectInfo` (so rate limits and audit records see the real client) and its `ConnTls`
//! (a trusted proxy's request carries the client certificate of the header, or none, never the
//! proxy's own).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use rustls_pki_types::CertificateDer;
use sigil_validator::forwarded_cert::{self, Format};

use crate::config::{Config, ForwardedCertFormat};
use crate::state::AppState;
use crate::tls::{ClientCertChain, ConnTls, Listener};

pub async fn forwarded(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let config = &state.config;
    if config.trusted_proxies.is_empty() {
        return next.run(req).await;
    }
    let Some(peer) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
    else {
        return next.run(req).await;
    };
    if !is_trusted(config, peer.ip()) {
        return next.run(req).await;
    }
    let client = client_address(config, req.headers()).unwrap_or(peer.ip());
    let chain = forwarded_chain(config, req.headers());
    let listener = req
        .extensions()
        .get::<ConnTls>()
        .map_or(Listener::Main, |c| c.listener);
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
    req.extensions_mut().insert(ConnTls {
        listener,
        client_chain: chain,
    });
    next.run(req).await
}

fn is_trusted(config: &Config, ip: IpAddr) -> bool {
    let ip = canonical(ip);
    config.trusted_proxies.iter().any(|n| n.contains(&ip))
}

/// An IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address from the header the proxy writes (`client_address_header`): its hops,
/// from the nearest back, skipping trusted proxies; the first untrusted one is the client. Only
/// that one header is read (a proxy that appends to `X-Forwarded-For` passes a client's own
/// `Forwarded` through untouched, and the other way round). Entries further back than the answer
/// are never parsed, so a client's garbage cannot spoil what its proxy appended. `None` when the
/// header is absent or no hop can be read.
pub fn client_address(config: &Config, headers: &HeaderMap) -> Option<IpAddr> {
    let values: Vec<&[u8]> = headers
        .get_all(config.client_address_header.as_str())
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let forwarded = config.client_address_header == "forwarded";
    let mut last = None;
    for value in values.iter().rev() {
        // Element by element, so bytes a client put further back (not even text) cannot spoil
        // what its proxy appended.
        for element in value.rsplit(|b| *b == b',') {
            let Ok(element) = std::str::from_utf8(element) else {
                return last;
            };
            let hop = if forwarded {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| v.trim().trim_matches('"'))
                })
            } else {
                Some(element.trim())
            };
            // An unreadable hop ends the walk: what lies beyond it was written by the client.
            let Some(ip) = hop.and_then(parse_node).map(canonical) else {
                return last;
            };
            if !is_trusted(config, ip) {
                return Some(ip);
            }
            last = Some(ip);
        }
    }
    last
}

/// A node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_node(v: &str) -> Option<IpAddr> {
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
}

/// The certificate a trusted proxy forwarded, as a one-certificate chain.
fn forwarded_chain(config: &Config, headers: &HeaderMap) -> Option<ClientCertChain> {
    let mut values = headers
        .get_all(config.forwarded_cert_header.as_str())
        .iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let format = match config.forwarded_cert_format {
        ForwardedCertFormat::Envoy => Format::EnvoyXfcc,
        ForwardedCertFormat::Nginx => Format::NginxEscapedPem,
    };
    let der = forwarded_cert::parse(value.to_str().ok()?, format)?;
    Some(ClientCertChain(Arc::new(vec![CertificateDer::from(der)])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn config(proxies: &[&str]) -> Config {
        let mut c = Config::for_tests("sqlite::memory:", std::path::Path::new("k"));
        c.trusted_proxies = proxies.iter().map(|p| p.parse().expect("cidr")).collect();
        c
    }

    #[test]
    fn the_first_untrusted_hop_from_the_nearest_is_the_client() {
        let mut c = config(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.1.2.3"),
        );
        // 198.51.100.7 is the last untrusted hop: what the client wrote before it is not believed.
        assert_eq!(client_address(&c, &h), "198.51.100.7".parse().ok());
        // A client's garbage further back does not spoil what the proxy appended.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("not-an-ip, 203.0.113.7"),
        );
        assert_eq!(client_address(&c, &h), "203.0.113.7".parse().ok());
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(client_address(&c, &h), None);
        // Bytes that are not even text, further back than the proxy's hop, change nothing.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.8").expect("opaque bytes"),
        );
        assert_eq!(client_address(&c, &h), "203.0.113.8".parse().ok());
        // Only the configured header is read: a client's own Forwarded is ignored by default…
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.5"));
        h.insert("forwarded", HeaderValue::from_static("for=192.0.2.1"));
        assert_eq!(client_address(&c, &h), "203.0.113.5".parse().ok());
        // …and read when the proxy is configured to write it.
        c.client_address_header = "forwarded".into();
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            HeaderValue::from_static(r#"for="[2001:db8::7]:4711";proto=https, for=10.0.0.2"#),
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.9"));
        assert_eq!(client_address(&c, &h), "2001:db8::7".parse().ok());
    }
}
