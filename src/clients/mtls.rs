//! Mutual-TLS client authentication (RFC 8705 §2): a `tls_client_auth` certificate chains to a CA
//! its realm trusts, is valid now, is meant for client authentication and carries the client's
//! registered subject; a `self_signed_tls_client_auth` certificate is one of the client's
//! registered ones by SHA-256 thumbprint. The TLS handshake has already proved that the client
//! holds the certificate's key.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use subtle::ConstantTimeEq;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::auth::TlsSubject;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MtlsError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("the realm trusts no client CA")]
    NoTrustedCa,
    #[error("the certificate does not chain to a CA the realm trusts: {0}")]
    Chain(String),
    #[error("the certificate does not carry the client's registered subject")]
    WrongSubject,
    #[error("the certificate is not one registered for the client")]
    UnknownCertificate,
    #[error("unreadable certificate")]
    Malformed,
}

/// The RFC 8705 §3.1 thumbprint: base64url(SHA-256(DER)).
pub fn thumbprint(der: &[u8]) -> String {
    B64.encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// Certificates of a PEM text (CAs for a realm, a self-signed client certificate).
pub fn certificates_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE in the PEM".into());
    }
    for c in &certs {
        X509Certificate::from_der(c).map_err(|e| format!("unreadable certificate: {e}"))?;
    }
    Ok(certs)
}

/// Trust anchors from a realm's CA PEM.
pub fn anchors_from_pem(pem: &str) -> Result<Vec<TrustAnchor<'static>>, String> {
    certificates_from_pem(pem)?
        .iter()
        .map(|der| {
            webpki::anchor_from_trusted_cert(der)
                .map(|a| a.to_owned())
                .map_err(|e| format!("not usable as a CA: {e:?}"))
        })
        .collect()
}

/// `tls_client_auth`: the chain (leaf first, as presented) verifies to one of `anchors` at `now`
/// for client authentication, and the leaf carries `subject`.
pub fn verify_tls_client_auth(
    chain: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    subject: &TlsSubject,
    now: i64,
) -> Result<(), MtlsError> {
    let leaf = chain.first().ok_or(MtlsError::NoCertificate)?;
    if anchors.is_empty() {
        return Err(MtlsError::NoTrustedCa);
    }
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|_| MtlsError::Malformed)?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now.max(0) as u64));
    ee.verify_for_usage(
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all,
        anchors,
        &chain[1..],
        time,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| MtlsError::Chain(format!("{e:?}")))?;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| MtlsError::Malformed)?;
    if has_subject(&cert, subject) {
        Ok(())
    } else {
        Err(MtlsError::WrongSubject)
    }
}

/// `self_signed_tls_client_auth`: the leaf's thumbprint is one of the registered ones.
pub fn verify_self_signed(
    chain: &[CertificateDer<'_>],
    registered: &[String],
) -> Result<(), MtlsError> {
    let leaf = chain.first().ok_or(MtlsError::NoCertificate)?;
    let seen = thumbprint(leaf);
    let mut found = 0u8;
    for r in registered {
        found |= seen.as_bytes().ct_eq(r.as_bytes()).unwrap_u8();
    }
    if found == 1 {
        Ok(())
    } else {
        Err(MtlsError::UnknownCertificate)
    }
}

fn has_subject(cert: &X509Certificate<'_>, subject: &TlsSubject) -> bool {
    if let TlsSubject::Dn(dn) = subject {
        let Some(want) = parse_dn(dn) else {
            return false;
        };
        let Some(mut have) = cert_dn(cert) else {
            return false;
        };
        // Registered in RFC 4514 order (most specific first, as `openssl -nameopt RFC2253`
        // prints) or in the certificate's own order (as `openssl x509 -subject` prints).
        if have == want {
            return true;
        }
        have.reverse();
        return have == want;
    }
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value
        .general_names
        .iter()
        .any(|name| match (subject, name) {
            (TlsSubject::SanDns(want), GeneralName::DNSName(have)) => {
                want.eq_ignore_ascii_case(have)
            }
            (TlsSubject::SanUri(want), GeneralName::URI(have)) => want == have,
            (TlsSubject::SanEmail(want), GeneralName::RFC822Name(have)) => {
                want.eq_ignore_ascii_case(have)
            }
            (TlsSubject::SanIp(want), GeneralName::IPAddress(bytes)) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).is_ok_and(|b| *want == std::net::IpAddr::from(b)),
                16 => {
                    <[u8; 16]>::try_from(*bytes).is_ok_and(|b| *want == std::net::IpAddr::from(b))
                }
                _ => false,
            },
            _ => false,
        })
}

