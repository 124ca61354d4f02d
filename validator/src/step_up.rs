//! Step-up authentication (RFC 9470): a route that demands the user signed in with one of some
//! authentication context classes (`acr`), recently enough (`auth_time` within `max_age`), or
//! both. A token that falls short is refused with `insufficient_user_authentication`, and the
//! challenge names what to ask the authorization server for (`acr_values`, `max_age`), which the
//! client passes on to `/authorize`.

use std::time::Duration;

use crate::{Claims, Error, ErrorKind};

/// What a route demands of the user's sign-in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepUp {
    acr_values: Vec<String>,
    max_age: Option<u64>,
}

impl StepUp {
    /// The sign-in must be one of `values` (the token's `acr`). Empty: any.
    pub fn acr<I: IntoIterator<Item = S>, S: Into<String>>(values: I) -> StepUp {
        StepUp {
            acr_values: values.into_iter().map(Into::into).collect(),
            max_age: None,
        }
    }

    /// The sign-in must be at most `age` old (the token's `auth_time`), counted in whole seconds.
    pub fn max_age(mut self, age: Duration) -> StepUp {
        self.max_age = Some(age.as_secs());
        self
    }

    pub fn acr_values(&self) -> &[String] {
        &self.acr_values
    }

    pub fn max_age_secs(&self) -> Option<u64> {
        self.max_age
    }

    /// Checks `claims` at `now` (Unix seconds). A token without `acr` (when classes are
    /// demanded) or without `auth_time` (when an age is) falls short, as a service's token does.
    pub fn check(&self, claims: &Claims, now: i64) -> Result<(), Error> {
        let acr_ok = self.acr_values.is_empty()
            || claims
                .extra
                .get("acr")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|acr| self.acr_values.iter().any(|v| v == acr));
        let age_ok = self.max_age.is_none_or(|max| {
            claims
                .extra
                .get("auth_time")
                .and_then(serde_json::Value::as_i64)
                .is_some_and(|t| t <= now && (now - t) as u64 <= max)
        });
        if acr_ok && age_ok {
            Ok(())
        } else {
            Err(ErrorKind::InsufficientUserAuthentication {
                acr_values: self.acr_values.clone(),
                max_age: self.max_age,
            }
            .into())
        }
    }
}
