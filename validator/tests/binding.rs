//! Sender-constrained tokens: mTLS-bound (`cnf.x5t#S256`, RFC 8705) and DPoP-bound (`cnf.jkt`,
//! RFC 9449), against a JWKS server on a random port, directly and through the axum layer.
//! Certificates come from `tests/fixtures` (see `make.sh` there).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::Router;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PSS_SHA256, RsaKeyPair,
    RsaPublicKeyComponents,
};
use serde_json::{Value, json};
use sigil_validator::dpop::{self, DpopError, DpopExpectations, ReplayCache};
use sigil_validator::forwarded_cert::{self, Format};
use sigil_validator::jwk::{self, JwsError, PublicJwk};
use sigil_validator::{ClientCertificate, ErrorKind, RequestCredentials, Validator};

const ISS: &str = "https://issuer.test/realms/ledger";
const NOW: i64 = 1_800_000_000;
const URL: &str = "https://ledger.bank.example/balances";

const CLIENT_A_DER: &[u8] = include_bytes!("fixtures/client-a.der");
const CLIENT_B_DER: &[u8] = include_bytes!("fixtures/client-b.der");
const CLIENT_A_PEM: &str = include_str!("fixtures/client-a.pem");
const CLIENT_B_PEM: &str = include_str!("fixtures/client-b.pem");
const RSA_PKCS8: &[u8] = include_bytes!("fixtures/rsa.pk8.der");

fn b64_sha256(data: &[u8]) -> String {
    B64.encode(ring::digest::digest(&ring::digest::SHA256, data))
}

fn ec_pair() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("gen");
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng).expect("parse")
}

fn ec_jwk(pair: &EcdsaKeyPair) -> Value {
    let p = pair.public_key().as_ref();
    json!({"kty":"EC","crv":"P-256","x":B64.encode(&p[1..33]),"y":B64.encode(&p[33..65])})
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    )
}

/// Sigil's signing key: ES256, low-s.
struct Issuer {
    pair: EcdsaKeyPair,
}

impl Issuer {
    fn jwk(&self) -> Value {
        let mut j = ec_jwk(&self.pair);
        j["kid"] = json!("k1");
        j["alg"] = json!("ES256");
        j
    }
    fn token(&self, cnf: Option<Value>) -> String {
        let mut claims = json!({"iss":ISS,"sub":"ach-processor","aud":"ledger",
            "client_id":"ach-processor","scope":"balances:read","token_use":"access",
            "iat":NOW,"nbf":NOW,"exp":NOW+3600,"jti":"t1"});
        if let Some(cnf) = cnf {
            claims["cnf"] = cnf;
        }
        let input = signing_input(&json!({"alg":"ES256","kid":"k1","typ":"at+jwt"}), &claims);
        let mut sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign")
            .as_ref()
            .to_vec();
        sigil_validator::es256::to_low_s(&mut sig);
        format!("{input}.{}", B64.encode(&sig))
    }
}

/// A client's DPoP key: ES256 (either s, as independent libraries sign) or PS256.
enum ProofKey {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl ProofKey {
    fn ec() -> ProofKey {
        ProofKey::Ec(ec_pair())
    }
    fn rsa() -> ProofKey {
        ProofKey::Rsa(RsaKeyPair::from_pkcs8(RSA_PKCS8).expect("rsa fixture"))
    }
    fn alg(&self) -> &'static str {
        match self {
            ProofKey::Ec(_) => "ES256",
            ProofKey::Rsa(_) => "PS256",
        }
    }
    fn jwk(&self) -> Value {
        match self {
            ProofKey::Ec(p) => ec_jwk(p),
            ProofKey::Rsa(p) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(p.public());
                json!({"kty":"RSA","n":B64.encode(&c.n),"e":B64.encode(&c.e)})
            }
        }
    }
    fn jkt(&self) -> String {
        PublicJwk::from_json(&self.jwk())
            .expect("own jwk")
            .thumbprint()
            .to_owned()
    }
    fn sign_raw(&self, input: &str) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            ProofKey::Ec(p) => p
                .sign(&rng, input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
            ProofKey::Rsa(p) => {
                let mut sig = vec![0; p.public().modulus_len()];
                p.sign(&RSA_PSS_SHA256, &rng, input.as_bytes(), &mut sig)
                    .expect("sign");
                sig
            }
        }
    }
    fn sign(&self, header: Value, claims: Value) -> String {
        let input = signing_input(&header, &claims);
        format!("{input}.{}", B64.encode(self.sign_raw(&input)))
    }
    fn header(&self) -> Value {
        json!({"typ":"dpop+jwt","alg":self.alg(),"jwk":self.jwk()})
    }
    /// A proof for `method uri` bound to `token`, issued at `iat`.
    fn proof_at(&self, method: &str, uri: &str, token: Option<&str>, iat: i64) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let mut claims = json!({"jti":format!("p-{}", N.fetch_add(1, Ordering::SeqCst)),
            "htm":method,"htu":uri,"iat":iat});
        if let Some(t) = token {
            claims["ath"] = json!(b64_sha256(t.as_bytes()));
        }
        self.sign(self.header(), claims)
    }
    fn proof(&self, method: &str, uri: &str, token: &str) -> String {
        self.proof_at(method, uri, Some(token), NOW)
    }
}

