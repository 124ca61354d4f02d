//! Secrets Sigil fetches from AWS rather than from files or the environment: the database URL
//! (Secrets Manager) and key-encryption keys (KMS data keys, or a key held in Secrets Manager).
//!
//! Every call goes through one AWS SDK configuration built on first use: the standard credential
//! chain (environment, profile, web identity, ECS, EC2 instance role), the standard endpoint
//! overrides (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL_KMS`),
//! `rustls` on `ring` like the rest of the process, and short timeouts so a missing network
//! fails a start in seconds rather than hanging it.

pub mod database;

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tokio::sync::OnceCell;

/// Why a secret could not be had. Never carries the secret's value, nor the text of a parse
/// error (which may quote it).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("AWS Secrets Manager: cannot read secret {id}: {reason}")]
    Fetch { id: String, reason: String },
    #[error("AWS Secrets Manager: secret {id} {problem}")]
    Format { id: String, problem: String },
    #[error("AWS KMS: key {key}: {reason}")]
    Kms { key: String, reason: String },
}

static SDK: OnceCell<SdkConfig> = OnceCell::const_new();

/// The process's one AWS SDK configuration.
pub async fn sdk_config() -> &'static SdkConfig {
    SDK.get_or_init(|| async {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(15))
            .build();
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .load()
            .await
    })
    .await
}

/// A secret's value as Secrets Manager holds it.
pub enum SecretValue {
    Text(String),
    Binary(Vec<u8>),
}

/// Which version of a secret to read: the current one, or the one a rotation is putting in place
/// (between a rotation's `setSecret` and `finishSecret` steps the database already has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Current,
    Pending,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Current => "AWSCURRENT",
            Stage::Pending => "AWSPENDING",
        }
    }
}

/// Reads one secret. `Ok(None)` when the stage asked for has no version (only for
/// [`Stage::Pending`]: a secret not being rotated).
pub async fn fetch(id: &str, stage: Stage) -> Result<Option<SecretValue>, SecretError> {
    let client = aws_sdk_secretsmanager::Client::new(sdk_config().await);
    // The current version is what GetSecretValue returns without a stage.
    let request = client.get_secret_value().secret_id(id);
    let request = match stage {
        Stage::Current => request,
        Stage::Pending => request.version_stage(stage.label()),
    };
    let out = request.send().await;
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            let not_found = e
                .as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception());
            if not_found && stage == Stage::Pending {
                return Ok(None);
            }
            return Err(SecretError::Fetch {
                id: id.to_owned(),
                reason: describe(&e),
            });
        }
    };
    if let Some(text) = out.secret_string() {
        return Ok(Some(SecretValue::Text(text.to_owned())));
    }
    if let Some(blob) = out.secret_binary() {
        return Ok(Some(SecretValue::Binary(blob.as_ref().to_vec())));
    }
    Err(SecretError::Format {
        id: id.to_owned(),
        problem: "has no value".into(),
    })
}

/// An SDK error as one line: the service's error code and message, or what failed on the way
/// (credentials, connection, timeout). The SDK never puts a secret's value in an error.
pub(crate) fn describe<E>(
    e: &aws_sdk_secretsmanager::error::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> String
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_secretsmanager::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!(
                "HTTP {}: {}: {}",
                s.raw().status().as_u16(),
                err.code().unwrap_or("error"),
                err.message().unwrap_or("no message")
            )
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}
