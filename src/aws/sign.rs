//! The workload's side: signing a `GetCallerIdentity` request for Sigil with `aws-sigv4` (used by
//! `sigil token aws` and the tests).

use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde_json::{Map, Value, json};

use super::request::{BODY, CHALLENGE_HEADER, SERVER_ID_HEADER};

/// AWS credentials. `Debug` never shows the secret or the session token.
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optional `AWS_SESSION_TOKEN`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        Ok(AwsCredentials {
            access_key_id: get("AWS_ACCESS_KEY_ID").ok_or("AWS_ACCESS_KEY_ID is not set")?,
            secret_access_key: get("AWS_SECRET_ACCESS_KEY")
                .ok_or("AWS_SECRET_ACCESS_KEY is not set")?,
            session_token: get("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
        })
    }
}

/// Signs `POST {sts_url}` with the GetCallerIdentity body and Sigil's server-ID (and challenge)
/// headers, and returns the JSON Sigil's exchange takes.
pub fn sign_get_caller_identity(
    creds: &AwsCredentials,
    region: &str,
    sts_url: &str,
    server_id: &str,
    challenge: Option<&str>,
    now: i64,
) -> Result<Value, String> {
    let url = url::Url::parse(sts_url).map_err(|e| format!("bad STS URL: {e}"))?;
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => return Err("STS URL has no host".into()),
    };
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host),
        (
            "content-type".into(),
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        ),
        (SERVER_ID_HEADER.into(), server_id.into()),
    ];
    if let Some(c) = challenge {
        headers.push((CHALLENGE_HEADER.into(), c.into()));
    }
    let identity: Identity = Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        None,
        "sigil",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(UNIX_EPOCH + Duration::from_secs(now.max(0) as u64))
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        "POST",
        sts_url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(BODY.as_bytes()),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (added, _) = instructions.into_parts();
    for h in added {
        headers.push((h.name().to_owned(), h.value().to_owned()));
    }
    let map: Map<String, Value> = headers
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Ok(json!({"method": "POST", "url": sts_url, "headers": map, "body": BODY}))
}