struct Harness {
    issuer: Arc<Issuer>,
    clock: Arc<AtomicI64>,
    validator: Validator,
}

async fn harness_with(
    tweak: impl FnOnce(sigil_validator::ValidatorBuilder) -> sigil_validator::ValidatorBuilder,
) -> Harness {
    let issuer = Arc::new(Issuer { pair: ec_pair() });
    let keys = json!({"keys":[issuer.jwk()]});
    let app = Router::new().route("/jwks", get(move || async move { axum::Json(keys) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let clock = Arc::new(AtomicI64::new(NOW));
    let c = clock.clone();
    let builder = Validator::builder(ISS, "ledger")
        .jwks_uri(format!("http://{addr}/jwks"))
        .clock(move || c.load(Ordering::SeqCst));
    let validator = tweak(builder).build().await.expect("build");
    Harness {
        issuer,
        clock,
        validator,
    }
}

async fn harness() -> Harness {
    harness_with(|b| b).await
}

fn kind(r: Result<sigil_validator::Claims, sigil_validator::Error>) -> ErrorKind {
    r.expect_err("must be refused").kind().clone()
}

fn x5t(der: &[u8]) -> Value {
    json!({"x5t#S256": b64_sha256(der)})
}

#[tokio::test]
async fn certificate_bound_token_needs_its_certificate() {
    let h = harness().await;
    let token = h.issuer.token(Some(x5t(CLIENT_A_DER)));
    let auth = format!("Bearer {token}");
    let req = |cert: Option<&'static [u8]>| {
        let mut r = RequestCredentials::new("GET", URL).authorization(&auth);
        r.client_certificate = cert;
        r
    };
    let claims = h
        .validator
        .validate_request(&req(Some(CLIENT_A_DER)))
        .await
        .expect("the bound certificate");
    assert_eq!(
        claims.cnf.and_then(|c| c.x5t_s256),
        Some(b64_sha256(CLIENT_A_DER))
    );
    assert_eq!(
        kind(h.validator.validate_request(&req(Some(CLIENT_B_DER))).await),
        ErrorKind::CertificateMismatch
    );
    assert_eq!(
        kind(h.validator.validate_request(&req(None)).await),
        ErrorKind::CertificateRequired
    );
    // The request-less API cannot check a binding: it refuses bound tokens.
    assert_eq!(
        kind(h.validator.validate(&token).await),
        ErrorKind::CertificateRequired
    );
    // A cnf this crate cannot check is refused, not treated as a bearer token.
    let odd = h.issuer.token(Some(json!({"kid": "some-key"})));
    assert_eq!(
        kind(h.validator.validate(&odd).await),
        ErrorKind::UnsupportedConfirmation
    );
}

#[tokio::test]
async fn unbound_bearer_tokens_pass_unless_sender_constraint_is_required() {
    let h = harness().await;
    let token = h.issuer.token(None);
    h.validator
        .validate(&token)
        .await
        .expect("bearer as before");
    let auth = format!("Bearer {token}");
    h.validator
        .validate_request(&RequestCredentials::new("GET", URL).authorization(&auth))
        .await
        .expect("bearer through the request API");

    let strict = harness_with(|b| b.require_sender_constrained()).await;
    let token = strict.issuer.token(None);
    let auth = format!("Bearer {token}");
    assert_eq!(
        kind(strict.validator.validate(&token).await),
        ErrorKind::NotSenderConstrained
    );
    assert_eq!(
        kind(
            strict
                .validator
                .validate_request(&RequestCredentials::new("GET", URL).authorization(&auth))
                .await
        ),
        ErrorKind::NotSenderConstrained
    );
    // Bound tokens still pass the strict validator.
    let bound = strict.issuer.token(Some(x5t(CLIENT_A_DER)));
    let auth = format!("Bearer {bound}");
    strict
        .validator
        .validate_request(
            &RequestCredentials::new("GET", URL)
                .authorization(&auth)
                .client_certificate(CLIENT_A_DER),
        )
        .await
        .expect("mTLS-bound under require_sender_constrained");
}

#[tokio::test]
async fn dpop_bound_token_with_valid_proofs_es256_and_ps256() {
    let h = harness_with(|b| b.require_sender_constrained()).await;
    for key in [ProofKey::ec(), ProofKey::rsa()] {
        let token = h.issuer.token(Some(json!({"jkt": key.jkt()})));
        let auth = format!("DPoP {token}");
        // Several requests, each with a fresh proof (ES256 signatures of either s).
        for _ in 0..8 {
            let proof = key.proof("GET", URL, &token);
            let claims = h
                .validator
                .validate_request(
                    &RequestCredentials::new("GET", URL)
                        .authorization(&auth)
                        .dpop_proof(&proof),
                )
                .await
                .unwrap_or_else(|e| panic!("{} proof: {e}", key.alg()));
            assert_eq!(claims.cnf.and_then(|c| c.jkt), Some(key.jkt()));
        }
        // Both forms of an ECDSA signature (r, s) and (r, n − s) verify: clients do not
        // normalise s.
        if let ProofKey::Ec(_) = key {
            let proof = key.proof("GET", URL, &token);
            let (input, sig) = proof.rsplit_once('.').expect("jws");
            let mut sig = B64.decode(sig).expect("b64");
            sigil_validator::es256::negate_s(&mut sig);
            let twin = format!("{input}.{}", B64.encode(&sig));
            for p in [&twin, &proof] {
                // The twin first: once one of them is accepted, the other is a replay (same jti).
                let r = h
                    .validator
                    .validate_request(
                        &RequestCredentials::new("GET", URL)
                            .authorization(&auth)
                            .dpop_proof(p),
                    )
                    .await;
                if p == &twin {
                    r.expect("either s verifies");
                } else {
                    assert_eq!(kind(r), ErrorKind::DpopProof(DpopError::Replayed));
                }
            }
        }
        // The htu comparison ignores query, fragment, case and the default port.
        let proof = key.proof("GET", "HTTPS://Ledger.Bank.Example:443/balances", &token);
        h.validator
            .validate_request(
                &RequestCredentials::new("GET", &format!("{URL}?account=1#x"))
                    .authorization(&auth)
                    .dpop_proof(&proof),
            )
            .await
            .expect("normalised htu");
    }
}

#[tokio::test]
async fn dpop_proofs_are_refused_for_each_flaw() {
    let h = harness().await;
    let key = ProofKey::ec();
    let token = h.issuer.token(Some(json!({"jkt": key.jkt()})));
    let dpop_auth = format!("DPoP {token}");
    let check = |proofs: Vec<String>, method: &'static str, uri: &'static str| {
        let v = h.validator.clone();
        let auth = dpop_auth.clone();
        async move {
            let mut r = RequestCredentials::new(method, uri).authorization(&auth);
            for p in &proofs {
                r = r.dpop_proof(p);
            }
            v.validate_request(&r).await
        }
    };
    let proof_err = |e: DpopError| ErrorKind::DpopProof(e);

    // Replay: the same proof twice.
    let once = key.proof("GET", URL, &token);
    check(vec![once.clone()], "GET", URL)
        .await
        .expect("first use");
    assert_eq!(
        kind(check(vec![once], "GET", URL).await),
        proof_err(DpopError::Replayed)
    );
    // Another method, another path, another host.
    assert_eq!(
        kind(check(vec![key.proof("POST", URL, &token)], "GET", URL).await),
        proof_err(DpopError::MethodMismatch)
    );
    for htu in [
        "https://ledger.bank.example/transactions",
        "https://evil.example/balances",
        "http://ledger.bank.example/balances",
        "https://ledger.bank.example:8443/balances",
    ] {
        assert_eq!(
            kind(check(vec![key.proof("GET", htu, &token)], "GET", URL).await),
            proof_err(DpopError::UriMismatch),
            "{htu}"
        );
    }
    // Stale and future iat (window 60 s back, 5 s ahead).
    assert_eq!(
        kind(
            check(
                vec![key.proof_at("GET", URL, Some(&token), NOW - 61)],
                "GET",
                URL
            )
            .await
        ),
        proof_err(DpopError::Stale)
    );
    check(
        vec![key.proof_at("GET", URL, Some(&token), NOW - 59)],
        "GET",
        URL,
    )
    .await
    .expect("inside the window");
    assert_eq!(
        kind(
            check(
                vec![key.proof_at("GET", URL, Some(&token), NOW + 6)],
                "GET",
                URL
            )
            .await
        ),
        proof_err(DpopError::FromTheFuture)
    );
    // Missing and wrong ath.
    assert_eq!(
        kind(check(vec![key.proof_at("GET", URL, None, NOW)], "GET", URL).await),
        proof_err(DpopError::MissingClaim("ath"))
    );
    let other_token = h.issuer.token(Some(json!({"jkt": key.jkt(), "x": 1})));
    assert_eq!(
        kind(check(vec![key.proof("GET", URL, &other_token)], "GET", URL).await),
        proof_err(DpopError::AccessTokenHashMismatch)
    );
    // A proof by another key than cnf.jkt.
    let stranger = ProofKey::ec();
    assert_eq!(
        kind(check(vec![stranger.proof("GET", URL, &token)], "GET", URL).await),
        ErrorKind::DpopKeyMismatch
    );
    // The private key in the header.
    let claims = json!({"jti":"priv","htm":"GET","htu":URL,"iat":NOW,
        "ath":b64_sha256(token.as_bytes())});
    let mut header = key.header();
    header["jwk"]["d"] = json!(B64.encode([7u8; 32]));
    assert_eq!(
        kind(check(vec![key.sign(header, claims.clone())], "GET", URL).await),
        proof_err(DpopError::BadKey)
    );
    // typ other than dpop+jwt.
    let mut header = key.header();
    header["typ"] = json!("JWT");
    assert_eq!(
        kind(check(vec![key.sign(header, claims.clone())], "GET", URL).await),
        proof_err(DpopError::WrongType)
    );
    // alg none.
    let mut header = key.header();
    header["alg"] = json!("none");
    let none = format!("{}.", signing_input(&header, &claims));
    assert_eq!(
        kind(check(vec![none], "GET", URL).await),
        proof_err(DpopError::UnsupportedAlgorithm)
    );
    // HS256 keyed with the public key's bytes (and with its JWK text).
    let mut header = key.header();
    header["alg"] = json!("HS256");
    let input = signing_input(&header, &claims);
    let ProofKey::Ec(pair) = &key else {
        unreachable!()
    };
    for secret in [
        pair.public_key().as_ref().to_vec(),
        key.jwk().to_string().into_bytes(),
    ] {
        let hkey = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let forged = format!(
            "{input}.{}",
            B64.encode(ring::hmac::sign(&hkey, input.as_bytes()))
        );
        assert_eq!(
            kind(check(vec![forged], "GET", URL).await),
            proof_err(DpopError::UnsupportedAlgorithm)
        );
    }
    // ES256 claimed with an RSA key in the header: the alg must fit the key.
    let rsa = ProofKey::rsa();
    let mut header = rsa.header();
    header["alg"] = json!("ES256");
    assert_eq!(
        kind(check(vec![rsa.sign(header, claims.clone())], "GET", URL).await),
        proof_err(DpopError::BadKey)
    );
    // A tampered claim breaks the signature.
    let good = key.proof("GET", URL, &token);
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims.clone();
    c["jti"] = json!("tampered");
    let tampered = format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2]);
    assert_eq!(
        kind(check(vec![tampered], "GET", URL).await),
        proof_err(DpopError::BadSignature)
    );
    // Two DPoP headers, or none.
    assert_eq!(
        kind(
            check(
                vec![key.proof("GET", URL, &token), key.proof("GET", URL, &token)],
                "GET",
                URL
            )
            .await
        ),
        proof_err(DpopError::MultipleProofs)
    );
    assert_eq!(
        kind(check(vec![], "GET", URL).await),
        proof_err(DpopError::MissingProof)
    );
    // None of the refused proofs was remembered: only accepted ones are.
    assert_eq!(h.validator.dpop_replay_cache().len(), 2);
}

