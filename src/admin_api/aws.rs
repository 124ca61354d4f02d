//! `/admin/realms/{realm}/aws`: the realm's AWS workload exchange (STS settings) and its
//! principal bindings, through the same operations as `sigil aws`.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, ApiJson, ApiPath, ApiQuery, Page, PageQuery, Problem, no_store};
use crate::admin::aws::{self as ops, BindingView};
use crate::state::AppState;

/// The realm's AWS exchange.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// An explicit STS endpoint (`http(s)://host[:port]/`); absent: the real STS hosts of the
    /// partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
    /// `aws`, `aws-us-gov`, `aws-cn` (default `aws`).
    #[serde(default)]
    pub partitions: Vec<String>,
    /// The value workloads must send, signed, in `X-Sigil-Server-ID`.
    #[schema(pattern = "^[!-~]{1,256}$")]
    pub server_id: String,
    /// Every request needs a single-use challenge.
    #[serde(default)]
    pub require_challenge: bool,
}

fn settings_view(s: crate::store::AwsSettingsRecord) -> AwsSettings {
    AwsSettings {
        sts_endpoint: s.sts_endpoint,
        partitions: s.partitions.split(' ').map(str::to_owned).collect(),
        server_id: s.server_id,
        require_challenge: s.require_challenge,
    }
}

#[utoipa::path(operation_id = "get_aws", get, path = "/admin/realms/{realm}/aws", tag = "aws",
    params(("realm" = String, Path)),
    responses(
        (status = 200, body = AwsSettings),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "No such realm, or its AWS exchange is off", body = Problem)
    ))]
pub async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.read(&realm)?;
    let Some(s) = state.store.aws_settings(&realm).await? else {
        return Err(ApiError::NotFound(format!("AWS settings of realm {realm}")));
    };
    Ok(no_store(StatusCode::OK, settings_view(s)))
}

#[utoipa::path(operation_id = "set_aws", put, path = "/admin/realms/{realm}/aws", tag = "aws",
    params(("realm" = String, Path)),
    request_body = AwsSettings,
    responses(
        (status = 200, body = AwsSettings),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)
    ))]
pub async fn set(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
    ApiJson(body): ApiJson<AwsSettings>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let s = ops::configure(
        state.store.as_ref(),
        ops::Configure {
            realm: realm.clone(),
            sts_endpoint: body.sts_endpoint,
            partitions: body.partitions,
            server_id: body.server_id,
            require_challenge: body.require_challenge,
        },
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    Ok(no_store(StatusCode::OK, settings_view(s)))
}

#[utoipa::path(operation_id = "disable_aws", delete, path = "/admin/realms/{realm}/aws", tag = "aws",
    params(("realm" = String, Path)),
    responses(
        (status = 204, description = "The exchange is off (bindings stay)"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn disable(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.write(&realm)?;
    ops::disable(
        state.store.as_ref(),
        &realm,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    Ok(StatusCode::NO_CONTENT)
}

/// A principal binding: what the tokens of matching IAM principals carry, or a DENY.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingBody {
    /// An IAM principal ARN, or a pattern with `*` and `?`.
    #[serde(default)]
    pub principal: Option<String>,
    /// A 12-digit AWS account id: any principal of it.
    #[serde(default)]
    #[schema(pattern = "^[0-9]{12}$")]
    pub account: Option<String>,
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub effect: Option<Effect>,
    /// Space-separated scopes (an ALLOW binding needs them).
    #[serde(default)]
    pub scope: Option<String>,
    /// The `aud` of its tokens (an ALLOW binding needs it).
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default)]
    #[schema(minimum = 60, maximum = 86400)]
    pub access_token_ttl: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

#[utoipa::path(operation_id = "list_aws_bindings", get, path = "/admin/realms/{realm}/aws/bindings", tag = "aws",
    params(("realm" = String, Path), PageQuery),
    responses(
        (status = 200, body = Page<BindingView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)
    ))]
pub async fn bindings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(realm): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    caller.read(&realm)?;
    super::require_realm(&state, &realm).await?;
    let items = ops::bindings(state.store.as_ref(), &realm).await?;
    Ok(no_store(StatusCode::OK, q.page(items, |b| &b.id)?))
}

#[utoipa::path(operation_id = "put_aws_binding", put, path = "/admin/realms/{realm}/aws/bindings/{id}", tag = "aws",
    params(("realm" = String, Path), ("id" = String, Path)),
    request_body = BindingBody,
    responses(
        (status = 200, description = "Created, or replaced in one step", body = BindingView),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)
    ))]
pub async fn put_binding(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, id)): ApiPath<(String, String)>,
    ApiJson(b): ApiJson<BindingBody>,
) -> Result<Response, ApiError> {
    caller.write(&realm)?;
    let view = ops::put_binding(
        state.store.as_ref(),
        ops::Bind {
            realm: realm.clone(),
            id: Some(id),
            principal: b.principal,
            account: b.account,
            deny: b.effect == Some(Effect::Deny),
            scopes: b.scope,
            audience: b.audience,
            access_token_ttl: b.access_token_ttl,
        },
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    Ok(no_store(StatusCode::OK, view))
}

#[utoipa::path(operation_id = "delete_aws_binding", delete, path = "/admin/realms/{realm}/aws/bindings/{id}", tag = "aws",
    params(("realm" = String, Path), ("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)
    ))]
pub async fn delete_binding(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((realm, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.write(&realm)?;
    ops::unbind(
        state.store.as_ref(),
        &realm,
        &id,
        state.clock.now(),
        &caller.actor,
    )
    .await?;
    super::changed(&state, &realm);
    Ok(StatusCode::NO_CONTENT)
}
