//! Certificates made by the tests themselves (rcgen, ECDSA P-256): CAs, server and client
//! certificates with the names, validity and usages a test needs, and rustls/reqwest clients that
//! present them.
#![allow(dead_code)]

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A CA that signs test certificates.
pub struct Ca {
    pub pem: String,
    pub der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate with its private key.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

/// Validity of a leaf, in days relative to today.
#[derive(Clone, Copy)]
pub struct Validity {
    pub from_days: i64,
    pub to_days: i64,
}

pub const VALID: Validity = Validity {
    from_days: -1,
    to_days: 30,
};
pub const EXPIRED: Validity = Validity {
    from_days: -30,
    to_days: -1,
};
pub const NOT_YET_VALID: Validity = Validity {
    from_days: 2,
    to_days: 30,
};

fn dn(cn: &str, o: Option<&str>) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    if let Some(o) = o {
        d.push(DnType::OrganizationName, o);
    }
    d.push(DnType::CommonName, cn);
    d
}

fn days(n: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(n)
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn, Some("Sigil tests"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = days(-1);
        params.not_after = days(365);
        let cert = params.self_signed(&key).expect("CA");
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A TLS server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        self.leaf(
            "localhost",
            None,
            vec![
                SanType::DnsName("localhost".try_into().expect("dns")),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
            VALID,
        )
    }

    /// A client certificate with this subject (CN, O) and these SANs.
    pub fn client(&self, cn: &str, o: Option<&str>, sans: Vec<SanType>, v: Validity) -> Leaf {
        self.leaf(cn, o, sans, ExtendedKeyUsagePurpose::ClientAuth, v)
    }

    fn leaf(
        &self,
        cn: &str,
        o: Option<&str>,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
        v: Validity,
    ) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn, o);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![eku];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = days(v.from_days);
        params.not_after = days(v.to_days);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// A self-signed client certificate (no CA).
pub fn self_signed(cn: &str, sans: Vec<SanType>) -> Leaf {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn, None);
    params.subject_alt_names = sans;
    params.not_before = days(-1);
    params.not_after = days(30);
    let cert = params.self_signed(&key).expect("self-signed");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

pub fn uri(u: &str) -> SanType {
    SanType::URI(u.try_into().expect("uri"))
}

pub fn dns(d: &str) -> SanType {
    SanType::DnsName(d.try_into().expect("dns"))
}

/// A rustls client configuration trusting `server_ca`, presenting `identity` if given.
pub fn rustls_client(server_ca: &Ca, identity: Option<&Leaf>) -> rustls::ClientConfig {
    rustls_client_for(server_ca, identity, rustls::DEFAULT_VERSIONS)
}

/// As [`rustls_client`], speaking only `versions`.
pub fn rustls_client_for(
    server_ca: &Ca,
    identity: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(server_ca.der.clone()))
        .expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(leaf.der.clone())],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
            )
            .expect("client auth"),
    }
}

/// Writes `leaf` (a server certificate) and its key into `dir` as `sigil serve` reads them.
pub fn server_files(dir: &std::path::Path, leaf: &Leaf) -> sigil::config::TlsFiles {
    let files = sigil::config::TlsFiles {
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
    };
    std::fs::write(&files.cert_file, &leaf.cert_pem).expect("cert");
    std::fs::write(&files.key_file, &leaf.key_pem).expect("key");
    files
}

/// A reqwest client over [`rustls_client`].
pub fn https_client(server_ca: &Ca, identity: Option<&Leaf>) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(rustls_client(server_ca, identity))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}