#[tokio::test]
async fn schemes_must_match_the_binding() {
    let h = harness().await;
    let key = ProofKey::ec();
    let bound = h.issuer.token(Some(json!({"jkt": key.jkt()})));
    // A DPoP-bound token as a bearer token, even with a proof alongside.
    let auth = format!("Bearer {bound}");
    let proof = key.proof("GET", URL, &bound);
    assert_eq!(
        kind(
            h.validator
                .validate_request(
                    &RequestCredentials::new("GET", URL)
                        .authorization(&auth)
                        .dpop_proof(&proof)
                )
                .await
        ),
        ErrorKind::DpopBoundTokenAsBearer
    );
    assert_eq!(
        kind(h.validator.validate(&bound).await),
        ErrorKind::DpopBoundTokenAsBearer
    );
    // An unbound (or only certificate-bound) token with the DPoP scheme.
    for cnf in [None, Some(x5t(CLIENT_A_DER))] {
        let token = h.issuer.token(cnf);
        let auth = format!("DPoP {token}");
        let proof = key.proof("GET", URL, &token);
        assert_eq!(
            kind(
                h.validator
                    .validate_request(
                        &RequestCredentials::new("GET", URL)
                            .authorization(&auth)
                            .dpop_proof(&proof)
                            .client_certificate(CLIENT_A_DER)
                    )
                    .await
            ),
            ErrorKind::NotDpopBound
        );
    }
    // Bound to both: needs the proof and the certificate.
    let both = h.issuer.token(Some(
        json!({"jkt": key.jkt(), "x5t#S256": b64_sha256(CLIENT_A_DER)}),
    ));
    let auth = format!("DPoP {both}");
    let proof = key.proof("GET", URL, &both);
    let req = RequestCredentials::new("GET", URL)
        .authorization(&auth)
        .dpop_proof(&proof);
    assert_eq!(
        kind(h.validator.validate_request(&req).await),
        ErrorKind::CertificateRequired
    );
    h.validator
        .validate_request(&req.client_certificate(CLIENT_A_DER))
        .await
        .expect("proof and certificate");
}