/// One attribute of a distinguished name: upper-case type (`CN`, `O`, or a dotted OID) and value.
type Ava = (String, String);
/// A relative distinguished name: its attributes as a set (sorted), as `+` joins them.
type Rdn = Vec<Ava>;

/// The certificate's subject in its own (DER) order, RDN by RDN; `None` if a value is not a
/// string.
fn cert_dn(cert: &X509Certificate<'_>) -> Option<Vec<Rdn>> {
    let registry = x509_parser::objects::oid_registry();
    let mut out = Vec::new();
    for rdn in cert.subject().iter() {
        let mut avas = Vec::new();
        for ava in rdn.iter() {
            let oid = ava.attr_type();
            let name = x509_parser::objects::oid2abbrev(oid, registry)
                .map(|s| s.to_ascii_uppercase())
                .unwrap_or_else(|_| oid.to_id_string());
            let value = ava.as_str().ok()?;
            avas.push((normal_type(&name), value.to_owned()));
        }
        avas.sort();
        out.push(avas);
    }
    Some(out)
}

fn normal_type(t: &str) -> String {
    match t.trim().to_ascii_uppercase().as_str() {
        "E" | "EMAIL" => "EMAILADDRESS".to_owned(),
        "S" => "ST".to_owned(),
        other => other.to_owned(),
    }
}

/// Parses an RFC 4514 string (`CN=ach,O=Bank\, Ltd,C=GB`; `+` joins the attributes of one RDN)
/// into its RDNs, in order; spaces around `=`, `,` and `+` are ignored (as `openssl x509
/// -subject` prints them).
pub fn parse_dn(text: &str) -> Option<Vec<Rdn>> {
    // Split on unescaped `,` (RDNs) and `+` (attributes), unescaping as we go; an escaped
    // character is marked with NUL so a literal `=` survives the split at the first `=`.
    let mut rdns: Vec<Vec<String>> = vec![Vec::new()];
    let mut part = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next()?;
                if next.is_ascii_hexdigit() {
                    let low = chars.next()?;
                    let byte = u8::from_str_radix(&format!("{next}{low}"), 16).ok()?;
                    part.push('\u{0}');
                    part.push(char::from(byte));
                } else {
                    part.push('\u{0}');
                    part.push(next);
                }
            }
            '\u{0}' => return None,
            '+' => rdns.last_mut()?.push(std::mem::take(&mut part)),
            ',' => {
                rdns.last_mut()?.push(std::mem::take(&mut part));
                rdns.push(Vec::new());
            }
            c => part.push(c),
        }
    }
    rdns.last_mut()?.push(part);
    let mut out = Vec::new();
    for rdn in rdns {
        let mut avas = Vec::new();
        for p in rdn {
            let (t, v) = p.split_once('=')?;
            let t = t.trim();
            let v = v.trim().replace('\u{0}', "");
            if t.is_empty() || v.is_empty() || t.contains('\u{0}') {
                return None;
            }
            avas.push((normal_type(t), v));
        }
        avas.sort();
        out.push(avas);
    }
    if out.is_empty() { None } else { Some(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguished_names_parse_with_escapes_and_spaces() {
        let one = |t: &str, v: &str| vec![(t.to_owned(), v.to_owned())];
        assert_eq!(
            parse_dn("CN = ach, O=Bank\\, Ltd,C=GB").expect("dn"),
            vec![one("CN", "ach"), one("O", "Bank, Ltd"), one("C", "GB")]
        );
        // `+` joins attributes of one RDN (a set: order within it does not matter), `,` does not.
        assert_eq!(
            parse_dn("O=Bank+CN=ach,C=GB").expect("multi-valued"),
            parse_dn("CN=ach+O=Bank,C=GB").expect("multi-valued")
        );
        assert_ne!(
            parse_dn("O=Bank+CN=ach,C=GB").expect("multi-valued"),
            parse_dn("O=Bank,CN=ach,C=GB").expect("two RDNs")
        );
        assert!(parse_dn("").is_none());
        assert!(parse_dn("nonsense").is_none());
        assert!(parse_dn("CN=").is_none());
    }
}
