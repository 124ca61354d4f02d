//! TLS for the listeners: rustls with the `ring` provider, TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by
//! ALPN. The certificate and key are re-read when their files change (a certificate manager
//! rotating them), without dropping a connection: new handshakes use the new pair, connections
//! already open keep theirs.
//!
//! The mutual-TLS listener asks for a client certificate but does not judge it: which CAs a client
//! may chain to is a realm's setting, known only once the request names its realm and client
//! (`clients::mtls`). The handshake still proves that the client holds the certificate's private
//! key (rustls checks the `CertificateVerify` signature), which is what RFC 8705 binds tokens to.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads a PEM chain (leaf first) and its key (PKCS#8, SEC1 or PKCS#1; ECDSA, RSA or Ed25519).
pub fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| file_error(&files.cert_file, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&files.cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(&files.cert_file, "no CERTIFICATE in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| file_error(&files.key_file, format!("no usable private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| file_error(&files.key_file, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| file_error(&files.cert_file, format!("does not match the key: {e}")))?;
    Ok(certified)
}

/// The current certificate and key, swapped in place when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    files: TlsFiles,
    stamp: std::sync::Mutex<Option<Stamp>>,
}

/// What tells that a file changed: modification time and length of both files.
type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(files: &TlsFiles) -> Option<Stamp> {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    Some([one(&files.cert_file)?, one(&files.key_file)?])
}

impl ReloadingCert {
    pub fn load(files: &TlsFiles) -> Result<Arc<ReloadingCert>, TlsError> {
        let before = stamp(files);
        let key = load_certified_key(files)?;
        Ok(Arc::new(ReloadingCert {
            current: ArcSwap::from_pointee(key),
            files: files.clone(),
            stamp: std::sync::Mutex::new(before),
        }))
    }

    /// Re-reads the files if they changed since the last look. A pair that does not load (a
    /// half-written file, a key that does not match) is logged and the current pair kept; the
    /// next look tries again.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.files);
        {
            let Ok(seen) = self.stamp.lock() else {
                return false;
            };
            if now.is_none() || *seen == now {
                return false;
            }
        }
        match load_certified_key(&self.files) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                if let Ok(mut seen) = self.stamp.lock() {
                    *seen = now;
                }
                tracing::info!(cert = %self.files.cert_file.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate files changed but do not load; keeping the current pair");
                false
            }
        }
    }

    /// Looks at the files every `every` for as long as the process runs.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                // File reads and key parsing off the request threads' way.
                let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// How often the certificate files are looked at.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration; `ask_client_cert` for the mutual-TLS listener.
pub fn server_config(
    cert: Arc<ReloadingCert>,
    ask_client_cert: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = if ask_client_cert {
        builder
            .with_client_cert_verifier(Arc::new(RealmJudgesClientCert {
                algs: provider.signature_verification_algorithms,
            }))
            .with_cert_resolver(cert)
    } else {
        builder.with_no_client_auth().with_cert_resolver(cert)
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Asks for a client certificate, checks the handshake signature made with its key, and leaves
/// the chain to the client's realm. A client without a certificate still connects (it may
/// authenticate otherwise, with DPoP or `private_key_jwt`).
#[derive(Debug)]
struct RealmJudgesClientCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RealmJudgesClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The client certificate chain of a request (leaf first): from this server's own mutual-TLS
/// handshake, or from a trusted proxy's header. Absent = no certificate.
#[derive(Debug, Clone)]
pub struct ClientCertChain(pub Arc<Vec<CertificateDer<'static>>>);

impl ClientCertChain {
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.0.first()
    }
}

/// What a request knows of its connection.
#[derive(Debug, Clone)]
pub struct ConnTls {
    pub listener: Listener,
    pub client_chain: Option<ClientCertChain>,
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Main,
    MutualTls,
}
