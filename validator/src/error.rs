//! The validator's error: a boxed, non-exhaustive kind, mapped to RFC 6750 codes.

use std::fmt;

/// Why a token or the key source was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not three base64url parts of JSON, or too large.
    Malformed,
    /// A header this validator does not accept (`typ`, `crit`, missing `kid`).
    UnsupportedHeader(String),
    /// No published key has this `kid`, even after a refetch.
    UnknownKey,
    /// The header's `alg` is not the algorithm of the key it names (`none`, `HS256`, ...).
    AlgorithmMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// `token_use` is not `access` (an ID token, say).
    WrongTokenUse,
    ClientNotAllowed,
    MissingClaim(&'static str),
    /// Valid token without a required scope.
    InsufficientScope(Vec<String>),
    /// Discovery failed or described another issuer.
    Discovery(String),
    /// The JWKS could not be fetched or parsed.
    Jwks(String),
    /// No `Authorization` header with a `Bearer` or `DPoP` token.
    MissingToken,
    /// The validator requires sender-constrained tokens and this one has no `cnf`.
    NotSenderConstrained,
    /// `cnf` names no binding this validator can check (neither `x5t#S256` nor `jkt`).
    UnsupportedConfirmation,
    /// A certificate-bound token without a client certificate.
    CertificateRequired,
    /// A certificate-bound token with another client certificate.
    CertificateMismatch,
    /// A DPoP-bound token presented with the `Bearer` scheme.
    DpopBoundTokenAsBearer,
    /// A token presented with the `DPoP` scheme that is not DPoP-bound.
    NotDpopBound,
    /// The DPoP proof was signed by another key than the token's `cnf.jkt`.
    DpopKeyMismatch,
    /// The DPoP proof was refused (`invalid_dpop_proof`, or `use_dpop_nonce`).
    DpopProof(crate::dpop::DpopError),
    /// The issuer's revocation feed lists this token (its `jti`, its session or its client).
    Revoked,
    /// The revocation list is past its stale period (the feed has not answered).
    RevocationsUnavailable,
    /// The revocation feed could not be read or a page did not verify.
    Feed(String),
    /// The policy bundle could not be read, did not verify or did not compile.
    Policies(String),
    /// A valid token whose request the realm's policies do not allow (403 `POLICY_DENIED`).
    PolicyDenied,
    /// RFC 9470: the user's sign-in is not of a demanded class or not recent enough; the route's
    /// own demands, for the challenge.
    InsufficientUserAuthentication {
        acr_values: Vec<String>,
        max_age: Option<u64>,
    },
}

/// The public error type. Boxed to keep `Result<Claims, Error>` small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(Box<ErrorKind>);

impl Error {
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// RFC 6750 error code (`insufficient_scope` or `invalid_token`), or for DPoP proof
    /// problems RFC 9449's (`invalid_dpop_proof`, `use_dpop_nonce`).
    pub fn rfc6750_code(&self) -> &'static str {
        match &*self.0 {
            ErrorKind::InsufficientScope(_) => "insufficient_scope",
            ErrorKind::PolicyDenied => "access_denied",
            ErrorKind::DpopProof(e) => e.error_code(),
            ErrorKind::DpopKeyMismatch => "invalid_dpop_proof",
            ErrorKind::InsufficientUserAuthentication { .. } => "insufficient_user_authentication",
            _ => "invalid_token",
        }
    }
}

impl Error {
    /// A fixed description of the refusal for responses (`error_description`): never any text
    /// taken from the token or from the key source, so a caller cannot inject header parameters
    /// or learn internal URLs. `Display` has the details, for logs.
    pub fn description(&self) -> &'static str {
        match &*self.0 {
            ErrorKind::Malformed => "malformed token",
            ErrorKind::UnsupportedHeader(_) => "unsupported token header",
            ErrorKind::UnknownKey => "token signed by an unknown key",
            ErrorKind::AlgorithmMismatch => "token algorithm does not match its key",
            ErrorKind::BadSignature => "bad signature",
            ErrorKind::Expired => "token expired",
            ErrorKind::NotYetValid => "token not yet valid",
            ErrorKind::WrongIssuer => "wrong issuer",
            ErrorKind::WrongAudience => "wrong audience",
            ErrorKind::WrongTokenUse => "not an access token",
            ErrorKind::ClientNotAllowed => "client not allowed",
            ErrorKind::MissingClaim(_) => "missing claim",
            ErrorKind::InsufficientScope(_) => "insufficient scope",
            ErrorKind::Discovery(_) | ErrorKind::Jwks(_) => "token keys unavailable",
            ErrorKind::MissingToken => "a token is required",
            ErrorKind::NotSenderConstrained => "token is not sender-constrained",
            ErrorKind::UnsupportedConfirmation => "token bound by an unsupported method",
            ErrorKind::CertificateRequired => "token requires its client certificate",
            ErrorKind::CertificateMismatch => "token bound to another client certificate",
            ErrorKind::DpopBoundTokenAsBearer => "DPoP-bound token presented as a bearer token",
            ErrorKind::NotDpopBound => "token is not DPoP-bound",
            ErrorKind::DpopKeyMismatch => "DPoP proof key is not the token's key",
            ErrorKind::DpopProof(e) => e.description(),
            ErrorKind::InsufficientUserAuthentication { .. } => {
                "a stronger or more recent sign-in is required"
            }
            ErrorKind::Revoked => "token revoked",
            ErrorKind::RevocationsUnavailable | ErrorKind::Feed(_) => "revocation list unavailable",
            ErrorKind::Policies(_) => "policies unavailable",
            ErrorKind::PolicyDenied => "denied by policy",
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(k: ErrorKind) -> Self {
        Error(Box::new(k))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            ErrorKind::Malformed => f.write_str("malformed token"),
            ErrorKind::UnsupportedHeader(h) => write!(f, "unsupported token header: {h}"),
            ErrorKind::UnknownKey => f.write_str("token signed by an unknown key"),
            ErrorKind::AlgorithmMismatch => f.write_str("token algorithm does not match its key"),
            ErrorKind::BadSignature => f.write_str("bad signature"),
            ErrorKind::Expired => f.write_str("token expired"),
            ErrorKind::NotYetValid => f.write_str("token not yet valid"),
            ErrorKind::WrongIssuer => f.write_str("wrong issuer"),
            ErrorKind::WrongAudience => f.write_str("wrong audience"),
            ErrorKind::WrongTokenUse => f.write_str("not an access token"),
            ErrorKind::ClientNotAllowed => f.write_str("client not allowed"),
            ErrorKind::MissingClaim(c) => write!(f, "missing claim {c}"),
            ErrorKind::InsufficientScope(s) => {
                write!(f, "insufficient scope: needs {}", s.join(" "))
            }
            ErrorKind::Discovery(m) => write!(f, "discovery failed: {m}"),
            ErrorKind::Jwks(m) => write!(f, "JWKS unavailable: {m}"),
            ErrorKind::DpopProof(e) => write!(f, "invalid DPoP proof: {e}"),
            ErrorKind::Feed(m) => write!(f, "revocation feed: {m}"),
            ErrorKind::Policies(m) => write!(f, "policy bundle: {m}"),
            _ => f.write_str(self.description()),
        }
    }
}

impl std::error::Error for Error {}
