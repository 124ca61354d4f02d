//! `sigil token aws`: what a workload's start-up script runs. Discovery names the exchange
//! endpoint, server ID and whether a challenge is needed; the request is signed with the
//! environment's AWS credentials.

use serde_json::Value;

use super::sign::{AwsCredentials, sign_get_caller_identity};
use crate::clock::UnixTime;

pub async fn fetch_token(
    issuer: &str,
    region: &str,
    sts_url: &str,
    scope: Option<&str>,
    audience: Option<&str>,
    now: UnixTime,
) -> Result<Value, String> {
    let creds = AwsCredentials::from_env(|k| std::env::var(k).ok())?;
    let http = crate::outbound::client();
    let issuer = issuer.trim_end_matches('/');
    let meta: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .map_err(|e| format!("discovery: {}", e.without_url()))?
        .json()
        .await
        .map_err(|e| format!("discovery: {e}"))?;
    let field = |k: &str| meta[k].as_str().map(str::to_owned);
    let endpoint =
        field("aws_sts_exchange_endpoint").ok_or("the issuer does not offer the AWS exchange")?;
    let server_id = field("aws_sts_server_id").ok_or("the issuer publishes no server ID")?;
    let challenge = if meta["aws_sts_challenge_required"].as_bool() == Some(true) {
        let url = field("aws_sts_challenge_endpoint").ok_or("no challenge endpoint")?;
        let c: Value = http
            .post(url)
            .send()
            .await
            .map_err(|e| format!("challenge: {}", e.without_url()))?
            .json()
            .await
            .map_err(|e| format!("challenge: {e}"))?;
        Some(
            c["challenge"]
                .as_str()
                .ok_or("no challenge in the answer")?
                .to_owned(),
        )
    } else {
        None
    };
    let signed = sign_get_caller_identity(
        &creds,
        region,
        sts_url,
        &server_id,
        challenge.as_deref(),
        now,
    )?;
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = scope {
        query.push(("scope", s));
    }
    if let Some(a) = audience {
        query.push(("audience", a));
    }
    let url = url::Url::parse_with_params(&endpoint, &query).map_err(|e| e.to_string())?;
    let res = http
        .post(url)
        .json(&signed)
        .send()
        .await
        .map_err(|e| format!("exchange: {}", e.without_url()))?;
    let status = res.status();
    let body: Value = res.json().await.map_err(|e| format!("exchange: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "exchange refused ({status}): {} {}",
            body["error"].as_str().unwrap_or("?"),
            body["error_description"].as_str().unwrap_or("")
        ));
    }
    Ok(body)
}