#[tokio::test]
async fn replay_window_follows_the_clock() {
    let h = harness_with(|b| {
        b.dpop_iat_window(
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(2),
        )
    })
    .await;
    let key = ProofKey::ec();
    let token = h.issuer.token(Some(json!({"jkt": key.jkt()})));
    let auth = format!("DPoP {token}");
    let proof = key.proof("GET", URL, &token);
    let req = RequestCredentials::new("GET", URL)
        .authorization(&auth)
        .dpop_proof(&proof);
    h.validator.validate_request(&req).await.expect("first");
    h.clock.store(NOW + 20, Ordering::SeqCst);
    assert_eq!(
        kind(h.validator.validate_request(&req).await),
        ErrorKind::DpopProof(DpopError::Replayed)
    );
    // Past the window the proof is stale, so forgetting it opens nothing.
    h.clock.store(NOW + 31, Ordering::SeqCst);
    assert_eq!(
        kind(h.validator.validate_request(&req).await),
        ErrorKind::DpopProof(DpopError::Stale)
    );
}

#[test]
fn verify_proof_is_usable_alone_at_a_token_endpoint() {
    let key = ProofKey::ec();
    let uri = "https://id.bank.example/realms/ledger/token";
    // No access token: ath is not required (and ignored if present).
    let proof = key.proof_at("POST", uri, None, NOW);
    let expected = DpopExpectations::new("POST", uri);
    let v = dpop::verify_proof(&proof, &expected, NOW).expect("token endpoint proof");
    assert_eq!(v.jkt, key.jkt());
    assert_eq!(v.iat, NOW);
    // A required nonce: missing or different is use_dpop_nonce.
    let e = dpop::verify_proof(&proof, &expected.clone().nonce("n-1"), NOW).expect_err("nonce");
    assert_eq!(e, DpopError::UseNonce);
    assert_eq!(e.error_code(), "use_dpop_nonce");
    let mut claims = json!({"jti":"x","htm":"POST","htu":uri,"iat":NOW,"nonce":"n-1"});
    let with_nonce = key.sign(key.header(), claims.clone());
    let v = dpop::verify_proof(&with_nonce, &expected.clone().nonce("n-1"), NOW).expect("nonce");
    assert_eq!(v.nonce.as_deref(), Some("n-1"));
    // Replay is the caller's: the function itself accepts the same proof again.
    dpop::verify_proof(&proof, &expected, NOW).expect("no cache inside");
    let cache = ReplayCache::new(1000, expected.window.span());
    cache.check_and_insert(&v.jkt, &v.jti, NOW).expect("fresh");
    assert_eq!(
        cache.check_and_insert(&v.jkt, &v.jti, NOW + 1),
        Err(DpopError::Replayed)
    );
    // Bounded jti and size.
    claims["jti"] = json!("j".repeat(300));
    let long = key.sign(key.header(), claims.clone());
    assert_eq!(
        dpop::verify_proof(&long, &expected, NOW).expect_err("long jti"),
        DpopError::MissingClaim("jti")
    );
    claims["jti"] = json!("x");
    claims["pad"] = json!("p".repeat(9000));
    let big = key.sign(key.header(), claims);
    assert_eq!(
        dpop::verify_proof(&big, &expected, NOW).expect_err("too large"),
        DpopError::TooLarge
    );
}

