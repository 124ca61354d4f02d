//! The call to STS: the client's request, unchanged, to the endpoint Sigil chose; no redirects, a
//! timeout, a response size cap; only a 200 with a well-formed `GetCallerIdentityResponse` counts.

use super::request::{BODY, Checked};

/// What STS says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    pub arn: String,
    pub user_id: String,
    pub account: String,
}

pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StsError {
    #[error("STS unreachable")]
    Unreachable,
    #[error("STS refused the request (status {0})")]
    Refused(u16),
    #[error("STS answered something that is not a GetCallerIdentity response")]
    Malformed,
}

pub async fn call(http: &reqwest::Client, req: &Checked) -> Result<CallerIdentity, StsError> {
    let mut builder = http.post(req.target.clone()).body(BODY);
    for (name, value) in &req.headers {
        // reqwest sets Content-Length from the (identical) body itself.
        if !name.eq_ignore_ascii_case("content-length") {
            builder = builder.header(name.as_str(), value.as_str());
        }
    }
    let mut res = builder.send().await.map_err(|e| {
        tracing::warn!(error = %e.without_url(), "STS call failed");
        StsError::Unreachable
    })?;
    let status = res.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|_| StsError::Unreachable)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(StsError::Malformed);
        }
        body.extend_from_slice(&chunk);
    }
    if status != 200 {
        return Err(StsError::Refused(status));
    }
    parse(&body)
}

/// Reads `Arn`, `UserId` and `Account` out of a `GetCallerIdentityResponse`.
pub fn parse(body: &[u8]) -> Result<CallerIdentity, StsError> {
    let text = std::str::from_utf8(body).map_err(|_| StsError::Malformed)?;
    let doc = roxmltree::Document::parse(text).map_err(|_| StsError::Malformed)?;
    let root = doc.root_element();
    if root.tag_name().name() != "GetCallerIdentityResponse" {
        return Err(StsError::Malformed);
    }
    let result = root
        .children()
        .find(|n| n.tag_name().name() == "GetCallerIdentityResult")
        .ok_or(StsError::Malformed)?;
    let field = |name: &str| -> Result<String, StsError> {
        let mut found = result.children().filter(|n| n.tag_name().name() == name);
        let node = found.next().ok_or(StsError::Malformed)?;
        if found.next().is_some() {
            return Err(StsError::Malformed);
        }
        let value = node.text().unwrap_or("").trim().to_owned();
        if value.is_empty() || value.len() > 512 {
            return Err(StsError::Malformed);
        }
        Ok(value)
    };
    Ok(CallerIdentity {
        arn: field("Arn")?,
        user_id: field("UserId")?,
        account: field("Account")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sts_answers_and_refuses_others() {
        let ok = br#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:iam::123456789012:user/alice</Arn>
    <UserId>AIDAEXAMPLE</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>x</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;
        let id = parse(ok).expect("parse");
        assert_eq!(id.arn, "arn:aws:iam::123456789012:user/alice");
        assert_eq!(id.user_id, "AIDAEXAMPLE");
        for bad in [
            &b"<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>"[..],
            b"<GetCallerIdentityResponse><GetCallerIdentityResult><Arn></Arn><UserId>u</UserId><Account>1</Account></GetCallerIdentityResult></GetCallerIdentityResponse>",
            b"<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>a</Arn><Arn>b</Arn><UserId>u</UserId><Account>1</Account></GetCallerIdentityResult></GetCallerIdentityResponse>",
            b"not xml",
            b"<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><GetCallerIdentityResponse/>",
        ] {
            assert!(parse(bad).is_err());
        }
    }
}