#[test]
fn rfc7638_thumbprint_and_client_jwks() {
    let rfc = json!({"kty":"RSA",
        "n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e":"AQAB","alg":"RS256","kid":"2011-04-29"});
    assert_eq!(
        PublicJwk::from_json(&rfc).expect("rfc").thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    // Member order and extra members do not change a thumbprint.
    let text = r#"{ "e": "AQAB", "kid": "x", "use": "sig", "kty": "RSA", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw" }"#;
    let k = PublicJwk::from_json_str(text).expect("text");
    assert_eq!(
        k.thumbprint(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    assert_eq!(k.algs(), ["RS256", "PS256"]);

    // A client's JWKS (private_key_jwt): choose by kid, else every key that fits alg.
    let ec = ProofKey::ec();
    let rsa = ProofKey::rsa();
    let mut ec_jwk = ec.jwk();
    ec_jwk["kid"] = json!("ec-1");
    let mut rsa_jwk = rsa.jwk();
    rsa_jwk["kid"] = json!("rsa-1");
    let set = jwk::parse_jwk_set(&json!({"keys":[
        {"kty":"oct","kid":"skipped?","alg":"HS256"},
    ]}));
    assert!(set.is_err(), "a set with a symmetric key is refused whole");
    let keys = jwk::parse_jwk_set(&json!({"keys":[
        ec_jwk, rsa_jwk,
        {"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"AA","y":"AA"},
    ]}))
    .expect("client set");
    assert_eq!(keys.len(), 2);
    let claims = json!({"iss":"c","sub":"c","aud":"https://id/token","exp":NOW+60,"jti":"a1"});
    let by_kid = rsa.sign(json!({"alg":"PS256","kid":"rsa-1"}), claims.clone());
    let (v, key) = jwk::verify_jws_compact(&by_kid, &keys).expect("by kid");
    assert_eq!(key.kid(), Some("rsa-1"));
    assert_eq!(v.claims["jti"], "a1");
    let no_kid = ec.sign(json!({"alg":"ES256"}), claims.clone());
    let (_, key) = jwk::verify_jws_compact(&no_kid, &keys).expect("by alg");
    assert_eq!(key.kid(), Some("ec-1"));
    let rs256 = ProofKey::rsa();
    let wrong_kid = rs256.sign(json!({"alg":"PS256","kid":"ec-1"}), claims.clone());
    assert_eq!(
        jwk::verify_jws_compact(&wrong_kid, &keys).expect_err("kid of an EC key"),
        JwsError::UnknownKey
    );
    let stranger = ProofKey::ec().sign(json!({"alg":"ES256"}), claims.clone());
    assert_eq!(
        jwk::verify_jws_compact(&stranger, &keys).expect_err("unknown signer"),
        JwsError::BadSignature
    );
    let none = format!(
        "{}.",
        signing_input(&json!({"alg":"none","kid":"ec-1"}), &claims)
    );
    assert_eq!(
        jwk::verify_jws_compact(&none, &keys).expect_err("none"),
        JwsError::UnsupportedAlgorithm
    );
    let crit = ec.sign(json!({"alg":"ES256","crit":["b64"],"b64":false}), claims);
    assert_eq!(
        jwk::verify_jws_compact(&crit, &keys).expect_err("crit"),
        JwsError::UnsupportedHeader
    );
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hex_sha256(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn xfcc(pem: &str, der: &[u8]) -> String {
    format!(
        r#"By=spiffe://bank.example/ledger;Hash={};Cert="{}";Subject="CN=ach-processor,O=Bank, Inc.";URI=spiffe://bank.example/ach"#,
        hex_sha256(der),
        url_encode(pem)
    )
}

#[test]
fn forwarded_certificates_parse() {
    assert_eq!(
        forwarded_cert::parse(&url_encode(CLIENT_A_PEM), Format::NginxEscapedPem).as_deref(),
        Some(CLIENT_A_DER)
    );
    assert_eq!(
        forwarded_cert::parse(&xfcc(CLIENT_A_PEM, CLIENT_A_DER), Format::EnvoyXfcc).as_deref(),
        Some(CLIENT_A_DER)
    );
    // Several proxies: the last element, the nearest proxy's, counts.
    let chain = format!(
        "{},{}",
        xfcc(CLIENT_B_PEM, CLIENT_B_DER),
        xfcc(CLIENT_A_PEM, CLIENT_A_DER)
    );
    assert_eq!(
        forwarded_cert::parse(&chain, Format::EnvoyXfcc).as_deref(),
        Some(CLIENT_A_DER)
    );
    // A Hash that is not the certificate's, or a Hash alone, is refused.
    let lying = format!(
        r#"Hash={};Cert="{}""#,
        hex_sha256(CLIENT_B_DER),
        url_encode(CLIENT_A_PEM)
    );
    assert_eq!(forwarded_cert::parse(&lying, Format::EnvoyXfcc), None);
    let hash_only = format!("Hash={}", hex_sha256(CLIENT_A_DER));
    assert_eq!(forwarded_cert::parse(&hash_only, Format::EnvoyXfcc), None);
    assert_eq!(forwarded_cert::parse("", Format::NginxEscapedPem), None);
}

// --- through the axum layer ---------------------------------------------------------------------

/// Serves `/balances` (GET, `balances:read`) and `/transactions` (POST) behind the layer, with
/// the peer address as `ConnectInfo`, and optionally a `ClientCertificate` for every request.
async fn serve(v: &Validator, cert: Option<&'static [u8]>) -> String {
    async fn ok() -> &'static str {
        "ok"
    }
    let mut app = Router::new()
        .route(
            "/balances",
            get(ok).route_layer(v.require_scope("balances:read")),
        )
        .route("/transactions", post(ok).route_layer(v.layer()));
    if let Some(der) = cert {
        app = app.layer(axum::Extension(ClientCertificate(Arc::new(der.to_vec()))));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    format!("http://{addr}")
}

async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<String>, Option<Value>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = reqwest::Client::new().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("send");
    let www = res
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect();
    let status = res.status().as_u16();
    (status, www, res.json().await.ok())
}

#[tokio::test]
async fn layer_enforces_dpop_and_answers_dpop_challenges() {
    let h = harness_with(|b| b.public_base_url("https://ledger.bank.example/")).await;
    let base = serve(&h.validator, None).await;
    let key = ProofKey::ec();
    let token = h.issuer.token(Some(json!({"jkt": key.jkt()})));
    let auth = format!("DPoP {token}");
    let url = format!("{base}/balances");

    // htu is the public URL, not the loopback address the request went to.
    let proof = key.proof("GET", URL, &token);
    let (status, _, _) = send("GET", &url, &[("authorization", &auth), ("dpop", &proof)]).await;
    assert_eq!(status, 200);

    let local = key.proof("GET", &url, &token);
    let (status, www, body) =
        send("GET", &url, &[("authorization", &auth), ("dpop", &local)]).await;
    assert_eq!(status, 401);
    assert_eq!(
        www,
        [
            r#"DPoP error="invalid_dpop_proof", error_description="the DPoP proof is for another URI", algs="ES256 ES384 RS256 PS256 EdDSA""#
        ]
    );
    assert_eq!(body.expect("json")["error"], "invalid_dpop_proof");

    // Replay, two headers, no header: invalid_dpop_proof.
    let (a, b) = (key.proof("GET", URL, &token), key.proof("GET", URL, &token));
    for headers in [
        vec![("authorization", auth.as_str()), ("dpop", proof.as_str())],
        vec![
            ("authorization", auth.as_str()),
            ("dpop", a.as_str()),
            ("dpop", b.as_str()),
        ],
        vec![("authorization", auth.as_str())],
    ] {
        let (status, www, _) = send("GET", &url, &headers).await;
        assert_eq!(status, 401);
        assert!(
            www[0].starts_with(r#"DPoP error="invalid_dpop_proof""#),
            "{www:?}"
        );
    }
    // A POST needs a proof for POST and the POST URL.
    let post_url = format!("{base}/transactions");
    let post_proof = key.proof("POST", "https://ledger.bank.example/transactions", &token);
    let (status, _, _) = send(
        "POST",
        &post_url,
        &[("authorization", &auth), ("dpop", &post_proof)],
    )
    .await;
    assert_eq!(status, 200);

    // A token problem under the DPoP scheme: invalid_token with a DPoP challenge.
    let unbound = h.issuer.token(None);
    let unbound_proof = key.proof("GET", URL, &unbound);
    let (status, www, _) = send(
        "GET",
        &url,
        &[
            ("authorization", &format!("DPoP {unbound}")),
            ("dpop", &unbound_proof),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        www[0].starts_with(r#"DPoP error="invalid_token""#),
        "{www:?}"
    );
    // The DPoP-bound token as a bearer token: Bearer invalid_token.
    let (status, www, _) = send(
        "GET",
        &url,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        www[0].starts_with(r#"Bearer error="invalid_token""#),
        "{www:?}"
    );
}

#[tokio::test]
async fn layer_reads_the_connection_certificate() {
    let h = harness().await;
    let token = h.issuer.token(Some(x5t(CLIENT_A_DER)));
    let auth = format!("Bearer {token}");
    for (cert, want) in [
        (Some(CLIENT_A_DER), 200),
        (Some(CLIENT_B_DER), 401),
        (None, 401),
    ] {
        let base = serve(&h.validator, cert).await;
        let (status, _, _) = send(
            "GET",
            &format!("{base}/balances"),
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(status, want, "{}", cert.map_or(0, <[u8]>::len));
    }
}

#[tokio::test]
async fn layer_believes_forwarded_certificates_only_from_trusted_proxies() {
    let nginx_a = url_encode(CLIENT_A_PEM);
    let nginx_b = url_encode(CLIENT_B_PEM);
    let xfcc_a = xfcc(CLIENT_A_PEM, CLIENT_A_DER);
    let xfcc_b = xfcc(CLIENT_B_PEM, CLIENT_B_DER);
    let cases = [
        (Format::EnvoyXfcc, "x-forwarded-client-cert", xfcc_a, xfcc_b),
        (
            Format::NginxEscapedPem,
            "x-ssl-client-cert",
            nginx_a,
            nginx_b,
        ),
    ];
    for (format, header, good, other) in cases {
        // The test client connects from 127.0.0.1.
        let trusted = harness_with(|b| {
            b.trusted_proxies(
                ["127.0.0.0/8".parse().expect("cidr")],
                header.to_uppercase(),
                format,
            )
        })
        .await;
        let token = trusted.issuer.token(Some(x5t(CLIENT_A_DER)));
        let auth = format!("Bearer {token}");
        // The connection's own certificate is the proxy's: ignored for a trusted peer.
        let base = serve(&trusted.validator, Some(CLIENT_A_DER)).await;
        let url = format!("{base}/balances");
        let (status, _, _) = send("GET", &url, &[("authorization", &auth), (header, &good)]).await;
        assert_eq!(status, 200, "{format:?}");
        let (status, _, _) = send("GET", &url, &[("authorization", &auth), (header, &other)]).await;
        assert_eq!(status, 401, "{format:?}");
        let (status, _, _) = send("GET", &url, &[("authorization", &auth)]).await;
        assert_eq!(status, 401, "{format:?}: no header, no certificate");
        let (status, _, _) = send(
            "GET",
            &url,
            &[("authorization", &auth), (header, &good), (header, &good)],
        )
        .await;
        assert_eq!(status, 401, "{format:?}: repeated header");

        // From a peer outside the trusted ranges the header is ignored.
        let untrusted = harness_with(|b| {
            b.trusted_proxies(["10.0.0.0/8".parse().expect("cidr")], header, format)
        })
        .await;
        let token = untrusted.issuer.token(Some(x5t(CLIENT_A_DER)));
        let auth = format!("Bearer {token}");
        let base = serve(&untrusted.validator, None).await;
        let (status, _, _) = send(
            "GET",
            &format!("{base}/balances"),
            &[("authorization", &auth), (header, &good)],
        )
        .await;
        assert_eq!(status, 401, "{format:?}: untrusted peer");
        // ... and its own TLS certificate counts instead.
        let base = serve(&untrusted.validator, Some(CLIENT_A_DER)).await;
        let (status, _, _) = send(
            "GET",
            &format!("{base}/balances"),
            &[("authorization", &auth), (header, &other)],
        )
        .await;
        assert_eq!(status, 200, "{format:?}: direct TLS client");
    }
}

#[tokio::test]
async fn strict_layer_offers_both_schemes() {
    let h = harness_with(|b| b.require_sender_constrained()).await;
    let base = serve(&h.validator, None).await;
    let (status, www, _) = send("GET", &format!("{base}/balances"), &[]).await;
    assert_eq!(status, 401);
    assert_eq!(
        www,
        [
            r#"Bearer realm="ledger""#,
            r#"DPoP realm="ledger", algs="ES256 ES384 RS256 PS256 EdDSA""#
        ]
    );
    let unbound = format!("Bearer {}", h.issuer.token(None));
    let (status, www, _) = send(
        "GET",
        &format!("{base}/balances"),
        &[("authorization", &unbound)],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        www,
        [r#"Bearer error="invalid_token", error_description="token is not sender-constrained""#]
    );
}
